//! Shared in-memory fakes of the engine's ports (source, runtime, stores, registry, trust policy,
//! cluster) and the fixtures built on them, for the engine's integration tests. Each fake keeps
//! its state behind a shared handle, so a test changes the world between cycles through a clone.

// Each test crate compiles this module whole but uses only some of it.
#![allow(dead_code)]

use fleetlet_core::k8s::ObjectRef;
use fleetlet_core::reference::RegistryRef;
use fleetlet_core::render::DesiredWorkload;
use fleetlet_core::{Digest, ObservedWorkload, RepoTree, WorkloadHealth};
use fleetlet_engine::cluster::{ApplyOptions, Cluster, ClusterError};
use fleetlet_engine::ports::*;
use fleetlet_engine::registry::{
    ArtifactStore, BlobSink, BlobUpload, Descriptor, FetchedManifest, Registry, RegistryError,
};
use fleetlet_engine::trust::{
    Requirement, SignatureManifest, SignedObject, Signer, SignerKind, TagEvidence, Verifier,
};
use fleetlet_engine::{AgentState, Engine};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

// ---- the fleet repo ----

#[derive(Default)]
pub struct Repo {
    pub commits: BTreeMap<String, RepoTree>,
    pub head: Option<String>,
    /// Each commit's parent (the head when it was made).
    pub parents: BTreeMap<String, Option<String>>,
    pub signatures: BTreeMap<String, SignedObject>,
    pub tags: BTreeMap<String, Vec<TagEvidence>>,
    pub down: bool,
    /// Trees read so far: what was refused must not be read again.
    pub reads: usize,
}

#[derive(Clone, Default)]
pub struct FakeSource(pub Rc<RefCell<Repo>>);

impl FakeSource {
    /// `tree` as commit `id` on top of the head, which moves to it.
    pub fn commit(&self, id: &str, tree: RepoTree) {
        let mut r = self.0.borrow_mut();
        let parent = r.head.clone();
        r.parents.entry(id.into()).or_insert(parent);
        r.commits.insert(id.into(), tree);
        r.head = Some(id.into());
    }
    pub fn sign(&self, commit: &str, signature: &[u8]) {
        self.0.borrow_mut().signatures.insert(
            commit.into(),
            SignedObject {
                signature: signature.to_vec(),
                payload: commit.as_bytes().to_vec(),
            },
        );
    }
    /// A lightweight tag `name` at `commit`.
    pub fn tag(&self, commit: &str, name: &str) {
        self.0
            .borrow_mut()
            .tags
            .entry(commit.into())
            .or_default()
            .push(TagEvidence {
                name: name.into(),
                message: String::new(),
                time: 0,
                signed: None,
            });
    }
}

impl Source for FakeSource {
    fn poll(&mut self, last_seen: Option<&str>) -> Result<Poll, SourceError> {
        let r = self.0.borrow();
        if r.down {
            return Err(SourceError::Unreachable {
                url: "fake".into(),
                message: "down".into(),
            });
        }
        let head = r.head.clone().expect("a head");
        let rev = Revision {
            commit: head.clone(),
            reference: "refs/heads/main".into(),
            summary: head.clone(),
            time: 0,
        };
        Ok(if last_seen == Some(head.as_str()) {
            Poll::Unchanged(rev)
        } else {
            Poll::Changed(rev)
        })
    }
    fn descends_from(&self, commit: &str, ancestor: &str) -> Result<bool, SourceError> {
        let r = self.0.borrow();
        let mut at = Some(commit.to_string());
        while let Some(c) = at {
            if c == ancestor {
                return Ok(true);
            }
            at = r.parents.get(&c).cloned().flatten();
        }
        Ok(false)
    }
    fn commit_signature(&self, commit: &str) -> Result<Option<SignedObject>, SourceError> {
        Ok(self.0.borrow().signatures.get(commit).cloned())
    }
    fn tags_at(&self, commit: &str) -> Result<Vec<TagEvidence>, SourceError> {
        Ok(self
            .0
            .borrow()
            .tags
            .get(commit)
            .cloned()
            .unwrap_or_default())
    }
    fn read_tree(&self, commit: &str) -> Result<RepoTree, SourceError> {
        let mut r = self.0.borrow_mut();
        r.reads += 1;
        Ok(r.commits[commit].clone())
    }
}

// ---- the Wasm runtime ----

#[derive(Default)]
pub struct Host {
    pub running: BTreeMap<String, ObservedWorkload>,
    /// Component contents that fail to prepare / to activate.
    pub bad_prepare: Vec<Digest>,
    pub bad_activate: Vec<Digest>,
    /// `id=greeting` per activation, the greeting telling releases apart.
    pub activations: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeRuntime(pub Rc<RefCell<Host>>);

impl WorkloadRuntime for FakeRuntime {
    type Prepared = DesiredWorkload;
    fn observe(&self) -> BTreeMap<String, ObservedWorkload> {
        self.0.borrow().running.clone()
    }
    fn prepare(
        &self,
        w: &DesiredWorkload,
        component: &[u8],
    ) -> Result<DesiredWorkload, RuntimeError> {
        if self.0.borrow().bad_prepare.contains(&Digest::of(component)) {
            return Err(RuntimeError::Rejected {
                id: w.id(),
                message: "does not compile".into(),
            });
        }
        Ok(w.clone())
    }
    fn activate(&self, w: DesiredWorkload) -> Result<(), RuntimeError> {
        let mut h = self.0.borrow_mut();
        let digest = w.wasm.as_ref().unwrap().component.digest.unwrap();
        if h.bad_activate.contains(&digest) {
            return Err(RuntimeError::Host {
                id: w.id(),
                message: "port in use".into(),
            });
        }
        h.activations.push(format!("{}={}", w.id(), greeting(&w)));
        h.running.insert(
            w.id(),
            ObservedWorkload {
                hash: w.hash,
                health: WorkloadHealth::Running,
            },
        );
        Ok(())
    }
    fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.0.borrow_mut().running.remove(id);
        Ok(())
    }
}

fn greeting(w: &DesiredWorkload) -> String {
    w.wasm
        .as_ref()
        .and_then(|s| s.env.get("G").cloned())
        .unwrap_or_default()
}

// ---- the stores ----

#[derive(Clone, Default)]
pub struct MemState(pub Rc<RefCell<Option<AgentState>>>);

impl StateStore for MemState {
    fn load(&self) -> Result<Option<AgentState>, StateError> {
        Ok(self.0.borrow().clone())
    }
    fn save(&self, s: &AgentState) -> Result<(), StateError> {
        *self.0.borrow_mut() = Some(s.clone());
        Ok(())
    }
}

/// What the store does when the pull step asks to download a blob it lacks.
#[derive(Clone, Copy)]
enum Downloads {
    /// Tests put every blob in beforehand, so a download is a failure, with this message (the
    /// words of the store the fake stands for).
    Refused(&'static str),
    /// Accepted, and committed only when the content matches its digest and size.
    Verified,
}

/// Blobs by digest, and the names given to manifests.
#[derive(Clone)]
pub struct MemBlobs {
    blobs: Arc<Mutex<BTreeMap<Digest, Vec<u8>>>>,
    tags: Arc<Mutex<BTreeMap<String, Descriptor>>>,
    downloads: Downloads,
    /// Whether a garbage collection drops what the roots do not name, or keeps everything.
    collects: bool,
}

impl Default for MemBlobs {
    fn default() -> Self {
        MemBlobs {
            blobs: Arc::default(),
            tags: Arc::default(),
            downloads: Downloads::Refused("the test put no such blob"),
            collects: false,
        }
    }
}

impl MemBlobs {
    pub fn refusing_downloads_as(message: &'static str) -> Self {
        MemBlobs {
            downloads: Downloads::Refused(message),
            ..Self::default()
        }
    }
    pub fn downloading() -> Self {
        MemBlobs {
            downloads: Downloads::Verified,
            ..Self::default()
        }
    }
    pub fn collecting() -> Self {
        MemBlobs {
            collects: true,
            ..Self::default()
        }
    }
    pub fn digests(&self) -> Vec<Digest> {
        self.blobs.lock().unwrap().keys().copied().collect()
    }
    pub fn tags(&self) -> BTreeMap<String, Descriptor> {
        self.tags.lock().unwrap().clone()
    }
}

impl BlobStore for MemBlobs {
    fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        self.blobs.lock().unwrap().insert(d, bytes.to_vec());
        Ok(d)
    }
    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blobs.lock().unwrap().get(digest).cloned())
    }
}

impl ArtifactStore for MemBlobs {
    fn contains(&self, digest: &Digest) -> bool {
        self.blobs.lock().unwrap().contains_key(digest)
    }
    fn begin(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Box<dyn BlobUpload + '_>>, StoreError> {
        match self.downloads {
            Downloads::Refused(message) => Err(StoreError::Io {
                digest: digest.to_string(),
                message: message.into(),
            }),
            Downloads::Verified if self.contains(digest) => Ok(None),
            Downloads::Verified => Ok(Some(Box::new(Upload {
                store: self,
                digest: *digest,
                size,
                buf: vec![],
            }))),
        }
    }
    fn tag(&self, name: &str, d: &Descriptor) -> Result<(), StoreError> {
        self.tags.lock().unwrap().insert(name.into(), d.clone());
        Ok(())
    }
    fn collect_garbage(&self, roots: &BTreeSet<Digest>) -> Result<(usize, u64), StoreError> {
        if !self.collects {
            return Ok((0, 0));
        }
        let mut blobs = self.blobs.lock().unwrap();
        let before = blobs.len();
        blobs.retain(|d, _| roots.contains(d));
        Ok((before - blobs.len(), 0))
    }
}

struct Upload<'a> {
    store: &'a MemBlobs,
    digest: Digest,
    size: u64,
    buf: Vec<u8>,
}

impl Write for Upload<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BlobSink for Upload<'_> {
    fn restart(&mut self) -> std::io::Result<()> {
        self.buf.clear();
        Ok(())
    }
}

impl BlobUpload for Upload<'_> {
    fn commit(self: Box<Self>) -> Result<Digest, StoreError> {
        let actual = Digest::of(&self.buf);
        if actual != self.digest || self.buf.len() as u64 != self.size {
            return Err(StoreError::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        self.store.blobs.lock().unwrap().insert(actual, self.buf);
        Ok(actual)
    }
}

// ---- the registry and its artifacts ----

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Manifests by `repository:tag` and by digest; their blobs are expected in the store.
#[derive(Clone)]
pub struct ManifestRegistry {
    manifests: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    /// The words of a manifest not found (those of the registry the fake stands for).
    missing: &'static str,
}

impl Default for ManifestRegistry {
    fn default() -> Self {
        Self::missing_as("no such manifest")
    }
}

impl ManifestRegistry {
    pub fn missing_as(message: &'static str) -> Self {
        ManifestRegistry {
            manifests: Arc::default(),
            missing: message,
        }
    }
    fn insert(&self, key: String, manifest: &str) {
        self.manifests
            .lock()
            .unwrap()
            .insert(key, manifest.as_bytes().to_vec());
    }
}

impl Registry for ManifestRegistry {
    fn fetch_manifest(&self, r: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        let key = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => format!("{}:{t}", r.repository),
            (None, None) => unreachable!(),
        };
        let bytes = self
            .manifests
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound {
                reference: r.to_string(),
                message: self.missing.into(),
            })?;
        Ok(FetchedManifest {
            digest: Digest::of(&bytes),
            media_type: MANIFEST.into(),
            bytes,
        })
    }
    fn fetch_blob(
        &self,
        _: &RegistryRef,
        _: &Descriptor,
        _: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        unreachable!("every blob is in a store")
    }
    fn push_blob(&self, _: &RegistryRef, _: &Digest, _: &[u8]) -> Result<(), RegistryError> {
        unreachable!()
    }
    fn push_manifest(&self, _: &RegistryRef, _: &[u8], _: &str) -> Result<Digest, RegistryError> {
        unreachable!()
    }
}

/// An artifact `reg.test/REPOSITORY:TAG` (a Wasm component, or a container image) whose layer
/// holds its own name, with its blobs in the store; returns its manifest and layer digests.
pub fn artifact(
    reg: &ManifestRegistry,
    store: &MemBlobs,
    repository: &str,
    tag: &str,
    wasm: bool,
) -> (Digest, Digest) {
    let content = format!("{repository}:{tag}");
    artifact_holding(reg, store, repository, tag, content.as_bytes(), wasm)
}

/// [`artifact`] with a layer holding `content`.
pub fn artifact_holding(
    reg: &ManifestRegistry,
    store: &MemBlobs,
    repository: &str,
    tag: &str,
    content: &[u8],
    wasm: bool,
) -> (Digest, Digest) {
    let (config_type, layer_type) = if wasm {
        ("application/vnd.wasm.config.v0+json", "application/wasm")
    } else {
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let config = store.put(b"{}").unwrap();
    let layer = store.put(content).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"{config_type}","digest":"{config}","size":2}},"layers":[{{"mediaType":"{layer_type}","digest":"{layer}","size":{}}}]}}"#,
        content.len()
    );
    let digest = Digest::of(manifest.as_bytes());
    reg.insert(format!("{repository}:{tag}"), &manifest);
    reg.insert(digest.to_string(), &manifest);
    (digest, layer)
}

/// A cosign signature manifest for `repository@digest`; returns its digest (the material).
pub fn sign(reg: &ManifestRegistry, store: &MemBlobs, repository: &str, digest: &Digest) -> Digest {
    let config = store.put(b"{}").unwrap();
    let payload = format!("signed {digest}");
    let layer = store.put(payload.as_bytes()).unwrap();
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"{layer}","size":{}}}]}}"#,
        payload.len()
    );
    let sig_digest = Digest::of(sig.as_bytes());
    reg.insert(format!("{repository}:sha256-{}.sig", digest.hex()), &sig);
    reg.insert(sig_digest.to_string(), &sig);
    sig_digest
}

// ---- the trust policy ----

pub fn signer(name: &str) -> Signer {
    Signer {
        kind: SignerKind::Key,
        identity: name.into(),
        detail: None,
        log_index: None,
    }
}

/// Commits signed `good` pass (by "alice"); artifacts pass (by "release") when a signature
/// manifest is present (the fake does not look inside); moving back needs a tag saying so.
pub struct Policy {
    pub atomic: bool,
    /// Whether an unsigned commit passes (without a signer) or is refused.
    pub allows_unsigned: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            atomic: true,
            allows_unsigned: false,
        }
    }
}

impl Verifier for Policy {
    fn artifact_requirement(&self, _: &RegistryRef) -> Requirement {
        Requirement::Signed
    }
    fn verify_artifact(
        &self,
        _: &RegistryRef,
        m: &[SignatureManifest],
    ) -> Result<Vec<Signer>, String> {
        if m.is_empty() {
            Err("no signature".into())
        } else {
            Ok(vec![signer("release")])
        }
    }
    fn verify_commit(
        &self,
        _: &Revision,
        s: Option<&SignedObject>,
    ) -> Result<Option<Signer>, String> {
        match s {
            Some(s) if s.signature == b"good" => Ok(Some(signer("alice"))),
            Some(_) => Err("signed by an unknown key".into()),
            None if self.allows_unsigned => Ok(None),
            None => Err("unsigned commit".into()),
        }
    }
    fn verify_release_tag(
        &self,
        _: &BTreeMap<String, String>,
        _: &[TagEvidence],
    ) -> Result<Option<Signer>, String> {
        Ok(None)
    }
    fn verify_rollback(&self, from: &str, _: &str, tags: &[TagEvidence]) -> Result<Signer, String> {
        tags.iter()
            .any(|t| t.message.contains(&format!("rollback-from: {from}")))
            .then(|| signer("ops"))
            .ok_or_else(|| "no signed rollback instruction".into())
    }
    fn atomic(&self) -> bool {
        self.atomic
    }
    fn max_source_age(&self) -> Option<i64> {
        None
    }
}

// ---- the cluster ----

#[derive(Default)]
pub struct Api {
    pub objects: BTreeMap<ObjectRef, Value>,
    /// `VERB kind[/name]` per request.
    pub log: Vec<String>,
    /// Fields changed by hand (another field manager owns them now).
    pub hand_edits: BTreeMap<ObjectRef, (String, String)>,
    pub down: bool,
}

/// A cluster that keeps objects in a map. Not modelled: field ownership, defaulting,
/// namespaces of objects that omit one, controllers (tests write status). An object with
/// `spec.invalid: true` is refused, as the API refuses what its schema does not allow.
#[derive(Clone, Default)]
pub struct FakeCluster(pub Rc<RefCell<Api>>);

impl FakeCluster {
    pub fn requests(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut().log)
    }
    /// The objects of the apps (not fleetlet's own inventory records).
    pub fn names(&self) -> Vec<String> {
        self.0
            .borrow()
            .objects
            .keys()
            .map(|r| r.to_string())
            .filter(|n| !n.contains("fleetlet-system"))
            .collect()
    }
    pub fn inventory_record(&self, app: &str) -> Option<Value> {
        let api = self.0.borrow();
        let name = format!("ConfigMap/fleetlet-system/fleetlet-inventory-{app}");
        let key = api.objects.keys().find(|k| k.to_string() == name)?;
        serde_json::from_str(api.objects[key]["data"]["inventory.json"].as_str()?).ok()
    }
    fn key(&self, r: &str) -> ObjectRef {
        self.0
            .borrow()
            .objects
            .keys()
            .find(|k| k.to_string() == r)
            .cloned()
            .unwrap_or_else(|| panic!("{r} is not on the cluster"))
    }
    pub fn set_status(&self, r: &str, status: Value) {
        let key = self.key(r);
        self.0.borrow_mut().objects.get_mut(&key).unwrap()["status"] = status;
    }
    pub fn edit_by_hand(&self, r: &str, pointer: &str, value: Value, field: &str) {
        let key = self.key(r);
        let mut api = self.0.borrow_mut();
        *api.objects
            .get_mut(&key)
            .unwrap()
            .pointer_mut(pointer)
            .unwrap() = value;
        api.hand_edits
            .insert(key, (field.into(), "kubectl-edit".into()));
    }
    pub fn value(&self, r: &str, pointer: &str) -> Value {
        let key = self.key(r);
        self.0.borrow().objects[&key]
            .pointer(pointer)
            .cloned()
            .unwrap_or(Value::Null)
    }
    pub fn insert_foreign(&self, o: Value) {
        self.0
            .borrow_mut()
            .objects
            .insert(ObjectRef::of(&o).unwrap(), o);
    }
}

impl Cluster for FakeCluster {
    fn apply(&self, object: &Value, options: ApplyOptions) -> Result<Value, ClusterError> {
        let r = ObjectRef::of(object).unwrap();
        let mut api = self.0.borrow_mut();
        if api.down {
            return Err(ClusterError::Unavailable("connection refused".into()));
        }
        let verb = if options.dry_run { "DRYRUN" } else { "PATCH" };
        api.log.push(format!("{verb} {}/{}", r.kind, r.name));
        if object["spec"]["invalid"] == json!(true) {
            return Err(ClusterError::Invalid {
                object: r.to_string(),
                message: "spec.invalid: Unsupported value".into(),
            });
        }
        if let Some((field, manager)) = api.hand_edits.get(&r).cloned() {
            if !options.force {
                return Err(ClusterError::Conflict {
                    object: r.to_string(),
                    fields: vec![(field, manager)],
                });
            }
            if !options.dry_run {
                api.hand_edits.remove(&r);
            }
        }
        let mut stored = object.clone();
        if let Some(old) = api.objects.get(&r) {
            stored["status"] = old["status"].clone();
        }
        if !options.dry_run {
            api.objects.insert(r, stored.clone());
        }
        Ok(stored)
    }
    fn get(&self, r: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        let mut api = self.0.borrow_mut();
        if api.down {
            return Err(ClusterError::Unavailable("connection refused".into()));
        }
        api.log.push(format!("GET {}/{}", r.kind, r.name));
        Ok(api.objects.get(r).cloned())
    }
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        let mut api = self.0.borrow_mut();
        if api.down {
            return Err(ClusterError::Unavailable("connection refused".into()));
        }
        api.log.push(format!("LIST {kind}"));
        // `key=value`, or `key` (the label exists).
        let (k, v) = selector.split_once('=').unwrap_or((selector, ""));
        Ok(api
            .objects
            .iter()
            .filter(|(r, o)| {
                let label = &o["metadata"]["labels"][k];
                r.api_version == api_version
                    && r.kind == kind
                    && if v.is_empty() {
                        !label.is_null()
                    } else {
                        label == v
                    }
            })
            .map(|(_, o)| o.clone())
            .collect())
    }
    fn delete(&self, r: &ObjectRef) -> Result<bool, ClusterError> {
        let mut api = self.0.borrow_mut();
        if api.down {
            return Err(ClusterError::Unavailable("connection refused".into()));
        }
        api.log.push(format!("DELETE {}/{}", r.kind, r.name));
        Ok(api.objects.remove(r).is_some())
    }
}

// ---- the fleet repo's contents ----

pub const SITE: &str = "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [wasm, k3s]}\n";

pub fn wasm_app(name: &str, component: &str, greeting: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  targets: [{{sites: [s1]}}]\n  workloads:\n    - {{name: w, runtime: wasm, component: {component}, command: {{}}, env: {{G: {greeting}}}}}\n"
    )
}

/// The app `shop` with the workload `web` from `k3s/web`, with `options` as its k3s settings.
pub fn k3s_app(options: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: shop}}\nspec:\n  targets: [{{sites: [s1]}}]\n  workloads:\n    - {{name: web, runtime: k3s, manifests: k3s/web, k3s: {options}}}\n"
    )
}

pub const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
pub const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {greeting: hello}\n";
pub const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop, generation: 1}\nspec: {replicas: 1}\n";

/// The status of `DEPLOY` rolled out.
pub fn ready_deployment() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})
}

// ---- the world ----

/// A fake behind every port of an engine for site `s1`.
pub struct World {
    pub repo: FakeSource,
    pub host: FakeRuntime,
    /// Collects garbage, so that what the engine keeps is seen.
    pub blobs: MemBlobs,
    pub state: MemState,
    pub reg: ManifestRegistry,
    pub cluster: FakeCluster,
    /// The signature every commit gets; `None`: unsigned.
    pub commit_signature: Option<&'static [u8]>,
}

impl World {
    pub fn new() -> Self {
        World {
            repo: FakeSource::default(),
            host: FakeRuntime::default(),
            blobs: MemBlobs::collecting(),
            state: MemState::default(),
            reg: ManifestRegistry::default(),
            cluster: FakeCluster::default(),
            commit_signature: None,
        }
    }
    /// A commit on top of the head holding `files` besides the site and the components
    /// `good.wasm` and `bad.wasm`.
    pub fn commit(&self, id: &str, files: &[(&str, &str)]) {
        let mut t = RepoTree::new();
        t.insert("sites.yaml", SITE);
        t.insert("good.wasm", "good");
        t.insert("bad.wasm", "bad");
        for (p, c) in files {
            t.insert(*p, *c);
        }
        self.repo.commit(id, t);
        if let Some(signature) = self.commit_signature {
            self.repo.sign(id, signature);
        }
    }
    /// The engine with the source, runtime, store and state; no verifier, registry or cluster.
    pub fn engine(&self) -> Engine<FakeSource, FakeRuntime, MemBlobs, MemState> {
        Engine::new(
            "s1".into(),
            self.repo.clone(),
            self.host.clone(),
            self.blobs.clone(),
            self.state.clone(),
        )
        .unwrap()
    }
    /// The activations since the last call.
    pub fn activations(&self) -> Vec<String> {
        std::mem::take(&mut self.host.0.borrow_mut().activations)
    }
}

//! The audit events of the cycle, with in-memory fakes behind every port: an applied release
//! with its artifacts and who signed them, one event per distinct refusal of a commit retried
//! every cycle, returns to the previous release (failed activation, health gate, restore), k3s
//! prune and drift correction — and nothing for a cycle that changes nothing.

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
use fleetlet_engine::{
    AgentState, AuditAction, AuditArtifact, AuditEvent, AuditWorkload, CycleOutcome, Engine, Stage,
};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

// ---- the fleet repo ----

#[derive(Default)]
struct Repo {
    commits: BTreeMap<String, RepoTree>,
    head: Option<String>,
    parents: BTreeMap<String, Option<String>>,
    signatures: BTreeMap<String, SignedObject>,
    tags: BTreeMap<String, Vec<TagEvidence>>,
    down: bool,
}

#[derive(Clone, Default)]
struct FakeSource(Rc<RefCell<Repo>>);

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
    fn read_tree(&self, commit: &str) -> Result<RepoTree, SourceError> {
        Ok(self.0.borrow().commits[commit].clone())
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
}

// ---- the Wasm runtime ----

#[derive(Default)]
struct Host {
    running: BTreeMap<String, ObservedWorkload>,
    /// Component contents that fail to prepare / to activate.
    bad_prepare: Vec<Digest>,
    bad_activate: Vec<Digest>,
}

#[derive(Clone, Default)]
struct FakeRuntime(Rc<RefCell<Host>>);

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

// ---- the artifact store and the registry ----

/// Blobs by digest. Tests put every blob in beforehand, so a pull never downloads one.
#[derive(Clone, Default)]
struct Mem(Arc<Mutex<BTreeMap<Digest, Vec<u8>>>>);

impl BlobStore for Mem {
    fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        self.0.lock().unwrap().insert(d, bytes.to_vec());
        Ok(d)
    }
    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.lock().unwrap().get(digest).cloned())
    }
}

impl ArtifactStore for Mem {
    fn contains(&self, digest: &Digest) -> bool {
        self.0.lock().unwrap().contains_key(digest)
    }
    fn begin(
        &self,
        digest: &Digest,
        _: u64,
    ) -> Result<Option<Box<dyn BlobUpload + '_>>, StoreError> {
        Err(StoreError::Io {
            digest: digest.to_string(),
            message: "the test put no such blob".into(),
        })
    }
    fn tag(&self, _: &str, _: &Descriptor) -> Result<(), StoreError> {
        Ok(())
    }
    fn collect_garbage(&self, _: &BTreeSet<Digest>) -> Result<(usize, u64), StoreError> {
        Ok((0, 0))
    }
}

/// Manifests by `repository:tag` and by digest.
#[derive(Clone, Default)]
struct Reg(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

impl Registry for Reg {
    fn fetch_manifest(&self, r: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        let key = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => format!("{}:{t}", r.repository),
            (None, None) => unreachable!(),
        };
        let bytes =
            self.0
                .lock()
                .unwrap()
                .get(&key)
                .cloned()
                .ok_or_else(|| RegistryError::NotFound {
                    reference: r.to_string(),
                    message: "no such manifest".into(),
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
        unreachable!("every blob is in the store")
    }
    fn push_blob(&self, _: &RegistryRef, _: &Digest, _: &[u8]) -> Result<(), RegistryError> {
        unreachable!()
    }
    fn push_manifest(&self, _: &RegistryRef, _: &[u8], _: &str) -> Result<Digest, RegistryError> {
        unreachable!()
    }
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An artifact `reg.test/REPOSITORY:TAG` (a Wasm component, or a container image) with its
/// blobs in the store; returns its manifest digest and component layer digest.
fn artifact(reg: &Reg, store: &Mem, repository: &str, tag: &str, wasm: bool) -> (Digest, Digest) {
    let (config_type, layer_type) = if wasm {
        ("application/vnd.wasm.config.v0+json", "application/wasm")
    } else {
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let content = format!("{repository}:{tag}");
    let config = store.put(b"{}").unwrap();
    let layer = store.put(content.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"{config_type}","digest":"{config}","size":2}},"layers":[{{"mediaType":"{layer_type}","digest":"{layer}","size":{}}}]}}"#,
        content.len()
    );
    let digest = Digest::of(manifest.as_bytes());
    let mut m = reg.0.lock().unwrap();
    m.insert(format!("{repository}:{tag}"), manifest.clone().into_bytes());
    m.insert(digest.to_string(), manifest.into_bytes());
    (digest, layer)
}

/// A cosign signature manifest for `repository@digest`; returns its digest (the material).
fn sign(reg: &Reg, store: &Mem, repository: &str, digest: &Digest) -> Digest {
    let config = store.put(b"{}").unwrap();
    let payload = format!("signed {digest}");
    let layer = store.put(payload.as_bytes()).unwrap();
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"{layer}","size":{}}}]}}"#,
        payload.len()
    );
    let sig_digest = Digest::of(sig.as_bytes());
    let mut m = reg.0.lock().unwrap();
    m.insert(
        format!("{repository}:sha256-{}.sig", digest.hex()),
        sig.clone().into_bytes(),
    );
    m.insert(sig_digest.to_string(), sig.into_bytes());
    sig_digest
}

// ---- the trust policy ----

fn signer(name: &str) -> Signer {
    Signer {
        kind: SignerKind::Key,
        identity: name.into(),
        detail: None,
        log_index: None,
    }
}

/// Commits signed `good` pass (by "alice"), unsigned ones pass without a signer; artifacts pass
/// (by "release") when a signature manifest is found; moving back needs a tag saying so.
struct Policy;

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
            None => Ok(None),
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
        true
    }
    fn max_source_age(&self) -> Option<i64> {
        None
    }
}

// ---- the cluster ----

#[derive(Default)]
struct Api {
    objects: BTreeMap<ObjectRef, Value>,
    /// Fields changed by hand (another field manager owns them now).
    hand_edits: BTreeMap<ObjectRef, (String, String)>,
}

/// A cluster that keeps objects in a map (no field ownership, defaulting or controllers).
#[derive(Clone, Default)]
struct FakeCluster(Rc<RefCell<Api>>);

impl FakeCluster {
    fn key(&self, r: &str) -> ObjectRef {
        self.0
            .borrow()
            .objects
            .keys()
            .find(|k| k.to_string() == r)
            .cloned()
            .unwrap_or_else(|| panic!("{r} is not on the cluster"))
    }
    fn set_status(&self, r: &str, status: Value) {
        let key = self.key(r);
        self.0.borrow_mut().objects.get_mut(&key).unwrap()["status"] = status;
    }
    fn edit_by_hand(&self, r: &str, pointer: &str, value: Value, field: &str) {
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
}

impl Cluster for FakeCluster {
    fn apply(&self, object: &Value, options: ApplyOptions) -> Result<Value, ClusterError> {
        let r = ObjectRef::of(object).unwrap();
        let mut api = self.0.borrow_mut();
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
        Ok(self.0.borrow().objects.get(r).cloned())
    }
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        let (k, v) = selector.split_once('=').unwrap_or((selector, ""));
        Ok(self
            .0
            .borrow()
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
        Ok(self.0.borrow_mut().objects.remove(r).is_some())
    }
}

// ---- the world ----

#[derive(Clone, Default)]
struct MemState(Rc<RefCell<Option<AgentState>>>);
impl StateStore for MemState {
    fn load(&self) -> Result<Option<AgentState>, StateError> {
        Ok(self.0.borrow().clone())
    }
    fn save(&self, s: &AgentState) -> Result<(), StateError> {
        *self.0.borrow_mut() = Some(s.clone());
        Ok(())
    }
}

const SITE: &str = "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [wasm, k3s]}\n";

fn wasm_app(name: &str, component: &str, greeting: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  targets: [{{sites: [s1]}}]\n  workloads:\n    - {{name: w, runtime: wasm, component: {component}, command: {{}}, env: {{G: {greeting}}}}}\n"
    )
}

fn k3s_app(options: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: shop}}\nspec:\n  targets: [{{sites: [s1]}}]\n  workloads:\n    - {{name: web, runtime: k3s, manifests: k3s/web, k3s: {options}}}\n"
    )
}

const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {greeting: hello}\n";
const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop, generation: 1}\nspec: {replicas: 1}\n";

struct World {
    repo: FakeSource,
    host: FakeRuntime,
    store: Mem,
    reg: Reg,
    state: MemState,
    cluster: FakeCluster,
}

impl World {
    fn new() -> Self {
        World {
            repo: FakeSource::default(),
            host: FakeRuntime::default(),
            store: Mem::default(),
            reg: Reg::default(),
            state: MemState::default(),
            cluster: FakeCluster::default(),
        }
    }
    /// A commit on top of the head, signed `good`, holding `files` besides the site.
    fn commit(&self, id: &str, files: &[(&str, &str)]) {
        let mut t = RepoTree::new();
        t.insert("sites.yaml", SITE);
        t.insert("good.wasm", "good");
        t.insert("bad.wasm", "bad");
        for (p, c) in files {
            t.insert(*p, *c);
        }
        let mut r = self.repo.0.borrow_mut();
        let parent = r.head.clone();
        r.parents.entry(id.into()).or_insert(parent);
        r.commits.insert(id.into(), t);
        r.signatures.insert(
            id.into(),
            SignedObject {
                signature: b"good".to_vec(),
                payload: id.as_bytes().to_vec(),
            },
        );
        r.head = Some(id.into());
    }
    fn tag(&self, commit: &str, name: &str) {
        self.repo
            .0
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
    fn engine(&self) -> Engine<FakeSource, FakeRuntime, Mem, MemState> {
        Engine::new(
            "s1".into(),
            self.repo.clone(),
            self.host.clone(),
            self.store.clone(),
            self.state.clone(),
        )
        .unwrap()
        .with_verifier(Box::new(Policy))
        .with_registry(Box::new(self.reg.clone()))
        .with_cluster(Box::new(self.cluster.clone()))
    }
}

fn actions(events: &[AuditEvent]) -> Vec<AuditAction> {
    events.iter().map(|e| e.action.clone()).collect()
}

fn workload(id: &str, artifacts: Vec<AuditArtifact>) -> AuditWorkload {
    AuditWorkload {
        id: id.into(),
        artifacts,
    }
}

fn ready_deployment() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})
}

#[test]
fn an_applied_release_is_reported_once_with_its_artifacts_and_signers() {
    let w = World::new();
    let (component, _) = artifact(&w.reg, &w.store, "fleet/b", "v1", true);
    let component_sig = sign(&w.reg, &w.store, "fleet/b", &component);
    let (image, _) = artifact(&w.reg, &w.store, "acme/web", "1.4", false);
    let image_sig = sign(&w.reg, &w.store, "acme/web", &image);
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: reg.test/acme/web:1.4}]\n";
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "reg.test/fleet/b:v1", "b")),
            ("shop.yaml", &k3s_app("{}")),
            ("k3s/web/deploy.yaml", deploy),
        ],
    );
    w.tag("c1", "release-1.0");
    let mut e = w.engine();
    assert!(matches!(e.reconcile(10), CycleOutcome::Applied { .. }));
    let events = e.take_audit_events();
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1]);
    let events: Vec<AuditEvent> = events
        .into_iter()
        .map(|e| AuditEvent { id: 0, ..e })
        .collect();
    let release = |name: &str| vec![signer(name)];
    assert_eq!(
        events,
        [AuditEvent {
            commit: Some("c1".into()),
            reference: Some("refs/heads/main".into()),
            tags: vec!["release-1.0".into()],
            commit_signers: release("alice"),
            workloads: vec![
                workload(
                    "a/w",
                    vec![AuditArtifact {
                        reference: "good.wasm".into(),
                        digest: Digest::of(b"good"),
                        signers: vec![],
                        material: vec![],
                    }]
                ),
                workload(
                    "b/w",
                    vec![AuditArtifact {
                        reference: format!("reg.test/fleet/b:v1@{component}"),
                        digest: component,
                        signers: release("release"),
                        material: vec![component_sig],
                    }]
                ),
                workload(
                    "shop/web",
                    vec![AuditArtifact {
                        reference: format!("reg.test/acme/web:1.4@{image}"),
                        digest: image,
                        signers: release("release"),
                        material: vec![image_sig],
                    }]
                ),
            ],
            ..AuditEvent::new(10, AuditAction::Applied)
        }]
    );
    assert!(e.take_audit_events().is_empty(), "taking drains");

    // Cycles that change nothing (the release is promoted, the source goes down and comes
    // back) report nothing.
    assert_eq!(e.reconcile(11), CycleOutcome::Unchanged);
    w.repo.0.borrow_mut().down = true;
    assert_eq!(e.reconcile(12), CycleOutcome::SourceUnavailable);
    w.repo.0.borrow_mut().down = false;
    assert_eq!(e.reconcile(13), CycleOutcome::Unchanged);
    assert_eq!(e.take_audit_events(), []);
}

#[test]
fn a_commit_retried_every_cycle_is_reported_once_per_distinct_failure() {
    let w = World::new();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    let mut e = w.engine();
    e.reconcile(1);
    e.take_audit_events();

    // c2's component is not signed (yet): the release is held and retried every cycle.
    let (component, layer) = artifact(&w.reg, &w.store, "fleet/a", "v2", true);
    w.commit(
        "c2",
        &[("a.yaml", &wasm_app("a", "reg.test/fleet/a:v2", "two"))],
    );
    for now in 2..5 {
        assert_eq!(
            e.reconcile(now),
            CycleOutcome::Rejected {
                commit: Some("c2".into()),
                stage: Stage::Verify
            }
        );
    }
    // An outage in between is no refusal, and does not make the next retry news.
    w.repo.0.borrow_mut().down = true;
    e.reconcile(5);
    w.repo.0.borrow_mut().down = false;
    e.reconcile(6);
    let events = e.take_audit_events();
    assert_eq!(actions(&events), [AuditAction::Rejected], "{events:#?}");
    let rejected = &events[0];
    assert_eq!(
        (
            rejected.at,
            rejected.commit.as_deref(),
            rejected.reference.as_deref(),
            rejected.stage
        ),
        (2, Some("c2"), Some("refs/heads/main"), Some(Stage::Verify))
    );
    assert!(
        rejected
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no signature")),
        "{rejected:?}"
    );

    // A restart retries c2 (trust roots may have changed); failing the same way is not news.
    drop(e);
    let mut e = w.engine();
    e.restore().unwrap();
    e.reconcile(7);
    assert_eq!(e.take_audit_events(), []);

    // Signed now, but it does not compile: another failure, reported once.
    sign(&w.reg, &w.store, "fleet/a", &component);
    w.host.0.borrow_mut().bad_prepare.push(layer);
    for now in 8..11 {
        assert_eq!(
            e.reconcile(now),
            CycleOutcome::Rejected {
                commit: Some("c2".into()),
                stage: Stage::Prepare
            }
        );
    }
    let events = e.take_audit_events();
    assert_eq!(actions(&events), [AuditAction::Rejected], "{events:#?}");
    assert_eq!((events[0].at, events[0].stage), (8, Some(Stage::Prepare)));
    assert!(
        events[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("does not compile"))
    );
}

#[test]
fn a_failed_activation_is_reported_as_a_return_to_the_previous_release() {
    let w = World::new();
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "good.wasm", "b")),
        ],
    );
    let mut e = w.engine();
    e.reconcile(1);
    let applied = e.take_audit_events().remove(0);
    w.commit(
        "c2",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "two")),
            ("b.yaml", &wasm_app("b", "bad.wasm", "b")),
        ],
    );
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"bad"));
    // A host failure: retried every cycle, reported once.
    for now in 2..4 {
        assert_eq!(
            e.reconcile(now),
            CycleOutcome::Rejected {
                commit: Some("c2".into()),
                stage: Stage::Apply
            }
        );
    }
    let events = e.take_audit_events();
    assert_eq!(
        actions(&events),
        [AuditAction::RolledBack, AuditAction::Rejected],
        "{events:#?}"
    );
    let back = &events[0];
    assert_eq!(
        (
            back.at,
            back.commit.as_deref(),
            back.from.as_deref(),
            back.stage
        ),
        (2, Some("c1"), Some("c2"), Some(Stage::Apply))
    );
    assert!(
        back.reason
            .as_deref()
            .is_some_and(|r| r.contains("activating b/w")),
        "{back:?}"
    );
    assert_eq!(back.workloads, applied.workloads, "what runs again");
    assert_eq!(back.commit_signers, [signer("alice")]);
    assert_eq!(events[1].commit.as_deref(), Some("c2"));

    // A failed first release returns to nothing.
    let w = World::new();
    w.commit(
        "c1",
        &[
            ("a.yaml", &wasm_app("a", "good.wasm", "one")),
            ("b.yaml", &wasm_app("b", "bad.wasm", "b")),
        ],
    );
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"bad"));
    let mut e = w.engine();
    e.reconcile(1);
    let events = e.take_audit_events();
    assert_eq!(
        actions(&events),
        [AuditAction::RolledBack, AuditAction::Rejected]
    );
    assert_eq!(
        (events[0].commit.as_deref(), events[0].from.as_deref()),
        (None, Some("c1"))
    );
}

#[test]
fn a_restore_that_falls_back_to_the_last_known_good_is_reported_with_the_next_cycle() {
    let w = World::new();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    let mut e = w.engine();
    e.reconcile(1);
    e.reconcile(2); // c1 becomes the last-known-good
    e.take_audit_events();
    w.commit(
        "c2",
        &[
            ("two.wasm", "two"),
            ("a.yaml", &wasm_app("a", "two.wasm", "two")),
        ],
    );
    e.reconcile(3);
    assert_eq!(actions(&e.take_audit_events()), [AuditAction::Applied]);
    drop(e);

    // After a restart c2 cannot start: c1 runs instead.
    w.host.0.borrow_mut().running.clear();
    w.host.0.borrow_mut().bad_activate.push(Digest::of(b"two"));
    let mut e = w.engine();
    e.restore().unwrap_or_else(|err| panic!("{err:?}"));
    assert_eq!(e.take_audit_events(), [], "no time to stamp them with yet");
    w.tag("c1", "release-1.0");
    e.reconcile(100);
    let events = e.take_audit_events();
    assert_eq!(actions(&events)[0], AuditAction::RolledBack, "{events:#?}");
    let back = &events[0];
    assert_eq!(
        (
            back.at,
            back.commit.as_deref(),
            back.from.as_deref(),
            back.tags.clone()
        ),
        (100, Some("c1"), Some("c2"), vec!["release-1.0".to_string()])
    );
}

#[test]
fn a_k3s_release_not_healthy_in_time_is_reported_as_rolled_back() {
    let w = World::new();
    let app = k3s_app("{healthTimeout: 5m}");
    w.commit(
        "c1",
        &[("shop.yaml", &app), ("k3s/web/deploy.yaml", DEPLOY)],
    );
    let mut e = w.engine();
    e.reconcile(100);
    w.cluster
        .set_status("Deployment/shop/web", ready_deployment());
    e.reconcile(101);
    let v2 = DEPLOY
        .replace("generation: 1", "generation: 2")
        .replace("replicas: 1", "replicas: 2");
    w.commit("c2", &[("shop.yaml", &app), ("k3s/web/deploy.yaml", &v2)]);
    e.reconcile(200);
    assert_eq!(
        actions(&e.take_audit_events()),
        [AuditAction::Applied, AuditAction::Applied]
    );
    e.reconcile(400); // within the timeout
    assert_eq!(e.take_audit_events(), []);
    e.reconcile(501);
    let events = e.take_audit_events();
    assert_eq!(actions(&events), [AuditAction::RolledBack], "{events:#?}");
    let back = &events[0];
    assert_eq!(
        (
            back.at,
            back.commit.as_deref(),
            back.from.as_deref(),
            back.stage
        ),
        (501, Some("c1"), Some("c2"), Some(Stage::Health))
    );
    assert!(
        back.reason
            .as_deref()
            .is_some_and(|r| r.contains("timeout 5m")),
        "{back:?}"
    );
    // c2 stays refused; that is not reported again.
    assert_eq!(
        e.reconcile(502),
        CycleOutcome::Rejected {
            commit: Some("c2".into()),
            stage: Stage::Health
        }
    );
    assert_eq!(e.take_audit_events(), []);
}

#[test]
fn objects_pruned_from_the_cluster_are_reported_by_name() {
    let w = World::new();
    let app = k3s_app("{}");
    let extra = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: shop}\n";
    w.commit(
        "c1",
        &[
            ("shop.yaml", &app),
            ("k3s/web/ns.yaml", NS),
            ("k3s/web/cm.yaml", CM),
            ("k3s/web/extra.yaml", extra),
        ],
    );
    let mut e = w.engine();
    e.reconcile(1);
    e.take_audit_events();
    w.commit("c2", &[("shop.yaml", &app), ("k3s/web/ns.yaml", NS)]);
    assert!(matches!(e.reconcile(2), CycleOutcome::Applied { .. }));
    let events = e.take_audit_events();
    assert_eq!(
        actions(&events),
        [AuditAction::Pruned, AuditAction::Applied],
        "{events:#?}"
    );
    let pruned = &events[0];
    assert_eq!(
        (
            pruned.at,
            pruned.commit.as_deref(),
            pruned.reference.as_deref()
        ),
        (2, Some("c2"), Some("refs/heads/main"))
    );
    // In reverse apply order, as they were deleted.
    assert_eq!(
        pruned.objects,
        ["ConfigMap/shop/extra", "ConfigMap/shop/settings"]
    );
}

#[test]
fn drift_is_reported_when_corrected_and_not_when_only_counted() {
    for (options, corrects) in [("{}", true), ("{drift: report}", false)] {
        let w = World::new();
        let app = k3s_app(options);
        w.commit(
            "c1",
            &[
                ("shop.yaml", &app),
                ("k3s/web/ns.yaml", NS),
                ("k3s/web/cm.yaml", CM),
            ],
        );
        let mut e = w.engine().drift_interval(60);
        e.reconcile(1000);
        e.take_audit_events();
        w.cluster.edit_by_hand(
            "ConfigMap/shop/settings",
            "/data/greeting",
            json!("hacked"),
            ".data.greeting",
        );
        e.reconcile(1100);
        let events: Vec<AuditEvent> = e
            .take_audit_events()
            .into_iter()
            .map(|e| AuditEvent { id: 0, ..e })
            .collect();
        if !corrects {
            assert_eq!(events, [], "{options}");
            continue;
        }
        assert_eq!(
            events,
            [AuditEvent {
                commit: Some("c1".into()),
                reference: Some("refs/heads/main".into()),
                workloads: vec![workload("shop/web", vec![])],
                reason: Some(
                    "ConfigMap/shop/settings: .data.greeting (taken over by kubectl-edit)".into()
                ),
                objects: vec!["ConfigMap/shop/settings".into()],
                ..AuditEvent::new(1100, AuditAction::DriftCorrected)
            }]
        );
        // Undone: the next check finds nothing.
        e.reconcile(1200);
        assert_eq!(e.take_audit_events(), []);
    }
}

#[test]
fn events_wait_in_the_state_record_until_the_log_has_them() {
    let w = World::new();
    w.commit("c1", &[("a.yaml", &wasm_app("a", "good.wasm", "one"))]);
    let mut e = w.engine();
    e.reconcile(10);
    let pending: Vec<u64> = e.pending_audit_events().iter().map(|e| e.id).collect();
    assert_eq!(pending, [1]);
    // The agent stops before writing them: a new start finds them again.
    drop(e);
    let mut e = w.engine();
    assert_eq!(
        e.pending_audit_events()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [1]
    );
    e.ack_audit(1);
    assert!(e.pending_audit_events().is_empty());
    w.commit("c2", &[("a.yaml", &wasm_app("a", "good.wasm", "two"))]);
    e.reconcile(20);
    // Numbering carries on, also past what a log kept beside a reset state record holds.
    assert_eq!(e.pending_audit_events()[0].id, 2);
    e.continue_audit_ids(41);
    e.ack_audit(2);
    w.commit("c3", &[("a.yaml", &wasm_app("a", "good.wasm", "three"))]);
    e.reconcile(30);
    assert_eq!(e.pending_audit_events()[0].id, 42);
}

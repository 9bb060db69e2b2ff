//! The import gate's checks with in-memory fakes: history, commit signature, render, and every
//! artifact resolved from the staged bundle over the site's store and signed per policy (held
//! per workload when the policy is not atomic).

use fleetlet_core::reference::RegistryRef;
use fleetlet_core::{Digest, RepoTree};
use fleetlet_engine::Stage;
use fleetlet_engine::artifacts::Platform;
use fleetlet_engine::ports::*;
use fleetlet_engine::preflight::{Layered, Preflight, check_release};
use fleetlet_engine::registry::{
    ArtifactStore, BlobSink, BlobUpload, Descriptor, FetchedManifest, Registry, RegistryError,
};
use fleetlet_engine::trust::{
    Requirement, SignatureManifest, SignedObject, Signer, SignerKind, TagEvidence, Verifier,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

const WASM_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Default)]
struct Git {
    trees: BTreeMap<String, RepoTree>,
    parents: BTreeMap<String, String>,
    signatures: BTreeMap<String, SignedObject>,
    tags: BTreeMap<String, Vec<TagEvidence>>,
}

impl Source for Git {
    fn poll(&mut self, _: Option<&str>) -> Result<Poll, SourceError> {
        unreachable!("the gate reads commits it is given")
    }
    fn read_tree(&self, commit: &str) -> Result<RepoTree, SourceError> {
        Ok(self.trees[commit].clone())
    }
    fn descends_from(&self, commit: &str, ancestor: &str) -> Result<bool, SourceError> {
        let mut at = Some(commit.to_string());
        while let Some(c) = at {
            if c == ancestor {
                return Ok(true);
            }
            at = self.parents.get(&c).cloned();
        }
        Ok(false)
    }
    fn commit_signature(&self, commit: &str) -> Result<Option<SignedObject>, SourceError> {
        Ok(self.signatures.get(commit).cloned())
    }
    fn tags_at(&self, commit: &str) -> Result<Vec<TagEvidence>, SourceError> {
        Ok(self.tags.get(commit).cloned().unwrap_or_default())
    }
}

/// Blobs by digest; `begin` is refused, so a blob that neither store has fails the pull.
#[derive(Default)]
struct Mem(Mutex<BTreeMap<Digest, Vec<u8>>>);

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
            message: "not in the bundle".into(),
        })
    }
    fn tag(&self, _: &str, _: &Descriptor) -> Result<(), StoreError> {
        Ok(())
    }
    fn collect_garbage(&self, _: &BTreeSet<Digest>) -> Result<(usize, u64), StoreError> {
        Ok((0, 0))
    }
}

/// A staged layout's manifests by tag and digest.
#[derive(Default)]
struct Staged(BTreeMap<String, Vec<u8>>);

impl Registry for Staged {
    fn fetch_manifest(&self, r: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        let key = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => format!("{}:{t}", r.repository),
            (None, None) => unreachable!(),
        };
        let bytes = self
            .0
            .get(&key)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound {
                reference: r.to_string(),
                message: "not in the bundle".into(),
            })?;
        Ok(FetchedManifest {
            digest: Digest::of(&bytes),
            media_type: WASM_MANIFEST.into(),
            bytes,
        })
    }
    fn fetch_blob(
        &self,
        _: &RegistryRef,
        _: &Descriptor,
        _: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        unreachable!("blobs come from the stores")
    }
    fn push_blob(&self, _: &RegistryRef, _: &Digest, _: &[u8]) -> Result<(), RegistryError> {
        unreachable!()
    }
    fn push_manifest(&self, _: &RegistryRef, _: &[u8], _: &str) -> Result<Digest, RegistryError> {
        unreachable!()
    }
}

fn signer(name: &str) -> Signer {
    Signer {
        kind: SignerKind::Key,
        identity: name.into(),
        detail: None,
        log_index: None,
    }
}

/// Commits signed `good` pass; artifacts pass when a signature manifest is present (the fake
/// does not look inside); rollback needs a tag saying so.
struct Policy {
    atomic: bool,
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

const SITE: &str = "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [wasm]}\n";

fn app(name: &str, component: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  targets: [{{sites: [s1]}}]\n  workloads:\n    - {{name: w, runtime: wasm, component: {component}, command: {{}}}}\n"
    )
}

/// A Wasm artifact `reg.test/fleet/NAME:v1` whose manifest is staged and whose blobs are in
/// `blobs`; with a signature manifest staged when `signed`.
fn artifact(staged: &mut Staged, blobs: &Mem, name: &str, signed: bool) {
    let config = blobs.put(b"{}").unwrap();
    let layer = blobs.put(format!("\0asm {name}").as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{WASM_MANIFEST}","config":{{"mediaType":"application/vnd.wasm.config.v0+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/wasm","digest":"{layer}","size":{}}}]}}"#,
        5 + name.len()
    );
    let digest = Digest::of(manifest.as_bytes());
    staged
        .0
        .insert(format!("fleet/{name}:v1"), manifest.clone().into_bytes());
    staged.0.insert(digest.to_string(), manifest.into_bytes());
    if signed {
        let payload = blobs.put(format!("signed {digest}").as_bytes()).unwrap();
        let sig = format!(
            r#"{{"schemaVersion":2,"mediaType":"{WASM_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"{payload}","size":{}}}]}}"#,
            format!("signed {digest}").len()
        );
        let tag = format!(
            "fleet/{name}:{}",
            digest.to_string().replace(':', "-") + ".sig"
        );
        staged.0.insert(
            Digest::of(sig.as_bytes()).to_string(),
            sig.clone().into_bytes(),
        );
        staged.0.insert(tag, sig.into_bytes());
    }
}

struct Case {
    git: Git,
    staged: Staged,
    upper: Mem,
    lower: Mem,
}

impl Case {
    fn new() -> Case {
        Case {
            git: Git::default(),
            staged: Staged::default(),
            upper: Mem::default(),
            lower: Mem::default(),
        }
    }

    fn commit(&mut self, id: &str, parent: Option<&str>, apps: &[(&str, &str)], signature: &[u8]) {
        let mut t = RepoTree::new();
        t.insert("sites.yaml", SITE);
        for (name, component) in apps {
            t.insert(
                format!("apps/{name}.yaml").as_str(),
                app(name, component).as_str(),
            );
        }
        self.git.trees.insert(id.into(), t);
        if let Some(p) = parent {
            self.git.parents.insert(id.into(), p.into());
        }
        if !signature.is_empty() {
            self.git.signatures.insert(
                id.into(),
                SignedObject {
                    signature: signature.to_vec(),
                    payload: id.as_bytes().to_vec(),
                },
            );
        }
    }

    fn check(
        &self,
        commit: &str,
        site: &str,
        applied: Option<&str>,
        policy: Option<&Policy>,
    ) -> Result<fleetlet_engine::preflight::Checked, fleetlet_engine::preflight::PreflightError>
    {
        let rev = Revision {
            commit: commit.into(),
            reference: "refs/heads/main".into(),
            summary: String::new(),
            time: 0,
        };
        let store = Layered {
            upper: &self.upper,
            lower: &self.lower,
        };
        check_release(
            &self.git,
            &rev,
            &Preflight {
                site,
                applied,
                verifier: policy.map(|p| p as &dyn Verifier),
                registry: &self.staged,
                store: &store,
                platform: Platform::host(),
                container_images: false,
            },
        )
    }
}

#[test]
fn a_release_passes_only_when_every_check_does() {
    let mut c = Case::new();
    // `a` was on the site before (its blobs in the lower store), `b` comes with the bundle.
    artifact(&mut c.staged, &c.lower, "a", true);
    artifact(&mut c.staged, &c.upper, "b", true);
    artifact(&mut c.staged, &Mem::default(), "lost", true);
    artifact(&mut c.staged, &c.upper, "unsigned", false);
    let (a, b) = ("reg.test/fleet/a:v1", "reg.test/fleet/b:v1");
    c.commit("c1", None, &[("one", a)], b"good");
    c.commit("c2", Some("c1"), &[("one", a), ("two", b)], b"good");
    c.commit("c3", Some("c2"), &[("one", a)], b"");
    c.commit("c4", Some("c2"), &[("one", a)], b"forged");
    c.commit(
        "c5",
        Some("c2"),
        &[("one", a), ("three", "reg.test/fleet/lost:v1")],
        b"good",
    );
    c.commit(
        "c6",
        Some("c2"),
        &[("one", a), ("four", "reg.test/fleet/unsigned:v1")],
        b"good",
    );
    c.commit(
        "c7",
        Some("c2"),
        &[("one", a), ("five", "reg.test/fleet/missing:v1")],
        b"good",
    );
    let atomic = Policy { atomic: true };

    let site_before: Vec<Digest> = c.lower.0.lock().unwrap().keys().copied().collect();
    let ok = c.check("c2", "s1", Some("c1"), Some(&atomic)).unwrap();
    assert_eq!(ok.commit_signers, [signer("alice")]);
    assert_eq!(ok.workloads, ["one/w", "two/w"]);
    assert_eq!(ok.artifacts.len(), 2, "{ok:?}");
    assert!(ok.artifacts.values().all(|s| s == &[signer("release")]));
    assert!(ok.held.is_empty());
    let site_after: Vec<Digest> = c.lower.0.lock().unwrap().keys().copied().collect();
    assert_eq!(
        site_after, site_before,
        "checking writes nothing to the site's store"
    );

    // (commit, applied, stage, what the message says)
    let cases: [(&str, Option<&str>, Stage, &str); 7] = [
        ("c3", None, Stage::Verify, "unsigned commit"),
        ("c4", None, Stage::Verify, "unknown key"),
        ("c1", Some("c2"), Stage::Verify, "does not descend from c2"),
        ("c5", None, Stage::Store, "reg.test/fleet/lost:v1"),
        ("c6", None, Stage::Verify, "no signature"),
        ("c7", None, Stage::Store, "reg.test/fleet/missing:v1"),
        ("c2", Some("c2"), Stage::Render, "no-such-site"),
    ];
    for (commit, applied, stage, want) in cases {
        let site = if stage == Stage::Render {
            "no-such-site"
        } else {
            "s1"
        };
        let e = c.check(commit, site, applied, Some(&atomic)).unwrap_err();
        assert_eq!(e.stage, stage, "{commit}: {e}");
        let text = format!("{} {:?}", e.message, e.details);
        assert!(text.contains(want), "{commit}: {text}");
    }

    // A signed rollback instruction on the older commit lets it through.
    c.git.tags.insert(
        "c1".into(),
        vec![TagEvidence {
            name: "back".into(),
            message: "fleetlet-rollback-from: c2".into(),
            time: 0,
            signed: None,
        }],
    );
    let back = c.check("c1", "s1", Some("c2"), Some(&atomic)).unwrap();
    assert_eq!(back.commit_signers, [signer("ops"), signer("alice")]);

    // Not atomic: the unsigned artifact's workload is held, the rest passes.
    let lenient = Policy { atomic: false };
    let held = c.check("c6", "s1", None, Some(&lenient)).unwrap();
    assert_eq!(held.held.keys().collect::<Vec<_>>(), ["four/w"]);
    assert!(held.held["four/w"].contains("no signature"));
    // Without a verifier only completeness is checked.
    assert!(
        c.check("c3", "s1", None, None)
            .unwrap()
            .commit_signers
            .is_empty()
    );
    assert!(c.check("c7", "s1", None, None).is_err());
}

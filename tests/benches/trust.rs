//! Verification benchmark (not a test: it prints figures).
//!
//!   cargo bench -p fleetlet-tests --bench trust
//!
//! On one thread (one core): key-based cosign verifications per second of a cached signature
//! (the agent's `verify_artifact`: manifest parse, payload checks, ECDSA P-256), and keyless
//! bundle verifications per second (the real sigstore bundle and trusted root from the
//! sigstore crate: certificate chain, SCT, signature, Rekor SET, inclusion proof, checkpoint).
//! Then a 50-artifact release against a loopback `docker-registry`, everything already in the
//! store: the time the verify step adds online (fetch the `.sig` manifests and the referrers
//! fallback, then verify) and offline (re-verification from the store at restart), next to the
//! time to re-resolve the 50 cached artifacts. Env: BENCH_ARTIFACTS (default 50).

#[path = "../it/testkit/mod.rs"]
#[allow(dead_code)]
mod testkit;

use base64::Engine as _;
use fleetlet_core::Digest;
use fleetlet_core::reference::RegistryRef;
use fleetlet_engine::artifacts::{Platform, fetch_signatures, load_signature_manifests, pull};
use fleetlet_engine::registry::Registry;
use fleetlet_engine::trust::{SignatureManifest, Verifier, cosign_signature_tag};
use fleetlet_oci::{OciRegistry, RegistryConfig};
use fleetlet_store::OciStore;
use fleetlet_verify::cosign::{self, SigningKey};
use fleetlet_verify::keyless::{KeylessIdentity, TrustedRoot, verify_bundle};
use fleetlet_verify::policy::{TrustConfig, TrustPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const FIXTURES: &str = "../reconciler/fleetlet-verify/tests/fixtures/sigstore";

fn per_second(n: usize, f: impl Fn()) -> f64 {
    f(); // warm up
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// One signing key for the whole run (the engine section verifies what section 3 signed).
fn key_for_engine() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn policy(dir: &Path, key: &SigningKey) -> TrustPolicy {
    std::fs::write(dir.join("release.pub"), key.public_pem().unwrap()).unwrap();
    let config: TrustConfig =
        serde_yaml::from_str("{keys: {release: release.pub}, commits: {require: none}}").unwrap();
    TrustPolicy::load(&config, dir).unwrap()
}

fn signed_layer(key: &SigningKey, reference: &str, digest: &Digest) -> (Vec<u8>, String) {
    let payload = cosign::simple_signing_payload(reference, digest, &BTreeMap::new());
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload).unwrap());
    (payload, sig)
}

fn main() {
    let n: usize = std::env::var("BENCH_ARTIFACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let key = key_for_engine();
    let policy = policy(dir.path(), key);

    // 1. Key-based, in memory (what is verified once the material is read from the store).
    let digest = Digest::of(b"artifact");
    let subject = RegistryRef {
        registry: "registry.local".into(),
        repository: "app".into(),
        tag: None,
        digest: Some(digest),
    };
    let layers = vec![signed_layer(key, "registry.local/app", &digest)];
    let (config, bytes) = cosign::signature_manifest(&layers);
    let mut blobs: BTreeMap<Digest, Vec<u8>> = layers
        .iter()
        .map(|(p, _)| (Digest::of(p), p.clone()))
        .collect();
    blobs.insert(Digest::of(&config), config);
    let material = vec![SignatureManifest {
        digest: Digest::of(&bytes),
        bytes,
        blobs,
    }];
    assert!(policy.verify_artifact(&subject, &material).is_ok());
    let key_rate = per_second(20_000, || {
        policy.verify_artifact(&subject, &material).unwrap();
    });

    // 2. Keyless bundle (the real one).
    let bundle = std::fs::read(Path::new(FIXTURES).join("bundle_v03.json")).unwrap();
    let root = TrustedRoot::from_json(
        &std::fs::read(Path::new(FIXTURES).join("sigstore_trusted_root.json")).unwrap(),
    )
    .unwrap();
    let mut artifact = [0u8; 32];
    artifact.copy_from_slice(
        &hex::decode("c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172").unwrap(),
    );
    let ids = [KeylessIdentity::new(
        "https://token.actions.githubusercontent.com",
        Some("https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0"),
        None,
    )
    .unwrap()];
    verify_bundle(&bundle, &artifact, &root, &ids).unwrap();
    let bundle_rate = per_second(2_000, || {
        verify_bundle(&bundle, &artifact, &root, &ids).unwrap();
    });

    // 3. A release of `n` signed artifacts, all cached.
    let registry_server = testkit::registry::TestRegistry::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = OciRegistry::new(RegistryConfig::default(), rt.handle().clone()).unwrap();
    let mut refs = Vec::new();
    for i in 0..n {
        let component = format!("component {i}").into_bytes();
        let config = b"{}".to_vec();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/wasm", "digest": Digest::of(&component).to_string(), "size": component.len()}],
        }))
        .unwrap();
        let r = RegistryRef {
            registry: registry_server.host(),
            repository: format!("bench/app{i}"),
            tag: Some("v1".into()),
            digest: None,
        };
        registry
            .push_blob(&r, &Digest::of(&config), &config)
            .unwrap();
        registry
            .push_blob(&r, &Digest::of(&component), &component)
            .unwrap();
        let d = registry
            .push_manifest(&r, &manifest, "application/vnd.oci.image.manifest.v1+json")
            .unwrap();
        let layers = vec![signed_layer(
            key,
            &format!("{}/{}", r.registry, r.repository),
            &d,
        )];
        let (config, manifest) = cosign::signature_manifest(&layers);
        let sig = RegistryRef {
            tag: Some(cosign_signature_tag(&d)),
            digest: None,
            ..r.clone()
        };
        registry
            .push_blob(&sig, &Digest::of(&config), &config)
            .unwrap();
        registry
            .push_blob(&sig, &Digest::of(&layers[0].0), &layers[0].0)
            .unwrap();
        registry
            .push_manifest(
                &sig,
                &manifest,
                "application/vnd.oci.image.manifest.v1+json",
            )
            .unwrap();
        refs.push(r.pinned(d));
    }
    let store = OciStore::open(&dir.path().join("oci")).unwrap();
    let mut material = Vec::new();
    for r in &refs {
        pull(&registry, &store, r, &Platform::host()).unwrap();
        material.push(fetch_signatures(&registry, &store, r).unwrap());
    }
    let t = Instant::now();
    for r in &refs {
        pull(&registry, &store, r, &Platform::host()).unwrap();
    }
    let resolve_cached = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &refs {
        let found = fetch_signatures(&registry, &store, r).unwrap();
        let m = load_signature_manifests(&store, &found).unwrap();
        policy.verify_artifact(r, &m).unwrap();
    }
    let online = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (r, found) in refs.iter().zip(&material) {
        let m = load_signature_manifests(&store, found).unwrap();
        policy.verify_artifact(r, &m).unwrap();
    }
    let offline = t.elapsed().as_secs_f64();

    // 4. The same through the engine: two releases of the n artifacts (the second changes only
    //    an env value), with and without a verifier; the difference is what verification adds.
    let images: Vec<String> = refs
        .iter()
        .map(|r| format!("{}/{}:v1", r.registry, r.repository))
        .collect();
    let added = |verify: bool| -> (f64, f64) {
        let state = tempfile::tempdir().unwrap();
        let store = OciStore::open(&state.path().join("oci")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let registry = OciRegistry::new(RegistryConfig::default(), rt.handle().clone()).unwrap();
        let source = engine_fakes::Source::new(&images);
        let mut engine = fleetlet_engine::Engine::new(
            "s1".into(),
            source.clone(),
            engine_fakes::Runtime,
            store,
            engine_fakes::State::default(),
        )
        .unwrap()
        .with_registry(Box::new(registry));
        if verify {
            engine = engine.with_verifier(Box::new(self::policy(state.path(), key_for_engine())));
        }
        let t = Instant::now();
        let first = engine.reconcile(1);
        let first_s = t.elapsed().as_secs_f64();
        assert!(
            matches!(first, fleetlet_engine::CycleOutcome::Applied { .. }),
            "{first:?}"
        );
        source.next_commit();
        let t = Instant::now();
        let second = engine.reconcile(2);
        let second_s = t.elapsed().as_secs_f64();
        assert!(
            matches!(second, fleetlet_engine::CycleOutcome::Applied { .. }),
            "{second:?}"
        );
        (first_s, second_s)
    };
    let (plain_first, plain_second) = added(false);
    let (signed_first, signed_second) = added(true);

    println!("verification, one thread:");
    println!(
        "  key-based (cosign simple signing, ECDSA P-256): {key_rate:>9.0} /s   target >= 5000/s"
    );
    println!(
        "  keyless bundle (chain, SCT, SET, inclusion proof, checkpoint): {bundle_rate:>6.0} /s"
    );
    println!("release of {n} signed artifacts, all cached (loopback docker-registry):");
    println!(
        "  re-resolving the {n} cached artifacts (pull, nothing to download): {:>7.1} ms",
        resolve_cached * 1e3
    );
    println!(
        "  verify step online (fetch .sig + referrers fallback, verify):       {:>7.1} ms   target <= 50 ms",
        online * 1e3
    );
    println!(
        "  verify step offline (re-verification from the store at restart):    {:>7.1} ms   target <= 50 ms",
        offline * 1e3
    );
    println!(
        "engine reconcile of a release of {n} image workloads (pull + verify + apply to a no-op runtime):"
    );
    println!(
        "  first release (signatures fetched):  {:>7.1} ms unverified, {:>7.1} ms verified: +{:.1} ms",
        plain_first * 1e3,
        signed_first * 1e3,
        (signed_first - plain_first) * 1e3
    );
    println!(
        "  next release, all cached:            {:>7.1} ms unverified, {:>7.1} ms verified: +{:.1} ms   target <= 50 ms",
        plain_second * 1e3,
        signed_second * 1e3,
        (signed_second - plain_second) * 1e3
    );
}

/// Just enough of the other ports for the engine section: a fleet repo in memory (one site,
/// `n` command workloads of image components, commits that only change an env value), a
/// runtime that runs nothing, state in memory.
mod engine_fakes {
    use fleetlet_core::render::DesiredWorkload;
    use fleetlet_core::{ObservedWorkload, RepoTree};
    use fleetlet_engine::AgentState;
    use fleetlet_engine::ports::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    #[derive(Clone)]
    pub struct Source(Rc<RefCell<(u32, Vec<String>)>>);

    impl Source {
        pub fn new(images: &[String]) -> Self {
            Source(Rc::new(RefCell::new((1, images.to_vec()))))
        }
        pub fn next_commit(&self) {
            self.0.borrow_mut().0 += 1;
        }
        fn head(&self) -> String {
            format!("c{}", self.0.borrow().0)
        }
    }

    impl fleetlet_engine::ports::Source for Source {
        fn poll(&mut self, _: Option<&str>) -> Result<Poll, SourceError> {
            Ok(Poll::Changed(Revision {
                commit: self.head(),
                reference: "refs/heads/main".into(),
                summary: String::new(),
                time: 0,
            }))
        }
        fn read_tree(&self, commit: &str) -> Result<RepoTree, SourceError> {
            let mut t = RepoTree::new();
            t.insert(
                "site.yaml",
                "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [wasm]}\n",
            );
            let mut app = String::from(
                "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {name: a}\nspec:\n  targets: [{sites: [s1]}]\n  workloads:\n",
            );
            for (i, image) in self.0.borrow().1.iter().enumerate() {
                app.push_str(&format!(
                    "    - {{name: w{i}, runtime: wasm, component: \"{image}\", command: {{}}, env: {{C: {commit}}}}}\n"
                ));
            }
            t.insert("app.yaml", app);
            Ok(t)
        }
        fn descends_from(&self, _: &str, _: &str) -> Result<bool, SourceError> {
            Ok(true)
        }
    }

    pub struct Runtime;

    impl WorkloadRuntime for Runtime {
        type Prepared = ();
        fn observe(&self) -> BTreeMap<String, ObservedWorkload> {
            BTreeMap::new()
        }
        fn prepare(&self, _: &DesiredWorkload, _: &[u8]) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn activate(&self, _: ()) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn stop(&self, _: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
    }

    #[derive(Default)]
    pub struct State(RefCell<Option<AgentState>>);

    impl StateStore for State {
        fn load(&self) -> Result<Option<AgentState>, StateError> {
            Ok(self.0.borrow().clone())
        }
        fn save(&self, s: &AgentState) -> Result<(), StateError> {
            *self.0.borrow_mut() = Some(s.clone());
            Ok(())
        }
    }
}

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
    let key = SigningKey::generate().unwrap();
    let policy = policy(dir.path(), &key);

    // 1. Key-based, in memory (what is verified once the material is read from the store).
    let digest = Digest::of(b"artifact");
    let subject = RegistryRef {
        registry: "registry.local".into(),
        repository: "app".into(),
        tag: None,
        digest: Some(digest),
    };
    let layers = vec![signed_layer(&key, "registry.local/app", &digest)];
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
            &key,
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
}

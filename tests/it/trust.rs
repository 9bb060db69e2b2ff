//! Signature verification from the command line, against the real registry and independent
//! signers (openssl).
//!
//! The corpus: cosign "simple signing" signatures made with `openssl` and pushed over the
//! registry's HTTP API by hand (so `fleetlet verify` is checked against a producer it did not
//! write), signatures made by `fleetlet sign` checked with `openssl` (the other direction),
//! cosign's own key format, policy rules from an agent config, OCI layouts, and public-key
//! sigstore bundles attached as OCI 1.1 referrers through the tag-schema fallback, logged in a
//! synthetic Rekor-like log whose trusted root the test writes. Every rejection is asserted
//! with its reason: the case must fail *for that reason*.

use crate::testkit::agent::{fleetlet_bin, write_config_with_trust};
use crate::testkit::registry::{TestRegistry, make_umoci_image};
use crate::testkit::signing::{
    Alg, BUNDLE_V03, OCI_MANIFEST, OpensslKey, RegistryHttp, SIGNATURE_ANNOTATION, SIMPLE_SIGNING,
    SigLayer, TestLog, cosign_payload, openssl_verify, push_bundle_referrer, push_cosign_signature,
    sig_tag,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use fleetlet_core::Digest;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `fleetlet ARGS` with only the given passphrase variables set.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(fleetlet_bin())
        .args(args)
        .env_remove("FLEETLET_PASSWORD")
        .env_remove("COSIGN_PASSWORD")
        .env_remove("FLEETLET_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("running fleetlet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

type Outcome = (i32, String, String);

fn verify_key(reference: &str, key: &Path, annotations: &[&str]) -> Outcome {
    let mut args = vec!["verify", reference, "--key", key.to_str().unwrap()];
    for a in annotations {
        args.extend(["-a", a]);
    }
    run(&args, &[])
}

fn verify_policy(reference: &str, config: &Path) -> Outcome {
    run(
        &["verify", reference, "--policy", config.to_str().unwrap()],
        &[],
    )
}

#[track_caller]
fn assert_verified(r: &Outcome, signer: &str) {
    let (code, out, err) = r;
    assert_eq!(*code, 0, "expected verified\nstdout: {out}\nstderr: {err}");
    assert!(
        out.contains(": verified") && out.contains(&format!("signed by {signer}")),
        "expected a signature by {signer}\nstdout: {out}\nstderr: {err}"
    );
}

/// Exit 1, "NOT verified", and every one of `reasons` in the report.
#[track_caller]
fn assert_rejected(r: &Outcome, reasons: &[&str]) {
    let (code, out, err) = r;
    assert_eq!(
        *code, 1,
        "expected a rejection\nstdout: {out}\nstderr: {err}"
    );
    assert!(
        out.contains("NOT verified"),
        "expected NOT verified\nstdout: {out}\nstderr: {err}"
    );
    for reason in reasons {
        assert!(
            out.contains(reason),
            "expected the reason {reason:?}\nstdout: {out}\nstderr: {err}"
        );
    }
}

/// Exit 1 with an error (not a verification report) naming every one of `reasons`.
#[track_caller]
fn assert_error(r: &Outcome, reasons: &[&str]) {
    let (code, out, err) = r;
    assert_eq!(*code, 1, "expected an error\nstdout: {out}\nstderr: {err}");
    assert!(
        !out.contains(": verified"),
        "must not verify\nstdout: {out}"
    );
    for reason in reasons {
        assert!(
            err.contains(reason),
            "expected {reason:?} in the error\nstdout: {out}\nstderr: {err}"
        );
    }
}

/// A registry, plain HTTP access to it, and a scratch directory for keys and configs.
struct Site {
    reg: TestRegistry,
    http: RegistryHttp,
    dir: tempfile::TempDir,
}

/// An artifact pushed to the test registry.
struct Artifact {
    repo: String,
    /// `HOST/repo:tag`.
    reference: String,
    digest: Digest,
    manifest: Vec<u8>,
}

impl Site {
    fn new() -> Site {
        let reg = TestRegistry::start().expect("docker-registry starts");
        let http = RegistryHttp::new(&reg.host());
        Site {
            reg,
            http,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn key(&self, name: &str, alg: Alg) -> OpensslKey {
        OpensslKey::generate(self.dir.path(), name, alg).expect("openssl genpkey")
    }

    fn artifact(&self, repo: &str, tag: &str) -> Artifact {
        let (digest, manifest) = self
            .http
            .push_artifact(repo, tag, &format!("{repo}:{tag}"))
            .expect("push artifact");
        Artifact {
            repo: repo.into(),
            reference: format!("{}/{repo}:{tag}", self.reg.host()),
            digest,
            manifest,
        }
    }

    /// `HOST/repo`, the payload's docker-reference.
    fn docker_ref(&self, a: &Artifact) -> String {
        format!("{}/{}", self.reg.host(), a.repo)
    }

    /// An openssl signature over cosign's payload for `a`.
    fn openssl_layer(&self, key: &OpensslKey, a: &Artifact, optional: &[(&str, &str)]) -> SigLayer {
        SigLayer::signed(
            key,
            cosign_payload(&self.docker_ref(a), &a.digest, optional),
        )
        .expect("openssl sign")
    }

    fn push_sig(&self, a: &Artifact, layers: &[SigLayer]) -> Digest {
        push_cosign_signature(&self.http, &a.repo, &a.digest, layers)
            .expect("push signature manifest")
            .0
    }

    /// `fleetlet keygen --out DIR/NAME` with passphrase `pw`: (private, public).
    fn keygen(&self, name: &str, pw: &str) -> (PathBuf, PathBuf) {
        let prefix = self.dir.path().join(name);
        let r = run(
            &["keygen", "--out", prefix.to_str().unwrap()],
            &[("FLEETLET_PASSWORD", pw)],
        );
        assert_eq!(r.0, 0, "keygen: {r:?}");
        (prefix.with_extension("key"), prefix.with_extension("pub"))
    }

    /// The signature manifest at `sha256-<hex>.sig`, parsed.
    fn sig_manifest(&self, a: &Artifact) -> Value {
        let bytes = self
            .http
            .get_manifest(&a.repo, &sig_tag(&a.digest))
            .expect("signature manifest");
        serde_json::from_slice(&bytes).expect("manifest JSON")
    }

    /// Layer `i` of the artifact's signature manifest: (payload bytes, decoded signature).
    fn sig_layer(&self, a: &Artifact, i: usize) -> (Vec<u8>, Vec<u8>) {
        let m = self.sig_manifest(a);
        let layer = &m["layers"][i];
        assert_eq!(layer["mediaType"], SIMPLE_SIGNING, "{m:#}");
        let payload = self
            .http
            .get_blob(&a.repo, layer["digest"].as_str().unwrap())
            .expect("payload blob");
        let sig = B64
            .decode(
                layer["annotations"][SIGNATURE_ANNOTATION]
                    .as_str()
                    .expect("annotation"),
            )
            .expect("base64 signature");
        (payload, sig)
    }

    /// An agent config with this `trust:` section (YAML, indented by two).
    fn policy(&self, name: &str, trust: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_config_with_trust(
            &dir,
            "store-1",
            "http://127.0.0.1:9/fleet.git",
            "1h",
            "",
            &format!("trust:\n{trust}"),
        )
    }
}

fn key_str(k: &OpensslKey) -> &str {
    k.public.to_str().unwrap()
}

// ── Signatures made with openssl, verified by fleetlet ───────────────────────────────────

#[test]
fn openssl_p256_signature_verifies() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    site.push_sig(&a, &[site.openssl_layer(&key, &a, &[])]);

    let r = verify_key(&a.reference, &key.public, &[]);
    assert_verified(&r, "key 'key' (SHA256:");
    assert!(r.1.contains(&a.digest.to_string()), "{}", r.1);

    // The JSON report says the same.
    let (code, out, err) = run(
        &["verify", &a.reference, "--key", key_str(&key), "-o", "json"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(v["verified"], true, "{v:#}");
    assert_eq!(v["signers"][0]["identity"], "key", "{v:#}");
    assert_eq!(
        v["reference"],
        format!("{}@{}", a.reference, a.digest),
        "{v:#}"
    );
}

#[test]
fn openssl_ed25519_signature_verifies() {
    let site = Site::new();
    let key = site.key("ed", Alg::Ed25519);
    let a = site.artifact("app", "v1");
    site.push_sig(&a, &[site.openssl_layer(&key, &a, &[])]);
    assert_verified(&verify_key(&a.reference, &key.public, &[]), "key 'key'");

    // And an Ed25519 signature does not pass under a P-256 key.
    let other = site.key("p256", Alg::P256);
    assert_rejected(
        &verify_key(&a.reference, &other.public, &[]),
        &["not signed by a key allowed here (key)"],
    );
}

#[test]
fn signature_on_a_pushed_wasm_component_verifies_by_tag_and_by_digest() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let reference = format!("{}/fleet/probe:v1", site.reg.host());
    let component = crate::testkit::components::probe_http();
    let (code, out, err) = run(&["push", component.to_str().unwrap(), &reference], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let manifest = site.http.get_manifest("fleet/probe", "v1").unwrap();
    let a = Artifact {
        repo: "fleet/probe".into(),
        reference: reference.clone(),
        digest: Digest::of(&manifest),
        manifest,
    };
    assert_eq!(out.trim(), format!("{reference}@{}", a.digest));
    site.push_sig(&a, &[site.openssl_layer(&key, &a, &[])]);

    assert_verified(&verify_key(&a.reference, &key.public, &[]), "key 'key'");
    let by_digest = format!("{}/fleet/probe@{}", site.reg.host(), a.digest);
    assert_verified(&verify_key(&by_digest, &key.public, &[]), "key 'key'");
}

// ── Rejections, each for its reason ──────────────────────────────────────────────────────

#[test]
fn unsigned_artifact_is_rejected_as_unsigned() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    assert_rejected(
        &verify_key(&a.reference, &key.public, &[]),
        &["unsigned", &sig_tag(&a.digest)],
    );
}

#[test]
fn signature_by_another_key_is_rejected() {
    let site = Site::new();
    let signer = site.key("signer", Alg::P256);
    let trusted = site.key("trusted", Alg::P256);
    let a = site.artifact("app", "v1");
    site.push_sig(&a, &[site.openssl_layer(&signer, &a, &[])]);
    assert_rejected(
        &verify_key(&a.reference, &trusted.public, &[]),
        &["not signed by a key allowed here (key)"],
    );
    // The control: the signer's own key accepts it.
    assert_verified(&verify_key(&a.reference, &signer.public, &[]), "key 'key'");
}

#[test]
fn signature_replayed_from_another_artifact_is_rejected() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let b = site.artifact("app", "v2");
    assert_ne!(a.digest, b.digest);
    site.push_sig(&a, &[site.openssl_layer(&key, &a, &[])]);
    assert_verified(&verify_key(&a.reference, &key.public, &[]), "key 'key'");

    // A's valid signature manifest, byte for byte, at B's signature tag.
    let sig = site.http.get_manifest("app", &sig_tag(&a.digest)).unwrap();
    site.http
        .put_manifest("app", &sig_tag(&b.digest), &sig, OCI_MANIFEST)
        .unwrap();
    assert_rejected(
        &verify_key(&b.reference, &key.public, &[]),
        &[
            "not over",
            &format!("is over {}, not over {}", a.digest, b.digest),
        ],
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let payload = cosign_payload(&site.docker_ref(&a), &a.digest, &[]);
    let sig = B64.encode(key.sign(&payload).unwrap());
    // One byte of the docker-reference changed (the digest still names this artifact, so
    // only the signature can catch it).
    let mut tampered = payload.clone();
    let at = tampered
        .windows(4)
        .position(|w| w == b"/app")
        .expect("docker-reference in the payload")
        + 1;
    tampered[at] = b'b';
    assert_ne!(tampered, payload);
    site.push_sig(&a, &[SigLayer::simple(tampered, Some(sig))]);
    assert_rejected(
        &verify_key(&a.reference, &key.public, &[]),
        &["layer 0: not signed by a key allowed here (key)"],
    );
}

#[test]
fn foreign_layer_next_to_a_good_signature_is_ignored() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    site.push_sig(
        &a,
        &[
            SigLayer::foreign(
                "application/vnd.example.sbom+json",
                b"{\"sbom\":1}".to_vec(),
            ),
            site.openssl_layer(&key, &a, &[]),
        ],
    );
    assert_verified(&verify_key(&a.reference, &key.public, &[]), "key 'key'");

    // Alone, the foreign layer is not a signature (and is named as such).
    let b = site.artifact("app", "v2");
    site.push_sig(
        &b,
        &[
            SigLayer::foreign(
                "application/vnd.example.sbom+json",
                b"{\"sbom\":2}".to_vec(),
            ),
            SigLayer::simple(
                cosign_payload(&site.docker_ref(&b), &b.digest, &[]),
                Some("@@@".into()),
            ),
        ],
    );
    assert_rejected(
        &verify_key(&b.reference, &key.public, &[]),
        &[
            "layer 0: media type \"application/vnd.example.sbom+json\" is not a cosign signature",
            "layer 1: signature annotation is not base64",
        ],
    );
}

#[test]
fn malformed_layers_are_rejected_naming_each_problem() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let payload = cosign_payload(&site.docker_ref(&a), &a.digest, &[]);
    let not_json = b"this is not a simple-signing document".to_vec();
    let wrong_type = String::from_utf8(payload.clone())
        .unwrap()
        .replace("cosign container image signature", "something else")
        .into_bytes();
    site.push_sig(
        &a,
        &[
            // A good signature, mangled base64.
            SigLayer::simple(
                payload.clone(),
                Some(format!("!{}", B64.encode(key.sign(&payload).unwrap()))),
            ),
            // No signature annotation at all.
            SigLayer::simple(payload.clone(), None),
            // Signed, but the payload is not JSON.
            SigLayer::signed(&key, not_json).unwrap(),
            // Signed JSON of another type.
            SigLayer::signed(&key, wrong_type).unwrap(),
        ],
    );
    assert_rejected(
        &verify_key(&a.reference, &key.public, &[]),
        &[
            "layer 0: signature annotation is not base64",
            &format!("layer 1: no {SIGNATURE_ANNOTATION} annotation"),
            "layer 2: payload is not a simple-signing document",
            "layer 3: payload type \"something else\" is not",
        ],
    );
}

#[test]
fn signature_whose_payload_blob_is_missing_is_an_error_naming_the_blob() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let layer = site.openssl_layer(&key, &a, &[]);
    let payload_digest = Digest::of(&layer.blob);
    site.push_sig(&a, &[layer]);
    // The registry checks blobs on manifest push; remove it afterwards.
    site.http.delete_blob("app", &payload_digest).unwrap();
    let r = verify_key(&a.reference, &key.public, &[]);
    assert_error(&r, &["fetching signatures", &payload_digest.to_string()]);
}

#[test]
fn signature_manifest_with_65_layers_is_refused_before_download() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let mut layers: Vec<SigLayer> = (0..64)
        .map(|i| SigLayer::simple(format!("{{\"n\":{i}}}").into_bytes(), Some("AAAA".into())))
        .collect();
    layers.push(site.openssl_layer(&key, &a, &[]));
    let blobs: Vec<Digest> = layers.iter().map(|l| Digest::of(&l.blob)).collect();
    site.push_sig(&a, &layers);
    // Had anything been downloaded, these would be missing instead.
    std::thread::scope(|s| {
        for chunk in blobs.chunks(11) {
            let http = &site.http;
            s.spawn(move || {
                for d in chunk {
                    http.delete_blob("app", d).unwrap();
                }
            });
        }
    });
    assert_error(
        &verify_key(&a.reference, &key.public, &[]),
        &["signature manifest has 65 layers (at most 64)"],
    );
}

#[test]
fn signature_manifest_with_64_layers_and_a_1_mib_blob_is_accepted() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let mut layers: Vec<SigLayer> = vec![SigLayer::foreign(
        "application/octet-stream",
        vec![7u8; 1 << 20],
    )];
    layers.extend((1..63).map(|i| {
        SigLayer::foreign(
            "application/vnd.example.note",
            format!("note {i}").into_bytes(),
        )
    }));
    layers.push(site.openssl_layer(&key, &a, &[]));
    assert_eq!(layers.len(), 64);
    site.push_sig(&a, &layers);
    assert_verified(&verify_key(&a.reference, &key.public, &[]), "key 'key'");
}

#[test]
fn fleetlet_sign_does_not_push_a_signature_manifest_the_verifier_refuses() {
    // 64 signatures already (cosign appends one layer per signature); one more must not
    // make the artifact unverifiable for everyone.
    let site = Site::new();
    let ossl = site.key("ossl", Alg::P256);
    let (private, public) = site.keygen("fk", "pw");
    let a = site.artifact("app", "v1");
    let mut layers: Vec<SigLayer> = (1..64)
        .map(|i| {
            SigLayer::simple(
                cosign_payload(&site.docker_ref(&a), &a.digest, &[("n", &i.to_string())]),
                Some("AAAA".into()),
            )
        })
        .collect();
    layers.push(site.openssl_layer(&ossl, &a, &[]));
    site.push_sig(&a, &layers);
    assert_verified(&verify_key(&a.reference, &ossl.public, &[]), "key 'key'");

    let r = run(
        &["sign", &a.reference, "--key", private.to_str().unwrap()],
        &[("FLEETLET_PASSWORD", "pw")],
    );
    // Either sign refuses (saying why) or what it pushed still verifies.
    if r.0 != 0 {
        assert!(r.2.contains("64"), "{r:?}");
    }
    assert_verified(&verify_key(&a.reference, &ossl.public, &[]), "key 'key'");
    if r.0 == 0 {
        assert_verified(&verify_key(&a.reference, &public, &[]), "key 'key'");
    }
}

#[test]
fn signature_layer_of_2_mib_is_refused_before_download() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let big = vec![b'x'; 2 << 20];
    let big_digest = Digest::of(&big);
    site.push_sig(
        &a,
        &[
            site.openssl_layer(&key, &a, &[]),
            SigLayer::simple(big, Some("AAAA".into())),
        ],
    );
    site.http.delete_blob("app", &big_digest).unwrap();
    assert_error(
        &verify_key(&a.reference, &key.public, &[]),
        &[&format!(
            "signature blob {big_digest} is 2097152 bytes (at most 1048576)"
        )],
    );
}

#[test]
fn required_annotations_must_be_signed_with_the_right_values() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    site.push_sig(
        &a,
        &[site.openssl_layer(&key, &a, &[("env", "prod"), ("team", "edge")])],
    );
    let k = &key.public;
    assert_verified(&verify_key(&a.reference, k, &["env=prod"]), "key 'key'");
    assert_verified(
        &verify_key(&a.reference, k, &["env=prod", "team=edge"]),
        "key 'key'",
    );
    assert_rejected(
        &verify_key(&a.reference, k, &["env=dev"]),
        &["lacks the required annotation env=dev"],
    );
    assert_rejected(
        &verify_key(&a.reference, k, &["env=prod", "owner=ops"]),
        &["lacks the required annotation owner=ops"],
    );

    // A signature without annotations does not satisfy a requirement either.
    let b = site.artifact("app", "v2");
    site.push_sig(&b, &[site.openssl_layer(&key, &b, &[])]);
    assert_rejected(
        &verify_key(&b.reference, k, &["env=prod"]),
        &["lacks the required annotation env=prod"],
    );
}

#[test]
fn signature_base64_wrapped_at_64_columns_verifies() {
    // `openssl base64` (without -A) wraps at 64 columns; Go's decoder, and so cosign, skip
    // the line breaks.
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let payload = cosign_payload(&site.docker_ref(&a), &a.digest, &[]);
    let scratch = site.dir.path().join("sig.der");
    std::fs::write(&scratch, key.sign(&payload).unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["base64", "-in"])
        .arg(&scratch)
        .output()
        .unwrap();
    let wrapped = String::from_utf8(out.stdout).unwrap();
    assert!(wrapped.trim_end().contains('\n'), "{wrapped:?}");
    site.push_sig(&a, &[SigLayer::simple(payload, Some(wrapped))]);
    assert_verified(&verify_key(&a.reference, &key.public, &[]), "key 'key'");
}

#[test]
fn signature_tag_holding_an_index_is_refused() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::testkit::signing::OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": a.digest.to_string(),
                       "size": a.manifest.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap();
    site.http
        .put_manifest(
            "app",
            &sig_tag(&a.digest),
            &index,
            crate::testkit::signing::OCI_INDEX,
        )
        .unwrap();
    assert_error(
        &verify_key(&a.reference, &key.public, &[]),
        &["a signature must be a manifest, not an index"],
    );
}

#[test]
fn trusted_key_that_is_not_a_public_key_is_a_clear_error() {
    let site = Site::new();
    let key = site.key("p256", Alg::P256);
    let a = site.artifact("app", "v1");
    site.push_sig(&a, &[site.openssl_layer(&key, &a, &[])]);
    // The private key given where the public one belongs.
    let (code, out, err) = verify_key(&a.reference, &key.private, &[]);
    assert_eq!(
        code, 2,
        "a key that cannot be used is a usage error: {out}{err}"
    );
    assert!(!out.contains("verified"), "{out}");
    assert!(
        err.contains("trust.keys.key") && err.contains("not a PEM public key"),
        "{err}"
    );
}

// ── Policies from an agent config ────────────────────────────────────────────────────────

#[test]
fn policy_rules_select_requirement_and_signers_per_repository() {
    let site = Site::new();
    let keys = site.dir.path().join("rules/keys");
    std::fs::create_dir_all(&keys).unwrap();
    let ours = OpensslKey::generate(&keys, "site", Alg::P256).unwrap();
    let theirs = OpensslKey::generate(&keys, "other", Alg::Ed25519).unwrap();
    let host = site.reg.host();
    // Key paths relative to the config file, as an operator writes them.
    let config = site.policy(
        "rules",
        &format!(
            "  keys: {{site: keys/site.pub, other: keys/other.pub}}\n  artifacts:\n    require: signed\n    rules:\n      - {{match: \"{host}/public/**\", require: none}}\n      - {{match: \"{host}/partner\", signers: [other]}}\n  commits: {{require: none}}\n"
        ),
    );

    // Unsigned, under `require: none`.
    let public = site.artifact("public/tools", "v1");
    let r = verify_policy(&public.reference, &config);
    assert_eq!(r.0, 0, "{r:?}");
    assert!(r.1.contains("requires no signature"), "{r:?}");

    // Unsigned elsewhere: the default holds.
    let app = site.artifact("app", "v1");
    assert_rejected(&verify_policy(&app.reference, &config), &["unsigned"]);
    site.push_sig(&app, &[site.openssl_layer(&ours, &app, &[])]);
    assert_verified(&verify_policy(&app.reference, &config), "key 'site'");

    // Signed by `site`, but the rule allows only `other`.
    let partner = site.artifact("partner", "v1");
    site.push_sig(&partner, &[site.openssl_layer(&ours, &partner, &[])]);
    assert_rejected(
        &verify_policy(&partner.reference, &config),
        &[
            "no valid signature by other",
            "not signed by a key allowed here (other)",
        ],
    );
    // `other`'s signature passes.
    let partner2 = site.artifact("partner", "v2");
    site.push_sig(&partner2, &[site.openssl_layer(&theirs, &partner2, &[])]);
    assert_verified(&verify_policy(&partner2.reference, &config), "key 'other'");
}

#[test]
fn policy_rule_annotations_apply_to_their_repository() {
    let site = Site::new();
    let key = site.key("site", Alg::P256);
    let host = site.reg.host();
    let config = site.policy(
        "ann",
        &format!(
            "  keys: {{site: {}}}\n  artifacts:\n    annotations: {{env: prod}}\n    rules:\n      - {{match: \"{host}/staging\", annotations: {{env: staging}}}}\n  commits: {{require: none}}\n",
            key_str(&key)
        ),
    );
    let prod = site.artifact("app", "v1");
    site.push_sig(
        &prod,
        &[site.openssl_layer(&key, &prod, &[("env", "prod")])],
    );
    assert_verified(&verify_policy(&prod.reference, &config), "key 'site'");
    let staging = site.artifact("staging", "v1");
    site.push_sig(
        &staging,
        &[site.openssl_layer(&key, &staging, &[("env", "prod")])],
    );
    assert_rejected(
        &verify_policy(&staging.reference, &config),
        &["lacks the required annotation env=staging"],
    );
}

#[test]
fn policy_naming_an_unknown_signer_is_a_config_error() {
    let site = Site::new();
    let key = site.key("site", Alg::P256);
    let a = site.artifact("app", "v1");
    site.push_sig(&a, &[site.openssl_layer(&key, &a, &[])]);
    let host = site.reg.host();
    for (name, artifacts, field) in [
        (
            "rule",
            format!("    rules:\n      - {{match: \"{host}/app\", signers: [ghost]}}\n"),
            "trust.artifacts.rules[0].signers",
        ),
        (
            "top",
            "    signers: [site, ghost]\n".to_string(),
            "trust.artifacts.signers",
        ),
    ] {
        let config = site.policy(
            name,
            &format!(
                "  keys: {{site: {}}}\n  artifacts:\n{artifacts}  commits: {{require: none}}\n",
                key_str(&key)
            ),
        );
        let (code, out, err) = verify_policy(&a.reference, &config);
        assert_eq!(
            code, 2,
            "{name}: a config error is a usage error: {out}{err}"
        );
        assert!(!out.contains("verified"), "{name}: {out}");
        assert!(
            err.contains(field) && err.contains("no key or keyless identity is named \"ghost\""),
            "{name}: {err}"
        );
    }
}

// ── fleetlet sign, checked by openssl ────────────────────────────────────────────────────

#[test]
fn fleetlet_sign_writes_cosign_payloads_that_openssl_verifies() {
    let site = Site::new();
    let (private, public) = site.keygen("fk", "correct horse");
    let a = site.artifact("team/app", "v1");
    let r = run(
        &["sign", &a.reference, "--key", private.to_str().unwrap()],
        &[("FLEETLET_PASSWORD", "correct horse")],
    );
    assert_eq!(r.0, 0, "{r:?}");

    let m = site.sig_manifest(&a);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m:#}");
    let (payload, sig) = site.sig_layer(&a, 0);
    let expected = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/team/app"}},"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        site.reg.host(),
        a.digest
    );
    assert_eq!(String::from_utf8_lossy(&payload), expected);
    assert!(
        openssl_verify(&public, &payload, &sig).unwrap(),
        "openssl rejects fleetlet's signature"
    );
    // The check can fail: another key, or another payload.
    let other = site.key("other", Alg::P256);
    assert!(!openssl_verify(&other.public, &payload, &sig).unwrap());
    assert!(!openssl_verify(&public, &payload[1..], &sig).unwrap());

    // The config lists the payload as cosign's does.
    let config = site
        .http
        .get_blob("team/app", m["config"]["digest"].as_str().unwrap())
        .unwrap();
    let config: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([Digest::of(&payload).to_string()])
    );

    // And fleetlet verifies what it signed with the public half.
    assert_verified(&verify_key(&a.reference, &public, &[]), "key 'key'");
}

#[test]
fn fleetlet_sign_annotations_are_in_the_payload_and_appended_next_to_other_signatures() {
    let site = Site::new();
    let (private, public) = site.keygen("fk", "pw");
    let ossl = site.key("ossl", Alg::P256);
    let a = site.artifact("app", "v1");
    // A signature by another producer first.
    let first = site.openssl_layer(&ossl, &a, &[]);
    site.push_sig(&a, std::slice::from_ref(&first));

    let r = run(
        &[
            "sign",
            &a.reference,
            "--key",
            private.to_str().unwrap(),
            "-a",
            "env=prod",
            "-a",
            "build=42",
        ],
        &[("COSIGN_PASSWORD", "pw")],
    );
    assert_eq!(r.0, 0, "{r:?}");
    let m = site.sig_manifest(&a);
    assert_eq!(m["layers"].as_array().unwrap().len(), 2, "{m:#}");
    // The openssl signature is kept as it was.
    let (p0, s0) = site.sig_layer(&a, 0);
    assert_eq!(p0, first.blob);
    assert!(openssl_verify(&ossl.public, &p0, &s0).unwrap());
    // fleetlet's, with its annotations in cosign's order (sorted keys).
    let (p1, s1) = site.sig_layer(&a, 1);
    assert_eq!(
        p1,
        cosign_payload(
            &site.docker_ref(&a),
            &a.digest,
            &[("build", "42"), ("env", "prod")]
        )
    );
    assert!(openssl_verify(&public, &p1, &s1).unwrap());

    assert_verified(&verify_key(&a.reference, &ossl.public, &[]), "key 'key'");
    assert_verified(
        &verify_key(&a.reference, &public, &["env=prod"]),
        "key 'key'",
    );
    // The openssl signature has no annotations: with the requirement only fleetlet's counts.
    assert_rejected(
        &verify_key(&a.reference, &ossl.public, &["env=prod"]),
        &["lacks the required annotation env=prod"],
    );
}

#[test]
fn fleetlet_keygen_writes_cosign_key_files() {
    let site = Site::new();
    let (private, public) = site.keygen("fk", "pw");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The private key has the shape of one cosign generated (the sigstore crate's test key).
    let ours = encrypted_key_doc(&std::fs::read_to_string(&private).unwrap());
    let cosigns = encrypted_key_doc(&std::fs::read_to_string(cosign_test_key()).unwrap());
    for doc in [&ours, &cosigns] {
        assert_eq!(doc["kdf"]["name"], "scrypt", "{doc:#}");
        assert_eq!(doc["cipher"]["name"], "nacl/secretbox", "{doc:#}");
        assert!(
            doc["kdf"]["params"]["N"].as_u64().unwrap() >= 32768,
            "{doc:#}"
        );
        assert!(doc["ciphertext"].is_string(), "{doc:#}");
    }
    // The public key is a plain PKIX P-256 key openssl reads.
    let text = String::from_utf8(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-noout", "-text", "-in"])
            .arg(&public)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );

    // No passphrase, no key; an existing key is not overwritten.
    let r = run(
        &[
            "keygen",
            "--out",
            site.dir.path().join("nopw").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.0, 1, "{r:?}");
    assert!(r.2.contains("no passphrase"), "{r:?}");
    let r = run(
        &[
            "keygen",
            "--out",
            site.dir.path().join("fk").to_str().unwrap(),
        ],
        &[("FLEETLET_PASSWORD", "pw")],
    );
    assert_eq!(r.0, 1, "{r:?}");
    assert!(r.2.contains("not overwriting"), "{r:?}");
}

/// The JSON inside an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM.
fn encrypted_key_doc(pem: &str) -> Value {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{pem}"
    );
    serde_json::from_slice(&B64.decode(body).unwrap()).unwrap()
}

/// `cosign generate-key-pair` output with an empty passphrase, shipped in the sigstore crate.
fn cosign_test_key() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let src = cargo_home.join("registry/src");
    for index in std::fs::read_dir(&src).unwrap().flatten() {
        let p = index
            .path()
            .join("sigstore-0.15.0/tests/data/keys/cosign_generated_encrypted_empty_private.key");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "sigstore-0.15.0's cosign test key is not under {}",
        src.display()
    );
}

#[test]
fn a_cosign_generated_key_signs_with_an_empty_passphrase() {
    let site = Site::new();
    let key = site.dir.path().join("cosign.key");
    std::fs::copy(cosign_test_key(), &key).unwrap();
    let a = site.artifact("app", "v1");

    let r = run(
        &["sign", &a.reference, "--key", key.to_str().unwrap()],
        &[("COSIGN_PASSWORD", "x")],
    );
    assert_eq!(r.0, 1, "{r:?}");
    assert!(r.2.contains("cannot decrypt"), "{r:?}");

    let r = run(
        &["sign", &a.reference, "--key", key.to_str().unwrap()],
        &[("COSIGN_PASSWORD", "")],
    );
    assert_eq!(r.0, 0, "{r:?}");
    let (payload, sig) = site.sig_layer(&a, 0);
    assert_eq!(
        payload,
        cosign_payload(&site.docker_ref(&a), &a.digest, &[])
    );

    // The key's public half (the file has none beside it): decrypted by the sigstore crate.
    let pair =
        fleetlet_verify::cosign::SigningKey::from_encrypted_pem(&std::fs::read(&key).unwrap(), b"")
            .unwrap();
    let public = site.dir.path().join("cosign.pub");
    std::fs::write(&public, pair.public_pem().unwrap()).unwrap();
    assert!(openssl_verify(&public, &payload, &sig).unwrap());
    assert_verified(&verify_key(&a.reference, &public, &[]), "key 'key'");
}

// ── OCI layouts ──────────────────────────────────────────────────────────────────────────

#[test]
fn oci_layout_artifact_is_signed_and_verified_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    make_umoci_image(&layout, "v1", &[&[("etc/motd", b"signed layout\n")]]).unwrap();
    let reference = format!("oci:{}:v1", layout.display());
    let digest = Digest::of(&skopeo_inspect_raw_layout(&layout, "v1"));

    let keys = tempfile::tempdir().unwrap();
    let prefix = keys.path().join("fk");
    let r = run(
        &["keygen", "--out", prefix.to_str().unwrap()],
        &[("FLEETLET_PASSWORD", "pw")],
    );
    assert_eq!(r.0, 0, "{r:?}");
    let other = OpensslKey::generate(keys.path(), "other", Alg::P256).unwrap();

    assert_rejected(
        &verify_key(&reference, &prefix.with_extension("pub"), &[]),
        &["unsigned"],
    );
    // Policies name layouts `oci-layout/PATH`.
    let policy_dir = keys.path().join("policy");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let config = write_config_with_trust(
        &policy_dir,
        "store-1",
        "http://127.0.0.1:9/fleet.git",
        "1h",
        "",
        &format!(
            "trust:\n  keys: {{site: {}}}\n  artifacts:\n    rules: [{{match: \"oci-layout/**\", require: none}}]\n  commits: {{require: none}}\n",
            prefix.with_extension("pub").display()
        ),
    );
    let r = verify_policy(&reference, &config);
    assert_eq!(r.0, 0, "{r:?}");
    assert!(r.1.contains("requires no signature"), "{r:?}");
    let r = run(
        &[
            "sign",
            &reference,
            "--key",
            prefix.with_extension("key").to_str().unwrap(),
        ],
        &[("FLEETLET_PASSWORD", "pw")],
    );
    assert_eq!(r.0, 0, "{r:?}");

    // skopeo reads the signature manifest from the layout; openssl checks it.
    let sig = skopeo_inspect_raw_layout(&layout, &sig_tag(&digest));
    let m: Value = serde_json::from_slice(&sig).unwrap();
    let layer = &m["layers"][0];
    assert_eq!(layer["mediaType"], SIMPLE_SIGNING, "{m:#}");
    let payload_hex = layer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let payload = std::fs::read(layout.join("blobs/sha256").join(payload_hex)).unwrap();
    let signature = B64
        .decode(layer["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap())
        .unwrap();
    assert!(openssl_verify(&prefix.with_extension("pub"), &payload, &signature).unwrap());
    let p: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        p["critical"]["image"]["docker-manifest-digest"],
        digest.to_string()
    );

    assert_verified(
        &verify_key(&reference, &prefix.with_extension("pub"), &[]),
        "key 'key'",
    );
    assert_rejected(
        &verify_key(&reference, &other.public, &[]),
        &["not signed by a key allowed here"],
    );
    // The image itself is untouched.
    assert_eq!(
        Digest::of(&skopeo_inspect_raw_layout(&layout, "v1")),
        digest
    );
}

fn skopeo_inspect_raw_layout(layout: &Path, tag: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ── Public-key sigstore bundles as referrers (tag-schema fallback) ───────────────────────

/// A site with a test log, its trusted root, an openssl key `site`, and a policy trusting both.
struct BundleSite {
    site: Site,
    log: TestLog,
    key: OpensslKey,
    config: PathBuf,
}

impl BundleSite {
    fn new() -> BundleSite {
        let site = Site::new();
        let log = TestLog::new(site.dir.path()).unwrap();
        let key = site.key("site", Alg::P256);
        let root = site.dir.path().join("trusted_root.json");
        std::fs::write(&root, log.trusted_root_json().unwrap()).unwrap();
        let config = site.policy(
            "bundles",
            &format!(
                "  keys: {{site: {}}}\n  keyless: {{trustedRoot: {}, identities: {{}}}}\n  artifacts: {{require: signed}}\n  commits: {{require: none}}\n",
                key_str(&key),
                root.display()
            ),
        );
        BundleSite {
            site,
            log,
            key,
            config,
        }
    }

    /// A bundle for `signed` (its manifest bytes), attached to `a`.
    fn attach(&self, a: &Artifact, signed: &[u8], edit: impl FnOnce(&mut Value)) -> Digest {
        let mut bundle = self
            .log
            .key_bundle(&self.key, "site", signed, 7, 5)
            .unwrap();
        edit(&mut bundle);
        push_bundle_referrer(
            &self.site.http,
            &a.repo,
            &a.digest,
            &a.manifest,
            &serde_json::to_vec(&bundle).unwrap(),
        )
        .unwrap()
    }
}

#[test]
fn key_bundle_referrer_verifies_with_the_trusted_root() {
    let b = BundleSite::new();
    let a = b.site.artifact("app", "v1");
    let referrer = b.attach(&a, &a.manifest, |_| {});
    // The registry has no referrers API: the index is at the tag schema's tag.
    let index: Value = serde_json::from_slice(
        &b.site
            .http
            .get_manifest("app", &format!("sha256-{}", a.digest.hex()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(index["manifests"][0]["digest"], referrer.to_string());
    assert_eq!(index["manifests"][0]["artifactType"], BUNDLE_V03);

    let (code, out, err) = run(
        &[
            "verify",
            &a.reference,
            "--policy",
            b.config.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true, "{v:#}");
    assert_eq!(v["signers"][0]["identity"], "site", "{v:#}");
    assert_eq!(v["signers"][0]["logIndex"], 1005, "{v:#}");

    // Without the trusted root the same bundle is not accepted.
    let (code, out, _) = verify_key(&a.reference, &b.key.public, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no trusted root is configured"), "{out}");
}

#[test]
fn key_bundle_with_a_tampered_inclusion_proof_is_rejected() {
    let b = BundleSite::new();
    let a = b.site.artifact("app", "v1");
    b.attach(&a, &a.manifest, |v| {
        let h = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][1];
        let mut raw = B64.decode(h.as_str().unwrap()).unwrap();
        raw[7] ^= 0x01;
        *h = B64.encode(raw).into();
    });
    assert_rejected(
        &verify_policy(&a.reference, &b.config),
        &["bundle sha256:", "inclusion proof: computed root"],
    );
}

#[test]
fn key_bundle_for_another_digest_is_rejected() {
    let b = BundleSite::new();
    let a = b.site.artifact("app", "v1");
    let other = b.site.artifact("app", "v2");
    // A valid bundle of v2, attached to v1.
    b.attach(&a, &other.manifest, |_| {});
    assert_rejected(
        &verify_policy(&a.reference, &b.config),
        &["bundle sha256:", "artifact digest"],
    );
    // The control: attached to v2 it verifies.
    b.attach(&other, &other.manifest, |_| {});
    assert_verified(&verify_policy(&other.reference, &b.config), "key 'site'");
}

#[test]
fn key_bundle_signed_by_an_untrusted_key_is_rejected() {
    let b = BundleSite::new();
    let a = b.site.artifact("app", "v1");
    let stranger = b.site.key("stranger", Alg::P256);
    let bundle = b
        .log
        .key_bundle(&stranger, "site", &a.manifest, 3, 0)
        .unwrap();
    push_bundle_referrer(
        &b.site.http,
        "app",
        &a.digest,
        &a.manifest,
        &serde_json::to_vec(&bundle).unwrap(),
    )
    .unwrap();
    assert_rejected(
        &verify_policy(&a.reference, &b.config),
        &["no trusted key verifies it"],
    );

    // A trusted key the policy does not allow for this artifact is no better.
    let v2 = b.site.artifact("app", "v2");
    b.attach(&v2, &v2.manifest, |_| {});
    assert_verified(&verify_policy(&v2.reference, &b.config), "key 'site'");
    let root = b.site.dir.path().join("trusted_root.json");
    let config = b.site.policy(
        "bundles-stranger-only",
        &format!(
            "  keys: {{site: {}, stranger: {}}}\n  keyless: {{trustedRoot: {}, identities: {{}}}}\n  artifacts: {{require: signed, signers: [stranger]}}\n  commits: {{require: none}}\n",
            key_str(&b.key),
            key_str(&stranger),
            root.display()
        ),
    );
    assert_rejected(
        &verify_policy(&v2.reference, &config),
        &[
            "no valid signature by stranger",
            "no trusted key verifies it",
        ],
    );
}

#[test]
fn required_annotations_are_not_bypassed_by_a_key_bundle() {
    // The policy demands `env=prod` in what the key signed. A public-key bundle by the same
    // key carries no annotations at all, so it cannot show that claim.
    let b = BundleSite::new();
    let root = b.site.dir.path().join("trusted_root.json");
    let config = b.site.policy(
        "bundles-annotated",
        &format!(
            "  keys: {{site: {}}}\n  keyless: {{trustedRoot: {}, identities: {{}}}}\n  artifacts: {{require: signed, annotations: {{env: prod}}}}\n  commits: {{require: none}}\n",
            key_str(&b.key),
            root.display()
        ),
    );
    let a = b.site.artifact("app", "v1");
    b.attach(&a, &a.manifest, |_| {});
    // Without the requirement, the bundle verifies (the control).
    assert_verified(&verify_policy(&a.reference, &b.config), "key 'site'");
    let r = verify_policy(&a.reference, &config);
    assert_eq!(
        r.0, 1,
        "a bundle without annotations passed a policy requiring env=prod: {r:?}"
    );
    assert!(r.1.contains("env=prod"), "{r:?}");
}

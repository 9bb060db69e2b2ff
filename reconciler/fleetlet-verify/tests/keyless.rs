//! Sigstore bundle verification against real public-good material (sigstore-rs's test data,
//! Apache-2.0) and against a small Rekor-like log built here with test keys.
//!
//! Every tampered bundle is derived in code from a fixture that verifies, so each test
//! changes exactly one thing and names the check that must catch it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use fleetlet_verify::keyless::{
    KeylessError, KeylessIdentity, MerkleError, TrustedRoot, verify_bundle, verify_key_bundle,
};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `cosign sign` of ghcr.io/kubewarden/kubewarden-controller:v1.34.0 (a DSSE bundle whose
/// in-toto subject is the image manifest digest below), from sigstore-rs tests/data.
const BUNDLE: &[u8] = include_bytes!("fixtures/sigstore/bundle_v03.json");
/// npm provenance for sigstore@5.0.0; its only subject digest is a sha512.
const NPM_BUNDLE: &[u8] = include_bytes!("fixtures/sigstore/npm_slsa_bundle_v03.json");
/// A pinned copy of the public-good instance's trusted_root.json.
const ROOT: &[u8] = include_bytes!("fixtures/sigstore/sigstore_trusted_root.json");

const DIGEST: &str = "c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const SUBJECT: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const LOG_INDEX: u64 = 1_261_105_807;
const INTEGRATED_TIME: i64 = 1_775_719_409;

fn digest() -> [u8; 32] {
    hex::decode(DIGEST)
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn root() -> TrustedRoot {
    TrustedRoot::from_json(ROOT).expect("trusted root parses")
}

fn identity() -> Vec<KeylessIdentity> {
    vec![KeylessIdentity::new(ISSUER, Some(SUBJECT), None).expect("identity")]
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("fixture is JSON")
}

/// The real bundle with `f` applied.
fn edited(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = json_of(BUNDLE);
    f(&mut v);
    serde_json::to_vec(&v).expect("serialise")
}

/// The real trusted root with `f` applied.
fn edited_root(f: impl FnOnce(&mut Value)) -> TrustedRoot {
    let mut v = json_of(ROOT);
    f(&mut v);
    TrustedRoot::from_json(&serde_json::to_vec(&v).expect("serialise")).expect("root parses")
}

fn entry(v: &mut Value) -> &mut Value {
    &mut v["verificationMaterial"]["tlogEntries"][0]
}

/// Flips one bit in the middle of a base64 field's decoded bytes.
fn flip_b64(field: &mut Value) {
    let mut raw = B64.decode(field.as_str().expect("string")).expect("base64");
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    *field = B64.encode(raw).into();
}

fn verify(bundle: &[u8]) -> Result<fleetlet_verify::keyless::BundleSigner, KeylessError> {
    verify_bundle(bundle, &digest(), &root(), &identity())
}

#[track_caller]
fn expect_err(r: Result<fleetlet_verify::keyless::BundleSigner, KeylessError>) -> KeylessError {
    match r {
        Ok(s) => panic!("verification passed unexpectedly: {s:?}"),
        Err(e) => e,
    }
}

// ── The real bundle ──────────────────────────────────────────────────────────────────────

#[test]
fn real_bundle_verifies() {
    let signer = verify(BUNDLE).expect("real bundle verifies");
    assert_eq!(signer.subject.as_deref(), Some(SUBJECT));
    assert_eq!(signer.issuer.as_deref(), Some(ISSUER));
    assert_eq!(signer.key, None);
    assert_eq!(signer.log_index, LOG_INDEX);
    assert_eq!(signer.integrated_time, INTEGRATED_TIME);
}

#[test]
fn regexp_identities_match_as_written() {
    for re in [
        r"^https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/tags/v.*$",
        // Unanchored, as cosign: a search, not a full match.
        "kubewarden-controller",
    ] {
        let ids = [KeylessIdentity::new(ISSUER, None, Some(re)).expect("identity")];
        verify_bundle(BUNDLE, &digest(), &root(), &ids).unwrap_or_else(|e| panic!("{re}: {e}"));
    }
}

#[test]
fn any_allowed_identity_suffices() {
    let ids = [
        KeylessIdentity::new(ISSUER, Some("someone@example.com"), None).expect("identity"),
        KeylessIdentity::new(ISSUER, Some(SUBJECT), None).expect("identity"),
    ];
    verify_bundle(BUNDLE, &digest(), &root(), &ids).expect("second identity matches");
}

#[test]
fn identity_constructor_rules() {
    assert!(KeylessIdentity::new(ISSUER, None, None).is_err());
    assert!(KeylessIdentity::new(ISSUER, Some("a"), Some("b")).is_err());
    assert!(KeylessIdentity::new("", Some("a"), None).is_err());
    assert!(matches!(
        KeylessIdentity::new(ISSUER, None, Some("(")),
        Err(KeylessError::InvalidIdentity(_))
    ));
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &root(), &[]));
    assert!(matches!(err, KeylessError::InvalidIdentity(_)), "{err}");
}

#[test]
fn wrong_digest_is_rejected() {
    let mut other = digest();
    other[0] ^= 0xff;
    let err = expect_err(verify_bundle(BUNDLE, &other, &root(), &identity()));
    assert!(matches!(err, KeylessError::DigestMismatch(_)), "{err}");
    assert!(err.to_string().contains(&hex::encode(other)), "{err}");
}

#[test]
fn wrong_subject_is_rejected() {
    let ids = [KeylessIdentity::new(ISSUER, Some("someone@example.com"), None).expect("id")];
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &root(), &ids));
    assert!(matches!(err, KeylessError::SubjectMismatch { .. }), "{err}");
    assert!(err.to_string().contains("someone@example.com"), "{err}");
}

#[test]
fn wrong_issuer_is_rejected() {
    let ids =
        [KeylessIdentity::new("https://accounts.google.com", Some(SUBJECT), None).expect("id")];
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &root(), &ids));
    assert!(matches!(err, KeylessError::IssuerMismatch { .. }), "{err}");
}

#[test]
fn non_matching_regexp_is_rejected() {
    for re in [
        "^kubewarden-controller",
        r"^https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/heads/main$",
    ] {
        let ids = [KeylessIdentity::new(ISSUER, None, Some(re)).expect("id")];
        let err = expect_err(verify_bundle(BUNDLE, &digest(), &root(), &ids));
        assert!(
            matches!(err, KeylessError::SubjectMismatch { .. }),
            "{re}: {err}"
        );
    }
}

#[test]
fn altered_signature_is_rejected() {
    let b = edited(|v| flip_b64(&mut v["dsseEnvelope"]["signatures"][0]["sig"]));
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::SignatureInvalid(_)), "{err}");
}

#[test]
fn altered_payload_is_rejected() {
    // Another statement about the same digest: the signature no longer covers it.
    let b = edited(|v| {
        let payload = B64
            .decode(v["dsseEnvelope"]["payload"].as_str().expect("payload"))
            .expect("base64");
        let mut stmt: Value = serde_json::from_slice(&payload).expect("statement");
        stmt["predicateType"] = "https://example.com/other".into();
        v["dsseEnvelope"]["payload"] = B64.encode(serde_json::to_vec(&stmt).expect("json")).into();
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::SignatureInvalid(_)), "{err}");
}

#[test]
fn altered_canonicalized_body_is_rejected() {
    // A body that describes another payload.
    let b = edited(|v| {
        let e = entry(v);
        let mut body: Value = serde_json::from_slice(
            &B64.decode(e["canonicalizedBody"].as_str().expect("body"))
                .expect("b64"),
        )
        .expect("body json");
        body["spec"]["payloadHash"]["value"] = hex::encode([7u8; 32]).into();
        e["canonicalizedBody"] = B64.encode(serde_json::to_vec(&body).expect("json")).into();
    });
    let err = expect_err(verify(&b));
    assert!(
        matches!(
            err,
            KeylessError::TlogBodyMismatch {
                field: "payloadHash",
                ..
            }
        ),
        "{err}"
    );

    // The same record re-encoded: consistent with the bundle, but not what Rekor signed.
    let b = edited(|v| {
        let e = entry(v);
        let body = B64
            .decode(e["canonicalizedBody"].as_str().expect("body"))
            .expect("b64");
        let mut spaced = b"{ ".to_vec();
        spaced.extend_from_slice(&body[1..]);
        e["canonicalizedBody"] = B64.encode(spaced).into();
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::SetInvalid(_)), "{err}");
}

#[test]
fn altered_set_is_rejected() {
    let b = edited(|v| flip_b64(&mut entry(v)["inclusionPromise"]["signedEntryTimestamp"]));
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::SetInvalid(_)), "{err}");
}

#[test]
fn missing_set_is_rejected() {
    let b = edited(|v| {
        entry(v)
            .as_object_mut()
            .expect("object")
            .remove("inclusionPromise");
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::SetMissing), "{err}");
}

#[test]
fn altered_inclusion_proof_hash_is_rejected() {
    let b = edited(|v| flip_b64(&mut entry(v)["inclusionProof"]["hashes"][2]));
    let err = expect_err(verify(&b));
    assert!(
        matches!(
            err,
            KeylessError::InclusionProof(MerkleError::RootMismatch { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("inclusion proof: computed root"),
        "{err}"
    );
}

#[test]
fn dropped_inclusion_proof_hash_is_rejected() {
    let b = edited(|v| {
        entry(v)["inclusionProof"]["hashes"]
            .as_array_mut()
            .expect("array")
            .pop();
    });
    let err = expect_err(verify(&b));
    assert!(
        matches!(
            err,
            KeylessError::InclusionProof(MerkleError::WrongProofLength { .. })
        ),
        "{err}"
    );
}

#[test]
fn wrong_root_hash_is_rejected() {
    let b = edited(|v| flip_b64(&mut entry(v)["inclusionProof"]["rootHash"]));
    let err = expect_err(verify(&b));
    assert!(
        matches!(
            err,
            KeylessError::InclusionProof(MerkleError::RootMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn tree_size_mismatch_is_rejected() {
    // RFC 6962 paths for index 1139201545 have the same shape for tree sizes
    // 1139201553..=1139201568, so the proof alone still "verifies" with size + 1: only the
    // signed checkpoint pins the size.
    let b = edited(|v| {
        let p = &mut entry(v)["inclusionProof"];
        let size: u64 = p["treeSize"]
            .as_str()
            .expect("string")
            .parse()
            .expect("int");
        p["treeSize"] = (size + 1).to_string().into();
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::CheckpointMismatch(_)), "{err}");
    assert!(err.to_string().contains("tree size"), "{err}");
}

#[test]
fn altered_checkpoint_signature_is_rejected() {
    let b = edited(|v| {
        let cp = &mut entry(v)["inclusionProof"]["checkpoint"]["envelope"];
        let text = cp.as_str().expect("string").to_owned();
        let (head, sig_line) = text.trim_end().rsplit_once(' ').expect("signature line");
        let mut raw = B64.decode(sig_line).expect("b64");
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        *cp = format!("{head} {}\n", B64.encode(raw)).into();
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::CheckpointInvalid(_)), "{err}");
}

#[test]
fn altered_checkpoint_text_is_rejected() {
    // A checkpoint claiming another root: its signature no longer verifies.
    let b = edited(|v| {
        let cp = &mut entry(v)["inclusionProof"]["checkpoint"]["envelope"];
        let text = cp
            .as_str()
            .expect("string")
            .replace("1139201557\n", "1139201558\n");
        *cp = text.into();
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::CheckpointInvalid(_)), "{err}");
}

#[test]
fn missing_tlog_entry_is_rejected() {
    let b = edited(|v| v["verificationMaterial"]["tlogEntries"] = json!([]));
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::NoTlogEntry), "{err}");
}

#[test]
fn v03_bundle_needs_inclusion_proof_and_checkpoint() {
    let b = edited(|v| {
        entry(v)
            .as_object_mut()
            .expect("object")
            .remove("inclusionProof");
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::InclusionProofMissing), "{err}");

    let b = edited(|v| {
        entry(v)["inclusionProof"]
            .as_object_mut()
            .expect("object")
            .remove("checkpoint");
    });
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::InclusionProofMissing), "{err}");
}

#[test]
fn v01_bundle_may_rely_on_the_set_alone() {
    let b = edited(|v| {
        v["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
        entry(v)
            .as_object_mut()
            .expect("object")
            .remove("inclusionProof");
    });
    verify(&b).expect("v0.1 bundle with a SET verifies");
}

#[test]
fn log_id_not_in_trusted_root_is_rejected() {
    // The bundle names another log.
    let b = edited(|v| flip_b64(&mut entry(v)["logId"]["keyId"]));
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::UnknownLog(_)), "{err}");

    // The trusted root does not list the bundle's log.
    let r = edited_root(|v| {
        v["tlogs"]
            .as_array_mut()
            .expect("array")
            .retain(|l| l["baseUrl"] != "https://rekor.sigstore.dev");
    });
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &r, &identity()));
    assert!(matches!(err, KeylessError::UnknownLog(_)), "{err}");
}

#[test]
fn rekor_key_outside_its_validity_is_rejected() {
    let r = edited_root(|v| {
        for l in v["tlogs"].as_array_mut().expect("array") {
            l["publicKey"]["validFor"]["start"] = "2026-05-01T00:00:00Z".into();
        }
    });
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &r, &identity()));
    assert!(matches!(err, KeylessError::LogKeyNotValid(_)), "{err}");
}

#[test]
fn certificate_not_chaining_is_rejected() {
    // Only the 2021 Fulcio root, stretched to cover the signing time: the leaf's issuer
    // is not in the trust root.
    let r = edited_root(|v| {
        let cas = v["certificateAuthorities"].as_array_mut().expect("array");
        cas.truncate(1);
        cas[0]["validFor"] = json!({"start": "2021-03-07T03:20:29Z"});
    });
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &r, &identity()));
    assert!(matches!(err, KeylessError::CertificateChain(_)), "{err}");

    // No Fulcio CA at all.
    let r = edited_root(|v| v["certificateAuthorities"] = json!([]));
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &r, &identity()));
    assert!(
        matches!(err, KeylessError::NoCertificateAuthority(_)),
        "{err}"
    );
}

#[test]
fn fulcio_ca_outside_its_validity_is_rejected() {
    let r = edited_root(|v| {
        let cas = v["certificateAuthorities"].as_array_mut().expect("array");
        cas[1]["validFor"]["end"] = "2025-01-01T00:00:00Z".into();
    });
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &r, &identity()));
    assert!(
        matches!(err, KeylessError::NoCertificateAuthority(_)),
        "{err}"
    );
}

#[test]
fn sct_needs_a_trusted_ct_log() {
    let r = edited_root(|v| v["ctlogs"] = json!([]));
    let err = expect_err(verify_bundle(BUNDLE, &digest(), &r, &identity()));
    assert!(matches!(err, KeylessError::Sct(_)), "{err}");
}

#[test]
fn altered_integrated_time_breaks_the_set_first() {
    // An integrated time the log did not sign is reported as such, not as a validity problem.
    let b = edited(|v| entry(v)["integratedTime"] = (INTEGRATED_TIME + 3600).to_string().into());
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::SetInvalid(_)), "{err}");
}

/// A P-256 key standing in for Rekor in tests.
fn test_rekor_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("scalar")
}

fn spki_der(sk: &p256::ecdsa::SigningKey) -> Vec<u8> {
    sk.verifying_key()
        .to_public_key_der()
        .expect("spki")
        .as_bytes()
        .to_vec()
}

fn sign_der(sk: &p256::ecdsa::SigningKey, msg: &[u8]) -> Vec<u8> {
    let sig: p256::ecdsa::Signature = sk.sign(msg);
    sig.to_der().as_bytes().to_vec()
}

/// The real trusted root plus `sk` as an extra Rekor key.
fn root_with_test_rekor(sk: &p256::ecdsa::SigningKey) -> TrustedRoot {
    let spki = spki_der(sk);
    edited_root(|v| {
        v["tlogs"].as_array_mut().expect("array").push(json!({
            "baseUrl": "https://rekor.test",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": B64.encode(&spki),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            },
            "logId": {"keyId": B64.encode(Sha256::digest(&spki))}
        }));
    })
}

/// Re-attests the real entry (unchanged body, so the real inclusion proof still holds) with
/// the test Rekor key at `integrated_time`: new log id, SET and checkpoint signature.
fn resigned_entry(sk: &p256::ecdsa::SigningKey, integrated_time: i64) -> Vec<u8> {
    let log_id: [u8; 32] = Sha256::digest(spki_der(sk)).into();
    edited(|v| {
        let e = entry(v);
        e["logId"]["keyId"] = B64.encode(log_id).into();
        e["integratedTime"] = integrated_time.to_string().into();
        let set_payload = format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            e["canonicalizedBody"].as_str().expect("body"),
            integrated_time,
            hex::encode(log_id),
            e["logIndex"].as_str().expect("index"),
        );
        e["inclusionPromise"]["signedEntryTimestamp"] =
            B64.encode(sign_der(sk, set_payload.as_bytes())).into();
        let p = &e["inclusionProof"];
        let text = format!(
            "rekor.test - 1\n{}\n{}\n",
            p["treeSize"].as_str().expect("size"),
            p["rootHash"].as_str().expect("root")
        );
        let mut sig = log_id[..4].to_vec();
        sig.extend(sign_der(sk, text.as_bytes()));
        e["inclusionProof"]["checkpoint"]["envelope"] =
            format!("{text}\n\u{2014} rekor.test {}\n", B64.encode(sig)).into();
    })
}

#[test]
fn resigned_entry_harness_verifies() {
    // Control for the next test: the re-attestation itself is accepted.
    let sk = test_rekor_key();
    let b = resigned_entry(&sk, INTEGRATED_TIME);
    verify_bundle(&b, &digest(), &root_with_test_rekor(&sk), &identity())
        .expect("re-signed entry verifies");
}

#[test]
fn integrated_time_outside_certificate_validity_is_rejected() {
    // A log (trusted, here a test key) that attests a time after the certificate expired.
    let sk = test_rekor_key();
    let b = resigned_entry(&sk, INTEGRATED_TIME + 3600);
    let err = expect_err(verify_bundle(
        &b,
        &digest(),
        &root_with_test_rekor(&sk),
        &identity(),
    ));
    assert!(
        matches!(err, KeylessError::SigningTimeOutsideCertificate { .. }),
        "{err}"
    );
}

#[test]
fn malformed_input_is_rejected() {
    for bad in [&b"{"[..], b"[]", b"null", b"{\"mediaType\": 3}"] {
        let err = expect_err(verify(bad));
        assert!(matches!(err, KeylessError::Malformed(_)), "{err}");
    }
    let b =
        edited(|v| v["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=9".into());
    let err = expect_err(verify(&b));
    assert!(
        matches!(err, KeylessError::UnsupportedMediaType(_)),
        "{err}"
    );
    let b = edited(|v| v["dsseEnvelope"]["payload"] = "not base64!".into());
    let err = expect_err(verify(&b));
    assert!(matches!(err, KeylessError::Malformed(_)), "{err}");
    assert!(matches!(
        TrustedRoot::from_json(b"{\"tlogs\": 1}"),
        Err(KeylessError::TrustedRoot(_))
    ));
}

#[test]
fn npm_bundle_without_sha256_subject_is_rejected() {
    let ids = [KeylessIdentity::new(
        ISSUER,
        Some(
            "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main",
        ),
        None,
    )
    .expect("id")];
    let err = expect_err(verify_bundle(NPM_BUNDLE, &digest(), &root(), &ids));
    assert!(matches!(err, KeylessError::DigestMismatch(_)), "{err}");
}

#[test]
fn keyless_bundle_is_not_a_key_bundle() {
    let keys = vec![("k".to_string(), spki_der(&test_rekor_key()))];
    let err = expect_err(verify_key_bundle(BUNDLE, &digest(), &root(), &keys));
    assert!(matches!(err, KeylessError::WrongMaterial(_)), "{err}");
}

// ── Public-key bundles on a log built here ──────────────────────────────────────────────

/// RFC 6962 MTH, recursively from the definition.
fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    match leaves.len() {
        1 => Sha256::new()
            .chain_update([0u8])
            .chain_update(&leaves[0])
            .finalize()
            .into(),
        n => {
            let k = n.next_power_of_two() / 2;
            Sha256::new()
                .chain_update([1u8])
                .chain_update(mth(&leaves[..k]))
                .chain_update(mth(&leaves[k..]))
                .finalize()
                .into()
        }
    }
}

/// RFC 6962 PATH(m, D[n]).
fn audit_path(m: usize, leaves: &[Vec<u8>]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = n.next_power_of_two() / 2;
    if m < k {
        let mut p = audit_path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = audit_path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

fn signer_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x17; 32]).expect("scalar")
}

fn test_log_root(rekor: &p256::ecdsa::SigningKey) -> TrustedRoot {
    let spki = spki_der(rekor);
    let v = json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.test",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": B64.encode(&spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": "2024-01-01T00:00:00Z"}},
            "logId": {"keyId": B64.encode(Sha256::digest(&spki))}
        }],
        "certificateAuthorities": [],
        "ctlogs": []
    });
    TrustedRoot::from_json(&serde_json::to_vec(&v).expect("json")).expect("root")
}

const ARTIFACT: &[u8] = b"a fleet bundle";
const KEY_TIME: i64 = 1_750_000_000;

struct LogParams {
    leaves: usize,
    index: usize,
    dsse: bool,
    /// Tree size written into the checkpoint (None: the real one).
    checkpoint_size: Option<u64>,
}

/// A public-key bundle for `ARTIFACT`, logged at `index` in a log of `leaves` entries.
fn key_bundle(p: &LogParams) -> Vec<u8> {
    let rekor = test_rekor_key();
    let signer = signer_key();
    let artifact_digest: [u8; 32] = Sha256::digest(ARTIFACT).into();
    let pem = signer
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");

    let (content_key, content, body) = if p.dsse {
        let payload = serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "other", "digest": {"sha256": hex::encode([1u8; 32])}},
                        {"name": "bundle", "digest": {"sha256": hex::encode(artifact_digest)}}],
            "predicateType": "https://example.com/test"
        }))
        .expect("json");
        let ptype = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {ptype} {} ", ptype.len(), payload.len()).into_bytes();
        pae.extend_from_slice(&payload);
        let sig = B64.encode(sign_der(&signer, &pae));
        let env = json!({"payload": B64.encode(&payload), "payloadType": ptype,
                         "signatures": [{"sig": sig}]});
        let body = json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256",
                             "value": hex::encode(Sha256::digest(serde_json::to_vec(&env).expect("json")))},
            "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
            "signatures": [{"signature": sig, "verifier": B64.encode(&pem)}]}});
        ("dsseEnvelope", env, body)
    } else {
        let sig: p256::ecdsa::Signature = signer.sign_prehash(&artifact_digest).expect("sign");
        let sig = B64.encode(sig.to_der().as_bytes());
        let content = json!({"messageDigest": {"algorithm": "SHA2_256",
                                                "digest": B64.encode(artifact_digest)},
                             "signature": sig});
        let body = json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(artifact_digest)}},
            "signature": {"content": sig, "publicKey": {"content": B64.encode(&pem)}}}});
        ("messageSignature", content, body)
    };
    let body = serde_json::to_vec(&body).expect("json");

    let leaves: Vec<Vec<u8>> = (0..p.leaves)
        .map(|i| {
            if i == p.index {
                body.clone()
            } else {
                format!("{{\"other\":{i}}}").into_bytes()
            }
        })
        .collect();
    let root_hash = mth(&leaves);
    let path = audit_path(p.index, &leaves);
    let log_id: [u8; 32] = Sha256::digest(spki_der(&rekor)).into();
    let log_index = 1000 + p.index as u64;

    let set_payload = format!(
        r#"{{"body":"{}","integratedTime":{KEY_TIME},"logID":"{}","logIndex":{log_index}}}"#,
        B64.encode(&body),
        hex::encode(log_id)
    );
    let text = format!(
        "rekor.test - 1\n{}\n{}\n",
        p.checkpoint_size.unwrap_or(p.leaves as u64),
        B64.encode(root_hash)
    );
    let mut cp_sig = log_id[..4].to_vec();
    cp_sig.extend(sign_der(&rekor, text.as_bytes()));

    let mut bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": "site-key"},
            "tlogEntries": [{
                "logIndex": log_index.to_string(),
                "logId": {"keyId": B64.encode(log_id)},
                "kindVersion": {"kind": if p.dsse { "dsse" } else { "hashedrekord" },
                                "version": "0.0.1"},
                "integratedTime": KEY_TIME.to_string(),
                "inclusionPromise": {"signedEntryTimestamp":
                                     B64.encode(sign_der(&rekor, set_payload.as_bytes()))},
                "inclusionProof": {
                    "logIndex": p.index.to_string(),
                    "rootHash": B64.encode(root_hash),
                    "treeSize": p.leaves.to_string(),
                    "hashes": path.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                    "checkpoint": {"envelope":
                                   format!("{text}\n\u{2014} rekor.test {}\n", B64.encode(cp_sig))}
                },
                "canonicalizedBody": B64.encode(&body)
            }]
        }
    });
    bundle[content_key] = content;
    serde_json::to_vec(&bundle).expect("json")
}

fn site_keys() -> Vec<(String, Vec<u8>)> {
    vec![
        ("unrelated".to_string(), spki_der(&test_rekor_key())),
        ("site-key".to_string(), spki_der(&signer_key())),
    ]
}

fn artifact_digest() -> [u8; 32] {
    Sha256::digest(ARTIFACT).into()
}

#[test]
fn key_bundles_verify_at_every_index_of_small_logs() {
    let root = test_log_root(&test_rekor_key());
    for dsse in [false, true] {
        for leaves in [1usize, 2, 3, 7, 8] {
            for index in 0..leaves {
                let b = key_bundle(&LogParams {
                    leaves,
                    index,
                    dsse,
                    checkpoint_size: None,
                });
                let signer = verify_key_bundle(&b, &artifact_digest(), &root, &site_keys())
                    .unwrap_or_else(|e| panic!("dsse={dsse} leaves={leaves} index={index}: {e}"));
                assert_eq!(signer.key.as_deref(), Some("site-key"));
                assert_eq!(signer.log_index, 1000 + index as u64);
                assert_eq!(signer.integrated_time, KEY_TIME);
                assert_eq!(signer.subject, None);
            }
        }
    }
}

#[test]
fn key_bundle_accepts_pem_keys() {
    let pem = signer_key()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let keys = vec![("pem-key".to_string(), pem.into_bytes())];
    let b = key_bundle(&LogParams {
        leaves: 3,
        index: 1,
        dsse: false,
        checkpoint_size: None,
    });
    let signer = verify_key_bundle(
        &b,
        &artifact_digest(),
        &test_log_root(&test_rekor_key()),
        &keys,
    )
    .expect("verifies");
    assert_eq!(signer.key.as_deref(), Some("pem-key"));
}

#[test]
fn key_bundle_rejections() {
    let root = test_log_root(&test_rekor_key());
    let params = |dsse| LogParams {
        leaves: 7,
        index: 5,
        dsse,
        checkpoint_size: None,
    };

    // Not signed by a trusted key.
    let keys = vec![("unrelated".to_string(), spki_der(&test_rekor_key()))];
    let err = expect_err(verify_key_bundle(
        &key_bundle(&params(false)),
        &artifact_digest(),
        &root,
        &keys,
    ));
    assert!(matches!(err, KeylessError::SignatureInvalid(_)), "{err}");

    // Replay onto another artifact.
    for dsse in [false, true] {
        let err = expect_err(verify_key_bundle(
            &key_bundle(&params(dsse)),
            &[9u8; 32],
            &root,
            &site_keys(),
        ));
        assert!(
            matches!(err, KeylessError::DigestMismatch(_)),
            "dsse={dsse}: {err}"
        );
    }

    // A message digest that disagrees with the artifact (signature replay with a stated
    // digest edited to match is caught by the signature instead).
    let mut v = json_of(&key_bundle(&params(false)));
    v["messageSignature"]["signature"] = B64
        .encode(sign_der(&signer_key(), b"something else"))
        .into();
    let err = expect_err(verify_key_bundle(
        &serde_json::to_vec(&v).expect("json"),
        &artifact_digest(),
        &root,
        &site_keys(),
    ));
    assert!(matches!(err, KeylessError::SignatureInvalid(_)), "{err}");

    // Checkpoint for another tree size.
    let b = key_bundle(&LogParams {
        checkpoint_size: Some(8),
        ..params(true)
    });
    let err = expect_err(verify_key_bundle(
        &b,
        &artifact_digest(),
        &root,
        &site_keys(),
    ));
    assert!(matches!(err, KeylessError::CheckpointMismatch(_)), "{err}");

    // The log entry names another key: the body must record the trusted key that verified.
    let mut v = json_of(&key_bundle(&params(false)));
    let other_pem = test_rekor_key()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let e = entry(&mut v);
    let mut body: Value = serde_json::from_slice(
        &B64.decode(e["canonicalizedBody"].as_str().expect("b"))
            .expect("b64"),
    )
    .expect("json");
    body["spec"]["signature"]["publicKey"]["content"] = B64.encode(other_pem).into();
    e["canonicalizedBody"] = B64.encode(serde_json::to_vec(&body).expect("json")).into();
    let err = expect_err(verify_key_bundle(
        &serde_json::to_vec(&v).expect("json"),
        &artifact_digest(),
        &root,
        &site_keys(),
    ));
    assert!(
        matches!(
            err,
            KeylessError::TlogBodyMismatch {
                field: "verifier",
                ..
            }
        ),
        "{err}"
    );

    // A key bundle is not a keyless bundle.
    let err = expect_err(verify_bundle(
        &key_bundle(&params(false)),
        &artifact_digest(),
        &root,
        &identity(),
    ));
    assert!(matches!(err, KeylessError::WrongMaterial(_)), "{err}");

    // Unusable trusted key material is a configuration error, named.
    let keys = vec![("broken".to_string(), b"not a key".to_vec())];
    let err = expect_err(verify_key_bundle(
        &key_bundle(&params(false)),
        &artifact_digest(),
        &root,
        &keys,
    ));
    assert!(
        matches!(&err, KeylessError::InvalidTrustedKey { name, .. } if name == "broken"),
        "{err}"
    );
}

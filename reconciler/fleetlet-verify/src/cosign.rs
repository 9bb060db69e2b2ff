//! Key-based cosign signatures ("simple signing"), both ways: verifying the manifest cosign
//! pushes at `sha256-<hex>.sig` (one layer per signature: the payload as the blob, the
//! signature in an annotation), and making one byte-for-byte as cosign does, for `fleetlet sign`.
//!
//! The payload names the digest it signs; a signature counts only when that digest is exactly
//! the artifact's, so a valid signature of one artifact cannot be replayed onto another.

use crate::keyless::{KeylessIdentity, TrustedRoot};
use fleetlet_core::Digest;
use fleetlet_engine::trust::SignatureManifest;
use serde::Deserialize;
use sigstore::cosign::payload::SimpleSigning;
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, SigningScheme};
use std::collections::BTreeMap;

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of every cosign image signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{name}: not a PEM public key: {message}")]
    Parse { name: String, message: String },
    #[error("{name}: {algorithm} keys are not accepted (use ECDSA P-256 or Ed25519)")]
    Algorithm { name: String, algorithm: String },
    #[error("private key: {0}")]
    Private(String),
}

/// A public key the site trusts, under the name the policy uses for it.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub name: String,
    key: CosignVerificationKey,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

impl TrustedKey {
    /// An ECDSA P-256 or Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`), as
    /// `cosign generate-key-pair`, `fleetlet keygen` and `openssl pkey -pubout` write it.
    pub fn from_pem(name: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let parse = |message: String| KeyError::Parse {
            name: name.to_string(),
            message,
        };
        let text = std::str::from_utf8(pem).map_err(|e| parse(e.to_string()))?;
        let der = pem_block(text, "PUBLIC KEY").ok_or_else(|| {
            parse("no '-----BEGIN PUBLIC KEY-----' block (a private key or certificate?)".into())
        })?;
        let key = CosignVerificationKey::try_from_der(&der).map_err(|e| parse(e.to_string()))?;
        match key {
            CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_)
            | CosignVerificationKey::ED25519(_) => {}
            other => {
                let algorithm = format!("{other:?}");
                return Err(KeyError::Algorithm {
                    name: name.to_string(),
                    algorithm: algorithm.split('(').next().unwrap_or("this").to_string(),
                });
            }
        }
        Ok(TrustedKey {
            name: name.to_string(),
            key,
            spki_der: der,
        })
    }

    /// `SHA256:<hex>` of the SubjectPublicKeyInfo, first 16 hex digits: for messages.
    pub fn fingerprint(&self) -> String {
        let hex = Digest::of(&self.spki_der).hex();
        format!("SHA256:{}", &hex[..16])
    }

    /// Whether `signature` (raw DER/raw bytes) over `message` verifies with this key.
    pub fn verifies(&self, signature: &[u8], message: &[u8]) -> bool {
        self.key
            .verify_signature(sigstore::crypto::Signature::Raw(signature), message)
            .is_ok()
    }
}

/// The bytes of the first PEM block labelled `label`.
pub fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// One valid signature over the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignature {
    /// The trusted key's name, or — keyless — the certificate subject that matched.
    pub key: String,
    /// The OIDC issuer of a keyless signature; `None` for a key.
    pub issuer: Option<String>,
    /// The Rekor log index, when an entry was verified.
    pub log_index: Option<u64>,
    /// The payload's `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// The payload's `optional` annotations (strings only).
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireManifest {
    #[serde(default)]
    layers: Vec<WireLayer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLayer {
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Whether the manifest is a cosign signature manifest (has a simple-signing layer).
pub fn is_signature_manifest(manifest: &SignatureManifest) -> bool {
    serde_json::from_slice::<WireManifest>(&manifest.bytes).is_ok_and(|m| {
        m.layers
            .iter()
            .any(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
    })
}

/// What a signature layer must satisfy besides naming exactly the artifact's digest.
pub struct Checks<'a> {
    /// Keys allowed to sign.
    pub keys: &'a [&'a TrustedKey],
    /// Annotations the payload must carry.
    pub annotations: &'a BTreeMap<String, String>,
    /// Keyless layers (certificate annotations) and Rekor bundles on key-based layers are
    /// verified against it; without it keyless layers cannot pass.
    pub root: Option<&'a TrustedRoot>,
    /// Keyless identities allowed to sign.
    pub identities: &'a [KeylessIdentity],
    /// Key-based signatures must carry a Rekor entry that verifies.
    pub require_tlog: bool,
}

/// Every layer of `manifest` that is a valid signature over exactly `digest` by one of `keys`,
/// and carries the `annotations` required. Returns the valid ones, or — when there is none —
/// why each layer failed.
pub fn verify_key_signatures(
    manifest: &SignatureManifest,
    digest: &Digest,
    keys: &[&TrustedKey],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<KeySignature>, Vec<String>> {
    verify_signatures(
        manifest,
        digest,
        &Checks {
            keys,
            annotations,
            root: None,
            identities: &[],
            require_tlog: false,
        },
    )
}

/// Every layer of `manifest` that is a valid cosign signature over exactly `digest` under
/// `checks`: key-based (with its Rekor entry checked when it has one and a trusted root is
/// given), or legacy keyless (certificate chain, identity, Rekor SET and entry). Returns the
/// valid ones, or — when there is none — why each layer failed.
pub fn verify_signatures(
    manifest: &SignatureManifest,
    digest: &Digest,
    checks: &Checks<'_>,
) -> Result<Vec<KeySignature>, Vec<String>> {
    let keys = checks.keys;
    let annotations = checks.annotations;
    use base64::Engine as _;
    let wire: WireManifest = serde_json::from_slice(&manifest.bytes).map_err(|e| {
        vec![format!(
            "signature manifest {}: not valid JSON: {e}",
            manifest.digest.short()
        )]
    })?;
    let mut valid = Vec::new();
    let mut problems = Vec::new();
    for (i, layer) in wire.layers.iter().enumerate() {
        let at = format!("signature manifest {} layer {i}", manifest.digest.short());
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            problems.push(format!(
                "{at}: media type {:?} is not a cosign signature",
                layer.media_type
            ));
            continue;
        }
        let Some(payload) = layer
            .digest
            .parse::<Digest>()
            .ok()
            .and_then(|d| manifest.blobs.get(&d))
        else {
            problems.push(format!("{at}: payload {} is missing", layer.digest));
            continue;
        };
        let Some(sig_b64) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            problems.push(format!("{at}: no {SIGNATURE_ANNOTATION} annotation"));
            continue;
        };
        // cosign tolerates line breaks in the base64 (Go's decoder skips them); so do we.
        let cleaned: String = sig_b64
            .chars()
            .filter(|c| *c != '\n' && *c != '\r')
            .collect();
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(cleaned) else {
            problems.push(format!("{at}: signature annotation is not base64"));
            continue;
        };
        let material = match crate::legacy::parse_layer_annotations(&layer.annotations) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let (who, issuer, log_index) = if material.is_keyless() {
            let Some(root) = checks.root else {
                problems.push(format!(
                    "{at}: a keyless signature, and no trusted root is configured (trust.keyless)"
                ));
                continue;
            };
            match crate::legacy::verify_keyless_layer(
                payload,
                &signature,
                &material,
                root,
                checks.identities,
            ) {
                Ok(s) => (s.subject, Some(s.issuer), Some(s.log_index)),
                Err(e) => {
                    problems.push(format!("{at}: keyless signature: {e}"));
                    continue;
                }
            }
        } else {
            let Some(key) = keys.iter().find(|k| k.verifies(&signature, payload)) else {
                let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
                problems.push(format!(
                    "{at}: not signed by a key allowed here ({})",
                    if names.is_empty() {
                        "none configured".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
                continue;
            };
            let log_index = match (material.rekor_bundle(), checks.root) {
                (Some(_), Some(root)) => match crate::legacy::verify_key_tlog(
                    payload,
                    &signature,
                    &key.spki_der,
                    &material,
                    root,
                ) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        problems.push(format!(
                            "{at}: signature by key '{}': transparency log entry: {e}",
                            key.name
                        ));
                        continue;
                    }
                },
                _ => None,
            };
            if checks.require_tlog && log_index.is_none() {
                problems.push(format!(
                    "{at}: signature by key '{}' has no verified transparency log entry, and the \
                     policy requires one",
                    key.name
                ));
                continue;
            }
            (key.name.clone(), None, log_index)
        };
        // Only a payload whose signature verified is worth parsing.
        let parsed: SimpleSigning = match serde_json::from_slice(payload) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!(
                    "{at}: payload is not a simple-signing document: {e}"
                ));
                continue;
            }
        };
        if parsed.critical.type_name != PAYLOAD_TYPE {
            problems.push(format!(
                "{at}: payload type {:?} is not {PAYLOAD_TYPE:?}",
                parsed.critical.type_name
            ));
            continue;
        }
        if parsed.critical.image.docker_manifest_digest != digest.to_string() {
            problems.push(format!(
                "{at}: signature by '{who}' is over {}, not over {} (a signature of another artifact)",
                parsed.critical.image.docker_manifest_digest, digest
            ));
            continue;
        }
        let found: BTreeMap<String, String> = parsed
            .optional
            .as_ref()
            .map(|o| {
                o.extra
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        if let Some((k, v)) = annotations.iter().find(|(k, v)| found.get(*k) != Some(*v)) {
            problems.push(format!(
                "{at}: signature by '{who}' lacks the required annotation {k}={v}"
            ));
            continue;
        }
        valid.push(KeySignature {
            key: who,
            issuer,
            log_index,
            docker_reference: parsed.critical.identity.docker_reference,
            annotations: found,
        });
    }
    if valid.is_empty() {
        if problems.is_empty() {
            problems.push(format!(
                "signature manifest {} has no layers",
                manifest.digest.short()
            ));
        }
        Err(problems)
    } else {
        Ok(valid)
    }
}

/// The simple-signing payload cosign signs for `docker_reference` (`registry/repository`) at
/// `digest`, byte for byte (`"optional":null` without annotations).
pub fn simple_signing_payload(
    docker_reference: &str,
    digest: &Digest,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut doc = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": PAYLOAD_TYPE,
        },
        "optional": serde_json::Value::Null,
    });
    if !annotations.is_empty() {
        doc["optional"] = serde_json::to_value(annotations).unwrap_or_default();
    }
    // serde_json's map is sorted, which is the order cosign's Go structs write.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// A signature manifest as cosign builds it: `(config bytes, manifest bytes)` for the layers
/// `(payload, base64 signature)`. Its config lists the payloads as diff ids like cosign's.
pub fn signature_manifest(layers: &[(Vec<u8>, String)]) -> (Vec<u8>, Vec<u8>) {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(p, _)| Digest::of(p).to_string())
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"diff_ids": diff_ids, "type": "layers"},
    }))
    .unwrap_or_default();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "size": config.len(),
            "digest": Digest::of(&config).to_string(),
        },
        "layers": layers.iter().map(|(payload, sig)| serde_json::json!({
            "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
            "size": payload.len(),
            "digest": Digest::of(payload).to_string(),
            "annotations": {SIGNATURE_ANNOTATION: sig},
        })).collect::<Vec<_>>(),
    });
    (config, serde_json::to_vec(&manifest).unwrap_or_default())
}

/// The layers of an existing signature manifest, as `(payload, base64 signature)`, so a new
/// signature is appended (as cosign does) instead of replacing the others.
pub fn existing_layers(manifest: &SignatureManifest) -> Vec<(Vec<u8>, String)> {
    let Ok(wire) = serde_json::from_slice::<WireManifest>(&manifest.bytes) else {
        return vec![];
    };
    wire.layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .filter_map(|l| {
            let payload = manifest.blobs.get(&l.digest.parse::<Digest>().ok()?)?;
            let sig = l.annotations.get(SIGNATURE_ANNOTATION)?;
            Some((payload.clone(), sig.clone()))
        })
        .collect()
}

/// A signing key pair, cosign-compatible on disk.
pub struct SigningKey {
    pair: SigStoreKeyPair,
    scheme: SigningScheme,
}

impl SigningKey {
    /// A new ECDSA P-256 key pair (cosign's default).
    pub fn generate() -> Result<Self, KeyError> {
        let scheme = SigningScheme::ECDSA_P256_SHA256_ASN1;
        let pair = scheme
            .create_signer()
            .and_then(|s| s.to_sigstore_keypair())
            .map_err(|e| KeyError::Private(e.to_string()))?;
        Ok(SigningKey { pair, scheme })
    }

    /// Opens a private key written by `fleetlet keygen` or `cosign generate-key-pair`
    /// (`ENCRYPTED SIGSTORE PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY`).
    pub fn from_encrypted_pem(pem: &[u8], password: &[u8]) -> Result<Self, KeyError> {
        let pair = SigStoreKeyPair::from_encrypted_pem(pem, password).map_err(|e| {
            KeyError::Private(format!(
                "cannot decrypt (wrong passphrase, or not a cosign key): {e}"
            ))
        })?;
        let scheme = match &pair {
            SigStoreKeyPair::ECDSA(_) => SigningScheme::ECDSA_P256_SHA256_ASN1,
            SigStoreKeyPair::ED25519(_) => SigningScheme::ED25519,
            SigStoreKeyPair::RSA(_) => {
                return Err(KeyError::Private(
                    "RSA keys are not accepted (use ECDSA P-256 or Ed25519)".into(),
                ));
            }
        };
        Ok(SigningKey { pair, scheme })
    }

    pub fn private_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        self.pair
            .private_key_to_encrypted_pem(password)
            .map(|z| z.to_string())
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    pub fn public_pem(&self) -> Result<String, KeyError> {
        self.pair
            .public_key_to_pem()
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    /// The raw signature over `message` (ASN.1 DER for ECDSA). ECDSA P-256 signatures are
    /// deterministic (RFC 6979): the same key and message give the same bytes, so signed
    /// sync bundles made twice from the same inputs are byte-identical.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        if let SigningScheme::ECDSA_P256_SHA256_ASN1 = self.scheme {
            use p256::pkcs8::DecodePrivateKey as _;
            use signature::Signer as _;
            let der = self
                .pair
                .private_key_to_der()
                .map_err(|e| KeyError::Private(e.to_string()))?;
            let key = p256::ecdsa::SigningKey::from_pkcs8_der(&der)
                .map_err(|e| KeyError::Private(e.to_string()))?;
            let sig: p256::ecdsa::Signature = key.sign(message);
            return Ok(sig.to_der().as_bytes().to_vec());
        }
        self.pair
            .to_sigstore_signer(&self.scheme)
            .and_then(|s| s.sign(message))
            .map_err(|e| KeyError::Private(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn manifest(layers: &[(Vec<u8>, String)]) -> SignatureManifest {
        let (config, bytes) = signature_manifest(layers);
        let mut blobs: BTreeMap<Digest, Vec<u8>> = layers
            .iter()
            .map(|(p, _)| (Digest::of(p), p.clone()))
            .collect();
        blobs.insert(Digest::of(&config), config);
        SignatureManifest {
            digest: Digest::of(&bytes),
            bytes,
            blobs,
        }
    }

    #[test]
    fn payload_is_byte_for_byte_cosigns() {
        let d = Digest::of(b"artifact");
        assert_eq!(
            String::from_utf8(simple_signing_payload("r.local/app", &d, &BTreeMap::new())).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"r.local/app"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        let a = BTreeMap::from([
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ]);
        assert!(
            String::from_utf8(simple_signing_payload("r/x", &d, &a))
                .unwrap()
                .ends_with(r#""optional":{"a":"1","b":"2"}}"#)
        );
    }

    #[test]
    fn only_a_signature_over_exactly_this_digest_by_a_trusted_key_counts() {
        let signer = SigningKey::generate().unwrap();
        let stranger = SigningKey::generate().unwrap();
        let trusted =
            TrustedKey::from_pem("release", signer.public_pem().unwrap().as_bytes()).unwrap();
        let d = Digest::of(b"artifact");
        let other = Digest::of(b"another artifact");
        let layer = |key: &SigningKey, digest: &Digest, ann: &BTreeMap<String, String>| {
            let p = simple_signing_payload("r/x", digest, ann);
            let s = base64::engine::general_purpose::STANDARD.encode(key.sign(&p).unwrap());
            (p, s)
        };
        let none = BTreeMap::new();
        let prod = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let mut tampered = layer(&signer, &d, &none);
        tampered.0[20] ^= 1;
        for (name, layers, wanted, expect) in [
            (
                "good",
                vec![layer(&signer, &d, &none)],
                &none,
                Ok("release"),
            ),
            (
                "stranger",
                vec![layer(&stranger, &d, &none)],
                &none,
                Err("not signed by a key allowed here"),
            ),
            (
                "replayed",
                vec![layer(&signer, &other, &none)],
                &none,
                Err("not over"),
            ),
            (
                "tampered",
                vec![tampered],
                &none,
                Err("not signed by a key allowed here"),
            ),
            (
                "annotation missing",
                vec![layer(&signer, &d, &none)],
                &prod,
                Err("env=prod"),
            ),
            (
                "annotation present",
                vec![layer(&signer, &d, &prod)],
                &prod,
                Ok("release"),
            ),
            (
                "one good among bad",
                vec![layer(&stranger, &d, &none), layer(&signer, &d, &none)],
                &none,
                Ok("release"),
            ),
            (
                "not base64",
                vec![(b"{}".to_vec(), "%%".into())],
                &none,
                Err("not base64"),
            ),
        ] {
            let got = verify_key_signatures(&manifest(&layers), &d, &[&trusted], wanted);
            match (got, expect) {
                (Ok(sigs), Ok(key)) => assert_eq!(sigs[0].key, key, "{name}"),
                (Err(problems), Err(fragment)) => assert!(
                    problems.iter().any(|p| p.contains(fragment)),
                    "{name}: {problems:?}"
                ),
                (got, _) => panic!("{name}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn keys_round_trip_through_cosigns_formats() {
        let key = SigningKey::generate().unwrap();
        let pem = key.private_pem(b"pw").unwrap();
        assert!(pem.contains("ENCRYPTED SIGSTORE PRIVATE KEY"), "{pem}");
        assert!(SigningKey::from_encrypted_pem(pem.as_bytes(), b"wrong").is_err());
        let reopened = SigningKey::from_encrypted_pem(pem.as_bytes(), b"pw").unwrap();
        let trusted = TrustedKey::from_pem("k", key.public_pem().unwrap().as_bytes()).unwrap();
        assert!(trusted.verifies(&reopened.sign(b"m").unwrap(), b"m"));
        assert!(!trusted.verifies(&reopened.sign(b"m").unwrap(), b"n"));
        assert!(
            TrustedKey::from_pem("k", pem.as_bytes()).is_err(),
            "a private key is not a public key"
        );
    }
}

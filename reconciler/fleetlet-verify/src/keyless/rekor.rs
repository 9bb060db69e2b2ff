//! Rekor (v1) transparency-log evidence in a bundle, checked offline — the parts sigstore 0.15
//! leaves out (sigstore-rs#285):
//!
//! - the entry's `canonicalizedBody` must describe this bundle (same signature, signer and
//!   artifact/payload hashes), so a valid log entry for something else cannot be attached;
//! - the signed entry timestamp (SET): Rekor's signature over
//!   `{"body":…,"integratedTime":…,"logID":…,"logIndex":…}` (canonical JSON, keys sorted),
//!   which is what makes `integratedTime` trustworthy;
//! - the RFC 6962 inclusion proof from the leaf `sha256(0x00 || body)` to the proof's root;
//! - the checkpoint: a signed note naming the tree size and root hash, signed by the same key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::bundle::{Content, Entry, InclusionProof};
use super::keys::{PublicKey, pem_decode};
use super::merkle;
use super::trusted_root::LogKey;
use super::{KeylessError, KeylessError as E};

/// What the log entry must say for it to belong to this bundle.
pub(crate) struct Expected<'a> {
    /// The signer's certificate DER (keyless) or SubjectPublicKeyInfo DER (public key).
    pub(crate) signer_der: &'a [u8],
    pub(crate) signer_is_certificate: bool,
    pub(crate) content: &'a Content,
    pub(crate) artifact_sha256: &'a [u8; 32],
}

fn mismatch(field: &'static str, detail: impl Into<String>) -> KeylessError {
    E::TlogBodyMismatch {
        field,
        detail: detail.into(),
    }
}

fn str_at<'v>(v: &'v Value, path: &[&str], field: &'static str) -> Result<&'v str, KeylessError> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| mismatch(field, format!("missing '{}'", path.join("."))))?;
    }
    cur.as_str()
        .ok_or_else(|| mismatch(field, format!("'{}' is not a string", path.join("."))))
}

/// Compares a `{algorithm, value}` hash object with an expected SHA-256.
fn check_sha256(
    v: &Value,
    path: &[&str],
    field: &'static str,
    want: &[u8; 32],
) -> Result<(), KeylessError> {
    let alg = str_at(v, &[path, &["algorithm"]].concat(), field)?;
    if alg != "sha256" {
        return Err(mismatch(
            field,
            format!("algorithm '{alg}', expected sha256"),
        ));
    }
    let value = str_at(v, &[path, &["value"]].concat(), field)?;
    if !value.eq_ignore_ascii_case(&hex::encode(want)) {
        return Err(mismatch(
            field,
            format!(
                "log says sha256:{value}, bundle has sha256:{}",
                hex::encode(want)
            ),
        ));
    }
    Ok(())
}

/// Decodes a base64 PEM (certificate or public key) from a Rekor body and compares its DER.
fn check_signer(b64_pem: &str, expected: &Expected<'_>) -> Result<(), KeylessError> {
    let pem = B64
        .decode(b64_pem)
        .map_err(|e| mismatch("verifier", format!("not base64: {e}")))?;
    let label = if expected.signer_is_certificate {
        "CERTIFICATE"
    } else {
        "PUBLIC KEY"
    };
    let der = pem_decode(&pem, label)
        .ok_or_else(|| mismatch("verifier", format!("not a PEM {label}")))?;
    if der != expected.signer_der {
        return Err(mismatch(
            "verifier",
            format!("the log entry names a different {}", label.to_lowercase()),
        ));
    }
    Ok(())
}

fn check_signature(b64_sig: &str, want: &[u8]) -> Result<(), KeylessError> {
    let sig = B64
        .decode(b64_sig)
        .map_err(|e| mismatch("signature", format!("not base64: {e}")))?;
    if sig != want {
        return Err(mismatch(
            "signature",
            "the log entry holds a different signature",
        ));
    }
    Ok(())
}

/// Checks that the entry's body is the Rekor record of this bundle's signature.
pub(crate) fn check_body(entry: &Entry, expected: &Expected<'_>) -> Result<(), KeylessError> {
    let body: Value = serde_json::from_slice(&entry.body)
        .map_err(|e| mismatch("canonicalizedBody", format!("not JSON: {e}")))?;
    let kind = str_at(&body, &["kind"], "kind")?;
    let api_version = str_at(&body, &["apiVersion"], "apiVersion")?;
    if let Some((k, v)) = &entry.kind_version
        && (k != kind || v != api_version)
    {
        return Err(mismatch(
            "kindVersion",
            format!("bundle says {k} {v}, body is {kind} {api_version}"),
        ));
    }
    match (kind, api_version, expected.content) {
        ("hashedrekord", "0.0.1", Content::Message { signature, .. }) => {
            check_sha256(
                &body,
                &["spec", "data", "hash"],
                "data.hash",
                expected.artifact_sha256,
            )?;
            check_signature(
                str_at(&body, &["spec", "signature", "content"], "signature")?,
                signature,
            )?;
            check_signer(
                str_at(
                    &body,
                    &["spec", "signature", "publicKey", "content"],
                    "verifier",
                )?,
                expected,
            )
        }
        (
            "dsse",
            "0.0.1",
            Content::Dsse {
                payload,
                signature,
                envelope_hash,
                ..
            },
        ) => {
            check_sha256(
                &body,
                &["spec", "payloadHash"],
                "payloadHash",
                &Sha256::digest(payload).into(),
            )?;
            check_sha256(
                &body,
                &["spec", "envelopeHash"],
                "envelopeHash",
                envelope_hash,
            )?;
            let sigs = body
                .pointer("/spec/signatures")
                .and_then(Value::as_array)
                .ok_or_else(|| mismatch("signatures", "missing 'spec.signatures'"))?;
            let [sig] = sigs.as_slice() else {
                return Err(mismatch(
                    "signatures",
                    format!("{} signatures, the envelope has 1", sigs.len()),
                ));
            };
            check_signature(str_at(sig, &["signature"], "signature")?, signature)?;
            check_signer(str_at(sig, &["verifier"], "verifier")?, expected)
        }
        (
            "intoto",
            "0.0.2",
            Content::Dsse {
                payload,
                payload_type,
                signature,
                ..
            },
        ) => {
            check_sha256(
                &body,
                &["spec", "content", "payloadHash"],
                "payloadHash",
                &Sha256::digest(payload).into(),
            )?;
            let env_type = str_at(
                &body,
                &["spec", "content", "envelope", "payloadType"],
                "payloadType",
            )?;
            if env_type != payload_type {
                return Err(mismatch(
                    "payloadType",
                    format!("log says '{env_type}', envelope has '{payload_type}'"),
                ));
            }
            let sigs = body
                .pointer("/spec/content/envelope/signatures")
                .and_then(Value::as_array)
                .ok_or_else(|| mismatch("signatures", "missing envelope signatures"))?;
            let [sig] = sigs.as_slice() else {
                return Err(mismatch(
                    "signatures",
                    format!("{} signatures, the envelope has 1", sigs.len()),
                ));
            };
            // intoto v0.0.2 stores the signature base64-encoded twice.
            let outer = B64
                .decode(str_at(sig, &["sig"], "signature")?)
                .map_err(|e| mismatch("signature", format!("not base64: {e}")))?;
            let inner = std::str::from_utf8(&outer)
                .map_err(|_| mismatch("signature", "not base64 text"))?;
            check_signature(inner, signature)?;
            check_signer(str_at(sig, &["publicKey"], "verifier")?, expected)
        }
        (kind, version, content) => Err(E::UnsupportedEntryKind(format!(
            "{kind} {version} for a {} bundle",
            match content {
                Content::Message { .. } => "messageSignature",
                Content::Dsse { .. } => "DSSE",
            }
        ))),
    }
}

/// The exact bytes Rekor signs for the SET (canonical JSON, keys in byte order).
pub(crate) fn set_payload(entry: &Entry) -> Vec<u8> {
    format!(
        r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
        B64.encode(&entry.body),
        entry.integrated_time,
        hex::encode(&entry.log_id),
        entry.log_index
    )
    .into_bytes()
}

/// Verifies the signed entry timestamp with the log's key.
pub(crate) fn verify_set(entry: &Entry, set: &[u8], key: &PublicKey) -> Result<(), KeylessError> {
    key.verify(&set_payload(entry), set)
        .map_err(|e| E::SetInvalid(format!("log index {}: {e}", entry.log_index)))
}

/// Verifies the Merkle inclusion proof of the entry's body.
pub(crate) fn verify_inclusion_proof(
    entry: &Entry,
    proof: &InclusionProof,
) -> Result<(), KeylessError> {
    let hash = |h: &[u8], what: &str| -> Result<merkle::Hash, KeylessError> {
        h.try_into().map_err(|_| {
            KeylessError::Malformed(format!(
                "inclusion proof {what} is {} bytes, not 32",
                h.len()
            ))
        })
    };
    let root = hash(&proof.root_hash, "rootHash")?;
    let path = proof
        .hashes
        .iter()
        .map(|h| hash(h, "hash"))
        .collect::<Result<Vec<_>, _>>()?;
    merkle::verify_inclusion(
        proof.log_index,
        proof.tree_size,
        &merkle::leaf_hash(&entry.body),
        &path,
        &root,
    )
    .map_err(E::InclusionProof)
}

/// A checkpoint's signed content (the signature is verified before any of it is used).
struct Checkpoint<'a> {
    text: &'a str,
    tree_size: u64,
    root_hash: Vec<u8>,
    /// (name, base64 of keyhint||signature)
    signatures: Vec<(&'a str, &'a str)>,
}

fn parse_checkpoint(envelope: &str) -> Result<Checkpoint<'_>, KeylessError> {
    let bad = |what: &str| E::CheckpointInvalid(format!("malformed: {what}"));
    // A signed note is its text (ending in a newline), a blank line, then signature lines.
    let split = envelope
        .find("\n\n")
        .ok_or_else(|| bad("no blank line before signatures"))?;
    let text = &envelope[..split + 1];
    let mut lines = text.lines();
    let _origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("no origin"))?;
    let tree_size = lines
        .next()
        .and_then(|l| l.parse::<u64>().ok())
        .ok_or_else(|| bad("second line is not a tree size"))?;
    let root_hash = lines
        .next()
        .and_then(|l| B64.decode(l).ok())
        .ok_or_else(|| bad("third line is not a base64 root hash"))?;
    let signatures = envelope[split + 2..]
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let rest = l
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| bad("signature line without '— '"))?;
            rest.rsplit_once(' ')
                .ok_or_else(|| bad("signature line without a name"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if signatures.is_empty() {
        return Err(bad("no signature lines"));
    }
    Ok(Checkpoint {
        text,
        tree_size,
        root_hash,
        signatures,
    })
}

/// Verifies that the checkpoint is signed by `log` and names the proof's tree size and root.
pub(crate) fn verify_checkpoint(
    envelope: &str,
    proof: &InclusionProof,
    log: &LogKey,
    key: &PublicKey,
) -> Result<(), KeylessError> {
    let cp = parse_checkpoint(envelope)?;
    // Rekor's note key hint is the first 4 bytes of its log id; other lines may be witnesses.
    let hint = &log.log_id[..4];
    let mut ours = cp.signatures.iter().filter_map(|(name, sig)| {
        let raw = B64.decode(sig).ok()?;
        (raw.len() > 4 && &raw[..4] == hint).then_some((*name, raw))
    });
    let (name, raw) = ours.next().ok_or_else(|| {
        E::CheckpointInvalid(format!(
            "no signature with key hint {} ({})",
            hex::encode(hint),
            log.base_url
        ))
    })?;
    key.verify(cp.text.as_bytes(), &raw[4..])
        .map_err(|e| E::CheckpointInvalid(format!("signature by '{name}': {e}")))?;
    if cp.tree_size != proof.tree_size {
        return Err(E::CheckpointMismatch(format!(
            "checkpoint tree size {} but inclusion proof tree size {}",
            cp.tree_size, proof.tree_size
        )));
    }
    if cp.root_hash != proof.root_hash {
        return Err(E::CheckpointMismatch(format!(
            "checkpoint root {} but inclusion proof root {}",
            hex::encode(&cp.root_hash),
            hex::encode(&proof.root_hash)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_payload_is_sorted_canonical_json() {
        let e = Entry {
            log_index: 7,
            log_id: vec![0xab, 0xcd],
            kind_version: None,
            integrated_time: 1_700_000_000,
            signed_entry_timestamp: None,
            inclusion_proof: None,
            body: b"{}".to_vec(),
        };
        assert_eq!(
            String::from_utf8(set_payload(&e)).expect("utf8"),
            r#"{"body":"e30=","integratedTime":1700000000,"logID":"abcd","logIndex":7}"#
        );
    }

    #[test]
    fn checkpoint_parsing() {
        let cp = parse_checkpoint("origin - 1\n12\nAAAA\nextra\n\n\u{2014} name AQIDBAU=\n")
            .expect("parses");
        assert_eq!(cp.tree_size, 12);
        assert_eq!(cp.root_hash, vec![0, 0, 0]);
        assert_eq!(cp.text, "origin - 1\n12\nAAAA\nextra\n");
        assert_eq!(cp.signatures, vec![("name", "AQIDBAU=")]);
        for bad in [
            "origin\n12\nAAAA\n",
            "origin\nx\nAAAA\n\n\u{2014} n AQID\n",
            "origin\n12\n!!\n\n\u{2014} n AQID\n",
            "origin\n12\nAAAA\n\n- n AQID\n",
            "origin\n12\nAAAA\n\n",
        ] {
            assert!(parse_checkpoint(bad).is_err(), "{bad:?}");
        }
    }
}

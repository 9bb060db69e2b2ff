//! The sigstore bundle JSON (protobuf-JSON of `dev.sigstore.bundle.v1.Bundle`, media types
//! v0.1 to v0.3) decoded into plain bytes: base64 fields decoded, int64 fields accepted both
//! as JSON strings (protobuf-JSON) and numbers, and the shape rules of each version applied.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer};

use super::KeylessError;

/// Bundle format versions; v0.1 may prove log inclusion by promise (SET) alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V01,
    V02,
    V03,
}

impl Version {
    fn from_media_type(mt: &str) -> Option<Self> {
        match mt {
            "application/vnd.dev.sigstore.bundle+json;version=0.1" => Some(Self::V01),
            "application/vnd.dev.sigstore.bundle+json;version=0.2" => Some(Self::V02),
            "application/vnd.dev.sigstore.bundle+json;version=0.3"
            | "application/vnd.dev.sigstore.bundle.v0.3+json" => Some(Self::V03),
            _ => None,
        }
    }
}

/// Who signed, as the bundle states it (not yet trusted).
#[derive(Debug)]
pub(crate) enum Material {
    /// Leaf certificate DER and any further chain certificates the bundle carries.
    Certificate { leaf: Vec<u8> },
    /// A public-key bundle; the hint is free text chosen by the signer.
    PublicKey { hint: Option<String> },
}

/// What was signed.
#[derive(Debug)]
pub(crate) enum Content {
    /// A signature over the artifact's digest.
    Message {
        digest: Option<(String, Vec<u8>)>,
        signature: Vec<u8>,
    },
    /// A DSSE envelope with exactly one signature.
    Dsse {
        payload_type: String,
        payload: Vec<u8>,
        signature: Vec<u8>,
        /// SHA-256 of the envelope as Rekor canonicalises it (the dsse entry's envelopeHash).
        envelope_hash: [u8; 32],
    },
}

/// One transparency log entry, decoded.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) log_index: u64,
    pub(crate) log_id: Vec<u8>,
    pub(crate) kind_version: Option<(String, String)>,
    pub(crate) integrated_time: i64,
    pub(crate) signed_entry_timestamp: Option<Vec<u8>>,
    pub(crate) inclusion_proof: Option<InclusionProof>,
    pub(crate) body: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct InclusionProof {
    /// Index within the log shard's tree (differs from the entry's global log index).
    pub(crate) log_index: u64,
    pub(crate) tree_size: u64,
    pub(crate) root_hash: Vec<u8>,
    pub(crate) hashes: Vec<Vec<u8>>,
    pub(crate) checkpoint: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Bundle {
    pub(crate) version: Version,
    pub(crate) material: Material,
    pub(crate) content: Content,
    pub(crate) entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: Option<RawMaterial>,
    message_signature: Option<RawMessageSignature>,
    dsse_envelope: Option<RawEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    certificate: Option<RawCert>,
    x509_certificate_chain: Option<RawChain>,
    public_key: Option<RawKeyId>,
    #[serde(default)]
    tlog_entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawChain {
    #[serde(default)]
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
struct RawKeyId {
    hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessageSignature {
    message_digest: Option<RawHash>,
    signature: String,
}

#[derive(Deserialize)]
struct RawHash {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    #[serde(default)]
    signatures: Vec<RawEnvSig>,
}

#[derive(Deserialize)]
struct RawEnvSig {
    #[serde(default)]
    keyid: String,
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    log_id: RawLogId,
    kind_version: Option<RawKindVersion>,
    #[serde(deserialize_with = "int64")]
    integrated_time: i64,
    inclusion_promise: Option<RawPromise>,
    inclusion_proof: Option<RawProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
struct RawKindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProof {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    root_hash: String,
    #[serde(deserialize_with = "int64")]
    tree_size: i64,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<RawCheckpoint>,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    envelope: String,
}

/// protobuf-JSON writes int64 as a string; some producers write a number.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        N(i64),
        S(String),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, KeylessError> {
    B64.decode(s)
        .map_err(|e| KeylessError::Malformed(format!("{field}: invalid base64: {e}")))
}

fn non_negative(field: &str, n: i64) -> Result<u64, KeylessError> {
    u64::try_from(n).map_err(|_| KeylessError::Malformed(format!("{field} is negative ({n})")))
}

/// Rekor's canonical JSON of a DSSE envelope (Go's encoding with `keyid,omitempty`, keys in
/// field order, which is alphabetical here); its SHA-256 is the dsse entry's `envelopeHash`.
fn envelope_hash(env: &RawEnvelope) -> Result<[u8; 32], KeylessError> {
    use sha2::{Digest, Sha256};
    let sigs: Vec<serde_json::Value> = env
        .signatures
        .iter()
        .map(|s| {
            let mut m = serde_json::Map::new();
            if !s.keyid.is_empty() {
                m.insert("keyid".into(), s.keyid.clone().into());
            }
            m.insert("sig".into(), s.sig.clone().into());
            serde_json::Value::Object(m)
        })
        .collect();
    let canonical = serde_json::json!({
        "payload": env.payload,
        "payloadType": env.payload_type,
        "signatures": sigs,
    });
    let bytes = serde_json::to_vec(&canonical)
        .map_err(|e| KeylessError::Malformed(format!("dsseEnvelope: {e}")))?;
    Ok(Sha256::digest(bytes).into())
}

impl Bundle {
    pub(crate) fn parse(json: &[u8]) -> Result<Self, KeylessError> {
        let raw: RawBundle =
            serde_json::from_slice(json).map_err(|e| KeylessError::Malformed(e.to_string()))?;
        let version = Version::from_media_type(&raw.media_type)
            .ok_or_else(|| KeylessError::UnsupportedMediaType(raw.media_type.clone()))?;
        let vm = raw
            .verification_material
            .ok_or_else(|| KeylessError::Malformed("bundle has no verificationMaterial".into()))?;

        let material = match (vm.certificate, vm.x509_certificate_chain, vm.public_key) {
            (Some(c), None, None) => Material::Certificate {
                leaf: b64("certificate", &c.raw_bytes)?,
            },
            (None, Some(chain), None) => {
                // The leaf comes first; further certificates are ignored: trust comes only
                // from the trusted root's CAs.
                let first = chain.certificates.first().ok_or_else(|| {
                    KeylessError::Malformed("x509CertificateChain is empty".into())
                })?;
                Material::Certificate {
                    leaf: b64("x509CertificateChain", &first.raw_bytes)?,
                }
            }
            (None, None, Some(k)) => Material::PublicKey { hint: k.hint },
            _ => {
                return Err(KeylessError::Malformed(
                    "verificationMaterial must hold exactly one of certificate, \
                     x509CertificateChain, publicKey"
                        .into(),
                ));
            }
        };

        let content = match (raw.message_signature, raw.dsse_envelope) {
            (Some(m), None) => Content::Message {
                digest: m
                    .message_digest
                    .map(|d| Ok::<_, KeylessError>((d.algorithm, b64("messageDigest", &d.digest)?)))
                    .transpose()?,
                signature: b64("messageSignature.signature", &m.signature)?,
            },
            (None, Some(env)) => {
                if env.signatures.len() != 1 {
                    return Err(KeylessError::Malformed(format!(
                        "DSSE envelope must have exactly 1 signature, has {}",
                        env.signatures.len()
                    )));
                }
                let envelope_hash = envelope_hash(&env)?;
                Content::Dsse {
                    payload: b64("dsseEnvelope.payload", &env.payload)?,
                    signature: b64("dsseEnvelope.signatures[0].sig", &env.signatures[0].sig)?,
                    payload_type: env.payload_type,
                    envelope_hash,
                }
            }
            _ => {
                return Err(KeylessError::Malformed(
                    "bundle must hold exactly one of messageSignature, dsseEnvelope".into(),
                ));
            }
        };

        let entries = vm
            .tlog_entries
            .into_iter()
            .map(|e| {
                let inclusion_proof = e
                    .inclusion_proof
                    .map(|p| {
                        Ok::<_, KeylessError>(InclusionProof {
                            log_index: non_negative("inclusionProof.logIndex", p.log_index)?,
                            tree_size: non_negative("inclusionProof.treeSize", p.tree_size)?,
                            root_hash: b64("inclusionProof.rootHash", &p.root_hash)?,
                            hashes: p
                                .hashes
                                .iter()
                                .map(|h| b64("inclusionProof.hashes", h))
                                .collect::<Result<_, _>>()?,
                            checkpoint: p.checkpoint.map(|c| c.envelope),
                        })
                    })
                    .transpose()?;
                Ok(Entry {
                    log_index: non_negative("logIndex", e.log_index)?,
                    log_id: b64("logId.keyId", &e.log_id.key_id)?,
                    kind_version: e.kind_version.map(|k| (k.kind, k.version)),
                    integrated_time: e.integrated_time,
                    signed_entry_timestamp: e
                        .inclusion_promise
                        .map(|p| {
                            b64(
                                "inclusionPromise.signedEntryTimestamp",
                                &p.signed_entry_timestamp,
                            )
                        })
                        .transpose()?,
                    inclusion_proof,
                    body: b64("canonicalizedBody", &e.canonicalized_body)?,
                })
            })
            .collect::<Result<Vec<_>, KeylessError>>()?;

        Ok(Self {
            version,
            material,
            content,
            entries,
        })
    }
}

/// DSSE pre-authentication encoding: what a DSSE signature actually signs.
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

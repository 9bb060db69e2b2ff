//! Sigstore bundle verification, fully offline, against the site's `trusted_root.json`.
//!
//! [`verify_bundle`] checks a keyless bundle (Fulcio certificate + Rekor entry) the way
//! `cosign verify` does online: the certificate chains to a Fulcio CA valid at issuance, is a
//! code-signing certificate with an embedded SCT from a trusted CT log, names an allowed
//! identity (SAN and OIDC issuer); the signature binds the given artifact digest; and the
//! Rekor entry is consistent with the bundle, its signed entry timestamp, Merkle inclusion
//! proof and checkpoint verify with a Rekor key of the trusted root, and its integrated time
//! lies within the certificate's validity. [`verify_key_bundle`] does the same for bundles
//! signed with a key the site trusts (no certificate, no identity).
//!
//! Certificate chain and SCT checks are delegated to the sigstore crate's bundle verifier
//! (fed a trust root filtered to the CAs and CT logs valid at issuance); everything else is
//! checked here, because sigstore 0.15 does not check the SET, inclusion proof or checkpoint
//! (sigstore-rs#285) and rejects public-key bundles. No clock is read: the signing time is the
//! log's integrated time, authenticated by the SET.

pub(crate) mod bundle;
pub(crate) mod certificate;
pub(crate) mod keys;
mod merkle;
pub(crate) mod rekor;
mod trusted_root;

pub use merkle::MerkleError;
pub use trusted_root::TrustedRoot;

use std::future::Future as _;

use bundle::{Bundle, Content, Entry, Material, Version};
use certificate::Leaf;
use keys::PublicKey;

/// Why a bundle was rejected. Each variant is one failed check; messages name what failed.
#[derive(Debug, thiserror::Error)]
pub enum KeylessError {
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("unsupported bundle media type '{0}'")]
    UnsupportedMediaType(String),
    #[error("trusted root: {0}")]
    TrustedRoot(String),
    #[error("identity policy: {0}")]
    InvalidIdentity(String),
    #[error("trusted key '{name}': {reason}")]
    InvalidTrustedKey { name: String, reason: String },
    #[error("verification material: {0}")]
    WrongMaterial(String),
    #[error("certificate malformed: {0}")]
    CertificateMalformed(String),
    #[error("certificate is not a code-signing certificate: {0}")]
    NotCodeSigning(String),
    #[error("certificate identity: subject {found} does not match {expected}")]
    SubjectMismatch { found: String, expected: String },
    #[error("certificate identity: issuer {found} does not match '{expected}'")]
    IssuerMismatch { found: String, expected: String },
    #[error("artifact digest: {0}")]
    DigestMismatch(String),
    #[error("signature: {0}")]
    SignatureInvalid(String),
    #[error("transparency log: the bundle has no tlog entry")]
    NoTlogEntry,
    #[error("transparency log: canonicalizedBody {field} does not match the bundle: {detail}")]
    TlogBodyMismatch { field: &'static str, detail: String },
    #[error("transparency log: unsupported entry kind {0}")]
    UnsupportedEntryKind(String),
    #[error("transparency log: log id {0} is not a Rekor log of the trusted root")]
    UnknownLog(String),
    #[error("transparency log: {0}")]
    LogKeyNotValid(String),
    #[error("transparency log: the entry has no signed entry timestamp (inclusionPromise)")]
    SetMissing,
    #[error("signed entry timestamp: {0}")]
    SetInvalid(String),
    #[error("transparency log: a v0.2+ bundle needs an inclusion proof with a checkpoint")]
    InclusionProofMissing,
    #[error("inclusion proof: {0}")]
    InclusionProof(#[source] MerkleError),
    #[error("checkpoint: {0}")]
    CheckpointInvalid(String),
    #[error("checkpoint: {0}")]
    CheckpointMismatch(String),
    #[error(
        "signing time: integrated time {integrated_time} is outside the certificate's validity \
         {not_before}..{not_after}"
    )]
    SigningTimeOutsideCertificate {
        integrated_time: i64,
        not_before: i64,
        not_after: i64,
    },
    #[error("certificate chain: no Fulcio CA of the trusted root is valid at {0}")]
    NoCertificateAuthority(i64),
    #[error("certificate chain: {0}")]
    CertificateChain(String),
    #[error("certificate SCT: {0}")]
    Sct(String),
    #[error("sigstore verifier: {0}")]
    Sigstore(String),
}

/// How a certificate's SAN must match.
#[derive(Debug, Clone)]
pub enum SubjectMatch {
    /// Byte-for-byte equality.
    Exact(String),
    /// A regular expression, searched as written (cosign semantics: add `^…$` to anchor).
    Regex(regex::Regex),
}

impl SubjectMatch {
    fn matches(&self, san: &str) -> bool {
        match self {
            Self::Exact(s) => s == san,
            Self::Regex(r) => r.is_match(san),
        }
    }
}

impl std::fmt::Display for SubjectMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(s) => write!(f, "'{s}'"),
            Self::Regex(r) => write!(f, "regexp '{}'", r.as_str()),
        }
    }
}

/// An identity the policy allows: exact OIDC issuer and a SAN match.
#[derive(Debug, Clone)]
pub struct KeylessIdentity {
    pub issuer: String,
    pub subject: SubjectMatch,
}

impl KeylessIdentity {
    /// Exactly one of `subject` and `subject_regexp` must be given, like cosign's
    /// `--certificate-identity` / `--certificate-identity-regexp`.
    pub fn new(
        issuer: &str,
        subject: Option<&str>,
        subject_regexp: Option<&str>,
    ) -> Result<Self, KeylessError> {
        if issuer.is_empty() {
            return Err(KeylessError::InvalidIdentity("issuer is empty".into()));
        }
        let subject = match (subject, subject_regexp) {
            (Some(s), None) => SubjectMatch::Exact(s.to_owned()),
            (None, Some(r)) => SubjectMatch::Regex(
                regex::Regex::new(r)
                    .map_err(|e| KeylessError::InvalidIdentity(format!("subject regexp: {e}")))?,
            ),
            _ => {
                return Err(KeylessError::InvalidIdentity(
                    "give exactly one of subject and subject regexp".into(),
                ));
            }
        };
        Ok(Self {
            issuer: issuer.to_owned(),
            subject,
        })
    }
}

/// Who signed, as established by a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BundleSigner {
    /// OIDC issuer (keyless bundles).
    pub issuer: Option<String>,
    /// The certificate SAN that matched (keyless bundles).
    pub subject: Option<String>,
    /// The trusted key's name (public-key bundles).
    pub key: Option<String>,
    /// The Rekor log index of the (first) tlog entry.
    pub log_index: u64,
    /// The Rekor integrated time, Unix seconds: the signing time.
    pub integrated_time: i64,
}

/// Verifies a keyless sigstore bundle for the artifact with SHA-256 `artifact_sha256`, signed
/// by one of `identities`.
pub fn verify_bundle(
    bundle_json: &[u8],
    artifact_sha256: &[u8; 32],
    root: &TrustedRoot,
    identities: &[KeylessIdentity],
) -> Result<BundleSigner, KeylessError> {
    if identities.is_empty() {
        return Err(KeylessError::InvalidIdentity(
            "no identity is allowed".into(),
        ));
    }
    let b = Bundle::parse(bundle_json)?;
    let Material::Certificate { leaf } = &b.material else {
        return Err(KeylessError::WrongMaterial(
            "the bundle is signed with a public key, not a certificate (use verify_key_bundle)"
                .into(),
        ));
    };
    let leaf = Leaf::parse(leaf)?;
    let (issuer, subject) = match_identity(&leaf, identities)?;
    leaf.check_code_signing()?;

    check_artifact_binding(&b.content, artifact_sha256)?;
    check_signature(&b.content, &leaf.key, artifact_sha256)
        .map_err(|e| KeylessError::SignatureInvalid(format!("certificate key: {e}")))?;

    let expected = rekor::Expected {
        signer_der: &leaf.der,
        signer_is_certificate: true,
        content: &b.content,
        artifact_sha256,
    };
    let first = verify_entries(&b, &expected, root)?;
    // Only now is each integrated time trustworthy (the SET signs it).
    for e in &b.entries {
        if e.integrated_time < leaf.not_before || e.integrated_time > leaf.not_after {
            return Err(KeylessError::SigningTimeOutsideCertificate {
                integrated_time: e.integrated_time,
                not_before: leaf.not_before,
                not_after: leaf.not_after,
            });
        }
    }
    verify_chain_and_sct(bundle_json, artifact_sha256, root, &leaf)?;

    Ok(BundleSigner {
        issuer: Some(issuer),
        subject: Some(subject),
        key: None,
        log_index: first.log_index,
        integrated_time: first.integrated_time,
    })
}

/// Verifies a public-key sigstore bundle for the artifact with SHA-256 `artifact_sha256`,
/// signed by one of `keys` (name, DER SubjectPublicKeyInfo or PEM `PUBLIC KEY`; ECDSA P-256,
/// P-384 or Ed25519). The tlog entry is checked exactly as for keyless bundles.
pub fn verify_key_bundle(
    bundle_json: &[u8],
    artifact_sha256: &[u8; 32],
    root: &TrustedRoot,
    keys: &[(String, Vec<u8>)],
) -> Result<BundleSigner, KeylessError> {
    let trusted = keys
        .iter()
        .map(|(name, bytes)| {
            PublicKey::from_der_or_pem(bytes)
                .map(|(k, der)| (name.as_str(), k, der))
                .map_err(|reason| KeylessError::InvalidTrustedKey {
                    name: name.clone(),
                    reason,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if trusted.is_empty() {
        return Err(KeylessError::InvalidIdentity("no trusted key given".into()));
    }
    let b = Bundle::parse(bundle_json)?;
    let Material::PublicKey { hint } = &b.material else {
        return Err(KeylessError::WrongMaterial(
            "the bundle carries a certificate, not a public-key hint (use verify_bundle)".into(),
        ));
    };
    check_artifact_binding(&b.content, artifact_sha256)?;
    // The hint is unauthenticated free text; it only decides which key is tried first.
    let mut order: Vec<_> = trusted.iter().collect();
    order.sort_by_key(|(name, _, _)| hint.as_deref() != Some(*name));
    let mut failures = Vec::new();
    let mut signer = None;
    for (name, key, der) in order {
        match check_signature(&b.content, key, artifact_sha256) {
            Ok(()) => {
                signer = Some((*name, der));
                break;
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    let (name, der) = signer.ok_or_else(|| {
        KeylessError::SignatureInvalid(format!(
            "no trusted key verifies it ({})",
            failures.join("; ")
        ))
    })?;
    let expected = rekor::Expected {
        signer_der: der,
        signer_is_certificate: false,
        content: &b.content,
        artifact_sha256,
    };
    let first = verify_entries(&b, &expected, root)?;
    Ok(BundleSigner {
        issuer: None,
        subject: None,
        key: Some(name.to_owned()),
        log_index: first.log_index,
        integrated_time: first.integrated_time,
    })
}

pub(crate) fn match_identity(
    leaf: &Leaf,
    identities: &[KeylessIdentity],
) -> Result<(String, String), KeylessError> {
    let issuer = leaf.issuer.as_deref();
    for id in identities {
        if issuer == Some(id.issuer.as_str())
            && let Some(san) = leaf.sans.iter().find(|s| id.subject.matches(s))
        {
            return Ok((id.issuer.clone(), san.clone()));
        }
    }
    // Report against an identity whose issuer matched, if any: that is the closer miss.
    let sans = if leaf.sans.is_empty() {
        "(none)".to_string()
    } else {
        leaf.sans
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match identities
        .iter()
        .find(|id| issuer == Some(id.issuer.as_str()))
    {
        Some(id) => Err(KeylessError::SubjectMismatch {
            found: sans,
            expected: id.subject.to_string(),
        }),
        None => Err(KeylessError::IssuerMismatch {
            found: issuer.map_or("(none)".into(), |i| format!("'{i}'")),
            expected: identities[0].issuer.clone(),
        }),
    }
}

/// The bundle must be about this artifact: the message digest it signs, or a subject of
/// the in-toto statement in its DSSE envelope.
fn check_artifact_binding(content: &Content, artifact: &[u8; 32]) -> Result<(), KeylessError> {
    let want = hex::encode(artifact);
    match content {
        Content::Message { digest, .. } => match digest {
            // The signature itself is checked over the artifact digest; the stated digest
            // must agree so the error says what happened.
            Some((alg, _)) if alg != "SHA2_256" => Err(KeylessError::DigestMismatch(format!(
                "bundle message digest algorithm is {alg}, expected SHA2_256"
            ))),
            Some((_, d)) if d.as_slice() != artifact => Err(KeylessError::DigestMismatch(format!(
                "bundle signs sha256:{}, the artifact is sha256:{want}",
                hex::encode(d)
            ))),
            _ => Ok(()),
        },
        Content::Dsse {
            payload_type,
            payload,
            ..
        } => {
            if payload_type != "application/vnd.in-toto+json" {
                return Err(KeylessError::DigestMismatch(format!(
                    "DSSE payload type '{payload_type}' is not an in-toto statement"
                )));
            }
            let statement: serde_json::Value = serde_json::from_slice(payload)
                .map_err(|e| KeylessError::Malformed(format!("DSSE payload is not JSON: {e}")))?;
            let subjects = statement
                .get("subject")
                .and_then(|s| s.as_array())
                .ok_or_else(|| {
                    KeylessError::Malformed("in-toto statement has no subject".into())
                })?;
            let found: Vec<&str> = subjects
                .iter()
                .filter_map(|s| s.pointer("/digest/sha256").and_then(|d| d.as_str()))
                .collect();
            if found.iter().any(|d| d.eq_ignore_ascii_case(&want)) {
                Ok(())
            } else {
                Err(KeylessError::DigestMismatch(format!(
                    "no in-toto subject has sha256:{want} (subjects: {})",
                    if found.is_empty() {
                        "none with a sha256 digest".to_string()
                    } else {
                        found.join(", ")
                    }
                )))
            }
        }
    }
}

fn check_signature(content: &Content, key: &PublicKey, artifact: &[u8; 32]) -> Result<(), String> {
    match content {
        Content::Message { signature, .. } => key.verify_sha256_prehash(artifact, signature),
        Content::Dsse {
            payload_type,
            payload,
            signature,
            ..
        } => key.verify(&bundle::pae(payload_type, payload), signature),
    }
}

/// Verifies every tlog entry (there must be at least one) and returns the first.
fn verify_entries<'b>(
    b: &'b Bundle,
    expected: &rekor::Expected<'_>,
    root: &TrustedRoot,
) -> Result<&'b Entry, KeylessError> {
    let first = b.entries.first().ok_or(KeylessError::NoTlogEntry)?;
    for entry in &b.entries {
        verify_entry(entry, b.version, expected, root)?;
    }
    Ok(first)
}

pub(crate) fn verify_entry(
    entry: &Entry,
    version: Version,
    expected: &rekor::Expected<'_>,
    root: &TrustedRoot,
) -> Result<(), KeylessError> {
    rekor::check_body(entry, expected)?;
    let log = root
        .tlog(&entry.log_id)
        .ok_or_else(|| KeylessError::UnknownLog(hex::encode(&entry.log_id)))?;
    let key = log.key.as_ref().ok_or_else(|| {
        KeylessError::TrustedRoot(format!(
            "Rekor key of {} has an unsupported type",
            log.base_url
        ))
    })?;
    // The SET is what authenticates integratedTime, which is the signing time; without a
    // timestamp authority (not supported) it is required for every bundle version.
    let set = entry
        .signed_entry_timestamp
        .as_deref()
        .ok_or(KeylessError::SetMissing)?;
    rekor::verify_set(entry, set, key)?;
    if !log.valid_for.contains(entry.integrated_time) {
        return Err(KeylessError::LogKeyNotValid(format!(
            "Rekor key of {} is valid {}, not at integrated time {}",
            log.base_url, log.valid_for, entry.integrated_time
        )));
    }
    match (&entry.inclusion_proof, version) {
        (None, Version::V01) => Ok(()),
        (None, _) => Err(KeylessError::InclusionProofMissing),
        (Some(proof), _) => {
            rekor::verify_inclusion_proof(entry, proof)?;
            match (&proof.checkpoint, version) {
                (Some(cp), _) => rekor::verify_checkpoint(cp, proof, log, key),
                (None, Version::V01) => Ok(()),
                (None, _) => Err(KeylessError::InclusionProofMissing),
            }
        }
    }
}

/// Accepts any certificate: identity is matched above, with regexp support sigstore lacks.
struct AnyIdentity;

impl sigstore::bundle::verify::VerificationPolicy for AnyIdentity {
    fn verify(&self, _: &x509_cert::Certificate) -> sigstore::bundle::verify::policy::PolicyResult {
        Ok(())
    }
}

/// Chain to a Fulcio CA and SCT check, through sigstore's bundle verifier, with a trust root
/// holding only the CAs and CT logs the trusted root vouches for at the certificate's issuance.
/// Everything else that verifier checks has already passed here.
fn verify_chain_and_sct(
    bundle_json: &[u8],
    artifact: &[u8; 32],
    root: &TrustedRoot,
    leaf: &Leaf,
) -> Result<(), KeylessError> {
    use sigstore::bundle::verify::{
        ArtifactDigest, CertificateErrorKind, VerificationError, Verifier,
    };

    let issued = leaf.not_before;
    let fulcio_certs: Vec<_> = root
        .certificate_authorities
        .iter()
        .filter(|ca| ca.valid_for.contains(issued))
        .flat_map(|ca| ca.chain_der.iter())
        .map(|der| rustls_pki_types::CertificateDer::from(der.clone()))
        .collect();
    if fulcio_certs.is_empty() {
        return Err(KeylessError::NoCertificateAuthority(issued));
    }
    let ctfe_keys = root
        .ctlogs
        .iter()
        .filter(|l| l.valid_for.contains(issued))
        .map(|l| (hex::encode(l.log_id), l.spki_der.clone()))
        .collect();
    let trust = sigstore::trust::ManualTrustRoot {
        fulcio_certs,
        rekor_keys: Default::default(),
        ctfe_keys,
    };
    let verifier = Verifier::new(Default::default(), trust)
        .map_err(|e| KeylessError::TrustedRoot(format!("sigstore rejected it: {e}")))?;
    let mut sig_bundle: sigstore::bundle::Bundle =
        serde_json::from_slice(bundle_json).map_err(|e| KeylessError::Malformed(e.to_string()))?;
    // sigstore accepts exactly one entry; all of ours were verified above.
    if let Some(vm) = sig_bundle.verification_material.as_mut() {
        vm.tlog_entries.truncate(1);
    }
    let fut = verifier.verify_digest_with(
        ArtifactDigest::Sha256(*artifact),
        sig_bundle,
        &AnyIdentity,
        true,
    );
    // The verifier is async only in name (it awaits nothing when offline), so one poll
    // completes it; no runtime is needed on the caller's blocking thread.
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let result = match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => {
            return Err(KeylessError::Sigstore(
                "verifier unexpectedly waited".into(),
            ));
        }
    };
    result.map_err(|e| match e {
        VerificationError::Certificate(CertificateErrorKind::VerificationFailed(e)) => {
            KeylessError::CertificateChain(format!(
                "does not chain to a Fulcio CA of the trusted root valid at {issued}: {e}"
            ))
        }
        VerificationError::Certificate(CertificateErrorKind::Sct(e)) => {
            KeylessError::Sct(error_chain(&e))
        }
        VerificationError::Certificate(CertificateErrorKind::Malformed(e)) => {
            KeylessError::CertificateMalformed(e.to_string())
        }
        other => KeylessError::Sigstore(error_chain(&other)),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

//! cosign's legacy (pre-bundle) signature layers, the extra material beyond the key-based
//! signature: what `cosign sign` without `--new-bundle-format` attaches to a simple-signing
//! layer when it signs keyless or uploads to Rekor.
//!
//! - `dev.sigstore.cosign/certificate`: the Fulcio leaf certificate (PEM), keyless only;
//! - `dev.sigstore.cosign/chain`: the intermediates and root (PEM), keyless only;
//! - `dev.sigstore.cosign/bundle`: the Rekor entry as cosign stores it,
//!   `{"SignedEntryTimestamp": <base64>, "Payload": {"body": <base64 entry>, "integratedTime": n,
//!   "logIndex": n, "logID": <hex>}}` — a signed entry timestamp (SET) without inclusion proof.
//!
//! sigstore 0.15 neither verifies legacy keyless layers nor checks a SET; this module does both
//! offline, against the site's `trusted_root.json`, reusing the bundle verifier's pieces
//! ([`crate::keyless`]). [`verify_keyless_layer`] establishes who signed a layer;
//! [`verify_key_tlog`] checks the Rekor evidence of a layer already verified with a trusted key.
//! Whether the payload names the artifact's digest is checked by the caller ([`crate::cosign`]).
//! No clock is read: the signing time is the SET-authenticated `integratedTime`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384, Sha512};
use signature::hazmat::PrehashVerifier;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

use crate::keyless::bundle::{Content, Entry, Version};
use crate::keyless::certificate::Leaf;
use crate::keyless::keys::PublicKey;
use crate::keyless::{KeylessError, KeylessIdentity, TrustedRoot, match_identity, verify_entry};

/// The leaf certificate annotation (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The certificate chain annotation (PEM: intermediates, then the root).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// The Rekor bundle annotation (JSON).
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// Longest chain of untrusted intermediates (from the chain annotation) between the leaf and
/// a CA certificate of the trusted root.
const MAX_INTERMEDIATES: usize = 4;
/// Most certificates accepted in the chain annotation (cosign writes two), which bounds the
/// path search over them.
const MAX_CHAIN_CERTIFICATES: usize = 8;

/// Why a legacy layer was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("annotation {annotation}: {reason}")]
    MalformedAnnotation {
        annotation: &'static str,
        reason: String,
    },
    #[error("no {CERTIFICATE_ANNOTATION} annotation: the layer is not a keyless signature")]
    MissingCertificate,
    #[error("no {BUNDLE_ANNOTATION} annotation: the signature has no Rekor entry")]
    MissingRekorBundle,
    /// A check shared with sigstore bundles failed (identity, certificate, signature,
    /// transparency log, signing time).
    #[error(transparent)]
    Keyless(#[from] KeylessError),
}

/// The Rekor entry cosign stores in `dev.sigstore.cosign/bundle`: what the SET signs, decoded,
/// with the exact strings it was signed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekorBundle {
    signed_entry_timestamp: Vec<u8>,
    /// The entry body (Rekor's canonicalized JSON), decoded.
    body: Vec<u8>,
    integrated_time: i64,
    log_index: u64,
    log_id: Vec<u8>,
}

impl RekorBundle {
    pub fn log_index(&self) -> u64 {
        self.log_index
    }
    /// Unix seconds; trustworthy only once the SET has verified.
    pub fn integrated_time(&self) -> i64 {
        self.integrated_time
    }
    /// SHA-256 of the Rekor key's SubjectPublicKeyInfo.
    pub fn log_id(&self) -> &[u8] {
        &self.log_id
    }
    /// The entry body (JSON), as logged.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    fn to_entry(&self) -> Entry {
        Entry {
            log_index: self.log_index,
            log_id: self.log_id.clone(),
            kind_version: None,
            integrated_time: self.integrated_time,
            signed_entry_timestamp: Some(self.signed_entry_timestamp.clone()),
            inclusion_proof: None,
            body: self.body.clone(),
        }
    }
}

/// One legacy cosign layer's extra material, parsed from its annotations (not yet trusted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyMaterial {
    certificate: Option<Vec<u8>>,
    chain: Vec<Vec<u8>>,
    rekor_bundle: Option<RekorBundle>,
}

impl LegacyMaterial {
    /// The leaf certificate (DER), present on keyless signatures.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificate.as_deref()
    }
    /// The chain annotation's certificates (DER), in annotation order.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
    pub fn rekor_bundle(&self) -> Option<&RekorBundle> {
        self.rekor_bundle.as_ref()
    }
    /// Whether the layer claims to be keyless (carries a certificate).
    pub fn is_keyless(&self) -> bool {
        self.certificate.is_some()
    }
}

/// Who signed a keyless legacy layer, as established by [`verify_keyless_layer`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegacySigner {
    /// OIDC issuer of the certificate.
    pub issuer: String,
    /// The certificate SAN that matched an allowed identity.
    pub subject: String,
    /// Rekor log index of the signature's entry.
    pub log_index: u64,
    /// Rekor integrated time, Unix seconds: the signing time.
    pub integrated_time: i64,
}

#[derive(Deserialize)]
struct RawRekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    payload: RawPayload,
}

#[derive(Deserialize)]
struct RawPayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// Parses a layer's `dev.sigstore.cosign/*` annotations. Absent or empty annotations are
/// absent material (as cosign reads them); present ones must be well-formed: exactly one
/// certificate, a chain of one or more certificates, a complete Rekor bundle.
pub fn parse_layer_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<LegacyMaterial, LegacyError> {
    let get = |k: &str| {
        annotations
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let bad = |annotation: &'static str| {
        move |reason: String| LegacyError::MalformedAnnotation { annotation, reason }
    };

    let certificate = match get(CERTIFICATE_ANNOTATION) {
        None => None,
        Some(pem) => {
            let mut certs = pem_certificates(pem).map_err(bad(CERTIFICATE_ANNOTATION))?;
            if certs.len() != 1 {
                return Err(bad(CERTIFICATE_ANNOTATION)(format!(
                    "{} PEM certificates, expected exactly one",
                    certs.len()
                )));
            }
            certs.pop()
        }
    };
    let chain = match get(CHAIN_ANNOTATION) {
        None => Vec::new(),
        Some(pem) => {
            let certs = pem_certificates(pem).map_err(bad(CHAIN_ANNOTATION))?;
            if certs.is_empty() {
                return Err(bad(CHAIN_ANNOTATION)("no PEM certificate".into()));
            }
            if certs.len() > MAX_CHAIN_CERTIFICATES {
                return Err(bad(CHAIN_ANNOTATION)(format!(
                    "{} certificates, at most {MAX_CHAIN_CERTIFICATES} are accepted",
                    certs.len()
                )));
            }
            certs
        }
    };
    let rekor_bundle = get(BUNDLE_ANNOTATION)
        .map(|json| parse_rekor_bundle(json).map_err(bad(BUNDLE_ANNOTATION)))
        .transpose()?;
    Ok(LegacyMaterial {
        certificate,
        chain,
        rekor_bundle,
    })
}

fn parse_rekor_bundle(json: &str) -> Result<RekorBundle, String> {
    let raw: RawRekorBundle =
        serde_json::from_str(json).map_err(|e| format!("not a cosign Rekor bundle: {e}"))?;
    let signed_entry_timestamp = B64
        .decode(&raw.signed_entry_timestamp)
        .map_err(|e| format!("SignedEntryTimestamp is not base64: {e}"))?;
    let body = B64
        .decode(&raw.payload.body)
        .map_err(|e| format!("Payload.body is not base64: {e}"))?;
    // The SET is over the lowercase hex log id; anything else cannot have been signed by Rekor.
    if raw.payload.log_id.is_empty()
        || raw
            .payload
            .log_id
            .bytes()
            .any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "Payload.logID '{}' is not lowercase hex",
            raw.payload.log_id
        ));
    }
    let log_id =
        hex::decode(&raw.payload.log_id).map_err(|e| format!("Payload.logID is not hex: {e}"))?;
    let log_index = u64::try_from(raw.payload.log_index)
        .map_err(|_| format!("Payload.logIndex {} is negative", raw.payload.log_index))?;
    Ok(RekorBundle {
        signed_entry_timestamp,
        body,
        integrated_time: raw.payload.integrated_time,
        log_index,
        log_id,
    })
}

/// Every `CERTIFICATE` PEM block of `text`, DER-decoded and parsed (text between blocks is
/// ignored, as Go's `pem.Decode` does).
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let stop = after
            .find(END)
            .ok_or_else(|| format!("PEM certificate {} is not terminated", out.len() + 1))?;
        let body: String = after[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = B64
            .decode(body)
            .map_err(|e| format!("PEM certificate {}: not base64: {e}", out.len() + 1))?;
        Certificate::from_der(&der)
            .map_err(|e| format!("PEM certificate {}: not X.509: {e}", out.len() + 1))?;
        out.push(der);
        rest = &after[stop + END.len()..];
    }
    if out.is_empty() && text.contains("-----BEGIN") {
        return Err("no CERTIFICATE PEM block".into());
    }
    Ok(out)
}

/// Verifies a legacy keyless layer: `signature` (decoded from
/// `dev.cosignproject.cosign/signature`) over `payload` (the layer blob), with `material`
/// from [`parse_layer_annotations`].
///
/// Checks, in order: the leaf names one of `identities` (OIDC issuer and SAN) and is a
/// code-signing certificate; the signature verifies with its key; the Rekor entry body is the
/// hashedrekord 0.0.1 record of this signature, certificate and `sha256(payload)`; its SET
/// verifies with the trusted root's Rekor key named by the log id, valid at the integrated
/// time; the integrated time lies within the leaf's validity; and the leaf chains (through the
/// chain annotation's certificates if needed) to a Fulcio CA of the trusted root valid at the
/// integrated time. The payload's digest claim is not looked at here.
pub fn verify_keyless_layer(
    payload: &[u8],
    signature: &[u8],
    material: &LegacyMaterial,
    root: &TrustedRoot,
    identities: &[KeylessIdentity],
) -> Result<LegacySigner, LegacyError> {
    if identities.is_empty() {
        return Err(KeylessError::InvalidIdentity("no identity is allowed".into()).into());
    }
    let cert = material
        .certificate
        .as_deref()
        .ok_or(LegacyError::MissingCertificate)?;
    let leaf = Leaf::parse(cert)?;
    let (issuer, subject) = match_identity(&leaf, identities)?;
    leaf.check_code_signing()?;
    verify_payload_signature(&leaf.key, payload, signature)
        .map_err(|e| KeylessError::SignatureInvalid(format!("certificate key: {e}")))?;

    let rekor = material
        .rekor_bundle
        .as_ref()
        .ok_or(LegacyError::MissingRekorBundle)?;
    verify_tlog(rekor, payload, signature, &leaf.der, true, root)?;
    // Only now is integratedTime trustworthy (the SET signs it).
    let t = rekor.integrated_time;
    if t < leaf.not_before || t > leaf.not_after {
        return Err(KeylessError::SigningTimeOutsideCertificate {
            integrated_time: t,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        }
        .into());
    }
    verify_chain(&leaf.der, &material.chain, root, t)?;
    Ok(LegacySigner {
        issuer,
        subject,
        log_index: rekor.log_index,
        integrated_time: t,
    })
}

/// Verifies the Rekor evidence of a key-based legacy layer: the signature verifies with the
/// key (`spki_der`: DER SubjectPublicKeyInfo, or PEM `PUBLIC KEY`), the entry body is the
/// hashedrekord 0.0.1 record of this signature, this public key and `sha256(payload)`, and the
/// SET verifies with the trusted root's Rekor key named by the log id, valid at the integrated
/// time. Returns the log index.
pub fn verify_key_tlog(
    payload: &[u8],
    signature: &[u8],
    spki_der: &[u8],
    material: &LegacyMaterial,
    root: &TrustedRoot,
) -> Result<u64, LegacyError> {
    let (key, der) =
        PublicKey::from_der_or_pem(spki_der).map_err(|reason| KeylessError::InvalidTrustedKey {
            name: "(signing key)".into(),
            reason,
        })?;
    verify_payload_signature(&key, payload, signature)
        .map_err(|e| KeylessError::SignatureInvalid(format!("signing key: {e}")))?;
    let rekor = material
        .rekor_bundle
        .as_ref()
        .ok_or(LegacyError::MissingRekorBundle)?;
    verify_tlog(rekor, payload, signature, &der, false, root)?;
    Ok(rekor.log_index)
}

/// cosign signs the payload with SHA-256 for every ECDSA key; Ed25519 signs the payload itself.
fn verify_payload_signature(key: &PublicKey, payload: &[u8], sig: &[u8]) -> Result<(), String> {
    match key {
        PublicKey::Ed25519(_) => key.verify(payload, sig),
        _ => key.verify_sha256_prehash(&Sha256::digest(payload).into(), sig),
    }
}

/// Body consistency, log lookup, SET and log key validity — the bundle verifier's entry check,
/// for a v0.1-like entry (SET, no inclusion proof).
fn verify_tlog(
    rekor: &RekorBundle,
    payload: &[u8],
    signature: &[u8],
    signer_der: &[u8],
    signer_is_certificate: bool,
    root: &TrustedRoot,
) -> Result<(), KeylessError> {
    let payload_sha256: [u8; 32] = Sha256::digest(payload).into();
    let content = Content::Message {
        digest: Some(("SHA2_256".into(), payload_sha256.to_vec())),
        signature: signature.to_vec(),
    };
    let expected = crate::keyless::rekor::Expected {
        signer_der,
        signer_is_certificate,
        content: &content,
        artifact_sha256: &payload_sha256,
    };
    verify_entry(&rekor.to_entry(), Version::V01, &expected, root)
}

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The leaf must be issued by a certificate of a Fulcio CA the trusted root vouches for at
/// `at`, directly or through certificates of the chain annotation (untrusted, so each must be
/// a CA valid at `at` issued in turn by a trusted or chain certificate). Every certificate of
/// a valid CA's chain is a trust anchor, as in the bundle verifier.
fn verify_chain(
    leaf_der: &[u8],
    untrusted: &[Vec<u8>],
    root: &TrustedRoot,
    at: i64,
) -> Result<(), KeylessError> {
    let chain_err = |e: String| KeylessError::CertificateChain(e);
    let anchors = root
        .certificate_authorities
        .iter()
        .filter(|ca| ca.valid_for.contains(at))
        .flat_map(|ca| ca.chain_der.iter())
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KeylessError::TrustedRoot(format!("Fulcio CA certificate: {e}")))?;
    if anchors.is_empty() {
        return Err(KeylessError::NoCertificateAuthority(at));
    }
    let intermediates = untrusted
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| chain_err(format!("chain annotation certificate: {e}")))?;
    let leaf = Certificate::from_der(leaf_der)
        .map_err(|e| KeylessError::CertificateMalformed(e.to_string()))?;
    let mut why = Vec::new();
    if chains_to_anchor(
        &leaf,
        &anchors,
        &intermediates,
        at,
        &mut Vec::new(),
        &mut why,
    ) {
        Ok(())
    } else {
        why.dedup();
        Err(chain_err(format!(
            "does not chain to a Fulcio CA of the trusted root valid at {at}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        )))
    }
}

/// Depth-first search for a path from `cert` to an anchor; `path` holds the indices of the
/// intermediates already used (none is used twice).
fn chains_to_anchor(
    cert: &Certificate,
    anchors: &[Certificate],
    intermediates: &[Certificate],
    at: i64,
    path: &mut Vec<usize>,
    why: &mut Vec<String>,
) -> bool {
    for anchor in anchors {
        match issued_by(cert, anchor, at) {
            Ok(()) => return true,
            Err(e) => why.extend(e),
        }
    }
    if path.len() >= MAX_INTERMEDIATES {
        return false;
    }
    for (n, i) in intermediates.iter().enumerate() {
        if path.contains(&n) || i == cert {
            continue;
        }
        match issued_by(cert, i, at) {
            Ok(()) => {
                path.push(n);
                let found = chains_to_anchor(i, anchors, intermediates, at, path, why);
                path.pop();
                if found {
                    return true;
                }
            }
            Err(e) => why.extend(e.map(|e| format!("chain annotation {e}"))),
        }
    }
    false
}

/// Whether `issuer` issued `cert` and could at `at`: names match, `issuer` is a CA allowed to
/// sign certificates and valid at `at`, and its key verifies `cert`'s signature. `Err(None)`
/// when the names differ (not a candidate, nothing worth reporting).
fn issued_by(cert: &Certificate, issuer: &Certificate, at: i64) -> Result<(), Option<String>> {
    let ctbs = cert.tbs_certificate();
    let itbs = issuer.tbs_certificate();
    if ctbs.issuer() != itbs.subject() {
        return Err(None);
    }
    let name = itbs.subject().to_string();
    let fail = |what: String| Err(Some(format!("issuer '{name}': {what}")));
    match itbs.get_extension::<BasicConstraints>() {
        Ok(Some((_, bc))) if bc.ca => {}
        Ok(_) => return fail("not a CA certificate".into()),
        Err(e) => return fail(format!("basicConstraints: {e}")),
    }
    match itbs.get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) if !ku.key_cert_sign() => {
            return fail("keyUsage lacks keyCertSign".into());
        }
        Ok(_) => {}
        Err(e) => return fail(format!("keyUsage: {e}")),
    }
    let secs = |t: x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs());
    match (
        secs(itbs.validity().not_before),
        secs(itbs.validity().not_after),
    ) {
        (Ok(nb), Ok(na)) if nb <= at && at <= na => {}
        _ => return fail(format!("certificate not valid at {at}")),
    }
    let spki = match itbs.subject_public_key_info().to_der() {
        Ok(d) => d,
        Err(e) => return fail(format!("public key: {e}")),
    };
    let key = match PublicKey::from_spki_der(&spki) {
        Ok(k) => k,
        Err(e) => return fail(format!("public key: {e}")),
    };
    match verify_certificate_signature(cert, &key) {
        Ok(()) => Ok(()),
        Err(e) => fail(e),
    }
}

/// Verifies `cert`'s signature over its TBSCertificate with `key`, under the signature
/// algorithm the certificate names (ECDSA with SHA-256/384/512, or Ed25519).
fn verify_certificate_signature(cert: &Certificate, key: &PublicKey) -> Result<(), String> {
    let tbs = cert
        .tbs_certificate()
        .to_der()
        .map_err(|e| format!("re-encoding the certificate: {e}"))?;
    let sig = cert
        .signature()
        .as_bytes()
        .ok_or("signature bit string is not octet-aligned")?;
    let alg = cert.signature_algorithm().oid;
    if cert.tbs_certificate().signature().oid != alg {
        return Err("inner and outer signature algorithms differ".into());
    }
    let digest: Vec<u8> = match alg {
        ECDSA_WITH_SHA256 => Sha256::digest(&tbs).to_vec(),
        ECDSA_WITH_SHA384 => Sha384::digest(&tbs).to_vec(),
        ECDSA_WITH_SHA512 => Sha512::digest(&tbs).to_vec(),
        ID_ED25519 => {
            let PublicKey::Ed25519(k) = key else {
                return Err("Ed25519 signature from a non-Ed25519 key".into());
            };
            let s = ed25519_dalek::Signature::from_slice(sig)
                .map_err(|_| "malformed Ed25519 signature".to_string())?;
            return k
                .verify_strict(&tbs, &s)
                .map_err(|_| "certificate signature does not verify".into());
        }
        other => {
            return Err(format!(
                "unsupported certificate signature algorithm {other}"
            ));
        }
    };
    let malformed = |_| "malformed ECDSA signature".to_string();
    let ok = match key {
        PublicKey::P256(k) => {
            let s = p256::ecdsa::Signature::from_der(sig).map_err(malformed)?;
            k.verify_prehash(&digest, &s).is_ok()
        }
        PublicKey::P384(k) => {
            let s = p384::ecdsa::Signature::from_der(sig).map_err(malformed)?;
            k.verify_prehash(&digest, &s).is_ok()
        }
        PublicKey::Ed25519(_) => return Err("ECDSA signature from an Ed25519 key".into()),
    };
    if ok {
        Ok(())
    } else {
        Err("certificate signature does not verify".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_entry_annotation() -> (String, TrustedRoot) {
        let bundle: serde_json::Value =
            serde_json::from_slice(include_bytes!("../tests/fixtures/sigstore/bundle_v03.json"))
                .expect("fixture");
        let e = &bundle["verificationMaterial"]["tlogEntries"][0];
        let log_id = hex::encode(
            B64.decode(e["logId"]["keyId"].as_str().expect("keyId"))
                .expect("base64"),
        );
        let annotation = serde_json::json!({
            "SignedEntryTimestamp": e["inclusionPromise"]["signedEntryTimestamp"],
            "Payload": {
                "body": e["canonicalizedBody"],
                "integratedTime": e["integratedTime"].as_str().expect("time").parse::<i64>().expect("int"),
                "logIndex": e["logIndex"].as_str().expect("index").parse::<i64>().expect("int"),
                "logID": log_id,
            }
        })
        .to_string();
        let root = TrustedRoot::from_json(include_bytes!(
            "../tests/fixtures/sigstore/sigstore_trusted_root.json"
        ))
        .expect("root");
        (annotation, root)
    }

    /// The SET is over exactly the bytes Rekor signed: proven with a real public-good SET.
    #[test]
    fn set_payload_is_rekors_exact_bytes() {
        let (annotation, root) = real_entry_annotation();
        let b = parse_rekor_bundle(&annotation).expect("parses");
        let entry = b.to_entry();
        let payload = String::from_utf8(crate::keyless::rekor::set_payload(&entry)).expect("utf8");
        let raw: serde_json::Value = serde_json::from_str(&annotation).expect("json");
        let p = &raw["Payload"];
        assert_eq!(
            payload,
            format!(
                r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
                p["body"].as_str().expect("body"),
                p["integratedTime"],
                p["logID"].as_str().expect("logID"),
                p["logIndex"]
            )
        );
        let log = root.tlog(&b.log_id).expect("public-good Rekor");
        let key = log.key.as_ref().expect("key");
        crate::keyless::rekor::verify_set(&entry, &b.signed_entry_timestamp, key)
            .expect("Rekor's SET verifies over these bytes");
        let mut other = entry;
        other.log_index += 1;
        assert!(crate::keyless::rekor::verify_set(&other, &b.signed_entry_timestamp, key).is_err());
    }

    /// The chain check accepts real Fulcio certificates (P-384 CA, ecdsa-with-SHA384) against
    /// the public-good root, and only at a time the CA and its certificates are valid.
    #[test]
    fn real_fulcio_leaf_chains_to_the_public_good_root() {
        let (_, root) = real_entry_annotation();
        let bundle: serde_json::Value =
            serde_json::from_slice(include_bytes!("../tests/fixtures/sigstore/bundle_v03.json"))
                .expect("fixture");
        let leaf = B64
            .decode(
                bundle["verificationMaterial"]["certificate"]["rawBytes"]
                    .as_str()
                    .expect("certificate"),
            )
            .expect("base64");
        let t = 1_775_719_409; // the entry's integrated time
        verify_chain(&leaf, &[], &root, t).expect("chains");
        // Before the current Fulcio CA existed, only the 2021 CA was valid: it did not issue it.
        assert!(matches!(
            verify_chain(&leaf, &[], &root, 1_640_000_000),
            Err(KeylessError::CertificateChain(_))
        ));
        // The leaf itself is no CA, so offering it as an intermediate changes nothing.
        assert!(verify_chain(&leaf, std::slice::from_ref(&leaf), &root, t).is_ok());
    }

    #[test]
    fn rekor_bundle_annotation_rules() {
        let (annotation, _) = real_entry_annotation();
        assert!(parse_rekor_bundle(&annotation).is_ok());
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(&annotation).expect("json");
            f(&mut v);
            parse_rekor_bundle(&v.to_string())
        };
        assert!(edit(&|v| v["Payload"]["logID"] = "ABCD".into()).is_err());
        assert!(edit(&|v| v["Payload"]["logIndex"] = (-1).into()).is_err());
        assert!(edit(&|v| v["Payload"]["body"] = "!!".into()).is_err());
        assert!(edit(&|v| v["SignedEntryTimestamp"] = "%".into()).is_err());
        assert!(edit(&|v| v["Payload"]["integratedTime"] = "1".into()).is_err());
        assert!(
            edit(&|v| {
                v.as_object_mut().expect("obj").remove("Payload");
            })
            .is_err()
        );
    }
}

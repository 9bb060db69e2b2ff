//! Public keys found in sigstore material (Fulcio leaf certificates, Rekor and CT log keys,
//! keys a site trusts for public-key bundles), parsed from DER SubjectPublicKeyInfo, and the
//! signature checks sigstore needs: ECDSA P-256/P-384 (DER or fixed-size signatures) and
//! Ed25519.

use const_oid::ObjectIdentifier;
use der::Decode;
use sha2::{Digest, Sha256};
use signature::Verifier;
use signature::hazmat::PrehashVerifier;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A verification key. ECDSA keys verify with the hash that goes with their curve
/// (SHA-256 for P-256, SHA-384 for P-384), which is what cosign, Fulcio and Rekor use.
#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
        let (alg, param) = spki
            .algorithm
            .oids()
            .map_err(|e| format!("bad algorithm identifier: {e}"))?;
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or("public key bit string is not octet-aligned")?;
        if alg == ID_EC_PUBLIC_KEY && param == Some(SECP256R1) {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                .map(Self::P256)
                .map_err(|e| format!("bad P-256 point: {e}"))
        } else if alg == ID_EC_PUBLIC_KEY && param == Some(SECP384R1) {
            p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                .map(Self::P384)
                .map_err(|e| format!("bad P-384 point: {e}"))
        } else if alg == ID_ED25519 {
            let raw: &[u8; 32] = bits
                .try_into()
                .map_err(|_| format!("Ed25519 key is {} bytes, not 32", bits.len()))?;
            ed25519_dalek::VerifyingKey::from_bytes(raw)
                .map(Self::Ed25519)
                .map_err(|e| format!("bad Ed25519 key: {e}"))
        } else {
            Err(format!(
                "unsupported key algorithm {alg}{}",
                param.map(|p| format!(" ({p})")).unwrap_or_default()
            ))
        }
    }

    /// Parses a key given as DER SubjectPublicKeyInfo or as a PEM `PUBLIC KEY` block.
    pub(crate) fn from_der_or_pem(bytes: &[u8]) -> Result<(Self, Vec<u8>), String> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            pem_decode(bytes, "PUBLIC KEY").ok_or("PEM is not a PUBLIC KEY block")?
        } else {
            bytes.to_vec()
        };
        Ok((Self::from_spki_der(&der)?, der))
    }

    /// Verifies `sig` over `msg`.
    pub(crate) fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        match self {
            Self::P256(k) => k
                .verify(msg, &p256_sig(sig)?)
                .map_err(|_| "ECDSA P-256 signature does not verify".to_string()),
            Self::P384(k) => k
                .verify(msg, &p384_sig(sig)?)
                .map_err(|_| "ECDSA P-384 signature does not verify".to_string()),
            Self::Ed25519(k) => {
                let s = ed25519_dalek::Signature::from_slice(sig)
                    .map_err(|_| format!("Ed25519 signature is {} bytes, not 64", sig.len()))?;
                k.verify_strict(msg, &s)
                    .map_err(|_| "Ed25519 signature does not verify".to_string())
            }
        }
    }

    /// Verifies `sig` over a message known only by its SHA-256 digest (hashedrekord / cosign
    /// `sign-blob`). Ed25519 signs the message itself, so it cannot be checked from a digest.
    pub(crate) fn verify_sha256_prehash(
        &self,
        digest: &[u8; 32],
        sig: &[u8],
    ) -> Result<(), String> {
        match self {
            Self::P256(k) => k
                .verify_prehash(digest, &p256_sig(sig)?)
                .map_err(|_| "ECDSA P-256 signature does not verify over the digest".to_string()),
            Self::P384(k) => k
                .verify_prehash(digest, &p384_sig(sig)?)
                .map_err(|_| "ECDSA P-384 signature does not verify over the digest".to_string()),
            Self::Ed25519(_) => Err(
                "an Ed25519 signature over the artifact cannot be checked from its digest alone"
                    .to_string(),
            ),
        }
    }
}

fn p256_sig(sig: &[u8]) -> Result<p256::ecdsa::Signature, String> {
    p256::ecdsa::Signature::from_der(sig)
        .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
        .map_err(|_| "malformed ECDSA P-256 signature".to_string())
}

fn p384_sig(sig: &[u8]) -> Result<p384::ecdsa::Signature, String> {
    p384::ecdsa::Signature::from_der(sig)
        .or_else(|_| p384::ecdsa::Signature::from_slice(sig))
        .map_err(|_| "malformed ECDSA P-384 signature".to_string())
}

/// The transparency-log id of a key: SHA-256 of its DER SubjectPublicKeyInfo.
pub(crate) fn key_id(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// Decodes the first PEM block labelled `label` (a strict subset of RFC 7468: no headers).
pub(crate) fn pem_decode(text: &[u8], label: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(text).ok()?;
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

//! The Fulcio leaf certificate: what it says about the signer (SAN, OIDC issuer), whether it is
//! a code-signing certificate, its validity window and its key. Chain and SCT checks are done
//! elsewhere (through the sigstore crate), against the trusted root.

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName};

use super::KeylessError;
use super::keys::PublicKey;

/// Fulcio's OIDC issuer extension, raw string value (deprecated but still issued).
const OID_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's OIDC issuer extension, DER UTF8String value.
const OID_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
const OID_KP_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

#[derive(Debug)]
pub(crate) struct Leaf {
    pub(crate) der: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// Email (rfc822Name) and URI SANs, in certificate order.
    pub(crate) sans: Vec<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) key: PublicKey,
    cert: Certificate,
}

fn malformed(what: impl std::fmt::Display) -> KeylessError {
    KeylessError::CertificateMalformed(what.to_string())
}

impl Leaf {
    pub(crate) fn parse(der: &[u8]) -> Result<Self, KeylessError> {
        let cert = Certificate::from_der(der).map_err(malformed)?;
        let tbs = cert.tbs_certificate();
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).map_err(|_| malformed("time overflow"))
        };
        let not_before = secs(tbs.validity().not_before)?;
        let not_after = secs(tbs.validity().not_after)?;
        let spki_der = tbs.subject_public_key_info().to_der().map_err(malformed)?;
        let key =
            PublicKey::from_spki_der(&spki_der).map_err(|e| malformed(format!("leaf key: {e}")))?;

        let mut sans = Vec::new();
        if let Some((_, san)) = tbs
            .get_extension::<SubjectAltName>()
            .map_err(|e| malformed(format!("subjectAltName: {e}")))?
        {
            for name in san.0 {
                match name {
                    GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => {
                        sans.push(s.to_string())
                    }
                    _ => {}
                }
            }
        }

        let ext_value = |oid: ObjectIdentifier| {
            tbs.extensions()
                .into_iter()
                .flatten()
                .find(|e| e.extn_id == oid)
                .map(|e| e.extn_value.as_bytes().to_vec())
        };
        // Prefer the v2 (DER) issuer extension, as cosign does; fall back to the legacy one.
        let issuer = match ext_value(OID_ISSUER_V2) {
            Some(v) => Some(
                der::asn1::Utf8StringRef::from_der(&v)
                    .map(|s| s.as_str().to_owned())
                    .map_err(|e| malformed(format!("OIDC issuer extension: {e}")))?,
            ),
            None => ext_value(OID_ISSUER_V1)
                .map(|v| String::from_utf8(v).map_err(|e| malformed(format!("OIDC issuer: {e}"))))
                .transpose()?,
        };

        Ok(Self {
            der: der.to_vec(),
            not_before,
            not_after,
            sans,
            issuer,
            key,
            cert,
        })
    }

    /// Fulcio issues code-signing certificates: keyUsage digitalSignature, EKU codeSigning.
    pub(crate) fn check_code_signing(&self) -> Result<(), KeylessError> {
        let tbs = self.cert.tbs_certificate();
        let ku = tbs
            .get_extension::<KeyUsage>()
            .map_err(|e| malformed(format!("keyUsage: {e}")))?;
        if !ku.is_some_and(|(_, ku)| ku.digital_signature()) {
            return Err(KeylessError::NotCodeSigning(
                "keyUsage lacks digitalSignature".into(),
            ));
        }
        let eku = tbs
            .get_extension::<ExtendedKeyUsage>()
            .map_err(|e| malformed(format!("extendedKeyUsage: {e}")))?;
        if !eku.is_some_and(|(_, eku)| eku.0.contains(&OID_KP_CODE_SIGNING)) {
            return Err(KeylessError::NotCodeSigning(
                "extendedKeyUsage lacks codeSigning".into(),
            ));
        }
        Ok(())
    }
}

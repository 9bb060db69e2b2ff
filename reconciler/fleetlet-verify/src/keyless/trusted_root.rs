//! The site's offline trust material: a sigstore `trusted_root.json`
//! (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`), parsed with serde so no TUF
//! client is needed. Each key and CA carries the window (`validFor`) in which the trust root
//! vouches for it; verification checks the signing time against that window.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::KeylessError;
use super::keys::{PublicKey, key_id};

/// A parsed `trusted_root.json`.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    pub(crate) tlogs: Vec<LogKey>,
    pub(crate) ctlogs: Vec<LogKey>,
    pub(crate) certificate_authorities: Vec<CertificateAuthority>,
}

/// A transparency log (Rekor or CT) key.
#[derive(Debug, Clone)]
pub(crate) struct LogKey {
    pub(crate) base_url: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo: how Rekor v1 and CT name their key.
    pub(crate) log_id: [u8; 32],
    pub(crate) spki_der: Vec<u8>,
    /// `None` for key types this verifier cannot use (kept so errors can name the log).
    pub(crate) key: Option<PublicKey>,
    pub(crate) valid_for: TimeRange,
}

/// A Fulcio CA: its chain (first the issuing certificate, last the root) and validity window.
#[derive(Debug, Clone)]
pub(crate) struct CertificateAuthority {
    pub(crate) chain_der: Vec<Vec<u8>>,
    pub(crate) valid_for: TimeRange,
}

/// A closed window of Unix seconds; an absent end means "still valid".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub(crate) start: Option<i64>,
    pub(crate) end: Option<i64>,
}

impl TimeRange {
    pub(crate) fn contains(&self, t: i64) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

impl std::fmt::Display for TimeRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_else(|| "…".into());
        write!(f, "{}..{}", show(self.start), show(self.end))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: Option<String>,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawCa>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    #[serde(default)]
    base_url: String,
    public_key: RawPublicKey,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    raw_bytes: String,
    valid_for: Option<RawRange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    #[serde(default)]
    uri: String,
    cert_chain: RawChain,
    valid_for: Option<RawRange>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

const MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.trustedroot";

impl TrustedRoot {
    /// Parses `trusted_root.json`. Keys of types this verifier cannot use are kept but
    /// unusable; malformed base64 or timestamps are errors.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeylessError> {
        let bad = |what: String| KeylessError::TrustedRoot(what);
        let raw: RawRoot = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(mt) = &raw.media_type
            && !mt.starts_with(MEDIA_TYPE_PREFIX)
        {
            return Err(bad(format!("unexpected mediaType '{mt}'")));
        }
        let logs = |logs: Vec<RawLog>, kind: &str| -> Result<Vec<LogKey>, KeylessError> {
            logs.into_iter()
                .map(|l| {
                    let spki_der = B64
                        .decode(&l.public_key.raw_bytes)
                        .map_err(|e| bad(format!("{kind} {}: publicKey: {e}", l.base_url)))?;
                    Ok(LogKey {
                        log_id: key_id(&spki_der),
                        key: PublicKey::from_spki_der(&spki_der).ok(),
                        spki_der,
                        valid_for: range(l.public_key.valid_for.as_ref())
                            .map_err(|e| bad(format!("{kind} {}: {e}", l.base_url)))?,
                        base_url: l.base_url,
                    })
                })
                .collect()
        };
        let tlogs = logs(raw.tlogs, "tlog")?;
        let ctlogs = logs(raw.ctlogs, "ctlog")?;
        let certificate_authorities = raw
            .certificate_authorities
            .into_iter()
            .map(|ca| {
                let chain_der = ca
                    .cert_chain
                    .certificates
                    .iter()
                    .map(|c| B64.decode(&c.raw_bytes))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(format!("certificate authority {}: {e}", ca.uri)))?;
                if chain_der.is_empty() {
                    return Err(bad(format!(
                        "certificate authority {} has no certificates",
                        ca.uri
                    )));
                }
                Ok(CertificateAuthority {
                    valid_for: range(ca.valid_for.as_ref())
                        .map_err(|e| bad(format!("certificate authority {}: {e}", ca.uri)))?,
                    chain_der,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tlogs,
            ctlogs,
            certificate_authorities,
        })
    }

    /// The Rekor key whose log id is `log_id`.
    pub(crate) fn tlog(&self, log_id: &[u8]) -> Option<&LogKey> {
        self.tlogs.iter().find(|l| l.log_id.as_slice() == log_id)
    }
}

fn range(r: Option<&RawRange>) -> Result<TimeRange, String> {
    let parse = |s: &Option<String>| -> Result<Option<i64>, String> {
        s.as_deref()
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp())
                    .map_err(|e| format!("validFor time '{s}': {e}"))
            })
            .transpose()
    };
    Ok(match r {
        None => TimeRange {
            start: None,
            end: None,
        },
        Some(r) => TimeRange {
            start: parse(&r.start)?,
            end: parse(&r.end)?,
        },
    })
}

//! The fleet's site-keys file: which public key each site signs its log and its exports with.
//! The operator collects one line per site (`fleetlet audit site-key` prints it on the site)
//! and keeps the file with the fleet; reports trust an export only if it is signed by the key
//! listed for the site it claims to come from.
//!
//! Format: one line per site, `<site> <base64 DER SubjectPublicKeyInfo>`; blank lines and lines
//! starting with `#` are ignored. The key is the bare DER (not PEM) so that a site is one line
//! that survives copying from a terminal.

use base64::Engine as _;
use fleetlet_verify::cosign::TrustedKey;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteKeysError {
    #[error("line {line}: expected `<site> <base64 public key>`, found {found:?}")]
    Syntax { line: usize, found: String },
    #[error("line {line}: {site:?} is not a site name ({reason})")]
    SiteName {
        line: usize,
        site: String,
        reason: String,
    },
    #[error("line {line}: the key of site {site} is not base64: {detail}")]
    Base64 {
        line: usize,
        site: String,
        detail: String,
    },
    #[error("line {line}: the key of site {site} is not a usable public key: {detail}")]
    Key {
        line: usize,
        site: String,
        detail: String,
    },
    #[error("line {line}: site {site} is listed again (first on line {first})")]
    Duplicate {
        line: usize,
        site: String,
        first: usize,
    },
}

/// The parsed site-keys file: site name → its public key.
#[derive(Debug, Clone, Default)]
pub struct SiteKeys {
    keys: BTreeMap<String, (TrustedKey, usize)>,
}

impl SiteKeys {
    /// Parses the text of a site-keys file. Errors name the 1-based line.
    pub fn parse(text: &str) -> Result<SiteKeys, SiteKeysError> {
        let mut keys: BTreeMap<String, (TrustedKey, usize)> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let [site, encoded] = fields[..] else {
                return Err(SiteKeysError::Syntax {
                    line,
                    found: trimmed.chars().take(80).collect(),
                });
            };
            fleetlet_core::model::check_dns_label(site).map_err(|reason| {
                SiteKeysError::SiteName {
                    line,
                    site: site.to_string(),
                    reason,
                }
            })?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| SiteKeysError::Base64 {
                    line,
                    site: site.to_string(),
                    detail: e.to_string(),
                })?;
            let key = key_from_der(site, &der).map_err(|detail| SiteKeysError::Key {
                line,
                site: site.to_string(),
                detail,
            })?;
            if let Some((_, first)) = keys.get(site) {
                return Err(SiteKeysError::Duplicate {
                    line,
                    site: site.to_string(),
                    first: *first,
                });
            }
            keys.insert(site.to_string(), (key, line));
        }
        Ok(SiteKeys { keys })
    }

    /// The key listed for `site`.
    pub fn get(&self, site: &str) -> Option<&TrustedKey> {
        self.keys.get(site).map(|(key, _)| key)
    }

    /// The sites listed, in name order.
    pub fn sites(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The site-keys line of `site` with `key` (what `fleetlet audit site-key` prints).
pub fn site_key_line(site: &str, key: &TrustedKey) -> String {
    format!(
        "{site} {}",
        base64::engine::general_purpose::STANDARD.encode(&key.spki_der)
    )
}

/// A public key from its DER SubjectPublicKeyInfo, checked as [`TrustedKey::from_pem`] checks
/// (only ECDSA P-256 and Ed25519), which is the one constructor it has.
fn key_from_der(name: &str, der: &[u8]) -> Result<TrustedKey, String> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    let key = TrustedKey::from_pem(name, pem.as_bytes()).map_err(|e| e.to_string())?;
    // PEM decoding ignores what follows the DER; the listed bytes must be exactly the key.
    if key.spki_der != der {
        return Err("trailing bytes after the key".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetlet_verify::cosign::SigningKey;

    fn public(key: &SigningKey) -> TrustedKey {
        TrustedKey::from_pem("k", key.public_pem().unwrap().as_bytes()).unwrap()
    }

    #[test]
    fn lines_round_trip_and_errors_name_the_line() {
        let (a, b) = (
            public(&SigningKey::generate().unwrap()),
            public(&SigningKey::generate().unwrap()),
        );
        let text = format!(
            "# fleet site keys\n\n{}\n  {}  \n",
            site_key_line("edge-1", &a),
            site_key_line("edge-2", &b)
        );
        let keys = SiteKeys::parse(&text).unwrap();
        assert_eq!(keys.sites().collect::<Vec<_>>(), ["edge-1", "edge-2"]);
        assert_eq!(keys.get("edge-1").unwrap().spki_der, a.spki_der);
        assert_eq!(keys.get("edge-2").unwrap().fingerprint(), b.fingerprint());
        assert!(keys.get("edge-3").is_none());

        let line_a = site_key_line("edge-1", &a);
        let key_a = line_a.split_once(' ').unwrap().1;
        type Expect = Box<dyn Fn(&SiteKeysError) -> bool>;
        let cases: Vec<(String, Expect)> = vec![
            (
                "edge-1\n".into(),
                Box::new(|e| matches!(e, SiteKeysError::Syntax { line: 1, .. })),
            ),
            (
                format!("# c\n{line_a} extra\n"),
                Box::new(|e| matches!(e, SiteKeysError::Syntax { line: 2, .. })),
            ),
            (
                format!("Edge_1 {key_a}\n"),
                Box::new(|e| matches!(e, SiteKeysError::SiteName { line: 1, .. })),
            ),
            (
                "edge-1 not*base64\n".into(),
                Box::new(|e| matches!(e, SiteKeysError::Base64 { line: 1, .. })),
            ),
            (
                "edge-1 aGVsbG8=\n".into(),
                Box::new(|e| matches!(e, SiteKeysError::Key { line: 1, .. })),
            ),
            (
                format!("{line_a}\n\n{line_a}\n"),
                Box::new(|e| {
                    matches!(
                        e,
                        SiteKeysError::Duplicate {
                            line: 3,
                            first: 1,
                            ..
                        }
                    )
                }),
            ),
        ];
        for (text, expect) in cases {
            let err = SiteKeys::parse(&text).unwrap_err();
            assert!(expect(&err), "{text:?}: {err:?}");
            assert!(err.to_string().starts_with("line "), "{err}");
        }
    }
}

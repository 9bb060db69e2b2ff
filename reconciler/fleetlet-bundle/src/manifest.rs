//! `manifest.json`: what a bundle holds, signed by the operator. It is canonical JSON (compact,
//! object keys sorted, entries sorted by path) so that the same inputs give the same bytes and
//! therefore the same signature input.

use crate::{BundleError, path};
use fleetlet_core::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// The only format version this crate writes and reads.
pub const VERSION: u64 = 1;
/// `kind`, so that a manifest of something else is never mistaken for a bundle's.
pub const KIND: &str = "fleetlet.dev/bundle";
/// Names of the head entries, in the order they open the tar.
pub const MANIFEST_JSON: &str = "manifest.json";
pub const MANIFEST_SIG: &str = "manifest.sig";
pub const MANIFEST_KEY: &str = "manifest.key";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u64,
    pub kind: String,
    /// What the caller says the bundle is for (sites, commits, base bundle…): opaque here.
    pub meta: Value,
    /// Every file of the bundle, sorted by path, no duplicates.
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Relative, normalized, `/`-separated.
    pub path: String,
    /// Serialized as `sha256:<hex>`.
    pub sha256: Digest,
    pub size: u64,
}

impl Manifest {
    /// The canonical bytes: what is signed and stored as `manifest.json`.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("a manifest always serializes");
        serde_json::to_vec(&canonical(value)).expect("a JSON value always serializes")
    }

    /// Parses and checks a manifest: version, kind, and that the entries are sorted, unique,
    /// valid paths, with no file doubling as another's directory.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let invalid = |detail: String| BundleError::ManifestInvalid { detail };
        // The version first, on its own, so a future format is reported as such rather than
        // as whatever field it added.
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<u64>,
        }
        let versioned: Versioned =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        match versioned.version {
            Some(VERSION) => {}
            Some(version) => return Err(BundleError::UnsupportedVersion { version }),
            None => return Err(invalid("no version".into())),
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if manifest.kind != KIND {
            return Err(invalid(format!(
                "kind is {:?}, expected {KIND:?}",
                manifest.kind
            )));
        }
        manifest.check_entries()?;
        Ok(manifest)
    }

    pub(crate) fn check_entries(&self) -> Result<(), BundleError> {
        for pair in self.entries.windows(2) {
            if pair[0].path >= pair[1].path {
                return Err(BundleError::ManifestInvalid {
                    detail: format!(
                        "entries are not sorted and unique by path ({} before {})",
                        pair[0].path, pair[1].path
                    ),
                });
            }
        }
        let files: HashSet<&str> = self.entries.iter().map(|e| e.path.as_str()).collect();
        for entry in &self.entries {
            path::validate(entry.path.as_bytes())?;
            if let Some(dir) = path::ancestors(&entry.path).find(|d| files.contains(d)) {
                return Err(BundleError::PathConflict {
                    path: entry.path.clone(),
                    other: dir.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The sum of the entry sizes (saturating: an absurd manifest is simply too large).
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.size))
    }

    pub fn entry(&self, path: &str) -> Option<&ManifestEntry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// `value` with every object's keys in sorted order, whatever map serde_json was built with
/// (the `preserve_order` feature, unified in from elsewhere, would keep insertion order).
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut pairs: Vec<(String, Value)> = map.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            version: VERSION,
            kind: KIND.into(),
            meta: json!({"z": 1, "a": {"y": [1, {"c": 2, "b": 3}], "x": null}}),
            entries: paths
                .iter()
                .map(|p| ManifestEntry {
                    path: p.to_string(),
                    sha256: Digest::of(p.as_bytes()),
                    size: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_round_trips() {
        let m = manifest(&["a", "b/c"]);
        let bytes = m.to_canonical_json();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"entries":[{"path":"a","sha256":"sha256:"#),
            "{text}"
        );
        assert!(text.contains(r#""meta":{"a":{"x":null,"y":[1,{"b":3,"c":2}]},"z":1}"#));
        assert!(text.ends_with(r#""version":1}"#), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn rejects_malformed_manifests() {
        let cases = [
            (manifest(&["b", "a"]), "not sorted"),
            (manifest(&["a", "a"]), "not sorted"),
            (manifest(&["a", "a/b"]), "cannot also be a directory"),
            (manifest(&["../x"]), "leaves the bundle"),
            (manifest(&["manifest.json"]), "reserved"),
        ];
        for (m, want) in cases {
            let err = Manifest::parse(&m.to_canonical_json())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
        let mut m = manifest(&["a"]);
        m.kind = "other".into();
        assert!(Manifest::parse(&m.to_canonical_json()).is_err());
        m.version = 2;
        assert!(matches!(
            Manifest::parse(&m.to_canonical_json()),
            Err(BundleError::UnsupportedVersion { version: 2 })
        ));
        assert!(
            Manifest::parse(
                br#"{"version":1,"kind":"fleetlet.dev/bundle","meta":null,"entries":[],"extra":1}"#
            )
            .is_err()
        );
    }
}

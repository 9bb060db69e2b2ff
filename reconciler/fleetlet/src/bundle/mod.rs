//! Sync bundles, the air-gap path of the cycle's observe step: `fleetlet bundle create` packs
//! a release (Git objects, the artifacts of the selected sites with their signatures) into one
//! signed file; `fleetlet bundle import` (and the agent's inbox) checks it against the site's
//! trust roots and publishes it to the site's Git mirror and artifact store, from which the
//! agent reconciles as from Git; `fleetlet bundle export-status` carries the site's status back.
//!
//! The container format (signed manifest, deterministic tar+zstd, hostile-input checks) is
//! `fleetlet-bundle`'s; this module decides what goes in it and what an import publishes.
//!
//! ```text
//! manifest.json / .sig / .key     signed list of every entry (fleetlet-bundle)
//! git/release.pack                Git objects to reach the release (after `since` for a delta)
//! oci/oci-layout, oci/index.json  OCI layout: every artifact tagged `registry/repo:tag@digest`,
//! oci/blobs/sha256/<hex>          signatures as `sha256-<hex>.sig`, referrers as `sha256-<hex>`
//! ```

pub mod attempt;
pub mod cli;
pub mod create;
pub mod import;
pub mod inspect;
pub mod status;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const PACK_ENTRY: &str = "git/release.pack";
pub const OCI_DIR: &str = "oci";
pub const BLOB_PREFIX: &str = "oci/blobs/sha256/";

/// `meta` of a bundle's signed manifest: what the bundle is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Meta {
    Release(ReleaseMeta),
    Status(StatusMeta),
}

/// A release for one or more sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseMeta {
    /// The sites the bundle was made for; an import on any other site is refused.
    pub sites: Vec<String>,
    /// The label selector the sites were chosen by, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The branch the release is published under on the site (`refs/heads/main`).
    pub reference: String,
    pub commit: String,
    pub summary: String,
    pub commit_time: i64,
    /// A delta's base commit: the site must have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Annotated tags on the commit carried in the pack (release tags, rollback instructions).
    #[serde(default)]
    pub tags: Vec<TagMeta>,
    pub artifacts: Vec<ArtifactMeta>,
    /// Blobs left out because the site has them (delta or site inventory).
    #[serde(default)]
    pub omitted_blobs: usize,
    /// The platform images were picked for (`linux/amd64`).
    pub platform: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagMeta {
    pub name: String,
    pub object: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactMeta {
    /// As the fleet repo names it.
    pub reference: String,
    /// Resolved to a digest when the bundle was made.
    pub pinned: String,
    pub sites: Vec<String>,
    /// Signature manifests carried for it (cosign `.sig` and sigstore bundles).
    pub signatures: usize,
}

/// A site's status carried back by a technician.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusMeta {
    pub site: String,
    /// The site key's public half (PEM): the file is signed with it.
    pub site_key: String,
    pub created_at: i64,
    /// Records from this time on (Unix seconds); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// `manifest.json` of a bundle or status file, for the schema other tools read it by (the
/// container crate owns the type; this mirrors it with the `meta` this binary writes).
#[derive(JsonSchema)]
#[schemars(title = "BundleManifest")]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Only its schema is used.
pub struct ManifestSchema {
    /// Format version: 1.
    version: u64,
    /// Always `fleetlet.dev/bundle`.
    kind: String,
    meta: Meta,
    /// Every other entry of the tar, sorted by path; the manifest is signed over its exact
    /// bytes (`manifest.sig`, base64), by the key `manifest.key` names.
    entries: Vec<EntrySchema>,
}

#[derive(JsonSchema)]
#[allow(dead_code)] // Only its schema is used.
struct EntrySchema {
    /// Relative, `/`-separated.
    path: String,
    /// `sha256:<64 hex>`.
    sha256: String,
    size: u64,
}

impl Meta {
    pub fn parse(value: &serde_json::Value) -> Result<Meta, String> {
        serde_json::from_value(value.clone())
            .map_err(|e| format!("the bundle's manifest does not describe a fleetlet bundle: {e}"))
    }
}

/// The digest a blob entry's path names (`oci/blobs/sha256/<hex>`), if it is one.
pub fn blob_digest(path: &str) -> Option<fleetlet_core::Digest> {
    let hex = path.strip_prefix(BLOB_PREFIX)?;
    format!("sha256:{hex}").parse().ok()
}

/// Human-readable size.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_unknown_types() {
        let meta = Meta::Status(StatusMeta {
            site: "s1".into(),
            site_key: "PEM".into(),
            created_at: 5,
            since: None,
        });
        let value = serde_json::to_value(&meta).unwrap();
        assert_eq!(value["type"], "status");
        assert_eq!(Meta::parse(&value).unwrap(), meta);
        for bad in [
            serde_json::json!({"type": "other"}),
            serde_json::json!({"site": "s1"}),
            serde_json::json!(null),
        ] {
            assert!(Meta::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blob_paths_name_digests() {
        let hex = "a".repeat(64);
        let cases = [
            (format!("oci/blobs/sha256/{hex}"), true),
            (format!("oci/blobs/sha256/{}", &hex[1..]), false),
            ("oci/index.json".to_string(), false),
            (format!("oci/blobs/sha512/{hex}"), false),
        ];
        for (path, ok) in cases {
            assert_eq!(blob_digest(&path).is_some(), ok, "{path}");
        }
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}

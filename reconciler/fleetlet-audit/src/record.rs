//! The record format (version 1): what one line of a site's audit log is. The types here are
//! the documented contract other tools read (`schemas/audit-record.schema.json`); they are
//! filled from the engine's events at the edge, never shared with the engine's internals.
//!
//! A log is JSON Lines. Each line is an entry (`"type": "entry"`) or a checkpoint
//! (`"type": "checkpoint"`). Entries form a chain: `seq` counts from 1, `prev` is the `hash` of
//! the entry before (64 zeros for the first), and `hash` is the sha256 of the entry's
//! canonical JSON without `hash` (object keys sorted, no whitespace). A checkpoint signs
//! `{v, seq, head, time, site, key}` (canonical JSON, without `signature`) with the site key:
//! whoever can edit the log afterwards cannot recompute those signatures.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// `prev` of the first entry.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Who signed a commit or an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signer {
    /// `key`, `keyless`, `ssh` or `openpgp`.
    pub kind: String,
    /// The key's name in the site's policy, the certificate identity, or the SSH principal.
    pub identity: String,
    /// Fingerprint, issuer or transparency-log detail, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Pinned reference (`registry/repo@sha256:…`), or the repository path of a component
    /// carried in Git.
    pub reference: String,
    /// `sha256:<hex>`.
    pub digest: String,
    #[serde(default)]
    pub signers: Vec<Signer>,
    /// Digests of the signature manifests it was verified with (kept in the site's store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub material: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub id: String,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// A release was applied and runs.
    Applied,
    /// A release was refused or held (verification, validation, a failed pull or prepare).
    Rejected,
    /// The site went back to an earlier release (`commit`) from `from`.
    RolledBack,
    /// Changes made on the cluster to applied objects were undone.
    DriftCorrected,
    /// Objects no release names any more were deleted.
    Pruned,
}

/// One reconcile outcome, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The agent's number for the event: the log holds each once, however often a crash
    /// made the agent offer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
    /// Unix seconds.
    pub time: i64,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// RolledBack: the release left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Annotated tags at the commit (release tags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commit_signers: Vec<Signer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Workload>,
    /// Rejected: the cycle's stage that refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// DriftCorrected, Pruned: the objects concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
}

impl Event {
    /// An event that says nothing yet but what happened and when.
    pub fn new(time: i64, action: Action) -> Self {
        Event {
            event_id: None,
            time,
            action,
            commit: None,
            reference: None,
            from: None,
            tags: vec![],
            commit_signers: vec![],
            workloads: vec![],
            stage: None,
            reason: None,
            objects: vec![],
        }
    }
}

/// An event in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Format version: 1.
    pub v: u32,
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    pub site: String,
    #[serde(flatten)]
    pub event: Event,
    /// `hash` of the entry before; [`GENESIS`] for the first.
    pub prev: String,
    /// sha256 of this entry's canonical JSON without `hash`.
    pub hash: String,
}

/// The chain head signed with the site key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub v: u32,
    /// The last entry covered.
    pub seq: u64,
    /// That entry's hash.
    pub head: String,
    /// Unix seconds.
    pub time: i64,
    pub site: String,
    /// Fingerprint of the site key (`SHA256:…`).
    pub key: String,
    /// Base64 signature over the canonical JSON of the other fields.
    pub signature: String,
}

/// One line of a fleetlet site's audit log (JSON Lines, format version 1): an entry of the
/// hash chain, or a checkpoint signing its head. Entries: `seq` counts from 1 without gaps;
/// `prev` is the `hash` of the entry before (`sha256:` and 64 zeros for the first); `hash` is
/// `sha256:<hex>` of the entry's canonical JSON (object keys sorted, no whitespace, the
/// `type` field included) without `hash`. Checkpoints: `signature` is base64 of the site
/// key's ECDSA P-256 (DER) or Ed25519 signature over the canonical JSON of the checkpoint
/// without `signature`; `key` is the key's fingerprint (`SHA256:` and the first 16 hex digits
/// of the sha256 of its SubjectPublicKeyInfo); `head` is the hash of entry `seq`, the entry
/// just before it in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
#[schemars(title = "AuditRecord")]
// One line at a time is held; boxing the entry would buy nothing but an allocation per line.
#[allow(clippy::large_enum_variant)]
pub enum Line {
    Entry(Entry),
    Checkpoint(Checkpoint),
}

/// `value` as canonical JSON: object keys sorted, no whitespace. Written directly (no
/// intermediate tree), as verifying a log hashes every entry.
pub fn canonical(value: &Value, out: &mut Vec<u8>) {
    canonical_skipping(value, None, out);
}

/// [`canonical`], leaving out the top-level field `skip` (without copying the object).
fn canonical_skipping(value: &Value, skip: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let mut first = true;
            let mut field = |k: &str, v: &Value, out: &mut Vec<u8>| {
                if Some(k) == skip {
                    return;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                write_str(k, out);
                out.push(b':');
                canonical_skipping(v, None, out);
            };
            // serde_json's map is sorted already, unless its `preserve_order` feature is on.
            if map.keys().is_sorted() {
                for (k, v) in map {
                    field(k, v, out);
                }
            } else {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_unstable();
                for k in keys {
                    field(k, &map[k], out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_skipping(item, None, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_str(s, out),
        other => serde_json::to_writer(&mut *out, other).expect("a scalar serializes"),
    }
}

/// A JSON string exactly as serde_json writes it: most need no escape and are copied as they
/// are; the others go through serde_json (which escapes `"`, `\` and control characters).
fn write_str(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("a string serializes");
    }
}

/// sha256 of the canonical JSON of `value` with the field `without` left out, as `sha256:<hex>`.
pub fn hash_without(value: &Value, without: &str) -> String {
    let mut bytes = Vec::with_capacity(1024);
    format_hash(&digest_without(value, without, &mut bytes))
}

/// The sha256 of `value`'s canonical JSON without `without`, using `scratch` for the bytes.
pub(crate) fn digest_without(value: &Value, without: &str, scratch: &mut Vec<u8>) -> [u8; 32] {
    scratch.clear();
    canonical_skipping(value, Some(without), scratch);
    Sha256::digest(&scratch[..]).into()
}

/// `sha256:<hex>`.
pub(crate) fn format_hash(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// The canonical bytes of `value` without the field `without` (what a checkpoint signs).
pub fn canonical_without(value: &Value, without: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    canonical_skipping(value, Some(without), &mut bytes);
    bytes
}

/// An entry as one flat object, as it is written: deserializing [`Entry`] itself goes through
/// serde's buffering for `flatten` (and for [`Line`]'s tag), which dominated verification.
/// Same fields, same defaults, unknown fields ignored alike (the `From` below stops compiling
/// when [`Event`] gains a field; a test compares both parses of an entry with every field set).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatEntry {
    v: u32,
    seq: u64,
    site: String,
    #[serde(default)]
    event_id: Option<u64>,
    time: i64,
    action: Action,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    commit_signers: Vec<Signer>,
    #[serde(default)]
    workloads: Vec<Workload>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    objects: Vec<String>,
    prev: String,
    hash: String,
}

impl From<FlatEntry> for Entry {
    fn from(f: FlatEntry) -> Entry {
        Entry {
            v: f.v,
            seq: f.seq,
            site: f.site,
            event: Event {
                event_id: f.event_id,
                time: f.time,
                action: f.action,
                commit: f.commit,
                reference: f.reference,
                from: f.from,
                tags: f.tags,
                commit_signers: f.commit_signers,
                workloads: f.workloads,
                stage: f.stage,
                reason: f.reason,
                objects: f.objects,
            },
            prev: f.prev,
            hash: f.hash,
        }
    }
}

/// The entry of an entry line, parsed straight from its text (its `type` is not looked at).
pub(crate) fn entry_from_slice(text: &[u8]) -> Result<Entry, serde_json::Error> {
    serde_json::from_slice::<FlatEntry>(text).map(Entry::from)
}

/// The record of a parsed line, taking the strings out of `value` rather than copying them.
pub(crate) fn line_from_value(value: Value) -> Result<Line, serde_json::Error> {
    use serde::de::Error as _;
    match value.get("type").map(|t| t.as_str()) {
        Some(Some("entry")) => Ok(Line::Entry(FlatEntry::deserialize(value)?.into())),
        Some(Some("checkpoint")) => Ok(Line::Checkpoint(Checkpoint::deserialize(value)?)),
        Some(Some(other)) => Err(serde_json::Error::unknown_variant(
            other,
            &["entry", "checkpoint"],
        )),
        Some(None) => Err(serde_json::Error::custom("`type` is not a string")),
        None => Err(serde_json::Error::missing_field("type")),
    }
}

impl Entry {
    /// Chains `event` after `prev` as entry `seq` of `site`.
    pub fn chain(site: &str, seq: u64, prev: &str, event: Event) -> Entry {
        let mut entry = Entry {
            v: VERSION,
            seq,
            site: site.to_string(),
            event,
            prev: prev.to_string(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// What `hash` must be.
    pub fn compute_hash(&self) -> String {
        /// The entry as its line has it (with `type`), without cloning it into a [`Line`].
        #[derive(Serialize)]
        struct Tagged<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            entry: &'a Entry,
        }
        let tagged = Tagged {
            kind: "entry",
            entry: self,
        };
        let json = serde_json::to_vec(&tagged).expect("an entry serializes");
        let mut canonical = Vec::with_capacity(json.len());
        if crate::rawcanon::canonical_into(&json, b"hash", &mut canonical, &mut Default::default())
            .is_some()
        {
            return format_hash(&Sha256::digest(&canonical).into());
        }
        // A string that needs escaping: the exact way.
        let value: Value = serde_json::from_slice(&json).expect("written just now");
        hash_without(&value, "hash")
    }
}

impl Line {
    /// The line as written to a log (no trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": [1, {"z": null, "a": "x\"y"}], "a": 1.5, "c": {"y": true, "x": []}});
        let mut out = Vec::new();
        canonical(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1.5,"b":[1,{"a":"x\"y","z":null}],"c":{"x":[],"y":true}}"#
        );
    }

    #[test]
    fn an_entry_hashes_everything_but_its_hash() {
        let event = Event {
            commit: Some("c1".into()),
            reference: Some("refs/heads/main".into()),
            ..Event::new(1_700_000_000, Action::Applied)
        };
        let e = Entry::chain("s1", 1, GENESIS, event.clone());
        assert!(e.hash.starts_with("sha256:") && e.hash.len() == 71);
        assert_eq!(e.compute_hash(), e.hash);
        let mut edited = e.clone();
        edited.event.commit = Some("c2".into());
        assert_ne!(edited.compute_hash(), e.hash);
        let mut relinked = e.clone();
        relinked.prev = "sha256:1".into();
        assert_ne!(relinked.compute_hash(), e.hash);
        // The written line parses back to the same entry, and hashes the same from its JSON.
        let line = Line::Entry(e.clone()).to_json();
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(hash_without(&value, "hash"), e.hash);
        assert_eq!(
            serde_json::from_value::<Line>(value).unwrap(),
            Line::Entry(e)
        );
    }

    #[test]
    fn the_flat_parse_reads_what_the_derived_one_reads() {
        let signer = |n: &str| Signer {
            kind: "key".into(),
            identity: n.into(),
            detail: Some(format!("{n} detail")),
        };
        let full = Event {
            event_id: Some(7),
            time: -5,
            action: Action::RolledBack,
            commit: Some("c1".into()),
            reference: Some("refs/heads/main".into()),
            from: Some("c2".into()),
            tags: vec!["v1".into(), "v1.0".into()],
            commit_signers: vec![signer("alice")],
            workloads: vec![Workload {
                id: "app/web".into(),
                artifacts: vec![Artifact {
                    reference: "r@sha256:1".into(),
                    digest: "sha256:1".into(),
                    signers: vec![signer("ci"), signer("qa")],
                    material: vec!["sha256:2".into()],
                }],
            }],
            stage: Some("health".into()),
            reason: Some("failed".into()),
            objects: vec!["Deployment/x/y".into()],
        };
        let sparse = Event {
            commit: None,
            reference: None,
            from: None,
            tags: vec![],
            commit_signers: vec![],
            workloads: vec![],
            stage: None,
            reason: None,
            objects: vec![],
            ..full.clone()
        };
        for event in [full, sparse] {
            let json = Line::Entry(Entry::chain("s1", 3, GENESIS, event)).to_json();
            let derived: Line = serde_json::from_slice(&json).unwrap();
            let value: Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(Line::Entry(entry_from_slice(&json).unwrap()), derived);
            assert_eq!(line_from_value(value).unwrap(), derived);
        }
    }
}

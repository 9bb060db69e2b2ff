//! Checking a log: one streaming pass that recomputes every entry's hash, follows the chain
//! (`seq` without gaps, `prev` linking to the entry before) and checks every checkpoint's
//! signature against the site key. The first problem stops the pass and names the line and
//! the entry: a log is either intact up to its last line or it is not.

use crate::rawcanon::Stacks;
use crate::record::{
    Checkpoint, Entry, GENESIS, Line, canonical_without, digest_without, entry_from_slice,
    format_hash, line_from_value,
};
use base64::Engine as _;
use fleetlet_verify::cosign::TrustedKey;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::io::{BufRead, Read};

/// Longest record accepted (entries are a few KiB; a release of many workloads, a few
/// hundred).
pub const MAX_LINE: u64 = 4 << 20;

/// What an intact log holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verified {
    pub site: Option<String>,
    pub entries: u64,
    pub checkpoints: u64,
    /// Hash of the last entry ([`GENESIS`] for an empty log).
    pub head: String,
    pub last_checkpoint: Option<Checkpoint>,
    /// Time of the last entry or checkpoint: when the site was last heard from.
    pub last_time: Option<i64>,
    /// Entries after the last checkpoint: intact as far as the chain shows, but not yet
    /// signed (someone able to rewrite the file could have rewritten them consistently).
    pub unanchored: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("line {line}: not a complete record (a truncated or damaged log): {detail}")]
    Truncated { line: u64, detail: String },
    #[error(
        "line {line}: entry {seq} was edited: it claims hash {claimed} but its content hashes to {computed}"
    )]
    Edited {
        line: u64,
        seq: u64,
        claimed: String,
        computed: String,
    },
    #[error("line {line}: entry {found} follows entry {last}: entry {} is missing (removed)", last + 1)]
    Removed { line: u64, last: u64, found: u64 },
    #[error("line {line}: entry {found} comes after entry {last}: entries are out of order")]
    Reordered { line: u64, last: u64, found: u64 },
    #[error(
        "line {line}: entry {seq} does not link to the entry before it (prev {prev}, but that entry's hash is {expected}): an entry before it was changed or replaced"
    )]
    BrokenLink {
        line: u64,
        seq: u64,
        prev: String,
        expected: String,
    },
    #[error("line {line}: checkpoint at entry {seq} is forged or out of place: {why}")]
    ForgedCheckpoint { line: u64, seq: u64, why: String },
    #[error("line {line}: checkpoint signed by key {found}, not by the site key {expected}")]
    UnknownKey {
        line: u64,
        found: String,
        expected: String,
    },
    #[error("line {line}: a record of site {found} in the log of site {expected}")]
    OtherSite {
        line: u64,
        found: String,
        expected: String,
    },
    #[error(
        "line {line}: a record of format version {v}; this fleetlet reads version {}",
        crate::record::VERSION
    )]
    Version { line: u64, v: u32 },
    #[error("reading the log: {0}")]
    Io(String),
}

impl Problem {
    /// The 1-based line the problem is on.
    pub fn line(&self) -> Option<u64> {
        match self {
            Problem::Truncated { line, .. }
            | Problem::Edited { line, .. }
            | Problem::Removed { line, .. }
            | Problem::Reordered { line, .. }
            | Problem::BrokenLink { line, .. }
            | Problem::ForgedCheckpoint { line, .. }
            | Problem::UnknownKey { line, .. }
            | Problem::OtherSite { line, .. }
            | Problem::Version { line, .. } => Some(*line),
            Problem::Io(_) => None,
        }
    }
}

/// Verifies the log read from `reader`; checkpoints must be signed by `key` (when `None`,
/// their signatures are checked against nothing and the log counts as unanchored).
pub fn verify(reader: impl BufRead, key: Option<&TrustedKey>) -> Result<Verified, Problem> {
    verify_with(reader, key, |_| {})
}

/// [`verify`], calling `visit` with every entry as it is checked (a report collects what it
/// needs without holding the log).
pub fn verify_with(
    mut reader: impl BufRead,
    key: Option<&TrustedKey>,
    mut visit: impl FnMut(&Entry),
) -> Result<Verified, Problem> {
    let mut out = Verified {
        head: GENESIS.to_string(),
        ..Verified::default()
    };
    let mut last_seq = 0u64;
    let mut line_no = 0u64;
    let mut buf = Vec::with_capacity(1024);
    // The canonical bytes of the entry being hashed, reused from line to line.
    let mut canonical = Vec::with_capacity(1024);
    let mut stacks = Stacks::default();
    loop {
        buf.clear();
        // Capped: a hostile (even validly signed) export must not make one line take all
        // the memory there is.
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| Problem::Io(e.to_string()))?;
        if n as u64 > MAX_LINE {
            return Err(Problem::Truncated {
                line: line_no + 1,
                detail: format!("a line longer than {MAX_LINE} bytes"),
            });
        }
        if n == 0 {
            break;
        }
        line_no += 1;
        let truncated = |detail: String| Problem::Truncated {
            line: line_no,
            detail,
        };
        // Every record ends with a newline: a last line without one was cut short.
        if buf.last() != Some(&b'\n') {
            return Err(truncated("the last line has no end".into()));
        }
        let text = &buf[..buf.len() - 1];
        if text.is_empty() {
            continue;
        }
        let Parsed {
            record,
            hashed,
            signed,
        } = parse(text, key.is_some(), &mut canonical, &mut stacks).map_err(truncated)?;
        let (site, v) = match &record {
            Line::Entry(e) => (&e.site, e.v),
            Line::Checkpoint(c) => (&c.site, c.v),
        };
        // A record of another format version may hash or sign differently: not ours to judge.
        if v != crate::record::VERSION {
            return Err(Problem::Version { line: line_no, v });
        }
        match &out.site {
            None => out.site = Some(site.clone()),
            Some(expected) if expected != site => {
                return Err(Problem::OtherSite {
                    line: line_no,
                    found: site.clone(),
                    expected: expected.clone(),
                });
            }
            Some(_) => {}
        }
        match record {
            Line::Entry(entry) => {
                if entry.seq <= last_seq {
                    return Err(Problem::Reordered {
                        line: line_no,
                        last: last_seq,
                        found: entry.seq,
                    });
                }
                if entry.seq != last_seq + 1 {
                    // Missing here: removed, or moved further down (reordered)?
                    if later_has_seq(&mut reader, last_seq + 1) {
                        return Err(Problem::Reordered {
                            line: line_no,
                            last: last_seq,
                            found: entry.seq,
                        });
                    }
                    return Err(Problem::Removed {
                        line: line_no,
                        last: last_seq,
                        found: entry.seq,
                    });
                }
                let computed = hashed.expect("hashed above");
                if !hash_is(&entry.hash, &computed) {
                    return Err(Problem::Edited {
                        line: line_no,
                        seq: entry.seq,
                        claimed: entry.hash,
                        computed: format_hash(&computed),
                    });
                }
                if entry.prev != out.head {
                    return Err(Problem::BrokenLink {
                        line: line_no,
                        seq: entry.seq,
                        prev: entry.prev,
                        expected: out.head,
                    });
                }
                last_seq = entry.seq;
                out.entries += 1;
                out.unanchored += 1;
                out.last_time = Some(
                    out.last_time
                        .map_or(entry.event.time, |t| t.max(entry.event.time)),
                );
                visit(&entry);
                out.head = entry.hash;
            }
            Line::Checkpoint(cp) => {
                let forged = |why: String| Problem::ForgedCheckpoint {
                    line: line_no,
                    seq: cp.seq,
                    why,
                };
                if cp.seq != last_seq || cp.head != out.head {
                    return Err(forged(format!(
                        "it signs entry {} with hash {}, but the log's head there is entry {last_seq} with hash {}",
                        cp.seq, cp.head, out.head
                    )));
                }
                if let Some(k) = key {
                    if cp.key != k.fingerprint() {
                        return Err(Problem::UnknownKey {
                            line: line_no,
                            found: cp.key.clone(),
                            expected: k.fingerprint(),
                        });
                    }
                    let signature = base64::engine::general_purpose::STANDARD
                        .decode(&cp.signature)
                        .map_err(|e| forged(format!("signature is not base64: {e}")))?;
                    let message = signed.as_deref().unwrap_or_default();
                    if !k.verifies(&signature, message) {
                        return Err(forged(
                            "the signature does not verify with the site key".into(),
                        ));
                    }
                    out.unanchored = 0;
                }
                out.checkpoints += 1;
                out.last_time = Some(out.last_time.map_or(cp.time, |t| t.max(cp.time)));
                out.last_checkpoint = Some(cp);
            }
        }
    }
    Ok(out)
}

/// A line's record, with what must be checked about it.
struct Parsed {
    record: Line,
    /// Entries: the sha256 of the canonical JSON without `hash`.
    hashed: Option<[u8; 32]>,
    /// Checkpoints, when a key is given: the canonical JSON without `signature`.
    signed: Option<Vec<u8>>,
}

/// Parses one line. Most take the fast way (canonical JSON from the bytes, the record parsed
/// straight into its type); a line outside its subset, or one that fails there, takes the
/// exact way through `Value`, which also words the errors.
fn parse(
    text: &[u8],
    want_signed: bool,
    scratch: &mut Vec<u8>,
    stacks: &mut Stacks,
) -> Result<Parsed, String> {
    scratch.clear();
    match crate::rawcanon::canonical_into(text, b"hash", scratch, stacks) {
        Some(b"entry") => {
            if let Ok(entry) = entry_from_slice(text) {
                return Ok(Parsed {
                    record: Line::Entry(entry),
                    hashed: Some(Sha256::digest(&scratch[..]).into()),
                    signed: None,
                });
            }
        }
        Some(b"checkpoint") => {
            if let Ok(cp) = serde_json::from_slice::<Checkpoint>(text) {
                let signed = if want_signed {
                    scratch.clear();
                    crate::rawcanon::canonical_into(text, b"signature", scratch, stacks)
                        .map(|_| Some(scratch.clone()))
                } else {
                    Some(None)
                };
                if let Some(signed) = signed {
                    return Ok(Parsed {
                        record: Line::Checkpoint(cp),
                        hashed: None,
                        signed,
                    });
                }
            }
        }
        _ => {}
    }
    // Parsed once; what is hashed or signed is taken from the tree before the record is moved
    // out of it.
    let value: Value = serde_json::from_slice::<Strict>(text)
        .map(|s| s.0)
        .map_err(|e| e.to_string())?;
    let (hashed, signed) = match value.get("type").and_then(Value::as_str) {
        Some("entry") => (Some(digest_without(&value, "hash", scratch)), None),
        Some("checkpoint") if want_signed => (None, Some(canonical_without(&value, "signature"))),
        _ => (None, None),
    };
    let record = line_from_value(value).map_err(|e| e.to_string())?;
    Ok(Parsed {
        record,
        hashed,
        signed,
    })
}

/// Whether `text` is `sha256:<hex>` of `digest` (lower-case hex, as written).
fn hash_is(text: &str, digest: &[u8; 32]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let Some(hex) = text.strip_prefix("sha256:") else {
        return false;
    };
    hex.len() == 64
        && hex.as_bytes().chunks_exact(2).zip(digest).all(|(pair, b)| {
            pair[0] == HEX[usize::from(b >> 4)] && pair[1] == HEX[usize::from(b & 15)]
        })
}

/// A JSON value that refuses duplicate object keys: with them, what one reader takes from a
/// line (the last `commit`, say) need not be what another does (the first), while the hash
/// covers only one of them.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

/// Whether an entry numbered `seq` comes later in the log (read to its end).
fn later_has_seq(reader: &mut impl BufRead, seq: u64) -> bool {
    #[derive(serde::Deserialize)]
    struct Seq {
        #[serde(rename = "type")]
        kind: String,
        seq: u64,
    }
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if let Ok(line) = serde_json::from_slice::<Seq>(buf.trim_ascii_end())
            && line.kind == "entry"
            && line.seq == seq
        {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Action, Event};
    use crate::{AuditLog, MemJournal};
    use fleetlet_verify::cosign::SigningKey;

    fn event(time: i64, action: Action, reason: Option<&str>) -> Event {
        Event {
            commit: Some("c0ffee".into()),
            reference: Some("refs/heads/main".into()),
            tags: vec!["v1".into()],
            reason: reason.map(String::from),
            ..Event::new(time, action)
        }
    }

    type Checked = (Line, Option<[u8; 32]>, Option<Vec<u8>>);

    /// The exact way alone, to compare the fast one with.
    fn exact(text: &[u8]) -> Result<Checked, String> {
        let value: Value = serde_json::from_slice::<Strict>(text)
            .map(|s| s.0)
            .map_err(|e| e.to_string())?;
        let (hashed, signed) = match value.get("type").and_then(Value::as_str) {
            Some("entry") => (Some(digest_without(&value, "hash", &mut Vec::new())), None),
            Some("checkpoint") => (None, Some(canonical_without(&value, "signature"))),
            _ => (None, None),
        };
        Ok((
            line_from_value(value).map_err(|e| e.to_string())?,
            hashed,
            signed,
        ))
    }

    #[test]
    fn the_fast_way_and_the_exact_way_agree() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("audit.jsonl");
        let key = SigningKey::generate().unwrap();
        let public = TrustedKey::from_pem("s", key.public_pem().unwrap().as_bytes()).unwrap();
        let mut log = AuditLog::open("s1", Box::new(MemJournal::default()), Some(&mirror)).unwrap();
        log.record(event(1, Action::Applied, None)).unwrap();
        // Escapes: this line takes the exact way.
        log.record(event(
            2,
            Action::Rejected,
            Some("a \"quote\",\na newline, \\ and ünï ✓"),
        ))
        .unwrap();
        log.record(event(3, Action::Applied, Some("plain ünïcödé ✓")))
            .unwrap();
        log.checkpoint(&key, 4).unwrap();
        let text = std::fs::read_to_string(&mirror).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(verify(text.as_bytes(), Some(&public)).unwrap().entries, 3);

        // Rewritten by another tool: keys in another order, spaces. Still the same entry.
        let mut v: Value = serde_json::from_str(&lines[0]).unwrap();
        let sorted = serde_json::to_string(&v).unwrap();
        lines[0] = sorted.replace("\":", "\" : ").replace(",\"", " ,\"");
        let relaid: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(verify(relaid.as_bytes(), Some(&public)).unwrap().entries, 3);

        let mut corpus: Vec<String> = lines.clone();
        v["unknown"] = serde_json::json!({"x": [1.5, -0, "\u{e9}", null]});
        corpus.push(serde_json::to_string(&v).unwrap());
        corpus.push(lines[0].replace("\"seq\" : 1", "\"seq\" : 1.0"));
        corpus.push(lines[0].replace("\"v\" : 1", "\"v\" : 1, \"v\" : 1"));
        corpus.push(lines[0].replace("\"type\" : \"entry\"", "\"type\" : \"other\""));
        corpus.push(lines[0].replace("\"type\" : \"entry\" ,", ""));
        corpus.push(lines[0].replace("\"tags\" : [\"v1\"]", "\"tags\" : 5"));
        corpus.push(lines[0][..lines[0].len() - 1].to_string());
        for line in &corpus {
            let fast = parse(
                line.as_bytes(),
                true,
                &mut Vec::new(),
                &mut Stacks::default(),
            )
            .map(|p| (p.record, p.hashed, p.signed));
            let want = exact(line.as_bytes());
            assert_eq!(fast.is_ok(), want.is_ok(), "{line}");
            if let (Ok(fast), Ok(want)) = (fast, want) {
                assert_eq!(fast, want, "{line}");
            }
        }

        // Edits are found whichever way the line takes.
        for (i, from, to) in [
            (1, "quote", "QUOTE"),
            (2, "plain", "PLAIN"),
            (0, "v1", "v2"),
        ] {
            let mut edited = lines.clone();
            edited[i] = edited[i].replace(from, to);
            let edited: String = edited.iter().map(|l| format!("{l}\n")).collect();
            match verify(edited.as_bytes(), Some(&public)) {
                Err(Problem::Edited { line, .. }) => assert_eq!(line, i as u64 + 1),
                other => panic!("line {}: {other:?}", i + 1),
            }
        }
    }
}

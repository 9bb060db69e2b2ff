//! Checking a log: one streaming pass that recomputes every entry's hash, follows the chain
//! (`seq` without gaps, `prev` linking to the entry before) and checks every checkpoint's
//! signature against the site key. The first problem stops the pass and names the line and
//! the entry: a log is either intact up to its last line or it is not.

use crate::record::{Checkpoint, Entry, GENESIS, Line, canonical_without, hash_without};
use base64::Engine as _;
use fleetlet_verify::cosign::TrustedKey;
use serde_json::Value;
use std::io::BufRead;

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
            | Problem::OtherSite { line, .. } => Some(*line),
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
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Problem::Io(e.to_string()))?;
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
        let value: Value = serde_json::from_slice(text).map_err(|e| truncated(e.to_string()))?;
        let record: Line =
            serde_json::from_value(value.clone()).map_err(|e| truncated(e.to_string()))?;
        let site = match &record {
            Line::Entry(e) => &e.site,
            Line::Checkpoint(c) => &c.site,
        };
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
                    return Err(Problem::Removed {
                        line: line_no,
                        last: last_seq,
                        found: entry.seq,
                    });
                }
                let computed = hash_without(&value, "hash");
                if computed != entry.hash {
                    return Err(Problem::Edited {
                        line: line_no,
                        seq: entry.seq,
                        claimed: entry.hash,
                        computed,
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
                    if !k.verifies(&signature, &canonical_without(&value, "signature")) {
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

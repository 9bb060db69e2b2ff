//! Every way of tampering with a log that `audit verify` must find, each naming the first bad
//! line and entry: truncation, an edited entry (with or without its hash recomputed), a
//! removed entry, reordered entries, a forged checkpoint, a checkpoint by another key, a
//! record of another site.

use fleetlet_audit::record::{Action, Event, Line, canonical_without};
use fleetlet_audit::{AuditLog, MemJournal, Problem, verify};
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use serde_json::Value;

fn event(time: i64, commit: &str) -> Event {
    Event {
        commit: Some(commit.into()),
        reference: Some("refs/heads/main".into()),
        ..Event::new(time, Action::Applied)
    }
}

/// Lines of a good log: entries 1–3, a checkpoint, entries 4–5, a checkpoint.
fn good(key: &SigningKey, site: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("log.jsonl");
    let mut log = AuditLog::open(site, Box::new(MemJournal::default()), Some(&mirror)).unwrap();
    for i in 1..=3 {
        log.record(event(i, &format!("c{i}"))).unwrap();
    }
    log.checkpoint(key, 10).unwrap().unwrap();
    for i in 4..=5 {
        log.record(event(i, &format!("c{i}"))).unwrap();
    }
    log.checkpoint(key, 20).unwrap().unwrap();
    std::fs::read_to_string(&mirror)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Rewrites entry line `i` through `change`, optionally recomputing its hash and every later
/// entry's link and hash (what an attacker without the site key can still do).
fn rewrite(lines: &mut [String], i: usize, change: impl Fn(&mut Value), rechain: bool) {
    let mut prev: Option<String> = None;
    for (n, line) in lines.iter_mut().enumerate().skip(i) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if v["type"] != "entry" {
            continue;
        }
        if n == i {
            change(&mut v);
        } else if !rechain {
            break;
        }
        if let Some(p) = &prev {
            v["prev"] = Value::String(p.clone());
        }
        if rechain {
            let hash = fleetlet_audit::record::hash_without(&v, "hash");
            v["hash"] = Value::String(hash.clone());
            prev = Some(hash);
        }
        *line = serde_json::to_string(&v).unwrap();
    }
}

#[test]
fn every_kind_of_tampering_is_found_and_named() {
    let key = SigningKey::generate().unwrap();
    let public = TrustedKey::from_pem("site", key.public_pem().unwrap().as_bytes()).unwrap();
    let lines = good(&key, "s1");
    assert_eq!(lines.len(), 7);
    let ok = verify(text(&lines).as_bytes(), Some(&public)).unwrap();
    assert_eq!((ok.entries, ok.checkpoints, ok.unanchored), (5, 2, 0));

    let edit_commit = |v: &mut Value| v["commit"] = Value::String("evil".into());
    type Expect = Box<dyn Fn(&Problem) -> bool>;
    let mut cases: Vec<(&str, String, Expect)> = Vec::new();

    let whole = text(&lines);
    cases.push((
        "truncated mid-line",
        whole[..whole.len() - 30].to_string(),
        Box::new(|p| matches!(p, Problem::Truncated { line: 7, .. })),
    ));
    let mut edited = lines.clone();
    rewrite(&mut edited, 1, edit_commit, false);
    cases.push((
        "edited entry",
        text(&edited),
        Box::new(|p| {
            matches!(
                p,
                Problem::Edited {
                    line: 2,
                    seq: 2,
                    ..
                }
            )
        }),
    ));
    let mut rechained = lines.clone();
    rewrite(&mut rechained, 1, edit_commit, true);
    cases.push((
        "edited entry with the chain recomputed",
        text(&rechained),
        Box::new(|p| {
            matches!(
                p,
                Problem::ForgedCheckpoint {
                    line: 4,
                    seq: 3,
                    ..
                }
            )
        }),
    ));
    let mut removed = lines.clone();
    removed.remove(1);
    cases.push((
        "removed entry",
        text(&removed),
        Box::new(|p| {
            matches!(
                p,
                Problem::Removed {
                    line: 2,
                    last: 1,
                    found: 3
                }
            )
        }),
    ));
    let mut reordered = lines.clone();
    reordered.swap(0, 1);
    cases.push((
        "reordered entries",
        text(&reordered),
        Box::new(|p| {
            matches!(
                p,
                Problem::Removed { line: 1, .. } | Problem::Reordered { .. }
            )
        }),
    ));
    let mut swapped_later = lines.clone();
    swapped_later.swap(4, 5);
    cases.push((
        "reordered later entries",
        text(&swapped_later),
        Box::new(|p| {
            matches!(
                p,
                Problem::Reordered {
                    line: 5,
                    last: 3,
                    found: 5
                }
            )
        }),
    ));
    // A checkpoint whose signature does not match what it claims.
    let mut forged = lines.clone();
    let mut cp: Value = serde_json::from_str(&forged[3]).unwrap();
    cp["time"] = Value::from(99);
    forged[3] = serde_json::to_string(&cp).unwrap();
    cases.push((
        "forged checkpoint",
        text(&forged),
        Box::new(|p| matches!(p, Problem::ForgedCheckpoint { line: 4, .. })),
    ));
    // A checkpoint properly signed — by another key.
    let stranger = SigningKey::generate().unwrap();
    let mut foreign = lines.clone();
    let mut cp: Value = serde_json::from_str(&foreign[3]).unwrap();
    let fp = TrustedKey::from_pem("x", stranger.public_pem().unwrap().as_bytes())
        .unwrap()
        .fingerprint();
    cp["key"] = Value::String(fp);
    let sig = stranger.sign(&canonical_without(&cp, "signature")).unwrap();
    use base64::Engine as _;
    cp["signature"] = Value::String(base64::engine::general_purpose::STANDARD.encode(sig));
    foreign[3] = serde_json::to_string(&cp).unwrap();
    cases.push((
        "checkpoint by another key",
        text(&foreign),
        Box::new(|p| matches!(p, Problem::UnknownKey { line: 4, .. })),
    ));
    let mut mixed = lines.clone();
    mixed.insert(5, good(&key, "s2")[4].clone());
    cases.push((
        "a record of another site",
        text(&mixed),
        Box::new(|p| matches!(p, Problem::OtherSite { line: 6, .. })),
    ));
    let mut dropped_checkpoint_edit = lines.clone();
    rewrite(&mut dropped_checkpoint_edit, 4, edit_commit, false);
    cases.push((
        "edited entry after the last-but-one checkpoint",
        text(&dropped_checkpoint_edit),
        Box::new(|p| {
            matches!(
                p,
                Problem::Edited {
                    line: 5,
                    seq: 4,
                    ..
                }
            )
        }),
    ));

    // A duplicated key: the hash covers one value, a reader may take the other.
    let mut doubled = lines.clone();
    doubled[1] = doubled[1].replacen("{", "{\"commit\":\"evil\",", 1);
    cases.push((
        "a duplicated key",
        text(&doubled),
        Box::new(|p| {
            matches!(p, Problem::Truncated { line: 2, detail } if detail.contains("duplicate key"))
        }),
    ));

    let mut future = lines.clone();
    future[2] = future[2].replacen("\"v\":1", "\"v\":2", 1);
    assert_ne!(future[2], lines[2]);
    cases.push((
        "a record of another format version",
        text(&future),
        Box::new(|p| matches!(p, Problem::Version { line: 3, v: 2 })),
    ));

    let mut huge = lines.clone();
    huge[2] = huge[2].replacen(
        "\"site\"",
        &format!("\"pad\":\"{}\",\"site\"", "x".repeat(5 << 20)),
        1,
    );
    cases.push((
        "a line too long to be a record",
        text(&huge),
        Box::new(|p| matches!(p, Problem::Truncated { line: 3, detail } if detail.contains("longer than"))),
    ));

    for (name, log, expect) in cases {
        match verify(log.as_bytes(), Some(&public)) {
            Ok(v) => panic!("{name}: accepted ({v:?})"),
            Err(p) => {
                assert!(expect(&p), "{name}: {p:?}");
                assert!(
                    p.line().is_some() && p.to_string().starts_with("line "),
                    "{name}: {p}"
                );
            }
        }
    }

    // What a rewrite after the last checkpoint can do undetected is shown as unanchored.
    let mut tail = lines.clone();
    tail.pop();
    let v = verify(text(&tail).as_bytes(), Some(&public)).unwrap();
    assert_eq!(v.unanchored, 2);
    let parsed: Line = serde_json::from_str(&lines[6]).unwrap();
    assert!(matches!(parsed, Line::Checkpoint(_)));
}

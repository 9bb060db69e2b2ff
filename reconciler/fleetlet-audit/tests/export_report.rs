//! Exports and fleet reports on real files: an export round trip; a broken log refused at
//! export; a report over sites that ran a release and moved on, still run it, never ran it, or
//! rolled back from it, asked by commit prefix and by tag; every bad input named (an unknown
//! site, a key other than the listed one, two exports that disagree, a broken log inside an
//! export, a site never heard from); hostile text escaped in HTML and text.

use fleetlet_audit::record::{Artifact, Signer, Workload};
use fleetlet_audit::{
    Action, AuditLog, Event, ExportError, MemJournal, Problem, ReportProblem, SiteKeys, SiteStatus,
    export, open_export, report, site_key_line,
};
use fleetlet_bundle::BundleWriter;
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use serde_json::Value;
use std::path::{Path, PathBuf};

const P: &str = "1111111111111111111111111111111111111111";
const R: &str = "abcdef0123456789abcdef0123456789abcdef01";
const S: &str = "2222222222222222222222222222222222222222";
const Q: &str = "3333333333333333333333333333333333333333";

fn public(key: &SigningKey) -> TrustedKey {
    TrustedKey::from_pem("site", key.public_pem().unwrap().as_bytes()).unwrap()
}

fn signer(identity: &str) -> Signer {
    Signer {
        kind: "key".into(),
        identity: identity.into(),
        detail: None,
    }
}

fn workloads(commit: &str) -> Vec<Workload> {
    ["shop/web", "shop/db"]
        .iter()
        .map(|id| Workload {
            id: id.to_string(),
            artifacts: vec![Artifact {
                reference: format!("registry.example/{id}@sha256:{}", &commit[..8]),
                digest: format!("sha256:{}{}", &commit[..8], "0".repeat(56)),
                signers: vec![signer("ci")],
                material: vec![],
            }],
        })
        .collect()
}

fn event(time: i64, action: Action, commit: Option<&str>) -> Event {
    Event {
        commit: commit.map(String::from),
        reference: Some("refs/heads/main".into()),
        ..Event::new(time, action)
    }
}

fn applied(time: i64, commit: &str) -> Event {
    Event {
        tags: if commit == R {
            vec!["v2.0".into()]
        } else {
            vec![]
        },
        commit_signers: vec![signer("alice")],
        workloads: workloads(commit),
        ..event(time, Action::Applied, Some(commit))
    }
}

fn rolled_back(time: i64, to: &str, from: &str) -> Event {
    Event {
        from: Some(from.into()),
        reason: Some("health check failed".into()),
        workloads: workloads(to),
        ..event(time, Action::RolledBack, Some(to))
    }
}

fn drift(time: i64) -> Event {
    Event {
        objects: vec!["Deployment/shop/web".into()],
        ..event(time, Action::DriftCorrected, None)
    }
}

/// Writes the log of `site` with `events` to `path`, checkpointed every 2 entries and one
/// second after the last with `key`.
fn write_log(path: &Path, site: &str, key: &SigningKey, events: &[Event]) {
    let _ = std::fs::remove_file(path);
    let mut log = AuditLog::open(site, Box::new(MemJournal::default()), Some(path)).unwrap();
    for (i, e) in events.iter().enumerate() {
        log.record(e.clone()).unwrap();
        if i % 2 == 1 && i + 1 < events.len() {
            log.checkpoint(key, e.time).unwrap();
        }
    }
    log.checkpoint(key, events.last().map_or(0, |e| e.time) + 1)
        .unwrap();
}

/// A site with its key, exporting into `dir`.
struct Site {
    name: String,
    key: SigningKey,
}

impl Site {
    fn new(name: &str) -> Site {
        Site {
            name: name.into(),
            key: SigningKey::generate().unwrap(),
        }
    }

    fn line(&self) -> String {
        site_key_line(&self.name, &public(&self.key))
    }

    /// Writes its log of `events` and exports it as `dir/file`.
    fn export(&self, work: &Path, dir: &Path, file: &str, events: &[Event]) -> PathBuf {
        self.export_at(work, dir, file, events, 5_000)
    }

    fn export_at(
        &self,
        work: &Path,
        dir: &Path,
        file: &str,
        events: &[Event],
        created_at: i64,
    ) -> PathBuf {
        let log = work.join(format!("{file}.jsonl"));
        write_log(&log, &self.name, &self.key, events);
        let out = dir.join(file);
        export(&log, &self.name, &self.key, created_at, &out).unwrap();
        out
    }
}

fn keys_of(sites: &[&Site]) -> SiteKeys {
    let text: String = sites.iter().map(|s| s.line() + "\n").collect();
    SiteKeys::parse(&text).unwrap()
}

#[test]
fn an_export_round_trips_with_the_listed_key() {
    let work = tempfile::tempdir().unwrap();
    let site = Site::new("edge-1");
    let log = work.path().join("audit.jsonl");
    let events = [applied(100, P), drift(150), applied(200, R)];
    write_log(&log, "edge-1", &site.key, &events);
    // One more entry after the last checkpoint: covered by the export's signature only.
    let mut live = AuditLog::open(
        "edge-1",
        Box::new(MemJournal(
            std::fs::read_to_string(&log)
                .unwrap()
                .lines()
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        )),
        Some(&log),
    )
    .unwrap();
    live.record(drift(300)).unwrap();
    let whole = std::fs::read(&log).unwrap();
    // And half a line being written as the export reads the log.
    let tail = br#"{"type":"entry","v":1,"seq":5"#;
    let mut torn = whole.clone();
    torn.extend_from_slice(tail);
    std::fs::write(&log, &torn).unwrap();

    let out = work.path().join("edge-1.audit");
    let summary = export(&log, "edge-1", &site.key, 1_700_000_000, &out).unwrap();
    assert_eq!(
        (
            summary.entries,
            summary.checkpoints,
            summary.unanchored,
            summary.torn_tail
        ),
        (4, 2, 1, tail.len() as u64)
    );
    assert_eq!(summary.files, vec![out.clone()]);
    assert_eq!(summary.key, public(&site.key).fingerprint());
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let scratch = tempfile::tempdir().unwrap();
    let opened = open_export(
        std::slice::from_ref(&out),
        &keys_of(&[&site]),
        scratch.path(),
    )
    .unwrap();
    assert_eq!(opened.site, "edge-1");
    assert_eq!(opened.created_at, 1_700_000_000);
    assert_eq!(opened.signer, summary.key);
    assert_eq!(
        (opened.verified.entries, opened.verified.last_time),
        (4, Some(300))
    );
    assert_eq!(opened.verified.head, summary.head);
    // The log verbatim, without the torn line.
    assert_eq!(std::fs::read(opened.log_path()).unwrap(), whole);
    let extracted = opened.log_path();
    drop(opened);
    assert!(!extracted.exists(), "the extracted log outlived the export");
}

#[test]
fn a_broken_log_is_not_exported() {
    let work = tempfile::tempdir().unwrap();
    let site = Site::new("edge-1");
    let stranger = SigningKey::generate().unwrap();
    let good = work.path().join("good.jsonl");
    write_log(
        &good,
        "edge-1",
        &site.key,
        &[applied(1, P), applied(2, R), applied(3, S)],
    );
    let lines: Vec<String> = std::fs::read_to_string(&good)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut edited = lines.clone();
    let mut v: Value = serde_json::from_str(&edited[3]).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["seq"].as_u64()),
        (Some("entry"), Some(3))
    );
    v["commit"] = Value::String("evil".into());
    edited[3] = serde_json::to_string(&v).unwrap();

    type Expect = Box<dyn Fn(&ExportError) -> bool>;
    let cases: Vec<(&str, String, &SigningKey, &str, Expect)> = vec![
        (
            "an edited entry",
            edited.join("\n") + "\n",
            &site.key,
            "edge-1",
            Box::new(|e| {
                matches!(
                    e,
                    ExportError::BrokenLog {
                        problem: Problem::Edited {
                            line: 4,
                            seq: 3,
                            ..
                        },
                        ..
                    }
                )
            }),
        ),
        (
            "exported with a key other than the one that checkpointed it",
            lines.join("\n") + "\n",
            &stranger,
            "edge-1",
            Box::new(|e| {
                matches!(
                    e,
                    ExportError::BrokenLog {
                        problem: Problem::UnknownKey { .. },
                        ..
                    }
                )
            }),
        ),
        (
            "the log of another site",
            lines.join("\n") + "\n",
            &site.key,
            "edge-2",
            Box::new(|e| matches!(e, ExportError::OtherSite { found, .. } if found == "edge-1")),
        ),
    ];
    for (name, text, key, as_site, expect) in cases {
        let log = work.path().join("log.jsonl");
        std::fs::write(&log, text).unwrap();
        let out = work.path().join("out.audit");
        let err = export(&log, as_site, key, 10, &out).unwrap_err();
        assert!(expect(&err), "{name}: {err:?}");
        assert!(err.to_string().contains("log.jsonl"), "{name}: {err}");
        assert!(!out.exists(), "{name}: an export was written");
    }
}

#[test]
fn a_report_says_who_ran_a_release_from_when_to_when() {
    let work = tempfile::tempdir().unwrap();
    let exports = work.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let (a, b, c, d, e) = (
        Site::new("a-moved-on"),
        Site::new("b-still-runs"),
        Site::new("c-never-ran"),
        Site::new("d-rolled-back"),
        Site::new("e-silent"),
    );
    a.export(
        work.path(),
        &exports,
        "a.audit",
        &[
            applied(100, P),
            applied(200, R),
            drift(250),
            applied(300, S),
        ],
    );
    b.export(
        work.path(),
        &exports,
        "b.audit",
        &[
            applied(100, P),
            applied(250, R),
            applied(260, R),
            drift(400),
        ],
    );
    c.export(
        work.path(),
        &exports,
        "c.audit",
        &[applied(100, P), applied(200, Q)],
    );
    d.export(
        work.path(),
        &exports,
        "d.audit",
        &[applied(100, P), applied(220, R), rolled_back(230, P, R)],
    );
    let keys = keys_of(&[&a, &b, &c, &d, &e]);

    for rev in [
        &R[..7],
        R,
        "v2.0",
        "refs/tags/v2.0",
        &R[..10].to_uppercase(),
    ] {
        let rep = report(rev, &exports, &keys);
        let site = |name: &str| rep.sites.iter().find(|s| s.site == name).unwrap();
        let names: Vec<&str> = rep.sites.iter().map(|s| s.site.as_str()).collect();
        assert_eq!(
            names,
            [
                "a-moved-on",
                "b-still-runs",
                "c-never-ran",
                "d-rolled-back",
                "e-silent"
            ],
            "{rev}"
        );
        type Expect = (SiteStatus, Vec<(i64, Option<i64>)>, Option<i64>);
        let cases: [(&str, Expect); 5] = [
            (
                "a-moved-on",
                (SiteStatus::Ran, vec![(200, Some(300))], Some(301)),
            ),
            (
                "b-still-runs",
                (SiteStatus::Running, vec![(250, None)], Some(401)),
            ),
            ("c-never-ran", (SiteStatus::NeverRan, vec![], Some(201))),
            (
                "d-rolled-back",
                (SiteStatus::Ran, vec![(220, Some(230))], Some(231)),
            ),
            ("e-silent", (SiteStatus::Unknown, vec![], None)),
        ];
        for (name, (status, runs, heard)) in cases {
            let s = site(name);
            let got: Vec<(i64, Option<i64>)> = s.runs.iter().map(|r| (r.from, r.to)).collect();
            assert_eq!(
                (s.status, got, s.last_heard),
                (status, runs, heard),
                "{rev}: {name}"
            );
        }
        let run = &site("a-moved-on").runs[0];
        assert_eq!(run.commit, R);
        assert_eq!(run.commit_signers, vec![signer("alice")]);
        let digests: Vec<&str> = run
            .workloads
            .iter()
            .flat_map(|w| &w.artifacts)
            .map(|a| a.digest.as_str())
            .collect();
        assert_eq!(
            digests,
            vec![workloads(R)[0].artifacts[0].digest.as_str(); 2]
        );
        assert_eq!(
            run.ended_by
                .as_ref()
                .map(|e| (e.action, e.commit.as_deref())),
            Some((Action::Applied, Some(S)))
        );
        assert_eq!(
            site("d-rolled-back").runs[0]
                .ended_by
                .as_ref()
                .map(|e| (e.action, e.commit.as_deref())),
            Some((Action::RolledBack, Some(P)))
        );
        assert_eq!(site("b-still-runs").export.as_deref(), Some("b.audit"));
        assert_eq!(
            rep.problems,
            vec![ReportProblem::NeverHeardFrom {
                site: "e-silent".into(),
                refused: 0
            }],
            "{rev}"
        );

        let text = rep.to_text();
        assert!(
            text.contains("3 of 5 sites ran it (1 still running), 1 never did, 1 unknown"),
            "{text}"
        );
        assert!(text.contains("still running"), "{text}");
        assert!(text.contains("rolled back to 111111111111"), "{text}");
        assert!(text.contains("e-silent\": never heard from"), "{text}");
        let json = serde_json::to_value(&rep).unwrap();
        assert_eq!(json["sites"][0]["lastHeard"], 301);
        assert_eq!(json["sites"][0]["runs"][0]["endedBy"]["action"], "applied");
        assert_eq!(json["sites"][2]["status"], "neverRan");
        assert_eq!(json["problems"][0]["kind"], "neverHeardFrom");
    }

    // Too short to be a commit, and no such tag: nobody ran it.
    let rep = report(&R[..6], &exports, &keys);
    assert!(rep.sites.iter().all(|s| s.runs.is_empty()));
}

/// An export of `site` whose log is `log` verbatim (no verification), signed with `key`.
fn raw_export(out: &Path, site: &str, key: &SigningKey, log: &[u8]) {
    let meta = serde_json::json!({
        "type": "audit",
        "v": 1,
        "site": site,
        "siteKey": key.public_pem().unwrap(),
        "createdAt": 7,
    });
    let mut writer = BundleWriter::new(meta);
    writer.add_file("audit.jsonl", log).unwrap();
    writer.finish(key, out, None).unwrap();
}

#[test]
fn every_bad_input_is_named() {
    let a = Site::new("edge-a");
    let b = Site::new("edge-b");
    let rogue = Site::new("rogue");
    // Claims to be edge-a, with a key of its own.
    let fake = Site::new("edge-a");
    let impostor = &fake.key;
    let keys = keys_of(&[&a, &b]);
    let events = [applied(100, P), applied(200, R), drift(300)];

    type Setup<'a> = Box<dyn Fn(&Path, &Path) + 'a>;
    type Expect<'a> = Box<dyn Fn(&ReportProblem) -> bool + 'a>;
    let cases: Vec<(&str, Setup, Expect)> = vec![
        (
            "an export signed by an unknown site key",
            Box::new(|work: &Path, dir: &Path| {
                rogue.export(work, dir, "rogue.audit", &events);
            }),
            Box::new(|p| {
                matches!(p, ReportProblem::UnknownSite { file, site, fingerprint }
                    if file == "rogue.audit" && site == "rogue"
                        && *fingerprint == public(&rogue.key).fingerprint())
            }),
        ),
        (
            "an export whose key differs from the site-keys file",
            Box::new(|work: &Path, dir: &Path| {
                fake.export(work, dir, "a.audit", &events);
            }),
            Box::new(|p| {
                matches!(p, ReportProblem::WrongKey { file, site, listed, found }
                    if file == "a.audit" && site == "edge-a"
                        && *listed == public(&a.key).fingerprint()
                        && *found == public(impostor).fingerprint())
            }),
        ),
        (
            "an export signed by another key than its meta names",
            Box::new(|work: &Path, dir: &Path| {
                let log = work.join("a.jsonl");
                write_log(&log, "edge-a", &a.key, &events);
                let meta = serde_json::json!({
                    "type": "audit", "site": "edge-a", "createdAt": 1,
                    "siteKey": a.key.public_pem().unwrap(),
                });
                let mut writer = BundleWriter::new(meta);
                writer.add_path("audit.jsonl", &log).unwrap();
                writer.finish(impostor, &dir.join("a.audit"), None).unwrap();
            }),
            Box::new(|p| {
                matches!(p, ReportProblem::WrongKey { site, found, .. }
                    if site == "edge-a" && *found == public(impostor).fingerprint())
            }),
        ),
        (
            "two exports from one site that disagree",
            Box::new(|work: &Path, dir: &Path| {
                a.export(work, dir, "a-1.audit", &events);
                // Same first entry, then another history, longer.
                a.export(
                    work,
                    dir,
                    "a-2.audit",
                    &[applied(100, P), applied(200, S), drift(300), drift(400)],
                );
                // A prefix of the first: agrees with it, but not with the longest.
                a.export(work, dir, "a-0.audit", &events[..1]);
            }),
            Box::new(|p| {
                matches!(p, ReportProblem::Disagree { site, file, other, seq: 2 }
                    if site == "edge-a" && file == "a-1.audit" && other == "a-2.audit")
            }),
        ),
        (
            "a broken log inside an export (an edited entry)",
            Box::new(|work: &Path, dir: &Path| {
                let log = work.join("a.jsonl");
                write_log(&log, "edge-a", &a.key, &events);
                let text = std::fs::read_to_string(&log).unwrap();
                let mut lines: Vec<String> = text.lines().map(String::from).collect();
                let mut v: Value = serde_json::from_str(&lines[3]).unwrap();
                assert_eq!(v["seq"], 3);
                v["objects"] = serde_json::json!(["Secret/shop/keys"]);
                lines[3] = serde_json::to_string(&v).unwrap();
                raw_export(
                    &dir.join("a.audit"),
                    "edge-a",
                    &a.key,
                    (lines.join("\n") + "\n").as_bytes(),
                );
            }),
            Box::new(|p| {
                matches!(p, ReportProblem::BrokenLog { file, site, line: Some(4), message }
                    if file == "a.audit" && site == "edge-a"
                        && message.contains("entry 3 was edited"))
            }),
        ),
        (
            "a file that is not an export",
            Box::new(|_: &Path, dir: &Path| {
                std::fs::write(dir.join("notes.txt"), "hello").unwrap();
            }),
            Box::new(|p| matches!(p, ReportProblem::BadExport { file, .. } if file == "notes.txt")),
        ),
    ];

    for (name, setup, expect) in cases {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("exports");
        std::fs::create_dir(&dir).unwrap();
        setup(work.path(), &dir);
        b.export(work.path(), &dir, "b.audit", &events);
        let rep = report("v2.0", &dir, &keys);
        let found: Vec<&ReportProblem> = rep
            .problems
            .iter()
            .filter(|p| !matches!(p, ReportProblem::NeverHeardFrom { .. }))
            .collect();
        assert!(
            found.len() == 1 && expect(found[0]),
            "{name}: {:#?}",
            rep.problems
        );
        // The message names what it is about.
        let message = found[0].to_string();
        assert!(
            message.contains(".audit") || message.contains("notes.txt"),
            "{name}: {message}"
        );
        let html = rep.to_html();
        assert!(html.contains("<h2>Problems (") && !html.contains("<h2>Problems (0)"));
        // The good site is reported whatever the others did.
        let good = rep.sites.iter().find(|s| s.site == "edge-b").unwrap();
        assert_eq!(
            (good.status, good.runs.len()),
            (SiteStatus::Running, 1),
            "{name}"
        );
        let edge_a = rep.sites.iter().find(|s| s.site == "edge-a").unwrap();
        match name {
            "two exports from one site that disagree" => {
                assert!(edge_a.disputed);
                assert_eq!(edge_a.export.as_deref(), Some("a-2.audit"));
                assert_eq!((edge_a.entries, edge_a.status), (4, SiteStatus::NeverRan));
            }
            "an export signed by an unknown site key" | "a file that is not an export" => {
                assert!(rep.problems.contains(&ReportProblem::NeverHeardFrom {
                    site: "edge-a".into(),
                    refused: 0
                }));
            }
            _ => {
                assert_eq!(edge_a.status, SiteStatus::Unknown);
                assert!(rep.problems.contains(&ReportProblem::NeverHeardFrom {
                    site: "edge-a".into(),
                    refused: 1
                }));
            }
        }
    }
}

#[test]
fn two_exports_that_agree_use_the_longer() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("exports");
    std::fs::create_dir(&dir).unwrap();
    let a = Site::new("edge-a");
    let events = [applied(100, P), applied(200, R), applied(300, S)];
    a.export(work.path(), &dir, "1-old.audit", &events[..2]);
    a.export(work.path(), &dir, "2-new.audit", &events);
    let rep = report(R, &dir, &keys_of(&[&a]));
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    let s = &rep.sites[0];
    assert_eq!(
        (s.export.as_deref(), s.status, s.entries, s.disputed),
        (Some("2-new.audit"), SiteStatus::Ran, 3, false)
    );
    assert_eq!(s.runs[0].to, Some(300));
}

#[test]
fn a_log_that_went_backwards_between_exports_is_named() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("exports");
    std::fs::create_dir(&dir).unwrap();
    let a = Site::new("edge-a");
    let events = [applied(100, P), applied(200, R), applied(300, S)];
    // The fuller export first; a later one holds less: entries were cut from the site's log.
    a.export_at(work.path(), &dir, "1-march.audit", &events, 5_000);
    a.export_at(work.path(), &dir, "2-april.audit", &events[..2], 6_000);
    let rep = report(R, &dir, &keys_of(&[&a]));
    assert!(
        matches!(
            &rep.problems[..],
            [ReportProblem::Shrunk { file, entries: 2, longer: 3, .. }] if file == "2-april.audit"
        ),
        "{:?}",
        rep.problems
    );
    assert_eq!(
        rep.sites[0].entries, 3,
        "the fuller history is the one reported"
    );
}

#[test]
fn hostile_text_is_escaped() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("exports");
    std::fs::create_dir(&dir).unwrap();
    let hostile = "<script>alert('x&y')</script>";
    // A site name no site-keys file can list, and so shows only in a problem.
    let rogue = Site::new(hostile);
    rogue.export(work.path(), &dir, "rogue.audit", &[applied(1, R)]);
    // A listed site whose (validly signed) log carries markup and terminal escapes.
    let a = Site::new("edge-a");
    let mut e = applied(100, R);
    e.workloads[0].id = hostile.into();
    e.commit_signers = vec![signer("\u{1b}[2J<img src=x onerror=alert(1)>\"")];
    e.tags.push(format!("\"><script>{hostile}"));
    a.export(work.path(), &dir, "a.audit", &[e]);
    let rep = report(R, &dir, &keys_of(&[&a]));
    assert_eq!(rep.sites[0].status, SiteStatus::Running);
    assert!(
        matches!(&rep.problems[..], [ReportProblem::UnknownSite { site, .. }] if site == hostile)
    );

    let html = rep.to_html();
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "{html}");
    assert!(!lower.contains("<img"), "{html}");
    assert!(!html.contains('\u{1b}'));
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("Content-Security-Policy"));
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let text = rep.to_text();
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.contains("?[2J<img"), "{text}");
}

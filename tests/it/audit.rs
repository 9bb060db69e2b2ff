//! The audit log of a real agent: every outcome chained and mirrored as JSON Lines, a signed
//! checkpoint at shutdown, `fleetlet audit log|verify|site-key` reading it back, and an edit
//! of the file found and named.

use crate::testkit::agent::{Agent, fleetlet, http_app, site_yaml, write_config};
use crate::testkit::components::{free_port, http_get, probe_http};
use crate::testkit::git::TestRepo;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn applied(commit: &str) -> impl Fn(&Value) -> bool + '_ {
    move |s| s["appliedCommit"].as_str() == Some(commit)
}

/// A fleet repo holding the probe component, committed.
fn repo_with_probe() -> TestRepo {
    let repo = TestRepo::new().unwrap();
    repo.commit_files(
        &[(
            "components/probe.wasm",
            &std::fs::read(probe_http()).unwrap(),
        )],
        "component",
    )
    .unwrap();
    repo
}

#[test]
fn the_agent_records_every_outcome_and_audit_verify_finds_an_edit() {
    let repo = repo_with_probe();
    let port = free_port();
    let site = site_yaml("store-1", "wasm");
    let c1 = repo
        .commit_files(
            &[
                ("sites/s.yaml", site.as_bytes()),
                (
                    "apps/a.yaml",
                    http_app("shop", "web", port, "one", "").as_bytes(),
                ),
            ],
            "release one",
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), "200ms", "");
    let config_s = config.to_str().unwrap();
    let agent = Agent::start(&config);
    agent.wait_status(T, "release one", applied(&c1));

    // An invalid commit, retried for several cycles: recorded once.
    let bad = repo
        .commit_files(
            &[("apps/a.yaml", b"kind: App\nspec: [".as_slice())],
            "broken",
        )
        .unwrap();
    agent.wait_status(T, "broken commit refused", |s| {
        s["lastError"]["commit"].as_str() == Some(bad.as_str())
    });
    std::thread::sleep(Duration::from_millis(1200));
    let c3 = repo
        .commit_files(
            &[(
                "apps/a.yaml",
                http_app("shop", "web", port, "three", "").as_bytes(),
            )],
            "release three",
        )
        .unwrap();
    agent.wait_status(T, "release three", applied(&c3));
    // The log's length, scraped off the site: a witness if it is ever cut back.
    let deadline = std::time::Instant::now() + T;
    loop {
        let (_, metrics) = http_get(agent.status_addr, "/metrics").unwrap();
        if metrics.contains("fleetlet_audit_entries 3") {
            assert!(
                metrics.contains("fleetlet_audit_checkpointed_entries"),
                "{metrics}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.terminate().success());

    let (code, out, err) = fleetlet(&["audit", "log", "--config", config_s, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["commit"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("applied", c1.as_str()),
            ("rejected", bad.as_str()),
            ("applied", c3.as_str())
        ],
        "{out}"
    );
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[1]["prev"], entries[0]["hash"]);
    assert_eq!(entries[0]["site"], "store-1");
    assert_eq!(entries[1]["stage"], "validate", "{out}");
    let artifact = &entries[0]["workloads"][0]["artifacts"][0];
    assert!(
        artifact["digest"].as_str().unwrap().starts_with("sha256:"),
        "{out}"
    );
    // By release (a commit prefix).
    let (_, only, _) = fleetlet(&[
        "audit",
        "log",
        "--config",
        config_s,
        "--release",
        &c3[..10],
        "-o",
        "json",
    ]);
    let only: Vec<Value> = serde_json::from_str(&only).unwrap();
    assert_eq!(only.len(), 1);

    // Intact: the chain, the checkpoint signed at shutdown, the journal.
    let (code, out, err) = fleetlet(&["audit", "verify", "--config", config_s, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["entries"], 3, "{report:#}");
    assert!(report["checkpoints"].as_u64().unwrap() >= 1, "{report:#}");
    assert_eq!(report["unanchored"], 0, "{report:#}");
    assert!(
        report["journal"].as_str().unwrap().starts_with("agrees"),
        "{report:#}"
    );

    // The site key, as a line for the fleet's site-keys file.
    let (code, line, _) = fleetlet(&["audit", "site-key", "--config", config_s]);
    assert_eq!(code, 0);
    assert!(line.starts_with("store-1 MF"), "{line}");

    // The export carried to the auditor, and the fleet-wide report over it.
    let exports = work.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let export = exports.join("store-1.audit");
    let (code, out, err) = fleetlet(&[
        "audit",
        "export",
        "--config",
        config_s,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let keys = work.path().join("site-keys");
    std::fs::write(
        &keys,
        format!("{line}\nstore-9 {}\n", line.split_once(' ').unwrap().1),
    )
    .unwrap();
    let (code, out, err) = fleetlet(&[
        "audit",
        "report",
        "--release",
        &c1[..9],
        "--exports",
        exports.to_str().unwrap(),
        "--site-keys",
        keys.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let sites = report["sites"].as_array().unwrap();
    let one = sites.iter().find(|s| s["site"] == "store-1").unwrap();
    assert_eq!(one["status"], "ran", "{report:#}");
    assert_eq!(one["runs"][0]["commit"], c1.as_str(), "{report:#}");
    assert!(one["runs"][0]["to"].is_i64(), "{report:#}");
    let nine = sites.iter().find(|s| s["site"] == "store-9").unwrap();
    assert_ne!(nine["status"], "ran", "{report:#}");
    assert_eq!(code, 1, "store-9 was never heard from: {report:#}");
    let (_, html, _) = fleetlet(&[
        "audit",
        "report",
        "--release",
        &c3[..9],
        "--exports",
        exports.to_str().unwrap(),
        "--site-keys",
        keys.to_str().unwrap(),
        "-o",
        "html",
    ]);
    assert!(
        html.contains("<table") && html.contains("store-1"),
        "{html}"
    );
    // html is the report's alone: elsewhere it is a usage error.
    let (code, _, err) = fleetlet(&["audit", "log", "--config", config_s, "-o", "html"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only for `fleetlet audit report`"), "{err}");

    // Lines cut from the end of the mirror (the agent stopped): the journal still has them.
    let path = work.path().join("state/audit.jsonl");
    let full = std::fs::read_to_string(&path).unwrap();
    let first_two: String = full.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, first_two).unwrap();
    let (code, out, _) = fleetlet(&["audit", "verify", "--config", config_s]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("removed from the mirror"), "{out}");
    std::fs::write(&path, &full).unwrap();

    // The site key lost: the agent refuses to start rather than sign on with a new key.
    let key = work.path().join("state/site.key");
    let kept = work.path().join("site.key.kept");
    std::fs::rename(&key, &kept).unwrap();
    let mut child = std::process::Command::new(crate::testkit::agent::fleetlet_bin())
        .args(["agent", "--config", config_s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the agent started without its site key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success() && stderr.contains("site.key is missing"),
        "{stderr}"
    );
    assert!(!key.exists(), "no new key was made");
    std::fs::rename(&kept, &key).unwrap();

    // Someone edits the mirror: the rejected entry now claims another reason.
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"action\":\"rejected\"", "\"action\":\"applied\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let (code, out, _) = fleetlet(&["audit", "verify", "--config", config_s]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line 2: entry 2 was edited"), "{out}");
    assert!(out.contains("line 2 differs from the journal"), "{out}");
}

/// The agent's status over HTTP: from the running process, never the file an earlier one left.
fn live_status(agent: &Agent) -> Option<Value> {
    let (code, body) = http_get(agent.status_addr, "/status").ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn audit_entries(config: &str) -> Vec<Value> {
    let (code, out, err) = fleetlet(&["audit", "log", "--config", config, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn kill_9_at_random_moments_loses_no_entry_and_repeats_none() {
    let repo = repo_with_probe();
    let port = free_port();
    let site = site_yaml("store-1", "wasm");
    let release = |n: usize| {
        repo.commit_files(
            &[
                ("sites/s.yaml", site.as_bytes()),
                (
                    "apps/a.yaml",
                    http_app("shop", "web", port, &format!("r{n}"), "").as_bytes(),
                ),
            ],
            &format!("release {n}"),
        )
        .unwrap()
    };
    let mut last = release(0);
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), "100ms", "");
    let config_s = config.to_str().unwrap();

    let mut seed = 5u64;
    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        let agent = Agent::start(&config);
        let deadline = Instant::now() + T;
        // Whatever the state record says runs, the log (written from it at start, if the kill
        // came between the two writes) shows as applied.
        let running = loop {
            if let Some(s) = live_status(&agent)
                && let Some(c) = s["appliedCommit"].as_str()
            {
                break c.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "round {round}:\n{}",
                agent.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        loop {
            let entries = audit_entries(config_s);
            if entries
                .iter()
                .any(|e| e["action"] == "applied" && e["commit"] == running.as_str())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {running} runs but the log does not show it: {entries:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        last = release(round + 1);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 600));
        agent.kill9();
    }

    let agent = Agent::start(&config);
    let deadline = Instant::now() + T;
    while live_status(&agent).and_then(|s| s["appliedCommit"].as_str().map(String::from))
        != Some(last.clone())
    {
        assert!(Instant::now() < deadline, "{}", agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.terminate().success());
    let (code, out, err) = fleetlet(&["audit", "verify", "--config", config_s]);
    assert_eq!(code, 0, "{out}{err}");
    let entries = audit_entries(config_s);
    let mut applied: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "applied")
        .map(|e| e["commit"].as_str().unwrap())
        .collect();
    assert_eq!(applied.last(), Some(&last.as_str()));
    let n = applied.len();
    applied.sort();
    applied.dedup();
    assert_eq!(applied.len(), n, "a release recorded twice: {entries:#?}");
    let ids: Vec<u64> = entries
        .iter()
        .filter_map(|e| e["eventId"].as_u64())
        .collect();
    assert_eq!(ids.len(), entries.len(), "every entry carries its event id");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids repeat or go back: {ids:?}"
    );
    eprintln!(
        "{} entries, {n} releases applied of {} committed, over {ROUNDS} kills",
        entries.len(),
        ROUNDS + 1
    );
}

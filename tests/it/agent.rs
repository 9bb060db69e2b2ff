//! The agent end to end: a real Git server, the real `fleetlet` binary, real HTTP to real
//! components. Commit → applied; removed → stopped; bad commit → last-known-good keeps serving;
//! restart offline → back from state and the compiled cache; runaway components → cut off.

use crate::testkit::agent::{Agent, http_app, site_yaml, wait_body, write_config};
use crate::testkit::components::{free_port, http_get, probe_http, probe_http_v2};
use crate::testkit::git::{GitDaemon, TestRepo};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn probe() -> Vec<u8> {
    std::fs::read(probe_http()).unwrap()
}

fn commit(repo: &TestRepo, files: &[(&str, &str)], msg: &str) -> String {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
    repo.commit_files(&files, msg).unwrap()
}

fn applied(commit: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |s| s["appliedCommit"].as_str() == Some(commit)
}

/// A local fleet repo holding the probe component, site `store-1` and `apps`, and an agent
/// following it every `interval`, once the first release is applied.
struct LocalSite {
    repo: TestRepo,
    agent: Agent,
    /// Holds the agent's state dir: bind it (`_work`), or the dir goes with the temporary.
    _work: tempfile::TempDir,
}

fn local_site(apps: &[(&str, String)], interval: &str) -> LocalSite {
    let repo = TestRepo::new().unwrap();
    repo.commit_files(&[("components/probe.wasm", &probe())], "component")
        .unwrap();
    let mut files = vec![("sites/s.yaml", site_yaml("store-1", "wasm"))];
    files.extend(apps.iter().map(|(p, c)| (*p, c.clone())));
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let first = commit(&repo, &files, "release");
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), interval, "");
    let agent = Agent::start(&config);
    agent.wait_status(T, "first release", applied(&first));
    LocalSite {
        repo,
        agent,
        _work: work,
    }
}

#[test]
fn agent_follows_commits_over_git_daemon_and_keeps_last_known_good() {
    let root = tempfile::tempdir().unwrap();
    let repo = TestRepo::new_in(root.path(), "fleet.git").unwrap();
    let (p1, p2) = (free_port(), free_port());
    repo.commit_files(&[("components/probe.wasm", &probe())], "component")
        .unwrap();
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", &site_yaml("store-1", "wasm")),
            (
                "apps/a.yaml",
                &http_app("shop", "web", p1, "v1-greeting", ""),
            ),
            ("apps/b.yaml", &http_app("extra", "side", p2, "side", "")),
        ],
        "first release",
    );
    let daemon = GitDaemon::start(root.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(
        work.path(),
        "store-1",
        &daemon.url_for("fleet.git"),
        "200ms",
        "",
    );
    let agent = Agent::start(&config);

    agent.wait_status(T, "first release applied", applied(&c1));
    wait_body(p1, "/", "hello from probe-http v1-greeting", T).unwrap();
    wait_body(p2, "/", "side", T).unwrap();
    // Only what the workload declares is in its environment.
    let (_, env) = http_get(SocketAddr::from(([127, 0, 0, 1], p1)), "/env").unwrap();
    assert_eq!(env.trim(), "GREETING=v1-greeting");

    // A new commit changes what is served.
    let c2 = commit(
        &repo,
        &[(
            "apps/a.yaml",
            &http_app("shop", "web", p1, "v2-greeting", ""),
        )],
        "greet v2",
    );
    agent.wait_status(T, "second release applied", applied(&c2));
    // Promoted to last-known-good once seen healthy in a later cycle.
    agent.wait_status(T, "second release promoted", |s| {
        s["lastKnownGoodCommit"].as_str() == Some(c2.as_str())
    });
    wait_body(p1, "/", "v2-greeting", T).unwrap();

    // A broken commit is refused; the last-known-good keeps serving; status says why.
    let bad = commit(
        &repo,
        &[(
            "apps/a.yaml",
            "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {name: shop\n",
        )],
        "broken yaml",
    );
    let s = agent.wait_status(T, "broken commit refused", |s| {
        s["lastError"]["commit"].as_str() == Some(bad.as_str())
    });
    assert_eq!(s["lastError"]["stage"], "validate", "{s:#}");
    assert!(
        s["lastError"]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("apps/a.yaml:"),
        "{s:#}"
    );
    assert_eq!(s["appliedCommit"].as_str(), Some(c2.as_str()));
    assert_eq!(s["lastKnownGoodCommit"].as_str(), Some(c2.as_str()));
    wait_body(p1, "/", "v2-greeting", Duration::from_secs(1)).unwrap();
    let (code, text, _) = crate::testkit::agent::fleetlet(&[
        "status",
        "--state-dir",
        agent.state_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "status exits 1 while the last cycle failed");
    assert!(
        text.contains("apps/a.yaml:") && text.contains(&c2),
        "{text}"
    );

    // Fixing it and removing a workload: the removed one stops, its port is released.
    repo.remove("apps/b.yaml").unwrap();
    let c5 = commit(
        &repo,
        &[("apps/a.yaml", &http_app("shop", "web", p1, "v3", ""))],
        "fix, drop extra",
    );
    let s = agent.wait_status(T, "removal applied", applied(&c5));
    assert!(s["lastError"].is_null(), "{s:#}");
    wait_body(p1, "/", "v3", T).unwrap();
    let deadline = Instant::now() + T;
    while http_get(SocketAddr::from(([127, 0, 0, 1], p2)), "/").is_ok() {
        assert!(Instant::now() < deadline, "removed workload still answers");
        std::thread::sleep(Duration::from_millis(20));
    }
    // /status and /metrics on the agent's endpoint.
    let (code, body) = http_get(agent.status_addr, "/status").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(&c5));
    let (code, metrics) = http_get(agent.status_addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("fleetlet_reconciles_total{outcome=\"applied\"}"),
        "{metrics}"
    );
    // Every cycle that met the refused commit counts (how many ran depends on the machine).
    let validate_errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fleetlet_reconcile_errors_total{stage=\"validate\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no validate errors counted:\n{metrics}"));
    assert!(validate_errors >= 1, "{metrics}");
    assert!(
        metrics.contains("fleetlet_workloads{state=\"running\"} 1"),
        "{metrics}"
    );
    assert_eq!(http_get(agent.status_addr, "/readyz").unwrap().0, 200);

    let exit = agent.terminate();
    assert!(exit.success(), "SIGTERM must exit 0, got {exit}");
    assert!(
        http_get(SocketAddr::from(([127, 0, 0, 1], p1)), "/").is_err(),
        "workloads stop with the agent"
    );
}

#[test]
fn agent_restarts_offline_from_state_and_compiled_cache() {
    let root = tempfile::tempdir().unwrap();
    let repo = TestRepo::new_in(root.path(), "fleet.git").unwrap();
    let port = free_port();
    repo.commit_files(&[("components/probe.wasm", &probe())], "component")
        .unwrap();
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", &site_yaml("store-1", "wasm")),
            ("apps/a.yaml", &http_app("shop", "web", port, "cached", "")),
        ],
        "release",
    );
    let daemon = GitDaemon::start(root.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(
        work.path(),
        "store-1",
        &daemon.url_for("fleet.git"),
        "200ms",
        "",
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "release applied", applied(&c1));
    wait_body(port, "/", "cached", T).unwrap();
    let compiled: Vec<_> = std::fs::read_dir(agent.state_dir.join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(compiled.len(), 1, "one precompiled component: {compiled:?}");
    let mtime = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();

    // kill -9, then the Git server goes away.
    agent.kill9();
    daemon.stop();
    let agent = Agent::start(&config);
    wait_body(port, "/", "cached", T).unwrap();
    let s = agent.wait_status(T, "source failure recorded", |s| {
        s["lastError"]["stage"] == "source"
    });
    assert_eq!(s["appliedCommit"].as_str(), Some(c1.as_str()));
    assert_eq!(
        std::fs::metadata(&compiled[0]).unwrap().modified().unwrap(),
        mtime,
        "no recompilation"
    );
    assert!(agent.logs().contains("restored"), "{}", agent.logs());
    assert!(agent.terminate().success());
}

#[test]
fn local_repo_changes_trigger_an_immediate_reconcile() {
    let port = free_port();
    // An hour between polls: only the file watch can explain a prompt apply.
    let LocalSite { repo, agent, _work } = local_site(
        &[("apps/a.yaml", http_app("shop", "web", port, "one", ""))],
        "1h",
    );
    wait_body(port, "/", "one", T).unwrap();

    // Replace the component itself (v1 → v2) while a client keeps asking: no request is lost.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/version") {
                    Ok((200, _)) => {}
                    other => failures.push(format!("{other:?}")),
                }
                n += 1;
            }
            (n, failures)
        })
    };
    let v2 = std::fs::read(probe_http_v2()).unwrap();
    repo.commit_files(&[("components/probe.wasm", &v2)], "component v2")
        .unwrap();
    // With a 1h poll interval, only the file watch can make this happen within 20 s.
    wait_body(port, "/version", "v2", Duration::from_secs(20)).unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (n, failures) = hammer.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed during the switch: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(agent.terminate().success());
}

#[test]
fn runaway_components_are_cut_off_while_others_keep_serving() {
    let (p1, p2) = (free_port(), free_port());
    let limits = "      limits: {memory: 16Mi, cpuTimePerRequest: 5s}\n";
    let LocalSite {
        agent,
        _work,
        repo: _repo,
    } = local_site(
        &[
            ("apps/a.yaml", http_app("wild", "web", p1, "wild", limits)),
            ("apps/b.yaml", http_app("calm", "web", p2, "calm", "")),
        ],
        "1s",
    );
    wait_body(p1, "/", "wild", T).unwrap();
    let a1 = SocketAddr::from(([127, 0, 0, 1], p1));
    let a2 = SocketAddr::from(([127, 0, 0, 1], p2));
    let spinner = std::thread::spawn(move || {
        let t = Instant::now();
        (http_get(a1, "/spin").map(|r| r.0), t.elapsed())
    });
    // Give the spinning request time to be running, then check that the other workload and
    // the same one keep answering while it spins (its budget is 5 s: long enough for the
    // requests below on a busy machine).
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        assert_eq!(http_get(a2, "/").unwrap().0, 200);
    }
    assert_eq!(http_get(a1, "/").unwrap().0, 200);
    assert!(!spinner.is_finished(), "the spin should still be running");
    let (spin, took) = spinner.join().unwrap();
    assert!(matches!(spin, Ok(code) if code >= 500), "{spin:?}");
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(20),
        "spin was cut off after {took:?}, budget 5 s"
    );
    // Unbounded allocation hits the 16 MiB limit.
    let allocator = std::thread::spawn(move || http_get(a1, "/alloc").map(|r| r.0));
    let alloc = allocator.join().unwrap();
    assert!(matches!(alloc, Ok(code) if code >= 500), "{alloc:?}");
    assert_eq!(http_get(a1, "/").unwrap().0, 200);
    assert!(agent.terminate().success());
}

#[test]
fn force_push_is_refused_and_reported() {
    let port = free_port();
    let LocalSite { repo, agent, _work } = local_site(
        &[("apps/a.yaml", http_app("shop", "web", port, "kept", ""))],
        "200ms",
    );
    let first = repo.rev_parse("HEAD~1").unwrap();
    repo.force_reset(&first).unwrap();
    commit(
        &repo,
        &[(
            "apps/a.yaml",
            &http_app("shop", "web", port, "rewritten", ""),
        )],
        "rewritten history",
    );
    let s = agent.wait_status(T, "force-push refused", |s| {
        s["lastError"]["stage"] == "verify"
    });
    assert!(
        s["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("does not descend from the applied commit"),
        "{s:#}"
    );
    wait_body(port, "/", "kept", Duration::from_secs(2)).unwrap();
    assert!(agent.terminate().success());
}

#[test]
fn a_component_that_cannot_start_or_a_hostile_tree_holds_the_release() {
    let port = free_port();
    let LocalSite { repo, agent, _work } = local_site(
        &[("apps/a.yaml", http_app("shop", "web", port, "good", ""))],
        "200ms",
    );
    // Not a component at all: compiling fails, the release is held, the old version serves.
    let bad = repo
        .commit_files(
            &[
                ("components/probe.wasm", b"\0asm\x01\0\0\0garbage"),
                (
                    "apps/a.yaml",
                    http_app("shop", "web", port, "bad", "").as_bytes(),
                ),
            ],
            "broken component",
        )
        .unwrap();
    let s = agent.wait_status(T, "broken component refused", |s| {
        s["lastError"]["commit"].as_str() == Some(bad.as_str())
    });
    assert_eq!(s["lastError"]["stage"], "prepare", "{s:#}");
    assert!(
        s["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("shop/web"),
        "{s:#}"
    );
    wait_body(port, "/", "good", Duration::from_secs(2)).unwrap();

    // A symlink out of the repo: the tree is refused, naming the path.
    let good_app = http_app("shop", "web", port, "good", "");
    let fixed = repo
        .commit_files(
            &[
                ("components/probe.wasm", &probe()),
                ("apps/a.yaml", good_app.as_bytes()),
            ],
            "fix component",
        )
        .unwrap();
    agent.wait_status(T, "fixed release", applied(&fixed));
    repo.symlink("sites/passwd.yaml", "../../../../etc/passwd")
        .unwrap();
    let evil = commit(
        &repo,
        &[("apps/a.yaml", &http_app("shop", "web", port, "evil", ""))],
        "symlink",
    );
    let s = agent.wait_status(T, "symlink refused", |s| {
        s["lastError"]["commit"].as_str() == Some(evil.as_str())
    });
    assert!(
        s["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("sites/passwd.yaml"),
        "{s:#}"
    );
    wait_body(port, "/", "good", Duration::from_secs(2)).unwrap();
    assert_eq!(s["appliedCommit"].as_str(), Some(fixed.as_str()));
    assert!(agent.terminate().success());
}

#[test]
fn a_lock_file_left_in_the_mirror_by_a_kill_does_not_stop_the_site_following() {
    let port = free_port();
    let LocalSite { repo, agent, _work } = local_site(
        &[("apps/a.yaml", http_app("shop", "web", port, "one", ""))],
        "200ms",
    );
    wait_body(port, "/", "one", T).unwrap();
    let state = agent.state_dir.clone();
    agent.kill9();
    // What a kill -9 in the middle of a fetch leaves: libgit2 refuses to move a locked ref.
    let lock = state.join("git/refs/fleetlet/fetched.lock");
    std::fs::write(&lock, b"").unwrap();
    let c2 = commit(
        &repo,
        &[("apps/a.yaml", &http_app("shop", "web", port, "two", ""))],
        "release two",
    );
    let agent = Agent::start(&_work.path().join("agent.yaml"));
    agent.wait_status(T, "release two applied", applied(&c2));
    wait_body(port, "/", "two", T).unwrap();
    assert!(!lock.exists());
    assert!(
        agent
            .logs()
            .contains("removed a lock file a killed Git write left"),
        "{}",
        agent.logs()
    );
    assert!(agent.terminate().success());
}

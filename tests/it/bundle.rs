//! Air-gap sync bundles end to end: bundles made by `fleetlet bundle create` from a real Git
//! server (`git daemon`) and a real registry (Debian's `docker-registry`), carried to a site
//! whose agent has no Git remote and no reachable registry, imported through its inbox or by
//! `fleetlet bundle import`; deltas on top; and every bad input rejected with nothing changed.

use crate::testkit::agent::{Agent, fleetlet_bin, http_app, site_yaml, wait_body};
use crate::testkit::components::{free_port, http_get, probe_http, probe_http_v2};
use crate::testkit::git::{GitDaemon, TestRepo, ssh_signing_key};
use crate::testkit::registry::TestRegistry;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub(crate) const T: Duration = Duration::from_secs(60);
pub(crate) const PASSWORD: &str = "bundle test passphrase";

// ---------------------------------------------------------------------------------------------
// Helpers

fn run(args: &[&str]) -> Output {
    Command::new(fleetlet_bin())
        .args(args)
        .env("FLEETLET_PASSWORD", PASSWORD)
        .env_remove("COSIGN_PASSWORD")
        .env_remove("FLEETLET_CONFIG")
        .output()
        .expect("running fleetlet")
}

pub(crate) fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "fleetlet {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    ok(&["keygen", "--out", prefix.to_str().unwrap()]);
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

fn image_app(app: &str, workload: &str, port: u16, greeting: &str, image: &str) -> String {
    http_app(app, workload, port, greeting, "").replace("components/probe.wasm", image)
}

/// The operator's side: a registry with signed components, a fleet repo with signed commits
/// served by `git daemon`, and the keys.
pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    registry: Option<TestRegistry>,
    daemon: Option<GitDaemon>,
    repo: TestRepo,
    ssh_key: PathBuf,
    pub(crate) release_key: PathBuf,
    release_pub: PathBuf,
    pub(crate) courier_key: PathBuf,
    courier_pub: PathBuf,
    pub(crate) port: u16,
}

impl Fleet {
    pub(crate) fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let registry = TestRegistry::start().unwrap();
        let (release_key, release_pub) = keygen(dir.path(), "release");
        let (courier_key, courier_pub) = keygen(dir.path(), "courier");
        let ssh_key = ssh_signing_key(dir.path(), "alice").unwrap();
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        let repo = TestRepo::new_in(&dir.path().join("repos"), "fleet").unwrap();
        let daemon = GitDaemon::start(&dir.path().join("repos")).unwrap();
        Fleet {
            registry: Some(registry),
            daemon: Some(daemon),
            repo,
            ssh_key,
            release_key,
            release_pub,
            courier_key,
            courier_pub,
            port: free_port(),
            dir,
        }
    }

    fn url(&self) -> String {
        self.daemon.as_ref().unwrap().url_for("fleet")
    }

    pub(crate) fn image(&self, tag: &str) -> String {
        format!(
            "{}/fleet/probe:{tag}",
            self.registry.as_ref().unwrap().host()
        )
    }

    /// Pushes and signs a component; the pinned reference.
    pub(crate) fn publish(&self, file: &Path, tag: &str) -> String {
        let reference = self.image(tag);
        let pinned = ok(&["push", file.to_str().unwrap(), &reference])
            .trim()
            .to_string();
        ok(&["sign", &pinned, "--key", self.release_key.to_str().unwrap()]);
        pinned
    }

    /// The fleet repo's files for a release: sites store-1 and store-2 (label `ring`), the app
    /// on `image`.
    fn release_files(&self, image: &str, greeting: &str) -> [(&'static str, String); 3] {
        let s1 = site_yaml("store-1", "wasm").replace("{tier: store}", "{tier: store, ring: a}");
        let s2 = site_yaml("store-2", "wasm").replace("{tier: store}", "{tier: store, ring: b}");
        let app = image_app("shop", "web", self.port, greeting, image);
        [
            ("sites/store-1.yaml", s1),
            ("sites/store-2.yaml", s2),
            ("apps/shop.yaml", app),
        ]
    }

    /// A signed commit: sites store-1 and store-2 (label `ring`), the app on `image`.
    pub(crate) fn release(&self, image: &str, greeting: &str, msg: &str) -> String {
        let files = self.release_files(image, greeting);
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
        self.repo.commit_signed(&files, msg, &self.ssh_key).unwrap()
    }

    /// The same release as [`Self::release`], committed without a signature.
    pub(crate) fn release_unsigned(&self, image: &str, greeting: &str, msg: &str) -> String {
        let files = self.release_files(image, greeting);
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
        self.repo.commit_files(&files, msg).unwrap()
    }

    pub(crate) fn create(&self, out: &str, extra: &[&str]) -> PathBuf {
        let path = self.dir.path().join(out);
        let mut args = vec!["bundle", "create", "--repo"];
        let url = self.url();
        args.push(&url);
        let key = self.courier_key.to_str().unwrap().to_string();
        let out_s = path.to_str().unwrap().to_string();
        args.extend(["--key", &key, "--out", &out_s]);
        args.extend(extra);
        ok(&args);
        path
    }

    /// The air gap: the site can reach neither the Git server nor the registry.
    pub(crate) fn cut_off(&mut self) {
        self.daemon.take().unwrap().stop();
        drop(self.registry.take());
    }

    /// A site config that takes releases from bundles only, trusting the release key for
    /// artifacts, the courier key for bundles and alice for commits.
    pub(crate) fn site_config(&self, site: &str, dir: &Path, inbox: Option<&Path>) -> PathBuf {
        let public = std::fs::read_to_string(self.ssh_key.with_extension("pub")).unwrap();
        let allowed = dir.join("allowed_signers");
        std::fs::write(
            &allowed,
            format!("alice namespaces=\"git\" {}\n", public.trim()),
        )
        .unwrap();
        let status_port = free_port();
        let inbox = inbox
            .map(|p| format!("    inbox: {}\n", p.display()))
            .unwrap_or_default();
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: fleetlet.dev/v1alpha1\nkind: AgentConfig\nsite: {site}\nstateDir: {state}\n\
                 source:\n  bundles:\n{inbox}    settle: 1s\n    interval: 500ms\n\
                 runtimes:\n  wasm:\n    bindAddress: 127.0.0.1\nlisten:\n  status: 127.0.0.1:{status_port}\n\
                 trust:\n  keys: {{release: {release}, courier: {courier}}}\n\
                 \x20 commitSigners: {{allowedSigners: {allowed}}}\n\
                 \x20 artifacts: {{require: signed, signers: [release]}}\n\
                 \x20 commits: {{require: signed, signers: [alice]}}\n\
                 \x20 bundles: {{signers: [courier]}}\n",
                state = dir.join("state").display(),
                release = self.release_pub.display(),
                courier = self.courier_pub.display(),
                allowed = allowed.display(),
            ),
        )
        .unwrap();
        config
    }
}

/// Copies `files` into `inbox` the way a slow USB copy would: the first half, a pause longer
/// than nothing but well short of the settle time (1 s: the margin is for a busy machine), then
/// the rest.
pub(crate) fn drop_into(inbox: &Path, files: &[PathBuf]) {
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        let target = inbox.join(f.file_name().unwrap());
        let half = bytes.len() / 2;
        std::fs::write(&target, &bytes[..half]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .unwrap();
        file.write_all(&bytes[half..]).unwrap();
    }
}

/// Puts `files` into `inbox` whole at once, as a copy tool that writes a temporary name and
/// renames it does: for tests about what a bundle holds, not how it arrives.
pub(crate) fn place_into(inbox: &Path, files: &[PathBuf]) {
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let temp = inbox.join(format!(".{name}.tmp"));
        std::fs::copy(f, &temp).unwrap();
        std::fs::rename(&temp, inbox.join(&name)).unwrap();
    }
}

/// Waits for `name` to appear in `inbox/<sub>/` with its reason or result file; its text.
pub(crate) fn wait_filed(agent: &Agent, inbox: &Path, sub: &str, name: &str) -> String {
    let suffix = if sub == "done" { "result" } else { "reason" };
    let note = inbox.join(sub).join(format!("{name}.{suffix}"));
    let deadline = Instant::now() + T;
    while !note.exists() {
        if Instant::now() > deadline {
            panic!(
                "{name} never reached {sub}/; inbox: {:?}\nlogs:\n{}",
                std::fs::read_dir(inbox)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>(),
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        inbox.join(sub).join(name).exists(),
        "the bundle moved with its note"
    );
    assert!(!inbox.join(name).exists(), "the bundle left the inbox");
    std::fs::read_to_string(note).unwrap()
}

pub(crate) fn applied(commit: &str) -> impl Fn(&Value) -> bool + '_ {
    move |s| s["appliedCommit"].as_str() == Some(commit)
}

pub(crate) fn tree_digest(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    meta.len(),
                ));
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// The whole path

#[test]
fn a_signed_bundle_brings_an_air_gapped_site_up_and_a_delta_moves_it_on() {
    let mut fleet = Fleet::new();
    let v1 = fleet.publish(&probe_http(), "v1");
    let c1 = fleet.release(&fleet.image("v1"), "one", "release one");
    let full = fleet.create("r1.bundle", &["--rev", "main", "--site", "store-1"]);
    // Deterministic: the same inputs, byte for byte.
    let again = fleet.create("r1-again.bundle", &["--rev", "main", "--site", "store-1"]);
    assert_eq!(
        std::fs::read(&full).unwrap(),
        std::fs::read(&again).unwrap()
    );

    let v2 = fleet.publish(&probe_http_v2(), "v2");
    let c2 = fleet.release(&fleet.image("v2"), "two", "release two");
    let delta = fleet.create(
        "r2-delta.bundle",
        &["--rev", "main", "--selector", "ring=a", "--since", &c1],
    );
    let other_site = fleet.create("r2-store-2.bundle", &["--rev", "main", "--site", "store-2"]);
    let info: Value = serde_json::from_str(&ok(&[
        "bundle",
        "inspect",
        delta.to_str().unwrap(),
        "--key",
        fleet.courier_pub.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(info["verified"], true, "{info:#}");
    assert_eq!(info["meta"]["since"], c1.as_str(), "{info:#}");
    assert_eq!(info["meta"]["commit"], c2.as_str(), "{info:#}");
    assert_eq!(
        info["meta"]["sites"],
        serde_json::json!(["store-1"]),
        "{info:#}"
    );
    assert_eq!(
        info["meta"]["artifacts"][0]["pinned"],
        v2.as_str(),
        "{info:#}"
    );
    let full_size = std::fs::metadata(&full).unwrap().len();
    let delta_size = std::fs::metadata(&delta).unwrap().len();
    let v2_size = std::fs::metadata(probe_http_v2()).unwrap().len();
    assert!(
        delta_size < v2_size + (64 << 10),
        "a delta carries the changed component and little else: {delta_size} bytes for a {v2_size}-byte component (full bundle: {full_size})"
    );
    let text = ok(&["bundle", "inspect", full.to_str().unwrap()]);
    assert!(
        text.contains("store-1") && text.contains(&c1) && text.contains(&v1),
        "{text}"
    );

    fleet.cut_off();
    let site = tempfile::tempdir().unwrap();
    let inbox = site.path().join("inbox");
    let config = fleet.site_config("store-1", site.path(), Some(&inbox));
    let agent = Agent::start(&config);
    agent.wait_status(T, "agent up, nothing imported", |s| s["site"] == "store-1");

    drop_into(&inbox, std::slice::from_ref(&full));
    let note = wait_filed(&agent, &inbox, "done", "r1.bundle");
    assert!(note.starts_with("imported: commit "), "{note}");
    let s = agent.wait_status(T, "release one applied from the bundle", applied(&c1));
    wait_body(fleet.port, "/", "one", T).unwrap();
    assert_eq!(s["commitSigners"][0]["identity"], "alice", "{s:#}");
    assert_eq!(
        s["workloads"][0]["signers"][0]["identity"], "release",
        "{s:#}"
    );

    // A bundle made for another site is refused; nothing changes.
    let store_before = tree_digest(&agent.state_dir.join("oci"));
    drop_into(&inbox, std::slice::from_ref(&other_site));
    let reason = wait_filed(&agent, &inbox, "rejected", "r2-store-2.bundle");
    assert!(reason.contains("not for store-1"), "{reason}");
    assert_eq!(tree_digest(&agent.state_dir.join("oci")), store_before);

    // The delta moves the site to release two.
    drop_into(&inbox, std::slice::from_ref(&delta));
    wait_filed(&agent, &inbox, "done", "r2-delta.bundle");
    agent.wait_status(T, "release two applied from the delta", applied(&c2));
    wait_body(fleet.port, "/", "two", T).unwrap();

    // The older full bundle again: a rollback, refused.
    let replay = site.path().join("replay.bundle");
    std::fs::copy(&full, &replay).unwrap();
    drop_into(&inbox, &[replay]);
    let reason = wait_filed(&agent, &inbox, "rejected", "replay.bundle");
    assert!(reason.contains("does not descend"), "{reason}");
    let s = agent.status();
    assert_eq!(s["appliedCommit"].as_str(), Some(c2.as_str()), "{s:#}");

    // The reason shows in `fleetlet status` and in the metrics.
    let text = ok(&["status", "--config", config.to_str().unwrap()]);
    assert!(
        text.contains("last bundle:     rejected replay.bundle")
            && text.contains("does not descend"),
        "{text}"
    );
    let (code, metrics) = http_get(agent.status_addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    for line in [
        "fleetlet_bundle_imports_total{outcome=\"imported\"} 2",
        "fleetlet_bundle_imports_total{outcome=\"rejected\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // The return path: a status file signed by the site key, readable by inspect.
    let status_file = site.path().join("status.fleetlet");
    ok(&[
        "bundle",
        "export-status",
        "--config",
        config.to_str().unwrap(),
        "--out",
        status_file.to_str().unwrap(),
    ]);
    let back: Value = serde_json::from_str(&ok(&[
        "bundle",
        "inspect",
        status_file.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(back["site"], "store-1", "{back:#}");
    assert_eq!(back["status"]["appliedCommit"], c2.as_str(), "{back:#}");
    let outcomes: Vec<&str> = back["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["imported", "rejected", "imported", "rejected"],
        "{back:#}"
    );
    // The audit records of the period travel with it: both releases applied, each with who
    // signed the commit and the artifact.
    let applied_commits: Vec<&str> = back["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["type"] == "entry" && l["action"] == "applied")
        .map(|l| l["commit"].as_str().unwrap())
        .collect();
    assert_eq!(applied_commits, [c1.as_str(), c2.as_str()], "{back:#}");
    assert!(agent.terminate().success());
}

/// Starts `fleetlet bundle import` of a named pipe carrying the bundle made of `parts`, lets it
/// read the head (the command's size check) and kills it (-9) once it is importing, waiting for
/// more. Checks nothing was published; returns the pipe's name.
fn kill_an_import_midway(config: &Path, site: &Path, parts: &[PathBuf]) -> String {
    use std::io::Write;
    let fifo = site.join("stuck.bundle");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let bytes: Vec<u8> = parts
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    let mut child = Command::new(fleetlet_bin())
        .args(["bundle", "import", "--config"])
        .arg(config)
        .arg(&fifo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The head read (which may stop early: a broken pipe is expected).
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .and_then(|mut f| f.write_all(&bytes));
        })
    };
    writer.join().unwrap();
    // Then the import proper opens the pipe again, and waits for a writer that never comes.
    let marker = site.join("state/bundles/attempt.json");
    let deadline = Instant::now() + T;
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the import ended ({status}) before it was killed");
        }
        assert!(Instant::now() < deadline, "the import never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(marker.exists(), "a killed import leaves its marker");
    let git_head = site.join("state/git/refs/heads/main");
    assert!(!git_head.exists(), "nothing was published");
    std::fs::remove_file(&fifo).unwrap();
    "stuck.bundle".to_string()
}

#[test]
fn a_split_bundle_waits_for_its_last_part_and_imports_by_hand_too() {
    let mut fleet = Fleet::new();
    fleet.publish(&probe_http(), "v1");
    let c1 = fleet.release(&fleet.image("v1"), "one", "release one");
    let base = fleet.create(
        "small.bundle",
        &[
            "--rev",
            "main",
            "--site",
            "store-1",
            "--site",
            "store-2",
            "--max-size",
            "8Ki",
        ],
    );
    assert!(!base.exists(), "split bundles are only parts");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(base.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("small.bundle.part-"))
        .collect();
    parts.sort();
    assert!(parts.len() >= 3, "{parts:?}");
    assert!(
        parts
            .iter()
            .all(|p| std::fs::metadata(p).unwrap().len() <= 8 << 10)
    );
    fleet.cut_off();

    // By hand, on a site with no agent running: every part, in any order.
    let by_hand = tempfile::tempdir().unwrap();
    let config = fleet.site_config("store-2", by_hand.path(), None);
    // But first an import killed mid-way (kill -9 while it waits on a pipe that stalls like a
    // failing USB stick): nothing of it is published, and the next import records it.
    let stuck = kill_an_import_midway(&config, by_hand.path(), &parts);
    let mut reversed: Vec<&str> = parts.iter().rev().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec![
        "bundle",
        "import",
        "--config",
        config.to_str().unwrap(),
        "-o",
        "json",
    ];
    args.append(&mut reversed);
    let imported: Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(imported["commit"], c1.as_str(), "{imported:#}");
    let records: Vec<Value> =
        std::fs::read_to_string(by_hand.path().join("state/bundles/imports.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0]["outcome"], "interrupted", "{records:#?}");
    assert_eq!(records[0]["files"], serde_json::json!([stuck]));
    assert!(
        records[0]["reason"]
            .as_str()
            .unwrap()
            .contains("never finished"),
        "{records:#?}"
    );
    assert_eq!(records[1]["outcome"], "imported", "{records:#?}");
    assert!(!by_hand.path().join("state/bundles/attempt.json").exists());
    assert_eq!(
        imported["commitSigners"][0]["identity"], "alice",
        "{imported:#}"
    );
    // Missing a middle part: refused by name, and nothing was imported twice.
    let gap: Vec<&str> = [&parts[0], &parts[2]]
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect();
    let out = run(&[
        &["bundle", "import", "--config", config.to_str().unwrap()][..],
        &gap[..],
    ]
    .concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("part 2 of"),
        "{out:?}"
    );

    // Through the inbox: the first part alone (it could be a whole bundle by its numbers) is
    // waited on, not rejected.
    let site = tempfile::tempdir().unwrap();
    let inbox = site.path().join("inbox");
    let config = fleet.site_config("store-1", site.path(), Some(&inbox));
    let agent = Agent::start(&config);
    agent.wait_status(T, "agent up", |s| s["site"] == "store-1");
    let (first, rest) = parts.split_at(1);
    drop_into(&inbox, first);
    let log = agent.state_dir.join("bundles/imports.jsonl");
    let deadline = Instant::now() + T;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("incomplete")
    {
        assert!(
            Instant::now() < deadline,
            "no incomplete import recorded:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));
    for p in first {
        assert!(
            inbox.join(p.file_name().unwrap()).exists(),
            "still waiting in the inbox"
        );
    }
    assert!(agent.status()["appliedCommit"].is_null());
    drop_into(&inbox, rest);
    let note = inbox.join("done").join("small.bundle.result");
    let deadline = Instant::now() + T;
    while !note.exists() {
        assert!(
            Instant::now() < deadline,
            "never imported:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &parts {
        assert!(inbox.join("done").join(p.file_name().unwrap()).exists());
    }
    agent.wait_status(T, "release applied from the split bundle", applied(&c1));
    wait_body(fleet.port, "/", "one", T).unwrap();
    assert!(agent.terminate().success());
}

#[test]
fn a_site_inventory_carried_back_lets_the_next_bundle_leave_out_what_the_site_has() {
    let fleet = Fleet::new();
    fleet.publish(&probe_http(), "v1");
    fleet.release(&fleet.image("v1"), "one", "release one");
    let r1 = fleet.create("r1.bundle", &["--rev", "main", "--site", "store-1"]);
    let site = tempfile::tempdir().unwrap();
    let config = fleet.site_config("store-1", site.path(), None);
    let config_s = config.to_str().unwrap();
    ok(&[
        "bundle",
        "import",
        r1.to_str().unwrap(),
        "--config",
        config_s,
    ]);
    // export-status needs the status the agent publishes: run the agent once.
    let agent = Agent::start(&config);
    agent.wait_status(T, "release one applied", |s| !s["appliedCommit"].is_null());
    assert!(agent.terminate().success());

    let status = site.path().join("status.fleetlet");
    ok(&[
        "bundle",
        "export-status",
        "--config",
        config_s,
        "--out",
        status.to_str().unwrap(),
    ]);
    let site_pub = site.path().join("state/site.pub");
    let back: Value = serde_json::from_str(&ok(&[
        "bundle",
        "inspect",
        status.to_str().unwrap(),
        "--key",
        site_pub.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(back["imports"].as_array().unwrap().len(), 1, "{back:#}");
    // Signed by the site key: another key is refused by name.
    let out = run(&[
        "bundle",
        "inspect",
        status.to_str().unwrap(),
        "--key",
        fleet.courier_pub.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signed by key"),
        "{out:?}"
    );
    // Records since a later time: none.
    let later = site.path().join("later.fleetlet");
    ok(&[
        "bundle",
        "export-status",
        "--config",
        config_s,
        "--out",
        later.to_str().unwrap(),
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    let none: Value = serde_json::from_str(&ok(&[
        "bundle",
        "inspect",
        later.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(none["imports"], serde_json::json!([]), "{none:#}");

    // Release two keeps v1 for the shop and adds a second app on v2: the bundle carries full
    // Git history but leaves out every blob the inventory lists (v1's among them).
    fleet.publish(&probe_http_v2(), "v2");
    let mut files = fleet.release_files(&fleet.image("v1"), "one").to_vec();
    files.push((
        "apps/extra.yaml",
        image_app("extra", "web", free_port(), "x", &fleet.image("v2")),
    ));
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
    let c2 = fleet
        .repo
        .commit_signed(&files, "release two", &fleet.ssh_key)
        .unwrap();
    let full = fleet.create("r2-full.bundle", &["--rev", "main", "--site", "store-1"]);
    let slim = fleet.create(
        "r2-slim.bundle",
        &[
            "--rev",
            "main",
            "--site",
            "store-1",
            "--site-inventory",
            status.to_str().unwrap(),
        ],
    );
    let info: Value = serde_json::from_str(&ok(&[
        "bundle",
        "inspect",
        slim.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(
        info["meta"]["omittedBlobs"].as_u64().unwrap() >= 1,
        "{info:#}"
    );
    assert!(info["meta"]["since"].is_null(), "{info:#}");
    let (full_n, slim_n) = (
        serde_json::from_str::<Value>(&ok(&[
            "bundle",
            "inspect",
            full.to_str().unwrap(),
            "-o",
            "json",
        ]))
        .unwrap()["entries"]
            .as_u64()
            .unwrap(),
        info["entries"].as_u64().unwrap(),
    );
    assert!(slim_n < full_n, "{slim_n} vs {full_n}");
    let imported: Value = serde_json::from_str(&ok(&[
        "bundle",
        "import",
        slim.to_str().unwrap(),
        "--config",
        config_s,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(imported["commit"], c2.as_str(), "{imported:#}");

    // On a site that lacks those blobs the same slim bundle is refused, naming what is missing.
    let other = tempfile::tempdir().unwrap();
    let other_config = fleet.site_config("store-1", other.path(), None);
    let out = run(&[
        "bundle",
        "import",
        slim.to_str().unwrap(),
        "--config",
        other_config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither in the bundle nor on the site"),
        "{err}"
    );
    assert!(
        !other.path().join("state/git/refs/fleetlet").exists(),
        "nothing published"
    );
}

#[test]
fn import_on_a_site_that_follows_git_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::testkit::agent::write_config(dir.path(), "store-1", "/nowhere", "1s", "");
    let bundle = dir.path().join("x.bundle");
    std::fs::write(&bundle, b"not even a bundle").unwrap();
    let out = run(&[
        "bundle",
        "import",
        bundle.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("source.bundles"),
        "{out:?}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was created");
}

/// Every manifest `oci/index.json` names is there with the blobs it refers to: names never
/// point at content that has not fully landed.
fn assert_store_whole(oci: &Path, round: usize) {
    let Ok(index) = std::fs::read(oci.join("index.json")) else {
        return;
    };
    let index: Value = serde_json::from_slice(&index).unwrap();
    let blob = |digest: &str| {
        oci.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let mut pending: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    while let Some(digest) = pending.pop() {
        let bytes = std::fs::read(blob(&digest))
            .unwrap_or_else(|e| panic!("round {round}: {digest} is named but missing: {e}"));
        let manifest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        for child in manifest["manifests"].as_array().into_iter().flatten() {
            pending.push(child["digest"].as_str().unwrap().to_string());
        }
        for child in manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(manifest.get("config"))
        {
            let d = child["digest"].as_str().unwrap();
            assert!(blob(d).exists(), "round {round}: {d} of {digest} missing");
        }
    }
}

/// `fleetlet bundle import` of `bundle`, returned once it has begun importing (its marker is
/// in `state`) or has already ended.
fn start_import(config: &Path, bundle: &str, state: &Path) -> std::process::Child {
    let mut child = Command::new(fleetlet_bin())
        .args(["bundle", "import", "--config"])
        .arg(config)
        .arg(bundle)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let marker = state.join("bundles/attempt.json");
    let deadline = Instant::now() + T;
    while !marker.exists() && child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the import never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

fn main_ref(state: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(state.join("git"))
        .args(["rev-parse", "--verify", "-q", "refs/heads/main"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn an_import_killed_at_any_moment_leaves_the_release_unpublished_or_whole() {
    let mut fleet = Fleet::new();
    fleet.publish(&probe_http(), "v1");
    let c1 = fleet.release(&fleet.image("v1"), "one", "release one");
    let bundle = fleet.create("r1.bundle", &["--rev", "main", "--site", "store-1"]);
    let c2 = fleet.release(&fleet.image("v1"), "two", "release two");
    let second = fleet.create("r2.bundle", &["--rev", "main", "--site", "store-1"]);
    fleet.cut_off();
    let bundle_s = bundle.to_str().unwrap();

    // An import left to finish: what every interrupted one must come to after a retry.
    let clean = tempfile::tempdir().unwrap();
    let config = fleet.site_config("store-1", clean.path(), None);
    let state = clean.path().join("state");
    // Timed as the kills are placed: from the moment its marker appears to its exit.
    let mut child = start_import(&config, bundle_s, &state);
    let started = Instant::now();
    assert!(child.wait().unwrap().success());
    let took = started.elapsed();
    let whole_blobs = tree_digest(&state.join("oci/blobs"));
    assert_eq!(main_ref(&state).as_deref(), Some(c1.as_str()));

    let mut seed = 11u64;
    let (mut mid_import, mut published) = (0, 0);
    const ROUNDS: usize = 16;
    for round in 0..ROUNDS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // From the moment the import starts to a little past when it would have finished.
        let delay = took.mul_f64(((seed >> 33) % 1000) as f64 / 1000.0 * 1.1);
        let site = tempfile::tempdir().unwrap();
        let config = fleet.site_config("store-1", site.path(), None);
        let config_s = config.to_str().unwrap();
        let state = site.path().join("state");
        let marker = state.join("bundles/attempt.json");
        let mut child = start_import(&config, bundle_s, &state);
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        // Killed mid-import: the marker is still there. Unless the import had already recorded
        // its outcome (killed just before removing the marker), the next one records it.
        let recorded = std::fs::read_to_string(state.join("bundles/imports.jsonl"))
            .is_ok_and(|log| !log.trim().is_empty());
        mid_import += usize::from(marker.exists());
        let interrupted = marker.exists() && !recorded;

        // Old state or new: the branch (what the agent follows) is absent or the release,
        // and whatever the store names is whole.
        let head = main_ref(&state);
        assert!(
            head.is_none() || head.as_deref() == Some(c1.as_str()),
            "round {round}: branch at {head:?}"
        );
        published += usize::from(head.is_some());
        assert!(
            !(status.success() && head.is_none()),
            "round {round}: finished yet unpublished"
        );
        assert_store_whole(&state.join("oci"), round);
        if state.join("oci").exists() {
            let (code, out, err) = crate::testkit::agent::fleetlet(&[
                "cache",
                "verify",
                "--state-dir",
                state.to_str().unwrap(),
            ]);
            assert_eq!(code, 0, "round {round}: {out}{err}");
        }

        // Trying again finishes the job, and says what happened before.
        let out = run(&["bundle", "import", "--config", config_s, bundle_s]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() || head.is_some(),
            "round {round}: the retry failed: {text}"
        );
        assert_eq!(
            main_ref(&state).as_deref(),
            Some(c1.as_str()),
            "round {round}"
        );
        assert_eq!(
            tree_digest(&state.join("oci/blobs")),
            whole_blobs,
            "round {round}: the store differs from an uninterrupted import's"
        );
        let log = std::fs::read_to_string(state.join("bundles/imports.jsonl")).unwrap();
        assert_eq!(
            log.contains("\"interrupted\""),
            interrupted,
            "round {round}: {log}"
        );
        assert!(!marker.exists(), "round {round}");
    }
    eprintln!(
        "{mid_import} of {ROUNDS} kills landed mid-import; {published} after the branch moved \
         (an uninterrupted import ran {took:?} from its marker to its exit)"
    );
    // A kill between locking the branch and moving it leaves a lock file that would refuse
    // every later import: the next import clears it.
    let lock = state.join("git/refs/heads/main.lock");
    std::fs::write(&lock, c1.as_bytes()).unwrap();
    let config = clean.path().join("agent.yaml");
    ok(&[
        "bundle",
        "import",
        "--config",
        config.to_str().unwrap(),
        second.to_str().unwrap(),
    ]);
    assert_eq!(main_ref(&state).as_deref(), Some(c2.as_str()));
    assert!(!lock.exists());
    assert!(
        mid_import >= 3,
        "only {mid_import} of {ROUNDS} kills landed mid-import: the test lost its point"
    );
}

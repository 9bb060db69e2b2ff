//! The agent under a trust policy: signed commits and artifacts, held releases, rollback and
//! freeze protection, offline re-verification.
//!
//! Every test runs the real `fleetlet agent` against a real Git repo (and, for image components,
//! a real registry), with keys made by `fleetlet keygen` / `ssh-keygen` and signatures made by
//! `fleetlet sign` / `git commit -S`, and checks what really serves over HTTP and what the status
//! says.

use crate::testkit::agent::{
    Agent, fleetlet, fleetlet_bin, http_app, site_yaml, wait_body, write_config_with_trust,
};
use crate::testkit::components::{free_port, http_get, probe_http, probe_http_v2};
use crate::testkit::git::{TestRepo, ssh_signing_key};
use crate::testkit::registry::TestRegistry;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple";

// ---------------------------------------------------------------------------------------------
// Helpers

/// `fleetlet keygen --out DIR/NAME`: (private key, public key).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let out = Command::new(fleetlet_bin())
        .args(["keygen", "--out"])
        .arg(&prefix)
        .env("FLEETLET_PASSWORD", PASSWORD)
        .env_remove("COSIGN_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {out:?}");
    let (key, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    assert!(key.exists() && public.exists());
    (key, public)
}

/// `fleetlet sign REF --key KEY`.
fn sign(reference: &str, key: &Path) {
    let out = Command::new(fleetlet_bin())
        .args(["sign", reference, "--key"])
        .arg(key)
        .env("FLEETLET_PASSWORD", PASSWORD)
        .env_remove("COSIGN_PASSWORD")
        .env_remove("FLEETLET_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "sign {reference}: {out:?}");
}

/// `fleetlet push FILE REF`: the pinned reference.
fn push(file: &Path, reference: &str) -> String {
    let (code, out, err) = fleetlet(&["push", file.to_str().unwrap(), reference]);
    assert_eq!(code, 0, "{out}{err}");
    out.trim().to_string()
}

/// The manifest digest of a pinned reference (`…@sha256:hex`).
fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').unwrap().1
}

/// The tag cosign keeps signatures of `digest` at.
fn sig_tag(digest: &str) -> String {
    digest.replace(':', "-") + ".sig"
}

/// An app whose one http workload runs an image component.
fn image_app(app: &str, workload: &str, port: u16, greeting: &str, image: &str) -> String {
    http_app(app, workload, port, greeting, "").replace("components/probe.wasm", image)
}

/// A site with extra labels next to `tier: store`.
fn labelled_site(name: &str, labels: &str) -> String {
    site_yaml(name, "wasm").replace("{tier: store}", &format!("{{tier: store, {labels}}}"))
}

/// A `trust:` section.
fn trust(body: &str) -> String {
    format!("trust:\n{body}")
}

/// The trust section of agents that require signed artifacts by the named keys (unsigned
/// commits accepted).
fn artifact_trust(keys: &[(&str, &Path)], extra: &str) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(n, p)| format!("{n}: {}", p.display()))
        .collect();
    trust(&format!(
        "  keys: {{{}}}\n  artifacts: {{require: signed}}\n  commits: {{require: none}}\n{extra}",
        keys.join(", ")
    ))
}

/// An `allowed_signers` file naming `principal` for the SSH key `key` (its `.pub` beside it).
fn allowed_signers(dir: &Path, entries: &[(&str, &Path)]) -> PathBuf {
    let mut text = String::new();
    for (principal, key) in entries {
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        text.push_str(&format!(
            "{principal} namespaces=\"git\" {}\n",
            public.trim()
        ));
    }
    let path = dir.join("allowed_signers");
    std::fs::write(&path, text).unwrap();
    path
}

/// The trust section of agents that require signed commits by the allowed signers (artifacts
/// unchecked).
fn commit_trust(allowed: &Path, commits_extra: &str) -> String {
    trust(&format!(
        "  commitSigners: {{allowedSigners: {}}}\n  artifacts: {{require: none}}\n  commits:\n    require: signed\n{commits_extra}",
        allowed.display()
    ))
}

fn files<'a>(f: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a [u8])> {
    f.iter().map(|(p, c)| (*p, c.as_bytes())).collect()
}

fn commit(repo: &TestRepo, f: &[(&str, String)], msg: &str) -> String {
    repo.commit_files(&files(f), msg).unwrap()
}

fn commit_signed(repo: &TestRepo, f: &[(&str, String)], msg: &str, key: &Path) -> String {
    repo.commit_signed(&files(f), msg, key).unwrap()
}

fn applied(commit: &str) -> impl Fn(&Value) -> bool + '_ {
    move |s| s["appliedCommit"].as_str() == Some(commit)
}

fn refused(commit: &str) -> impl Fn(&Value) -> bool + '_ {
    move |s| s["lastError"]["commit"].as_str() == Some(commit)
}

fn message(s: &Value) -> &str {
    s["lastError"]["message"].as_str().unwrap_or_default()
}

fn workload<'a>(s: &'a Value, id: &str) -> &'a Value {
    s["workloads"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or_else(|| panic!("no workload {id} in {s:#}"))
}

fn signer_names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["identity"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Asserts nothing answers 200 on `port` for `during`.
fn assert_not_serving(port: u16, during: Duration, why: &str, agent: &Agent) {
    let deadline = Instant::now() + during;
    while Instant::now() < deadline {
        if let Ok((200, body)) = http_get(addr(port), "/") {
            panic!(
                "{why}: port {port} serves {body:?}\nstatus: {:#}\nlogs:\n{}",
                agent.status(),
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts `port` keeps answering with `needle` at `path` for `during` (no flicker).
fn assert_keeps_serving(port: u16, path: &str, needle: &str, during: Duration) {
    let deadline = Instant::now() + during;
    while Instant::now() < deadline {
        match http_get(addr(port), path) {
            Ok((200, body)) if body.contains(needle) => {}
            other => panic!("port {port}{path} should keep serving {needle:?}, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies a manifest between tags of the same registry (as an attacker replaying a signature
/// would), with skopeo.
fn skopeo_copy(from: &str, to: &str) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{from}"))
        .arg(format!("docker://{to}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy {from} {to}: {out:?}");
}

// ---------------------------------------------------------------------------------------------
// Artifact signatures

#[test]
fn signed_artifacts_run_unsigned_ones_are_held_until_signed() {
    let registry = TestRegistry::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (ops_key, ops_pub) = keygen(keys.path(), "ops");
    let v1 = format!("{}/fleet/probe:v1", registry.host());
    let v2 = format!("{}/fleet/probe:v2", registry.host());
    push(&probe_http(), &v1);
    sign(&v1, &ops_key);

    let repo = TestRepo::new().unwrap();
    let port = free_port();
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", site_yaml("store-1", "wasm")),
            ("apps/a.yaml", image_app("shop", "web", port, "one", &v1)),
        ],
        "signed v1",
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &artifact_trust(&[("ops", &ops_pub)], ""),
    );
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "signed release applied", applied(&c1));
    wait_body(port, "/version", "v1", T).unwrap();
    let w = workload(&s, "shop/web");
    assert_eq!(signer_names(&w["signers"]), ["ops"], "{s:#}");
    assert_eq!(w["signers"][0]["kind"], "key", "{s:#}");
    assert!(s["lastError"].is_null(), "{s:#}");

    // A new version nobody signed: the release is held, v1 keeps serving.
    let pinned_v2 = push(&probe_http_v2(), &v2);
    let c2 = commit(
        &repo,
        &[("apps/a.yaml", image_app("shop", "web", port, "two", &v2))],
        "unsigned v2",
    );
    let s = agent.wait_status(T, "unsigned release held", refused(&c2));
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert_eq!(s["lastError"]["retryable"], true, "{s:#}");
    assert!(
        message(&s).contains(&v2) && message(&s).contains("unsigned"),
        "the message names the reference and why: {s:#}"
    );
    assert!(
        s["lastError"]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("shop/web: "),
        "{s:#}"
    );
    assert_eq!(s["appliedCommit"].as_str(), Some(c1.as_str()), "{s:#}");
    assert_keeps_serving(port, "/version", "v1", Duration::from_secs(1));
    let (code, text, _) = fleetlet(&["status", "--state-dir", agent.state_dir.to_str().unwrap()]);
    assert_eq!(code, 1, "status exits 1 while a release is held: {text}");

    // Signing v2 afterwards (no new commit): a later cycle retries and applies it.
    sign(&pinned_v2, &ops_key);
    let s = agent.wait_status(T, "release applied once signed", applied(&c2));
    wait_body(port, "/version", "v2", T).unwrap();
    wait_body(port, "/", "two", T).unwrap();
    assert_eq!(
        signer_names(&workload(&s, "shop/web")["signers"]),
        ["ops"],
        "{s:#}"
    );
    let s = agent.wait_status(T, "error cleared", |s| s["lastError"].is_null());
    assert_eq!(s["appliedCommit"].as_str(), Some(c2.as_str()));
    assert!(agent.terminate().success());

    // The audit log recorded who signed each artifact, and those signatures re-verify from
    // the material cached in the store.
    let config_s = config.to_str().unwrap();
    let (code, out, err) = fleetlet(&["audit", "log", "--config", config_s, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["applied", "rejected", "applied"], "{out}");
    let artifact = &entries[2]["workloads"][0]["artifacts"][0];
    assert_eq!(artifact["reference"], pinned_v2.as_str(), "{out}");
    assert_eq!(artifact["signers"][0]["identity"], "ops", "{out}");
    assert!(
        entries[1]["reason"].as_str().unwrap().contains("unsigned"),
        "{out}"
    );
    let (code, out, err) = fleetlet(&["audit", "verify", "--config", config_s, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["artifactsReverified"], 2, "{report:#}");
    // With the site's store stripped of that material, nothing can be re-verified: said so,
    // not failed.
    for d in artifact["material"].as_array().unwrap() {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        std::fs::remove_file(agent_state(&config).join("oci/blobs/sha256").join(hex)).unwrap();
    }
    let (code, out, _) = fleetlet(&["audit", "verify", "--config", config_s, "-o", "json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, report["artifactsNotCached"].as_u64()),
        (0, Some(1)),
        "{report:#}"
    );
}

fn agent_state(config: &Path) -> PathBuf {
    config.parent().unwrap().join("state")
}

#[test]
fn signatures_by_unknown_keys_or_of_other_artifacts_hold_the_release() {
    let registry = TestRegistry::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (ops_key, ops_pub) = keygen(keys.path(), "ops");
    let (rogue_key, _rogue_pub) = keygen(keys.path(), "rogue");
    let v1 = format!("{}/fleet/probe:v1", registry.host());
    let v2 = format!("{}/fleet/probe:v2", registry.host());
    let pinned_v1 = push(&probe_http(), &v1);
    sign(&v1, &ops_key);

    let repo = TestRepo::new().unwrap();
    let (port, extra_port) = (free_port(), free_port());
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", site_yaml("store-1", "wasm")),
            ("apps/a.yaml", image_app("shop", "web", port, "one", &v1)),
        ],
        "signed v1",
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &artifact_trust(&[("ops", &ops_pub)], ""),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "signed release applied", applied(&c1));
    wait_body(port, "/version", "v1", T).unwrap();

    // v2 signed, but by a key this site does not trust. The same commit adds a new workload
    // of the (trusted) v1: the release is atomic, so it does not start either.
    let pinned_v2 = push(&probe_http_v2(), &v2);
    sign(&v2, &rogue_key);
    let c2 = commit(
        &repo,
        &[
            ("apps/a.yaml", image_app("shop", "web", port, "two", &v2)),
            (
                "apps/b.yaml",
                image_app("extra", "web", extra_port, "extra", &v1),
            ),
        ],
        "v2 signed by a rogue key",
    );
    let s = agent.wait_status(T, "rogue signature refused", refused(&c2));
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert!(
        message(&s).contains(&pinned_v2)
            && message(&s).contains("not signed by a key allowed here"),
        "{s:#}"
    );
    assert!(message(&s).contains("ops"), "names the allowed key: {s:#}");
    assert_eq!(s["appliedCommit"].as_str(), Some(c1.as_str()));
    assert_keeps_serving(port, "/version", "v1", Duration::from_secs(1));
    assert_not_serving(
        extra_port,
        Duration::from_millis(500),
        "held release",
        &agent,
    );

    // An attacker replays v1's valid signature (by the trusted key) as v2's: still refused,
    // the signature is over another digest.
    skopeo_copy(
        &format!(
            "{}/fleet/probe:{}",
            registry.host(),
            sig_tag(digest_of(&pinned_v1))
        ),
        &format!(
            "{}/fleet/probe:{}",
            registry.host(),
            sig_tag(digest_of(&pinned_v2))
        ),
    );
    let s = agent.wait_status(T, "replayed signature refused", |s| {
        refused(&c2)(s) && message(s).contains("a signature of another artifact")
    });
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert!(message(&s).contains(digest_of(&pinned_v1)), "{s:#}");
    assert_eq!(s["appliedCommit"].as_str(), Some(c1.as_str()));
    assert_keeps_serving(port, "/version", "v1", Duration::from_secs(1));
    assert_not_serving(
        extra_port,
        Duration::from_millis(500),
        "held release",
        &agent,
    );
    assert!(agent.terminate().success());
}

#[test]
fn non_atomic_policy_holds_only_the_unsigned_workloads() {
    let registry = TestRegistry::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (ops_key, ops_pub) = keygen(keys.path(), "ops");
    let image = |name: &str, tag: &str| format!("{}/fleet/{name}:{tag}", registry.host());
    for name in ["a", "b"] {
        push(&probe_http(), &image(name, "v1"));
        sign(&image(name, "v1"), &ops_key);
    }

    let repo = TestRepo::new().unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", site_yaml("store-1", "wasm")),
            (
                "apps/a.yaml",
                image_app("a", "web", pa, "a1", &image("a", "v1")),
            ),
            (
                "apps/b.yaml",
                image_app("b", "web", pb, "b1", &image("b", "v1")),
            ),
        ],
        "both signed",
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &artifact_trust(&[("ops", &ops_pub)], "  atomic: false\n"),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "first release", applied(&c1));
    wait_body(pa, "/version", "v1", T).unwrap();
    wait_body(pb, "/version", "v1", T).unwrap();

    // a → signed v2; b → unsigned v2; c (new) → unsigned.
    push(&probe_http_v2(), &image("a", "v2"));
    sign(&image("a", "v2"), &ops_key);
    let pinned_b2 = push(&probe_http_v2(), &image("b", "v2"));
    push(&probe_http_v2(), &image("c", "v2"));
    let c2 = commit(
        &repo,
        &[
            (
                "apps/a.yaml",
                image_app("a", "web", pa, "a2", &image("a", "v2")),
            ),
            (
                "apps/b.yaml",
                image_app("b", "web", pb, "b2", &image("b", "v2")),
            ),
            (
                "apps/c.yaml",
                image_app("c", "web", pc, "c2", &image("c", "v2")),
            ),
        ],
        "a signed, b and c not",
    );
    let s = agent.wait_status(T, "partial release applied", applied(&c2));
    wait_body(pa, "/version", "v2", T).unwrap();
    wait_body(pa, "/", "a2", T).unwrap();
    assert_keeps_serving(pb, "/", "b1", Duration::from_secs(1));
    assert_not_serving(pc, Duration::from_millis(500), "c is held", &agent);

    let a = workload(&s, "a/web");
    assert!(a["held"].is_null(), "{s:#}");
    assert_eq!(signer_names(&a["signers"]), ["ops"], "{s:#}");
    let b = workload(&s, "b/web");
    let why = b["held"].as_str().unwrap_or_default();
    assert!(
        why.contains(&image("b", "v2")) && why.contains("unsigned"),
        "b is held with the reason: {s:#}"
    );
    assert_eq!(b["state"], "running", "b runs its previous version: {s:#}");
    assert_eq!(
        signer_names(&b["signers"]),
        ["ops"],
        "b's previous version keeps its signers: {s:#}"
    );
    let c = workload(&s, "c/web");
    assert_eq!(c["state"], "held", "{s:#}");
    assert!(c["held"].as_str().unwrap_or_default().contains("unsigned"));
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert_eq!(s["lastError"]["retryable"], true, "{s:#}");
    assert!(message(&s).contains("held back"), "{s:#}");

    // Signing b's v2 lets the held workload catch up on a later cycle (same commit).
    sign(&pinned_b2, &ops_key);
    wait_body(pb, "/", "b2", T).unwrap();
    let s = agent.wait_status(T, "b no longer held", |s| {
        workload(s, "b/web")["held"].is_null()
    });
    assert_eq!(s["appliedCommit"].as_str(), Some(c2.as_str()));
    assert_eq!(workload(&s, "c/web")["state"], "held", "{s:#}");
    assert_keeps_serving(pa, "/", "a2", Duration::from_millis(300));
    assert!(agent.terminate().success());
}

/// A site running v1 of an image component, signed by key `ops` and verified by the agent
/// (which is stopped again); the registry is gone.
struct SignedSite {
    keys: tempfile::TempDir,
    ops_pub: PathBuf,
    _repo: TestRepo,
    _work: tempfile::TempDir,
    config: PathBuf,
    commit: String,
    port: u16,
}

fn signed_site_then_offline() -> SignedSite {
    let registry = TestRegistry::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (ops_key, ops_pub) = keygen(keys.path(), "ops");
    let v1 = format!("{}/fleet/probe:v1", registry.host());
    push(&probe_http(), &v1);
    sign(&v1, &ops_key);

    let repo = TestRepo::new().unwrap();
    let port = free_port();
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", site_yaml("store-1", "wasm")),
            ("apps/a.yaml", image_app("shop", "web", port, "one", &v1)),
        ],
        "signed v1",
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &artifact_trust(&[("ops", &ops_pub)], ""),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "signed release applied", applied(&c1));
    wait_body(port, "/version", "v1", T).unwrap();
    assert!(agent.terminate().success());
    assert!(http_get(addr(port), "/").is_err(), "stopped with the agent");
    drop(registry);
    SignedSite {
        keys,
        ops_pub,
        _repo: repo,
        _work: work,
        config,
        commit: c1,
        port,
    }
}

#[test]
fn a_restart_reverifies_offline_from_the_store() {
    let site = signed_site_then_offline();
    let before = std::fs::read_to_string(site.config.parent().unwrap().join("agent.log"))
        .unwrap()
        .len();
    let agent = Agent::start(&site.config);
    wait_body(site.port, "/version", "v1", T).unwrap();
    let s = agent.wait_status(T, "restored with its signers", |s| {
        s["appliedCommit"].as_str() == Some(site.commit.as_str())
            && s["workloads"].as_array().is_some_and(|w| !w.is_empty())
    });
    assert_eq!(
        signer_names(&workload(&s, "shop/web")["signers"]),
        ["ops"],
        "{s:#}"
    );
    // The status above may still be the old agent's (written at its shutdown), and the log
    // line comes once the restore returns: wait for it.
    let deadline = Instant::now() + T;
    let logs = loop {
        let logs = agent.logs()[before..].to_string();
        if logs.contains("restored the applied release") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        logs.contains("restored the applied release") && !logs.contains("could not restore"),
        "{logs}"
    );
    assert_keeps_serving(site.port, "/version", "v1", Duration::from_secs(1));
    assert!(agent.terminate().success());
}

#[test]
fn a_restart_with_changed_trust_roots_refuses_the_release() {
    let site = signed_site_then_offline();
    // The site's trust root changes while the agent is down: the same name now stands for
    // another key. The stored signature no longer verifies: nothing may start.
    let (_other_key, other_pub) = keygen(site.keys.path(), "other");
    let text = std::fs::read_to_string(&site.config).unwrap();
    let rotated = text.replace(
        &site.ops_pub.display().to_string(),
        &other_pub.display().to_string(),
    );
    assert_ne!(text, rotated);
    std::fs::write(&site.config, rotated).unwrap();
    let agent = Agent::start(&site.config);
    let s = agent.wait_status(
        Duration::from_secs(20),
        "re-verification failure reported",
        |s| message(s).contains("re-verifying"),
    );
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert!(
        message(&s).contains("shop/web") && message(&s).contains("not signed by a key allowed"),
        "{s:#}"
    );
    // Several poll cycles later: still nothing runs, and the status still says why.
    assert_not_serving(
        site.port,
        Duration::from_secs(3),
        "the release failed re-verification",
        &agent,
    );
    let s = agent.status();
    assert!(message(&s).contains("re-verifying"), "{s:#}");
    assert_ne!(workload(&s, "shop/web")["state"], "running", "{s:#}");
    assert!(agent.terminate().success());
}

// ---------------------------------------------------------------------------------------------
// Commit signatures

/// A repo whose first commit holds the probe component (signed by `key`).
fn repo_with_probe(key: &Path) -> TestRepo {
    let repo = TestRepo::new().unwrap();
    repo.commit_signed(
        &[(
            "components/probe.wasm",
            &std::fs::read(probe_http()).unwrap(),
        )],
        "component",
        key,
    )
    .unwrap();
    repo
}

#[test]
fn signed_commits_are_applied_unsigned_or_unknown_signers_refused() {
    let keys = tempfile::tempdir().unwrap();
    let ops = ssh_signing_key(keys.path(), "ops").unwrap();
    let rogue = ssh_signing_key(keys.path(), "rogue").unwrap();
    let allowed = allowed_signers(keys.path(), &[("ops@example.com", &ops)]);
    let repo = repo_with_probe(&ops);
    let port = free_port();
    let app = |g: &str| ("apps/a.yaml", http_app("shop", "web", port, g, ""));
    let c1 = commit_signed(
        &repo,
        &[("sites/s.yaml", site_yaml("store-1", "wasm")), app("one")],
        "signed release",
        &ops,
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &commit_trust(&allowed, ""),
    );
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "signed commit applied", applied(&c1));
    wait_body(port, "/", "one", T).unwrap();
    assert_eq!(
        signer_names(&s["commitSigners"]),
        ["ops@example.com"],
        "{s:#}"
    );
    assert_eq!(s["commitSigners"][0]["kind"], "ssh", "{s:#}");

    // Unsigned: refused for good (only a new commit can fix it).
    let c2 = commit(&repo, &[app("two")], "unsigned");
    let s = agent.wait_status(T, "unsigned commit refused", refused(&c2));
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert_eq!(s["lastError"]["retryable"], false, "{s:#}");
    assert!(message(&s).contains("unsigned commit"), "{s:#}");
    assert_eq!(s["appliedCommit"].as_str(), Some(c1.as_str()));
    assert_keeps_serving(port, "/", "one", Duration::from_secs(1));

    // Signed, but by a key not in allowed_signers.
    let c3 = commit_signed(&repo, &[app("three")], "signed by a stranger", &rogue);
    let s = agent.wait_status(T, "stranger's commit refused", refused(&c3));
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert!(
        message(&s).contains(&c3[..12]) && !message(&s).contains("unsigned commit"),
        "{s:#}"
    );
    assert_eq!(s["appliedCommit"].as_str(), Some(c1.as_str()));
    assert_keeps_serving(port, "/", "one", Duration::from_secs(1));

    // Signed by ops again: applied.
    let c4 = commit_signed(&repo, &[app("four")], "signed again", &ops);
    let s = agent.wait_status(T, "signed commit applied", applied(&c4));
    wait_body(port, "/", "four", T).unwrap();
    assert_eq!(signer_names(&s["commitSigners"]), ["ops@example.com"]);
    let s = agent.wait_status(T, "error cleared", |s| s["lastError"].is_null());
    assert_eq!(s["appliedCommit"].as_str(), Some(c4.as_str()));
    assert!(agent.terminate().success());
}

#[test]
fn moving_back_needs_a_signed_rollback_instruction() {
    let keys = tempfile::tempdir().unwrap();
    let ops = ssh_signing_key(keys.path(), "ops").unwrap();
    let allowed = allowed_signers(keys.path(), &[("ops@example.com", &ops)]);
    let repo = repo_with_probe(&ops);
    let port = free_port();
    let app = |g: &str| ("apps/a.yaml", http_app("shop", "web", port, g, ""));
    let c1 = commit_signed(
        &repo,
        &[("sites/s.yaml", site_yaml("store-1", "wasm")), app("one")],
        "release one",
        &ops,
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &commit_trust(&allowed, ""),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "release one", applied(&c1));
    let c2 = commit_signed(&repo, &[app("two")], "release two", &ops);
    agent.wait_status(T, "release two", applied(&c2));
    wait_body(port, "/", "two", T).unwrap();

    // The branch is moved back to the (validly signed) older release: a replay, refused.
    repo.force_reset(&c1).unwrap();
    let s = agent.wait_status(T, "move back refused", refused(&c1));
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert_eq!(s["lastError"]["retryable"], true, "{s:#}");
    assert!(message(&s).contains("does not descend"), "{s:#}");
    assert!(message(&s).contains("fleetlet-rollback-from"), "{s:#}");
    assert_eq!(s["appliedCommit"].as_str(), Some(c2.as_str()));
    assert_keeps_serving(port, "/", "two", Duration::from_secs(1));

    // An unsigned instruction does not allow it.
    let line = format!("roll back\n\nfleetlet-rollback-from: {c2}\n");
    repo.tag_with_message("rollback-unsigned", &line, None)
        .unwrap();
    let s = agent.wait_status(T, "unsigned instruction seen and refused", |s| {
        refused(&c1)(s) && message(s).contains("rollback-unsigned (unsigned)")
    });
    assert_eq!(s["appliedCommit"].as_str(), Some(c2.as_str()), "{s:#}");
    assert_keeps_serving(port, "/", "two", Duration::from_secs(1));

    // A signed instruction for another move does not either.
    let other = format!("roll back\n\nfleetlet-rollback-from: {}\n", "0".repeat(40));
    repo.tag_with_message("rollback-other", &other, Some(&ops))
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let s = agent.status();
    assert_eq!(s["appliedCommit"].as_str(), Some(c2.as_str()), "{s:#}");
    assert!(refused(&c1)(&s), "{s:#}");
    assert_keeps_serving(port, "/", "two", Duration::from_millis(300));

    // A signed instruction naming exactly this move: accepted.
    repo.tag_with_message("rollback-1", &line, Some(&ops))
        .unwrap();
    let s = agent.wait_status(T, "rollback applied", applied(&c1));
    wait_body(port, "/", "one", T).unwrap();
    assert!(
        signer_names(&s["commitSigners"]).contains(&"ops@example.com".to_string()),
        "{s:#}"
    );
    assert!(agent.logs().contains("signed rollback instruction"));
    assert!(agent.terminate().success());
}

#[test]
fn production_sites_need_a_signed_release_tag() {
    let keys = tempfile::tempdir().unwrap();
    let ops = ssh_signing_key(keys.path(), "ops").unwrap();
    let allowed = allowed_signers(keys.path(), &[("ops@example.com", &ops)]);
    let repo = repo_with_probe(&ops);
    let port = free_port();
    let app = |g: &str| ("apps/a.yaml", http_app("shop", "web", port, g, ""));
    let site = ("sites/s.yaml", labelled_site("store-1", "env: production"));
    let c0 = commit_signed(&repo, &[site, app("zero")], "release zero", &ops);
    repo.tag_with_message("release-0", "release 0", Some(&ops))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &commit_trust(
            &allowed,
            "    releaseTag: {pattern: \"release-*\", siteLabels: {env: production}}\n",
        ),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "tagged release applied", applied(&c0));
    wait_body(port, "/", "zero", T).unwrap();

    // A signed commit without a release tag: held, retryable (the tag may come later).
    let c1 = commit_signed(&repo, &[app("one")], "release one", &ops);
    let s = agent.wait_status(T, "untagged commit held", refused(&c1));
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert_eq!(s["lastError"]["retryable"], true, "{s:#}");
    assert!(message(&s).contains("release-*"), "{s:#}");
    assert_eq!(s["appliedCommit"].as_str(), Some(c0.as_str()));
    assert_keeps_serving(port, "/", "zero", Duration::from_secs(1));

    // An unsigned tag matching the pattern is not enough.
    repo.tag_with_message("release-1-unsigned", "release 1", None)
        .unwrap();
    let s = agent.wait_status(T, "unsigned tag refused", |s| {
        refused(&c1)(s) && message(s).contains("release-1-unsigned (unsigned)")
    });
    assert_eq!(s["appliedCommit"].as_str(), Some(c0.as_str()));
    assert_keeps_serving(port, "/", "zero", Duration::from_millis(500));

    // The signed release tag: applied.
    repo.tag_with_message("release-1", "release 1", Some(&ops))
        .unwrap();
    let s = agent.wait_status(T, "tagged release applied", applied(&c1));
    wait_body(port, "/", "one", T).unwrap();
    assert!(
        signer_names(&s["commitSigners"]).contains(&"ops@example.com".to_string()),
        "{s:#}"
    );
    assert!(agent.terminate().success());
}

#[test]
fn release_tags_are_checked_against_the_signers_of_their_ref_rule() {
    let keys = tempfile::tempdir().unwrap();
    let ops = ssh_signing_key(keys.path(), "ops").unwrap();
    let manager = ssh_signing_key(keys.path(), "manager").unwrap();
    let allowed = allowed_signers(
        keys.path(),
        &[("ops@example.com", &ops), ("release@example.com", &manager)],
    );
    let repo = repo_with_probe(&ops);
    let port = free_port();
    // Ops sign commits on main; only the release manager signs release tags.
    let c1 = commit_signed(
        &repo,
        &[
            ("sites/s.yaml", site_yaml("store-1", "wasm")),
            ("apps/a.yaml", http_app("shop", "web", port, "one", "")),
        ],
        "release one",
        &ops,
    );
    repo.tag_with_message("release-1", "release 1 (by ops)", Some(&ops))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &commit_trust(
            &allowed,
            "    signers: [ops@example.com]\n    refs: [{match: \"refs/tags/release-*\", signers: [release@example.com]}]\n    releaseTag: {pattern: \"release-*\"}\n",
        ),
    );
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "release tag by ops judged", |s| {
        applied(&c1)(s) || (refused(&c1)(s) && message(s).contains("release-1 ("))
    });
    assert!(
        !applied(&c1)(&s),
        "a release tag signed by ops, not by the release manager, was accepted: {s:#}"
    );
    assert_eq!(s["lastError"]["stage"], "verify", "{s:#}");
    assert_not_serving(
        port,
        Duration::from_millis(500),
        "no valid release tag",
        &agent,
    );

    repo.tag_with_message("release-1a", "release 1", Some(&manager))
        .unwrap();
    let s = agent.wait_status(T, "release manager's tag accepted", applied(&c1));
    wait_body(port, "/", "one", T).unwrap();
    let signers = signer_names(&s["commitSigners"]);
    assert!(
        signers.contains(&"ops@example.com".to_string())
            && signers.contains(&"release@example.com".to_string()),
        "{s:#}"
    );
    assert!(agent.terminate().success());
}

#[test]
fn the_release_tag_rule_skips_sites_without_the_labels() {
    let keys = tempfile::tempdir().unwrap();
    let ops = ssh_signing_key(keys.path(), "ops").unwrap();
    let allowed = allowed_signers(keys.path(), &[("ops@example.com", &ops)]);
    let repo = repo_with_probe(&ops);
    let port = free_port();
    let c1 = commit_signed(
        &repo,
        &[
            ("sites/s.yaml", labelled_site("store-1", "env: staging")),
            ("apps/a.yaml", http_app("shop", "web", port, "staging", "")),
        ],
        "staging release",
        &ops,
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &commit_trust(
            &allowed,
            "    releaseTag: {pattern: \"release-*\", siteLabels: {env: production}}\n",
        ),
    );
    let agent = Agent::start(&config);
    agent.wait_status(T, "untagged commit applied on staging", applied(&c1));
    wait_body(port, "/", "staging", T).unwrap();
    assert!(agent.terminate().success());
}

// ---------------------------------------------------------------------------------------------
// Freeze, and agents without trust roots

#[test]
fn a_source_older_than_max_age_is_reported_as_a_possible_freeze() {
    // TestRepo dates its commits from November 2023: far older than an hour.
    let repo = TestRepo::new().unwrap();
    let port = free_port();
    repo.commit_files(
        &[(
            "components/probe.wasm",
            &std::fs::read(probe_http()).unwrap(),
        )],
        "component",
    )
    .unwrap();
    let c1 = commit(
        &repo,
        &[
            ("sites/s.yaml", site_yaml("store-1", "wasm")),
            ("apps/a.yaml", http_app("shop", "web", port, "frozen", "")),
        ],
        "old release",
    );
    let work = tempfile::tempdir().unwrap();
    let config = write_config_with_trust(
        work.path(),
        "store-1",
        &repo.file_url(),
        "200ms",
        "",
        &trust("  artifacts: {require: none}\n  commits: {require: none, maxAge: 1h}\n"),
    );
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "stale source reported", |s| {
        s["staleSource"].is_string() && s["appliedCommit"].is_string()
    });
    let stale = s["staleSource"].as_str().unwrap();
    assert!(stale.contains("freeze"), "{s:#}");
    assert!(stale.contains(&c1[..12]), "names the newest commit: {s:#}");
    assert_eq!(s["appliedCommit"].as_str(), Some(c1.as_str()), "{s:#}");
    wait_body(port, "/", "frozen", T).unwrap();
    assert!(agent.logs().contains("freeze"));
    assert!(agent.terminate().success());
}

#[test]
fn an_agent_without_trust_roots_refuses_to_start() {
    let repo = TestRepo::new().unwrap();
    repo.commit_files(
        &[("sites/s.yaml", site_yaml("store-1", "wasm").as_bytes())],
        "site",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    // No trust section at all: the defaults require signed artifacts and commits.
    let config = write_config_with_trust(work.path(), "store-1", &repo.file_url(), "200ms", "", "");
    let mut child = Command::new(fleetlet_bin())
        .args(["agent", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent started without trust roots");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("signatures are required but no keys"),
        "{stderr}"
    );
    assert!(
        stderr.contains("require: none"),
        "says how to opt out: {stderr}"
    );
    assert!(
        !work.path().join("state/status.json").exists(),
        "nothing was reconciled"
    );
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
}

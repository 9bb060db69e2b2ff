//! Air-gap sync bundle benchmark (not a test: it prints figures, it asserts nothing about speed).
//!
//!   cargo bench -p fleetlet-tests --bench bundle
//!
//! Everything is real and on 127.0.0.1: a `docker-registry`, a `git daemon`, keys made by
//! `fleetlet keygen`, components published with `fleetlet push` and `fleetlet sign`, commits
//! signed with SSH keys, bundles made by `fleetlet bundle create` and imported by
//! `fleetlet bundle import` against a site config whose trust section requires signed
//! artifacts and signed commits (so the verification cost is part of the import). Prints:
//!
//! 1. the import of a ≥ 256 MiB release bundle (one component whose layer is incompressible
//!    random bytes) into a fresh state dir: wall time and throughput, best of 3, next to
//!    `openssl dgst -sha256` over the same file, best of 3 in the same run (target: the import
//!    reaches ≥ 60 % of openssl's throughput);
//! 2. the size of a delta bundle (`--since`) for a release that changes one of three
//!    components, against that component's size (target: within 64 KiB), checked to import
//!    on top of the full bundle of the first release;
//! 3. whether creating the same bundle twice gives byte-identical files.
//!
//! The binary: `$FLEETLET_BIN` if set, else `cargo build --profile $BENCH_PROFILE -p fleetlet`
//! (default profile `release`, i.e. `target/release/fleetlet`). Env: BENCH_MIB (the big
//! component's size, default 256), BENCH_SMALL_MIB (the delta's components, default 2).
//! Needs `docker-registry`, `git`, `ssh-keygen` and `openssl` on PATH.

#[path = "../it/testkit/mod.rs"]
#[allow(dead_code)]
mod testkit;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::agent::site_yaml;
use testkit::git::{GitDaemon, TestRepo, ssh_signing_key};
use testkit::registry::TestRegistry;

const PASSWORD: &str = "bundle bench passphrase";
const RUNS: usize = 3;
const MIB: f64 = (1u64 << 20) as f64;

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `fleetlet` binary to measure: an optimised build, never the debug one the tests use.
fn fleetlet_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FLEETLET_BIN") {
        return PathBuf::from(bin);
    }
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "release".into());
    eprintln!("building fleetlet (profile {profile}) ...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-q", "--profile", &profile, "-p", "fleetlet"])
        .current_dir(top())
        .status()
        .expect("running cargo build -p fleetlet");
    assert!(st.success(), "building fleetlet failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| top().join("target"));
    target.join(profile).join("fleetlet")
}

/// Incompressible bytes (xorshift64), so zstd in the bundle cannot shrink the payload.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// An empty Wasm component carrying `payload` in one custom section: `fleetlet push` parses
/// what it publishes (so plain random bytes are refused), but nothing reads a custom section.
fn component_file(path: &Path, seed: u64, payload_len: usize) -> u64 {
    let name = b"bench-payload";
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    let mut head = b"\0asm\x0d\x00\x01\x00".to_vec(); // component encoding, layer 1
    head.push(0); // custom section
    leb128(body.len() + payload_len, &mut head);
    head.extend_from_slice(&body);
    let mut bytes = head;
    bytes.extend_from_slice(&noise(seed, payload_len));
    std::fs::write(path, &bytes).unwrap();
    bytes.len() as u64
}

/// Runs fleetlet to completion; stdout. Panics with both streams unless it exits 0.
fn fleetlet(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("FLEETLET_PASSWORD", PASSWORD)
        .env_remove("COSIGN_PASSWORD")
        .env_remove("FLEETLET_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("running fleetlet");
    assert!(
        out.status.success(),
        "fleetlet {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The operator's side: registry, Git server, release/courier keys and a commit signer.
struct Operator {
    bin: PathBuf,
    dir: tempfile::TempDir,
    registry: Option<TestRegistry>,
    daemon: Option<GitDaemon>,
    ssh_key: PathBuf,
    release_key: PathBuf,
    release_pub: PathBuf,
    courier_key: PathBuf,
    courier_pub: PathBuf,
}

impl Operator {
    fn new(bin: PathBuf) -> Operator {
        // Beside the build, not in /tmp: half a gigabyte or more passes through here, and the
        // import's fsyncs should hit the same disk as a site's would.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let keygen = |name: &str| {
            let prefix = dir.path().join(name);
            fleetlet(&bin, &["keygen", "--out", prefix.to_str().unwrap()]);
            (prefix.with_extension("key"), prefix.with_extension("pub"))
        };
        let (release_key, release_pub) = keygen("release");
        let (courier_key, courier_pub) = keygen("courier");
        let ssh_key = ssh_signing_key(dir.path(), "alice").unwrap();
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        let daemon = GitDaemon::start(&dir.path().join("repos")).unwrap();
        Operator {
            bin,
            registry: Some(TestRegistry::start().unwrap()),
            daemon: Some(daemon),
            ssh_key,
            release_key,
            release_pub,
            courier_key,
            courier_pub,
            dir,
        }
    }

    fn repo(&self, name: &str) -> TestRepo {
        TestRepo::new_in(&self.dir.path().join("repos"), name).unwrap()
    }

    fn image(&self, repository: &str, tag: &str) -> String {
        let host = self.registry.as_ref().unwrap().host();
        format!("{host}/{repository}:{tag}")
    }

    /// Pushes `file` as `image` and signs it with the release key; the pinned reference.
    fn publish(&self, file: &Path, image: &str) -> String {
        let pinned = fleetlet(&self.bin, &["push", file.to_str().unwrap(), image])
            .trim()
            .to_string();
        let key = self.release_key.to_str().unwrap();
        fleetlet(&self.bin, &["sign", &pinned, "--key", key]);
        pinned
    }

    /// A signed commit of site `site` running one wasm workload per image.
    fn release(&self, repo: &TestRepo, site: &str, images: &[String], msg: &str) -> String {
        let mut app = format!(
            "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: bench}}\n\
             spec:\n  targets: [{{sites: [{site}]}}]\n  workloads:\n"
        );
        for (i, image) in images.iter().enumerate() {
            app.push_str(&format!(
                "    - {{name: w{i}, runtime: wasm, component: \"{image}\", http: {{port: {}}}}}\n",
                18_080 + i
            ));
        }
        let site_doc = site_yaml(site, "wasm");
        repo.commit_signed(
            &[
                (&format!("sites/{site}.yaml"), site_doc.as_bytes()),
                ("apps/bench.yaml", app.as_bytes()),
            ],
            msg,
            &self.ssh_key,
        )
        .unwrap()
    }

    /// `fleetlet bundle create` of `repo` at main for `site`; the bundle and its JSON report.
    fn create(&self, repo: &str, site: &str, out: &str, extra: &[&str]) -> (PathBuf, Value) {
        let url = self.daemon.as_ref().unwrap().url_for(repo);
        let path = self.dir.path().join(out);
        let mut args = vec![
            "bundle",
            "create",
            "--repo",
            &url,
            "--rev",
            "main",
            "--site",
            site,
            "--key",
            self.courier_key.to_str().unwrap(),
            "--out",
            path.to_str().unwrap(),
            "-o",
            "json",
        ];
        args.extend(extra);
        let report = json(&fleetlet(&self.bin, &args));
        (path, report)
    }

    /// The air gap: imports below reach neither the registry nor the Git server.
    fn cut_off(&mut self) {
        self.daemon.take().unwrap().stop();
        drop(self.registry.take());
    }

    /// A bundles-only site config trusting the courier key for bundles, the release key for
    /// artifacts and alice for commits — all required, so import pays for every check.
    fn site_config(&self, site: &str, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let public = std::fs::read_to_string(self.ssh_key.with_extension("pub")).unwrap();
        let allowed = dir.join("allowed_signers");
        std::fs::write(
            &allowed,
            format!("alice namespaces=\"git\" {}\n", public.trim()),
        )
        .unwrap();
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: fleetlet.dev/v1alpha1\nkind: AgentConfig\nsite: {site}\nstateDir: {state}\n\
                 source:\n  bundles: {{}}\n\
                 runtimes:\n  wasm:\n    bindAddress: 127.0.0.1\n\
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

    /// `fleetlet bundle import` into `state`; asserts it imported `commit`. Wall time.
    fn import(&self, bundle: &Path, config: &Path, state: &Path, commit: &str) -> Duration {
        let t = Instant::now();
        let out = fleetlet(
            &self.bin,
            &[
                "bundle",
                "import",
                bundle.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "-o",
                "json",
            ],
        );
        let took = t.elapsed();
        let imported = json(&out);
        assert_eq!(imported["commit"], commit, "{imported:#}");
        // The figures only count if the signatures were really checked.
        let signed = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
        assert!(signed(&imported["commitSigners"]), "{imported:#}");
        let artifacts = imported["artifacts"].as_object().unwrap();
        assert!(
            !artifacts.is_empty() && artifacts.values().all(signed),
            "{imported:#}"
        );
        took
    }
}

fn openssl(file: &Path) -> Duration {
    let t = Instant::now();
    let st = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .expect("running openssl");
    assert!(st.success(), "openssl dgst failed");
    t.elapsed()
}

fn main() {
    let big_mib = env_usize("BENCH_MIB", 256);
    let small_mib = env_usize("BENCH_SMALL_MIB", 2);
    let bin = fleetlet_bin();
    let started = Instant::now();
    let mut op = Operator::new(bin);
    let scratch = op.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    // --- The big release: one component of `big_mib` MiB of random bytes.
    eprintln!("publishing a {big_mib} MiB component and creating its bundle (twice) ...");
    let big_repo = op.repo("big");
    let file = scratch.join("big.wasm");
    let big_component = component_file(&file, 1, big_mib << 20);
    op.publish(&file, &op.image("bench/big", "v1"));
    std::fs::remove_file(&file).unwrap();
    let big_commit = op.release(
        &big_repo,
        "edge-1",
        &[op.image("bench/big", "v1")],
        "big release",
    );
    let t = Instant::now();
    let (big, big_report) = op.create("big", "edge-1", "big.bundle", &[]);
    let create_s = t.elapsed().as_secs_f64();
    let (big_again, _) = op.create("big", "edge-1", "big-again.bundle", &[]);
    let big_size = size_of(&big);
    let big_identical = size_of(&big_again) == big_size
        && std::fs::read(&big).unwrap() == std::fs::read(&big_again).unwrap();
    std::fs::remove_file(&big_again).unwrap();

    // --- Deltas: three components, then a release changing exactly one.
    eprintln!("publishing 3 × {small_mib} MiB components, two releases, a delta (twice) ...");
    let delta_repo = op.repo("delta");
    let mut images = Vec::new();
    for i in 0..3u64 {
        let f = scratch.join(format!("svc{i}-v1.wasm"));
        component_file(&f, 100 + i, small_mib << 20);
        let image = op.image(&format!("bench/svc{i}"), "v1");
        op.publish(&f, &image);
        images.push(image);
    }
    let c1 = op.release(&delta_repo, "edge-2", &images, "release one");
    let (r1, _) = op.create("delta", "edge-2", "r1.bundle", &[]);
    let changed = scratch.join("svc1-v2.wasm");
    let changed_size = component_file(&changed, 201, small_mib << 20);
    images[1] = op.image("bench/svc1", "v2");
    op.publish(&changed, &images[1]);
    let c2 = op.release(&delta_repo, "edge-2", &images, "release two: svc1 changes");
    let since = ["--since", c1.as_str()];
    let (delta, delta_report) = op.create("delta", "edge-2", "r2-delta.bundle", &since);
    let (delta_again, _) = op.create("delta", "edge-2", "r2-delta-again.bundle", &since);
    let delta_size = size_of(&delta);
    let delta_identical = std::fs::read(&delta).unwrap() == std::fs::read(&delta_again).unwrap();
    assert_eq!(
        delta_report["meta"]["since"],
        c1.as_str(),
        "{delta_report:#}"
    );

    op.cut_off();

    // The delta is a real one: it moves a site that imported release one to release two.
    let site = scratch.join("site-edge-2");
    let config = op.site_config("edge-2", &site);
    op.import(&r1, &config, &site.join("state"), &c1);
    op.import(&delta, &config, &site.join("state"), &c2);

    // --- Import throughput vs openssl, interleaved, each import into a fresh state dir.
    eprintln!(
        "importing the {:.0} MiB bundle {RUNS} times ...",
        big_size as f64 / MIB
    );
    let site = scratch.join("site-edge-1");
    let config = op.site_config("edge-1", &site);
    openssl(&big); // both sides read the bundle from the page cache
    let mut imports = Vec::new();
    let mut hashes = Vec::new();
    for run in 0..RUNS {
        let state = site.join(format!("state-{run}"));
        // Outside the timing: the writeback of the setup's (or the last run's) gigabyte must
        // not land in the import's fsyncs.
        assert!(Command::new("sync").status().unwrap().success());
        imports.push(op.import(&big, &config, &state, &big_commit));
        // Outside the timing: the next import starts as fresh, and the disk stays small.
        std::fs::remove_dir_all(&state).unwrap();
        hashes.push(openssl(&big));
    }
    let import_best = imports.iter().min().unwrap().as_secs_f64();
    let hash_best = hashes.iter().min().unwrap().as_secs_f64();
    let rate = |s: f64| big_size as f64 / s;
    let runs = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };

    println!(
        "bundle benchmark ({}, loopback docker-registry + git daemon, 2 cores)",
        op.bin.display()
    );
    println!("1. import of a release bundle, fresh site state dir, best of {RUNS}");
    println!(
        "   bundle                           {:8.1} MiB  (component {:.1} MiB, {:.1} MiB unpacked; created in {create_s:.2} s)",
        big_size as f64 / MIB,
        big_component as f64 / MIB,
        big_report["unpacked"].as_u64().unwrap_or(0) as f64 / MIB
    );
    println!(
        "   fleetlet bundle import           {import_best:8.2} s    {:7.1} MiB/s  {:7.1} MB/s  (runs: {} s)",
        rate(import_best) / MIB,
        rate(import_best) / 1e6,
        runs(&imports)
    );
    println!(
        "   openssl dgst -sha256             {hash_best:8.2} s    {:7.1} MiB/s  {:7.1} MB/s  (runs: {} s)",
        rate(hash_best) / MIB,
        rate(hash_best) / 1e6,
        runs(&hashes)
    );
    println!(
        "   import / openssl throughput      {:8.0} %    (target >= 60 %)",
        100.0 * hash_best / import_best
    );
    println!("2. delta bundle (--since release one) for a release changing 1 of 3 components");
    println!("   delta bundle                     {delta_size:10} bytes");
    println!("   changed component                {changed_size:10} bytes");
    println!(
        "   difference                       {:10} bytes  ({:.1} KiB; target <= 64 KiB)",
        delta_size as i64 - changed_size as i64,
        (delta_size as f64 - changed_size as f64) / 1024.0
    );
    println!(
        "   full bundle of release one       {:10} bytes  (delta imported on top of it: ok)",
        size_of(&r1)
    );
    println!("3. the same bundle created twice");
    println!(
        "   big release bundle               identical: {}  ({big_size} bytes)",
        if big_identical { "yes" } else { "no" }
    );
    println!(
        "   delta bundle                     identical: {}  ({delta_size} bytes)",
        if delta_identical { "yes" } else { "no" }
    );
    eprintln!("(bench ran {:.0} s)", started.elapsed().as_secs_f64());
}

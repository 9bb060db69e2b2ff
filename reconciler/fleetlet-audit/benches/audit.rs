//! The audit log's throughput and a fleet report's cost. Run:
//! `cargo bench -p fleetlet-audit --bench audit`.
//!
//! 1. Append 100,000 realistic entries (2 workloads × 1 artifact with 1 signer, a commit
//!    signer, tags) to an `AuditLog` with a `MemJournal` and a JSON Lines mirror, signing a
//!    checkpoint every 1,000: entries/s.
//! 2. Verify that file: entries/s (target ≥ 200,000/s).
//! 3. Build 1,000 site exports of 1,000 entries each, one key per site (and 10 earlier,
//!    shorter exports of 10 of the sites, so the chain comparison runs), then time `report()`
//!    over them in a child process (this binary again, so the setup's memory does not count):
//!    wall time (target < 10 s) and peak RSS, `VmHWM` (target < 200 MiB).
//!
//! The exports are kept in `target/tmp` and reused by later runs (`AUDIT_BENCH_FRESH=1`
//! rebuilds them). `AUDIT_BENCH_ENTRIES`, `AUDIT_BENCH_SITES`, `AUDIT_BENCH_SITE_ENTRIES`
//! change the sizes.

use fleetlet_audit::record::{Artifact, Signer, Workload};
use fleetlet_audit::{Action, AuditLog, Event, MemJournal, SiteKeys, export, report, verify};
use fleetlet_audit::{SiteStatus, site_key_line};
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "AUDIT_BENCH_REPORT_DIR";
/// The release the report asks about: applied by two thirds of the sites.
const RELEASE: &str = "c0ffee0000000000000000000000000000000000";
const T0: i64 = 1_700_000_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hex64(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(64);
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out
}

/// Entry `i` of a site: a release applied, with what a real one records.
fn event(i: u64, commit: &str, tag: &str) -> Event {
    // What a commit runs is fixed by the commit.
    let seed = commit
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let workload = |id: &str, n: u64| {
        let digest = hex64(seed.wrapping_add(n));
        Workload {
            id: id.to_string(),
            artifacts: vec![Artifact {
                reference: format!("registry.example.com/shop/{id}@sha256:{digest}"),
                digest: format!("sha256:{digest}"),
                signers: vec![Signer {
                    kind: "key".into(),
                    identity: "release-ci".into(),
                    detail: Some("SHA256:4f0c3d1e9a7b2c55".into()),
                }],
                material: vec![format!("sha256:{}", hex64(seed ^ (n + 7)))],
            }],
        }
    };
    Event {
        event_id: None,
        time: T0 + i as i64 * 60,
        action: Action::Applied,
        commit: Some(commit.to_string()),
        reference: Some("refs/heads/main".into()),
        from: None,
        tags: vec![tag.to_string()],
        commit_signers: vec![Signer {
            kind: "ssh".into(),
            identity: "alice@example.com".into(),
            detail: Some("SHA256:Zm9vYmFyYmF6cXV4cXV1eA".into()),
        }],
        workloads: vec![workload("shop/web", 0), workload("shop/db", 1)],
        stage: None,
        reason: None,
        objects: vec![],
    }
}

fn per_second(n: u64, time: Duration) -> f64 {
    n as f64 / time.as_secs_f64()
}

fn public(key: &SigningKey) -> TrustedKey {
    TrustedKey::from_pem("site", key.public_pem().unwrap().as_bytes()).unwrap()
}

/// Entry `i` of site number `site`: every tenth entry a new commit. Two thirds of the sites
/// apply the release at entry 500; of those, half move on at 800, and every fifth rolls back
/// from it at 600; the rest still run it.
fn site_event(site: usize, i: u64) -> Event {
    let applies = !site.is_multiple_of(3);
    let rolls_back = applies && site.is_multiple_of(5);
    let end = match (rolls_back, site % 3 == 1) {
        (true, _) => 600,
        (false, true) => 800,
        (false, false) => u64::MAX,
    };
    if applies && (500..end).contains(&i) {
        return event(i, RELEASE, "v2.0.0");
    }
    if rolls_back && i == 600 {
        let mut back = event(i, &hex64(49)[..40], "v1.49");
        back.action = Action::RolledBack;
        back.from = Some(RELEASE.into());
        return back;
    }
    event(i, &hex64(i / 10)[..40], &format!("v1.{}", i / 10))
}

fn append_and_verify(dir: &Path) {
    let entries = env_or("AUDIT_BENCH_ENTRIES", 100_000) as u64;
    let key = SigningKey::generate().unwrap();
    let mirror = dir.join("audit.jsonl");
    let mut log = AuditLog::open("bench", Box::new(MemJournal::default()), Some(&mirror)).unwrap();
    let events: Vec<Event> = (1..=entries)
        .map(|i| event(i, &hex64(i / 10)[..40], &format!("v1.{}", i / 10)))
        .collect();
    let start = Instant::now();
    for (i, e) in events.into_iter().enumerate() {
        let time = e.time;
        log.record(e).unwrap();
        if (i + 1) % 1000 == 0 {
            log.checkpoint(&key, time).unwrap();
        }
    }
    let took = start.elapsed();
    drop(log);
    let size = std::fs::metadata(&mirror).unwrap().len();
    println!(
        "append: {entries} entries ({:.0} bytes per line) in {took:.2?}: {:.0} entries/s",
        size as f64 / (entries + entries / 1000) as f64,
        per_second(entries, took)
    );

    let public = public(&key);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let file = std::fs::File::open(&mirror).unwrap();
        let start = Instant::now();
        let v = verify(BufReader::with_capacity(1 << 20, file), Some(&public)).unwrap();
        best = best.min(start.elapsed());
        assert_eq!((v.entries, v.unanchored), (entries, 0));
    }
    println!(
        "verify: {entries} entries, {:.1} MiB in {best:.2?} (best of 3): {:.0} entries/s, {:.0} MiB/s (target ≥ 200000 entries/s)",
        size as f64 / (1 << 20) as f64,
        per_second(entries, best),
        size as f64 / (1 << 20) as f64 / best.as_secs_f64()
    );
}

/// Writes the exports (once) and the site-keys file into `dir`.
fn build_exports(dir: &Path, sites: usize, per_site: u64) {
    let done = dir.join(".complete");
    if done.exists() && std::env::var_os("AUDIT_BENCH_FRESH").is_none() {
        println!("exports: reusing {}", dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let start = Instant::now();
    let lines: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let exports = &exports;
                scope.spawn(move || {
                    let mut lines = Vec::new();
                    for site in (w..sites).step_by(2) {
                        lines.push(build_site(exports, site, per_site));
                    }
                    lines
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    std::fs::write(dir.join("site-keys"), lines.join("\n") + "\n").unwrap();
    std::fs::write(&done, "").unwrap();
    let bytes: u64 = std::fs::read_dir(&exports)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "exports: {sites} sites × {per_site} entries written in {:.1?} ({:.1} MiB of exports)",
        start.elapsed(),
        bytes as f64 / (1 << 20) as f64
    );
}

/// One site's log and export(s); returns its site-keys line.
fn build_site(exports: &Path, site: usize, per_site: u64) -> String {
    let name = format!("site-{site:04}");
    let key = SigningKey::generate().unwrap();
    let work = tempfile::tempdir_in(exports.parent().unwrap()).unwrap();
    let log_path = work.path().join("audit.jsonl");
    let mut log = AuditLog::open(&name, Box::new(MemJournal::default()), Some(&log_path)).unwrap();
    for i in 1..=per_site {
        let e = site_event(site, i);
        let time = e.time;
        log.record(e).unwrap();
        if i % 250 == 0 {
            log.checkpoint(&key, time + 1).unwrap();
        }
        // An earlier export of ten of the sites: a prefix of the later one.
        if site < 10 && i == per_site * 3 / 5 {
            let out = exports.join(format!("{name}-early.audit"));
            export(&log_path, &name, &key, T0 + i as i64 * 60, &out).unwrap();
        }
    }
    log.checkpoint(&key, T0 + per_site as i64 * 60 + 30)
        .unwrap();
    let out = exports.join(format!("{name}.audit"));
    export(&log_path, &name, &key, T0 + per_site as i64 * 60 + 60, &out).unwrap();
    site_key_line(&name, &public(&key))
}

/// Peak resident set size of this process, from `/proc/self/status`.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The child: the report alone.
fn run_report(dir: &Path) {
    let keys = SiteKeys::parse(&std::fs::read_to_string(dir.join("site-keys")).unwrap()).unwrap();
    let exports = dir.join("exports");
    let files = std::fs::read_dir(&exports).unwrap().count();
    let start = Instant::now();
    let rep = report(&RELEASE[..8], &exports, &keys);
    let took = start.elapsed();
    let count = |s: SiteStatus| rep.sites.iter().filter(|x| x.status == s).count();
    println!(
        "report: {files} exports of {} sites in {took:.2?} (target < 10 s); peak RSS {:.1} MiB (target < 200 MiB)",
        keys.len(),
        peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    println!(
        "report: {} running, {} ran, {} never ran, {} unknown; {} problem(s)",
        count(SiteStatus::Running),
        count(SiteStatus::Ran),
        count(SiteStatus::NeverRan),
        count(SiteStatus::Unknown),
        rep.problems.len()
    );
    for p in rep.problems.iter().take(5) {
        println!("  problem: {p}");
    }
    let text = rep.to_text();
    let html = rep.to_html();
    println!(
        "report: rendered as text ({} KiB) and HTML ({} KiB)",
        text.len() >> 10,
        html.len() >> 10
    );
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_report(&PathBuf::from(dir));
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    append_and_verify(tmp.path());
    drop(tmp);

    let sites = env_or("AUDIT_BENCH_SITES", 1000);
    let per_site = env_or("AUDIT_BENCH_SITE_ENTRIES", 1000) as u64;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fleetlet-audit-bench-{sites}x{per_site}"));
    build_exports(&dir, sites, per_site);

    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, &dir)
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the report child failed");
}

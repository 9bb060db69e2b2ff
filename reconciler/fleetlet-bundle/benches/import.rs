//! Import throughput of a sync bundle against the floor of `openssl dgst -sha256` over the same
//! file: the target is at least 60 % of it. Run:
//! `cargo bench -p fleetlet-bundle --bench import` (`BUNDLE_BENCH_MIB` changes the size).
//!
//! The bundle holds incompressible data in 8 MiB files, like image layers. Import means
//! `BundleReader::open` (decompress, check, hash, write and fsync every file) plus
//! `commit_to`. Both sides read the bundle from the page cache (it was just written).

use fleetlet_bundle::{BundleReader, BundleWriter, Limits};
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FILE_MIB: usize = 8;
const RUNS: usize = 3;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn mib_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / time.as_secs_f64()
}

fn openssl(bundle: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(bundle)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("openssl is needed for the comparison");
    assert!(status.success());
    start.elapsed()
}

fn main() {
    let total_mib: usize = std::env::var("BUNDLE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let key = SigningKey::generate().unwrap();
    let trusted = [TrustedKey::from_pem("bench", key.public_pem().unwrap().as_bytes()).unwrap()];

    let mut writer = BundleWriter::new(serde_json::json!({"bench": true})).spool_in(tmp.path());
    for i in 0..total_mib.div_ceil(FILE_MIB) {
        let data = noise(FILE_MIB << 20, i as u64 + 1);
        writer
            .add_file(&format!("oci/blobs/sha256/layer-{i:04}"), &data[..])
            .unwrap();
    }
    let bundle = tmp.path().join("bench.fbz");
    let start = Instant::now();
    writer.finish(&key, &bundle, None).unwrap();
    let size = std::fs::metadata(&bundle).unwrap().len();
    println!(
        "bundle: {:.1} MiB in {} files of {FILE_MIB} MiB, written in {:.2?}",
        size as f64 / (1 << 20) as f64,
        total_mib.div_ceil(FILE_MIB),
        start.elapsed()
    );

    let limits = Limits {
        max_unpacked: 1 << 40,
        max_entries: 100_000,
    };
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    openssl(&bundle); // warm the page cache for both sides
    let mut imports = Vec::new();
    let mut hashes = Vec::new();
    for run in 0..RUNS {
        hashes.push(openssl(&bundle));
        let target = state.join(format!("release-{run}"));
        let start = Instant::now();
        let verified =
            BundleReader::open(std::slice::from_ref(&bundle), limits, &trusted, &state).unwrap();
        verified.commit_to(&target).unwrap();
        imports.push(start.elapsed());
        std::fs::remove_dir_all(&target).unwrap();
    }
    imports.sort();
    hashes.sort();
    let (import, hash) = (imports[RUNS / 2], hashes[RUNS / 2]);
    let (import_rate, hash_rate) = (mib_per_s(size, import), mib_per_s(size, hash));
    println!(
        "import (open + commit): {import:.2?}  {import_rate:8.1} MiB/s  (runs: {imports:.2?})"
    );
    println!("openssl dgst -sha256:   {hash:.2?}  {hash_rate:8.1} MiB/s  (runs: {hashes:.2?})");
    println!(
        "ratio: {:.0} % of openssl (target >= 60 %)",
        100.0 * import_rate / hash_rate
    );
}

//! Pull benchmark (not a test: it prints figures).
//!
//!   cargo bench -p fleetlet-tests --bench pull
//!
//! Pulls a ≥ 256 MiB multi-layer image from a loopback `docker-registry` into an empty store and
//! prints, from the same run: fleetlet's time vs `skopeo copy docker://… oci:…` for the same
//! image; fleetlet's sha256 throughput (`fleetlet cache verify` over the pulled blobs) vs
//! `openssl dgst -sha256` over the same files; and what a second pull of an image sharing all
//! but one layer transfers. Env: BENCH_LAYERS (default 8) × BENCH_LAYER_MIB (default 32);
//! BENCH_PROFILE (default `dist`).

#[path = "../it/testkit/mod.rs"]
#[allow(dead_code)]
mod testkit;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use testkit::registry::{TestRegistry, make_umoci_image, push_image_with_skopeo};

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
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

fn timed(cmd: &mut Command) -> (f64, String) {
    let t = Instant::now();
    let out = cmd.output().expect("running a benchmark step");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn main() {
    let layers: usize = std::env::var("BENCH_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mib: usize = std::env::var("BENCH_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "dist".into());
    eprintln!("building fleetlet (profile {profile}) ...");
    let st = Command::new("cargo")
        .args(["build", "-q", "--profile", &profile, "-p", "fleetlet"])
        .current_dir(top())
        .status()
        .unwrap();
    assert!(st.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| top().join("target"));
    let bin = target.join(&profile).join("fleetlet");

    eprintln!("making a {layers} × {mib} MiB image with umoci and pushing it with skopeo ...");
    let registry = TestRegistry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let data: Vec<Vec<u8>> = (0..layers as u64)
        .map(|i| noise(i + 1, mib << 20))
        .collect();
    let files: Vec<Vec<(String, &[u8])>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| vec![(format!("layer{i}.bin"), d.as_slice())])
        .collect();
    let file_refs: Vec<Vec<(&str, &[u8])>> = files
        .iter()
        .map(|f| f.iter().map(|(p, d)| (p.as_str(), *d)).collect())
        .collect();
    let layer_refs: Vec<&[(&str, &[u8])]> = file_refs.iter().map(|f| f.as_slice()).collect();
    make_umoci_image(&layout, "big", &layer_refs).unwrap();
    let image = format!("{}/bench/big:1", registry.host());
    push_image_with_skopeo(&layout, "big", &image, None).unwrap();
    // The same image plus one more layer: shares every layer but the last.
    let extra = noise(999, mib << 20);
    make_umoci_image(&layout, "big", &[&[("extra.bin", extra.as_slice())]]).unwrap();
    let image2 = format!("{}/bench/big:2", registry.host());
    push_image_with_skopeo(&layout, "big", &image2, None).unwrap();

    // fleetlet pull into an empty store.
    let state = tmp.path().join("state");
    let (fleetlet_s, out) = timed(Command::new(&bin).args([
        "pull",
        &image,
        "--state-dir",
        state.to_str().unwrap(),
        "-o",
        "json",
        "-q",
    ]));
    let pulled: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = pulled["fetchedBytes"].as_u64().unwrap();

    // skopeo copy of the same image into an OCI layout.
    let skopeo_dir = tmp.path().join("skopeo");
    let (skopeo_s, _) = timed(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:big", skopeo_dir.display()),
    ]));

    // Hashing: fleetlet re-hashes every stored blob; openssl over the same files.
    let blobs: Vec<PathBuf> = std::fs::read_dir(state.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let total: u64 = blobs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // Warm the page cache for both, so the disk does not decide.
    for p in &blobs {
        let _ = std::fs::read(p);
    }
    let (verify_s, _) = timed(Command::new(&bin).args([
        "cache",
        "verify",
        "--state-dir",
        state.to_str().unwrap(),
        "-q",
    ]));
    let (openssl_s, _) = timed(
        Command::new("openssl")
            .arg("dgst")
            .arg("-sha256")
            .args(&blobs),
    );

    // Second pull: only the new layer (plus its manifest and config) should move.
    let (second_s, out) = timed(Command::new(&bin).args([
        "pull",
        &image2,
        "--state-dir",
        state.to_str().unwrap(),
        "-o",
        "json",
        "-q",
    ]));
    let second: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fetched = second["fetched"].as_array().unwrap();

    let mib_f = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "pull benchmark (profile {profile}, {layers} layers × {mib} MiB, loopback docker-registry, 2 cores)"
    );
    println!(
        "  image size pulled                {:8.1} MiB",
        mib_f(bytes)
    );
    println!(
        "  fleetlet pull                    {fleetlet_s:8.2} s   ({:.0} MiB/s)",
        mib_f(bytes) / fleetlet_s
    );
    println!(
        "  skopeo copy docker:// → oci:     {skopeo_s:8.2} s   ({:.0} MiB/s)",
        mib_f(bytes) / skopeo_s
    );
    println!(
        "  ratio fleetlet / skopeo          {:8.2}x   (target <= 0.5x)",
        fleetlet_s / skopeo_s
    );
    println!(
        "  sha256 fleetlet (cache verify)   {:8.0} MiB/s",
        mib_f(total) / verify_s
    );
    println!(
        "  sha256 openssl dgst              {:8.0} MiB/s",
        mib_f(total) / openssl_s
    );
    println!(
        "  ratio fleetlet / openssl         {:8.2}x   (target >= 0.5x)",
        openssl_s / verify_s
    );
    println!(
        "  second pull (all but one layer shared): {} blob(s), {:.1} MiB in {second_s:.2} s",
        fetched.len(),
        mib_f(second["fetchedBytes"].as_u64().unwrap())
    );
}

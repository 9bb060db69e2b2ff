//! `fleetlet cache ls|verify|gc`: the artifact store by hand. Works next to a running agent: it
//! reads the agent's `status.json` for which releases use what, and never touches a download in
//! progress.

use crate::{Output, print_value};
use anyhow::{Context, bail};
use fleetlet_core::Digest;
use fleetlet_engine::Status;
use fleetlet_store::{GC_GRACE, OciStore};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn open(state_dir: &Path) -> anyhow::Result<OciStore> {
    let root = state_dir.join("oci");
    if !root.join("oci-layout").exists() {
        bail!(
            "no artifact store at {} (has the agent run with this state dir?)",
            root.display()
        );
    }
    OciStore::open(&root).with_context(|| format!("opening the artifact store {}", root.display()))
}

fn status(state_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(state_dir.join(crate::agent::STATUS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    refs: Vec<RefRow>,
    blobs: Vec<BlobRow>,
    total_bytes: u64,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RefRow {
    name: String,
    digest: Digest,
    media_type: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BlobRow {
    digest: Digest,
    size: u64,
    /// Commits of the recorded releases that need this blob.
    releases: Vec<String>,
}

pub fn ls(state_dir: &Path, output: Output) -> anyhow::Result<bool> {
    let store = open(state_dir)?;
    let status = status(state_dir);
    // blob → releases using it (through manifests too).
    let mut users: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    for r in status.iter().flat_map(|s| s.release_roots.iter()) {
        let roots: BTreeSet<Digest> = r.digests.iter().copied().collect();
        for d in store.reachable_only(&roots)? {
            users
                .entry(d)
                .or_default()
                .insert(r.commit.chars().take(12).collect());
        }
    }
    let blobs: Vec<BlobRow> = store
        .blobs()?
        .into_iter()
        .map(|(digest, size)| BlobRow {
            digest,
            size,
            releases: users
                .get(&digest)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
        })
        .collect();
    let listing = Listing {
        refs: store
            .refs()?
            .into_iter()
            .map(|e| RefRow {
                name: e.name().unwrap_or("").to_string(),
                digest: e.digest,
                media_type: e.media_type,
            })
            .collect(),
        total_bytes: blobs.iter().map(|b| b.size).sum(),
        blobs,
    };
    if output != Output::Text {
        print_value(&listing, output)?;
        return Ok(true);
    }
    println!("artifacts:");
    for r in &listing.refs {
        println!("  {}  {}", r.digest.short(), r.name);
    }
    println!("blobs:");
    for b in &listing.blobs {
        let used = if b.releases.is_empty() {
            "unused".to_string()
        } else {
            format!("used by {}", b.releases.join(", "))
        };
        println!("  {}  {:>12}  {used}", b.digest.short(), human(b.size));
    }
    println!(
        "total: {} blob(s), {}",
        listing.blobs.len(),
        human(listing.total_bytes)
    );
    Ok(true)
}

pub fn verify(state_dir: &Path, output: Output) -> anyhow::Result<bool> {
    let store = open(state_dir)?;
    let report = store.verify()?;
    if output != Output::Text {
        print_value(
            &serde_json::json!({"checked": report.checked, "corrupt": report.corrupt}),
            output,
        )?;
    } else {
        for d in &report.corrupt {
            println!("corrupt: {d} (removed; the next pull fetches it again)");
        }
        println!(
            "checked {} blob(s), {} corrupt",
            report.checked,
            report.corrupt.len()
        );
    }
    Ok(report.corrupt.is_empty())
}

pub fn gc(state_dir: &Path, dry_run: bool, output: Output) -> anyhow::Result<bool> {
    let store = open(state_dir)?;
    let Some(status) = status(state_dir) else {
        bail!(
            "no {} in {}: without the agent's record of its releases, nothing can be collected safely",
            crate::agent::STATUS_FILE,
            state_dir.display()
        );
    };
    let roots: BTreeSet<Digest> = status
        .release_roots
        .iter()
        .flat_map(|r| r.digests.iter().copied())
        .collect();
    let report = store.collect_unused(&roots, GC_GRACE, dry_run)?;
    if output != Output::Text {
        print_value(
            &serde_json::json!({"dryRun": dry_run, "kept": report.kept, "removed": report.removed.iter().map(|(d, s)| serde_json::json!({"digest": d, "size": s})).collect::<Vec<_>>(), "freedBytes": report.freed_bytes()}),
            output,
        )?;
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for (d, s) in &report.removed {
            println!("{verb}: {} ({})", d.short(), human(*s));
        }
        println!(
            "{verb} {} blob(s), {}; kept {}",
            report.removed.len(),
            human(report.freed_bytes()),
            report.kept
        );
    }
    Ok(true)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

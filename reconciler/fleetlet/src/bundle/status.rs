//! The return path of the air gap: `fleetlet bundle export-status` writes a small file, signed
//! with the site's own key, holding the site's status, its import records since a given time,
//! and the inventory of blobs it has (so the next bundle can leave them out). The technician
//! carries it back; `fleetlet bundle inspect` reads it.
//!
//! It is signed with the site key (`crate::site_key`).

use super::{Meta, StatusMeta};
use crate::{Output, print_value};
use anyhow::{Context, anyhow, bail};
use fleetlet_bundle::{BundleReader, BundleWriter, Limits};
use fleetlet_store::OciStore;
use fleetlet_verify::cosign::TrustedKey;
use std::path::{Path, PathBuf};

pub const STATUS_ENTRY: &str = "status.json";
pub const IMPORTS_ENTRY: &str = "imports.jsonl";
pub const INVENTORY_ENTRY: &str = "inventory.json";
pub const AUDIT_ENTRY: &str = "audit.jsonl";
/// Status files are small; anything much larger is not one.
const MAX_STATUS_FILE: u64 = 256 << 20;

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Inventory {
    site: String,
    applied_commit: Option<String>,
    imported_commit: Option<String>,
    blobs: Vec<fleetlet_core::Digest>,
}

pub fn export(
    state_dir: &Path,
    site: &str,
    since: Option<i64>,
    out: &Path,
    output: Output,
) -> anyhow::Result<bool> {
    let key = crate::site_key::load_or_create(state_dir)?;
    let status_path = state_dir.join(crate::agent::STATUS_FILE);
    let status = std::fs::read(&status_path).with_context(|| {
        format!(
            "reading {} (has the agent run with this state dir?)",
            status_path.display()
        )
    })?;
    let records = super::import::read_records(state_dir, since);
    let mut jsonl = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut jsonl, r)?;
        jsonl.push(b'\n');
    }
    let store = OciStore::open(&state_dir.join("oci")).context("opening the artifact store")?;
    let inventory = Inventory {
        site: site.to_string(),
        applied_commit: serde_json::from_slice::<fleetlet_engine::Status>(&status)
            .ok()
            .and_then(|s| s.applied_commit),
        imported_commit: fleetlet_git::pack::imported_commit(&state_dir.join("git")),
        blobs: store.blobs()?.into_iter().map(|(d, _)| d).collect(),
    };
    let meta = Meta::Status(StatusMeta {
        site: site.to_string(),
        site_key: key.public_pem()?,
        created_at: crate::agent::now(),
        since,
    });
    let mut writer = BundleWriter::new(serde_json::to_value(&meta)?);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        writer = writer.spool_in(parent);
    }
    writer.add_file(STATUS_ENTRY, &status[..])?;
    writer.add_file(IMPORTS_ENTRY, &jsonl[..])?;
    writer.add_file(INVENTORY_ENTRY, &serde_json::to_vec(&inventory)?[..])?;
    // The audit log's records of the same period (entries and checkpoints, verbatim: each
    // entry still carries its hash and its link; `fleetlet audit export` carries the whole
    // chain).
    let audit = audit_since(state_dir, since)?;
    writer.add_file(AUDIT_ENTRY, &audit.1[..])?;
    let files = writer
        .finish(&key, out, None)
        .with_context(|| format!("writing {}", out.display()))?;
    let fingerprint = TrustedKey::from_pem("site", key.public_pem()?.as_bytes())?.fingerprint();
    match output {
        Output::Text => println!(
            "status of site {site} written to {} ({} import record(s), {} audit record(s), {} blob(s) in the inventory), signed by site key {fingerprint}",
            out.display(),
            records.len(),
            audit.0,
            inventory.blobs.len()
        ),
        o => print_value(
            &serde_json::json!({"files": files, "site": site, "records": records.len(), "siteKey": fingerprint}),
            o,
        )?,
    }
    Ok(true)
}

/// The audit log's lines at or after `since`: (count, JSON Lines bytes).
fn audit_since(state_dir: &Path, since: Option<i64>) -> anyhow::Result<(usize, Vec<u8>)> {
    let path = crate::audit_cmd::audit_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, vec![])),
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
    };
    let mut out = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let time = match serde_json::from_str::<fleetlet_audit::Line>(line) {
            Ok(fleetlet_audit::Line::Entry(e)) => e.event.time,
            Ok(fleetlet_audit::Line::Checkpoint(c)) => c.time,
            // A torn last line (the agent is writing): left for the next export.
            Err(_) => continue,
        };
        if since.is_none_or(|s| time >= s) {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
            n += 1;
        }
    }
    Ok((n, out))
}

/// A status file opened and checked against the key it carries (and, when given, against the
/// key the reader expects for that site).
pub struct StatusFile {
    pub meta: StatusMeta,
    pub fingerprint: String,
    pub dir: fleetlet_bundle::VerifiedBundle,
}

pub fn open_status(parts: &[PathBuf], expected: Option<&TrustedKey>) -> anyhow::Result<StatusFile> {
    let (manifest, _) = BundleReader::inspect(parts)?;
    let meta = match super::Meta::parse(&manifest.meta).map_err(|e| anyhow!(e))? {
        Meta::Status(m) => m,
        Meta::Release(_) => bail!("this is a release bundle, not a status file"),
    };
    let key = TrustedKey::from_pem(&meta.site, meta.site_key.as_bytes())
        .context("the status file's site key")?;
    if let Some(want) = expected
        && want.spki_der != key.spki_der
    {
        bail!(
            "the status file is signed by key {}, not by {} ({})",
            key.fingerprint(),
            want.fingerprint(),
            want.name
        );
    }
    let tmp = std::env::temp_dir();
    let dir = BundleReader::open_scratch(
        parts,
        Limits {
            max_unpacked: MAX_STATUS_FILE,
            max_entries: 16,
        },
        std::slice::from_ref(&key),
        &tmp,
    )?;
    Ok(StatusFile {
        meta,
        fingerprint: key.fingerprint(),
        dir,
    })
}

/// One entry of a status file (checked against the key it carries).
pub fn read_status_entry(path: &Path, entry: &str) -> anyhow::Result<Vec<u8>> {
    let file = open_status(&[path.to_path_buf()], None)?;
    std::fs::read(file.dir.dir().join(entry))
        .with_context(|| format!("{}: no {entry} in the status file", path.display()))
}

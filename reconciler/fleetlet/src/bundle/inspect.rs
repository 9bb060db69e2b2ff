//! `fleetlet bundle inspect`: what a file on a medium is — a release (for which sites, from
//! which commit to which, which artifacts, signed by whom) or a site's status — without
//! importing anything. With `--key` or `--config` the signature is verified as an import would.

use super::{Meta, human_bytes};
use crate::{Output, print_value};
use anyhow::{Context, anyhow};
use fleetlet_bundle::{BundleReader, Limits};
use fleetlet_verify::cosign::TrustedKey;
use std::path::{Path, PathBuf};

pub fn run(
    parts: &[PathBuf],
    key: Option<&Path>,
    config: Option<&Path>,
    output: Output,
) -> anyhow::Result<bool> {
    let (manifest, claimed) = BundleReader::inspect(parts)?;
    let meta = Meta::parse(&manifest.meta).map_err(|e| anyhow!(e))?;
    let expected = key
        .map(|k| {
            let pem = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
            TrustedKey::from_pem(&k.display().to_string(), &pem).map_err(anyhow::Error::from)
        })
        .transpose()?;
    match meta {
        Meta::Release(release) => {
            // Verified only when asked: a full read of the bundle.
            // The cap an import would apply (the site's, or the default): a hostile medium
            // must not fill the temp dir while being looked at.
            let mut cap = 64 << 30;
            let verified = match (&expected, config) {
                (None, None) => None,
                (Some(k), _) => Some(vec![k.clone()]),
                (None, Some(c)) => {
                    let cfg = crate::config::AgentConfig::load(c)?;
                    cap = super::cli::max_unpacked(&cfg);
                    let policy =
                        fleetlet_verify::policy::TrustPolicy::load(&cfg.trust, Path::new(""))?;
                    Some(policy.bundle_keys())
                }
            };
            let verdict = match verified {
                None => None,
                Some(keys) => {
                    let tmp = tempfile::tempdir()?;
                    Some(
                        BundleReader::open_scratch(
                            parts,
                            Limits {
                                max_unpacked: cap,
                                max_entries: 1_000_000,
                            },
                            &keys,
                            tmp.path(),
                        )
                        .map(|b| b.signer.clone())
                        .map_err(|e| e.to_string()),
                    )
                }
            };
            if output != Output::Text {
                print_value(
                    &serde_json::json!({
                        "type": "release",
                        "meta": release,
                        "entries": manifest.entries.len(),
                        "unpacked": manifest.total_size(),
                        "signer": claimed,
                        "verified": verdict.as_ref().map(|v| v.is_ok()),
                        "error": verdict.as_ref().and_then(|v| v.as_ref().err()),
                    }),
                    output,
                )?;
                return Ok(verdict.is_none_or(|v| v.is_ok()));
            }
            println!("release bundle for {}", release.sites.join(", "));
            if let Some(s) = &release.selector {
                println!("  selector:  {s}");
            }
            println!(
                "  commit:    {} \"{}\" on {}",
                release.commit, release.summary, release.reference
            );
            match &release.since {
                Some(b) => println!(
                    "  delta:     since {b} ({} blob(s) left out that the site has)",
                    release.omitted_blobs
                ),
                None if release.omitted_blobs > 0 => println!(
                    "  full Git history; {} blob(s) left out per a site inventory",
                    release.omitted_blobs
                ),
                None => println!("  complete:  full Git history and every blob"),
            }
            for t in &release.tags {
                println!("  tag:       {}", t.name);
            }
            println!(
                "  artifacts: {} ({} platform)",
                release.artifacts.len(),
                release.platform
            );
            for a in &release.artifacts {
                println!(
                    "    {} -> {} [{} signature(s)] for {}",
                    a.reference,
                    a.pinned,
                    a.signatures,
                    a.sites.join(", ")
                );
            }
            println!(
                "  contents:  {} entries, {} unpacked",
                manifest.entries.len(),
                human_bytes(manifest.total_size())
            );
            match verdict {
                None => println!(
                    "  signed by: key {claimed} (not checked: give --key or --config to verify)"
                ),
                Some(Ok(signer)) => println!("  signed by: key {signer} (verified)"),
                Some(Err(e)) => {
                    println!("  signed by: key {claimed}: NOT VERIFIED: {e}");
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Meta::Status(_) => {
            let file = super::status::open_status(parts, expected.as_ref())?;
            let read = |name: &str| std::fs::read(file.dir.dir().join(name)).unwrap_or_default();
            let status: Option<fleetlet_engine::Status> =
                serde_json::from_slice(&read(super::status::STATUS_ENTRY)).ok();
            let records: Vec<super::import::ImportRecord> =
                String::from_utf8_lossy(&read(super::status::IMPORTS_ENTRY))
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
            let audit: Vec<fleetlet_audit::Line> =
                String::from_utf8_lossy(&read(super::status::AUDIT_ENTRY))
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
            if output != Output::Text {
                print_value(
                    &serde_json::json!({
                        "audit": audit,
                        "type": "status",
                        "site": file.meta.site,
                        "createdAt": file.meta.created_at,
                        "siteKey": file.fingerprint,
                        "status": status,
                        "imports": records,
                    }),
                    output,
                )?;
                return Ok(true);
            }
            println!(
                "status of site {} at {}",
                file.meta.site,
                crate::agent::format_time(file.meta.created_at)
            );
            println!(
                "  signed by: site key {}{}",
                file.fingerprint,
                if expected.is_some() {
                    " (verified against --key)"
                } else {
                    " (self-signed: give --key to check the site's identity)"
                }
            );
            if let Some(s) = &status {
                println!(
                    "  applied:   {}",
                    s.applied_commit.as_deref().unwrap_or("nothing")
                );
                if let Some(e) = &s.last_error {
                    println!("  error:     {}", e.message);
                }
                for w in &s.workloads {
                    println!("  workload:  {} {}", w.id, w.state);
                }
            }
            let entries = audit
                .iter()
                .filter(|l| matches!(l, fleetlet_audit::Line::Entry(_)))
                .count();
            println!(
                "  audit:     {entries} entr{} and {} checkpoint(s) in this period",
                if entries == 1 { "y" } else { "ies" },
                audit.len() - entries
            );
            for r in &records {
                println!(
                    "  import:    {} {} {}{}",
                    crate::agent::format_time(r.at),
                    r.outcome,
                    r.files.join(","),
                    r.reason
                        .as_deref()
                        .or(r.commit.as_deref())
                        .map(|t| format!(": {t}"))
                        .unwrap_or_default()
                );
            }
            Ok(true)
        }
    }
}

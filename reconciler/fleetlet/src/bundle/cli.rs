//! The `fleetlet bundle` subcommands: arguments in, the bundle module's steps run, results out
//! (text or `-o json|yaml`; exit 1 when an import is rejected).

use super::import::{self, ImportError, Site};
use crate::config::AgentConfig;
use crate::{BundleCommand, Output, UsageError, print_value};
use anyhow::Context;
use std::path::{Path, PathBuf};

pub fn run(command: BundleCommand) -> anyhow::Result<bool> {
    match command {
        BundleCommand::Create {
            repo,
            rev,
            sites,
            selector,
            since,
            site_inventory,
            key,
            out,
            max_size,
            branch,
            platform,
            config,
            output,
        } => super::create::run(super::create::CreateArgs {
            repo,
            rev,
            sites,
            selector,
            since,
            site_inventory,
            key,
            out,
            max_size: max_size.map(|m| m.0),
            config,
            platform,
            branch,
            output,
        }),
        BundleCommand::Inspect {
            files,
            key,
            config,
            output,
        } => super::inspect::run(&files, key.as_deref(), config.as_deref(), output),
        BundleCommand::Import {
            files,
            config,
            state_dir,
            output,
        } => import_cmd(&files, &config, state_dir, output),
        BundleCommand::ExportStatus {
            out,
            since,
            config,
            state_dir,
            output,
        } => {
            // With another state dir the installed config may be another site's: its name
            // would sign the export.
            let config = match (config, &state_dir) {
                (Some(c), _) => c,
                (None, None) => PathBuf::from(crate::config::DEFAULT_CONFIG),
                (None, Some(_)) => {
                    return Err(UsageError(
                        "give --config with --state-dir: the site's name is in it".into(),
                    )
                    .into());
                }
            };
            let cfg = AgentConfig::load(&config).map_err(|e| UsageError(format!("{e:#}")))?;
            let since = since.as_deref().map(parse_time).transpose()?;
            let dir = state_dir.unwrap_or(cfg.state_dir.clone());
            super::status::export(&dir, &cfg.site.to_string(), since, &out, output)
        }
    }
}

/// RFC 3339 (`2026-11-27T10:00:00Z`) or Unix seconds.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    let bad = || {
        UsageError(format!(
            "--since {text:?}: expected RFC 3339 (2026-11-27T10:00:00Z) or Unix seconds"
        ))
    };
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(bad().into());
    }
    let num = |r: std::ops::Range<usize>| text[r].parse::<i64>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm), the inverse of agent::format_time.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn import_cmd(
    files: &[PathBuf],
    config: &Path,
    state_dir: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<bool> {
    let cfg = AgentConfig::load(config).map_err(|e| UsageError(format!("{e:#}")))?;
    let policy = fleetlet_verify::policy::TrustPolicy::load(&cfg.trust, Path::new(""))
        .map_err(|e| UsageError(format!("agent config {}: {e}", config.display())))?;
    if cfg.source.bundles.is_none() {
        // Its Git fetches would overwrite what an import publishes in the same mirror.
        return Err(UsageError(format!(
            "agent config {}: this site follows Git (source.git); set source.bundles to take \
             releases from sync bundles",
            config.display()
        ))
        .into());
    }
    let state_dir = state_dir.unwrap_or(cfg.state_dir.clone());
    let store = fleetlet_store::OciStore::open(&state_dir.join("oci"))
        .context("opening the artifact store")?;
    let site_name = cfg.site.to_string();
    let branch = bundles_branch(&cfg);
    let site = Site {
        name: &site_name,
        state_dir: &state_dir,
        policy: &policy,
        store: &store,
        max_unpacked: max_unpacked(&cfg),
        k3s: cfg.runtimes.k3s.is_some(),
        branch: &branch,
        interrupt_limit: None,
    };
    let total = fleetlet_bundle::BundleReader::inspect(files)
        .map(|(m, _)| m.total_size())
        .unwrap_or(0);
    let progress = crate::progress::CounterBar::start("importing", total);
    let result = import::import(files, &site, Some(progress.counter()), true);
    drop(progress);
    match result {
        Ok(imported) => {
            match output {
                Output::Text => println!("imported {}", imported.summary_line()),
                o => print_value(&imported, o)?,
            }
            Ok(true)
        }
        Err(e) => {
            let kind = match &e {
                ImportError::Rejected(_) | ImportError::MissingBase(_) => "rejected",
                ImportError::Truncated(_) => "incomplete",
                ImportError::Local(_) => "failed",
                ImportError::Busy => "busy",
            };
            match output {
                Output::Text => eprintln!("bundle {kind}: {e}"),
                o => print_value(
                    &serde_json::json!({"outcome": kind, "reason": e.to_string()}),
                    o,
                )?,
            }
            Ok(false)
        }
    }
}

/// The branch this site takes releases on.
pub fn bundles_branch(cfg: &AgentConfig) -> String {
    cfg.source
        .bundles
        .as_ref()
        .map(|b| b.branch.clone())
        .unwrap_or_else(|| "main".into())
}

/// The unpacked-size cap of imports on this site.
pub fn max_unpacked(cfg: &AgentConfig) -> u64 {
    cfg.source
        .bundles
        .as_ref()
        .map(|b| b.max_size.0)
        .unwrap_or(64 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_seconds() {
        let cases = [
            ("0", Some(0)),
            ("1700000000", Some(1_700_000_000)),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000)),
            ("2024-02-29T12:00:00Z", Some(1_709_208_000)),
            ("2024-02-29 12:00:00", None),
            ("yesterday", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_time(text).ok(), want, "{text}");
            if let Some(t) = want {
                let back = crate::agent::format_time(t);
                assert_eq!(parse_time(&back).unwrap(), t);
            }
        }
    }
}

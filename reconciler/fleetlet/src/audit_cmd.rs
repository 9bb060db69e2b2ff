//! `fleetlet audit`: the site's tamper-evident record read back — its key (`site-key`), its
//! entries (`log`), and a full check (`verify`: the chain, the checkpoints' signatures, the
//! journal against its mirror, and the artifact signatures recorded, re-verified from the
//! material still cached in the store).

use crate::{Output, print_value};
use anyhow::{Context, anyhow};
use fleetlet_audit::render::clean;
use fleetlet_audit::{Action, Entry, Line};
use fleetlet_core::reference::ArtifactRef;
use std::path::{Path, PathBuf};

/// The JSON Lines mirror of the log, under the state dir.
pub const AUDIT_FILE: &str = "audit.jsonl";

pub fn audit_path(state_dir: &Path) -> PathBuf {
    state_dir.join(AUDIT_FILE)
}

pub fn site_key(state_dir: &Path, site: &str, output: Output) -> anyhow::Result<bool> {
    let key = crate::site_key::load_or_create(state_dir)?;
    let public = key.public_pem()?;
    let trusted = fleetlet_verify::cosign::TrustedKey::from_pem(site, public.as_bytes())?;
    let line = fleetlet_audit::site_key_line(site, &trusted);
    match output {
        Output::Text => println!("{line}"),
        o => print_value(
            &serde_json::json!({
                "site": site,
                "fingerprint": trusted.fingerprint(),
                "publicKey": public,
                "siteKeysLine": line,
            }),
            o,
        )?,
    }
    Ok(true)
}

/// Every entry of the site's log, in order (checkpoints left out).
fn read_entries(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
    };
    // A last line without its end is being written by the agent right now: left for later.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut out = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(line)
            .with_context(|| format!("{}: line {}", path.display(), i + 1))?
        {
            Line::Entry(e) => out.push(e),
            Line::Checkpoint(_) => {}
        }
    }
    Ok(out)
}

pub fn log(
    state_dir: &Path,
    since: Option<i64>,
    release: Option<&str>,
    output: Output,
) -> anyhow::Result<bool> {
    let entries: Vec<Entry> = read_entries(&audit_path(state_dir))?
        .into_iter()
        .filter(|e| since.is_none_or(|s| e.event.time >= s))
        .filter(|e| {
            release.is_none_or(|r| {
                let m = fleetlet_audit::report::ReleaseMatcher::new(r);
                // The rollback that ended a run names the release it left in `from`.
                m.matches(&e.event)
                    || e.event.from.as_deref().is_some_and(|f| {
                        let mut left = e.event.clone();
                        left.commit = Some(f.to_string());
                        left.tags.clear();
                        m.matches(&left)
                    })
            })
        })
        .collect();
    if output != Output::Text {
        print_value(&entries, output)?;
        return Ok(true);
    }
    for e in &entries {
        let ev = &e.event;
        let commit = ev
            .commit
            .as_deref()
            .map(|c| &c[..12.min(c.len())])
            .unwrap_or("-");
        let action = serde_json::to_value(ev.action)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        let signers: Vec<&str> = ev
            .commit_signers
            .iter()
            .map(|s| s.identity.as_str())
            .collect();
        println!(
            "{:>6} {} {:<14} {commit} {}{}{}",
            e.seq,
            crate::agent::format_time(ev.time),
            action,
            if signers.is_empty() {
                String::new()
            } else {
                format!("signed by {} ", clean(&signers.join(", ")))
            },
            ev.reason
                .as_deref()
                .map(|r| format!("— {}", clean(r.lines().next().unwrap_or(r))))
                .unwrap_or_default(),
            if ev.objects.is_empty() {
                String::new()
            } else {
                format!(" [{}]", clean(&ev.objects.join(", ")))
            }
        );
        for w in &ev.workloads {
            for a in &w.artifacts {
                let by: Vec<&str> = a.signers.iter().map(|s| s.identity.as_str()).collect();
                println!(
                    "       {:<24} {}{}",
                    clean(&w.id),
                    a.digest,
                    if by.is_empty() {
                        String::new()
                    } else {
                        format!(" signed by {}", clean(&by.join(", ")))
                    }
                );
            }
        }
    }
    Ok(true)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyReport {
    ok: bool,
    entries: u64,
    checkpoints: u64,
    /// Entries after the last signed checkpoint.
    unanchored: u64,
    journal: String,
    artifacts_reverified: usize,
    artifacts_not_cached: usize,
    problems: Vec<String>,
}

pub fn verify(
    state_dir: &Path,
    site: Option<&str>,
    key_file: Option<&Path>,
    policy: Option<&fleetlet_verify::policy::TrustPolicy>,
    output: Output,
) -> anyhow::Result<bool> {
    let path = audit_path(state_dir);
    // A key given from outside the site is the one to trust: the site's own copy of its
    // public key sits beside the log and could be replaced with it.
    let key = match key_file {
        Some(f) => {
            let pem = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            Some(fleetlet_verify::cosign::TrustedKey::from_pem(
                &f.display().to_string(),
                &pem,
            )?)
        }
        None => crate::site_key::public(state_dir)?,
    };
    let mut problems = Vec::new();
    let mut report = VerifyReport {
        ok: false,
        entries: 0,
        checkpoints: 0,
        unanchored: 0,
        journal: String::new(),
        artifacts_reverified: 0,
        artifacts_not_cached: 0,
        problems: vec![],
    };
    // The journal in the state store is the durable copy. A running agent holds the store:
    // then only the mirror can be read, and a line it is writing may be torn.
    let db = state_dir.join("db");
    let journal: Option<Vec<Vec<u8>>> = if db.is_dir() {
        match fleetlet_state::SledStateStore::open(&db) {
            Err(_) => None,
            Ok(store) => {
                use fleetlet_audit::Journal;
                Some(
                    store
                        .audit_journal()
                        .and_then(|j| j.lines().map_err(fleetlet_engine::ports::StateError))
                        .map_err(|e| anyhow!("{e}"))?,
                )
            }
        }
    } else {
        Some(vec![])
    };
    let mut mirror = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
    };
    if journal.is_none() && !mirror.is_empty() && mirror.last() != Some(&b'\n') {
        let end = mirror
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        mirror.truncate(end);
    }
    let mut applied: Vec<Entry> = Vec::new();
    let mut verified_site = None;
    match fleetlet_audit::verify_with(&mirror[..], key.as_ref(), |e| {
        if e.event.action == Action::Applied {
            applied.push(e.clone());
        }
    }) {
        Ok(v) => {
            report.entries = v.entries;
            report.checkpoints = v.checkpoints;
            report.unanchored = v.unanchored;
            verified_site = v.site;
        }
        Err(p) => problems.push(format!("{}: {p}", path.display())),
    }
    if let (Some(want), Some(found)) = (site, verified_site.as_deref())
        && want != found
    {
        problems.push(format!(
            "{}: the log is site {found}'s, this is site {want}",
            path.display()
        ));
    }
    if key.is_none() && report.checkpoints > 0 {
        problems.push(format!(
            "no site key in {}: the log's checkpoints cannot be checked (give --key)",
            state_dir.display()
        ));
    }
    report.journal = match &journal {
        None => "not checked (the state store is in use by the running agent): the mirror alone \
                 was verified"
            .into(),
        Some(lines) => {
            let mut text = Vec::new();
            for l in lines {
                text.extend_from_slice(l);
                text.push(b'\n');
            }
            if let Err(p) = fleetlet_audit::verify(&text[..], key.as_ref()) {
                problems.push(format!("the journal in the state store: {p}"));
            }
            let mirrored: Vec<&[u8]> = mirror
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            match lines
                .iter()
                .zip(&mirrored)
                .position(|(a, b)| a.as_slice() != *b)
            {
                Some(i) => {
                    problems.push(format!(
                        "{}: line {} differs from the journal in the state store",
                        path.display(),
                        i + 1
                    ));
                    "differs".into()
                }
                None if mirrored.len() != lines.len() => {
                    problems.push(format!(
                        "{} has {} line(s), the journal in the state store {}: lines were {}",
                        path.display(),
                        mirrored.len(),
                        lines.len(),
                        if mirrored.len() < lines.len() {
                            "removed from the mirror"
                        } else {
                            "added to the mirror"
                        }
                    ));
                    "differs".into()
                }
                None => format!("agrees ({} line(s))", lines.len()),
            }
        }
    };
    // Artifact signatures recorded, re-verified from the material still in the store.
    if let Some(policy) = policy {
        let store = fleetlet_store::OciStore::open(&state_dir.join("oci"))
            .context("opening the artifact store")?;
        for e in &applied {
            for w in &e.event.workloads {
                for a in &w.artifacts {
                    if a.material.is_empty() {
                        continue;
                    }
                    let Ok(ArtifactRef::Registry(pinned)) = a.reference.parse::<ArtifactRef>()
                    else {
                        continue;
                    };
                    let material: Vec<fleetlet_core::Digest> =
                        a.material.iter().filter_map(|d| d.parse().ok()).collect();
                    if material.iter().any(|d| !store.contains(d)) {
                        report.artifacts_not_cached += 1;
                        continue;
                    }
                    let verdict =
                        fleetlet_engine::artifacts::load_signature_manifests(&store, &material)
                            .and_then(|m| policy.verify(&pinned, &m));
                    match verdict {
                        Ok(signers) => {
                            report.artifacts_reverified += 1;
                            let now: Vec<&str> =
                                signers.iter().map(|s| s.identity.as_str()).collect();
                            if let Some(missing) = a
                                .signers
                                .iter()
                                .find(|s| !now.contains(&s.identity.as_str()))
                            {
                                problems.push(format!(
                                    "entry {}: {} of {}: recorded as signed by {}, which its cached signatures no longer show",
                                    e.seq, a.reference, w.id, missing.identity
                                ));
                            }
                        }
                        Err(reason) => problems.push(format!(
                            "entry {}: {} of {}: re-verifying its recorded signatures: {reason}",
                            e.seq, a.reference, w.id
                        )),
                    }
                }
            }
        }
    }
    report.ok = problems.is_empty();
    report.problems = problems;
    match output {
        Output::Text => {
            println!(
                "audit log {}: {} entries, {} checkpoint(s), {} after the last checkpoint",
                path.display(),
                report.entries,
                report.checkpoints,
                report.unanchored
            );
            println!("journal: {}", report.journal);
            if policy.is_some() {
                println!(
                    "artifact signatures: {} re-verified, {} no longer cached",
                    report.artifacts_reverified, report.artifacts_not_cached
                );
            }
            for p in &report.problems {
                println!("PROBLEM: {p}");
            }
            println!("{}", if report.ok { "ok" } else { "FAILED" });
        }
        o => print_value(&report, o)?,
    }
    Ok(report.ok)
}

pub fn export(state_dir: &Path, site: &str, out: &Path, output: Output) -> anyhow::Result<bool> {
    let key = crate::site_key::load_or_create(state_dir)?;
    let summary =
        fleetlet_audit::export(&audit_path(state_dir), site, &key, crate::agent::now(), out)
            .with_context(|| format!("exporting the audit log of {site}"))?;
    match output {
        Output::Text => println!(
            "audit log of {site}: {} entries, {} checkpoint(s) written to {}, signed by site key {}",
            summary.entries,
            summary.checkpoints,
            out.display(),
            summary.key
        ),
        o => print_value(&summary, o)?,
    }
    Ok(true)
}

pub fn report(
    release: &str,
    exports: &Path,
    site_keys: &Path,
    format: crate::ReportFormat,
) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(site_keys)
        .with_context(|| format!("reading {}", site_keys.display()))?;
    let keys = fleetlet_audit::SiteKeys::parse(&text)
        .map_err(|e| crate::UsageError(format!("{}: {e}", site_keys.display())))?;
    let report = fleetlet_audit::report(release, exports, &keys);
    match format {
        crate::ReportFormat::Text => print!("{}", report.to_text()),
        crate::ReportFormat::Html => print!("{}", report.to_html()),
        crate::ReportFormat::Json => print_value(&report, Output::Json)?,
        crate::ReportFormat::Yaml => print_value(&report, Output::Yaml)?,
    }
    Ok(report.problems.is_empty())
}

//! Fleet-wide reports (`fleetlet audit report --release REV`): from a directory of site
//! exports, which sites ran a release, from when to when, with which artifacts and signers,
//! which never did and when each was last heard from — and everything that makes the answer
//! doubtful: exports not signed by the key listed for their site, broken logs, silent sites,
//! and two exports of one site that tell different histories.
//!
//! Exports are opened one at a time and their logs streamed: what is kept per export is its
//! runs of the release and, only for sites with several exports, one hash per entry to compare
//! their chains. Rendering is in [`crate::render`].

use crate::export::{ExportError, open_export_with, open_from_head};
use crate::record::{Action, Entry, Event, Signer, Workload};
use crate::sitekeys::SiteKeys;
use fleetlet_bundle::BundleReader;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The answer for one release.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// As asked: a commit (7+ hex digits, a prefix) or a tag.
    pub release: String,
    /// Every site of the site-keys file, in name order.
    pub sites: Vec<SiteReport>,
    pub problems: Vec<ReportProblem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SiteStatus {
    /// It runs the release as of its last record.
    Running,
    /// It ran the release and moved on.
    Ran,
    /// Its log never shows the release running.
    NeverRan,
    /// No usable export: nothing is known (see the problems).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteReport {
    pub site: String,
    pub status: SiteStatus,
    /// Each period the release ran, in order.
    pub runs: Vec<Run>,
    /// Time of the last entry or checkpoint: when the site was last heard from.
    pub last_heard: Option<i64>,
    /// When the export used was made (the site's clock).
    pub exported_at: Option<i64>,
    /// Entries in the export used.
    pub entries: u64,
    /// The export file used (the longest when there are several that agree).
    pub export: Option<String>,
    /// Another export of this site tells a different history (see the problems).
    pub disputed: bool,
}

/// One period during which a site ran the release.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub commit: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// When it was applied (or rolled back to).
    pub from: i64,
    /// When the site moved to another release; `None`: it still ran as of the last record.
    pub to: Option<i64>,
    /// What ended the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<RunEnd>,
    /// Who signed the commit.
    pub commit_signers: Vec<Signer>,
    /// What ran: workloads with their artifacts' digests and signers.
    pub workloads: Vec<Workload>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEnd {
    /// `applied` (another release) or `rolledBack`.
    pub action: Action,
    /// The release that ran next (none: a rollback to nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Something that makes the report incomplete or doubtful.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ReportProblem {
    #[error("{file}: cannot be read: {message}")]
    Unreadable { file: String, message: String },
    #[error("{file}: not a usable export: {message}")]
    BadExport { file: String, message: String },
    #[error(
        "{file}: an export of site {site:?}, signed by key {fingerprint}, but the site-keys file does not list that site"
    )]
    UnknownSite {
        file: String,
        site: String,
        fingerprint: String,
    },
    #[error(
        "{file}: an export of site {site:?} signed by key {found}, but the site-keys file lists key {listed} for it"
    )]
    WrongKey {
        file: String,
        site: String,
        listed: String,
        found: String,
    },
    #[error("{file}: the log of site {site:?} is broken: {message}")]
    BrokenLog {
        file: String,
        site: String,
        /// The line of the log (inside the export) where it breaks.
        line: Option<u64>,
        message: String,
    },
    #[error(
        "site {site:?}: exports {file} and {other} disagree from entry {seq} on (neither history continues the other); the report uses {other}, the longer"
    )]
    Disagree {
        site: String,
        file: String,
        /// The export the report uses (the longest).
        other: String,
        /// The first entry whose hash differs.
        seq: u64,
    },
    #[error(
        "site {site:?}: export {file}, made later, holds {entries} entries where the earlier {other} holds {longer}: the site's log lost entries in between (truncated or restored from a backup)"
    )]
    Shrunk {
        site: String,
        file: String,
        entries: u64,
        other: String,
        longer: u64,
    },
    #[error("site {site:?}: never heard from ({})", refused_note(*refused))]
    NeverHeardFrom {
        site: String,
        /// Exports claiming to be from the site that were refused (listed as problems too).
        refused: usize,
    },
}

/// Which entries are the release: by commit when `rev` is 7 to 64 hex digits (a prefix), and
/// by tag always (a tag may look like hex).
#[derive(Debug, Clone)]
pub struct ReleaseMatcher {
    commit_prefix: Option<String>,
    tag: String,
}

impl ReleaseMatcher {
    pub fn new(rev: &str) -> Self {
        let rev = rev.trim();
        let hex = (7..=64).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit());
        ReleaseMatcher {
            commit_prefix: hex.then(|| rev.to_ascii_lowercase()),
            tag: strip_tag(rev).to_string(),
        }
    }

    /// Whether `event` names the release (by its commit or a tag), whatever its action.
    pub fn matches(&self, event: &Event) -> bool {
        let by_commit = self.commit_prefix.as_deref().is_some_and(|prefix| {
            event.commit.as_deref().is_some_and(|c| {
                c.len() >= prefix.len() && c[..prefix.len()].eq_ignore_ascii_case(prefix)
            })
        });
        by_commit || event.tags.iter().any(|t| strip_tag(t) == self.tag)
    }
}

fn refused_note(refused: usize) -> String {
    match refused {
        0 => "no export in the directory".into(),
        1 => "its one export was refused".into(),
        n => format!("its {n} exports were refused"),
    }
}

fn strip_tag(t: &str) -> &str {
    t.strip_prefix("refs/tags/").unwrap_or(t)
}

/// Follows one log's entries and collects the periods the release ran. A run starts at an
/// `applied` entry of the release, or a `rolledBack` entry back to it (the site runs it again
/// from then), and ends at the next `applied` or `rolledBack` entry for another commit.
pub struct RunTracker<'a> {
    release: &'a ReleaseMatcher,
    runs: Vec<Run>,
    /// Commits seen to be the release: entries that carry no tags still name it by commit.
    commits: Vec<String>,
}

impl<'a> RunTracker<'a> {
    pub fn new(release: &'a ReleaseMatcher) -> Self {
        RunTracker {
            release,
            runs: Vec::new(),
            commits: Vec::new(),
        }
    }

    pub fn visit(&mut self, entry: &Entry) {
        let ev = &entry.event;
        if !matches!(ev.action, Action::Applied | Action::RolledBack) {
            return;
        }
        let commit = ev.commit.as_deref();
        let is_release =
            self.release.matches(ev) || commit.is_some_and(|c| self.commits.iter().any(|k| k == c));
        if is_release && let Some(c) = commit.filter(|c| !self.commits.iter().any(|k| k == c)) {
            self.commits.push(c.to_string());
        }
        let open = self.runs.last_mut().filter(|r| r.to.is_none());
        match open {
            Some(run) if is_release || commit == Some(run.commit.as_str()) => {
                // Applied again (a restart, a held-back workload now updated): the same run.
                for t in &ev.tags {
                    if !run.tags.contains(t) {
                        run.tags.push(t.clone());
                    }
                }
                for s in &ev.commit_signers {
                    if !run.commit_signers.contains(s) {
                        run.commit_signers.push(s.clone());
                    }
                }
                for w in &ev.workloads {
                    if !run.workloads.contains(w) {
                        run.workloads.push(w.clone());
                    }
                }
            }
            Some(run) => {
                run.to = Some(ev.time);
                run.ended_by = Some(RunEnd {
                    action: ev.action,
                    commit: ev.commit.clone(),
                });
            }
            None if is_release => self.runs.push(Run {
                commit: commit.unwrap_or_default().to_string(),
                tags: ev.tags.clone(),
                from: ev.time,
                to: None,
                ended_by: None,
                commit_signers: ev.commit_signers.clone(),
                workloads: ev.workloads.clone(),
            }),
            None => {}
        }
    }

    pub fn into_runs(self) -> Vec<Run> {
        self.runs
    }
}

/// One export's contribution, kept until all are read.
struct Collected {
    file: String,
    entries: u64,
    last_time: Option<i64>,
    created_at: i64,
    runs: Vec<Run>,
    /// sha256 of each entry by seq (index seq-1); only for sites with several exports.
    hashes: Option<Vec<[u8; 32]>>,
}

/// Reports on `release` from every export in `exports` (files in name order; the parts of a
/// split export together), trusting each only with the key `site_keys` lists for its site.
pub fn report(release: &str, exports: &Path, site_keys: &SiteKeys) -> Report {
    let matcher = ReleaseMatcher::new(release);
    let mut problems = Vec::new();
    let files = match list_exports(exports) {
        Ok(files) => files,
        Err(message) => {
            problems.push(ReportProblem::Unreadable {
                file: exports.display().to_string(),
                message,
            });
            Vec::new()
        }
    };
    let scratch = match tempfile::Builder::new()
        .prefix(".fleetlet-audit-report-")
        .tempdir()
    {
        Ok(dir) => Some(dir),
        Err(e) => {
            problems.push(ReportProblem::Unreadable {
                file: std::env::temp_dir().display().to_string(),
                message: format!("no scratch space: {e}"),
            });
            None
        }
    };

    // The heads only (cheap): which sites have several exports, whose chains must be compared.
    let heads: Vec<Option<(serde_json::Value, String)>> = files
        .iter()
        .map(|(_, parts)| {
            BundleReader::inspect(parts)
                .ok()
                .map(|(manifest, claimed)| (manifest.meta, claimed))
        })
        .collect();
    let claimed_site = |head: &Option<(serde_json::Value, String)>| {
        head.as_ref()
            .and_then(|(meta, _)| meta.get("site")?.as_str().map(str::to_string))
    };
    let mut per_site: HashMap<String, usize> = HashMap::new();
    for site in heads.iter().filter_map(claimed_site) {
        *per_site.entry(site).or_default() += 1;
    }

    let mut collected: BTreeMap<String, Vec<Collected>> = BTreeMap::new();
    for ((name, parts), head) in files.iter().zip(heads) {
        let Some(scratch) = &scratch else { break };
        // Unknown heads keep hashes too: better some memory than a comparison missed.
        let keep_hashes =
            claimed_site(&head).is_none_or(|s| per_site.get(&s).copied().unwrap_or(0) > 1);
        let mut tracker = RunTracker::new(&matcher);
        let mut hashes = keep_hashes.then(Vec::new);
        let visit = |entry: &Entry| {
            tracker.visit(entry);
            if let Some(h) = &mut hashes {
                h.push(hash_bytes(&entry.hash));
            }
        };
        // The head read above is not read again (an unreadable one is, for its error).
        let opened = match head {
            Some((meta, claimed)) => {
                open_from_head(parts, &meta, claimed, site_keys, scratch.path(), visit)
            }
            None => open_export_with(parts, site_keys, scratch.path(), visit),
        };
        match opened {
            Ok(opened) => {
                collected
                    .entry(opened.site.clone())
                    .or_default()
                    .push(Collected {
                        file: name.clone(),
                        entries: opened.verified.entries,
                        last_time: opened.verified.last_time,
                        created_at: opened.created_at,
                        runs: tracker.into_runs(),
                        hashes,
                    });
            }
            Err(e) => problems.push(problem_of(name, e)),
        }
    }

    let mut sites = Vec::with_capacity(site_keys.len());
    for site in site_keys.sites() {
        let Some(mut exports) = collected.remove(site) else {
            problems.push(ReportProblem::NeverHeardFrom {
                site: site.to_string(),
                refused: per_site.get(site).copied().unwrap_or(0),
            });
            sites.push(SiteReport {
                site: site.to_string(),
                status: SiteStatus::Unknown,
                runs: Vec::new(),
                last_heard: None,
                exported_at: None,
                entries: 0,
                export: None,
                disputed: false,
            });
            continue;
        };
        // The longest is the fullest history; the others must be prefixes of it.
        exports.sort_by(|a, b| b.entries.cmp(&a.entries).then(a.file.cmp(&b.file)));
        let used = exports.remove(0);
        let mut disputed = false;
        let mut last_heard = used.last_time;
        let mut exported_at = used.created_at;
        for other in exports {
            match first_difference(&used, &other) {
                Some(seq) => {
                    disputed = true;
                    problems.push(ReportProblem::Disagree {
                        site: site.to_string(),
                        file: other.file.clone(),
                        other: used.file.clone(),
                        seq,
                    });
                }
                None => {
                    // A prefix made *later* than the fuller one: the log went backwards.
                    if other.created_at > used.created_at && other.entries < used.entries {
                        problems.push(ReportProblem::Shrunk {
                            site: site.to_string(),
                            file: other.file.clone(),
                            entries: other.entries,
                            other: used.file.clone(),
                            longer: used.entries,
                        });
                    }
                    last_heard = last_heard.max(other.last_time);
                    exported_at = exported_at.max(other.created_at);
                }
            }
        }
        let status = match used.runs.last() {
            None => SiteStatus::NeverRan,
            Some(r) if r.to.is_none() => SiteStatus::Running,
            Some(_) => SiteStatus::Ran,
        };
        sites.push(SiteReport {
            site: site.to_string(),
            status,
            runs: used.runs,
            last_heard,
            exported_at: Some(exported_at),
            entries: used.entries,
            export: Some(used.file),
            disputed,
        });
    }
    Report {
        release: release.to_string(),
        sites,
        problems,
    }
}

/// The first seq at which `shorter`'s chain leaves `longer`'s; `None` when it is a prefix.
/// Hashes chain, so equal hashes at a seq mean equal histories up to it.
fn first_difference(longer: &Collected, shorter: &Collected) -> Option<u64> {
    let (Some(a), Some(b)) = (&longer.hashes, &shorter.hashes) else {
        return None;
    };
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .map(|i| i as u64 + 1)
}

/// The 32 bytes of a verified `sha256:<hex>` hash.
fn hash_bytes(hash: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    // Verification recomputed it, so it is well formed; a malformed one would compare unequal.
    let _ = hex::decode_to_slice(hex, &mut out);
    out
}

fn problem_of(file: &str, e: ExportError) -> ReportProblem {
    let file = file.to_string();
    match e {
        ExportError::UnknownSite {
            site, fingerprint, ..
        } => ReportProblem::UnknownSite {
            file,
            site,
            fingerprint,
        },
        ExportError::WrongKey {
            site,
            listed,
            found,
            ..
        } => ReportProblem::WrongKey {
            file,
            site,
            listed,
            found,
        },
        ExportError::BrokenExport { site, problem, .. } => ReportProblem::BrokenLog {
            file,
            site,
            line: problem.line(),
            message: problem.to_string(),
        },
        ExportError::Container { source, .. } => ReportProblem::BadExport {
            file,
            message: source.to_string(),
        },
        ExportError::NotAnExport { detail, .. } => ReportProblem::BadExport {
            file,
            message: detail,
        },
        ExportError::Io { path, source } => ReportProblem::Unreadable {
            file,
            message: format!("{}: {source}", path.display()),
        },
        other => ReportProblem::BadExport {
            file,
            message: other.to_string(),
        },
    }
}

/// The exports in `dir`, by name: each regular file (hidden ones left out) with its parts, the
/// parts of a split export (`X.part-NNN`) grouped under `X`.
fn list_exports(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, String> {
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let group = if fleetlet_bundle::is_part(&path) {
            name.rsplit_once(".part-").map(|(base, _)| base.to_string())
        } else {
            None
        };
        groups.entry(group.unwrap_or(name)).or_default().push(path);
    }
    Ok(groups.into_iter().collect())
}

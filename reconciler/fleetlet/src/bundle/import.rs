//! `fleetlet bundle import` and the agent's inbox: a bundle becomes the site's next release only
//! after every check the site's policy requires has passed, and then all at once.
//!
//! 1. The container is extracted into a staging directory beside the state (signature by a key
//!    in `trust.bundles`, every entry's digest and size, no hostile paths, a size cap).
//! 2. The bundle must name this site; its Git objects go into a staging repository that
//!    borrows the site's mirror (so a delta finds its base, and the mirror is not touched).
//! 3. The release is checked as the engine would check it ([`check_release`]): history (no
//!    rollback without a signed instruction), commit signature, render, release tag, every
//!    artifact present — in the bundle or already on the site — and signed per policy.
//! 4. Only then: blobs are renamed into the site's store (unnamed, so invisible), tags are
//!    written in one atomic `index.json` update, the objects are added to the mirror, and the
//!    mirror's branch moves — the one write that publishes the release to the agent.
//!
//! A rejection at any step leaves the site as it was (the staging directory is removed) and is
//! recorded in `bundles/imports.jsonl` with its reason.

use super::{BLOB_PREFIX, Meta, OCI_DIR, PACK_ENTRY, attempt, blob_digest, human_bytes};
use fleetlet_bundle::{BundleError, BundleReader, Limits};
use fleetlet_engine::artifacts::Platform;
use fleetlet_engine::ports::Source;
use fleetlet_engine::preflight::{Layered, Preflight, check_release};
use fleetlet_engine::trust::{Signer, Verifier};
use fleetlet_git::pack::{self, PackError};
use fleetlet_git::{Follow, GitSource, GitSourceConfig};
use fleetlet_store::OciStore;
use fleetlet_verify::policy::TrustPolicy;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub const IMPORTS_LOG: &str = "imports.jsonl";
pub const BUNDLES_DIR: &str = "bundles";
/// Entries a release bundle may hold; the manifest listing more is refused before extraction.
const MAX_ENTRIES: usize = 1_000_000;

/// What an import checks against.
pub struct Site<'a> {
    pub name: &'a str,
    pub state_dir: &'a Path,
    pub policy: &'a TrustPolicy,
    pub store: &'a OciStore,
    pub max_unpacked: u64,
    /// Whether the site applies k3s workloads (their images are checked too).
    pub k3s: bool,
    /// The branch this site accepts releases on (`main`).
    pub branch: &'a str,
    /// After this many interrupted imports of the same files, refuse them (the inbox: see
    /// [`super::attempt`]); None for a hand-run import, where a person is there to decide.
    pub interrupt_limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    pub commit: String,
    pub reference: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Fingerprint of the key that signed the bundle.
    pub bundle_signer: String,
    pub commit_signers: Vec<Signer>,
    pub artifacts: BTreeMap<String, Vec<Signer>>,
    /// Workloads the engine will hold (non-atomic policy): id → reason.
    pub held: BTreeMap<String, String>,
    pub blobs_added: usize,
    pub bytes_added: u64,
}

impl Imported {
    pub fn summary_line(&self) -> String {
        format!(
            "commit {} \"{}\" ({} artifact(s), {} new blob(s), {}){}",
            &self.commit[..12.min(self.commit.len())],
            self.summary,
            self.artifacts.len(),
            self.blobs_added,
            human_bytes(self.bytes_added),
            if self.held.is_empty() {
                String::new()
            } else {
                format!("; {} workload(s) held", self.held.len())
            }
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle is refused: the reason is for the technician; nothing changed.
    #[error("{0}")]
    Rejected(String),
    /// The bundle ends early: a split bundle whose last part may still be on its way.
    #[error("{0}")]
    Truncated(String),
    /// The site itself failed (disk, permissions): retrying the same bundle may work.
    #[error("{0}")]
    Local(String),
    /// A delta whose base commit the site does not have (yet: in the inbox, its base may be
    /// the next bundle in the same batch).
    #[error("{0}")]
    MissingBase(String),
    /// Another import holds the site (a hand-run one beside the agent): try again later.
    #[error("another import is running on this site")]
    Busy,
}

fn rejected(e: impl std::fmt::Display) -> ImportError {
    ImportError::Rejected(e.to_string())
}

fn local(what: &str, e: impl std::fmt::Display) -> ImportError {
    ImportError::Local(format!("{what}: {e}"))
}

impl From<BundleError> for ImportError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Truncated { .. } => ImportError::Truncated(e.to_string()),
            // A full disk is the site's problem, not the bundle's (`BundleError::io` reports
            // ENOSPC as `DiskFull`, never as `Io`).
            BundleError::Io { .. } | BundleError::DiskFull { .. } => {
                ImportError::Local(e.to_string())
            }
            other => ImportError::Rejected(other.to_string()),
        }
    }
}

/// Errors while staging: the bundle's fault, unless the site's repository itself failed.
fn pack_err(e: PackError) -> ImportError {
    match e {
        PackError::Repo { .. } => ImportError::Local(e.to_string()),
        PackError::MissingBase { .. } => ImportError::MissingBase(e.to_string()),
        other => ImportError::Rejected(other.to_string()),
    }
}

/// Errors while publishing, after every check passed: always the site's (a full disk).
fn publish_err(what: &str) -> impl Fn(PackError) -> ImportError + '_ {
    move |e| ImportError::Local(format!("{what}: {e}"))
}

/// A split bundle is named `FILE.part-NNN`: only it may still be missing its last part.
pub fn is_split(parts: &[PathBuf]) -> bool {
    parts.iter().any(|p| fleetlet_bundle::is_part(p))
}

/// The commit the site runs, from the status the agent publishes (the state record itself is
/// locked by a running agent).
/// Fails closed: a status file that is there but unreadable stops the import.
fn applied_commit(state_dir: &Path) -> Result<Option<String>, ImportError> {
    let path = state_dir.join(crate::agent::STATUS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(local(&format!("reading {}", path.display()), e)),
    };
    serde_json::from_str::<fleetlet_engine::Status>(&text)
        .map(|s| s.applied_commit)
        .map_err(|e| {
            local(
                &format!("reading {} (the commit this site runs)", path.display()),
                e,
            )
        })
}

/// Holds `bundles/.lock` for the import: the agent's inbox and a hand-run import never
/// interleave.
fn lock(dir: &Path, wait: bool) -> Result<std::fs::File, ImportError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| local(&format!("opening {}", path.display()), e))?;
    if wait {
        file.lock()
            .map_err(|e| local(&format!("locking {}", path.display()), e))?;
    } else {
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(ImportError::Busy),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(local(&format!("locking {}", path.display()), e));
            }
        }
    }
    Ok(file)
}

/// Holds the import lock if no import is running: the agent's start-up repairs of the mirror
/// must not touch what a hand-run import is writing. None when one is.
/// (A site that never imported has nothing to hold: `Some(None)`.)
pub fn hold_if_idle(state_dir: &Path) -> Result<Option<Option<std::fs::File>>, ImportError> {
    let bundles = state_dir.join(BUNDLES_DIR);
    if !bundles.is_dir() {
        return Ok(Some(None));
    }
    match lock(&bundles, false) {
        Ok(file) => Ok(Some(Some(file))),
        Err(ImportError::Busy) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Imports the bundle made of `parts` into the site; see the module docs. With `wait` false
/// another import in progress returns [`ImportError::Busy`] at once (the agent's loop must
/// not stall behind a hand-run import).
pub fn import(
    parts: &[PathBuf],
    site: &Site<'_>,
    progress: Option<Arc<AtomicU64>>,
    wait: bool,
) -> Result<Imported, ImportError> {
    let bundles = site.state_dir.join(BUNDLES_DIR);
    std::fs::create_dir_all(&bundles)
        .map_err(|e| local(&format!("creating {}", bundles.display()), e))?;
    let _lock = lock(&bundles, wait)?;
    sweep_staging(&bundles);
    // Imports are the mirror's only writers on a site that takes bundles (the agent only reads
    // it), and this one holds the import lock: a lock file in it is a killed import's, and
    // would stop every later one from moving the branch.
    let mirror = site.state_dir.join("git");
    match fleetlet_git::clear_stale_locks(&mirror) {
        Ok(removed) => {
            for path in removed {
                tracing::warn!(file = %path.display(), "removed a lock file a killed import left in the Git mirror");
            }
        }
        Err(e) => {
            let result = Err(local(
                &format!("clearing lock files in {}", mirror.display()),
                e,
            ));
            record(&bundles, parts, &result);
            return result;
        }
    }
    let files = attempt::stamps(parts);
    let boot = attempt::boot_id();
    let mut counts = attempt::Counts::load(&bundles);
    consume_leftover(&bundles, &mut counts, &boot);
    let interrupted = counts.get(&files);
    if let Some(limit) = site.interrupt_limit
        && interrupted >= limit
    {
        let result = Err(ImportError::Rejected(format!(
            "importing this bundle was interrupted {interrupted} times (the agent was killed \
             while importing it), so it is set aside to keep the site running; to try again, \
             copy it into the inbox anew or run `fleetlet bundle import` by hand"
        )));
        record(&bundles, parts, &result);
        if counts.clear(&files) {
            save_counts(&bundles, &counts);
        }
        end_attempt(&bundles);
        return result;
    }
    let marker = attempt::Attempt {
        files,
        started: crate::agent::now(),
        log_len: log_len(&bundles),
        boot,
    };
    // Without the marker a kill would go unnoticed: the site's own fault, like a full disk.
    let result = match attempt::begin(&bundles, &marker) {
        Err(e) => Err(local(
            &format!("writing {}", bundles.join(attempt::ATTEMPT_FILE).display()),
            e,
        )),
        Ok(()) => match import_locked(parts, site, &bundles, progress) {
            // Only a split bundle may still be missing its last part; a single file that ends
            // early is simply broken.
            Err(ImportError::Truncated(reason)) if !is_split(parts) => {
                Err(ImportError::Rejected(reason))
            }
            other => other,
        },
    };
    // Recorded before the marker goes: a crash in between shows as finished (see `finished`).
    record(&bundles, parts, &result);
    if counts.clear(&marker.files) {
        save_counts(&bundles, &counts);
    }
    end_attempt(&bundles);
    result
}

/// Records (and counts) the import a leftover marker names, if it never finished. The caller
/// holds the import lock, and replaces or removes the marker next.
fn consume_leftover(bundles: &Path, counts: &mut attempt::Counts, boot: &Option<String>) {
    if let Some(left) = attempt::left_over(bundles).filter(|a| !finished(bundles, a)) {
        // Counted (once per marker) before it is recorded: a kill in between must not lose
        // the count. A restart of the machine is not the bundle's doing.
        let cause = if attempt::stop_requested(bundles, &left) {
            Cause::Stopped
        } else if left.boot.is_none() || left.boot == *boot {
            Cause::Killed
        } else {
            Cause::Restarted
        };
        if cause == Cause::Killed && counts.add(&left) {
            save_counts(bundles, counts);
        }
        record_interrupted(bundles, &left, cause);
    }
}

/// At the agent's start, holding the import lock: an import killed while the agent was down
/// (or a hand-run one) shows in the records and the status now, not at the next import.
pub fn record_leftover(state_dir: &Path) {
    let bundles = state_dir.join(BUNDLES_DIR);
    let mut counts = attempt::Counts::load(&bundles);
    consume_leftover(&bundles, &mut counts, &attempt::boot_id());
    end_attempt(&bundles);
}

fn save_counts(bundles: &Path, counts: &attempt::Counts) {
    if let Err(e) = counts.save(bundles) {
        tracing::warn!(error = %e, "writing {}", bundles.join(attempt::COUNTS_FILE).display());
    }
}

fn end_attempt(bundles: &Path) {
    if let Err(e) = attempt::end(bundles) {
        tracing::warn!(error = %e, "removing {}", bundles.join(attempt::ATTEMPT_FILE).display());
    }
}

/// Whether the import a marker names did finish: it recorded its outcome (the process died
/// between recording and removing the marker).
fn finished(bundles: &Path, left: &attempt::Attempt) -> bool {
    log_len(bundles) > left.log_len
}

fn log_len(bundles: &Path) -> u64 {
    std::fs::metadata(bundles.join(IMPORTS_LOG)).map_or(0, |m| m.len())
}

/// Outcome of an import that never finished.
pub const INTERRUPTED: &str = "interrupted";

/// Why an import never finished, as far as the site can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Counted against the bundle: nothing else explains it.
    Killed,
    /// The agent had been asked to stop (and was killed when the import outlasted that).
    Stopped,
    /// The machine restarted (a power cut).
    Restarted,
}

fn record_interrupted(bundles: &Path, left: &attempt::Attempt, cause: Cause) {
    let started = if left.started > 0 {
        format!("started {}", crate::agent::format_time(left.started))
    } else {
        "its marker is unreadable".to_string()
    };
    let cause = match cause {
        Cause::Killed => "the agent or the command was killed",
        Cause::Stopped => "the agent was stopped during it",
        Cause::Restarted => "the machine restarted",
    };
    tracing::warn!(files = ?left.names(), "an earlier import never finished ({started})");
    append_record(
        bundles,
        &ImportRecord {
            at: crate::agent::now(),
            files: left.names(),
            outcome: INTERRUPTED.into(),
            commit: None,
            reason: Some(format!(
                "the import {started} never finished ({cause}); the site kept what it had, \
                 or took the whole release if it stopped after publishing, never a part"
            )),
            bundle_signer: None,
        },
    );
}

/// Staging directories (and half-written attempt markers) left by an import that was killed
/// (the lock is held, so none is in use).
fn sweep_staging(bundles: &Path) {
    let Ok(entries) = std::fs::read_dir(bundles) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".fleetlet-bundle-") {
            let _ = std::fs::remove_dir_all(e.path());
        } else if [".attempt.", ".interrupted.", ".stop-requested."]
            .iter()
            .any(|p| name.starts_with(p))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Largest `oci/index.json` accepted (it is parsed whole, at every lookup).
const MAX_INDEX_BYTES: u64 = 16 << 20;

fn import_locked(
    parts: &[PathBuf],
    site: &Site<'_>,
    bundles: &Path,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Imported, ImportError> {
    let keys = site.policy.bundle_keys();
    if keys.is_empty() {
        return Err(rejected(
            "this site trusts no key for bundles: add the operator's public key to trust.keys \
             and name it in trust.bundles.signers",
        ));
    }
    let limits = Limits {
        max_unpacked: site.max_unpacked,
        max_entries: MAX_ENTRIES,
    };
    // A bundle for other sites is refused from its head alone, before gigabytes are unpacked.
    // (Unverified here, so it can only refuse; what is accepted is checked again below.)
    if let Ok((head, _)) = BundleReader::inspect(parts)
        && let Ok(Meta::Release(m)) = Meta::parse(&head.meta)
        && !m.sites.iter().any(|s| s == site.name)
    {
        return Err(rejected(format!(
            "the bundle is for site(s) {}, not for {}",
            m.sites.join(", "),
            site.name
        )));
    }
    let staged = BundleReader::open_with_progress(parts, limits, &keys, bundles, progress)?;
    let meta = match Meta::parse(&staged.manifest.meta).map_err(rejected)? {
        Meta::Release(m) => m,
        Meta::Status(s) => {
            return Err(rejected(format!(
                "this is a status file from site {}, not a release bundle",
                s.site
            )));
        }
    };
    if !meta.sites.iter().any(|s| s == site.name) {
        return Err(rejected(format!(
            "the bundle is for site(s) {}, not for {}",
            meta.sites.join(", "),
            site.name
        )));
    }
    // Only the expected entries, and blob names that match their signed digests.
    for entry in &staged.manifest.entries {
        let ok = match entry.path.as_str() {
            PACK_ENTRY | "oci/oci-layout" | "oci/index.json" => true,
            p if p.starts_with(BLOB_PREFIX) => blob_digest(p) == Some(entry.sha256),
            _ => false,
        };
        if !ok {
            return Err(rejected(format!(
                "entry {} does not belong in a release bundle (or is not named by its digest)",
                entry.path
            )));
        }
    }
    if staged.manifest.entry(PACK_ENTRY).is_none() {
        return Err(rejected(format!("the bundle has no {PACK_ENTRY}")));
    }
    if let Some(index) = staged.manifest.entry("oci/index.json")
        && index.size > MAX_INDEX_BYTES
    {
        return Err(rejected(format!(
            "oci/index.json is {} bytes (at most {MAX_INDEX_BYTES})",
            index.size
        )));
    }
    // What this site follows, not what the bundle's maker chose: the policy's per-ref rules
    // judge the release by this name.
    let reference = format!("refs/heads/{}", site.branch);
    if meta.reference != reference {
        return Err(rejected(format!(
            "the bundle publishes its release on {}; this site takes releases on {reference} \
             (source.bundles.branch)",
            meta.reference
        )));
    }
    let host = Platform::host();
    if Platform::parse(&meta.platform).is_none_or(|p| p.to_string() != host.to_string()) {
        return Err(rejected(format!(
            "the bundle carries images for {}; this site is {host}",
            meta.platform
        )));
    }

    // Git objects into a staging repository borrowing the mirror.
    let mirror = site.state_dir.join("git");
    let pack_path = staged.dir().join(PACK_ENTRY);
    let open_pack = || {
        std::fs::File::open(&pack_path)
            .map(std::io::BufReader::new)
            .map_err(|e| local("reading the staged pack", e))
    };
    let git_stage = staged.dir().join(".git-stage");
    pack::stage_import(&mirror, &git_stage, open_pack()?, meta.since.as_deref())
        .map_err(pack_err)?;
    let tags: Vec<(String, String)> = meta
        .tags
        .iter()
        .map(|t| (t.name.clone(), t.object.clone()))
        .collect();
    pack::publish_import(&git_stage, &reference, &meta.commit, &tags, true).map_err(
        |e| match e {
            PackError::Repo { .. } => ImportError::Local(e.to_string()),
            other => rejected(other),
        },
    )?;
    let mut source = GitSource::open(GitSourceConfig::new(
        "sync bundle",
        Follow::Imported,
        git_stage.clone(),
    ))
    .map_err(|e| local("opening the staged Git objects", e))?;
    let revision = source
        .poll(None)
        .map_err(|e| rejected(format!("reading the bundle's commit: {e}")))?
        .revision()
        .clone();

    // The release must move the site forward from what it runs and from what was imported.
    let applied = applied_commit(site.state_dir)?;
    let imported_before = pack::imported_commit(&mirror);
    if let Some(before) = &imported_before
        && applied.as_deref() != Some(before.as_str())
        && *before != meta.commit
        && !source
            .descends_from(&meta.commit, before)
            .map_err(|e| local("reading the mirror", e))?
    {
        // The release imported before never ran here; moving past it sideways needs the same
        // signed instruction as moving back from what runs.
        let tags = source
            .tags_at(&meta.commit)
            .map_err(|e| local("reading the staged tags", e))?;
        if let Err(reason) = site.policy.verify_rollback(before, &meta.commit, &tags) {
            return Err(rejected(format!(
                "the bundle carries {}, which does not descend from {}, the release imported \
                 before (an older bundle replayed?); refused: {reason}",
                meta.commit, before
            )));
        }
    }
    // Moving back from what runs is the preflight's to allow (a signed instruction) or refuse.

    // Artifacts: resolved from the staged layout, blobs found there or in the site's store.
    let staged_store = Arc::new(
        OciStore::open(&staged.dir().join(OCI_DIR))
            .map_err(|e| rejected(format!("the bundle's OCI layout: {e}")))?,
    );
    let registry = fleetlet_store::StoreRegistry::new(staged_store.clone());
    let layered = Layered {
        upper: staged_store.as_ref(),
        lower: site.store,
    };
    let checked = check_release(
        &source,
        &revision,
        &Preflight {
            site: site.name,
            applied: applied.as_deref(),
            verifier: Some(site.policy),
            registry: &registry,
            store: &layered,
            platform: host,
            container_images: site.k3s,
        },
    )
    .map_err(|e| {
        let mut text = e.message.clone();
        if e.details.len() > 1 {
            for d in &e.details {
                text.push_str("\n  - ");
                text.push_str(d);
            }
        }
        if e.stage == fleetlet_engine::Stage::Store && meta.since.is_some() {
            text.push_str(
                "\n(a delta leaves out what the site had at its base commit; make the bundle \
                 with --site-inventory from this site's `fleetlet bundle export-status`)",
            );
        }
        rejected(text)
    })?;
    drop(source);

    // What the release needs, and nothing else, is published: the tags of its artifacts
    // (each naming the digest it points at) and their signature material, and the blobs
    // those reach. A signed bundle may still not retag anything else on the site.
    let named = release_refs(&staged_store, &checked.artifacts)?;
    let roots: std::collections::BTreeSet<fleetlet_core::Digest> =
        named.iter().map(|(_, d)| d.digest).collect();
    let reachable = layered_reachable(&staged_store, site.store, &roots);

    // Publish: blobs (unnamed), tags (one index write), objects, then the branch. Every check
    // is behind us; a failure from here on is the site's own (a full disk).
    let mut blobs_added = 0;
    let mut bytes_added = 0;
    for entry in &staged.manifest.entries {
        let Some(digest) = blob_digest(&entry.path) else {
            continue;
        };
        if site.store.contains(&digest) || !reachable.contains(&digest) {
            continue;
        }
        site.store
            .adopt(&digest, &staged.dir().join(&entry.path))
            .map_err(|e| local("moving blobs into the artifact store", e))?;
        blobs_added += 1;
        bytes_added += entry.size;
    }
    site.store
        .set_refs(&named)
        .map_err(|e| local("tagging the imported artifacts", e))?;
    pack::import_pack(&mirror, open_pack()?, meta.since.as_deref())
        .map_err(publish_err("adding the Git objects to the mirror"))?;
    // The descent checks above decided; the mirror's own check would only repeat them.
    pack::publish_import(&mirror, &reference, &meta.commit, &tags, true)
        .map_err(publish_err("publishing the release in the mirror"))?;
    Ok(Imported {
        commit: revision.commit.clone(),
        reference,
        summary: revision.summary.clone(),
        since: meta.since.clone(),
        bundle_signer: staged.signer.clone(),
        commit_signers: checked.commit_signers,
        artifacts: checked.artifacts,
        held: checked.held,
        blobs_added,
        bytes_added,
    })
}

/// The staged index entries a release needs: for each artifact it pinned, the entries naming
/// that digest in its repository, and the signature material tagged for it there (cosign's
/// `sha256-<hex>.sig`, the referrers tag `sha256-<hex>`). Each entry's name must carry the
/// digest it points at (`registry/repo:tag@digest`), as the pull step names them.
fn release_refs(
    staged: &OciStore,
    artifacts: &BTreeMap<String, Vec<Signer>>,
) -> Result<Vec<(String, fleetlet_engine::registry::Descriptor)>, ImportError> {
    use fleetlet_core::reference::{ArtifactRef, RegistryRef};
    let pinned: Vec<RegistryRef> = artifacts
        .keys()
        .filter_map(|p| match p.parse::<ArtifactRef>() {
            Ok(ArtifactRef::Registry(r)) if r.digest.is_some() => Some(r),
            _ => None,
        })
        .collect();
    let mut refs = staged
        .refs()
        .map_err(|e| rejected(format!("the bundle's OCI layout: {e}")))?;
    refs.sort_by_key(|r| r.sequence());
    let mut out = Vec::new();
    for entry in refs {
        let Some(name) = entry.name() else { continue };
        let Ok(ArtifactRef::Registry(r)) = name.parse::<ArtifactRef>() else {
            continue;
        };
        if r.digest != Some(entry.digest) {
            return Err(rejected(format!(
                "oci/index.json names {name} for {}, not for the digest in its name",
                entry.digest
            )));
        }
        let wanted = pinned.iter().any(|p| {
            let d = p.digest.expect("pinned");
            p.registry == r.registry
                && p.repository == r.repository
                && (entry.digest == d
                    || r.tag.as_deref() == Some(&fleetlet_engine::trust::cosign_signature_tag(&d))
                    || r.tag.as_deref() == Some(&fleetlet_engine::trust::referrers_tag(&d)))
        });
        if wanted {
            out.push((
                name.to_string(),
                fleetlet_engine::registry::Descriptor {
                    media_type: entry.media_type.clone(),
                    digest: entry.digest,
                    size: entry.size,
                },
            ));
        }
    }
    Ok(out)
}

/// Every digest `roots` reach, reading manifests from the staged layout or, for what a delta
/// left out, from the site's store.
fn layered_reachable(
    staged: &OciStore,
    site: &OciStore,
    roots: &std::collections::BTreeSet<fleetlet_core::Digest>,
) -> std::collections::BTreeSet<fleetlet_core::Digest> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<fleetlet_core::Digest> = roots.iter().copied().collect();
    while let Some(d) = todo.pop() {
        if !seen.insert(d) {
            continue;
        }
        // Manifests are small; a layer is never read whole here.
        let small = |store: &OciStore| {
            store
                .size_of(&d)
                .filter(|n| *n <= fleetlet_engine::registry::MAX_MANIFEST_SIZE)
                .and_then(|_| store.read(&d).ok().flatten())
        };
        if let Some(bytes) = small(staged).or_else(|| small(site)) {
            todo.extend(fleetlet_store::children(&bytes));
        }
    }
    seen
}

/// One line per import attempt in `bundles/imports.jsonl`: what the status file carries back.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "BundleImportRecord")]
pub struct ImportRecord {
    /// Unix seconds.
    pub at: i64,
    /// The bundle's files as they were named in the inbox or on the command line.
    pub files: Vec<String>,
    /// `imported`, `rejected`, `incomplete` (a split bundle still missing parts), `failed`
    /// (the site's own fault, such as a full disk) or `interrupted` (an import that never
    /// finished: the process was killed; recorded by the next import).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_signer: Option<String>,
}

fn record(bundles: &Path, parts: &[PathBuf], result: &Result<Imported, ImportError>) {
    let files = parts
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let rec = match result {
        Ok(i) => ImportRecord {
            at: crate::agent::now(),
            files,
            outcome: "imported".into(),
            commit: Some(i.commit.clone()),
            reason: None,
            bundle_signer: Some(i.bundle_signer.clone()),
        },
        Err(e) => ImportRecord {
            at: crate::agent::now(),
            files,
            outcome: match e {
                ImportError::Rejected(_) | ImportError::MissingBase(_) => "rejected",
                ImportError::Truncated(_) => "incomplete",
                ImportError::Local(_) => "failed",
                ImportError::Busy => "busy",
            }
            .into(),
            commit: None,
            reason: Some(e.to_string()),
            bundle_signer: None,
        },
    };
    append_record(bundles, &rec);
}

fn append_record(bundles: &Path, rec: &ImportRecord) {
    let path = bundles.join(IMPORTS_LOG);
    let mut line = serde_json::to_vec(rec).unwrap_or_default();
    line.push(b'\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .and_then(|mut f| {
            // A line a kill cut short would swallow this one: end it first.
            let len = f.metadata()?.len();
            if len > 0 {
                use std::io::{Read, Seek, SeekFrom};
                let mut last = [0u8; 1];
                f.seek(SeekFrom::Start(len - 1))?;
                f.read_exact(&mut last)?;
                if last[0] != b'\n' {
                    line.insert(0, b'\n');
                }
            }
            // One write: a kill leaves the line whole or cut, never split from its newline.
            f.write_all(&line)?;
            f.sync_data()
        });
    if let Err(e) = written {
        tracing::warn!(error = %e, "recording the import in {}", path.display());
    }
}

/// Every import record at or after `since`.
pub fn read_records(state_dir: &Path, since: Option<i64>) -> Vec<ImportRecord> {
    let path = state_dir.join(BUNDLES_DIR).join(IMPORTS_LOG);
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<ImportRecord>(l).ok())
        .filter(|r| since.is_none_or(|s| r.at >= s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        policy: TrustPolicy,
        store: OciStore,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            // Nothing here gets as far as the policy: any will do.
            let config =
                serde_yaml::from_str("{artifacts: {require: none}, commits: {require: none}}")
                    .unwrap();
            let policy = TrustPolicy::load(&config, dir.path()).unwrap();
            let store = OciStore::open(&dir.path().join("oci")).unwrap();
            Fixture { dir, policy, store }
        }

        fn site(&self, interrupt_limit: Option<u32>) -> Site<'_> {
            Site {
                name: "store-1",
                state_dir: self.dir.path(),
                policy: &self.policy,
                store: &self.store,
                max_unpacked: 1 << 20,
                k3s: false,
                branch: "main",
                interrupt_limit,
            }
        }

        fn bundles(&self) -> PathBuf {
            self.dir.path().join(BUNDLES_DIR)
        }

        fn bundle(&self, name: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, b"not a bundle").unwrap();
            path
        }

        /// The marker an import of `parts` leaves when it is killed (on this boot, or on
        /// another when `boot` says which).
        fn killed_on(&self, parts: &[PathBuf], boot: Option<String>) {
            std::fs::create_dir_all(self.bundles()).unwrap();
            let marker = attempt::Attempt {
                files: attempt::stamps(parts),
                started: crate::agent::now(),
                log_len: log_len(&self.bundles()),
                boot,
            };
            attempt::begin(&self.bundles(), &marker).unwrap();
        }

        fn killed(&self, parts: &[PathBuf]) {
            self.killed_on(parts, attempt::boot_id());
        }

        fn outcomes(&self) -> Vec<(String, Vec<String>)> {
            read_records(self.dir.path(), None)
                .into_iter()
                .map(|r| (r.outcome, r.files))
                .collect()
        }
    }

    fn owned(v: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        v.iter()
            .map(|(o, f)| (o.to_string(), f.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_killed_import_is_recorded_by_the_next_and_the_inbox_gives_up_at_the_limit() {
        let f = Fixture::new();
        let bad = f.bundle("r.fleetbundle");
        let parts = std::slice::from_ref(&bad);
        let other = f.bundle("s.fleetbundle");
        let others = std::slice::from_ref(&other);

        // Killed while importing r; the agent comes back and first imports another bundle
        // (one that sorts earlier): that import records the interruption, and r's count stays.
        f.killed(parts);
        import(others, &f.site(Some(2)), None, true).unwrap_err();
        assert_eq!(
            f.outcomes(),
            owned(&[
                ("interrupted", &["r.fleetbundle"]),
                ("rejected", &["s.fleetbundle"])
            ])
        );
        assert_eq!(attempt::left_over(&f.bundles()), None, "marker removed");

        // Killed on r a second time: the inbox sets it aside without opening it.
        f.killed(parts);
        let err = import(parts, &f.site(Some(2)), None, true).unwrap_err();
        let ImportError::Rejected(reason) = &err else {
            panic!("{err:?}")
        };
        assert!(reason.contains("interrupted 2 times"), "{reason}");
        assert_eq!(f.outcomes().len(), 4);
        assert_eq!(f.outcomes()[2].0, "interrupted");
        assert_eq!(attempt::left_over(&f.bundles()), None);
        // Set aside, it is forgotten: the same files offered again are tried.
        let err = import(parts, &f.site(Some(2)), None, true).unwrap_err();
        assert!(!err.to_string().contains("interrupted"), "{err}");

        // A person running it by hand is not stopped by the count.
        f.killed(parts);
        import(others, &f.site(Some(2)), None, true).unwrap_err();
        f.killed(parts);
        let err = import(parts, &f.site(None), None, true).unwrap_err();
        assert!(!err.to_string().contains("interrupted"), "{err}");

        // A fresh copy of the file starts the count again.
        f.killed(parts);
        import(others, &f.site(Some(2)), None, true).unwrap_err();
        f.killed(parts);
        let copy = f.bundle("copy");
        std::fs::rename(&copy, &bad).unwrap();
        let err = import(parts, &f.site(Some(2)), None, true).unwrap_err();
        assert!(!err.to_string().contains("interrupted"), "{err}");
    }

    #[test]
    fn the_agent_records_a_killed_import_at_start_once() {
        let f = Fixture::new();
        let bad = f.bundle("r.fleetbundle");
        let parts = std::slice::from_ref(&bad);
        f.killed(parts);
        record_leftover(f.dir.path());
        assert_eq!(f.outcomes(), owned(&[("interrupted", &["r.fleetbundle"])]));
        assert_eq!(attempt::left_over(&f.bundles()), None);
        record_leftover(f.dir.path());
        // Still counted: killed once more, the inbox sets it aside.
        f.killed(parts);
        let err = import(parts, &f.site(Some(2)), None, true).unwrap_err();
        assert!(err.to_string().contains("interrupted 2 times"), "{err}");
        assert_eq!(
            f.outcomes(),
            owned(&[
                ("interrupted", &["r.fleetbundle"]),
                ("interrupted", &["r.fleetbundle"]),
                ("rejected", &["r.fleetbundle"])
            ])
        );
    }

    #[test]
    fn an_import_the_agent_was_asked_to_stop_during_is_not_counted() {
        let f = Fixture::new();
        let bad = f.bundle("r.fleetbundle");
        let parts = std::slice::from_ref(&bad);
        assert!(
            !attempt::note_stop(&f.bundles()).unwrap(),
            "no import under way"
        );
        for _ in 0..3 {
            f.killed(parts);
            assert!(attempt::note_stop(&f.bundles()).unwrap());
            let err = import(parts, &f.site(Some(1)), None, true).unwrap_err();
            assert!(!err.to_string().contains("interrupted"), "{err}");
            assert!(!f.bundles().join(attempt::STOP_FILE).exists());
        }
        let log = std::fs::read_to_string(f.bundles().join(IMPORTS_LOG)).unwrap();
        assert_eq!(
            log.matches("the agent was stopped during it").count(),
            3,
            "{log}"
        );
        // A stop noted for an earlier import does not excuse a later kill.
        f.killed(parts);
        assert!(attempt::note_stop(&f.bundles()).unwrap());
        std::fs::remove_file(f.bundles().join(attempt::ATTEMPT_FILE)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        f.killed(parts);
        let err = import(parts, &f.site(Some(1)), None, true).unwrap_err();
        assert!(err.to_string().contains("interrupted 1 times"), "{err}");
    }

    #[test]
    fn a_machine_restart_is_recorded_but_not_counted_against_the_bundle() {
        let f = Fixture::new();
        let bad = f.bundle("r.fleetbundle");
        let parts = std::slice::from_ref(&bad);
        for _ in 0..3 {
            f.killed_on(parts, Some("another-boot".into()));
            let err = import(parts, &f.site(Some(1)), None, true).unwrap_err();
            assert!(!err.to_string().contains("interrupted"), "{err}");
        }
        let log = std::fs::read_to_string(f.bundles().join(IMPORTS_LOG)).unwrap();
        assert_eq!(log.matches("the machine restarted").count(), 3, "{log}");
    }

    #[test]
    fn an_import_that_recorded_its_outcome_before_dying_is_not_counted_as_interrupted() {
        let f = Fixture::new();
        let bad = f.bundle("r.fleetbundle");
        let parts = std::slice::from_ref(&bad);
        f.killed(parts);
        // Its outcome reached the log; only the marker's removal was lost.
        record(&f.bundles(), parts, &Err(ImportError::Rejected("x".into())));
        import(parts, &f.site(Some(1)), None, true).unwrap_err();
        assert_eq!(
            f.outcomes(),
            owned(&[
                ("rejected", &["r.fleetbundle"]),
                ("rejected", &["r.fleetbundle"])
            ])
        );
    }

    #[test]
    fn a_record_cut_short_by_a_kill_does_not_swallow_the_next() {
        let f = Fixture::new();
        let bad = f.bundle("r.fleetbundle");
        std::fs::create_dir_all(f.bundles()).unwrap();
        std::fs::write(
            f.bundles().join(IMPORTS_LOG),
            b"{\"at\":1,\"files\":[\"a\"],\"outcome\":\"imported\"}\n{\"at\":2,\"fi",
        )
        .unwrap();
        import(std::slice::from_ref(&bad), &f.site(None), None, true).unwrap_err();
        assert_eq!(
            f.outcomes(),
            owned(&[("imported", &["a"]), ("rejected", &["r.fleetbundle"])])
        );
    }

    #[test]
    fn a_half_written_marker_is_swept() {
        let f = Fixture::new();
        let bad = f.bundle("r.fleetbundle");
        std::fs::create_dir_all(f.bundles()).unwrap();
        std::fs::write(f.bundles().join(".attempt.XyZ123"), b"{\"fi").unwrap();
        import(std::slice::from_ref(&bad), &f.site(Some(1)), None, true).unwrap_err();
        let mut names: Vec<_> = std::fs::read_dir(f.bundles())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".lock", IMPORTS_LOG]);
        assert_eq!(f.outcomes(), owned(&[("rejected", &["r.fleetbundle"])]));
    }
}

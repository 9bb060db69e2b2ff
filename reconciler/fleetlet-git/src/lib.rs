//! fleetlet's Git source: the "observe/pull" step of the reconcile cycle. Each cycle starts by
//! asking the source whether the followed ref moved ([`Source::poll`]) and, when it did, for the
//! files of the new commit ([`Source::read_tree`]); the engine then loads, renders and plans.
//!
//! The source keeps a bare mirror under the agent's state dir. A poll first lists the remote's
//! refs (like `git ls-remote`) and fetches nothing when the followed ref still points at the
//! commit the agent last applied; otherwise it fetches just that ref, with the annotated tags
//! that point at it (release tags, rollback instructions). The engine asks whether a new commit
//! descends from the applied one, and for the commit's and tags' signatures; this source only
//! reports them, it does not judge them. Trees are read straight from the mirror's object database with size limits
//! and symlink checks (see [`tree`](crate::tree) for the symlink rule).

mod follow;
pub mod pack;
mod transport;
mod tree;

pub use follow::Follow;
pub use transport::local_path;

use fleetlet_core::RepoTree;
use fleetlet_engine::ports::{Poll, Revision, Source, SourceError};
use fleetlet_engine::trust::{SignedObject, TagEvidence};
use follow::{Head, TagPattern};
use git2::{AutotagOption, Direction, FetchOptions, Oid, Repository};
use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{debug, info};
use transport::{CallbackOutcome, CallbackSettings, KnownHosts, SshTarget};

/// Default per-file limit: fleet repos hold manifests and components, not media.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;
/// Default limit for all files of one commit together (they are held in memory).
pub const DEFAULT_MAX_TREE_SIZE: u64 = 512 * 1024 * 1024;
/// Default connect and read timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the mirror keeps what it fetched. `fetched` is the last ref fetched (even if refused),
/// `accepted` the last commit handed to the engine: keeping both referenced keeps their objects
/// in the mirror should anything ever prune it.
const FETCHED_REF: &str = "refs/fleetlet/fetched";
const ACCEPTED_REF: &str = "refs/fleetlet/accepted";
const CANDIDATES_REF_PREFIX: &str = "refs/fleetlet/candidates/";

/// How to reach and follow the fleet repo.
#[derive(Debug, Clone)]
pub struct GitSourceConfig {
    /// A local path, `file://`, `git://`, `http://`, `https://`, `ssh://` or `user@host:path`.
    pub url: String,
    /// The branch or tag pattern to follow.
    pub follow: Follow,
    /// The bare mirror, created if missing (under the agent's state dir).
    pub mirror_dir: PathBuf,
    /// Extra certificate authority (PEM) trusted for https, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Private key for ssh remotes (OpenSSH format, unencrypted).
    pub ssh_key: Option<PathBuf>,
    /// Pinned host keys; required for ssh remotes. Unknown hosts are refused.
    pub known_hosts: Option<PathBuf>,
    /// Largest single file accepted (default [`DEFAULT_MAX_FILE_SIZE`]).
    pub max_file_size: u64,
    /// Largest total of all files of a commit (default [`DEFAULT_MAX_TREE_SIZE`]).
    pub max_tree_size: u64,
    /// Connect and read timeout for network remotes (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl GitSourceConfig {
    /// A configuration with the defaults: no CA, no ssh key, force-pushes refused, 64 MiB per
    /// file, 512 MiB per tree, 30 s timeout.
    pub fn new(url: impl Into<String>, follow: Follow, mirror_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            follow,
            mirror_dir: mirror_dir.into(),
            ca_file: None,
            ssh_key: None,
            known_hosts: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_tree_size: DEFAULT_MAX_TREE_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A configuration that cannot work; reported by [`GitSource::open`] as
/// [`SourceError::Refused`] because a human must fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("ssh remote {url} needs known_hosts: host keys are never trusted on first use")]
    MissingKnownHosts { url: String },
    #[error("known_hosts {path}: {source}")]
    KnownHosts {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ca_file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("tag pattern {pattern:?}: {source}")]
    TagPattern {
        pattern: String,
        source: globset::Error,
    },
    #[error("branch name is empty")]
    EmptyBranch,
}

impl From<ConfigError> for SourceError {
    fn from(e: ConfigError) -> Self {
        SourceError::Refused(e.to_string())
    }
}

/// The Git implementation of the engine's [`Source`] port.
pub struct GitSource {
    config: GitSourceConfig,
    repo: Repository,
    ssh: Option<SshTarget>,
    tag_pattern: Option<TagPattern>,
    /// A Cell so the fetch closure can count while the remote borrows the repository.
    fetches: Cell<u64>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("config", &self.config)
            .field("fetches", &self.fetches)
            .finish()
    }
}

/// Removes the `*.lock` files a killed writer left in the bare mirror at `dir` (refs, packed
/// refs, HEAD, config); the paths removed. Git and libgit2 refuse to update a ref whose lock file
/// exists, so one left by a kill -9 mid-fetch would stop the site following its repo for good.
///
/// Only for a caller that knows no other process writes the mirror now (the agent at start,
/// holding the state dir's lock and the import lock): a live writer's lock would be taken away.
pub fn clear_stale_locks(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &std::path::Path, removed: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&path, removed)?;
            } else if kind.is_file() && entry.file_name().to_string_lossy().ends_with(".lock") {
                std::fs::remove_file(&path)?;
                removed.push(path);
            }
        }
        Ok(())
    }
    let mut removed = Vec::new();
    for name in [
        "HEAD.lock",
        "config.lock",
        "packed-refs.lock",
        "index.lock",
        "FETCH_HEAD.lock",
    ] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    walk(&dir.join("refs"), &mut removed)?;
    Ok(removed)
}

impl GitSource {
    /// Checks the configuration and opens (or creates) the bare mirror. Touches no network.
    pub fn open(config: GitSourceConfig) -> Result<Self, SourceError> {
        let ssh = transport::ssh_target(&config.url);
        if ssh.is_some() {
            let Some(path) = &config.known_hosts else {
                return Err(ConfigError::MissingKnownHosts {
                    url: config.url.clone(),
                }
                .into());
            };
            KnownHosts::load(path).map_err(|source| ConfigError::KnownHosts {
                path: path.clone(),
                source,
            })?;
        }
        let tag_pattern = match &config.follow {
            Follow::TagPattern(p) => {
                Some(
                    TagPattern::new(p).map_err(|source| ConfigError::TagPattern {
                        pattern: p.clone(),
                        source,
                    })?,
                )
            }
            Follow::Branch(b) if b.is_empty() => return Err(ConfigError::EmptyBranch.into()),
            Follow::Branch(_) | Follow::Imported => None,
        };
        if let Some(ca) = &config.ca_file {
            if !ca.is_file() {
                return Err(ConfigError::CaFile {
                    path: ca.clone(),
                    message: "not a readable file".into(),
                }
                .into());
            }
            transport::add_ca_file(ca).map_err(|e| ConfigError::CaFile {
                path: ca.clone(),
                message: e.message().to_string(),
            })?;
        }
        let repo = open_mirror(&config.mirror_dir)?;
        Ok(Self {
            config,
            repo,
            ssh,
            tag_pattern,
            fetches: Cell::new(0),
        })
    }

    /// How many fetches (object transfers) this source has run; a no-op poll adds none.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.get()
    }

    pub fn config(&self) -> &GitSourceConfig {
        &self.config
    }

    fn unreachable(&self, e: &git2::Error) -> SourceError {
        SourceError::Unreachable {
            url: self.config.url.clone(),
            message: e.message().to_string(),
        }
    }

    /// A libgit2 network error, unless a callback refused the ssh host key: that needs a human.
    fn network_error(&self, e: &git2::Error, outcome: &CallbackOutcome) -> SourceError {
        match outcome.host_key_error.borrow().as_ref() {
            Some(host_key) => {
                SourceError::Refused(format!("fetching {}: {host_key}", self.config.url))
            }
            None => self.unreachable(e),
        }
    }

    fn revision(&self, commit: Oid, reference: &str) -> Result<Revision, SourceError> {
        let c = self.repo.find_commit(commit).map_err(local)?;
        Ok(Revision {
            commit: commit.to_string(),
            reference: reference.to_string(),
            summary: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
            time: c.time().seconds(),
        })
    }

    /// The commit `oid` (a commit or an annotated tag) stands for, if its objects are local.
    fn local_commit(&self, oid: Oid) -> Option<Oid> {
        let object = self.repo.find_object(oid, None).ok()?;
        object.peel_to_commit().ok().map(|c| c.id())
    }

    /// The release the last imported bundle carried: read from the mirror, no network.
    fn poll_imported(&self, last_seen: Option<Oid>) -> Result<Poll, SourceError> {
        let imported =
            self.repo
                .find_reference(pack::IMPORTED_REF)
                .map_err(|_| SourceError::Unreachable {
                    url: "sync bundles".into(),
                    message: "no bundle has been imported yet".into(),
                })?;
        let name = imported
            .symbolic_target()
            .ok()
            .flatten()
            .unwrap_or(pack::IMPORTED_REF)
            .to_string();
        let commit = imported
            .resolve()
            .and_then(|r| r.peel_to_commit())
            .map_err(local)?
            .id();
        let revision = self.revision(commit, &name)?;
        Ok(if last_seen == Some(commit) {
            Poll::Unchanged(revision)
        } else {
            Poll::Changed(revision)
        })
    }

    /// Refspecs for the annotated tags that point at `commit` and are not in the mirror yet.
    fn missing_tags(&self, heads: &[Head], commit: Oid) -> Vec<String> {
        heads
            .iter()
            .filter(|h| h.name.starts_with("refs/tags/") && h.peeled == Some(commit))
            .filter(|h| !self.has_object(h.oid))
            .map(|h| format!("+{0}:{0}", h.name))
            .collect()
    }

    fn has_object(&self, oid: Oid) -> bool {
        self.repo.odb().map(|odb| odb.exists(oid)).unwrap_or(false)
    }

    /// Among advertised tags matching the pattern, the newest (see [`follow`] for the rule).
    /// Ordering by commit time needs the commits, so that path fetches the missing ones first.
    fn pick_tag(
        &self,
        heads: &[Head],
        fetch: &mut dyn FnMut(&[String]) -> Result<(), SourceError>,
    ) -> Result<Head, SourceError> {
        let pattern = self
            .tag_pattern
            .as_ref()
            .expect("tag pattern compiled at open");
        let candidates = pattern.matches(heads);
        if candidates.is_empty() {
            return Err(SourceError::Unreachable {
                url: self.config.url.clone(),
                message: format!("no tag matches {:?}", self.pattern_text()),
            });
        }
        if let Some(newest) = pattern.newest_by_version(&candidates) {
            return Ok(newest.clone());
        }
        let missing: Vec<String> = candidates
            .iter()
            .filter(|h| !self.has_object(h.peeled.unwrap_or(h.oid)))
            .map(|h| {
                format!(
                    "+{}:{CANDIDATES_REF_PREFIX}{}",
                    h.name,
                    h.name.trim_start_matches("refs/tags/")
                )
            })
            .collect();
        if !missing.is_empty() {
            debug!(
                count = missing.len(),
                "fetching matching tags to order them by commit time"
            );
            fetch(&missing)?;
        }
        let mut dated = Vec::new();
        for head in candidates {
            let commit = self.local_commit(head.oid).ok_or_else(|| {
                SourceError::Refused(format!("tag {} does not point to a commit", head.name))
            })?;
            let time = self
                .repo
                .find_commit(commit)
                .map_err(local)?
                .time()
                .seconds();
            dated.push((time, head));
        }
        let (_, newest) = dated
            .into_iter()
            .max_by(|(ta, ha), (tb, hb)| ta.cmp(tb).then_with(|| ha.name.cmp(&hb.name)))
            .expect("not empty");
        Ok(newest.clone())
    }

    fn pattern_text(&self) -> &str {
        match &self.config.follow {
            Follow::TagPattern(p) | Follow::Branch(p) => p,
            Follow::Imported => pack::IMPORTED_REF,
        }
    }
}

impl Source for GitSource {
    fn poll(&mut self, last_seen: Option<&str>) -> Result<Poll, SourceError> {
        let last_seen = last_seen.map(parse_oid).transpose()?;
        if self.config.follow == Follow::Imported {
            return self.poll_imported(last_seen);
        }
        transport::apply_timeouts(self.config.timeout).map_err(local)?;
        let known_hosts = match (&self.ssh, &self.config.known_hosts) {
            // Re-read every poll so an operator's edit takes effect without a restart.
            (Some(_), Some(path)) => {
                Some(
                    KnownHosts::load(path).map_err(|source| ConfigError::KnownHosts {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            _ => None,
        };
        let settings = CallbackSettings {
            ssh: self.ssh.as_ref(),
            known_hosts: known_hosts.as_ref(),
            ssh_key: self.config.ssh_key.as_deref(),
        };
        let outcome = CallbackOutcome::default();

        // List the remote's refs without transferring objects.
        let mut remote = self
            .repo
            .remote_anonymous(&self.config.url)
            .map_err(|e| self.unreachable(&e))?;
        let mut connection = remote
            .connect_auth(
                Direction::Fetch,
                Some(transport::callbacks(&settings, &outcome)),
                None,
            )
            .map_err(|e| self.network_error(&e, &outcome))?;
        let heads = follow::collect_heads(
            connection
                .list()
                .map_err(|e| self.network_error(&e, &outcome))?
                .iter()
                .map(|h| (h.name(), h.oid())),
        );

        // One fetch at most per poll, on the connection already open.
        let url = self.config.url.clone();
        let counter = &self.fetches;
        let mut fetch = |refspecs: &[String]| -> Result<(), SourceError> {
            let mut options = FetchOptions::new();
            options.remote_callbacks(transport::callbacks(&settings, &outcome));
            // Only what we ask for: no tags riding along, no pruning of our own refs.
            options.download_tags(AutotagOption::None);
            counter.set(counter.get() + 1);
            connection
                .remote()
                .fetch(refspecs, Some(&mut options), None)
                .map_err(|e| match outcome.host_key_error.borrow().as_ref() {
                    Some(host_key) => SourceError::Refused(format!("fetching {url}: {host_key}")),
                    None => SourceError::Unreachable {
                        url: url.clone(),
                        message: e.message().to_string(),
                    },
                })
        };

        let target = match &self.config.follow {
            Follow::Branch(branch) => {
                let name = Follow::branch_ref(branch);
                heads
                    .iter()
                    .find(|h| h.name == name)
                    .cloned()
                    .ok_or_else(|| SourceError::Unreachable {
                        url: self.config.url.clone(),
                        message: format!("the remote has no {name}"),
                    })?
            }
            Follow::TagPattern(_) => self.pick_tag(&heads, &mut fetch)?,
            Follow::Imported => unreachable!("imported releases are polled from the mirror"),
        };

        // The commit the ref stands for, known without fetching when the server peeled the tag
        // or the objects are already local.
        let known = target
            .peeled
            .filter(|c| self.has_object(*c))
            .or_else(|| self.local_commit(target.oid));
        if let (Some(commit), Some(last)) = (known, last_seen)
            && commit == last
            && self.has_object(target.oid)
        {
            // Tags pushed onto the same commit later (a release tag, a rollback instruction)
            // still come in; when there are none, nothing is fetched.
            let tags = self.missing_tags(&heads, commit);
            if !tags.is_empty() {
                fetch(&tags)?;
            }
            debug!(commit = %commit, reference = %target.name, "followed ref unchanged");
            return Ok(Poll::Unchanged(self.revision(commit, &target.name)?));
        }

        let mut refspecs = self.missing_tags(&heads, target.peeled.unwrap_or(target.oid));
        if !self.has_object(target.oid) {
            refspecs.push(format!("+{}:{FETCHED_REF}", target.name));
        }
        if !refspecs.is_empty() {
            fetch(&refspecs)?;
        }
        drop(connection);
        drop(remote);
        self.repo
            .reference(FETCHED_REF, target.oid, true, "fleetlet: fetched")
            .map_err(local)?;

        let commit = self.local_commit(target.oid).ok_or_else(|| {
            SourceError::Refused(format!(
                "{} ({}) does not point to a commit",
                target.name, target.oid
            ))
        })?;

        self.repo
            .reference(ACCEPTED_REF, commit, true, "fleetlet: accepted")
            .map_err(local)?;
        let revision = self.revision(commit, &target.name)?;
        info!(commit = %revision.commit, reference = %revision.reference, summary = %revision.summary, "followed ref moved");
        Ok(Poll::Changed(revision))
    }

    fn descends_from(&self, commit: &str, ancestor: &str) -> Result<bool, SourceError> {
        let (commit, ancestor) = (parse_oid(commit)?, parse_oid(ancestor)?);
        if commit == ancestor {
            return Ok(true);
        }
        // The mirror holds every ancestor of a fetched commit; an `ancestor` it does not even
        // have cannot be one.
        Ok(self.has_object(ancestor)
            && self
                .repo
                .graph_descendant_of(commit, ancestor)
                .map_err(local)?)
    }

    fn commit_signature(&self, commit: &str) -> Result<Option<SignedObject>, SourceError> {
        let oid = parse_oid(commit)?;
        match self.repo.extract_signature(&oid, None) {
            Ok((signature, payload)) => Ok(Some(SignedObject {
                signature: signature.to_vec(),
                payload: payload.to_vec(),
            })),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(local(e)),
        }
    }

    fn tags_at(&self, commit: &str) -> Result<Vec<TagEvidence>, SourceError> {
        let commit = parse_oid(commit)?;
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for r in self.repo.references().map_err(local)?.flatten() {
            let Some(oid) = r.target() else { continue };
            let Ok(tag) = self.repo.find_tag(oid) else {
                continue;
            };
            if !seen.insert(oid) || tag.target_id() != commit {
                continue;
            }
            let odb = self.repo.odb().map_err(local)?;
            let raw = odb.read(oid).map_err(local)?;
            out.push(TagEvidence {
                name: String::from_utf8_lossy(tag.name_bytes()).into_owned(),
                message: String::from_utf8_lossy(tag.message_bytes().unwrap_or_default())
                    .into_owned(),
                time: tag.tagger().map(|t| t.when().seconds()).unwrap_or(0),
                signed: split_signed_tag(raw.data()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read_tree(&self, commit: &str) -> Result<RepoTree, SourceError> {
        let bad = |message: String| SourceError::BadTree {
            commit: commit.to_string(),
            message,
        };
        let oid = Oid::from_str(commit).map_err(|_| bad("not a commit id".into()))?;
        let c = self.repo.find_commit(oid).map_err(|e| {
            SourceError::Local(format!(
                "commit {commit} is not in the mirror: {}",
                e.message()
            ))
        })?;
        let limits = tree::Limits {
            max_file_size: self.config.max_file_size,
            max_tree_size: self.config.max_tree_size,
        };
        tree::read_commit_tree(&self.repo, &c, limits).map_err(|e| match e {
            tree::TreeError::Git(g) => {
                SourceError::Local(format!("reading commit {commit}: {}", g.message()))
            }
            other => bad(other.to_string()),
        })
    }
}

fn parse_oid(s: &str) -> Result<Oid, SourceError> {
    Oid::from_str(s).map_err(|_| SourceError::Local(format!("commit {s:?} is not a commit id")))
}

/// A tag object's signature is appended to its message; Git splits it at the last line that
/// opens a signature block. Returns `None` for an unsigned tag.
fn split_signed_tag(raw: &[u8]) -> Option<SignedObject> {
    const STARTS: [&[u8]; 3] = [
        b"-----BEGIN PGP SIGNATURE-----",
        b"-----BEGIN SSH SIGNATURE-----",
        b"-----BEGIN SIGNED MESSAGE-----",
    ];
    let mut at = None;
    let mut line_start = 0;
    while line_start < raw.len() {
        let rest = &raw[line_start..];
        if STARTS.iter().any(|s| rest.starts_with(s)) {
            at = Some(line_start);
        }
        match rest.iter().position(|b| *b == b'\n') {
            Some(n) => line_start += n + 1,
            None => break,
        }
    }
    at.map(|i| SignedObject {
        payload: raw[..i].to_vec(),
        signature: raw[i..].to_vec(),
    })
}

fn local(e: git2::Error) -> SourceError {
    SourceError::Local(e.message().to_string())
}

/// Opens the bare mirror at `dir`, creating it (and its parents) when missing.
fn open_mirror(dir: &std::path::Path) -> Result<Repository, SourceError> {
    if dir.join("HEAD").exists() {
        let repo = Repository::open_bare(dir)
            .map_err(|e| SourceError::Local(format!("{}: {}", dir.display(), e.message())))?;
        return Ok(repo);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| SourceError::Local(format!("creating {}: {e}", dir.display())))?;
    info!(mirror = %dir.display(), "creating the Git mirror");
    Repository::init_bare(dir)
        .map_err(|e| SourceError::Local(format!("{}: {}", dir.display(), e.message())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_lock_files_are_cleared_and_the_ref_can_move_again() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let commit = repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap();
        repo.reference(FETCHED_REF, commit, true, "first").unwrap();
        // What a kill -9 in the middle of a fetch leaves behind.
        let locks = [
            "refs/fleetlet/fetched.lock",
            "refs/heads/main.lock",
            "packed-refs.lock",
            "HEAD.lock",
        ];
        for lock in locks {
            std::fs::write(dir.path().join(lock), b"").unwrap();
        }
        assert!(
            repo.reference(FETCHED_REF, commit, true, "blocked")
                .is_err(),
            "libgit2 refuses a ref whose lock file exists"
        );
        let mut removed: Vec<String> = clear_stale_locks(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        removed.sort();
        let mut want = locks.map(String::from).to_vec();
        want.sort();
        assert_eq!(removed, want);
        repo.reference(FETCHED_REF, commit, true, "again").unwrap();
        assert!(dir.path().join("refs/fleetlet/fetched").exists());
        assert!(clear_stale_locks(dir.path()).unwrap().is_empty());
        // A missing mirror has nothing to clear.
        assert!(
            clear_stale_locks(&dir.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }
}

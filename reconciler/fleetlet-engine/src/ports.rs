//! The ports of the reconcile cycle: the small traits through which the engine reaches Git, the
//! blob store, the runtimes and the state store. Adapters implement them; adapters never call
//! each other, and the engine never names an adapter.

use crate::trust::{SignedObject, TagEvidence};
use fleetlet_core::render::DesiredWorkload;
use fleetlet_core::{Digest, ObservedWorkload, RepoTree};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A commit of the fleet repo, as the source resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Full hex commit id.
    pub commit: String,
    /// The ref it was resolved from (`refs/heads/main`, `refs/tags/v1.2.0`).
    pub reference: String,
    /// First line of the commit message.
    pub summary: String,
    /// Commit time, seconds since the Unix epoch.
    pub time: i64,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The followed ref still points at the last seen commit; nothing was fetched.
    Unchanged(Revision),
    /// The followed ref moved (or this is the first poll); its objects are now local.
    Changed(Revision),
}

impl Poll {
    pub fn revision(&self) -> &Revision {
        match self {
            Poll::Unchanged(r) | Poll::Changed(r) => r,
        }
    }
}

/// Errors of a source, typed by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The remote is down, slow or broken: retry at the next poll.
    #[error("fetching {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The remote rewrote history or otherwise needs a human to decide.
    #[error("{0}")]
    Refused(String),
    /// The commit's tree cannot be used (symlink leaving the repo, file too large, ...).
    #[error("reading tree of commit {commit}: {message}")]
    BadTree { commit: String, message: String },
    /// The local mirror failed.
    #[error("local Git mirror: {0}")]
    Local(String),
}

impl SourceError {
    /// Whether retrying later may help without a human.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Unreachable { .. } | SourceError::Local(_)
        )
    }
}

/// Where the fleet repo comes from (Git today; sync bundles later).
pub trait Source {
    /// Resolves the followed ref on the remote. Compares the advertised commit with `last_seen`
    /// before fetching anything, so a no-op poll moves no objects. Also brings in the annotated
    /// tags that point at the followed commit (release tags, rollback instructions).
    fn poll(&mut self, last_seen: Option<&str>) -> Result<Poll, SourceError>;

    /// The files of `commit`, read from the local object database (no working tree).
    fn read_tree(&self, commit: &str) -> Result<RepoTree, SourceError>;

    /// Whether `commit` descends from (or is) `ancestor`. The engine refuses history rewrites
    /// and replayed old releases with it; an `ancestor` the source does not have is not one.
    fn descends_from(&self, commit: &str, ancestor: &str) -> Result<bool, SourceError>;

    /// The signature on `commit` and the bytes it signs; `None` for an unsigned commit.
    fn commit_signature(&self, commit: &str) -> Result<Option<SignedObject>, SourceError> {
        let _ = commit;
        Ok(None)
    }

    /// The annotated tags pointing at `commit` that the last poll brought in.
    fn tags_at(&self, commit: &str) -> Result<Vec<TagEvidence>, SourceError> {
        let _ = commit;
        Ok(Vec::new())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {digest}: {message}")]
    Io { digest: String, message: String },
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
}

/// A content-addressed store of blobs (components today; OCI artifacts later). A blob is visible
/// only once complete and verified.
pub trait BlobStore {
    fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError>;
    /// The blob's bytes, verified against `digest`; `None` when absent.
    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The component cannot be compiled, linked or started: a new release must fix it.
    #[error("workload {id}: {message}")]
    Rejected { id: String, message: String },
    /// The host itself failed (port in use, disk full): may pass on retry.
    #[error("workload {id}: {message}")]
    Host { id: String, message: String },
}

impl RuntimeError {
    /// Whether retrying the same workload later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Host { .. })
    }
}

/// A place workloads run (the embedded Wasm runtime; k3s later).
///
/// Replacing is two-phase so a release can be all-or-nothing: `prepare` does everything that can
/// fail for reasons of the workload itself (compile, link, trial start) without touching what
/// runs; `activate` switches to it.
pub trait WorkloadRuntime {
    type Prepared;

    /// Workloads this runtime is running (or trying to), by id.
    fn observe(&self) -> BTreeMap<String, ObservedWorkload>;

    /// Compiles and checks `workload` from `component` bytes, without serving it.
    fn prepare(
        &self,
        workload: &DesiredWorkload,
        component: &[u8],
    ) -> Result<Self::Prepared, RuntimeError>;

    /// Starts a prepared workload, or replaces the running version of it: the new one takes
    /// traffic before the old one drains, so no request is lost.
    fn activate(&self, prepared: Self::Prepared) -> Result<(), RuntimeError>;

    /// Stops a workload; in-flight requests finish first.
    fn stop(&self, id: &str) -> Result<(), RuntimeError>;
}

#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StateError(pub String);

/// Where the agent state record lives. `save` is atomic: after a crash `load` returns the old
/// record or the new one.
pub trait StateStore {
    fn load(&self) -> Result<Option<crate::record::AgentState>, StateError>;
    fn save(&self, state: &crate::record::AgentState) -> Result<(), StateError>;
}

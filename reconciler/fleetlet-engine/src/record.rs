//! What the engine remembers between cycles and restarts: the agent state record. The state store
//! writes it as one unit, so a crash leaves the old record or the new one, never a mix.

use crate::ports::Revision;
use crate::trust::Signer;
use fleetlet_core::{DesiredState, Digest, WorkloadHealth};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped when the record changes shape; older agents refuse newer records.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    pub version: u32,
    /// The newest commit the source showed us, applied or not.
    #[serde(default)]
    pub last_seen: Option<Revision>,
    /// What runs now.
    #[serde(default)]
    pub applied: Option<AppliedRelease>,
    /// The last release that was applied and came up healthy: what we return to.
    #[serde(default)]
    pub last_known_good: Option<AppliedRelease>,
    /// The last failed cycle (source or release), cleared once the followed ref is applied.
    #[serde(default)]
    pub last_error: Option<CycleError>,
    /// The last refused commit, kept apart from source errors so a network blip does not
    /// forget why (and whether) that commit was refused.
    #[serde(default)]
    pub refused: Option<CycleError>,
    /// When the source last answered (Unix seconds).
    #[serde(default)]
    pub last_sync: Option<i64>,
    /// Per workload of the applied release: the artifact it runs and how it was doing when the
    /// record was written.
    #[serde(default)]
    pub workloads: BTreeMap<String, WorkloadRecord>,
    /// The artifacts of the last applied releases, newest first: garbage collection keeps
    /// everything they reference.
    #[serde(default)]
    pub release_roots: Vec<ReleaseRoots>,
    /// Set while the source has not advanced for longer than the policy's maximum age (a
    /// possible freeze attack: someone replays an old, validly signed state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_source: Option<String>,
    /// Per app: every Kubernetes object fleetlet applied for it (and the hash of what it
    /// applied). Prune deletes only what is listed here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inventories: BTreeMap<String, fleetlet_core::k8s::Inventory>,
    /// Per k3s workload: changes made on the cluster to what fleetlet applied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<String, DriftRecord>,
    /// Audit events not yet in the audit log: saved with the state change that caused them,
    /// removed once the agent has written them, so a crash in between loses none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_audit: Vec<crate::audit::AuditEvent>,
    /// The id of the last audit event.
    #[serde(default)]
    pub last_audit_id: u64,
}

/// Drift of one k3s workload since the agent's state began.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftRecord {
    /// Times a check found fields changed on the cluster.
    pub detected: u64,
    /// Times fleetlet undid them.
    pub corrected: u64,
    /// The last change found: object and fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

impl AgentState {
    /// What the artifact store keeps: the artifacts of the recorded releases and of the
    /// last-known-good. Garbage collection, `status.json` and `fleetlet cache` all use this.
    pub fn retained_roots(&self) -> Vec<ReleaseRoots> {
        let mut roots = self.release_roots.clone();
        if let Some(lkg) = &self.last_known_good
            && !roots.iter().any(|r| r.commit == lkg.revision.commit)
        {
            roots.push(ReleaseRoots {
                commit: lkg.revision.commit.clone(),
                digests: lkg.digests(),
            });
        }
        roots
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRoots {
    pub commit: String,
    /// Component blobs and the manifests (or indexes) images were pinned to.
    pub digests: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRecord {
    /// The component digest (wasm workloads).
    #[serde(default)]
    pub digest: Option<Digest>,
    /// `None` when the runtime does not run it (yet).
    #[serde(default)]
    pub health: Option<WorkloadHealth>,
    /// k3s workloads: the state of their objects on the cluster, as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sRecord>,
}

/// How a k3s workload's objects were doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K3sRecord {
    /// `running` (all Ready), `progressing`, `failed`, or `stopped` (objects missing).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRelease {
    pub revision: Revision,
    pub desired: DesiredState,
    /// Unix seconds.
    pub applied_at: i64,
    /// Who signed the commit (and its release tag), when the policy checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commit_signers: Vec<Signer>,
    /// Per pinned artifact reference: the signature material it was verified with (kept in the
    /// store, so a restart re-verifies offline) and who signed it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, VerifiedArtifact>,
    /// Workloads of this commit that did not pass verification and were held back (releases
    /// that are not atomic): id → reason. Their previous version, if any, runs instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, String>,
}

impl AppliedRelease {
    /// Every store digest the release needs: components, image manifests and the signature
    /// manifests they were verified with.
    pub fn digests(&self) -> Vec<Digest> {
        let mut out = crate::engine::release_digests(&self.desired);
        out.extend(
            self.artifacts
                .values()
                .flat_map(|a| a.material.iter().copied()),
        );
        out.sort();
        out.dedup();
        out
    }
}

/// How one artifact passed verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedArtifact {
    /// Digests of the signature manifests (cosign `.sig`, referrers) in the store.
    pub material: Vec<Digest>,
    pub signers: Vec<Signer>,
}

/// Which step of the cycle failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    Source,
    Validate,
    Render,
    Store,
    /// A signature check failed (commit, tag, artifact, rollback).
    Verify,
    Prepare,
    Apply,
    /// Applied, but not healthy in time (k3s).
    Health,
    State,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CycleError {
    /// Unix seconds.
    pub at: i64,
    pub stage: Stage,
    /// The commit being applied, when one was.
    #[serde(default)]
    pub commit: Option<String>,
    pub message: String,
    /// Every individual problem (e.g. each validation error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Whether the same commit may pass on a later try (network, port in use, disk) — then it
    /// is retried every cycle — or only a new commit can fix it (invalid, does not compile).
    #[serde(default)]
    pub retryable: bool,
}

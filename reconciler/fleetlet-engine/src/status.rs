//! The status report: what runs, from which commit, the last error and the last sync. Served at
//! `/status`, written to `status.json` and printed by `fleetlet status`.

use crate::record::{AgentState, CycleError, ReleaseRoots};
use crate::trust::Signer;

/// Every value of [`WorkloadStatus::state`].
pub const WORKLOAD_STATES: [&str; 10] = [
    "running",
    "restarting",
    "completed",
    "failed",
    "stopped",
    "stale",
    "notApplied",
    "held",
    "progressing",
    "unknown",
];
use fleetlet_core::render::WasmKind;
use fleetlet_core::{ObservedWorkload, WorkloadHealth};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub site: String,
    /// Commit that runs now.
    pub applied_commit: Option<String>,
    pub applied_summary: Option<String>,
    pub applied_at: Option<i64>,
    pub last_known_good_commit: Option<String>,
    /// Newest commit seen on the source.
    pub last_seen_commit: Option<String>,
    pub last_sync: Option<i64>,
    pub last_error: Option<CycleError>,
    /// Who signed the applied commit (and its release tag or rollback instruction).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commit_signers: Vec<Signer>,
    /// Set when the source has not advanced for longer than the policy allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_source: Option<String>,
    pub workloads: Vec<WorkloadStatus>,
    /// Artifacts of the last applied releases (newest first) and of the last-known-good: what
    /// the artifact store keeps.
    #[serde(default)]
    pub release_roots: Vec<ReleaseRoots>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub id: String,
    pub runtime: String,
    /// The component digest (wasm), or the manifests folder (k3s).
    pub artifact: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// One of [`WORKLOAD_STATES`].
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who signed the artifact it runs, when the policy checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<Signer>,
    /// k3s: changes made on the cluster to what fleetlet applied (found, undone, the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::record::DriftRecord>,
    /// Why the version of this workload in the applied commit was held back (it failed
    /// verification); the workload runs its previous version, or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl Status {
    pub fn build(
        site: &str,
        state: &AgentState,
        observed: &BTreeMap<String, ObservedWorkload>,
    ) -> Status {
        let applied = state.applied.as_ref();
        let mut workloads = Vec::new();
        if let Some(a) = applied {
            for (id, w) in &a.desired.workloads {
                let (artifact, port) = match (&w.wasm, &w.k3s) {
                    (Some(s), _) => (
                        s.component.describe(),
                        match s.kind {
                            WasmKind::Http { port } => Some(port.0),
                            WasmKind::Command { .. } => None,
                        },
                    ),
                    (_, Some(k)) => (k.manifests.clone(), None),
                    _ => (String::new(), None),
                };
                let k3s = state.workloads.get(id).and_then(|r| r.k3s.as_ref());
                let drift = state.drift.get(id).cloned();
                let (state, reason) = match (w.wasm.is_some(), observed.get(id)) {
                    (false, _) => match k3s {
                        Some(k) => (k.state.as_str(), k.reason.clone()),
                        None => (
                            "notApplied",
                            Some("no k3s cluster is configured on this agent".to_string()),
                        ),
                    },
                    (true, None) => ("stopped", None),
                    (true, Some(o)) if o.hash != w.hash => {
                        ("stale", Some("runs another version".into()))
                    }
                    (true, Some(o)) => (health_name(o.health), None),
                };
                let signers = w
                    .wasm
                    .as_ref()
                    .and_then(|s| s.component.pinned.as_ref())
                    .and_then(|p| a.artifacts.get(p))
                    .map(|v| v.signers.clone())
                    .unwrap_or_default();
                workloads.push(WorkloadStatus {
                    id: id.clone(),
                    runtime: w.runtime.to_string(),
                    artifact,
                    port,
                    state: state.to_string(),
                    reason,
                    signers,
                    drift,
                    held: a.held.get(id).cloned(),
                });
            }
            // Held workloads that have no previous version do not run at all.
            for (id, why) in a
                .held
                .iter()
                .filter(|(id, _)| !a.desired.workloads.contains_key(*id))
            {
                workloads.push(WorkloadStatus {
                    id: id.clone(),
                    runtime: String::new(),
                    artifact: String::new(),
                    port: None,
                    state: "held".into(),
                    reason: Some(why.clone()),
                    signers: vec![],
                    drift: None,
                    held: Some(why.clone()),
                });
            }
        }
        Status {
            site: site.to_string(),
            applied_commit: applied.map(|a| a.revision.commit.clone()),
            applied_summary: applied.map(|a| a.revision.summary.clone()),
            applied_at: applied.map(|a| a.applied_at),
            last_known_good_commit: state
                .last_known_good
                .as_ref()
                .map(|a| a.revision.commit.clone()),
            last_seen_commit: state.last_seen.as_ref().map(|r| r.commit.clone()),
            last_sync: state.last_sync,
            last_error: state.last_error.clone(),
            commit_signers: applied
                .map(|a| a.commit_signers.clone())
                .unwrap_or_default(),
            stale_source: state.stale_source.clone(),
            workloads,
            release_roots: state.retained_roots(),
        }
    }
}

pub fn health_name(h: WorkloadHealth) -> &'static str {
    match h {
        WorkloadHealth::Running => "running",
        WorkloadHealth::Restarting => "restarting",
        WorkloadHealth::Completed => "completed",
        WorkloadHealth::Failed => "failed",
    }
}

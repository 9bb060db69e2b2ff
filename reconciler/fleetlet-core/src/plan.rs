//! Plan: desired state + observed state → actions. Pure; the engine carries them out.

use crate::digest::Digest;
use crate::render::{DesiredState, DesiredWorkload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a running workload is doing, as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WorkloadHealth {
    /// Serving (http) or running (command).
    Running,
    /// Crashed and waiting to be restarted by the supervisor.
    Restarting,
    /// A command that exited successfully.
    Completed,
    /// Could not be started at all.
    Failed,
}

/// What the runtime currently runs for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedWorkload {
    pub hash: Digest,
    pub health: WorkloadHealth,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Not running: start it.
    Start(DesiredWorkload),
    /// Running another version: start the new one, switch, drain the old.
    Replace(DesiredWorkload),
    /// No longer desired: stop it.
    Stop(String),
    /// Running the desired version: nothing to do.
    Keep(String),
}

impl Action {
    pub fn id(&self) -> String {
        match self {
            Action::Start(w) | Action::Replace(w) => w.id(),
            Action::Stop(id) | Action::Keep(id) => id.clone(),
        }
    }

    pub fn changes_anything(&self) -> bool {
        !matches!(self, Action::Keep(_))
    }
}

/// Actions in a stable order: stops first (they free ports), then starts and replaces, by id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.actions.iter().all(|a| !a.changes_anything())
    }
}

pub fn plan(desired: &DesiredState, observed: &BTreeMap<String, ObservedWorkload>) -> Plan {
    let mut stops = Vec::new();
    let mut rest = Vec::new();
    for id in observed.keys() {
        if !desired.workloads.contains_key(id) {
            stops.push(Action::Stop(id.clone()));
        }
    }
    for (id, w) in &desired.workloads {
        rest.push(match observed.get(id) {
            None => Action::Start(w.clone()),
            // A workload that never started is retried, even at the same version.
            Some(o) if o.hash != w.hash || o.health == WorkloadHealth::Failed => Action::Replace(w.clone()),
            Some(_) => Action::Keep(id.clone()),
        });
    }
    stops.extend(rest);
    Plan { actions: stops }
}

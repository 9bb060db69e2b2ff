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
            Some(o) if o.hash != w.hash || o.health == WorkloadHealth::Failed => {
                Action::Replace(w.clone())
            }
            Some(_) => Action::Keep(id.clone()),
        });
    }
    stops.extend(rest);
    Plan { actions: stops }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Runtime, SiteName};
    use crate::render::DesiredWorkload;

    fn wl(id: &str, version: u8) -> DesiredWorkload {
        let (app, name) = id.split_once('/').unwrap();
        DesiredWorkload {
            app: app.into(),
            name: name.into(),
            runtime: Runtime::Wasm,
            wasm: None,
            k3s: None,
            hash: Digest::from_bytes([version; 32]),
        }
    }

    fn desired(ws: &[(&str, u8)]) -> DesiredState {
        DesiredState {
            site: "s".parse::<SiteName>().unwrap(),
            revision: "c".into(),
            workloads: ws
                .iter()
                .map(|(id, v)| (id.to_string(), wl(id, *v)))
                .collect(),
            hash: Digest::from_bytes([0; 32]),
        }
    }

    fn observed(ws: &[(&str, u8, WorkloadHealth)]) -> BTreeMap<String, ObservedWorkload> {
        ws.iter()
            .map(|(id, v, h)| {
                (
                    id.to_string(),
                    ObservedWorkload {
                        hash: Digest::from_bytes([*v; 32]),
                        health: *h,
                    },
                )
            })
            .collect()
    }

    fn summary(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Start(w) => format!("start {}", w.id()),
                Action::Replace(w) => format!("replace {}", w.id()),
                Action::Stop(id) => format!("stop {id}"),
                Action::Keep(id) => format!("keep {id}"),
            })
            .collect()
    }

    #[test]
    fn plans() {
        use WorkloadHealth::*;
        // (case, desired (id, version), observed (id, version, health), expected actions)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, u8)],
            &'a [(&'a str, u8, WorkloadHealth)],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            ("nothing to nothing", &[], &[], &[]),
            ("first start", &[("a/x", 1)], &[], &["start a/x"]),
            (
                "unchanged",
                &[("a/x", 1)],
                &[("a/x", 1, Running)],
                &["keep a/x"],
            ),
            (
                "new version",
                &[("a/x", 2)],
                &[("a/x", 1, Running)],
                &["replace a/x"],
            ),
            ("removed", &[], &[("a/x", 1, Running)], &["stop a/x"]),
            (
                "failed start is retried",
                &[("a/x", 1)],
                &[("a/x", 1, Failed)],
                &["replace a/x"],
            ),
            (
                "restarting is left to the supervisor",
                &[("a/x", 1)],
                &[("a/x", 1, Restarting)],
                &["keep a/x"],
            ),
            (
                "stops come first, then by id",
                &[("b/y", 1), ("a/x", 1)],
                &[("c/z", 1, Running), ("b/y", 1, Running)],
                &["stop c/z", "start a/x", "keep b/y"],
            ),
        ];
        for (name, d, o, want) in cases {
            let got = plan(&desired(d), &observed(o));
            assert_eq!(summary(&got), *want, "{name}");
            assert_eq!(
                got.is_noop(),
                want.iter().all(|a| a.starts_with("keep")),
                "{name}"
            );
        }
    }
}

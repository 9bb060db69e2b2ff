//! The cycle. Each step says what it ensures; the first failing step ends the cycle, records why,
//! and leaves what runs untouched (last-known-good).
//!
//! Expected flow of [`Engine::reconcile`]:
//! 1. *observe the source* — poll the followed ref; fetch only if it moved;
//! 2. *load and validate* the tree at that commit (pure);
//! 3. *render* this site's desired state (pure);
//! 4. *store* every component in the blob store, by digest;
//! 5. *plan* against what the runtime observes (pure);
//! 6. *prepare* every start/replace (compile, link, trial start) — any failure holds the whole
//!    release, nothing changes;
//! 7. *apply*: activate prepared workloads, stop removed ones; a failure here rolls back to the
//!    previous release;
//! 8. *record* the outcome in the state store (one atomic write).
//!
//! Guarantees: nothing from a commit that fails steps 1–6 runs; the state record names only what
//! was really applied. Assumption: one engine per state dir (the state store locks it).

use crate::ports::{BlobStore, Poll, Revision, Source, StateStore, WorkloadRuntime};
use crate::record::{AgentState, AppliedRelease, CycleError, STATE_VERSION, Stage, WorkloadRecord};
use crate::status::Status;
use fleetlet_core::load::load_fleet;
use fleetlet_core::render::DesiredWorkload;
use fleetlet_core::{Action, DesiredState, RepoTree, Runtime, WorkloadHealth, plan, render};
use std::collections::BTreeMap;
use tracing::{info, warn};

/// How one cycle ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CycleOutcome {
    /// The source did not move and everything desired runs.
    Unchanged,
    /// A new release runs now.
    Applied { commit: String, changes: usize },
    /// A release was refused; the previous one keeps running.
    Rejected {
        commit: Option<String>,
        stage: Stage,
    },
    /// The source could not be reached; nothing changed.
    SourceUnavailable,
}

pub struct Engine<S, R, B, St>
where
    S: Source,
    R: WorkloadRuntime,
    B: BlobStore,
    St: StateStore,
{
    site: String,
    source: S,
    runtime: R,
    blobs: B,
    store: St,
    state: AgentState,
}

type CycleResult<T> = Result<T, CycleError>;

impl<S, R, B, St> Engine<S, R, B, St>
where
    S: Source,
    R: WorkloadRuntime,
    B: BlobStore,
    St: StateStore,
{
    /// Opens the engine on its state. Refuses a state record written by a newer agent.
    pub fn new(
        site: String,
        source: S,
        runtime: R,
        blobs: B,
        store: St,
    ) -> Result<Self, crate::ports::StateError> {
        let state = store.load()?.unwrap_or(AgentState {
            version: STATE_VERSION,
            ..Default::default()
        });
        if state.version > STATE_VERSION {
            return Err(crate::ports::StateError(format!(
                "state record has version {}, this agent understands up to {STATE_VERSION}",
                state.version
            )));
        }
        Ok(Engine {
            site,
            source,
            runtime,
            blobs,
            store,
            state,
        })
    }

    pub fn state(&self) -> &AgentState {
        &self.state
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    pub fn status(&self) -> Status {
        Status::build(&self.site, &self.state, &self.runtime.observe())
    }

    /// Brings back what ran before a restart, from the state record and the blob store alone (no
    /// network). Ensures: the applied release runs, or — if it cannot start — the last-known-good.
    pub fn restore(&mut self) -> Result<usize, CycleError> {
        let Some(applied) = self.state.applied.clone() else {
            return Ok(0);
        };
        match self.converge(&applied.desired, None) {
            Ok(n) => {
                info!(commit = %applied.revision.commit, workloads = n, "restored the applied release from local state");
                Ok(n)
            }
            Err(e) => {
                warn!(error = %e.message, "could not restore the applied release; trying last-known-good");
                let lkg = self
                    .state
                    .last_known_good
                    .clone()
                    .filter(|l| l.desired != applied.desired);
                let Some(lkg) = lkg else { return Err(e) };
                let n = self.converge(&lkg.desired, None)?;
                self.state.applied = Some(lkg);
                self.save();
                Ok(n)
            }
        }
    }

    /// One cycle. `now` is Unix seconds (the engine reads no clock itself, so tests control time).
    pub fn reconcile(&mut self, now: i64) -> CycleOutcome {
        // 1. observe the source
        let last_seen = self.state.last_seen.as_ref().map(|r| r.commit.clone());
        let poll = match self.source.poll(last_seen.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "fleet repo source unavailable; what runs keeps running");
                self.fail(CycleError {
                    at: now,
                    stage: Stage::Source,
                    commit: None,
                    message: e.to_string(),
                    details: vec![],
                });
                return CycleOutcome::SourceUnavailable;
            }
        };
        self.state.last_sync = Some(now);
        let rev = poll.revision().clone();
        let applied_commit = self
            .state
            .applied
            .as_ref()
            .map(|a| a.revision.commit.clone());
        let seen_before =
            matches!(poll, Poll::Unchanged(_)) && last_seen.as_deref() == Some(rev.commit.as_str());
        if seen_before && applied_commit.as_deref() == Some(rev.commit.as_str()) {
            // Nothing new: make sure what should run does (a crashed start is retried).
            return self.heal(now);
        }
        if seen_before
            && self
                .state
                .last_error
                .as_ref()
                .is_some_and(|e| e.commit.as_deref() == Some(rev.commit.as_str()))
        {
            // Already refused this commit; refusing again would only repeat the same error.
            self.save();
            return CycleOutcome::Rejected {
                commit: Some(rev.commit),
                stage: self
                    .state
                    .last_error
                    .as_ref()
                    .map(|e| e.stage)
                    .unwrap_or(Stage::Validate),
            };
        }
        self.state.last_seen = Some(rev.clone());
        match self.release(&rev, now) {
            Ok(changes) => CycleOutcome::Applied {
                commit: rev.commit,
                changes,
            },
            Err(e) => {
                let stage = e.stage;
                warn!(commit = %rev.commit, stage = ?stage, error = %e.message, "release refused; last-known-good keeps running");
                for d in &e.details {
                    warn!(commit = %rev.commit, "  {d}");
                }
                self.fail(e);
                CycleOutcome::Rejected {
                    commit: Some(rev.commit),
                    stage,
                }
            }
        }
    }

    /// Steps 2–8 for one revision.
    fn release(&mut self, rev: &Revision, now: i64) -> CycleResult<usize> {
        let err = |stage, message: String, details| CycleError {
            at: now,
            stage,
            commit: Some(rev.commit.clone()),
            message,
            details,
        };
        let tree = self
            .source
            .read_tree(&rev.commit)
            .map_err(|e| err(Stage::Source, e.to_string(), vec![]))?;
        let desired = desired_state(&tree, &self.site, &rev.commit)
            .map_err(|(stage, msg, details)| err(stage, msg, details))?;

        // 4. store components, so a restart without network has them.
        for w in desired.workloads.values() {
            if let Some(spec) = &w.wasm {
                let bytes = tree.get(&spec.component.path).unwrap_or_default();
                let got = self.blobs.put(bytes).map_err(|e| {
                    err(
                        Stage::Store,
                        format!("storing component of {}: {e}", w.id()),
                        vec![],
                    )
                })?;
                if got != spec.component.digest {
                    return Err(err(
                        Stage::Store,
                        format!("component of {} changed while storing", w.id()),
                        vec![],
                    ));
                }
            }
        }

        let previous = self.state.applied.as_ref().map(|a| a.desired.clone());
        let changes = self
            .converge(&desired, previous.as_ref())
            .map_err(|mut e| {
                e.at = now;
                e.commit = Some(rev.commit.clone());
                e
            })?;

        let release = AppliedRelease {
            revision: rev.clone(),
            desired,
            applied_at: now,
        };
        let healthy = self.is_healthy(&release.desired);
        self.state.applied = Some(release.clone());
        if healthy {
            self.state.last_known_good = Some(release);
        }
        self.state.last_error = None;
        self.save();
        info!(commit = %rev.commit, summary = %rev.summary, changes, "release applied");
        Ok(changes)
    }

    /// Makes the runtime run `desired`: prepare every change first (all-or-nothing), then
    /// activate and stop. On a failure while activating, returns to `previous`.
    fn converge(
        &mut self,
        desired: &DesiredState,
        previous: Option<&DesiredState>,
    ) -> CycleResult<usize> {
        let observed = self.runtime.observe();
        let wasm_only = only_wasm(desired);
        let plan = plan(&wasm_only, &observed);
        let mk = |stage, message: String, details| CycleError {
            at: 0,
            stage,
            commit: None,
            message,
            details,
        };

        // 6. prepare: nothing visible changes yet.
        let mut prepared = Vec::new();
        let mut failures = Vec::new();
        for action in &plan.actions {
            if let Action::Start(w) | Action::Replace(w) = action {
                match self.prepare(w) {
                    Ok(p) => prepared.push((w.id(), p)),
                    Err(m) => failures.push(m),
                }
            }
        }
        if !failures.is_empty() {
            return Err(mk(
                Stage::Prepare,
                format!(
                    "{} workload(s) cannot start; the release is held: {}",
                    failures.len(),
                    failures[0]
                ),
                failures,
            ));
        }

        // 7. apply.
        let mut changes = 0;
        for action in plan.actions.iter().filter(|a| matches!(a, Action::Stop(_))) {
            if let Err(e) = self.runtime.stop(&action.id()) {
                warn!(error = %e, "stopping workload failed");
            }
            changes += 1;
        }
        for (id, p) in prepared {
            if let Err(e) = self.runtime.activate(p) {
                let e = mk(Stage::Apply, format!("activating {id}: {e}"), vec![]);
                if let Some(prev) = previous {
                    warn!(error = %e.message, "activation failed; returning to the previous release");
                    if let Err(re) = self.converge(prev, None) {
                        warn!(error = %re.message, "returning to the previous release failed too");
                    }
                }
                return Err(e);
            }
            changes += 1;
        }
        Ok(changes)
    }

    fn prepare(&self, w: &DesiredWorkload) -> Result<R::Prepared, String> {
        let spec = w
            .wasm
            .as_ref()
            .ok_or_else(|| format!("{}: not a wasm workload", w.id()))?;
        let bytes = self
            .blobs
            .get(&spec.component.digest)
            .map_err(|e| format!("{}: {e}", w.id()))?
            .ok_or_else(|| {
                format!(
                    "{}: component {} is not in the local store",
                    w.id(),
                    spec.component.digest
                )
            })?;
        self.runtime.prepare(w, &bytes).map_err(|e| e.to_string())
    }

    fn is_healthy(&self, desired: &DesiredState) -> bool {
        let observed = self.runtime.observe();
        only_wasm(desired).workloads.iter().all(|(id, w)| {
            observed.get(id).is_some_and(|o| {
                o.hash == w.hash
                    && matches!(
                        o.health,
                        WorkloadHealth::Running | WorkloadHealth::Completed
                    )
            })
        })
    }

    /// Re-converges on the applied release when the source did not move.
    fn heal(&mut self, now: i64) -> CycleOutcome {
        let Some(applied) = self.state.applied.clone() else {
            self.save();
            return CycleOutcome::Unchanged;
        };
        match self.converge(&applied.desired, None) {
            Ok(0) => {}
            Ok(n) => info!(restarted = n, "re-started workloads of the applied release"),
            Err(mut e) => {
                e.at = now;
                e.commit = Some(applied.revision.commit.clone());
                warn!(error = %e.message, "could not re-start workloads of the applied release");
                self.state.last_error = Some(e);
            }
        }
        if self.state.last_known_good.as_ref().map(|l| &l.revision) != Some(&applied.revision)
            && self.is_healthy(&applied.desired)
        {
            self.state.last_known_good = Some(applied);
        }
        self.save();
        CycleOutcome::Unchanged
    }

    fn fail(&mut self, e: CycleError) {
        self.state.last_error = Some(e);
        self.save();
    }

    fn save(&mut self) {
        let observed = self.runtime.observe();
        self.state.workloads = self
            .state
            .applied
            .iter()
            .flat_map(|a| a.desired.workloads.iter())
            .map(|(id, w)| {
                let record = WorkloadRecord {
                    digest: w.wasm.as_ref().map(|s| s.component.digest),
                    health: observed
                        .get(id)
                        .filter(|o| o.hash == w.hash)
                        .map(|o| o.health),
                };
                (id.clone(), record)
            })
            .collect();
        if let Err(e) = self.store.save(&self.state) {
            warn!(error = %e, "could not write the state record");
        }
    }
}

/// Load, validate and render: the pure part of a release, with errors shaped for the record.
pub fn desired_state(
    tree: &RepoTree,
    site: &str,
    commit: &str,
) -> Result<DesiredState, (Stage, String, Vec<String>)> {
    let loaded = load_fleet(tree);
    if loaded.has_errors() {
        let details: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
        return Err((
            Stage::Validate,
            format!(
                "fleet repo at {} is invalid ({} error(s)); first: {}",
                short(commit),
                details.len(),
                details[0]
            ),
            details,
        ));
    }
    render(&loaded.fleet, tree, site, commit).map_err(|errs| {
        let details: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        (
            Stage::Render,
            format!(
                "rendering site {site:?} at {}: {}",
                short(commit),
                details[0]
            ),
            details,
        )
    })
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The part of a desired state the Wasm runtime handles (k3s workloads wait for their applier).
fn only_wasm(desired: &DesiredState) -> DesiredState {
    let mut d = desired.clone();
    d.workloads.retain(|_, w| w.runtime == Runtime::Wasm);
    d
}

/// Observed workloads by id, for tests and status.
pub type Observed = BTreeMap<String, fleetlet_core::ObservedWorkload>;

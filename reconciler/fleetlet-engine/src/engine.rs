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
//! 8. *record* the outcome in the state store (one atomic write);
//! 9. *heal*, every cycle whatever happened above: restart what the applied release should run
//!    but does not, and promote the applied release to last-known-good once it has been healthy
//!    in a cycle after the one that applied it.
//!
//! A refused commit is remembered with whether it may pass later: a retryable failure (network,
//! port in use, disk) is tried again every cycle; an invalid commit is not redone until the ref
//! moves. New commits must descend from the applied one (the source refuses rewritten history).
//!
//! Each outcome that changes what runs, or refuses to, is also recorded as an audit event
//! ([`crate::audit`]): a release applied, a commit refused (once per distinct failure), a return
//! to the previous release, drift undone, objects pruned. The agent drains them each cycle.
//!
//! Guarantees: nothing from a commit that fails steps 1–6 runs; a failure in step 7 returns to
//! the previous release; the state record names only what was really applied. Assumption: one
//! engine per state dir (the state store locks it).

use crate::artifacts::{Platform, pull, wasm_layer};
use crate::artifacts::{fetch_signatures, load_signature_manifests};
use crate::audit::{AuditAction, AuditEvent, AuditWorkload};
use crate::cluster::{Cluster, ClusterError};
use crate::k3s;
use crate::ports::{Revision, Source, StateStore, WorkloadRuntime};
use crate::record::K3sRecord;
use crate::record::{
    AgentState, AppliedRelease, CycleError, ReleaseRoots, STATE_VERSION, Stage, VerifiedArtifact,
    WorkloadRecord,
};
use crate::registry::{ArtifactStore, LAYOUT_REGISTRY, Layouts, Registry};
use crate::status::Status;
use crate::trust::{Requirement, Signer, Verifier};
use fleetlet_core::k8s::{self, Health, Inventory, ObjectRef};
use fleetlet_core::load::load_fleet;
use fleetlet_core::reference::ArtifactRef;
use fleetlet_core::reference::RegistryRef;
use fleetlet_core::render::DesiredWorkload;
use fleetlet_core::{Action, DesiredState, RepoTree, Runtime, WorkloadHealth, plan, render};
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use tracing::{info, warn};

/// Applied releases whose artifacts stay in the store, unless configured otherwise.
pub const DEFAULT_KEEP_RELEASES: usize = 3;

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
    B: ArtifactStore + Sync,
    St: StateStore,
{
    site: String,
    source: S,
    runtime: R,
    blobs: B,
    store: St,
    state: AgentState,
    registry: Option<Box<dyn Registry + Send + Sync>>,
    layouts: Option<Box<dyn Layouts>>,
    /// Releases whose artifacts garbage collection keeps.
    keep_releases: usize,
    /// The site's trust policy; without one nothing is checked (development only: the agent
    /// refuses to start without a policy unless told so explicitly).
    verifier: Option<Box<dyn Verifier>>,
    /// Accept a new commit that does not descend from the applied one without a signed
    /// rollback instruction.
    allow_history_rewrite: bool,
    /// Set when the applied release failed re-verification at start (trust roots changed, the
    /// store was tampered with): it must not run until a release passes verification again.
    blocked: Option<CycleError>,
    /// The k3s cluster of the site; without one, k3s workloads are not applied.
    cluster: Option<Box<dyn Cluster>>,
    /// Per app: the live health of its inventoried objects, as last observed.
    k3s_live: BTreeMap<String, BTreeMap<ObjectRef, Option<Health>>>,
    /// Seconds between drift checks of k3s objects.
    drift_interval: i64,
    last_drift_check: i64,
    /// Set while the k3s API cannot be reached when re-converging the applied release: the
    /// Wasm workloads run regardless; health verdicts and drift checks wait for the API.
    k3s_unavailable: Option<CycleError>,
    /// Whether the inventories recorded on the cluster have been read (once per start, so a
    /// reinstalled agent prunes what an earlier one applied).
    inventories_read: bool,
    /// Events from outside a cycle (`restore`): the engine reads no clock, so they are stamped
    /// with the `now` of the next cycle.
    audit_unstamped: Vec<AuditEvent>,
    /// The `now` of the cycle running, if one is.
    cycle_now: Option<i64>,
    /// The last refusal reported, as (commit, stage, message): a commit retried every cycle is
    /// reported again only when it fails differently.
    last_rejected: Option<RejectionKey>,
    /// Set by `converge` when a failed apply was undone: whether returning to the previous
    /// release (or, for a first release, to nothing) worked.
    undone: Option<bool>,
}

type RejectionKey = (Option<String>, Stage, String);

fn rejection_key(e: &CycleError) -> RejectionKey {
    (e.commit.clone(), e.stage, e.message.clone())
}

/// Default seconds between drift checks (a server-side dry run per object).
pub const DEFAULT_DRIFT_INTERVAL: i64 = 300;

/// What one app's k3s objects need this cycle.
struct K3sPlan {
    app: String,
    /// Labelled, in apply order.
    objects: Vec<serde_json::Value>,
    old: Inventory,
    new: Inventory,
    /// Inventoried objects that exist on the cluster now.
    live: BTreeSet<ObjectRef>,
}

/// What pulling one image component brought: where it is pinned and whether it may run.
#[derive(Clone)]
struct PulledComponent {
    pinned: String,
    layer: fleetlet_core::Digest,
    size: u64,
    verification: Verification,
}

impl PulledComponent {
    /// Notes the verdict for `workload`: who signed it, or why it may not run.
    fn record(
        &self,
        workload: &str,
        artifacts: &mut BTreeMap<String, VerifiedArtifact>,
        failures: &mut Vec<(String, String)>,
    ) {
        match &self.verification {
            Verification::NotRequired => {}
            Verification::Passed(v) => {
                artifacts.insert(self.pinned.clone(), v.clone());
            }
            Verification::Failed(reason) => {
                failures.push((workload.to_string(), format!("{}: {reason}", self.pinned)))
            }
        }
    }
}

#[derive(Clone)]
enum Verification {
    NotRequired,
    Passed(VerifiedArtifact),
    Failed(String),
}

type CycleResult<T> = Result<T, CycleError>;

impl<S, R, B, St> Engine<S, R, B, St>
where
    S: Source,
    R: WorkloadRuntime,
    B: ArtifactStore + Sync,
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
        // A restart is when trust roots and policy change: what was refused gets another look
        // (but is not reported again if it fails the same way).
        let mut state = state;
        let last_rejected = state.refused.take().as_ref().map(rejection_key);
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
            registry: None,
            layouts: None,
            keep_releases: DEFAULT_KEEP_RELEASES,
            verifier: None,
            allow_history_rewrite: false,
            blocked: None,
            cluster: None,
            k3s_live: BTreeMap::new(),
            drift_interval: DEFAULT_DRIFT_INTERVAL,
            last_drift_check: i64::MIN / 2,
            inventories_read: false,
            k3s_unavailable: None,
            audit_unstamped: Vec::new(),
            cycle_now: None,
            last_rejected,
            undone: None,
        })
    }

    /// Where `oci:PATH` components are read from.
    pub fn with_layouts(mut self, layouts: Box<dyn Layouts>) -> Self {
        self.layouts = Some(layouts);
        self
    }

    /// How many applied releases keep their artifacts in the store (at least 1).
    pub fn keep_releases(mut self, n: usize) -> Self {
        self.keep_releases = n.max(1);
        self
    }

    /// Checks commits, tags and artifacts against the site's trust policy before anything runs.
    pub fn with_verifier(mut self, verifier: Box<dyn Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Applies k3s workloads to this cluster.
    pub fn with_cluster(mut self, cluster: Box<dyn Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// How often (seconds) k3s objects are checked for changes made on the cluster.
    pub fn drift_interval(mut self, secs: i64) -> Self {
        self.drift_interval = secs.max(1);
        self
    }

    /// Accepts commits that do not descend from the applied one (force-push, older release)
    /// without a signed rollback instruction.
    pub fn allow_history_rewrite(mut self, allow: bool) -> Self {
        self.allow_history_rewrite = allow;
        self
    }

    /// Where image components are pulled from (mirrors, credentials and retries inside).
    pub fn with_registry(mut self, registry: Box<dyn Registry + Send + Sync>) -> Self {
        self.registry = Some(registry);
        self
    }

    pub fn state(&self) -> &AgentState {
        &self.state
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    pub fn status(&self) -> Status {
        Status::build(&self.site, &self.state, &self.runtime.observe())
    }

    /// The audit events of the cycles since the last call, oldest first (see [`crate::audit`]).
    /// Events of `restore` come with the first cycle after it.
    /// Taken is forgotten: the state record is saved without them.
    pub fn take_audit_events(&mut self) -> Vec<AuditEvent> {
        let events = std::mem::take(&mut self.state.pending_audit);
        if !events.is_empty() {
            self.save();
        }
        events
    }

    /// The audit events not yet acknowledged ([`ack_audit`](Self::ack_audit)), oldest first:
    /// they survive restarts in the state record, so the agent writes each at least once.
    pub fn pending_audit_events(&self) -> &[AuditEvent] {
        &self.state.pending_audit
    }

    /// The audit log holds every event up to `id`: they leave the state record at its next
    /// save.
    pub fn ack_audit(&mut self, id: u64) {
        self.state.pending_audit.retain(|e| e.id > id);
    }

    /// Numbers new audit events after `id` (the last one the audit log holds), should the
    /// state record have been reset while the log was kept.
    pub fn continue_audit_ids(&mut self, id: u64) {
        self.state.last_audit_id = self.state.last_audit_id.max(id);
    }

    fn push_audit(&mut self, mut event: AuditEvent) {
        self.state.last_audit_id += 1;
        event.id = self.state.last_audit_id;
        self.state.pending_audit.push(event);
    }

    /// Records an audit event: stamped with the cycle's `now`, or kept for the next cycle when
    /// none runs.
    fn emit(&mut self, event: AuditEvent) {
        match self.cycle_now {
            Some(now) => {
                let event = self.stamp(event, now);
                self.push_audit(event);
            }
            None => self.audit_unstamped.push(event),
        }
    }

    /// Sets the event's time and, when it names a commit, the tags at that commit (read from the
    /// source's local mirror; a failure leaves them out — the tags are a convenience for
    /// searching, the commit is what counts).
    fn stamp(&self, mut event: AuditEvent, now: i64) -> AuditEvent {
        event.at = now;
        if event.tags.is_empty()
            && let Some(commit) = &event.commit
        {
            let mut tags: Vec<String> = self
                .source
                .tags_at(commit)
                .map(|t| t.into_iter().map(|t| t.name).collect())
                .unwrap_or_default();
            tags.sort();
            tags.dedup();
            event.tags = tags;
        }
        event
    }

    /// The ref `commit` was followed on, if the record knows it.
    fn reference_of(&self, commit: &str) -> Option<String> {
        [
            self.state.applied.as_ref().map(|a| &a.revision),
            self.state.last_known_good.as_ref().map(|a| &a.revision),
            self.state.last_seen.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find(|r| r.commit == commit)
        .map(|r| r.reference.clone())
    }

    /// Brings back what ran before a restart, from the state record and the blob store alone (no
    /// network). Ensures: the applied release runs, or — if it cannot start — the last-known-good.
    pub fn restore(&mut self) -> Result<usize, CycleError> {
        let Some(applied) = self.state.applied.clone() else {
            return Ok(0);
        };
        let restored = self
            .reverify(&applied)
            .and_then(|()| self.converge(&applied.desired, None));
        match restored {
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
                let Some(lkg) = lkg else {
                    self.block_if_unverified(&e);
                    self.state.last_error = Some(e.clone());
                    self.save();
                    return Err(e);
                };
                if let Err(e2) = self.reverify(&lkg) {
                    warn!(error = %e2.message, "the last-known-good fails verification too; nothing runs until a release passes");
                    self.block_if_unverified(&e);
                    self.state.last_error = Some(e.clone());
                    self.save();
                    return Err(e);
                }
                let n = self.converge(&lkg.desired, None)?;
                self.emit(AuditEvent {
                    from: Some(applied.revision.commit.clone()),
                    stage: Some(e.stage),
                    reason: Some(e.message.clone()),
                    ..AuditEvent::of_release(0, AuditAction::RolledBack, &lkg)
                });
                self.state.applied = Some(lkg);
                self.save();
                Ok(n)
            }
        }
    }

    /// A release that fails verification never runs, not even by `heal`; the cycle tries it
    /// again as a new release (fresh signatures may pass).
    fn block_if_unverified(&mut self, e: &CycleError) {
        if e.stage == Stage::Verify {
            self.blocked = Some(e.clone());
        }
    }

    /// Whether the applied release still waits to be promoted to last-known-good (the agent
    /// then runs the next cycle soon, rather than after a full poll interval).
    pub fn awaiting_promotion(&self) -> bool {
        match (&self.state.applied, &self.state.last_known_good) {
            (Some(a), Some(l)) => a.revision != l.revision,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// One cycle. `now` is Unix seconds (the engine reads no clock itself, so tests control time).
    pub fn reconcile(&mut self, now: i64) -> CycleOutcome {
        self.cycle_now = Some(now);
        for event in std::mem::take(&mut self.audit_unstamped) {
            let event = self.stamp(event, now);
            self.push_audit(event);
        }
        let outcome = self.follow_source(now);
        // Whatever the source said, what should run keeps running (a crashed start is retried,
        // even offline), and a release that has stayed healthy becomes last-known-good.
        match self.heal(now) {
            // Why nothing runs matters most; why retrying failed is a detail of it.
            Some(mut e) if self.blocked.is_some() => {
                if let Some(retry) = self.state.last_error.take() {
                    e.details
                        .push(format!("retrying the release: {}", retry.message));
                }
                self.state.last_error = Some(e);
            }
            Some(e) if self.state.last_error.is_none() => self.state.last_error = Some(e),
            _ => {}
        }
        self.save();
        self.cycle_now = None;
        outcome
    }

    /// Steps 1–8 for whatever the source now points at.
    fn follow_source(&mut self, now: i64) -> CycleOutcome {
        let last_seen = self.state.last_seen.as_ref().map(|r| r.commit.clone());
        let applied = self
            .state
            .applied
            .as_ref()
            .map(|a| a.revision.commit.clone());
        let poll = match self.source.poll(last_seen.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "fleet repo source unavailable or refused; what runs keeps running");
                if let (Some(max), Some(last)) = (self.max_source_age(), self.state.last_sync)
                    && now - last > max
                {
                    self.state.stale_source = Some(format!(
                        "no answer from the source for {} (the policy allows {}); last-known-good keeps running",
                        human_duration(now - last),
                        human_duration(max)
                    ));
                }
                self.state.last_error = Some(CycleError {
                    at: now,
                    stage: Stage::Source,
                    commit: None,
                    message: e.to_string(),
                    details: vec![],
                    retryable: e.is_transient(),
                });
                return CycleOutcome::SourceUnavailable;
            }
        };
        self.state.last_sync = Some(now);
        let rev = poll.revision().clone();
        self.state.last_seen = Some(rev.clone());
        self.check_freshness(&rev, now);
        let partial = self
            .state
            .applied
            .as_ref()
            .is_some_and(|a| !a.held.is_empty());
        if applied.as_deref() == Some(rev.commit.as_str()) && !partial && self.blocked.is_none() {
            self.state.refused = None;
            self.state.last_error = None;
            self.last_rejected = None;
            return CycleOutcome::Unchanged;
        }
        if let Some(r) = &self.state.refused
            && r.commit.as_deref() == Some(rev.commit.as_str())
            && !r.retryable
        {
            // Refused for a reason only a new commit can fix: do not redo the work.
            self.state.last_error = Some(r.clone());
            return CycleOutcome::Rejected {
                commit: Some(rev.commit),
                stage: r.stage,
            };
        }
        self.undone = None;
        let released = self.release(&rev, now);
        let undone = self.undone.take();
        match released {
            Ok(changes) => {
                self.blocked = None;
                self.state.refused = None;
                self.last_rejected = None;
                self.state.last_error = self.held_error(now);
                if changes == 0 && applied.as_deref() == Some(rev.commit.as_str()) {
                    return CycleOutcome::Unchanged;
                }
                CycleOutcome::Applied {
                    commit: rev.commit,
                    changes,
                }
            }
            Err(e) => {
                let stage = e.stage;
                warn!(commit = %rev.commit, stage = ?stage, retryable = e.retryable, error = %e.message, "release refused; last-known-good keeps running");
                for d in &e.details {
                    warn!(commit = %rev.commit, "  {d}");
                }
                self.audit_rejection(&rev, &e, undone == Some(true));
                self.state.refused = Some(e.clone());
                self.state.last_error = Some(e);
                CycleOutcome::Rejected {
                    commit: Some(rev.commit),
                    stage,
                }
            }
        }
    }

    /// Reports a refused commit — once per distinct failure, as a retryable one is retried every
    /// cycle — and, when its apply had begun and was undone, the return to what runs now. A
    /// source that could not be read refuses nothing: it is not reported.
    fn audit_rejection(&mut self, rev: &Revision, e: &CycleError, undone: bool) {
        if e.stage == Stage::Source && e.retryable {
            return;
        }
        let key = rejection_key(e);
        if self.last_rejected.as_ref() == Some(&key) {
            return;
        }
        self.last_rejected = Some(key);
        if undone {
            let back = match &self.state.applied {
                Some(a) => AuditEvent::of_release(0, AuditAction::RolledBack, a),
                None => AuditEvent::new(0, AuditAction::RolledBack),
            };
            self.emit(AuditEvent {
                from: Some(rev.commit.clone()),
                stage: Some(e.stage),
                reason: Some(e.message.clone()),
                ..back
            });
        }
        self.emit(AuditEvent {
            commit: Some(rev.commit.clone()),
            reference: Some(rev.reference.clone()),
            stage: Some(e.stage),
            reason: Some(e.message.clone()),
            ..AuditEvent::new(0, AuditAction::Rejected)
        });
    }

    /// Steps 2–8 for one revision.
    fn release(&mut self, rev: &Revision, now: i64) -> CycleResult<usize> {
        let err = |stage, message: String, details, retryable| CycleError {
            at: now,
            stage,
            commit: Some(rev.commit.clone()),
            message,
            details,
            retryable,
        };
        let source_err = |e: crate::ports::SourceError| {
            err(Stage::Source, e.to_string(), vec![], e.is_transient())
        };
        // Before reading anything of the commit: is it allowed to replace what runs, and who
        // signed it.
        let mut commit_signers = self
            .check_history(rev)
            .map_err(|(m, retryable)| err(Stage::Verify, m, vec![], retryable))?;
        if let Some(v) = &self.verifier {
            let signed = self
                .source
                .commit_signature(&rev.commit)
                .map_err(source_err)?;
            match v.verify_commit(rev, signed.as_ref()) {
                Ok(s) => commit_signers.extend(s),
                Err(reason) => {
                    return Err(err(
                        Stage::Verify,
                        format!("commit {}: {reason}", short(&rev.commit)),
                        vec![],
                        false,
                    ));
                }
            }
        }
        let tree = self.source.read_tree(&rev.commit).map_err(source_err)?;
        let (desired, labels) = desired_state(&tree, &self.site, &rev.commit)
            .map_err(|(stage, msg, details)| err(stage, msg, details, false))?;
        if let Some(v) = &self.verifier {
            let tags = self.source.tags_at(&rev.commit).map_err(source_err)?;
            match v.verify_release_tag(&labels, &tags) {
                Ok(s) => commit_signers.extend(s),
                // Retryable: the signed tag may be pushed after the commit.
                Err(reason) => {
                    return Err(err(
                        Stage::Verify,
                        format!("commit {}: {reason}", short(&rev.commit)),
                        vec![],
                        true,
                    ));
                }
            }
        }

        // 4. store components, so a restart without network has them; pin images to digests
        //    once for this release (a tag that moves later changes nothing until the next one).
        let mut desired = desired;
        let mut pins: BTreeMap<String, PulledComponent> = BTreeMap::new();
        let mut failures: Vec<(String, String)> = Vec::new();
        let mut artifacts: BTreeMap<String, VerifiedArtifact> = BTreeMap::new();
        for w in desired.workloads.values_mut() {
            let Some(component) = w.wasm.as_ref().map(|s| s.component.clone()) else {
                continue;
            };
            if let (Some(path), Some(digest)) = (&component.path, component.digest) {
                let bytes = tree.get(path).unwrap_or_default();
                let got = self.blobs.put(bytes).map_err(|e| {
                    err(
                        Stage::Store,
                        format!("storing component of {}: {e}", w.id()),
                        vec![],
                        true,
                    )
                })?;
                if got != digest {
                    return Err(err(
                        Stage::Store,
                        format!("component of {} changed while storing", w.id()),
                        vec![],
                        true,
                    ));
                }
            } else if let Some(image) = &component.image {
                let pin = match pins.get(image) {
                    Some(p) => p.clone(),
                    None => {
                        let p = self.pull_component(image).map_err(|(m, retryable)| {
                            err(
                                Stage::Store,
                                format!("pulling component of {}: {m}", w.id()),
                                vec![],
                                retryable,
                            )
                        })?;
                        pins.insert(image.clone(), p.clone());
                        p
                    }
                };
                w.pin_component(pin.pinned.clone(), pin.layer, pin.size);
                pin.record(&w.id(), &mut artifacts, &mut failures);
            }
        }

        // Container images of k3s workloads: verified artifacts of this release like
        // components, in the site's store (its mirror serves them to k3s offline), and pinned
        // to digests in the manifests before anything is applied.
        if self.cluster.is_some() {
            let mut image_pins: BTreeMap<String, String> = BTreeMap::new();
            for w in desired.workloads.values_mut() {
                for image in w.container_images() {
                    let pin = match pins.get(&image) {
                        Some(p) => p.clone(),
                        None => {
                            let p =
                                self.pull_artifact(&image, false)
                                    .map_err(|(m, retryable)| {
                                        err(
                                            Stage::Store,
                                            format!("pulling image {image} of {}: {m}", w.id()),
                                            vec![],
                                            retryable,
                                        )
                                    })?;
                            pins.insert(image.clone(), p.clone());
                            p
                        }
                    };
                    pin.record(&w.id(), &mut artifacts, &mut failures);
                    image_pins.insert(image, pin.pinned.clone());
                }
                w.pin_images(&image_pins);
            }
        }
        // A workload whose artifact failed verification never starts. Atomic releases (the
        // default) are held whole; otherwise only that workload is, at its previous version.
        let mut held = BTreeMap::new();
        if !failures.is_empty() {
            let details: Vec<String> = failures
                .iter()
                .map(|(id, reason)| format!("{id}: {reason}"))
                .collect();
            if self.verifier.as_ref().is_none_or(|v| v.atomic()) {
                return Err(err(
                    Stage::Verify,
                    format!(
                        "{} workload(s) failed verification; the release is held: {}",
                        details.len(),
                        details[0]
                    ),
                    details,
                    // A signature may be attached to the artifact after the commit.
                    true,
                ));
            }
            let previous = self.state.applied.clone();
            for (id, reason) in failures {
                warn!(workload = %id, reason = %reason, "artifact failed verification; workload held at its previous version");
                match previous.as_ref().and_then(|p| p.desired.workloads.get(&id)) {
                    Some(old) => {
                        desired.workloads.insert(id.clone(), old.clone());
                    }
                    None => {
                        desired.workloads.remove(&id);
                    }
                }
                held.insert(id, reason);
            }
            // The versions kept keep the verification they ran with.
            if let Some(p) = &previous {
                for w in desired.workloads.values() {
                    if let Some(pinned) = w.wasm.as_ref().and_then(|s| s.component.pinned.clone())
                        && !artifacts.contains_key(&pinned)
                        && let Some(v) = p.artifacts.get(&pinned)
                    {
                        artifacts.insert(pinned, v.clone());
                    }
                }
            }
        }
        desired.rehash();

        let previous = self.state.applied.as_ref().map(|a| a.desired.clone());
        let changes = self
            .converge(&desired, previous.as_ref())
            .map_err(|mut e| {
                e.at = now;
                e.commit = Some(rev.commit.clone());
                e
            })?;

        // The same commit is released again while workloads of it are held (or after it was
        // blocked at start): reported only when that changed something.
        let again = self.blocked.is_none()
            && self.state.applied.as_ref().is_some_and(|a| {
                a.revision.commit == rev.commit && a.desired == desired && a.held == held
            });
        // Last-known-good is promoted by `heal`, once the release has been seen healthy in a
        // later cycle, not at the instant it started.
        let release = AppliedRelease {
            revision: rev.clone(),
            desired,
            applied_at: now,
            commit_signers,
            artifacts,
            held,
        };
        if !again {
            let mut event = AuditEvent::of_release(now, AuditAction::Applied, &release);
            if !release.held.is_empty() {
                event.reason = Some(format!(
                    "held back at their previous version (failed verification): {}",
                    release
                        .held
                        .iter()
                        .map(|(id, why)| format!("{id}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            self.emit(event);
        }
        self.state.applied = Some(release);
        info!(commit = %rev.commit, summary = %rev.summary, changes, "release applied");
        self.record_roots_and_collect(&rev.commit);
        Ok(changes)
    }

    /// Remembers the artifacts of the release just applied, then removes from the store what none
    /// of the last `keep_releases` releases (nor the last-known-good) reference. A failed
    /// collection only costs disk; it is logged, not fatal.
    fn record_roots_and_collect(&mut self, commit: &str) {
        let Some(applied) = &self.state.applied else {
            return;
        };
        let roots = applied.digests();
        self.state.release_roots.retain(|r| r.commit != commit);
        self.state.release_roots.insert(
            0,
            ReleaseRoots {
                commit: commit.to_string(),
                digests: roots,
            },
        );
        self.state.release_roots.truncate(self.keep_releases);
        let keep: std::collections::BTreeSet<fleetlet_core::Digest> = self
            .state
            .retained_roots()
            .iter()
            .flat_map(|r| r.digests.iter().copied())
            .collect();
        match self.blobs.collect_garbage(&keep) {
            Ok((0, _)) => {}
            Ok((n, bytes)) => info!(blobs = n, bytes, "garbage collected the artifact store"),
            Err(e) => warn!(error = %e, "garbage collection of the artifact store failed"),
        }
    }

    /// Makes the runtime run `desired`: prepare every change first (all-or-nothing), then stop
    /// and activate. On a failure while applying, returns to `previous` — or, with no previous
    /// release, stops what this call started — so no mix of two releases is left running.
    fn converge(
        &mut self,
        desired: &DesiredState,
        previous: Option<&DesiredState>,
    ) -> CycleResult<usize> {
        let observed = self.runtime.observe();
        let plan = plan(&only_wasm(desired), &observed);
        let mk = |stage, message: String, details, retryable| CycleError {
            at: 0,
            stage,
            commit: None,
            message,
            details,
            retryable,
        };

        // 6. prepare: nothing visible changes yet.
        let mut prepared = Vec::new();
        let mut failures = Vec::new();
        for action in &plan.actions {
            if let Action::Start(w) | Action::Replace(w) = action {
                match self.prepare(w) {
                    Ok(p) => prepared.push((w.id(), matches!(action, Action::Start(_)), p)),
                    Err(e) => failures.push(e),
                }
            }
        }
        // 6b. k3s: observe what each app has on the cluster, dry-run what would be sent. An
        //     unreachable API holds a new release, but never keeps the applied release's Wasm
        //     workloads from (re)starting.
        let reconverging = self
            .state
            .applied
            .as_ref()
            .is_some_and(|a| &a.desired == desired);
        let k3s_plans = match self.plan_k3s(desired) {
            Ok(p) => {
                self.k3s_unavailable = None;
                p
            }
            Err(e) if reconverging && e.retryable => {
                warn!(error = %e.message, "k3s API unreachable; Wasm workloads run, k3s objects are left as they are");
                self.k3s_unavailable = Some(e);
                vec![]
            }
            Err(e) => return Err(e),
        };
        if !failures.is_empty() {
            let retryable = failures.iter().all(|(_, transient)| *transient);
            let details: Vec<String> = failures.into_iter().map(|(m, _)| m).collect();
            return Err(mk(
                Stage::Prepare,
                format!(
                    "{} workload(s) cannot start; the release is held: {}",
                    details.len(),
                    details[0]
                ),
                details,
                retryable,
            ));
        }

        // 7. apply: stops first (they free ports), then activations.
        let mut changes = 0;
        for action in plan.actions.iter().filter(|a| matches!(a, Action::Stop(_))) {
            if let Err(e) = self.runtime.stop(&action.id()) {
                return Err(mk(
                    Stage::Apply,
                    format!("stopping {}: {e}", action.id()),
                    vec![],
                    true,
                ));
            }
            changes += 1;
        }
        let mut started = Vec::new();
        for (id, is_new, p) in prepared {
            if let Err(e) = self.runtime.activate(p) {
                let mut err = mk(
                    Stage::Apply,
                    format!("activating {id}: {e}"),
                    vec![],
                    e.is_transient(),
                );
                let undo = match previous {
                    Some(prev) => self.converge(prev, None).map(drop),
                    None => started
                        .iter()
                        .try_for_each(|s: &String| self.runtime.stop(s))
                        .map_err(|e| mk(Stage::Apply, e.to_string(), vec![], true)),
                };
                self.undone = Some(undo.is_ok());
                if let Err(u) = undo {
                    warn!(error = %u.message, "returning to the previous state failed too");
                    err.details.push(format!(
                        "returning to the previous state failed: {}",
                        u.message
                    ));
                }
                return Err(err);
            }
            if is_new {
                started.push(id);
            }
            changes += 1;
        }
        match self.apply_k3s(k3s_plans, &desired.revision) {
            Ok(n) => changes += n,
            Err(mut err) => {
                if let Some(prev) = previous {
                    let undo = self.converge(prev, None);
                    self.undone = Some(undo.is_ok());
                    if let Err(u) = undo {
                        warn!(error = %u.message, "returning to the previous state failed too");
                        err.details.push(format!(
                            "returning to the previous state failed: {}",
                            u.message
                        ));
                    }
                }
                return Err(err);
            }
        }
        Ok(changes)
    }

    /// Per app with k3s objects now or in the recorded inventories: observe the inventoried
    /// objects (one list per kind), and dry-run those that will be sent, so an invalid object
    /// or a field conflict holds the release before anything changes.
    fn plan_k3s(&mut self, desired: &DesiredState) -> CycleResult<Vec<K3sPlan>> {
        let Some(cluster) = self.cluster.as_deref() else {
            return Ok(vec![]);
        };
        let fail = |e: ClusterError| CycleError {
            at: 0,
            stage: Stage::Prepare,
            commit: None,
            message: format!("k3s: {e}"),
            details: vec![],
            retryable: e.is_transient(),
        };
        if !self.inventories_read {
            for (app, inv) in k3s::read_inventories(cluster).map_err(fail)? {
                self.state.inventories.entry(app).or_insert(inv);
            }
            self.inventories_read = true;
        }
        let mut apps: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
        for w in desired.workloads.values() {
            if let Some(k) = &w.k3s {
                apps.entry(w.app.clone())
                    .or_default()
                    .extend(k.objects.iter());
            }
        }
        // An app that left the release still has objects to prune.
        for app in self.state.inventories.keys() {
            apps.entry(app.clone()).or_default();
        }
        let mut plans = Vec::new();
        for (app, objects) in apps {
            let objects = k3s::app_objects(cluster, &app, objects).map_err(fail)?;
            let old = self
                .state
                .inventories
                .get(&app)
                .cloned()
                .unwrap_or_default();
            let observed = if old.entries.is_empty() {
                BTreeMap::new()
            } else {
                k3s::observe(cluster, &app, &old).map_err(fail)?
            };
            let live: BTreeSet<ObjectRef> = observed
                .iter()
                .filter(|(_, h)| h.is_some())
                .map(|(r, _)| r.clone())
                .collect();
            self.k3s_live.insert(app.clone(), observed);
            let to_send: Vec<serde_json::Value> = objects
                .iter()
                .filter(|o| k3s::needs_sending(o, &old, &live))
                .cloned()
                .collect();
            if !to_send.is_empty() {
                let problems = k3s::dry_run(cluster, &to_send, &live).map_err(fail)?;
                if !problems.is_empty() {
                    return Err(CycleError {
                        at: 0,
                        stage: Stage::Prepare,
                        commit: None,
                        message: format!(
                            "app {app}: {} Kubernetes object(s) refused by a dry run; the release is held: {}",
                            problems.len(),
                            problems[0]
                        ),
                        details: problems,
                        retryable: false,
                    });
                }
            }
            let new = k8s::inventory_of(&objects);
            plans.push(K3sPlan {
                app,
                objects,
                old,
                new,
                live,
            });
        }
        Ok(plans)
    }

    /// Applies each app's objects, then prunes what its inventory no longer lists; records the
    /// new inventories. On a failure the inventory keeps old and new entries, so returning to
    /// the previous release prunes what this attempt created. What was pruned is reported
    /// (per app, for the release at `revision`), also when a later step failed.
    fn apply_k3s(&mut self, plans: Vec<K3sPlan>, revision: &str) -> CycleResult<usize> {
        let mut pruned = Vec::new();
        let result = self.apply_k3s_plans(plans, &mut pruned);
        for (app, objects) in pruned {
            self.emit(AuditEvent {
                commit: Some(revision.to_string()),
                reference: self.reference_of(revision),
                reason: Some(format!("app {app}: no longer in the release")),
                objects,
                ..AuditEvent::new(0, AuditAction::Pruned)
            });
        }
        result
    }

    /// [`Self::apply_k3s`]'s requests; notes in `pruned` what each app's prune deleted.
    fn apply_k3s_plans(
        &mut self,
        plans: Vec<K3sPlan>,
        pruned_by_app: &mut Vec<(String, Vec<String>)>,
    ) -> CycleResult<usize> {
        let Some(cluster) = self.cluster.as_deref() else {
            return Ok(0);
        };
        let mut changes = 0;
        for p in plans {
            let fail = |e: ClusterError| CycleError {
                at: 0,
                stage: Stage::Apply,
                commit: None,
                message: format!("app {}: applying to k3s: {e}", p.app),
                details: vec![],
                retryable: e.is_transient(),
            };
            let applied = k3s::apply(cluster, &p.objects, &p.old, &p.live);
            let applied = match applied {
                Ok(a) => a,
                Err(e) => {
                    let mut union = p.old.clone();
                    union.entries.extend(p.new.entries.clone());
                    self.state.inventories.insert(p.app.clone(), union);
                    return Err(fail(e));
                }
            };
            let pruned = k3s::prune(cluster, &p.old, &p.new).map_err(fail)?;
            if applied.sent > 0 || !pruned.is_empty() {
                info!(app = %p.app, sent = applied.sent, unchanged = applied.unchanged, pruned = pruned.len(), "applied to k3s");
            }
            for r in &pruned {
                info!(app = %p.app, object = %r, "pruned");
            }
            if !pruned.is_empty() {
                pruned_by_app.push((
                    p.app.clone(),
                    pruned.iter().map(|r| r.to_string()).collect(),
                ));
            }
            changes += applied.sent + pruned.len();
            // The cluster's copy of the inventory changes only when the inventory does.
            if p.objects.is_empty() {
                k3s::forget_inventory(cluster, &p.app).map_err(fail)?;
                self.state.inventories.remove(&p.app);
                self.k3s_live.remove(&p.app);
            } else {
                if p.new != p.old {
                    for o in k3s::inventory_objects(&p.app, &p.new) {
                        cluster
                            .apply(&o, crate::cluster::ApplyOptions::default())
                            .map_err(fail)?;
                    }
                }
                self.state.inventories.insert(p.app, p.new);
            }
        }
        Ok(changes)
    }

    /// Pulls an image component into the store, with its signature material when the policy
    /// requires a signature, and verifies it; or (message, retryable).
    fn pull_component(&self, image: &str) -> Result<PulledComponent, (String, bool)> {
        self.pull_artifact(image, true)
    }

    /// Pulls an artifact (a Wasm component, or — `component: false` — a container image for
    /// k3s, all of its blobs for this platform, so the site's mirror serves it offline) and
    /// verifies it as the policy requires.
    fn pull_artifact(
        &self,
        image: &str,
        component: bool,
    ) -> Result<PulledComponent, (String, bool)> {
        let parsed = image
            .parse::<ArtifactRef>()
            .map_err(|e| (e.to_string(), false))?;
        let opened;
        let (registry, reference, layout_path): (
            &(dyn Registry + Send + Sync),
            RegistryRef,
            Option<String>,
        ) = match parsed {
            ArtifactRef::Registry(r) => {
                let registry = self.registry.as_deref().ok_or_else(|| {
                    (
                        "no registry access is configured on this agent".to_string(),
                        false,
                    )
                })?;
                (registry, r, None)
            }
            ArtifactRef::Layout(l) => {
                let layouts = self.layouts.as_deref().ok_or_else(|| {
                    (
                        "local OCI layouts are not enabled on this agent".to_string(),
                        false,
                    )
                })?;
                // Retryable: the site's operator may allow the folder, or plug the stick in.
                opened = layouts.open(&l.path).map_err(|e| (e, true))?;
                let r = RegistryRef {
                    registry: LAYOUT_REGISTRY.into(),
                    repository: "local".into(),
                    tag: l.tag.clone(),
                    digest: l.digest,
                };
                (opened.as_ref(), r, Some(l.path))
            }
        };
        let pulled = pull(registry, &self.blobs, &reference, &Platform::host())
            .map_err(|e| (e.to_string(), e.is_transient()))?;
        let layer = if component {
            wasm_layer(&pulled.resolved.config, &pulled.resolved.layers)
                .ok_or_else(|| {
                    (
                        format!(
                            "{}: not a Wasm component artifact (no application/wasm layer)",
                            pulled.resolved.pinned
                        ),
                        false,
                    )
                })?
                .clone()
        } else {
            pulled.resolved.manifest.clone()
        };
        let pinned = match (&layout_path, pulled.resolved.pinned.digest) {
            (Some(path), Some(d)) => format!("oci:{path}@{d}"),
            _ => pulled.resolved.pinned.to_string(),
        };
        info!(image, pinned = %pinned, fetched = pulled.fetched.len(), "pulled component");
        let verification = match (&self.verifier, policy_ref(&pinned)) {
            (Some(v), Some(subject)) if v.artifact_requirement(&subject) == Requirement::Signed => {
                // Material that verified for a release still recorded is re-checked from the
                // store first: a release of cached, signed artifacts needs no network for this.
                if let Some(cached) = self.verified_before(&pinned)
                    && let Ok(m) = load_signature_manifests(&self.blobs, &cached)
                    && let Ok(signers) = v.verify_artifact(&subject, &m)
                {
                    return Ok(PulledComponent {
                        pinned,
                        layer: layer.digest,
                        size: layer.size,
                        verification: Verification::Passed(VerifiedArtifact {
                            material: cached,
                            signers,
                        }),
                    });
                }
                let material = fetch_signatures(registry, &self.blobs, &pulled.resolved.pinned)
                    .map_err(|e| {
                        (
                            format!("fetching signatures of {pinned}: {e}"),
                            e.is_transient(),
                        )
                    })?;
                let manifests = load_signature_manifests(&self.blobs, &material)
                    .map_err(|m| (format!("reading signatures of {pinned}: {m}"), true))?;
                match v.verify_artifact(&subject, &manifests) {
                    Ok(signers) => {
                        info!(pinned = %pinned, signers = %list_signers(&signers), "artifact signature verified");
                        Verification::Passed(VerifiedArtifact { material, signers })
                    }
                    Err(reason) => Verification::Failed(reason),
                }
            }
            _ => Verification::NotRequired,
        };
        Ok(PulledComponent {
            pinned,
            layer: layer.digest,
            size: layer.size,
            verification,
        })
    }

    /// The signature material `pinned` was verified with in the applied release or the
    /// last-known-good.
    fn verified_before(&self, pinned: &str) -> Option<Vec<fleetlet_core::Digest>> {
        [&self.state.applied, &self.state.last_known_good]
            .into_iter()
            .flatten()
            .find_map(|r| r.artifacts.get(pinned))
            .map(|a| a.material.clone())
    }

    /// Checks again, from the store alone, that every artifact of `release` is still signed as
    /// the policy requires (a restart may come with new trust roots; the store may have been
    /// tampered with while the agent was down).
    fn reverify(&self, release: &AppliedRelease) -> Result<(), CycleError> {
        let Some(v) = &self.verifier else {
            return Ok(());
        };
        let fail = |message: String| CycleError {
            at: 0,
            stage: Stage::Verify,
            commit: Some(release.revision.commit.clone()),
            message,
            details: vec![],
            retryable: false,
        };
        for w in release.desired.workloads.values() {
            let Some(pinned) = w.wasm.as_ref().and_then(|s| s.component.pinned.as_deref()) else {
                continue;
            };
            let Some(subject) = policy_ref(pinned) else {
                continue;
            };
            if v.artifact_requirement(&subject) != Requirement::Signed {
                continue;
            }
            let material = release
                .artifacts
                .get(pinned)
                .map(|a| a.material.clone())
                .unwrap_or_default();
            let manifests = load_signature_manifests(&self.blobs, &material)
                .map_err(|m| fail(format!("{}: re-verifying {pinned}: {m}", w.id())))?;
            v.verify_artifact(&subject, &manifests)
                .map_err(|m| fail(format!("{}: re-verifying {pinned}: {m}", w.id())))?;
        }
        Ok(())
    }

    /// Refuses a commit that does not descend from the applied one — a force-push, or an older
    /// release replayed (rollback attack) — unless a signed rollback instruction on it allows
    /// exactly this move. Returns the instruction's signer; errors are (message, retryable).
    fn check_history(&self, rev: &crate::ports::Revision) -> Result<Vec<Signer>, (String, bool)> {
        let Some(base) = self
            .state
            .applied
            .as_ref()
            .map(|a| a.revision.commit.clone())
        else {
            return Ok(vec![]);
        };
        if base == rev.commit {
            return Ok(vec![]);
        }
        let descends = self
            .source
            .descends_from(&rev.commit, &base)
            .map_err(|e| (e.to_string(), e.is_transient()))?;
        if descends {
            return Ok(vec![]);
        }
        let what = format!(
            "{} moved to {}, which does not descend from the applied commit {} (force-push or an \
             older release replayed)",
            rev.reference, rev.commit, base
        );
        if self.allow_history_rewrite {
            warn!("{what}; accepted because history rewrites are allowed on this site");
            return Ok(vec![]);
        }
        let Some(v) = &self.verifier else {
            return Err((
                format!("{what}; refused (allow force-pushes on this site to accept it)"),
                true,
            ));
        };
        let tags = self
            .source
            .tags_at(&rev.commit)
            .map_err(|e| (e.to_string(), e.is_transient()))?;
        // Retryable: the signed instruction may be pushed after the commit.
        let signer = v
            .verify_rollback(&base, &rev.commit, &tags)
            .map_err(|reason| (format!("{what}; refused: {reason}"), true))?;
        info!(from = %base, to = %rev.commit, signer = %signer, "moving back: allowed by a signed rollback instruction");
        Ok(vec![signer])
    }

    fn max_source_age(&self) -> Option<i64> {
        self.verifier.as_ref().and_then(|v| v.max_source_age())
    }

    /// Reports a source whose newest commit is older than the policy allows (freeze attack).
    fn check_freshness(&mut self, rev: &crate::ports::Revision, now: i64) {
        self.state.stale_source = self
            .max_source_age()
            .filter(|max| now - rev.time > *max)
            .map(|max| {
                format!(
                    "the source has not advanced for {} (newest commit {} on {}); the policy allows {}: \
                     a possible freeze attack; last-known-good keeps running",
                    human_duration(now - rev.time),
                    short(&rev.commit),
                    rev.reference,
                    human_duration(max)
                )
            });
        if let Some(m) = &self.state.stale_source {
            warn!("{m}");
        }
    }

    /// The error that describes workloads held back from the applied release, if any.
    fn held_error(&self, now: i64) -> Option<CycleError> {
        let applied = self.state.applied.as_ref()?;
        if applied.held.is_empty() {
            return None;
        }
        let details: Vec<String> = applied
            .held
            .iter()
            .map(|(id, reason)| format!("{id}: {reason}"))
            .collect();
        Some(CycleError {
            at: now,
            stage: Stage::Verify,
            commit: Some(applied.revision.commit.clone()),
            message: format!(
                "{} workload(s) held back (failed verification): {}",
                details.len(),
                details[0]
            ),
            details,
            retryable: true,
        })
    }

    /// The prepared workload, or (message, transient).
    fn prepare(&self, w: &DesiredWorkload) -> Result<R::Prepared, (String, bool)> {
        let spec = w
            .wasm
            .as_ref()
            .ok_or_else(|| (format!("{}: not a wasm workload", w.id()), false))?;
        let digest = spec.component.digest.ok_or_else(|| {
            (
                format!(
                    "{}: component {} is not pinned",
                    w.id(),
                    spec.component.describe()
                ),
                false,
            )
        })?;
        let bytes = self
            .blobs
            .get(&digest)
            .map_err(|e| (format!("{}: {e}", w.id()), true))?
            .ok_or_else(|| {
                (
                    format!("{}: component {} is not in the local store", w.id(), digest),
                    true,
                )
            })?;
        self.runtime
            .prepare(w, &bytes)
            .map_err(|e| (e.to_string(), e.is_transient()))
    }

    fn is_healthy(&self, desired: &DesiredState) -> bool {
        let observed = self.runtime.observe();
        let k3s_ready = desired
            .workloads
            .values()
            .filter(|w| w.k3s.is_some())
            .all(|w| self.cluster.is_none() || self.k3s_health(w).0 == "running");
        k3s_ready
            && only_wasm(desired).workloads.iter().all(|(id, w)| {
                observed.get(id).is_some_and(|o| {
                    o.hash == w.hash
                        && matches!(
                            o.health,
                            WorkloadHealth::Running | WorkloadHealth::Completed
                        )
                })
            })
    }

    /// Re-converges on the applied release (restarting what is missing) and promotes it to
    /// last-known-good once it has been healthy in a cycle after the one that applied it.
    fn heal(&mut self, now: i64) -> Option<CycleError> {
        if let Some(blocked) = &self.blocked {
            return Some(CycleError {
                at: now,
                ..blocked.clone()
            });
        }
        let applied = self.state.applied.clone()?;
        let result = self.converge(&applied.desired, None);
        match &result {
            Ok(0) => {}
            Ok(n) => info!(restarted = n, "re-started workloads of the applied release"),
            Err(e) => {
                warn!(error = %e.message, "could not re-start workloads of the applied release")
            }
        }
        if let Some(e) = &self.k3s_unavailable
            && result.is_ok()
        {
            // No verdicts from stale observations: an outage is not an unhealthy release.
            return Some(CycleError {
                at: now,
                commit: Some(applied.revision.commit.clone()),
                ..e.clone()
            });
        }
        if result.is_ok() {
            self.check_drift(&applied, now);
        }
        if let Some(e) = self.check_k3s_health(&applied, now) {
            return Some(e);
        }
        let promote = self.state.last_known_good.as_ref().map(|l| &l.revision)
            != Some(&applied.revision)
            && now > applied.applied_at
            && self.is_healthy(&applied.desired);
        if promote {
            info!(commit = %applied.revision.commit, "release is healthy: now the last-known-good");
            self.state.last_known_good = Some(applied.clone());
        }
        result.err().map(|mut e| {
            e.at = now;
            e.commit = Some(applied.revision.commit);
            e
        })
    }

    /// Every drift interval: a server-side dry run of each applied k3s object shows whether
    /// someone changed, on the cluster, fields fleetlet applies (or took them over with another
    /// field manager). Per workload policy the change is undone — applying with `force`, as
    /// these are fields fleetlet owns — or only counted and reported.
    fn check_drift(&mut self, applied: &AppliedRelease, now: i64) {
        let Some(cluster) = self.cluster.as_deref() else {
            return;
        };
        if now - self.last_drift_check < self.drift_interval {
            return;
        }
        self.last_drift_check = now;
        // What was undone, reported once the check ends (also when it ends early).
        let mut corrected: Vec<(String, String, String)> = Vec::new();
        'check: for w in applied.desired.workloads.values() {
            let Some(spec) = &w.k3s else { continue };
            let Ok(objects) = k3s::app_objects(cluster, &w.app, spec.objects.iter()) else {
                break 'check;
            };
            let live = self.k3s_live.get(&w.app);
            for o in &objects {
                let Some(r) = ObjectRef::of(o) else { continue };
                if !live.is_some_and(|l| l.get(&r).is_some_and(Option::is_some)) {
                    continue; // missing objects are re-created by the next converge
                }
                let changed = match cluster.apply(
                    o,
                    crate::cluster::ApplyOptions {
                        dry_run: true,
                        force: false,
                    },
                ) {
                    Ok(answer) => k8s::drifted(o, &answer),
                    Err(ClusterError::Conflict { fields, .. }) => fields
                        .iter()
                        .map(|(f, m)| format!("{f} (taken over by {m})"))
                        .collect(),
                    Err(e) => {
                        warn!(object = %r, error = %e, "drift check failed");
                        break 'check;
                    }
                };
                if changed.is_empty() {
                    continue;
                }
                let record = self.state.drift.entry(w.id()).or_default();
                record.detected += 1;
                record.last = Some(format!("{r}: {}", changed.join(", ")));
                record.at = Some(now);
                if spec.drift == fleetlet_core::model::DriftMode::Correct {
                    match cluster.apply(
                        o,
                        crate::cluster::ApplyOptions {
                            dry_run: false,
                            force: true,
                        },
                    ) {
                        Ok(_) => {
                            record.corrected += 1;
                            info!(workload = %w.id(), object = %r, fields = %changed.join(", "), "drift corrected");
                            corrected.push((w.id(), r.to_string(), changed.join(", ")));
                        }
                        Err(e) => {
                            warn!(workload = %w.id(), object = %r, error = %e, "correcting drift failed")
                        }
                    }
                } else {
                    warn!(workload = %w.id(), object = %r, fields = %changed.join(", "), "drift detected (reported only)");
                }
            }
        }
        if corrected.is_empty() {
            return;
        }
        let mut workloads: Vec<String> = corrected.iter().map(|(id, _, _)| id.clone()).collect();
        workloads.dedup();
        self.emit(AuditEvent {
            commit: Some(applied.revision.commit.clone()),
            reference: Some(applied.revision.reference.clone()),
            workloads: workloads
                .into_iter()
                .map(|id| AuditWorkload {
                    id,
                    artifacts: vec![],
                })
                .collect(),
            reason: Some(
                corrected
                    .iter()
                    .map(|(_, object, fields)| format!("{object}: {fields}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            objects: corrected.into_iter().map(|(_, object, _)| object).collect(),
            ..AuditEvent::new(now, AuditAction::DriftCorrected)
        });
    }

    /// Judges the applied release's k3s workloads: one that failed, or is not Ready within its
    /// health timeout, is unhealthy. Per its policy the site returns to the last-known-good
    /// release (the commit is then refused until the ref moves), or the failure is reported
    /// while it keeps running.
    fn check_k3s_health(&mut self, applied: &AppliedRelease, now: i64) -> Option<CycleError> {
        self.cluster.as_ref()?;
        let mut unhealthy: Vec<(String, String, fleetlet_core::model::OnUnhealthy)> = Vec::new();
        for w in applied.desired.workloads.values() {
            let Some(spec) = &w.k3s else { continue };
            let (state, reason) = self.k3s_health(w);
            let waited = now - applied.applied_at;
            let timeout = spec.health_timeout.as_duration().as_secs() as i64;
            let verdict = match state {
                "failed" => reason.unwrap_or_default(),
                "running" => continue,
                _ if waited > timeout => format!(
                    "not healthy {}s after the apply (timeout {}): {}",
                    waited,
                    spec.health_timeout,
                    reason.unwrap_or_default()
                ),
                _ => continue,
            };
            unhealthy.push((w.id(), verdict, spec.on_unhealthy));
        }
        if unhealthy.is_empty() {
            return None;
        }
        let details: Vec<String> = unhealthy
            .iter()
            .map(|(id, why, _)| format!("{id}: {why}"))
            .collect();
        let mut err = CycleError {
            at: now,
            stage: Stage::Health,
            commit: Some(applied.revision.commit.clone()),
            message: format!(
                "{} k3s workload(s) unhealthy: {}",
                details.len(),
                details[0]
            ),
            details,
            retryable: true,
        };
        let rollback = unhealthy
            .iter()
            .any(|(_, _, p)| *p == fleetlet_core::model::OnUnhealthy::Rollback);
        let lkg = self
            .state
            .last_known_good
            .clone()
            .filter(|l| l.revision != applied.revision);
        match (rollback, lkg) {
            (true, Some(lkg)) => {
                warn!(commit = %applied.revision.commit, to = %lkg.revision.commit, error = %err.message, "unhealthy release: returning to the last-known-good");
                match self.converge(&lkg.desired, Some(&applied.desired)) {
                    Ok(_) => {
                        self.emit(AuditEvent {
                            from: Some(applied.revision.commit.clone()),
                            stage: Some(Stage::Health),
                            reason: Some(err.message.clone()),
                            ..AuditEvent::of_release(now, AuditAction::RolledBack, &lkg)
                        });
                        err.message = format!(
                            "{}; rolled back to the last-known-good {}",
                            err.message,
                            short(&lkg.revision.commit)
                        );
                        // Only a new commit is tried again.
                        err.retryable = false;
                        self.state.applied = Some(AppliedRelease {
                            applied_at: now,
                            ..lkg
                        });
                        self.state.refused = Some(err.clone());
                    }
                    Err(e) => err.details.push(format!(
                        "returning to the last-known-good failed: {}",
                        e.message
                    )),
                }
            }
            (true, None) => err
                .details
                .push("no last-known-good release to return to".into()),
            (false, _) => {}
        }
        Some(err)
    }

    /// A k3s workload's state for status (`running`, `progressing`, `failed`, `stopped`) and
    /// why: the worst of its objects as last observed.
    fn k3s_health(&self, w: &DesiredWorkload) -> (&'static str, Option<String>) {
        let Some(spec) = &w.k3s else {
            return ("notApplied", None);
        };
        if let Some(e) = &self.k3s_unavailable {
            return ("unknown", Some(e.message.clone()));
        }
        let live = self.k3s_live.get(&w.app);
        let mut worst = ("running", None);
        for o in &spec.objects {
            let Some(r) = ObjectRef::of(o) else { continue };
            // A namespaced object that names no namespace lives in `default`.
            let seen = live.and_then(|l| {
                l.get(&r).or_else(|| {
                    r.namespace.is_none().then(|| {
                        l.get(&ObjectRef {
                            namespace: Some("default".into()),
                            ..r.clone()
                        })
                    })?
                })
            });
            let (state, reason) = match seen {
                None | Some(None) => ("stopped", Some(format!("{r} is not on the cluster"))),
                Some(Some(Health::Ready)) => ("running", None),
                Some(Some(Health::Progressing { reason })) => {
                    ("progressing", Some(format!("{r}: {reason}")))
                }
                Some(Some(Health::Failed { reason })) => ("failed", Some(format!("{r}: {reason}"))),
            };
            let rank = |s: &str| match s {
                "failed" => 3,
                "stopped" => 2,
                "progressing" => 1,
                _ => 0,
            };
            if rank(state) > rank(worst.0) {
                worst = (state, reason);
            }
        }
        worst
    }

    fn save(&mut self) {
        let observed = self.runtime.observe();
        let k3s: BTreeMap<String, (&'static str, Option<String>)> = self
            .state
            .applied
            .iter()
            .flat_map(|a| a.desired.workloads.iter())
            .filter(|(_, w)| w.k3s.is_some() && self.cluster.is_some())
            .map(|(id, w)| (id.clone(), self.k3s_health(w)))
            .collect();
        self.state.workloads = self
            .state
            .applied
            .iter()
            .flat_map(|a| a.desired.workloads.iter())
            .map(|(id, w)| {
                let record = WorkloadRecord {
                    digest: w.wasm.as_ref().and_then(|s| s.component.digest),
                    health: observed
                        .get(id)
                        .filter(|o| o.hash == w.hash)
                        .map(|o| o.health),
                    k3s: k3s.get(id).map(|(state, reason)| K3sRecord {
                        state: state.to_string(),
                        reason: reason.clone(),
                    }),
                };
                (id.clone(), record)
            })
            .collect();
        if let Err(e) = self.store.save(&self.state) {
            warn!(error = %e, "could not write the state record");
        }
    }
}

/// Every store digest a release needs: component blobs and the manifests images were pinned to.
pub fn release_digests(desired: &DesiredState) -> Vec<fleetlet_core::Digest> {
    let mut out = Vec::new();
    for w in desired.workloads.values() {
        // Container images of k3s workloads, pinned in their manifests: the site's mirror
        // serves them from the store, so it keeps them.
        for image in w.container_images() {
            if let Ok(ArtifactRef::Registry(r)) = image.parse::<ArtifactRef>() {
                out.extend(r.digest);
            }
        }
        let Some(c) = w.wasm.as_ref().map(|s| &s.component) else {
            continue;
        };
        out.extend(c.digest);
        if let Some(Ok(ArtifactRef::Registry(r))) =
            c.pinned.as_deref().map(str::parse::<ArtifactRef>)
        {
            out.extend(r.digest);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A rendered release with the site's labels (policies may depend on them), or the failing
/// stage, its message and every detail.
pub type Rendered = Result<(DesiredState, BTreeMap<String, String>), (Stage, String, Vec<String>)>;

/// Load, validate and render: the pure part of a release, with errors shaped for the record.
pub fn desired_state(tree: &RepoTree, site: &str, commit: &str) -> Rendered {
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
    let labels = loaded
        .fleet
        .sites
        .get(site)
        .map(|s| s.doc.metadata.labels.clone())
        .unwrap_or_default();
    let desired = render(&loaded.fleet, tree, site, commit).map_err(|errs| {
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
    })?;
    Ok((desired, labels))
}

/// The reference a policy matches an artifact by: `registry/repository` for registries,
/// `oci-layout/PATH` for local layouts.
fn policy_ref(pinned: &str) -> Option<RegistryRef> {
    match pinned.parse::<ArtifactRef>().ok()? {
        ArtifactRef::Registry(r) => Some(r),
        ArtifactRef::Layout(l) => Some(RegistryRef {
            registry: LAYOUT_REGISTRY.into(),
            repository: l.path.trim_start_matches('/').to_string(),
            tag: l.tag,
            digest: l.digest,
        }),
    }
}

fn list_signers(signers: &[Signer]) -> String {
    signers
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `3d4h`, `25m`, `40s`: durations in messages people read.
fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
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

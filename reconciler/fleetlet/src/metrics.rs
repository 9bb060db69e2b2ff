//! Prometheus metrics of the agent: reconcile counts, durations and errors (verification
//! failures are `reconcile_errors{stage="verify"}`), workloads by state, held workloads, a
//! stale source, last successful sync.

use fleetlet_engine::{CycleOutcome, Stage, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabel, Counter>,
    errors: Family<StageLabel, Counter>,
    duration: Histogram,
    workloads: Family<StateLabel, Gauge>,
    last_sync: Gauge<f64, AtomicU64>,
    held: Gauge,
    stale: Gauge,
    drift_detected: Gauge,
    drift_corrected: Gauge,
    bundle_imports: Family<OutcomeLabel, Counter>,
    audit_entries: Gauge,
    audit_checkpointed: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetlet");
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        let errors = Family::<StageLabel, Counter>::default();
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        let workloads = Family::<StateLabel, Gauge>::default();
        let last_sync = Gauge::<f64, AtomicU64>::default();
        let held = Gauge::default();
        let drift_detected = Gauge::default();
        let drift_corrected = Gauge::default();
        let bundle_imports = Family::<OutcomeLabel, Counter>::default();
        let audit_entries = Gauge::default();
        let audit_checkpointed = Gauge::default();
        // Scraped off the site, these witness the log's length: a log cut back later shows as
        // a number that went down.
        registry.register(
            "audit_entries",
            "Entries in the site's audit log",
            audit_entries.clone(),
        );
        registry.register(
            "audit_checkpointed_entries",
            "Entries covered by the last checkpoint signed with the site key",
            audit_checkpointed.clone(),
        );
        registry.register(
            "bundle_imports",
            "Sync bundles taken from the inbox, by outcome (imported, rejected, incomplete)",
            bundle_imports.clone(),
        );
        registry.register(
            "k3s_drift_detected",
            "Changes found on the cluster to k3s objects fleetlet applied (since the state began)",
            drift_detected.clone(),
        );
        registry.register(
            "k3s_drift_corrected",
            "Of those, changes fleetlet undid",
            drift_corrected.clone(),
        );
        let stale = Gauge::default();
        registry.register(
            "held_workloads",
            "Workloads of the applied commit held back because their artifact failed verification",
            held.clone(),
        );
        registry.register(
            "source_stale",
            "1 while the source has not advanced for longer than the trust policy's maxAge",
            stale.clone(),
        );
        registry.register(
            "reconciles",
            "Reconcile cycles by outcome",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconcile cycles by the step that failed",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile cycles",
            duration.clone(),
        );
        registry.register(
            "workloads",
            "Workloads of the applied release by state",
            workloads.clone(),
        );
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "When the fleet repo source last answered (Unix time)",
            last_sync.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            workloads,
            last_sync,
            held,
            stale,
            drift_detected,
            drift_corrected,
            bundle_imports,
            audit_entries,
            audit_checkpointed,
        }
    }

    /// The audit log's length and how much of it the last checkpoint signed.
    pub fn set_audit(&self, entries: u64, checkpointed: u64) {
        self.audit_entries.set(entries as i64);
        self.audit_checkpointed.set(checkpointed as i64);
    }

    /// One sync bundle taken from the inbox.
    pub fn record_import(&self, outcome: &str) {
        self.bundle_imports
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn record(&self, outcome: &CycleOutcome, seconds: f64, status: &Status) {
        let (name, stage) = match outcome {
            CycleOutcome::Unchanged => ("unchanged", None),
            CycleOutcome::Applied { .. } => ("applied", None),
            CycleOutcome::Rejected { stage, .. } => ("rejected", Some(*stage)),
            CycleOutcome::SourceUnavailable => ("source_unavailable", Some(Stage::Source)),
        };
        self.reconciles
            .get_or_create(&OutcomeLabel {
                outcome: name.into(),
            })
            .inc();
        if let Some(stage) = stage {
            let stage = serde_json::to_value(stage)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            self.errors.get_or_create(&StageLabel { stage }).inc();
        }
        self.duration.observe(seconds);
        self.set_status(status);
    }

    pub fn set_status(&self, status: &Status) {
        self.workloads.clear();
        for state in fleetlet_engine::status::WORKLOAD_STATES {
            let n = status.workloads.iter().filter(|w| w.state == state).count();
            self.workloads
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n as i64);
        }
        self.held
            .set(status.workloads.iter().filter(|w| w.held.is_some()).count() as i64);
        self.stale.set(i64::from(status.stale_source.is_some()));
        let drift = status.workloads.iter().filter_map(|w| w.drift.as_ref());
        let (found, undone) = drift.fold((0, 0), |(f, u), d| (f + d.detected, u + d.corrected));
        self.drift_detected.set(found as i64);
        self.drift_corrected.set(undone as i64);
        if let Some(t) = status.last_sync {
            self.last_sync.set(t as f64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

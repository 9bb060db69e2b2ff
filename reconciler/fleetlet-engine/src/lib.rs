//! The reconcile engine: runs the cycle observe → render → plan → (verify) → apply → record through
//! the ports in [`ports`]. It owns the order of the steps and the last-known-good rule; it knows
//! no adapter by name.

pub mod artifacts;
pub mod audit;
pub mod cluster;
pub mod engine;
pub mod k3s;
pub mod ports;
pub mod preflight;
pub mod record;
pub mod registry;
pub mod status;
pub mod trust;

pub use audit::{AuditAction, AuditArtifact, AuditEvent, AuditWorkload};
pub use engine::{CycleOutcome, Engine};
pub use record::{AgentState, AppliedRelease, CycleError, Stage, WorkloadRecord};
pub use status::{Status, WorkloadStatus};

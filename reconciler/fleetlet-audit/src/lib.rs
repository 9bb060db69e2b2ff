//! The audit step of the cycle's record stage: a tamper-evident log of what a site ran, when,
//! and who signed it. Every reconcile outcome becomes an entry of a sha256 hash chain, stored
//! in the agent's state store and mirrored as JSON Lines; the agent signs the chain head with
//! its site key from time to time and at shutdown, so entries cannot be forged later even by
//! someone able to edit the store.
//!
//! [`record`] is the documented format; [`log`] writes it; [`verify`] checks it.

pub mod log;
pub mod record;
pub mod verify;

pub use log::{AuditError, AuditLog, Journal, MemJournal};
pub use record::{Action, Artifact, Checkpoint, Entry, Event, Line, Signer, Workload};
pub use verify::{Problem, Verified, verify, verify_with};

//! The audit step of the cycle's record stage: a tamper-evident log of what a site ran, when,
//! and who signed it. Every reconcile outcome becomes an entry of a sha256 hash chain, stored
//! in the agent's state store and mirrored as JSON Lines; the agent signs the chain head with
//! its site key from time to time and at shutdown, so entries cannot be forged later even by
//! someone able to edit the store.
//!
//! [`record`] is the documented format; [`log`] writes it; [`verify`] checks it. [`export`]
//! carries a site's log away, signed with its site key; [`sitekeys`] is the fleet's list of
//! those keys; [`report`] answers, from many exports, which sites ran a release, and
//! [`render`] shows the answer.

pub mod export;
pub mod log;
mod rawcanon;
pub mod record;
pub mod render;
pub mod report;
pub mod sitekeys;
pub mod verify;

pub use export::{ExportError, ExportSummary, OpenedExport, export, open_export, open_export_with};
pub use log::{AuditError, AuditLog, Journal, MemJournal};
pub use record::{Action, Artifact, Checkpoint, Entry, Event, Line, Signer, VERSION, Workload};
pub use report::{Report, ReportProblem, Run, RunEnd, SiteReport, SiteStatus, report};
pub use sitekeys::{SiteKeys, SiteKeysError, site_key_line};
pub use verify::{Problem, Verified, verify, verify_with};

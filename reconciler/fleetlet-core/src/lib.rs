//! The pure core of fleetlet: what a fleet repo says, whether it is valid, what one site must run
//! (`render`) and what to do about it (`plan`).
//!
//! Architecture invariant: nothing in this crate does I/O, reads a clock or spawns a thread. Inputs
//! arrive as bytes ([`RepoTree`]), outputs are plain values; the engine and adapters do the rest.

pub mod digest;
pub mod hostpattern;
pub mod k8s;
pub mod lines;
pub mod load;
pub mod model;
pub mod plan;
pub mod reference;
pub mod render;
pub mod selector;
pub mod tree;
pub mod units;

pub use digest::Digest;
pub use load::{Diagnostic, Fleet, Severity, load_fleet};
pub use model::{App, Runtime, Site, SiteName};
pub use plan::{Action, ObservedWorkload, Plan, WorkloadHealth, plan};
pub use render::{DesiredState, DesiredWorkload, RenderError, render};
pub use tree::RepoTree;

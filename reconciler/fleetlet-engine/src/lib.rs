//! The reconcile engine (work in progress).
pub mod ports;

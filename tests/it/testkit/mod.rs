//! Test harness: temporary Git repos and servers, guest components, the agent binary.

pub mod components;
pub mod git;

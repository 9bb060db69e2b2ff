//! Test harness: temporary Git repos and servers, guest components, the agent binary.

pub mod agent;
pub mod components;
pub mod git;
pub mod registry;
pub mod signing;

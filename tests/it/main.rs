//! fleetlet's integration tests: real Git servers, real Wasm components, the real agent binary.

mod testkit;

mod agent;
mod artifacts;
mod audit;
mod bundle;
mod bundle_corpus;
mod cli;
mod git;
mod k3s;
mod mirror;
mod oci;
mod state;
mod store;
mod trust;
mod trust_agent;
mod wasm;

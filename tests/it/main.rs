//! fleetlet's integration tests: real Git servers, real Wasm components, the real agent binary.

mod testkit;

mod git;
mod wasm;

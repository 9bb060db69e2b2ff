//! The agent's state record in `sled` (the "record" step of the cycle). Artifacts live in the
//! artifact store (`fleetlet-store`).

pub mod sled_store;

pub use sled_store::SledStateStore;

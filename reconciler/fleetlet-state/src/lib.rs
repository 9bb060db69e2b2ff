//! The agent's state record in `sled` (the "record" step of the cycle), and the durable journal
//! of its audit log beside it. Artifacts live in the artifact store (`fleetlet-store`).

pub mod sled_store;

pub use sled_store::{SledJournal, SledStateStore};

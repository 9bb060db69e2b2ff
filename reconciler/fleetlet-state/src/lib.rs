//! The agent's local state under its state dir: the state record in `sled` (the "record" step of
//! the cycle) and a content-addressed blob store for components (so a restart needs no network).

pub mod blobs;
pub mod sled_store;

pub use blobs::FsBlobStore;
pub use sled_store::SledStateStore;

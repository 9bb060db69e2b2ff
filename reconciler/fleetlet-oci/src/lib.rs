//! fleetlet's OCI registry adapter: the step of the reconcile cycle that fetches artifacts —
//! after render has pinned every workload's artifact to a digest, before the store verifies
//! each blob's digest and commits it — and the publishing side used by `fleetlet push`.
//!
//! [`OciRegistry`] implements the engine's [`Registry`](fleetlet_engine::registry::Registry)
//! port: manifests and indexes (OCI and Docker v2) with their exact bytes, blobs streamed into
//! the store's sink with a size cut-off, anonymous/basic/bearer auth with credentials from a
//! Docker `config.json`, per-registry CAs, plain HTTP for insecure and loopback registries,
//! mirrors, and retries with backoff and jitter on transient failures.
//! [`wasm_artifact`] lays a Wasm component out as an OCI artifact (CNCF Wasm OCI layout).

mod client;
mod config;
mod wasm;

pub use client::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MANIFEST_MEDIA_TYPES, OCI_INDEX, OCI_MANIFEST,
    OciRegistry,
};
pub use config::{
    ConfigError, DEFAULT_BACKOFF, DEFAULT_MAX_RETRY_AFTER, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
    HostConfig, RegistryConfig,
};
pub use wasm::{
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, WASM_MANIFEST_MEDIA_TYPE, WasmArtifact,
    WasmArtifactError, wasm_artifact,
};

//! Wasm components as OCI artifacts, the form in which they travel to sites and are fetched in
//! the reconcile cycle like any image (then verified and stored by digest). `fleetlet push`
//! builds the artifact here and uploads it with the adapter.
//!
//! Layout per the CNCF TAG Runtime "Wasm OCI Artifact layout": an OCI image manifest whose
//! config has media type `application/vnd.wasm.config.v0+json` and whose single layer is the
//! component, `application/wasm`. The artifact type is the config media type (no top-level
//! `artifactType`, which the guidance leaves optional when the config type is set, and which
//! older registries and tools may not understand).
//!
//! Everything is deterministic: the same component always gives the same config and manifest
//! bytes, hence the same digest — pushing a component twice publishes the same artifact, and a
//! release can pin it. That is why the config has no `created` time.

use fleetlet_core::Digest;
use fleetlet_engine::registry::Descriptor;
use serde::Serialize;

pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
pub use crate::client::OCI_MANIFEST as WASM_MANIFEST_MEDIA_TYPE;

/// A Wasm artifact ready to push: upload `layer` (the component bytes) and `config` as blobs,
/// then `manifest` with `manifest_media_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmArtifact {
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub layer_descriptor: Descriptor,
    pub manifest: Vec<u8>,
    pub manifest_media_type: &'static str,
    /// The digest of `manifest`: what a release pins.
    pub manifest_digest: Digest,
}

#[derive(Debug, thiserror::Error)]
#[error("not a WebAssembly component or module: {0}")]
pub struct WasmArtifactError(String);

/// The config blob (`application/vnd.wasm.config.v0+json`); field order is the serialisation
/// order, so the bytes are stable.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig {
    architecture: &'static str,
    /// `wasip2` for components, `wasip1` for core modules (the spec's values).
    os: &'static str,
    layer_digests: Vec<String>,
    /// Required by the spec for `wasip2`: the component's top-level imports and exports.
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<ComponentInfo>,
}

#[derive(Serialize)]
struct ComponentInfo {
    exports: Vec<String>,
    imports: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u8,
    media_type: &'a str,
    config: &'a Descriptor,
    layers: [&'a Descriptor; 1],
}

/// Builds the artifact for `wasm` (a component, or a core module).
pub fn wasm_artifact(wasm: &[u8]) -> Result<WasmArtifact, WasmArtifactError> {
    let component = inspect(wasm)?;
    let layer_descriptor = Descriptor {
        media_type: WASM_LAYER_MEDIA_TYPE.to_string(),
        digest: Digest::of(wasm),
        size: wasm.len() as u64,
    };
    let config = WasmConfig {
        architecture: "wasm",
        os: if component.is_some() {
            "wasip2"
        } else {
            "wasip1"
        },
        layer_digests: vec![layer_descriptor.digest.to_string()],
        component,
    };
    let config = serde_json::to_vec(&config)
        .map_err(|e| WasmArtifactError(format!("serialising the config: {e}")))?;
    let config_descriptor = Descriptor {
        media_type: WASM_CONFIG_MEDIA_TYPE.to_string(),
        digest: Digest::of(&config),
        size: config.len() as u64,
    };
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: WASM_MANIFEST_MEDIA_TYPE,
        config: &config_descriptor,
        layers: [&layer_descriptor],
    })
    .map_err(|e| WasmArtifactError(format!("serialising the manifest: {e}")))?;
    Ok(WasmArtifact {
        manifest_digest: Digest::of(&manifest),
        config,
        config_descriptor,
        layer_descriptor,
        manifest,
        manifest_media_type: WASM_MANIFEST_MEDIA_TYPE,
    })
}

/// `Some` with the top-level imports and exports for a component, `None` for a core module.
fn inspect(wasm: &[u8]) -> Result<Option<ComponentInfo>, WasmArtifactError> {
    let mut depth = 0usize;
    let mut is_component = false;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| WasmArtifactError(e.to_string()))?;
        match payload {
            wasmparser::Payload::Version { encoding, .. } => {
                if depth == 0 {
                    is_component = encoding == wasmparser::Encoding::Component;
                }
                depth += 1;
            }
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            // Nested components and modules have their own imports; only the outer ones are
            // what a host must provide and can call.
            wasmparser::Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(
                        import
                            .map_err(|e| WasmArtifactError(e.to_string()))?
                            .name
                            .name
                            .to_string(),
                    );
                }
            }
            wasmparser::Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(
                        export
                            .map_err(|e| WasmArtifactError(e.to_string()))?
                            .name
                            .name
                            .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(WasmArtifactError("truncated".into()));
    }
    if !is_component {
        return Ok(None);
    }
    // Sorted: the order of sections is an accident of the toolchain, not part of the meaning.
    imports.sort();
    imports.dedup();
    exports.sort();
    exports.dedup();
    Ok(Some(ComponentInfo { exports, imports }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the preamble only.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

    #[test]
    fn artifact_is_deterministic_and_well_formed() {
        let a = wasm_artifact(EMPTY_COMPONENT).expect("artifact");
        let b = wasm_artifact(EMPTY_COMPONENT).expect("artifact");
        assert_eq!(a, b);
        let config: serde_json::Value = serde_json::from_slice(&a.config).expect("config json");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip2");
        assert_eq!(
            config["layerDigests"][0],
            Digest::of(EMPTY_COMPONENT).to_string()
        );
        assert_eq!(config["component"]["exports"], serde_json::json!([]));
        let manifest: serde_json::Value =
            serde_json::from_slice(&a.manifest).expect("manifest json");
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], WASM_MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(
            manifest["config"]["digest"],
            Digest::of(&a.config).to_string()
        );
        assert_eq!(manifest["config"]["size"], a.config.len());
        assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["size"], EMPTY_COMPONENT.len());
        assert_eq!(a.manifest_digest, Digest::of(&a.manifest));
    }

    #[test]
    fn core_modules_are_wasip1_and_junk_is_refused() {
        let m = wasm_artifact(EMPTY_MODULE).expect("artifact");
        let config: serde_json::Value = serde_json::from_slice(&m.config).expect("config json");
        assert_eq!(config["os"], "wasip1");
        assert!(config.get("component").is_none());
        assert!(wasm_artifact(b"#!/bin/sh\necho hi\n").is_err());
        assert!(wasm_artifact(&EMPTY_COMPONENT[..6]).is_err());
    }
}

//! `fleetlet push` and `fleetlet pull`: publishing a Wasm component as a CNCF Wasm OCI artifact,
//! and filling the site's artifact store by hand — the same pull step the agent runs.

use crate::config::{AgentConfig, RegistriesConfig};
use crate::{Output, print_value};
use anyhow::{Context, bail};
use fleetlet_core::reference::ArtifactRef;
use fleetlet_engine::artifacts::{Platform, pull};
use fleetlet_engine::registry::{Descriptor, Registry};
use fleetlet_oci::{OciRegistry, wasm_artifact};
use fleetlet_store::OciStore;
use std::path::{Path, PathBuf};

pub fn registries(config: Option<&Path>) -> anyhow::Result<RegistriesConfig> {
    Ok(match config {
        Some(c) => AgentConfig::load(c)?.registries,
        None => RegistriesConfig::default(),
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn push(
    file: &Path,
    reference: &str,
    config: Option<&Path>,
    output: Output,
) -> anyhow::Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let artifact =
        wasm_artifact(&bytes).with_context(|| format!("packaging {}", file.display()))?;
    let pinned = match reference.parse::<ArtifactRef>()? {
        ArtifactRef::Registry(r) => {
            let rt = runtime()?;
            let registry = OciRegistry::new(registries(config)?.to_adapter(), rt.handle().clone())?;
            registry.push_blob(&r, &artifact.config_descriptor.digest, &artifact.config)?;
            registry.push_blob(&r, &artifact.layer_descriptor.digest, &bytes)?;
            let digest =
                registry.push_manifest(&r, &artifact.manifest, artifact.manifest_media_type)?;
            if digest != artifact.manifest_digest {
                bail!(
                    "{r}: the registry stored the manifest as {digest}, expected {}",
                    artifact.manifest_digest
                );
            }
            r.pinned(digest).to_string()
        }
        ArtifactRef::Layout(l) => {
            let Some(tag) = &l.tag else {
                bail!("{reference}: name a tag to push into a layout (oci:PATH:TAG)");
            };
            let store = OciStore::open(Path::new(&l.path))
                .with_context(|| format!("opening OCI layout {}", l.path))?;
            store.put(&artifact.config)?;
            store.put(&bytes)?;
            let digest = store.put(&artifact.manifest)?;
            store.set_ref(
                tag,
                &Descriptor {
                    media_type: artifact.manifest_media_type.to_string(),
                    digest,
                    size: artifact.manifest.len() as u64,
                },
            )?;
            format!("oci:{}:{tag}@{digest}", l.path)
        }
    };
    match output {
        Output::Text => println!("{pinned}"),
        o => print_value(
            &serde_json::json!({"reference": pinned, "digest": artifact.manifest_digest, "component": artifact.layer_descriptor.digest}),
            o,
        )?,
    }
    Ok(true)
}

pub fn pull_cmd(
    reference: &str,
    state_dir: PathBuf,
    config: Option<&Path>,
    platform: Option<&str>,
    output: Output,
) -> anyhow::Result<bool> {
    let ArtifactRef::Registry(r) = reference.parse::<ArtifactRef>()? else {
        bail!("{reference}: pull takes a registry reference");
    };
    let platform = match platform {
        Some(p) => Platform::parse(p)
            .with_context(|| format!("platform {p:?}: expected os/arch[/variant]"))?,
        None => Platform::host(),
    };
    let rt = runtime()?;
    let registry = OciRegistry::new(registries(config)?.to_adapter(), rt.handle().clone())?;
    let root = state_dir.join("oci");
    let store = OciStore::open(&root)
        .with_context(|| format!("opening the artifact store {}", root.display()))?;
    let progress = crate::progress::ProgressStore::new(&store, &format!("pulling {r}"));
    let pulled = pull(&registry, &progress, &r, &platform);
    progress.finish();
    let pulled = pulled.with_context(|| format!("pulling {r}"))?;
    let bytes: u64 = pulled.fetched.iter().map(|d| d.size).sum();
    match output {
        Output::Text => {
            println!("{}", pulled.resolved.pinned);
            println!(
                "fetched {} blob(s), {bytes} bytes; {} already in the store",
                pulled.fetched.len(),
                pulled.resolved.layers.len() + 1
                    - pulled.fetched.len().min(pulled.resolved.layers.len() + 1)
            );
        }
        o => print_value(
            &serde_json::json!({"reference": pulled.resolved.pinned.to_string(), "manifest": pulled.resolved.manifest, "fetched": pulled.fetched, "fetchedBytes": bytes}),
            o,
        )?,
    }
    Ok(true)
}

/// Pins the image components of a rendered state to the digests their tags resolve to now (what
/// a release made at this moment would run). Only manifests are fetched. An image that cannot be
/// resolved stays as written, with a warning.
pub fn pin_images(
    desired: &mut fleetlet_core::DesiredState,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let images: Vec<String> = desired
        .workloads
        .values()
        .filter_map(|w| w.wasm.as_ref()?.component.image.clone())
        .collect();
    if images.is_empty() {
        return Ok(());
    }
    let rt = runtime()?;
    let registry = OciRegistry::new(registries(config)?.to_adapter(), rt.handle().clone())?;
    for w in desired.workloads.values_mut() {
        let Some(image) = w.wasm.as_ref().and_then(|s| s.component.image.clone()) else {
            continue;
        };
        let Ok(ArtifactRef::Registry(r)) = image.parse::<ArtifactRef>() else {
            continue;
        };
        match fleetlet_engine::artifacts::resolve(&registry, &r, &Platform::host()) {
            Ok(resolved) => {
                match fleetlet_engine::artifacts::wasm_layer(&resolved.config, &resolved.layers) {
                    Some(layer) => {
                        w.pin_component(resolved.pinned.to_string(), layer.digest, layer.size)
                    }
                    None => eprintln!(
                        "warning: {image} is not a Wasm component artifact; left unpinned"
                    ),
                }
            }
            Err(e) => eprintln!("warning: cannot pin {image}: {e}; shown as written"),
        }
    }
    desired.rehash();
    Ok(())
}

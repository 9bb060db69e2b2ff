//! The pull step: resolve a reference, pick the manifest for this site's platform, and bring every
//! blob it needs into the artifact store — only those the store lacks. Moves bytes from the
//! `Registry` port to the `ArtifactStore` port; neither adapter knows the other.

use crate::registry::{ArtifactStore, Descriptor, FetchedManifest, Registry, RegistryError};
use fleetlet_core::reference::RegistryRef;
use serde::Deserialize;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";

/// Layers downloaded at once.
const PARALLEL_BLOBS: usize = 4;

/// `os/architecture[/variant]`, as OCI indexes name platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this agent runs on (edge hardware: amd64, arm64, arm/v7).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7".to_string())),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant,
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?.to_string();
        let architecture = parts.next().filter(|p| !p.is_empty())?.to_string();
        let variant = parts.next().map(String::from);
        parts.next().is_none().then_some(Platform {
            os,
            architecture,
            variant,
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: storing {digest}: {message}")]
    Store {
        reference: String,
        digest: String,
        message: String,
    },
    #[error("{reference}: {message}")]
    Manifest { reference: String, message: String },
}

impl PullError {
    pub fn is_transient(&self) -> bool {
        match self {
            // A tag pushed after the commit that names it, or credentials fixed on the site,
            // make the same release pass later: only an invalid answer is final.
            PullError::Registry(e) => !matches!(e, RegistryError::Invalid { .. }),
            PullError::Store { .. } => true,
            PullError::Manifest { .. } => false,
        }
    }
}

/// What a pull brought into the store: what the reference resolved to, and which of its blobs
/// had to be downloaded (the rest were in the store already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub resolved: Resolved,
    pub fetched: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<WirePlatform>,
}

#[derive(Deserialize)]
struct WirePlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDoc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<WireDescriptor>>,
    #[serde(default)]
    config: Option<WireDescriptor>,
    #[serde(default)]
    layers: Option<Vec<WireDescriptor>>,
}

fn descriptor(reference: &str, d: &WireDescriptor) -> Result<Descriptor, PullError> {
    Ok(Descriptor {
        media_type: d.media_type.clone(),
        digest: d
            .digest
            .parse()
            .map_err(
                |e: fleetlet_core::digest::DigestParseError| PullError::Manifest {
                    reference: reference.to_string(),
                    message: e.to_string(),
                },
            )?,
        size: d.size,
    })
}

fn is_index(media_type: &str, doc: &WireDoc) -> bool {
    media_type == OCI_INDEX
        || media_type == DOCKER_LIST
        || (doc.manifests.is_some() && doc.config.is_none())
}

/// What a reference resolves to for a platform, from manifests alone (no blob moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The reference pinned to the digest it resolved to (the index's, when it named one).
    pub pinned: RegistryRef,
    pub index: Option<Descriptor>,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The manifest documents fetched, exactly as fetched (index first).
    pub documents: Vec<FetchedManifest>,
}

/// Resolves `reference` for `platform`: fetches the manifest (and, for an index, the
/// platform's manifest) and reads its config and layers. Moves no blob.
pub fn resolve<R>(
    registry: &R,
    reference: &RegistryRef,
    platform: &Platform,
) -> Result<Resolved, PullError>
where
    R: Registry + ?Sized,
{
    let name = reference.to_string();
    let bad = |message: String| PullError::Manifest {
        reference: name.clone(),
        message,
    };
    let top = registry.fetch_manifest(reference)?;
    let doc: WireDoc = serde_json::from_slice(&top.bytes)
        .map_err(|e| bad(format!("manifest is not valid JSON: {e}")))?;
    let media_type = doc
        .media_type
        .clone()
        .unwrap_or_else(|| top.media_type.clone());
    let top_desc = Descriptor {
        media_type: media_type.clone(),
        digest: top.digest,
        size: top.bytes.len() as u64,
    };
    let mut documents = vec![top];

    let (index, manifest, doc) = if is_index(&media_type, &doc) {
        let entries = doc.manifests.unwrap_or_default();
        let chosen = select_platform(&entries, platform).ok_or_else(|| {
            let offered: Vec<String> = entries
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| {
                    format!(
                        "{}/{}{}",
                        p.os,
                        p.architecture,
                        p.variant
                            .as_ref()
                            .map(|v| format!("/{v}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            bad(format!(
                "the index has no manifest for {platform} (it has: {})",
                offered.join(", ")
            ))
        })?;
        let child_desc = descriptor(&name, chosen)?;
        let child = registry.fetch_manifest(&reference.pinned(child_desc.digest))?;
        if child.digest != child_desc.digest {
            return Err(bad(format!(
                "manifest {} has digest {}",
                child_desc.digest, child.digest
            )));
        }
        let child_doc: WireDoc = serde_json::from_slice(&child.bytes)
            .map_err(|e| bad(format!("manifest is not valid JSON: {e}")))?;
        documents.push(child);
        (Some(top_desc), child_desc, child_doc)
    } else {
        (None, top_desc, doc)
    };

    let config = descriptor(
        &name,
        doc.config
            .as_ref()
            .ok_or_else(|| bad("manifest has no config".into()))?,
    )?;
    let layers = doc
        .layers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|l| descriptor(&name, l))
        .collect::<Result<Vec<_>, _>>()?;
    let pinned = reference.pinned(index.as_ref().map(|i| i.digest).unwrap_or(manifest.digest));
    Ok(Resolved {
        pinned,
        index,
        manifest,
        config,
        layers,
        documents,
    })
}

/// Pulls `reference` for `platform` into `store`: resolves it, keeps its manifests, downloads
/// the blobs the store lacks, and names it in the store's index — only once all of it is in.
pub fn pull<R, S>(
    registry: &R,
    store: &S,
    reference: &RegistryRef,
    platform: &Platform,
) -> Result<Pulled, PullError>
where
    R: Registry + Sync + ?Sized,
    S: ArtifactStore + Sync + ?Sized,
{
    let name = reference.to_string();
    let resolved = resolve(registry, reference, platform)?;
    for d in &resolved.documents {
        keep(store, &name, d)?;
    }
    let mut wanted: Vec<Descriptor> = std::iter::once(resolved.config.clone())
        .chain(resolved.layers.iter().cloned())
        .collect();
    wanted.dedup_by_key(|d| d.digest);
    wanted.retain(|d| !store.contains(&d.digest));
    let fetched = wanted.clone();
    fetch_all(registry, store, reference, wanted)?;

    let top = resolved.index.as_ref().unwrap_or(&resolved.manifest);
    store
        .tag(&resolved.pinned.to_string(), top)
        .map_err(|e| PullError::Store {
            reference: name.clone(),
            digest: top.digest.to_string(),
            message: e.to_string(),
        })?;
    Ok(Pulled { resolved, fetched })
}

/// Stores manifest bytes exactly as fetched (their digest is over these bytes).
fn keep<S: ArtifactStore + ?Sized>(
    store: &S,
    name: &str,
    m: &FetchedManifest,
) -> Result<(), PullError> {
    store.put(&m.bytes).map(drop).map_err(|e| PullError::Store {
        reference: name.to_string(),
        digest: m.digest.to_string(),
        message: e.to_string(),
    })
}

fn select_platform<'a>(
    entries: &'a [WireDescriptor],
    want: &Platform,
) -> Option<&'a WireDescriptor> {
    let matches = |e: &&WireDescriptor, strict_variant: bool| {
        e.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && (!strict_variant
                    || p.variant == want.variant
                    || (p.variant.is_none() && want.variant.is_none()))
        })
    };
    // Exact variant first (arm/v7), then any variant of the architecture.
    entries
        .iter()
        .find(|e| matches(e, true))
        .or_else(|| entries.iter().find(|e| matches(e, false)))
}

/// Downloads blobs, a few at a time; the first error wins and nothing partial stays visible.
fn fetch_all<R, S>(
    registry: &R,
    store: &S,
    reference: &RegistryRef,
    wanted: Vec<Descriptor>,
) -> Result<(), PullError>
where
    R: Registry + Sync + ?Sized,
    S: ArtifactStore + Sync + ?Sized,
{
    let queue = std::sync::Mutex::new(wanted);
    let first_error: std::sync::Mutex<Option<PullError>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_BLOBS {
            scope.spawn(|| {
                loop {
                    if first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_some()
                    {
                        return;
                    }
                    let Some(d) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                        return;
                    };
                    if let Err(e) = fetch_one(registry, store, reference, &d) {
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn fetch_one<R, S>(
    registry: &R,
    store: &S,
    reference: &RegistryRef,
    d: &Descriptor,
) -> Result<(), PullError>
where
    R: Registry + ?Sized,
    S: ArtifactStore + ?Sized,
{
    let store_err = |e: crate::ports::StoreError| PullError::Store {
        reference: reference.to_string(),
        digest: d.digest.to_string(),
        message: e.to_string(),
    };
    let Some(mut upload) = store.begin(&d.digest, d.size).map_err(store_err)? else {
        return Ok(());
    };
    registry.fetch_blob(reference, d, upload.as_mut())?;
    upload.commit().map_err(store_err)?;
    Ok(())
}

/// The component of a Wasm artifact: its single `application/wasm` layer.
pub fn wasm_layer<'a>(config: &Descriptor, layers: &'a [Descriptor]) -> Option<&'a Descriptor> {
    match layers {
        [only] if only.media_type == WASM_LAYER || config.media_type == WASM_CONFIG => Some(only),
        _ => layers.iter().find(|l| l.media_type == WASM_LAYER),
    }
}

/// Most layers a signature manifest may have: cosign appends one per signature.
pub const MAX_SIGNATURE_LAYERS: usize = 64;
/// Largest signature payload, certificate or bundle blob accepted.
pub const MAX_SIGNATURE_BLOB: u64 = 1 << 20;
/// Most referrers of one artifact looked at.
const MAX_REFERRERS: usize = 64;
/// Artifact types of sigstore bundles attached as referrers.
pub const SIGSTORE_BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReferrer {
    digest: String,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    media_type: Option<String>,
}

#[derive(Deserialize)]
struct WireReferrers {
    #[serde(default)]
    manifests: Vec<WireReferrer>,
}

/// Brings the signature material of `subject` (pinned by digest) into the store: cosign's
/// `sha256-<hex>.sig` manifest and every sigstore bundle attached as a referrer (the referrers
/// API, or its tag-schema fallback). Returns the digests of the signature manifests found; none
/// found is not an error here (the verifier decides). Oversized material is refused before any
/// of it is downloaded.
pub fn fetch_signatures<R, S>(
    registry: &R,
    store: &S,
    subject: &RegistryRef,
) -> Result<Vec<fleetlet_core::Digest>, PullError>
where
    R: Registry + Sync + ?Sized,
    S: ArtifactStore + Sync + ?Sized,
{
    let digest = subject.digest.ok_or_else(|| PullError::Manifest {
        reference: subject.to_string(),
        message: "signatures are looked up for pinned references only".into(),
    })?;
    let mut found = Vec::new();
    let sig_ref = RegistryRef {
        tag: Some(crate::trust::cosign_signature_tag(&digest)),
        digest: None,
        ..subject.clone()
    };
    if let Some(d) = fetch_signature_manifest(registry, store, &sig_ref)? {
        found.push(d);
    }
    let referrers = match registry.referrers(subject) {
        Ok(r) => r,
        Err(RegistryError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(index) = referrers {
        let list: WireReferrers =
            serde_json::from_slice(&index.bytes).map_err(|e| PullError::Manifest {
                reference: subject.to_string(),
                message: format!("referrers index is not valid JSON: {e}"),
            })?;
        let bundles = list.manifests.iter().filter(|m| {
            m.artifact_type
                .as_deref()
                .or(m.media_type.as_deref())
                .is_some_and(|t| t.starts_with(SIGSTORE_BUNDLE_PREFIX))
        });
        for m in bundles.take(MAX_REFERRERS) {
            let d: fleetlet_core::Digest =
                m.digest
                    .parse()
                    .map_err(
                        |e: fleetlet_core::digest::DigestParseError| PullError::Manifest {
                            reference: subject.to_string(),
                            message: format!("referrer {}: {e}", m.digest),
                        },
                    )?;
            if let Some(d) = fetch_signature_manifest(registry, store, &subject.pinned(d))? {
                found.push(d);
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// One signature manifest into the store, after checking its size limits; `None` when the
/// registry has no such manifest.
fn fetch_signature_manifest<R, S>(
    registry: &R,
    store: &S,
    reference: &RegistryRef,
) -> Result<Option<fleetlet_core::Digest>, PullError>
where
    R: Registry + Sync + ?Sized,
    S: ArtifactStore + Sync + ?Sized,
{
    let resolved = match resolve(registry, reference, &Platform::host()) {
        Ok(r) => r,
        Err(PullError::Registry(RegistryError::NotFound { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |message: String| PullError::Manifest {
        reference: reference.to_string(),
        message,
    };
    if resolved.index.is_some() {
        return Err(bad("a signature must be a manifest, not an index".into()));
    }
    if resolved.layers.len() > MAX_SIGNATURE_LAYERS {
        return Err(bad(format!(
            "signature manifest has {} layers (at most {MAX_SIGNATURE_LAYERS})",
            resolved.layers.len()
        )));
    }
    if let Some(big) = std::iter::once(&resolved.config)
        .chain(&resolved.layers)
        .find(|d| d.size > MAX_SIGNATURE_BLOB)
    {
        return Err(bad(format!(
            "signature blob {} is {} bytes (at most {MAX_SIGNATURE_BLOB})",
            big.digest, big.size
        )));
    }
    let pulled = pull(registry, store, reference, &Platform::host())?;
    Ok(Some(pulled.resolved.manifest.digest))
}

/// Reads signature manifests and their blobs back from the store (offline re-verification).
pub fn load_signature_manifests<S>(
    store: &S,
    digests: &[fleetlet_core::Digest],
) -> Result<Vec<crate::trust::SignatureManifest>, String>
where
    S: ArtifactStore + ?Sized,
{
    let get = |d: &fleetlet_core::Digest| -> Result<Vec<u8>, String> {
        store
            .get(d)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("signature material {d} is not in the local store"))
    };
    let mut out = Vec::new();
    for digest in digests {
        let bytes = get(digest)?;
        let doc: WireDoc = serde_json::from_slice(&bytes)
            .map_err(|e| format!("signature manifest {digest} is not valid JSON: {e}"))?;
        let mut blobs = std::collections::BTreeMap::new();
        for d in doc.config.iter().chain(doc.layers.iter().flatten()) {
            if d.size > MAX_SIGNATURE_BLOB {
                continue;
            }
            let Ok(blob_digest) = d.digest.parse::<fleetlet_core::Digest>() else {
                continue;
            };
            // An absent blob is left out: the verifier reports the layer it cannot read.
            if let Ok(Some(b)) = store.get(&blob_digest) {
                blobs.insert(blob_digest, b);
            }
        }
        out.push(crate::trust::SignatureManifest {
            digest: *digest,
            bytes,
            blobs,
        });
    }
    Ok(out)
}

//! The site's own artifact store as a read-only registry: what the pull step (or an imported
//! sync bundle) put there answers `fetch_manifest` and `fetch_blob` with no network at all.
//! Behind the engine's `FallbackRegistry`, it lets an air-gapped site — or one whose uplink is
//! down — apply a release whose artifacts are already in the store.
//!
//! By digest, a manifest is whatever blob the store holds under that digest (verified). By tag,
//! `registry/repository:tag` is looked up in `index.json` the way the pull step names entries
//! (`registry/repository:tag@digest`, one entry per digest the tag resolved to): the entry
//! tagged last ([`TAG_SEQUENCE`](crate::TAG_SEQUENCE)) wins, so a tag resolves to what
//! this site last pulled for it. Cosign's `sha256-<hex>.sig` and the referrers fallback tag
//! `sha256-<hex>` are ordinary tags here, so signature material resolves the same way.

use crate::layout::{OciStore, RefEntry};
use fleetlet_core::Digest;
use fleetlet_core::reference::{ArtifactRef, RegistryRef};
use fleetlet_engine::artifacts::{OCI_INDEX, OCI_MANIFEST};
use fleetlet_engine::registry::{
    BlobSink, Descriptor, FetchedManifest, MAX_MANIFEST_SIZE, Registry, RegistryError,
};
use std::io::Read;
use std::sync::Arc;

pub struct StoreRegistry {
    store: Arc<OciStore>,
}

impl StoreRegistry {
    pub fn new(store: Arc<OciStore>) -> StoreRegistry {
        StoreRegistry { store }
    }

    /// The `index.json` entry `registry/repository:tag` names: the one tagged last when several
    /// do (the tag moved between pulls); `None` when none does.
    pub fn lookup(&self, reference: &RegistryRef, tag: &str) -> Result<Option<RefEntry>, String> {
        let entries = self.store.refs().map_err(|e| e.to_string())?;
        Ok(entries
            .into_iter()
            .enumerate()
            .filter(|(_, e)| {
                let Some(Ok(ArtifactRef::Registry(r))) = e.name().map(str::parse::<ArtifactRef>)
                else {
                    return false;
                };
                r.registry == reference.registry
                    && r.repository == reference.repository
                    && r.tag.as_deref() == Some(tag)
            })
            // Entries without a sequence (older agents): the later in the index wins.
            .max_by_key(|(i, e)| (e.sequence(), *i))
            .map(|(_, e)| e))
    }
}

fn name(reference: &RegistryRef) -> String {
    format!("{reference} (site store)")
}

fn not_found(reference: &RegistryRef, message: String) -> RegistryError {
    RegistryError::NotFound {
        reference: name(reference),
        message,
    }
}

fn read_only(reference: &RegistryRef) -> RegistryError {
    RegistryError::Denied {
        reference: name(reference),
        message: "the site's artifact store is read-only as a registry".into(),
    }
}

/// The JSON's own `mediaType`, else what its shape says (as the OCI adapter reads a manifest),
/// else the type the index entry recorded.
fn media_type(bytes: &[u8], recorded: Option<&str>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(t) = v.get("mediaType").and_then(|t| t.as_str()) {
        return Some(t.to_string());
    }
    if v.get("manifests").is_some() {
        return Some(OCI_INDEX.to_string());
    }
    if v.get("config").is_some() {
        return Some(OCI_MANIFEST.to_string());
    }
    recorded.map(String::from)
}

impl Registry for StoreRegistry {
    fn fetch_manifest(&self, reference: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        let (digest, recorded) = match (&reference.digest, &reference.tag) {
            (Some(d), _) => (*d, None),
            (None, Some(tag)) => {
                let entry = self
                    .lookup(reference, tag)
                    .map_err(|message| RegistryError::Local {
                        reference: name(reference),
                        message,
                    })?
                    .ok_or_else(|| {
                        not_found(reference, "no such tag in the site's store".into())
                    })?;
                (entry.digest, Some(entry.media_type))
            }
            (None, None) => {
                return Err(RegistryError::Invalid {
                    reference: name(reference),
                    message: "no tag or digest".into(),
                });
            }
        };
        match self.store.size_of(&digest) {
            None => {
                return Err(not_found(
                    reference,
                    format!("{digest} is not in the store"),
                ));
            }
            Some(size) if size > MAX_MANIFEST_SIZE => {
                return Err(RegistryError::Invalid {
                    reference: name(reference),
                    message: format!(
                        "{digest} is {size} bytes, larger than a manifest may be ({MAX_MANIFEST_SIZE})"
                    ),
                });
            }
            Some(_) => {}
        }
        // `read` checks the bytes against the digest: a corrupt blob is never served.
        let bytes = match self.store.read(&digest) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(not_found(
                    reference,
                    format!("{digest} is not in the store"),
                ));
            }
            Err(crate::StoreError::DigestMismatch { actual, .. }) => {
                return Err(RegistryError::Invalid {
                    reference: name(reference),
                    message: format!("the stored {digest} holds content with digest {actual}"),
                });
            }
            Err(e) => {
                return Err(RegistryError::Local {
                    reference: name(reference),
                    message: e.to_string(),
                });
            }
        };
        let media_type =
            media_type(&bytes, recorded.as_deref()).ok_or_else(|| RegistryError::Invalid {
                reference: name(reference),
                message: format!("the stored {digest} is not a manifest or index"),
            })?;
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn fetch_blob(
        &self,
        reference: &RegistryRef,
        descriptor: &Descriptor,
        sink: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        let digest = descriptor.digest;
        let file = self
            .store
            .open_blob(&digest)
            .ok_or_else(|| not_found(reference, format!("blob {digest} is not in the store")))?;
        // One byte more than declared shows a size that lies; the sink checks the digest.
        let copied = std::io::copy(&mut file.take(descriptor.size + 1), sink).map_err(|e| {
            RegistryError::Local {
                reference: name(reference),
                message: format!("copying blob {digest}: {e}"),
            }
        })?;
        if copied != descriptor.size {
            return Err(RegistryError::Invalid {
                reference: name(reference),
                message: format!(
                    "the stored blob {digest} does not have the {} bytes its descriptor says",
                    descriptor.size
                ),
            });
        }
        Ok(copied)
    }

    fn push_blob(
        &self,
        reference: &RegistryRef,
        _: &Digest,
        _: &[u8],
    ) -> Result<(), RegistryError> {
        Err(read_only(reference))
    }

    fn push_manifest(
        &self,
        reference: &RegistryRef,
        _: &[u8],
        _: &str,
    ) -> Result<Digest, RegistryError> {
        Err(read_only(reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const REGISTRY: &str = "registry.example.com";
    const REPO: &str = "fleet/app";

    struct Sink(Vec<u8>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl BlobSink for Sink {
        fn restart(&mut self) -> std::io::Result<()> {
            self.0.clear();
            Ok(())
        }
    }

    fn reference(tag: Option<&str>, digest: Option<Digest>) -> RegistryRef {
        RegistryRef {
            registry: REGISTRY.into(),
            repository: REPO.into(),
            tag: tag.map(String::from),
            digest,
        }
    }

    /// A manifest of one layer, stored and tagged as the pull step does
    /// (`registry/repo:tag@digest`); returns (manifest descriptor, layer bytes).
    fn pulled(store: &OciStore, tag: &str, layer: &[u8]) -> (Descriptor, Vec<u8>) {
        let config = store.put(b"{}").unwrap();
        let l = store.put(layer).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.wasm.config.v0+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/wasm","digest":"{l}","size":{}}}]}}"#,
            layer.len()
        );
        let digest = store.put(manifest.as_bytes()).unwrap();
        let desc = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size: manifest.len() as u64,
        };
        store
            .set_ref(&reference(Some(tag), Some(digest)).to_string(), &desc)
            .unwrap();
        (desc, layer.to_vec())
    }

    fn setup() -> (tempfile::TempDir, Arc<OciStore>, StoreRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(OciStore::open(&dir.path().join("oci")).unwrap());
        let registry = StoreRegistry::new(store.clone());
        (dir, store, registry)
    }

    #[test]
    fn manifests_by_tag_and_by_digest() {
        let (_dir, store, registry) = setup();
        let (desc, _) = pulled(&store, "v1", b"wasm-1");

        let by_tag = registry
            .fetch_manifest(&reference(Some("v1"), None))
            .unwrap();
        assert_eq!(by_tag.digest, desc.digest);
        assert_eq!(by_tag.media_type, OCI_MANIFEST);
        assert_eq!(Digest::of(&by_tag.bytes), desc.digest);

        let by_digest = registry
            .fetch_manifest(&reference(None, Some(desc.digest)))
            .unwrap();
        assert_eq!(by_digest, by_tag);
        // The digest wins over the tag.
        let both = registry
            .fetch_manifest(&reference(Some("other"), Some(desc.digest)))
            .unwrap();
        assert_eq!(both.digest, desc.digest);

        // Registry and repository are part of the name.
        let elsewhere = RegistryRef {
            registry: "other.example.com".into(),
            ..reference(Some("v1"), None)
        };
        assert!(matches!(
            registry.fetch_manifest(&elsewhere),
            Err(RegistryError::NotFound { .. })
        ));
        let other_repo = RegistryRef {
            repository: "fleet/other".into(),
            ..reference(Some("v1"), None)
        };
        assert!(matches!(
            registry.fetch_manifest(&other_repo),
            Err(RegistryError::NotFound { .. })
        ));
    }

    #[test]
    fn media_type_by_shape_when_the_manifest_names_none() {
        let (_dir, store, registry) = setup();
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        let d = store.put(index).unwrap();
        let m = registry.fetch_manifest(&reference(None, Some(d))).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        let manifest = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let d = store.put(manifest).unwrap();
        let m = registry.fetch_manifest(&reference(None, Some(d))).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        // A layer is not a manifest.
        let d = store.put(b"\0asm binary").unwrap();
        assert!(matches!(
            registry.fetch_manifest(&reference(None, Some(d))),
            Err(RegistryError::Invalid { .. })
        ));
    }

    #[test]
    fn blobs_are_copied_into_the_sink_with_their_size_checked() {
        let (_dir, store, registry) = setup();
        let (_, layer) = pulled(&store, "v1", b"the component bytes");
        let desc = Descriptor {
            media_type: "application/wasm".into(),
            digest: Digest::of(&layer),
            size: layer.len() as u64,
        };
        let mut sink = Sink(Vec::new());
        let n = registry
            .fetch_blob(&reference(Some("v1"), None), &desc, &mut sink)
            .unwrap();
        assert_eq!(n, layer.len() as u64);
        assert_eq!(sink.0, layer);

        for size in [desc.size - 1, desc.size + 1] {
            let lying = Descriptor {
                size,
                ..desc.clone()
            };
            let mut sink = Sink(Vec::new());
            assert!(matches!(
                registry.fetch_blob(&reference(Some("v1"), None), &lying, &mut sink),
                Err(RegistryError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn what_the_store_lacks_is_not_found() {
        let (_dir, _store, registry) = setup();
        let absent = Digest::of(b"never stored");
        assert!(matches!(
            registry.fetch_manifest(&reference(Some("v1"), None)),
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            registry.fetch_manifest(&reference(None, Some(absent))),
            Err(RegistryError::NotFound { .. })
        ));
        let desc = Descriptor {
            media_type: "application/wasm".into(),
            digest: absent,
            size: 12,
        };
        assert!(matches!(
            registry.fetch_blob(&reference(Some("v1"), None), &desc, &mut Sink(Vec::new())),
            Err(RegistryError::NotFound { .. })
        ));
        // No referrers: none, not an error.
        assert!(
            registry
                .referrers(&reference(None, Some(absent)))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn pushes_are_refused() {
        let (_dir, _store, registry) = setup();
        let r = reference(Some("v1"), None);
        assert!(matches!(
            registry.push_blob(&r, &Digest::of(b"x"), b"x"),
            Err(RegistryError::Denied { .. })
        ));
        assert!(matches!(
            registry.push_manifest(&r, b"{}", OCI_MANIFEST),
            Err(RegistryError::Denied { .. })
        ));
    }

    #[test]
    fn an_import_adopts_blobs_and_tags_everything_in_one_write() {
        let (dir, store, registry) = setup();
        let (old, _) = pulled(&store, "v1", b"old build");
        // A bundle's staged layout: the same tag at a new build, and a signature tag.
        let staged = OciStore::open(&dir.path().join("staged")).unwrap();
        let (new, layer) = pulled(&staged, "v1", b"new build");
        let (sig, _) = pulled(&staged, "sha256-abc.sig", b"signature");
        let mut moved = 0;
        for (digest, _) in staged.blobs().unwrap() {
            if !store.contains(&digest) {
                moved += 1;
            }
            store.adopt(&digest, &staged.path_of(&digest)).unwrap();
        }
        assert!(moved >= 3, "{moved}");
        assert!(store.contains(&Digest::of(&layer)));
        assert_eq!(store.read(&Digest::of(&layer)).unwrap().unwrap(), layer);
        // Adopting what the store has leaves the source alone.
        let config = Digest::of(b"{}");
        assert!(staged.path_of(&config).exists());
        // Nothing names the new blobs yet: the tag still resolves to the old build.
        let v1 = reference(Some("v1"), None);
        assert_eq!(registry.fetch_manifest(&v1).unwrap().digest, old.digest);
        let named: Vec<(String, Descriptor)> = [(&new, "v1"), (&sig, "sha256-abc.sig")]
            .into_iter()
            .map(|(d, tag)| (reference(Some(tag), Some(d.digest)).to_string(), d.clone()))
            .collect();
        store.set_refs(&named).unwrap();
        assert_eq!(registry.fetch_manifest(&v1).unwrap().digest, new.digest);
        let sequences: Vec<u64> = store.refs().unwrap().iter().map(|r| r.sequence()).collect();
        assert_eq!(sequences.iter().max(), Some(&3), "{sequences:?}");
        assert!(dir.path().join("oci/.index.lock").exists());
    }

    #[test]
    fn a_tag_pulled_several_times_resolves_to_the_last_pull() {
        let (_dir, store, registry) = setup();
        // Digests order the index by name; tagging order must win over it.
        let mut pulls: Vec<Descriptor> = (0..4)
            .map(|i| pulled(&store, "v1", format!("build {i}").as_bytes()).0)
            .collect();
        assert_eq!(
            store.refs().unwrap().len(),
            4,
            "one entry per digest the tag resolved to"
        );
        let last = pulls.pop().unwrap();
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some("v1"), None))
                .unwrap()
                .digest,
            last.digest
        );
        // The tag moves back to an older digest: re-tagging it makes it the newest.
        let first = pulls[0].clone();
        store
            .set_ref(
                &reference(Some("v1"), Some(first.digest)).to_string(),
                &first,
            )
            .unwrap();
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some("v1"), None))
                .unwrap()
                .digest,
            first.digest
        );
        // Other tags of the repository do not interfere.
        let (v2, _) = pulled(&store, "v2", b"v2");
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some("v1"), None))
                .unwrap()
                .digest,
            first.digest
        );
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some("v2"), None))
                .unwrap()
                .digest,
            v2.digest
        );
    }

    #[test]
    fn entries_named_without_a_digest_or_sequence_resolve_too() {
        let (dir, store, registry) = setup();
        let (old, _) = pulled(&store, "v1", b"pulled by an older agent");
        // A tool naming `registry/repo:tag` alone.
        store
            .set_ref(&reference(Some("plain"), None).to_string(), &old)
            .unwrap();
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some("plain"), None))
                .unwrap()
                .digest,
            old.digest
        );
        // Entries an older agent wrote have no sequence: any sequenced entry is newer.
        let path = dir.path().join("oci/index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for m in index["manifests"].as_array_mut().unwrap() {
            m["annotations"]
                .as_object_mut()
                .unwrap()
                .remove(crate::TAG_SEQUENCE);
        }
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some("v1"), None))
                .unwrap()
                .digest,
            old.digest
        );
        let (new, _) = pulled(&store, "v1", b"pulled after the upgrade");
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some("v1"), None))
                .unwrap()
                .digest,
            new.digest
        );
    }

    #[test]
    fn signature_and_referrers_tags_resolve_like_any_tag() {
        let (_dir, store, registry) = setup();
        let (subject, _) = pulled(&store, "v1", b"signed component");
        let sig_tag = fleetlet_engine::trust::cosign_signature_tag(&subject.digest);
        let referrers_tag = fleetlet_engine::trust::referrers_tag(&subject.digest);
        assert!(sig_tag.starts_with("sha256-") && sig_tag.ends_with(".sig"));
        let (sig, _) = pulled(&store, &sig_tag, b"signature payload");
        assert_eq!(
            registry
                .fetch_manifest(&reference(Some(&sig_tag), None))
                .unwrap()
                .digest,
            sig.digest
        );

        let subject_ref = reference(None, Some(subject.digest));
        assert!(registry.referrers(&subject_ref).unwrap().is_none());
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}}]}}"#,
            sig.digest, sig.size
        );
        let d = store.put(index.as_bytes()).unwrap();
        store
            .set_ref(
                &reference(Some(&referrers_tag), Some(d)).to_string(),
                &Descriptor {
                    media_type: OCI_INDEX.into(),
                    digest: d,
                    size: index.len() as u64,
                },
            )
            .unwrap();
        let found = registry.referrers(&subject_ref).unwrap().unwrap();
        assert_eq!(found.digest, d);
        assert_eq!(found.media_type, OCI_INDEX);
    }
}

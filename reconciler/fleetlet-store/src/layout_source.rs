//! A local OCI image layout as a source of artifacts (`oci:PATH:TAG`, `oci:PATH@sha256:…`), so a
//! site can run components from a directory — carried on a USB stick, or made by
//! `fleetlet push FILE oci:PATH:TAG` — with no registry anywhere. Read-only: it implements the
//! `Registry` port's fetches over files; the pull step copies what it needs into the store.

use fleetlet_core::Digest;
use fleetlet_core::reference::RegistryRef;
use fleetlet_engine::registry::{
    BlobSink, Descriptor, FetchedManifest, MAX_MANIFEST_SIZE, Registry, RegistryError,
};
use std::io::Read;
use std::path::{Path, PathBuf};

pub struct LayoutSource {
    root: PathBuf,
}

impl LayoutSource {
    pub fn new(root: &Path) -> LayoutSource {
        LayoutSource {
            root: root.to_path_buf(),
        }
    }

    fn name(&self, reference: &RegistryRef) -> String {
        let mut s = format!("oci:{}", self.root.display());
        if let Some(t) = &reference.tag {
            s.push_str(&format!(":{t}"));
        }
        if let Some(d) = &reference.digest {
            s.push_str(&format!("@{d}"));
        }
        s
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// The digest `tag` names in the layout's `index.json`.
    fn lookup(&self, reference: &RegistryRef, tag: &str) -> Result<Digest, RegistryError> {
        let name = self.name(reference);
        let path = self.root.join("index.json");
        let text = std::fs::read_to_string(&path).map_err(|e| RegistryError::NotFound {
            reference: name.clone(),
            message: format!("reading {}: {e}", path.display()),
        })?;
        let index: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| RegistryError::Invalid {
                reference: name.clone(),
                message: format!("{}: {e}", path.display()),
            })?;
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag))
            .and_then(|m| m["digest"].as_str())
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| RegistryError::NotFound {
                reference: name,
                message: format!("no tag {tag:?} in {}", path.display()),
            })
    }
}

impl Registry for LayoutSource {
    fn fetch_manifest(&self, reference: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        let name = self.name(reference);
        let digest = match (&reference.digest, &reference.tag) {
            (Some(d), _) => *d,
            (None, Some(t)) => self.lookup(reference, t)?,
            (None, None) => {
                return Err(RegistryError::Invalid {
                    reference: name,
                    message: "no tag or digest".into(),
                });
            }
        };
        let path = self.blob_path(&digest);
        let file = std::fs::File::open(&path).map_err(|e| RegistryError::NotFound {
            reference: name.clone(),
            message: format!("{}: {e}", path.display()),
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| RegistryError::Local {
                reference: name.clone(),
                message: format!("reading {}: {e}", path.display()),
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RegistryError::Invalid {
                reference: name,
                message: format!("manifest larger than {MAX_MANIFEST_SIZE} bytes"),
            });
        }
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(RegistryError::Invalid {
                reference: name,
                message: format!("{} holds content with digest {actual}", path.display()),
            });
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(String::from))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
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
        let name = self.name(reference);
        let path = self.blob_path(&descriptor.digest);
        let file = std::fs::File::open(&path).map_err(|e| RegistryError::NotFound {
            reference: name.clone(),
            message: format!("{}: {e}", path.display()),
        })?;
        // One byte more than declared shows a size that lies; the store checks the digest.
        let copied = std::io::copy(&mut file.take(descriptor.size + 1), sink).map_err(|e| {
            RegistryError::Local {
                reference: name.clone(),
                message: format!("copying {}: {e}", path.display()),
            }
        })?;
        if copied != descriptor.size {
            return Err(RegistryError::Invalid {
                reference: name,
                message: format!(
                    "{} has {copied} bytes, its descriptor says {}",
                    path.display(),
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
        Err(RegistryError::Denied {
            reference: self.name(reference),
            message: "a layout source is read-only".into(),
        })
    }

    fn push_manifest(
        &self,
        reference: &RegistryRef,
        _: &[u8],
        _: &str,
    ) -> Result<Digest, RegistryError> {
        Err(RegistryError::Denied {
            reference: self.name(reference),
            message: "a layout source is read-only".into(),
        })
    }
}

//! Ports for artifacts: the OCI registries they come from and the site's content-addressed store
//! they land in. The engine moves bytes from one to the other; the two adapters never meet.

use fleetlet_core::Digest;
use fleetlet_core::reference::RegistryRef;
use serde::{Deserialize, Serialize};

/// Largest manifest or index accepted from anywhere: a bigger one is hostile or broken.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// A manifest or index as fetched: its exact bytes (digests are over bytes, never re-serialised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// The digest of `bytes`.
    pub digest: Digest,
}

/// Registry failures, typed by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Network errors, timeouts, 5xx, 429 — still failing after the adapter's retries.
    #[error("{reference}: registry unavailable: {message}")]
    Unavailable { reference: String, message: String },
    /// 401/403: credentials are missing or wrong.
    #[error("{reference}: access denied: {message}")]
    Denied { reference: String, message: String },
    /// 404: no such tag, manifest or blob.
    #[error("{reference}: not found: {message}")]
    NotFound { reference: String, message: String },
    /// Writing what arrived failed on this side (disk full, I/O error): may pass once space is
    /// freed.
    #[error("{reference}: {message}")]
    Local { reference: String, message: String },
    /// The registry answered something unusable: HTML, a digest or size that does not match, an
    /// oversized manifest.
    #[error("{reference}: invalid answer: {message}")]
    Invalid { reference: String, message: String },
}

impl RegistryError {
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}

/// Where a blob's bytes go while they download. `restart` discards what was written, so a
/// download that broke mid-body can be retried from the start into the same sink.
pub trait BlobSink: std::io::Write {
    fn restart(&mut self) -> std::io::Result<()>;
}

/// An OCI distribution registry (with its mirrors, credentials and retry policy inside).
pub trait Registry {
    /// The manifest or index `reference` names (its digest, when given, wins over its tag). The
    /// bytes must hash to `reference.digest` when one is given; at most [`MAX_MANIFEST_SIZE`].
    fn fetch_manifest(&self, reference: &RegistryRef) -> Result<FetchedManifest, RegistryError>;

    /// Streams the blob `descriptor` of `reference`'s repository into `sink`. The adapter checks
    /// the size as bytes arrive (a registry that sends more is cut off); the store checks the
    /// digest when the sink is committed.
    fn fetch_blob(
        &self,
        reference: &RegistryRef,
        descriptor: &Descriptor,
        sink: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError>;

    /// Uploads a blob into `reference`'s repository, unless the registry already has it.
    fn push_blob(
        &self,
        reference: &RegistryRef,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), RegistryError>;

    /// Uploads a manifest under `reference`'s tag (or by digest); returns the registry's digest.
    fn push_manifest(
        &self,
        reference: &RegistryRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError>;

    /// The OCI 1.1 referrers of `subject` (pinned by digest) as an image index: from the
    /// referrers API where the registry has one, else from the tag-schema fallback (an index
    /// tagged `sha256-<hex>`). `None` when there are none.
    fn referrers(&self, subject: &RegistryRef) -> Result<Option<FetchedManifest>, RegistryError> {
        let Some(digest) = subject.digest else {
            return Ok(None);
        };
        let fallback = RegistryRef {
            tag: Some(crate::trust::referrers_tag(&digest)),
            digest: None,
            ..subject.clone()
        };
        match self.fetch_manifest(&fallback) {
            Ok(m) => Ok(Some(m)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The network registry with the site's artifact store behind it, so a site whose uplink is
/// down — or an air-gapped one, with no registry at all — still applies a release whose artifacts
/// are already in the store (pulled before, or imported from a sync bundle).
///
/// Online, the registry wins: every fetch goes to `primary` first, and whatever it answers —
/// including "not found" or "denied" — is the answer. A registry that says a tag does not exist
/// is authoritative (the tag was deleted, or the fleet repo names a typo); answering it from an
/// old pull would apply something the registry no longer offers. Only when the primary is
/// [`RegistryError::Unavailable`] (network down, timeouts, 5xx after its retries), or when there
/// is no primary, does `local` answer. Offline, a tag therefore resolves to what the store last
/// pulled for it; the release is still verified like any other (digests, signatures and the
/// trust policy do not care where the bytes came from). When the local one cannot answer
/// either, the primary's `Unavailable` is returned (still transient), with a note.
///
/// Pushes go to the primary only.
pub struct FallbackRegistry {
    /// The network registry (with its mirrors and retries); `None` on a site with none.
    pub primary: Option<Box<dyn Registry + Send + Sync>>,
    /// The site's artifact store as a read-only registry.
    pub local: Box<dyn Registry + Send + Sync>,
}

impl FallbackRegistry {
    pub fn new(
        primary: Box<dyn Registry + Send + Sync>,
        local: Box<dyn Registry + Send + Sync>,
    ) -> FallbackRegistry {
        FallbackRegistry {
            primary: Some(primary),
            local,
        }
    }

    /// No network registry: everything comes from `local`.
    pub fn local_only(local: Box<dyn Registry + Send + Sync>) -> FallbackRegistry {
        FallbackRegistry {
            primary: None,
            local,
        }
    }

    /// Runs `op` on the primary, and on the local registry when the primary is unavailable
    /// (or absent). `before_local` runs first (a sink the primary half-filled is restarted).
    fn either<T>(
        &self,
        reference: &RegistryRef,
        mut op: impl FnMut(&dyn Registry) -> Result<T, RegistryError>,
        before_local: impl FnOnce() -> Result<(), RegistryError>,
    ) -> Result<T, RegistryError> {
        let Some(primary) = &self.primary else {
            return op(self.local.as_ref());
        };
        let unavailable = match op(primary.as_ref()) {
            Err(e @ RegistryError::Unavailable { .. }) => e,
            answer => return answer,
        };
        let local = before_local().and_then(|()| op(self.local.as_ref()));
        match (local, unavailable) {
            (Ok(v), e) => {
                tracing::info!(reference = %reference, error = %e, "registry unavailable; answered from the site's store");
                Ok(v)
            }
            (Err(local), RegistryError::Unavailable { reference, message }) => {
                let note = match local {
                    RegistryError::NotFound { .. } => "the site's store does not have it".into(),
                    other => format!("the site's store: {other}"),
                };
                Err(RegistryError::Unavailable {
                    reference,
                    message: format!("{message} ({note})"),
                })
            }
            (Err(_), e) => Err(e),
        }
    }

    fn primary_only(
        &self,
        reference: &RegistryRef,
    ) -> Result<&(dyn Registry + Send + Sync), RegistryError> {
        self.primary
            .as_deref()
            .ok_or_else(|| RegistryError::Denied {
                reference: reference.to_string(),
                message: "no registry is configured, and the site's store is read-only".into(),
            })
    }
}

impl Registry for FallbackRegistry {
    fn fetch_manifest(&self, reference: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        self.either(reference, |r| r.fetch_manifest(reference), || Ok(()))
    }

    fn fetch_blob(
        &self,
        reference: &RegistryRef,
        descriptor: &Descriptor,
        sink: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        let sink = std::cell::RefCell::new(sink);
        self.either(
            reference,
            |r| r.fetch_blob(reference, descriptor, &mut **sink.borrow_mut()),
            || {
                sink.borrow_mut()
                    .restart()
                    .map_err(|e| RegistryError::Local {
                        reference: reference.to_string(),
                        message: format!("restarting the download of {}: {e}", descriptor.digest),
                    })
            },
        )
    }

    fn push_blob(
        &self,
        reference: &RegistryRef,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        self.primary_only(reference)?
            .push_blob(reference, digest, bytes)
    }

    fn push_manifest(
        &self,
        reference: &RegistryRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        self.primary_only(reference)?
            .push_manifest(reference, bytes, media_type)
    }

    fn referrers(&self, subject: &RegistryRef) -> Result<Option<FetchedManifest>, RegistryError> {
        self.either(subject, |r| r.referrers(subject), || Ok(()))
    }
}

/// Opens the local OCI layouts that `oci:PATH` references name. The agent decides which paths a
/// fleet repo may name (trust lives on the site).
pub trait Layouts: Send + Sync {
    fn open(&self, path: &str) -> Result<Box<dyn Registry + Send + Sync>, String>;
}

/// The registry name under which components from local layouts are pulled and tagged.
pub const LAYOUT_REGISTRY: &str = "oci-layout";

/// A download in progress into the artifact store.
pub trait BlobUpload: BlobSink {
    /// Makes the blob visible if it is complete and matches its digest and size.
    fn commit(self: Box<Self>) -> Result<Digest, crate::ports::StoreError>;
}

/// The site's artifact store as the pull step sees it.
pub trait ArtifactStore: crate::ports::BlobStore {
    fn contains(&self, digest: &Digest) -> bool;
    /// A writer for `digest`, or `None` when the store already has it (or another download of it
    /// in this process just finished).
    fn begin(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Box<dyn BlobUpload + '_>>, crate::ports::StoreError>;
    /// Names a manifest in the store's index (`registry/repo:tag@digest`).
    fn tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), crate::ports::StoreError>;
    /// Removes what `roots` do not reach (blobs being written or just written are kept);
    /// returns (blobs removed, bytes freed).
    fn collect_garbage(
        &self,
        roots: &std::collections::BTreeSet<Digest>,
    ) -> Result<(usize, u64), crate::ports::StoreError>;
}

// The agent shares one store between the engine and the registry mirror.
impl<T: crate::ports::BlobStore + ?Sized> crate::ports::BlobStore for std::sync::Arc<T> {
    fn put(&self, bytes: &[u8]) -> Result<Digest, crate::ports::StoreError> {
        (**self).put(bytes)
    }
    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, crate::ports::StoreError> {
        (**self).get(digest)
    }
}

impl<T: ArtifactStore + ?Sized> ArtifactStore for std::sync::Arc<T> {
    fn contains(&self, digest: &Digest) -> bool {
        (**self).contains(digest)
    }
    fn begin(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Box<dyn BlobUpload + '_>>, crate::ports::StoreError> {
        (**self).begin(digest, size)
    }
    fn tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), crate::ports::StoreError> {
        (**self).tag(name, descriptor)
    }
    fn collect_garbage(
        &self,
        roots: &std::collections::BTreeSet<Digest>,
    ) -> Result<(usize, u64), crate::ports::StoreError> {
        (**self).collect_garbage(roots)
    }
}

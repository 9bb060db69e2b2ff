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

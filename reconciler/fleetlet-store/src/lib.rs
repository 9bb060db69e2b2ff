//! The site's artifact store (the "cache" step of the cycle): an OCI image layout under the state
//! dir that standard tools (`skopeo inspect oci:…`, `umoci`) read.
//!
//! ```text
//! <root>/
//!   oci-layout             {"imageLayoutVersion":"1.0.0"}
//!   index.json             tagged entries (org.opencontainers.image.ref.name)
//!   blobs/sha256/<hex>     every blob, named by its digest
//!   .tmp/                  blobs being written; never visible under a real name
//! ```
//!
//! Guarantees: a blob appears under `blobs/` only after it was hashed as it streamed, fsynced,
//! checked against the expected digest and size, and renamed into place (then the folder is
//! fsynced). `index.json` is replaced atomically. A crash leaves at most stray files in `.tmp/`,
//! removed on open. Within one process, concurrent writers of one blob share one download.

mod gc;
mod layout;
mod layout_source;
mod store_registry;
mod writer;

pub use gc::{GcReport, VerifyReport, children};
pub use layout::{OciStore, RefEntry, StoreError, TAG_SEQUENCE};
pub use layout_source::LayoutSource;
pub use store_registry::StoreRegistry;
pub use writer::{BlobWriter, WriteSlot};

impl fleetlet_engine::ports::BlobStore for OciStore {
    fn put(
        &self,
        bytes: &[u8],
    ) -> Result<fleetlet_core::Digest, fleetlet_engine::ports::StoreError> {
        OciStore::put(self, bytes).map_err(to_port)
    }

    fn get(
        &self,
        digest: &fleetlet_core::Digest,
    ) -> Result<Option<Vec<u8>>, fleetlet_engine::ports::StoreError> {
        self.read(digest).map_err(to_port)
    }
}

fn to_port(e: StoreError) -> fleetlet_engine::ports::StoreError {
    match e {
        StoreError::DigestMismatch { expected, actual } => {
            fleetlet_engine::ports::StoreError::DigestMismatch { expected, actual }
        }
        other => fleetlet_engine::ports::StoreError::Io {
            digest: String::new(),
            message: other.to_string(),
        },
    }
}

impl fleetlet_engine::registry::BlobUpload for BlobWriter<'_> {
    fn commit(
        self: Box<Self>,
    ) -> Result<fleetlet_core::Digest, fleetlet_engine::ports::StoreError> {
        BlobWriter::commit(self).map_err(to_port)
    }
}

impl fleetlet_engine::registry::ArtifactStore for OciStore {
    fn contains(&self, digest: &fleetlet_core::Digest) -> bool {
        OciStore::contains(self, digest)
    }

    fn begin(
        &self,
        digest: &fleetlet_core::Digest,
        size: u64,
    ) -> Result<
        Option<Box<dyn fleetlet_engine::registry::BlobUpload + '_>>,
        fleetlet_engine::ports::StoreError,
    > {
        match self.slot(digest, Some(size)).map_err(to_port)? {
            WriteSlot::Present => Ok(None),
            WriteSlot::Writer(w) => Ok(Some(w)),
        }
    }

    fn tag(
        &self,
        name: &str,
        descriptor: &fleetlet_engine::registry::Descriptor,
    ) -> Result<(), fleetlet_engine::ports::StoreError> {
        self.set_ref(name, descriptor).map_err(to_port)
    }

    fn collect_garbage(
        &self,
        roots: &std::collections::BTreeSet<fleetlet_core::Digest>,
    ) -> Result<(usize, u64), fleetlet_engine::ports::StoreError> {
        let report = self
            .collect_unused(roots, GC_GRACE, false)
            .map_err(to_port)?;
        Ok((report.removed.len(), report.freed_bytes()))
    }
}

/// Blobs younger than this are never collected: they may belong to a pull in progress elsewhere
/// (a `fleetlet pull` next to the agent) whose release is not recorded yet.
pub const GC_GRACE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

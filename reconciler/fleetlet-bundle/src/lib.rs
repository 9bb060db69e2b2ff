//! The sync-bundle container format of the air-gap path: how a release travels to a site with
//! no network, on a USB stick.
//!
//! A bundle is one zstd-compressed tar (optionally split into `FILE.part-NNN` files for small
//! media) whose first entries are `manifest.json` (canonical JSON listing every other entry
//! with its sha256 and size), `manifest.sig` (the operator's signature over the exact manifest
//! bytes, base64) and `manifest.key` (the signing key's fingerprint), followed by the entries
//! in path order. Writing is deterministic: the same inputs give byte-identical bundles.
//!
//! [`BundleReader::open`] extracts a bundle in one streaming pass into a fresh staging
//! directory and checks everything on the way: signature by a trusted key, entry paths and
//! types, sizes and digests against the manifest, nothing missing or extra, a cap on the
//! unpacked size. On any error the staging directory is removed, so nothing becomes visible;
//! on success [`VerifiedBundle::commit_to`] renames it into place.
//!
//! What the entries are (Git objects, OCI layouts, trust material) is for the callers; this
//! crate only moves verified files.

mod error;
pub mod manifest;
mod parts;
pub mod path;
mod reader;
mod writer;

pub use error::BundleError;
pub use manifest::{Manifest, ManifestEntry};
pub use parts::{is_part, part_path, split_part_name};
pub use reader::{BundleReader, Limits, MAX_MANIFEST_BYTES, VerifiedBundle};
pub use writer::{BundleWriter, ZSTD_LEVEL};

use std::path::Path;

/// Makes a directory's entries (new files, a rename) durable, not only the files' contents.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BundleError::io(dir, e))
}

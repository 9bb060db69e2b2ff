//! Why a bundle was refused or could not be written: one variant per reason, each message
//! naming the entry, part or key concerned, because the operator at an air-gapped site has
//! nothing but this message to go on.

use fleetlet_core::Digest;
use fleetlet_verify::cosign::KeyError;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    // --- Paths of entries (in the tar or the manifest). ---
    #[error("entry {path}: path leaves the bundle")]
    PathEscapes { path: String },
    #[error("entry {path}: absolute paths are not allowed")]
    AbsolutePath { path: String },
    #[error("entry {path}: path is not normalized ({reason})")]
    PathNotNormalized { path: String, reason: &'static str },
    #[error("entry {path}: backslashes and control characters are not allowed in paths")]
    PathCharacters { path: String },
    #[error("entry {path}: path is not UTF-8")]
    PathNotUtf8 { path: String },
    #[error("entry {path}: path is longer than {limit} bytes (or a component than 255)")]
    PathTooLong { path: String, limit: usize },
    #[error("entry {path}: names matching manifest.* are reserved for the bundle's own metadata")]
    ReservedPath { path: String },

    // --- Entries of the tar. ---
    #[error("entry {path}: {kind} entries are not allowed")]
    EntryType { path: String, kind: String },
    #[error("entry {path}: appears twice in the bundle")]
    Duplicate { path: String },
    #[error("entry {path}: not listed in the manifest")]
    NotInManifest { path: String },
    #[error("manifest lists {path} but the bundle does not contain it")]
    MissingEntry { path: String },
    #[error("entry {path}: size is {actual} bytes but the manifest says {expected}")]
    SizeMismatch {
        path: String,
        actual: u64,
        expected: u64,
    },
    #[error("entry {path}: sha256 is {} but the manifest says {}", .actual.hex(), .expected.hex())]
    DigestMismatch {
        path: String,
        actual: Digest,
        expected: Digest,
    },
    #[error("entry {path}: {what} is {size} bytes, over the {limit}-byte limit")]
    HeadEntryTooLarge {
        path: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("entry {path}: a directory entry, but the manifest lists a file there")]
    DirectoryConflict { path: String },

    // --- The stream as a whole. ---
    #[error("unpacked size exceeds the {limit}-byte limit")]
    UnpackedTooLarge { limit: u64 },
    #[error("the manifest lists {count} entries, over the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("the bundle is truncated ({detail})")]
    Truncated { detail: String },
    #[error("the bundle is corrupt ({detail})")]
    Corrupt { detail: String },

    // --- Parts of a split bundle. ---
    #[error("no bundle file given")]
    NoParts,
    #[error("{path}: not a part of a split bundle (expected a name ending in .part-NNN)")]
    PartName { path: PathBuf },
    #[error("{path}: belongs to another bundle than {first}")]
    PartMismatch { path: PathBuf, first: PathBuf },
    #[error("part {number} of {base} is missing (parts given: {given})")]
    PartMissing {
        base: PathBuf,
        number: u32,
        given: String,
    },
    #[error("{path}: part {number} is given twice")]
    PartDuplicate { path: PathBuf, number: u32 },
    #[error("a part size limit of {size} bytes is too small")]
    PartSize { size: u64 },

    // --- Manifest and signature. ---
    #[error("the bundle does not start with manifest.json (first entry: {found})")]
    ManifestMissing { found: String },
    #[error("manifest.json is not signed (expected manifest.sig after it, found {found})")]
    Unsigned { found: String },
    #[error(
        "the bundle names no signing key (expected manifest.key after manifest.sig, found {found})"
    )]
    SignerMissing { found: String },
    #[error("manifest.sig is not a base64 signature")]
    SignatureEncoding,
    #[error("manifest signed by key {fingerprint} which this site does not trust")]
    UntrustedSigner { fingerprint: String },
    #[error(
        "manifest signature does not verify with trusted key {fingerprint} (altered after signing?)"
    )]
    BadSignature { fingerprint: String },
    #[error("manifest.json: {detail}")]
    ManifestInvalid { detail: String },
    #[error("manifest.json: version {version} is not supported (this fleetlet reads version 1)")]
    UnsupportedVersion { version: u64 },

    // --- Writing and the file system. ---
    #[error("{path}: no space left on the device")]
    DiskFull { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("entry {path}: added twice")]
    DuplicateInput { path: String },
    #[error("entry {path}: conflicts with entry {other} (a file cannot also be a directory)")]
    PathConflict { path: String, other: String },
    #[error("entry {path}: the source changed while the bundle was written")]
    SourceChanged { path: String },
    #[error("signing the manifest: {0}")]
    Signing(#[from] KeyError),
}

impl BundleError {
    /// An I/O error on `path`, with a full disk called what it is.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            BundleError::DiskFull { path }
        } else {
            BundleError::Io { path, source }
        }
    }
}

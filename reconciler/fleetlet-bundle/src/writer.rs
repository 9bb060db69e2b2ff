//! Writing a bundle: deterministic tar (sorted paths, zeroed metadata, regular files only),
//! compressed with zstd at a fixed level, signed manifest first.

use crate::manifest::{KIND, MANIFEST_JSON, MANIFEST_KEY, MANIFEST_SIG, VERSION};
use crate::parts::SplitWriter;
use crate::{BundleError, Manifest, ManifestEntry, path};
use base64::Engine as _;
use fleetlet_core::Digest;
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Fixed, so the bytes depend only on the inputs (and the zstd version pinned in Cargo.lock).
/// Most payload is already compressed (image layers, Git packs): a higher level buys little.
pub const ZSTD_LEVEL: i32 = 3;

/// Collects files, then writes the signed bundle.
pub struct BundleWriter {
    meta: Value,
    inputs: BTreeMap<String, Input>,
    spool_parent: Option<PathBuf>,
    spool: Option<tempfile::TempDir>,
    progress: Option<Arc<AtomicU64>>,
}

struct Input {
    source: PathBuf,
    sha256: Digest,
    size: u64,
}

impl BundleWriter {
    /// A bundle whose manifest carries `meta` (sites, commits, base bundle…) verbatim.
    pub fn new(meta: Value) -> Self {
        BundleWriter {
            meta,
            inputs: BTreeMap::new(),
            spool_parent: None,
            spool: None,
            progress: None,
        }
    }

    /// Adds each entry's size to `counter` once it is written (for a progress bar drawn by
    /// another thread; the manifest's total size is the end).
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    /// Where [`add_file`](Self::add_file) keeps its copies (default: the system temp dir,
    /// which may be a small tmpfs).
    pub fn spool_in(mut self, dir: &Path) -> Self {
        self.spool_parent = Some(dir.to_path_buf());
        self
    }

    /// Adds `path` with the contents of `source`, streamed into a spool file and hashed on the
    /// way (entries are written in path order, so the caller's order cannot matter).
    pub fn add_file(&mut self, path: &str, mut source: impl Read) -> Result<(), BundleError> {
        let path = self.check_new(path)?;
        if self.spool.is_none() {
            let mut builder = tempfile::Builder::new();
            builder.prefix(".fleetlet-bundle-spool-");
            let parent = self.spool_parent.clone().unwrap_or_else(std::env::temp_dir);
            let spool = builder
                .tempdir_in(&parent)
                .map_err(|e| BundleError::io(parent, e))?;
            self.spool = Some(spool);
        }
        let spool = self.spool.as_ref().expect("created above");
        let file_path = spool.path().join(format!("{:010}", self.inputs.len()));
        let mut file = File::create(&file_path).map_err(|e| BundleError::io(&file_path, e))?;
        let mut hashing = HashingReader::new(&mut source);
        io::copy(&mut hashing, &mut file).map_err(|e| BundleError::io(&file_path, e))?;
        let (sha256, size) = hashing.finish();
        self.inputs.insert(
            path,
            Input {
                source: file_path,
                sha256,
                size,
            },
        );
        Ok(())
    }

    /// Adds `path` with the contents of the file `source`, without copying it: it is hashed
    /// now and read again by [`finish`](Self::finish), which fails if it changed meanwhile.
    pub fn add_path(&mut self, path: &str, source: &Path) -> Result<(), BundleError> {
        let path = self.check_new(path)?;
        let file = File::open(source).map_err(|e| BundleError::io(source, e))?;
        let mut hashing = HashingReader::new(file);
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| BundleError::io(source, e))?;
        let (sha256, size) = hashing.finish();
        self.inputs.insert(
            path,
            Input {
                source: source.to_path_buf(),
                sha256,
                size,
            },
        );
        Ok(())
    }

    fn check_new(&self, path: &str) -> Result<String, BundleError> {
        let path = path::validate(path.as_bytes())?;
        if self.inputs.contains_key(&path) {
            return Err(BundleError::DuplicateInput { path });
        }
        Ok(path)
    }

    /// The manifest as it will be signed.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            version: VERSION,
            kind: KIND.to_string(),
            meta: self.meta.clone(),
            entries: self
                .inputs
                .iter()
                .map(|(path, input)| ManifestEntry {
                    path: path.clone(),
                    sha256: input.sha256,
                    size: input.size,
                })
                .collect(),
        }
    }

    /// Signs the manifest with `key` and writes the bundle to `out`, or with `max_part_size`
    /// to `out.part-001`, `-002`, … each at most that many bytes. Returns the files written.
    /// On error, the files written so far are removed.
    pub fn finish(
        self,
        key: &SigningKey,
        out: &Path,
        max_part_size: Option<u64>,
    ) -> Result<Vec<PathBuf>, BundleError> {
        let manifest = self.manifest();
        manifest.check_entries()?;
        let manifest_bytes = manifest.to_canonical_json();
        let signature =
            base64::engine::general_purpose::STANDARD.encode(key.sign(&manifest_bytes)?);
        let fingerprint =
            TrustedKey::from_pem("bundle signing key", key.public_pem()?.as_bytes())?.fingerprint();

        let sink = SplitWriter::new(out, max_part_size)?;
        let created = sink.created.clone();
        let result = self.write(sink, out, &manifest_bytes, &signature, &fingerprint);
        if result.is_err() {
            for path in created.borrow().iter() {
                let _ = std::fs::remove_file(path);
            }
        }
        result
    }

    fn write(
        &self,
        sink: SplitWriter,
        out: &Path,
        manifest: &[u8],
        signature: &str,
        fingerprint: &str,
    ) -> Result<Vec<PathBuf>, BundleError> {
        let out_err = |e: io::Error| BundleError::io(out, e);
        let mut encoder = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL).map_err(out_err)?;
        // The frame checksum lets the reader detect a corrupt or wrongly ordered part before
        // the manifest would. No content size: it is unknown when streaming, and leaving it
        // out explicitly keeps the frame header the same whatever zstd's defaults become.
        encoder.include_checksum(true).map_err(out_err)?;
        encoder.include_contentsize(false).map_err(out_err)?;
        encoder.include_dictid(false).map_err(out_err)?;
        let mut tar = tar::Builder::new(encoder);

        for (name, bytes) in [
            (MANIFEST_JSON, manifest),
            (MANIFEST_SIG, signature.as_bytes()),
            (MANIFEST_KEY, fingerprint.as_bytes()),
        ] {
            tar.append_data(&mut file_header(bytes.len() as u64), name, bytes)
                .map_err(out_err)?;
        }
        for (path, input) in &self.inputs {
            let file = File::open(&input.source).map_err(|e| BundleError::io(&input.source, e))?;
            let mut hashing = HashingReader::new(file);
            tar.append_data(
                &mut file_header(input.size),
                path,
                (&mut hashing).take(input.size),
            )
            .map_err(out_err)?;
            // Longer or shorter than hashed, or different: the tar just written is wrong.
            let grew = hashing
                .read(&mut [0u8; 1])
                .map_err(|e| BundleError::io(&input.source, e))?
                > 0;
            let (sha256, size) = hashing.finish();
            if grew || size != input.size || sha256 != input.sha256 {
                return Err(BundleError::SourceChanged { path: path.clone() });
            }
            if let Some(p) = &self.progress {
                p.fetch_add(size, Ordering::Relaxed);
            }
        }
        let encoder = tar.into_inner().map_err(out_err)?;
        let sink = encoder.finish().map_err(out_err)?;
        sink.finish()
    }
}

/// A regular file entry with nothing but its size: mode 0644, owner 0:0 with empty names,
/// mtime 0. GNU format, so paths over 100 bytes get a `././@LongLink` entry (which the tar
/// crate also writes with zeroed metadata).
fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Hashes and counts what passes through.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (Digest, u64) {
        (
            Digest::from_bytes(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

//! Reading a bundle: one streaming pass from the parts through zstd and tar into a staging
//! directory, every check made on the way, nothing kept unless all of them pass.

use crate::manifest::{MANIFEST_JSON, MANIFEST_KEY, MANIFEST_SIG};
use crate::parts::{self, PartReader};
use crate::{BundleError, Manifest, path};
use base64::Engine as _;
use fleetlet_core::Digest;
use fleetlet_verify::cosign::TrustedKey;
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

/// Largest accepted `manifest.json` (it is held in memory): about 200 000 entries.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
const MAX_SIG_BYTES: u64 = 64 << 10;
const MAX_KEY_BYTES: u64 = 1 << 10;
/// Copy buffer: large enough that per-call overhead vanishes next to hashing.
const BUF: usize = 1 << 20;

/// What a site accepts from a bundle before even looking at the manifest's claims.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Cap on the decompressed stream (files plus tar headers): the zstd-bomb guard. Checked
    /// against the manifest's total before extracting, and again byte by byte while reading.
    pub max_unpacked: u64,
    /// Cap on the number of entries the manifest may list.
    pub max_entries: usize,
}

/// Opens bundles. A unit type: the functions are its API.
pub struct BundleReader;

/// A bundle extracted and verified into a staging directory. Dropped without
/// [`commit_to`](Self::commit_to), the directory is removed.
#[derive(Debug)]
pub struct VerifiedBundle {
    staging: tempfile::TempDir,
    pub manifest: Manifest,
    /// Fingerprint (`SHA256:…`) of the trusted key whose signature verified.
    pub signer: String,
}

impl VerifiedBundle {
    /// The staging directory holding the entries.
    pub fn dir(&self) -> &Path {
        self.staging.path()
    }

    /// Moves the extracted tree to `target` with one rename (so `target` must be on the file
    /// system of the staging parent and must not exist, or be an empty directory).
    pub fn commit_to(self, target: &Path) -> Result<(), BundleError> {
        std::fs::rename(self.staging.path(), target).map_err(|e| BundleError::io(target, e))?;
        // Renamed away: nothing left for the TempDir to remove.
        let _ = self.staging.keep();
        match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => crate::sync_dir(p),
            _ => crate::sync_dir(Path::new(".")),
        }
    }
}

impl BundleReader {
    /// Verifies and extracts the bundle made of `parts` (one file, or `FILE.part-NNN` in any
    /// order) into a fresh directory under `staging_parent`, which should be on the same file
    /// system as the final place so that [`VerifiedBundle::commit_to`] is an atomic rename.
    /// `trusted` are the keys whose signature on the manifest this site accepts.
    pub fn open(
        parts: &[PathBuf],
        limits: Limits,
        trusted: &[TrustedKey],
        staging_parent: &Path,
    ) -> Result<VerifiedBundle, BundleError> {
        Self::open_with_progress(parts, limits, trusted, staging_parent, None)
    }

    /// [`open`](Self::open), adding the unpacked bytes to `progress` as they stream (the
    /// manifest's total size is the end).
    pub fn open_with_progress(
        parts: &[PathBuf],
        limits: Limits,
        trusted: &[TrustedKey],
        staging_parent: &Path,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<VerifiedBundle, BundleError> {
        let parts = parts::order(parts)?;
        let staging = tempfile::Builder::new()
            .prefix(".fleetlet-bundle-")
            .tempdir_in(staging_parent)
            .map_err(|e| BundleError::io(staging_parent, e))?;
        // On error `staging` is dropped here, which removes it and whatever was written.
        let (manifest, signer) = extract(&parts, limits, trusted, staging.path(), progress, true)?;
        Ok(VerifiedBundle {
            staging,
            manifest,
            signer,
        })
    }

    /// [`open`](Self::open) for a bundle only read and thrown away (a report over many
    /// audit exports, an inspection): every check is the same, but nothing is fsynced, as
    /// nothing extracted is kept past the returned value.
    pub fn open_scratch(
        parts: &[PathBuf],
        limits: Limits,
        trusted: &[TrustedKey],
        staging_parent: &Path,
    ) -> Result<VerifiedBundle, BundleError> {
        let parts = parts::order(parts)?;
        let staging = tempfile::Builder::new()
            .prefix(".fleetlet-bundle-")
            .tempdir_in(staging_parent)
            .map_err(|e| BundleError::io(staging_parent, e))?;
        let (manifest, signer) = extract(&parts, limits, trusted, staging.path(), None, false)?;
        Ok(VerifiedBundle {
            staging,
            manifest,
            signer,
        })
    }

    /// The manifest and the fingerprint of the key that *claims* to have signed it, reading
    /// only the head of the bundle and extracting nothing. Nothing here is verified against
    /// trusted keys: this is for showing an operator what is on a medium.
    pub fn inspect(parts: &[PathBuf]) -> Result<(Manifest, String), BundleError> {
        let parts = parts::order(parts)?;
        let cap = MAX_MANIFEST_BYTES + MAX_SIG_BYTES + MAX_KEY_BYTES + (64 << 10);
        let mut stream = Stream::open(&parts, cap, None)?;
        let state = stream.state.clone();
        let mut entries = stream.entries()?;
        let head = read_head(&mut entries, &state)?;
        let manifest = Manifest::parse(&head.manifest)?;
        Ok((manifest, head.claimed_signer))
    }
}

/// What the layers below tar saw go wrong: tar only passes an `io::Error` on, and would
/// describe a part's read error or the size cap as something vaguer.
#[derive(Default)]
struct StreamState {
    failure: Rc<RefCell<Option<BundleError>>>,
    /// Unpacked bytes so far, for a progress bar drawn by another thread.
    progress: Option<Arc<AtomicU64>>,
}

impl StreamState {
    fn fail(&self, error: BundleError) {
        self.failure.borrow_mut().get_or_insert(error);
    }

    /// The reason for `error`, which surfaced through tar.
    fn classify(&self, error: io::Error) -> BundleError {
        if let Some(recorded) = self.failure.borrow_mut().take() {
            return recorded;
        }
        if error.kind() == io::ErrorKind::UnexpectedEof {
            BundleError::Truncated {
                detail: error.to_string(),
            }
        } else {
            BundleError::Corrupt {
                detail: format!("tar: {error}"),
            }
        }
    }
}

/// Counts the decompressed bytes and stops the stream as soon as they exceed the cap, before
/// they go anywhere; records decoder errors.
struct CappedReader<R> {
    inner: R,
    unpacked: u64,
    limit: u64,
    state: Rc<StreamState>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.unpacked += n as u64;
                if let Some(p) = &self.state.progress {
                    p.fetch_add(n as u64, Ordering::Relaxed);
                }
                if self.unpacked > self.limit {
                    self.state
                        .fail(BundleError::UnpackedTooLarge { limit: self.limit });
                    return Err(io::Error::other("unpacked size limit exceeded"));
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.state
                    .fail(if e.kind() == io::ErrorKind::UnexpectedEof {
                        BundleError::Truncated {
                            detail: format!("zstd: {e}"),
                        }
                    } else {
                        BundleError::Corrupt {
                            detail: format!("zstd: {e}"),
                        }
                    });
                Err(e)
            }
        }
    }
}

type Decoder = zstd::stream::read::Decoder<'static, io::BufReader<PartReader>>;

struct Stream {
    archive: tar::Archive<CappedReader<Decoder>>,
    state: Rc<StreamState>,
}

impl Stream {
    fn open(
        parts: &[PathBuf],
        cap: u64,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<Stream, BundleError> {
        let state = Rc::new(StreamState {
            progress,
            ..StreamState::default()
        });
        let reader = PartReader::open(parts, state.failure.clone())?;
        let first = parts.first().cloned().unwrap_or_default();
        let decoder =
            zstd::stream::read::Decoder::with_buffer(io::BufReader::with_capacity(BUF, reader))
                .map_err(|e| BundleError::io(first, e))?;
        let capped = CappedReader {
            inner: decoder,
            unpacked: 0,
            limit: cap,
            state: state.clone(),
        };
        Ok(Stream {
            archive: tar::Archive::new(capped),
            state,
        })
    }

    /// Raw entries: GNU long names and PAX headers come to us as entries instead of being
    /// applied (or buffered without bound) by the tar crate; the reader allows only long names.
    fn entries(&mut self) -> Result<tar::Entries<'_, CappedReader<Decoder>>, BundleError> {
        let state = self.state.clone();
        self.archive
            .entries()
            .map(|e| e.raw(true))
            .map_err(|e| state.classify(e))
    }
}

struct Head {
    manifest: Vec<u8>,
    signature: String,
    claimed_signer: String,
}

type Entries<'a> = tar::Entries<'a, CappedReader<Decoder>>;

/// Reads `manifest.json`, `manifest.sig`, `manifest.key`: they must be the first three entries,
/// regular files of bounded size.
fn read_head(entries: &mut Entries<'_>, state: &StreamState) -> Result<Head, BundleError> {
    let mut next =
        |name: &'static str, limit: u64| -> Result<Result<Vec<u8>, String>, BundleError> {
            let Some(entry) = entries.next() else {
                return Ok(Err("the end of the bundle".into()));
            };
            let mut entry = entry.map_err(|e| state.classify(e))?;
            let found = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
            if found != name {
                return Ok(Err(found));
            }
            let entry_type = entry.header().entry_type();
            if !is_regular(entry_type) {
                return Err(BundleError::EntryType {
                    path: found,
                    kind: type_name(entry_type),
                });
            }
            let size = entry.size();
            if size > limit {
                return Err(BundleError::HeadEntryTooLarge {
                    path: name.into(),
                    what: "the file",
                    size,
                    limit,
                });
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| state.classify(e))?;
            if bytes.len() as u64 != size {
                return Err(BundleError::Truncated {
                    detail: format!("{name} ends after {} of {size} bytes", bytes.len()),
                });
            }
            Ok(Ok(bytes))
        };
    let manifest = next(MANIFEST_JSON, MAX_MANIFEST_BYTES)?
        .map_err(|found| BundleError::ManifestMissing { found })?;
    let signature =
        next(MANIFEST_SIG, MAX_SIG_BYTES)?.map_err(|found| BundleError::Unsigned { found })?;
    let key =
        next(MANIFEST_KEY, MAX_KEY_BYTES)?.map_err(|found| BundleError::SignerMissing { found })?;
    // Shown in messages: keep it printable and short whatever the file holds.
    let claimed_signer: String = String::from_utf8_lossy(&key)
        .trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(100)
        .collect();
    Ok(Head {
        manifest,
        signature: String::from_utf8_lossy(&signature).trim().to_string(),
        claimed_signer,
    })
}

/// The fingerprint of the trusted key whose signature over the manifest verifies.
fn verify_signature(head: &Head, trusted: &[TrustedKey]) -> Result<String, BundleError> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&head.signature)
        .map_err(|_| BundleError::SignatureEncoding)?;
    if let Some(key) = trusted
        .iter()
        .find(|k| k.verifies(&signature, &head.manifest))
    {
        return Ok(key.fingerprint());
    }
    // `manifest.key` is not signed: it only decides which message is more helpful.
    let fingerprint = head.claimed_signer.clone();
    if trusted.iter().any(|k| k.fingerprint() == fingerprint) {
        Err(BundleError::BadSignature { fingerprint })
    } else {
        Err(BundleError::UntrustedSigner { fingerprint })
    }
}

fn is_regular(t: tar::EntryType) -> bool {
    // `EntryType::new(b'\0')` (pre-POSIX regular file) is also `Regular`.
    t == tar::EntryType::Regular
}

/// How an entry type is named in messages.
fn type_name(t: tar::EntryType) -> String {
    use tar::EntryType as T;
    match t {
        T::Symlink => "symlink".into(),
        T::Link => "hard link".into(),
        T::Char => "character device".into(),
        T::Block => "block device".into(),
        T::Fifo => "fifo".into(),
        T::Continuous => "contiguous file".into(),
        T::GNULongLink => "GNU long link name".into(),
        T::GNUSparse => "GNU sparse file".into(),
        T::XGlobalHeader => "PAX global header".into(),
        T::XHeader => "PAX header".into(),
        other => format!("type {:?}", other.as_byte() as char),
    }
}

fn extract(
    parts: &[PathBuf],
    limits: Limits,
    trusted: &[TrustedKey],
    staging: &Path,
    progress: Option<Arc<AtomicU64>>,
    durable: bool,
) -> Result<(Manifest, String), BundleError> {
    let mut stream = Stream::open(parts, limits.max_unpacked, progress)?;
    let state = stream.state.clone();
    let mut entries = stream.entries()?;

    let head = read_head(&mut entries, &state)?;
    let signer = verify_signature(&head, trusted)?;
    let manifest = Manifest::parse(&head.manifest)?;
    if manifest.entries.len() > limits.max_entries {
        return Err(BundleError::TooManyEntries {
            count: manifest.entries.len(),
            limit: limits.max_entries,
        });
    }
    // The honest bomb: a manifest that declares more than the cap is refused before reading on.
    if manifest.total_size() > limits.max_unpacked {
        return Err(BundleError::UnpackedTooLarge {
            limit: limits.max_unpacked,
        });
    }

    // Three stages, so that hashing, decompressing-and-writing and waiting for the disk
    // overlap: this thread reads the stream and writes the files; a second hashes what was
    // written and compares with the manifest; a third fsyncs finished files. All three must
    // succeed before anything is returned, so the order in which they notice errors does not
    // matter for safety, only for which error is reported (the hasher's concerns an earlier
    // entry than this thread's, so it wins).
    let dirs = std::thread::scope(|scope| {
        let (hash_tx, hash_rx) = mpsc::channel::<HashJob>();
        let (pool_tx, pool_rx) = mpsc::channel::<Vec<u8>>();
        let (sync_tx, sync_rx) = mpsc::channel::<(PathBuf, File)>();
        for _ in 0..POOL {
            pool_tx.send(vec![0u8; BUF]).expect("receiver is alive");
        }
        let hasher = scope.spawn(move || hash_worker(hash_rx, pool_tx));
        let syncer = scope.spawn(move || sync_worker(sync_rx, durable));
        let stages = Stages {
            hash: hash_tx,
            pool: pool_rx,
            sync: sync_tx,
        };
        let written = write_entries(entries, &manifest, &state, staging, stages);
        let hashed = hasher.join().expect("the hashing thread does not panic");
        let synced = syncer.join().expect("the fsync thread does not panic");
        match (hashed, written) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(dirs)) => synced.map(|()| dirs),
        }
    })?;

    // Read to the end of the zstd stream: that is where its checksum is verified and where
    // truncation shows; after the tar's end-of-archive block only zero padding may follow.
    let mut rest = stream.archive.into_inner();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(state.classify(e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(BundleError::Corrupt {
                detail: "data after the end of the tar archive".into(),
            });
        }
    }

    if durable {
        for dir in &dirs {
            crate::sync_dir(dir)?;
        }
    }
    Ok((manifest, signer))
}

/// Copy buffers in flight between the writing and the hashing thread (each `BUF` bytes).
const POOL: usize = 4;

enum HashJob {
    Start { path: String, expected: Digest },
    Data { buf: Vec<u8>, len: usize },
    End,
}

/// The writing thread's ends of the pipeline.
struct Stages {
    hash: mpsc::Sender<HashJob>,
    pool: mpsc::Receiver<Vec<u8>>,
    sync: mpsc::Sender<(PathBuf, File)>,
}

/// Stands for "a later stage stopped": its own error is the one to report.
fn stage_stopped() -> BundleError {
    BundleError::Corrupt {
        detail: "a verification stage stopped".into(),
    }
}

/// Hashes each entry as written and compares with the manifest; returns buffers for reuse.
fn hash_worker(
    jobs: mpsc::Receiver<HashJob>,
    pool: mpsc::Sender<Vec<u8>>,
) -> Result<(), BundleError> {
    let mut current: Option<(String, Digest, Sha256)> = None;
    // A closed channel means the writing thread is done, or failed and will say why.
    while let Ok(job) = jobs.recv() {
        match job {
            HashJob::Start { path, expected } => current = Some((path, expected, Sha256::new())),
            HashJob::Data { buf, len } => {
                if let Some((_, _, hasher)) = &mut current {
                    hasher.update(&buf[..len]);
                }
                let _ = pool.send(buf);
            }
            HashJob::End => {
                if let Some((path, expected, hasher)) = current.take() {
                    let actual = Digest::from_bytes(hasher.finalize().into());
                    if actual != expected {
                        return Err(BundleError::DigestMismatch {
                            path,
                            actual,
                            expected,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Fsyncs finished files while later ones are being written.
fn sync_worker(files: mpsc::Receiver<(PathBuf, File)>, durable: bool) -> Result<(), BundleError> {
    let mut result = Ok(());
    while let Ok((path, file)) = files.recv() {
        if durable && result.is_ok() {
            result = file.sync_all().map_err(|e| BundleError::io(path, e));
        }
    }
    result
}

/// Checks each entry's header against the manifest and writes its data into `staging`.
/// Returns the directories created (to be fsynced).
fn write_entries(
    entries: Entries<'_>,
    manifest: &Manifest,
    state: &StreamState,
    staging: &Path,
    stages: Stages,
) -> Result<BTreeSet<PathBuf>, BundleError> {
    let mut seen: HashSet<String> = HashSet::with_capacity(manifest.entries.len());
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::from([staging.to_path_buf()]);
    let mut long_name: Option<Vec<u8>> = None;
    let mut spare: Option<Vec<u8>> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| state.classify(e))?;
        let entry_type = entry.header().entry_type();
        if entry_type.is_gnu_longname() {
            if long_name.is_some() {
                return Err(BundleError::Corrupt {
                    detail: "two GNU long names for one entry".into(),
                });
            }
            let size = entry.size();
            if size > path::MAX_PATH as u64 + 1 {
                return Err(BundleError::PathTooLong {
                    path: "(GNU long name)".into(),
                    limit: path::MAX_PATH,
                });
            }
            let mut name = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut name)
                .map_err(|e| state.classify(e))?;
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            continue;
        }
        let raw_path = long_name
            .take()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());

        if entry_type == tar::EntryType::Directory {
            // Tolerated (other tools write them) but not created: the manifest lists files.
            let raw = raw_path.strip_suffix(b"/").unwrap_or(&raw_path);
            let path = path::validate(raw)?;
            if manifest.entry(&path).is_some() {
                return Err(BundleError::DirectoryConflict { path });
            }
            continue;
        }
        if !is_regular(entry_type) {
            return Err(BundleError::EntryType {
                path: String::from_utf8_lossy(&raw_path).into_owned(),
                kind: type_name(entry_type),
            });
        }
        let path = path::validate(&raw_path)?;
        let Some(expected) = manifest.entry(&path) else {
            return Err(BundleError::NotInManifest { path });
        };
        if !seen.insert(path.clone()) {
            return Err(BundleError::Duplicate { path });
        }
        if entry.size() != expected.size {
            return Err(BundleError::SizeMismatch {
                path,
                actual: entry.size(),
                expected: expected.size,
            });
        }

        let target = staging.join(&path);
        for dir in path::ancestors(&path) {
            let dir = staging.join(dir);
            if !dirs.contains(&dir) {
                std::fs::create_dir(&dir).map_err(|e| BundleError::io(&dir, e))?;
                dirs.insert(dir);
            }
        }
        // `create_new`: never through anything already there (there is nothing, the staging
        // directory is fresh and duplicates are refused; this is the belt to those braces).
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| BundleError::io(&target, e))?;
        stages
            .hash
            .send(HashJob::Start {
                path: path.clone(),
                expected: expected.sha256,
            })
            .map_err(|_| stage_stopped())?;
        let mut written = 0u64;
        loop {
            let mut buf = match spare.take() {
                Some(buf) => buf,
                None => stages.pool.recv().map_err(|_| stage_stopped())?,
            };
            let len = match read_full(&mut entry, &mut buf) {
                Ok(0) => {
                    // Nothing to hash in it: keep it for the next entry.
                    spare = Some(buf);
                    break;
                }
                Ok(n) => n,
                Err(e) => return Err(state.classify(e)),
            };
            file.write_all(&buf[..len])
                .map_err(|e| BundleError::io(&target, e))?;
            written += len as u64;
            stages
                .hash
                .send(HashJob::Data { buf, len })
                .map_err(|_| stage_stopped())?;
        }
        if written != expected.size {
            // The tar crate ends an entry quietly when the stream does; the layers below may
            // know why.
            return Err(state.failure.borrow_mut().take().unwrap_or_else(|| {
                BundleError::Truncated {
                    detail: format!(
                        "entry {path} ends after {written} of {} bytes",
                        expected.size
                    ),
                }
            }));
        }
        stages
            .hash
            .send(HashJob::End)
            .map_err(|_| stage_stopped())?;
        stages
            .sync
            .send((target, file))
            .map_err(|_| stage_stopped())?;
    }
    if long_name.is_some() {
        return Err(BundleError::Corrupt {
            detail: "a GNU long name with no entry after it".into(),
        });
    }
    if let Some(missing) = manifest.entries.iter().find(|e| !seen.contains(&e.path)) {
        return Err(BundleError::MissingEntry {
            path: missing.path.clone(),
        });
    }
    Ok(dirs)
}

/// Fills `buf` as far as the entry goes (fewer, larger writes and hash updates); 0 at its end.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_reader_stops_at_the_limit() {
        let state = Rc::new(StreamState::default());
        let limit = 100 << 20;
        let mut capped = CappedReader {
            inner: io::repeat(0),
            unpacked: 0,
            limit,
            state: state.clone(),
        };
        // An endless source: only the cap ends this.
        let err = io::copy(&mut capped, &mut io::sink()).unwrap_err();
        assert!(capped.unpacked <= limit + 64 * 1024, "read on past the cap");
        assert!(matches!(
            state.classify(err),
            BundleError::UnpackedTooLarge { limit: l } if l == limit
        ));
    }
}

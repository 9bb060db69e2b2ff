//! The OCI image layout on disk: opening it, reading blobs, and the tagged entries of
//! `index.json`.

use crate::writer::{Claim, Inflight, WriteSlot};
use fleetlet_core::Digest;
use fleetlet_engine::registry::Descriptor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Order in which entries were (re)tagged: one more than the highest in `index.json` when set.
/// Several entries can name one tag (`registry/repo:tag@digest` per digest it resolved to); the
/// highest is what the store last pulled for it. A counter, not a time: edge clocks jump.
pub const TAG_SEQUENCE: &str = "dev.fleetlet.tag-sequence";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("artifact store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("artifact store {path}: index.json is unreadable: {message}")]
    BadIndex { path: PathBuf, message: String },
}

pub(crate) fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

/// One entry of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl RefEntry {
    pub fn name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }

    /// The entry's [`TAG_SEQUENCE`]; 0 for entries written without one (older agents, tools).
    pub fn sequence(&self) -> u64 {
        self.annotations
            .get(TAG_SEQUENCE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<RefEntry>,
}

pub struct OciStore {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    /// Serialises read-modify-write of `index.json` within this process.
    index_lock: Mutex<()>,
    pub(crate) inflight: Mutex<HashMap<Digest, Arc<Inflight>>>,
}

impl OciStore {
    /// Creates an empty layout at `root` all at once: built beside it, then renamed into
    /// place, so a process killed while creating it leaves no half-made store behind.
    fn create(root: &Path) -> Result<(), StoreError> {
        let parent = root.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|e| io_err(parent, "creating", e))?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staging = parent.join(format!(".{name}.new-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        let blobs = staging.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| io_err(&blobs, "creating", e))?;
        fs::create_dir_all(staging.join(".tmp")).map_err(|e| io_err(&staging, "creating", e))?;
        let index = serde_json::to_vec(&Index {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            manifests: vec![],
        })
        .unwrap_or_default();
        for (file, bytes) in [
            ("oci-layout", OCI_LAYOUT.as_bytes()),
            ("index.json", &index[..]),
        ] {
            let path = staging.join(file);
            let written = fs::File::create(&path).and_then(|mut f| {
                std::io::Write::write_all(&mut f, bytes)?;
                f.sync_all()
            });
            written.map_err(|e| io_err(&path, "writing", e))?;
        }
        match fs::rename(&staging, root) {
            Ok(()) => Ok(()),
            // Another process created it first: use theirs.
            Err(_) if root.join("oci-layout").exists() => {
                let _ = fs::remove_dir_all(&staging);
                Ok(())
            }
            Err(e) => Err(io_err(root, "creating", e)),
        }
    }

    /// Opens (creating if needed) the layout at `root` and drops leftovers of interrupted writes.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        if !root.exists() {
            Self::create(root)?;
        }
        let blobs = root.join("blobs").join("sha256");
        let tmp = root.join(".tmp");
        fs::create_dir_all(&blobs).map_err(|e| io_err(&blobs, "creating", e))?;
        fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, "creating", e))?;
        // Leftovers of writers that died; another live process's download (the agent while
        // the CLI runs) is left alone.
        for entry in fs::read_dir(&tmp)
            .map_err(|e| io_err(&tmp, "listing", e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let writer_alive = name
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| {
                    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
                });
            if !writer_alive {
                let _ = fs::remove_file(entry.path());
            }
        }
        let store = OciStore {
            root: root.to_path_buf(),
            blobs,
            tmp,
            index_lock: Mutex::new(()),
            inflight: Mutex::new(HashMap::new()),
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, OCI_LAYOUT.as_bytes())?;
        }
        if !root.join("index.json").exists() {
            store.write_index(&Index {
                schema_version: 2,
                media_type: Some(INDEX_MEDIA_TYPE.into()),
                manifests: vec![],
            })?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path_of(digest).is_file()
    }

    /// Size on disk of a stored blob.
    pub fn size_of(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path_of(digest)).ok().map(|m| m.len())
    }

    /// The blob's bytes, verified against its digest; `None` when absent.
    pub fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "reading", e)),
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(Some(bytes))
    }

    /// Opens a blob for streaming (the registry mirror); not re-verified here.
    pub fn open_blob(&self, digest: &Digest) -> Option<fs::File> {
        fs::File::open(self.path_of(digest)).ok()
    }

    /// A slot to write `digest`: `Present` when the store has it (or another writer in this
    /// process just finished it), else a writer that owns the download until committed or
    /// dropped. `size`, when known, is enforced while writing.
    pub fn slot(&self, digest: &Digest, size: Option<u64>) -> Result<WriteSlot<'_>, StoreError> {
        loop {
            if self.contains(digest) {
                return Ok(WriteSlot::Present);
            }
            let waiting = {
                let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(digest) {
                    Some(other) => other.clone(),
                    None => {
                        let claim = Arc::new(Inflight::default());
                        map.insert(*digest, claim.clone());
                        let claim = Claim::new(self, *digest, claim);
                        return crate::writer::BlobWriter::new(self, *digest, size, claim)
                            .map(|w| WriteSlot::Writer(Box::new(w)));
                    }
                }
            };
            // Another writer has it: wait, then look again (it may have failed).
            waiting.wait();
        }
    }

    /// Stores `bytes` (verified against their own digest) and returns the digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        // A blob already there is kept only if intact: bit rot is repaired by the next put.
        if let Ok(existing) = fs::read(self.path_of(&digest))
            && Digest::of(&existing) == digest
        {
            return Ok(digest);
        }
        let _ = fs::remove_file(self.path_of(&digest));
        match self.slot(&digest, Some(bytes.len() as u64))? {
            WriteSlot::Present => Ok(digest),
            WriteSlot::Writer(mut w) => {
                w.write_all(bytes)
                    .map_err(|e| io_err(&self.tmp, "writing", e))?;
                let d = w.commit()?;
                // A lone blob (a repo component, a manifest) is made durable at once; streamed
                // pulls sync the folder once, before tagging.
                sync_dir(&self.blobs);
                Ok(d)
            }
        }
    }

    /// Every tagged entry of `index.json`.
    pub fn refs(&self) -> Result<Vec<RefEntry>, StoreError> {
        Ok(self.read_index()?.manifests)
    }

    /// Points `name` at `descriptor` in `index.json` (replacing an entry of the same name).
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        self.set_refs(&[(name.to_string(), descriptor.clone())])
    }

    /// Points every name at its descriptor with one atomic write of `index.json`, in order (a
    /// later entry counts as tagged later): an imported bundle's tags appear all at once.
    pub fn set_refs(&self, entries: &[(String, Descriptor)]) -> Result<(), StoreError> {
        // Blobs renamed into place become durable before anything names them.
        sync_dir(&self.blobs);
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _file_lock = self.lock_index_file()?;
        let mut index = self.read_index()?;
        let mut sequence = index
            .manifests
            .iter()
            .map(RefEntry::sequence)
            .max()
            .unwrap_or(0);
        for (name, descriptor) in entries {
            sequence += 1;
            index.manifests.retain(|m| m.name() != Some(name.as_str()));
            index.manifests.push(RefEntry {
                media_type: descriptor.media_type.clone(),
                digest: descriptor.digest,
                size: descriptor.size,
                annotations: BTreeMap::from([
                    (REF_NAME.to_string(), name.clone()),
                    (TAG_SEQUENCE.to_string(), sequence.to_string()),
                ]),
            });
        }
        index.manifests.sort_by(|a, b| a.name().cmp(&b.name()));
        self.write_index(&index)
    }

    /// Moves `file`, whose contents the caller has already hashed to `digest` (a sync bundle's
    /// reader checks every entry against its signed manifest as it extracts it) and fsynced,
    /// into the store under that name. `file` must be on the store's file system; a blob the
    /// store already has is kept and `file` is left alone. Nothing names the blob yet.
    pub fn adopt(&self, digest: &Digest, file: &Path) -> Result<(), StoreError> {
        if self.contains(digest) {
            return Ok(());
        }
        let target = self.path_of(digest);
        // Dated now, not when it was unpacked: garbage collection spares young blobs, and this
        // one is named only once the import publishes.
        fs::File::options()
            .write(true)
            .open(file)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .map_err(|e| io_err(file, "dating", e))?;
        fs::rename(file, &target).map_err(|e| io_err(&target, "moving into the store", e))
    }

    /// Serialises `index.json` updates across processes (the agent, and `fleetlet bundle
    /// import` run by hand beside it); the in-process mutex alone would let one lose the
    /// other's tags.
    fn lock_index_file(&self) -> Result<fs::File, StoreError> {
        let path = self.root.join(".index.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, "opening", e))?;
        file.lock().map_err(|e| io_err(&path, "locking", e))?;
        Ok(file)
    }

    /// Removes the entry `name` from `index.json`; true when there was one.
    pub fn remove_ref(&self, name: &str) -> Result<bool, StoreError> {
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _file_lock = self.lock_index_file()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index.manifests.retain(|m| m.name() != Some(name));
        let removed = index.manifests.len() != before;
        if removed {
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// Every stored blob with its size, in digest order.
    pub fn blobs(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs)
            .map_err(|e| io_err(&self.blobs, "listing", e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let (Ok(d), Ok(meta)) =
                (format!("sha256:{name}").parse::<Digest>(), entry.metadata())
            {
                out.push((d, meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.root.join("index.json");
        let mut text = String::new();
        fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| io_err(&path, "reading", e))?;
        serde_json::from_str(&text).map_err(|e| StoreError::BadIndex {
            path,
            message: e.to_string(),
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(index).expect("index serialises");
        self.write_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Write-temp, fsync, rename, fsync folder.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)
            .map_err(|e| io_err(&self.tmp, "creating temp file", e))?;
        tmp.write_all(bytes)
            .map_err(|e| io_err(path, "writing", e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io_err(path, "fsync", e))?;
        tmp.persist(path)
            .map_err(|e| io_err(path, "renaming into place", e.error))?;
        sync_dir(path.parent().unwrap_or(&self.root));
        Ok(())
    }
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

//! A content-addressed blob store on disk: `<root>/sha256/<hex>`. A blob lands by write-temp,
//! fsync, verify digest, rename, then fsync of the folder — a reader never sees a partial blob,
//! and a crash leaves at most a stray temp file (removed on open).

use fleetlet_core::Digest;
use fleetlet_engine::ports::{BlobStore, StoreError};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FsBlobStore {
    dir: PathBuf,
}

impl FsBlobStore {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let dir = root.join("sha256");
        fs::create_dir_all(&dir)?;
        // Temp files are leftovers of a crash mid-write: never valid, safe to drop.
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(FsBlobStore { dir })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }
}

fn io_err(digest: &Digest, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io {
        digest: digest.to_string(),
        message: format!("{what}: {e}"),
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        let path = self.path_of(&digest);
        // A blob already there is kept only if it is still intact: bit rot is repaired by the
        // next put of the same content.
        if let Ok(existing) = fs::read(&path)
            && Digest::of(&existing) == digest
        {
            return Ok(digest);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(|e| io_err(&digest, "creating temp file", e))?;
        let mut f = tmp.as_file();
        f.write_all(bytes)
            .map_err(|e| io_err(&digest, "writing", e))?;
        f.sync_all().map_err(|e| io_err(&digest, "fsync", e))?;
        // Verify what reached the disk, not what we meant to write.
        let written = fs::read(tmp.path()).map_err(|e| io_err(&digest, "re-reading", e))?;
        let actual = Digest::of(&written);
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        tmp.persist(&path)
            .map_err(|e| io_err(&digest, "renaming into place", e.error))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(digest)
    }

    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes = match fs::read(self.path_of(digest)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(digest, "reading", e)),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_digest_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let d = store.put(b"component").unwrap();
        assert_eq!(d, Digest::of(b"component"));
        assert_eq!(store.get(&d).unwrap().as_deref(), Some(&b"component"[..]));
        assert_eq!(store.get(&Digest::of(b"other")).unwrap(), None);
        fs::write(store.path_of(&d), b"tampered").unwrap();
        assert!(matches!(
            store.get(&d),
            Err(StoreError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn drops_leftover_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sha256")).unwrap();
        fs::write(dir.path().join("sha256/.tmp-abc"), b"half").unwrap();
        FsBlobStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("sha256/.tmp-abc").exists());
    }
}

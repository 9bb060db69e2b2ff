//! Writing one blob: hashed as it streams into a temp file, then fsynced, checked against the
//! expected digest and size, and renamed into place. Dropping an uncommitted writer leaves
//! nothing behind. A claim makes concurrent writers of the same blob in this process wait for
//! the first one instead of downloading twice.

use crate::layout::{OciStore, StoreError, io_err};
use fleetlet_core::Digest;
use fleetlet_engine::registry::BlobSink;
use sha2::{Digest as _, Sha256};
use std::io::{Seek, Write};
use std::sync::{Arc, Condvar, Mutex};

/// What [`OciStore::slot`] hands out.
pub enum WriteSlot<'s> {
    /// The blob is in the store: nothing to download.
    Present,
    /// This caller owns the download.
    Writer(Box<BlobWriter<'s>>),
}

#[derive(Default)]
pub(crate) struct Inflight {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Inflight {
    pub(crate) fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Releases the in-process claim on a digest when the writer is committed or dropped.
pub(crate) struct Claim<'s> {
    store: &'s OciStore,
    digest: Digest,
    inflight: Arc<Inflight>,
}

impl<'s> Claim<'s> {
    pub(crate) fn new(store: &'s OciStore, digest: Digest, inflight: Arc<Inflight>) -> Self {
        Claim {
            store,
            digest,
            inflight,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.digest);
        *self.inflight.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.inflight.cv.notify_all();
    }
}

pub struct BlobWriter<'s> {
    store: &'s OciStore,
    expected: Digest,
    size: Option<u64>,
    file: tempfile::NamedTempFile,
    /// Network reads arrive in small chunks; writing them in large batches saves syscalls.
    pending: Vec<u8>,
    hasher: Sha256,
    written: u64,
    _claim: Claim<'s>,
}

const WRITE_BATCH: usize = 1 << 20;

impl<'s> BlobWriter<'s> {
    pub(crate) fn new(
        store: &'s OciStore,
        expected: Digest,
        size: Option<u64>,
        claim: Claim<'s>,
    ) -> Result<Self, StoreError> {
        let file = tempfile::Builder::new()
            // The pid lets a later `open` tell a dead writer's leftovers from a live download.
            .prefix(&format!("{}-{}-", std::process::id(), expected.hex()))
            .tempfile_in(store.tmp_dir())
            .map_err(|e| io_err(store.tmp_dir(), "creating temp file", e))?;
        Ok(BlobWriter {
            store,
            expected,
            size,
            file,
            pending: Vec::with_capacity(WRITE_BATCH),
            hasher: Sha256::new(),
            written: 0,
            _claim: claim,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the blob visible if — and only if — it is complete and has the expected digest.
    pub fn commit(mut self: Box<Self>) -> Result<Digest, StoreError> {
        let path = self.store.path_of(&self.expected);
        self.flush().map_err(|e| io_err(&path, "flushing", e))?;
        if let Some(size) = self.size
            && size != self.written
        {
            return Err(StoreError::SizeMismatch {
                digest: self.expected,
                expected: size,
                actual: self.written,
            });
        }
        let actual = Digest::from_bytes(std::mem::take(&mut self.hasher).finalize().into());
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                expected: self.expected,
                actual,
            });
        }
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| io_err(&path, "fsync", e))?;
        let BlobWriter { file, store, .. } = *self;
        file.persist(&path)
            .map_err(|e| io_err(&path, "renaming into place", e.error))?;
        // The folder is fsynced once per pull, before the index names the blobs (set_ref): a
        // crash before that may lose a renamed blob, never expose a partial one.
        let _ = store;
        Ok(actual)
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(size) = self.size
            && self.written + buf.len() as u64 > size
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "blob {} is longer than its declared {size} bytes",
                    self.expected
                ),
            ));
        }
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= WRITE_BATCH {
            self.file.write_all(&self.pending)?;
            self.pending.clear();
        }
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.pending.clear();
        }
        self.file.flush()
    }
}

impl BlobSink for BlobWriter<'_> {
    fn restart(&mut self) -> std::io::Result<()> {
        self.pending.clear();
        self.file.as_file_mut().set_len(0)?;
        self.file.as_file_mut().rewind()?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }
}

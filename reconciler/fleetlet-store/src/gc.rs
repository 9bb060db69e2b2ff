//! Keeping the store honest and small: `verify` re-hashes every blob and removes corrupt ones (the
//! next pull repairs them); `gc` removes blobs no root reaches.
//!
//! Reachability follows OCI: an index reaches its `manifests`, a manifest its `config`, `layers`
//! (and `blobs` of artifact manifests). Roots are the caller's (the last N applied releases) plus
//! every entry of `index.json`. Blobs younger than `min_age` are kept: they may belong to a pull
//! that has not recorded its release yet — and blobs being written are in `.tmp/`, never seen.

use crate::layout::{OciStore, StoreError, io_err};
use fleetlet_core::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    /// Blobs whose content did not match their name; removed.
    pub corrupt: Vec<Digest>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub kept: usize,
    /// Removed (or, in a dry run, removable) blobs with their sizes.
    pub removed: Vec<(Digest, u64)>,
}

impl GcReport {
    pub fn freed_bytes(&self) -> u64 {
        self.removed.iter().map(|(_, s)| s).sum()
    }
}

/// Children of a manifest or index blob; nothing for other blobs.
pub fn children(bytes: &[u8]) -> Vec<Digest> {
    #[derive(serde::Deserialize)]
    struct Desc {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        manifests: Vec<Desc>,
        #[serde(default)]
        config: Option<Desc>,
        #[serde(default)]
        layers: Vec<Desc>,
        #[serde(default)]
        blobs: Vec<Desc>,
    }
    // Layers are large and never JSON: skip anything that does not look like a document.
    if bytes.len() > fleetlet_engine::registry::MAX_MANIFEST_SIZE as usize
        || bytes.first() != Some(&b'{')
    {
        return vec![];
    }
    let Ok(doc) = serde_json::from_slice::<Doc>(bytes) else {
        return vec![];
    };
    doc.manifests
        .iter()
        .chain(doc.config.iter())
        .chain(doc.layers.iter())
        .chain(doc.blobs.iter())
        .filter_map(|d| d.digest.parse().ok())
        .collect()
}

impl OciStore {
    /// Re-hashes every blob; removes each one whose content does not match its name.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for (digest, _) in self.blobs()? {
            let path = self.path_of(&digest);
            let mut file = std::fs::File::open(&path).map_err(|e| io_err(&path, "opening", e))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| io_err(&path, "reading", e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            report.checked += 1;
            if Digest::from_bytes(hasher.finalize().into()) != digest {
                tracing::warn!(blob = %digest, "corrupt blob removed; the next pull fetches it again");
                std::fs::remove_file(&path).map_err(|e| io_err(&path, "removing", e))?;
                report.corrupt.push(digest);
            }
        }
        Ok(report)
    }

    /// Every blob reachable from `roots` alone.
    pub fn reachable_only(&self, roots: &BTreeSet<Digest>) -> Result<BTreeSet<Digest>, StoreError> {
        self.reachable_from(roots, false)
    }

    /// Every blob reachable from `roots` and from `index.json`.
    pub fn reachable(&self, roots: &BTreeSet<Digest>) -> Result<BTreeSet<Digest>, StoreError> {
        self.reachable_from(roots, true)
    }

    fn reachable_from(
        &self,
        roots: &BTreeSet<Digest>,
        index_is_root: bool,
    ) -> Result<BTreeSet<Digest>, StoreError> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Digest> = roots.iter().copied().collect();
        if index_is_root {
            todo.extend(self.refs()?.into_iter().map(|r| r.digest));
        }
        while let Some(d) = todo.pop() {
            if !seen.insert(d) {
                continue;
            }
            if let Ok(Some(bytes)) = self.read_small(&d) {
                todo.extend(children(&bytes));
            }
        }
        Ok(seen)
    }

    /// The agent's collection: index entries that no root names are untagged (old pulls), then
    /// everything the roots do not reach and older than `min_age` goes. A dry run changes
    /// nothing and reports what would go.
    pub fn collect_unused(
        &self,
        roots: &BTreeSet<Digest>,
        min_age: Duration,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        // Entries tagged moments ago (a sync bundle imported beside the agent, not applied
        // yet) are spared like young blobs: their manifest was written or adopted just now.
        let young = |d: &Digest| {
            std::fs::metadata(self.path_of(d))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < min_age)
        };
        let stale: Vec<String> = self
            .refs()?
            .into_iter()
            .filter(|e| !roots.contains(&e.digest) && !young(&e.digest))
            .filter_map(|e| e.name().map(String::from))
            .collect();
        if !dry_run {
            for name in &stale {
                self.remove_ref(name)?;
            }
        }
        self.sweep(roots, false, min_age, dry_run)
    }

    /// Removes blobs not reachable from `roots` (nor from `index.json`) and older than `min_age`.
    pub fn gc(
        &self,
        roots: &BTreeSet<Digest>,
        min_age: Duration,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        self.sweep(roots, true, min_age, dry_run)
    }

    fn sweep(
        &self,
        roots: &BTreeSet<Digest>,
        index_is_root: bool,
        min_age: Duration,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        let keep = self.reachable_from(roots, index_is_root)?;
        let now = SystemTime::now();
        let mut report = GcReport::default();
        for (digest, size) in self.blobs()? {
            let path = self.path_of(&digest);
            let young = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() < min_age)
                .unwrap_or(true);
            if keep.contains(&digest) || young {
                report.kept += 1;
                continue;
            }
            if !dry_run {
                std::fs::remove_file(&path).map_err(|e| io_err(&path, "removing", e))?;
            }
            report.removed.push((digest, size));
        }
        Ok(report)
    }

    /// A blob's bytes if it is small enough to be a manifest (layers are never read whole).
    fn read_small(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        match self.size_of(digest) {
            Some(size) if size <= fleetlet_engine::registry::MAX_MANIFEST_SIZE => self.read(digest),
            _ => Ok(None),
        }
    }
}

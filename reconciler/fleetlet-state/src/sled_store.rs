//! The agent state record in sled. The whole record is one value under one key, written with a
//! single `insert` and flushed before `save` returns: sled applies a single insert atomically, so
//! after a crash `load` returns the old record or the new one, never a mix.

use fleetlet_engine::AgentState;
use fleetlet_engine::ports::{StateError, StateStore};
use std::path::Path;

const KEY: &[u8] = b"agent-state";

pub struct SledStateStore {
    db: sled::Db,
}

impl SledStateStore {
    /// Opens (or creates) the database in `dir`. Fails when another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        // sled's flusher thread may hold the file lock for a moment after a previous handle in
        // this process (or a process just killed) let go: wait briefly before giving up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let result = sled::Config::new()
                .path(dir)
                // The record is small; a small cache keeps the agent's idle memory low.
                .cache_capacity(1 << 20)
                .open();
            match result {
                Ok(db) => return Ok(SledStateStore { db }),
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(StateError(format!("opening {}: {e}", dir.display()))),
            }
        }
    }
}

impl SledStateStore {
    /// The audit log's durable journal, a tree of the same database: one line per key, in
    /// append order.
    pub fn audit_journal(&self) -> Result<SledJournal, StateError> {
        let tree = self
            .db
            .open_tree(AUDIT_TREE)
            .map_err(|e| StateError(format!("opening the audit journal: {e}")))?;
        let next = tree
            .last()
            .map_err(|e| StateError(format!("reading the audit journal: {e}")))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, |k| u64::from_be_bytes(k) + 1);
        Ok(SledJournal { tree, next })
    }
}

const AUDIT_TREE: &[u8] = b"audit";

/// The audit log's lines in sled, keyed by their big-endian index.
pub struct SledJournal {
    tree: sled::Tree,
    next: u64,
}

impl fleetlet_audit::Journal for SledJournal {
    fn append(&mut self, line: &[u8]) -> Result<(), String> {
        self.tree
            .insert(self.next.to_be_bytes(), line)
            .map_err(|e| format!("writing: {e}"))?;
        // The one fsync an outcome costs the reconcile loop.
        self.tree.flush().map_err(|e| format!("flushing: {e}"))?;
        self.next += 1;
        Ok(())
    }

    fn append_all(&mut self, lines: &[Vec<u8>]) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for (i, line) in lines.iter().enumerate() {
            batch.insert(&(self.next + i as u64).to_be_bytes(), line.as_slice());
        }
        // One batch is applied atomically, and one flush makes all of it durable.
        self.tree
            .apply_batch(batch)
            .map_err(|e| format!("writing: {e}"))?;
        self.tree.flush().map_err(|e| format!("flushing: {e}"))?;
        self.next += lines.len() as u64;
        Ok(())
    }

    fn lines(&self) -> Result<Vec<Vec<u8>>, String> {
        self.tree
            .iter()
            .values()
            .map(|v| v.map(|v| v.to_vec()).map_err(|e| format!("reading: {e}")))
            .collect()
    }
}

impl StateStore for SledStateStore {
    fn load(&self) -> Result<Option<AgentState>, StateError> {
        let Some(bytes) = self
            .db
            .get(KEY)
            .map_err(|e| StateError(format!("reading the state record: {e}")))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError(format!("the state record is unreadable: {e}")))
    }

    fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state)
            .map_err(|e| StateError(format!("encoding the state record: {e}")))?;
        self.db
            .insert(KEY, bytes)
            .map_err(|e| StateError(format!("writing the state record: {e}")))?;
        self.db
            .flush()
            .map_err(|e| StateError(format!("flushing the state record: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_journal_keeps_lines_in_order_across_reopens() {
        use fleetlet_audit::Journal;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStateStore::open(dir.path()).unwrap();
            let mut j = store.audit_journal().unwrap();
            for i in 0..300u32 {
                j.append(format!("line {i}").as_bytes()).unwrap();
            }
        }
        let store = SledStateStore::open(dir.path()).unwrap();
        let mut j = store.audit_journal().unwrap();
        j.append(b"after reopen").unwrap();
        j.append_all(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
        let lines = j.lines().unwrap();
        assert_eq!(lines.len(), 303);
        assert_eq!(lines[301..], [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(lines[0], b"line 0");
        assert_eq!(lines[299], b"line 299");
        assert_eq!(lines[300], b"after reopen");
        // The state record beside it is untouched.
        assert!(store.load().unwrap().is_none());
    }

    #[test]
    fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = AgentState {
            version: 1,
            last_sync: Some(42),
            ..Default::default()
        };
        {
            let s = SledStateStore::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap(), None);
            s.save(&state).unwrap();
            state.last_sync = Some(43);
            s.save(&state).unwrap();
        }
        let s = SledStateStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), Some(state));
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStateStore::open(dir.path()).unwrap();
        assert!(SledStateStore::open(dir.path()).is_err());
    }
}

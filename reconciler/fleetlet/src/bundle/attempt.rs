//! Interrupted imports: `bundles/attempt.json` names the import under way; it is written before
//! the import starts and removed once its outcome is recorded. Found by the next import (under
//! the same lock, so nobody else is importing), it means the last one never finished: the agent
//! or the command was killed, or the machine lost power.
//!
//! That is recorded (outcome `interrupted` in `imports.jsonl`), and the inbox gives up on a
//! bundle whose import was interrupted [`INBOX_LIMIT`] times: the agent runs the site's Wasm
//! workloads in its own process, so a bundle that kills it (memory exhausted while unpacking)
//! must not take the site down again at every restart. The bundle is filed under `rejected/`
//! with the reason; copying it in again (a new file) starts the count afresh.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const ATTEMPT_FILE: &str = "attempt.json";
/// Interrupted imports of the same files after which the inbox files them as rejected.
pub const INBOX_LIMIT: u32 = 2;

/// One file of a bundle as it was when its import started: a copy put in its place is another
/// bundle (its count starts again), the same file is the same one however it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub name: String,
    pub len: u64,
    pub ino: u64,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub files: Vec<FileStamp>,
    /// Unix seconds.
    pub started: i64,
    /// How many imports of these same files were interrupted before this one started.
    pub interrupted_before: u32,
    /// Length of `imports.jsonl` when it started: only this import appends to it until the
    /// marker goes, so a longer log means it recorded its outcome (and died just after).
    pub log_len: u64,
}

impl Attempt {
    /// The files' names, for records and messages.
    pub fn names(&self) -> Vec<String> {
        self.files.iter().map(|f| f.name.clone()).collect()
    }
}

/// The stamps of `parts`; a file that cannot be read is stamped as missing (its import fails
/// on its own, with the reason).
pub fn stamps(parts: &[PathBuf]) -> Vec<FileStamp> {
    parts
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::metadata(p) {
                Ok(m) => FileStamp {
                    name,
                    len: m.len(),
                    ino: m.ino(),
                    mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
                },
                Err(_) => FileStamp {
                    name,
                    len: 0,
                    ino: 0,
                    mtime_ns: 0,
                },
            }
        })
        .collect()
}

/// The attempt a killed import left in `bundles`, if any. An unreadable marker counts as an
/// interrupted import of unknown files: something stopped mid-way all the same.
pub fn left_over(bundles: &Path) -> Option<Attempt> {
    let path = bundles.join(ATTEMPT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or(Attempt {
            files: Vec::new(),
            started: 0,
            interrupted_before: 0,
            log_len: u64::MAX,
        })),
        Err(_) => None,
    }
}

/// How many imports of `files` were interrupted, given what the last one left.
pub fn interrupted_count(files: &[FileStamp], left: Option<&Attempt>) -> u32 {
    match left {
        Some(a) if a.files == files => a.interrupted_before + 1,
        _ => 0,
    }
}

/// Writes the marker for the import about to start (temp, fsync, rename, fsync dir: a marker
/// that is there must be whole).
pub fn begin(bundles: &Path, attempt: &Attempt) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".attempt.")
        .tempfile_in(bundles)?;
    tmp.write_all(&serde_json::to_vec(attempt).unwrap_or_default())?;
    tmp.as_file().sync_all()?;
    tmp.persist(bundles.join(ATTEMPT_FILE))
        .map_err(|e| e.error)?;
    std::fs::File::open(bundles)?.sync_all()
}

/// Removes the marker once the import's outcome is recorded.
pub fn end(bundles: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(bundles.join(ATTEMPT_FILE)) {
        Ok(()) => std::fs::File::open(bundles)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(name: &str, ino: u64) -> FileStamp {
        FileStamp {
            name: name.into(),
            len: 10,
            ino,
            mtime_ns: 5,
        }
    }

    #[test]
    fn the_count_grows_only_for_the_same_files() {
        let a = vec![stamp("r.fleetbundle", 1)];
        let left = |files: Vec<FileStamp>, before| Attempt {
            files,
            started: 1,
            interrupted_before: before,
            log_len: 0,
        };
        let cases: &[(&str, Option<Attempt>, u32)] = &[
            ("nothing left over", None, 0),
            ("the same files, first time", Some(left(a.clone(), 0)), 1),
            ("the same files, again", Some(left(a.clone(), 1)), 2),
            (
                "a copy of it (new inode)",
                Some(left(vec![stamp("r.fleetbundle", 2)], 4)),
                0,
            ),
            (
                "another bundle",
                Some(left(vec![stamp("s.fleetbundle", 1)], 4)),
                0,
            ),
            ("an unreadable marker", Some(left(vec![], 0)), 0),
        ];
        for (what, left, want) in cases {
            assert_eq!(interrupted_count(&a, left.as_ref()), *want, "{what}");
        }
    }

    #[test]
    fn begin_and_end_leave_a_whole_marker_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.fleetbundle");
        std::fs::write(&file, b"0123456789").unwrap();
        let attempt = Attempt {
            files: stamps(std::slice::from_ref(&file)),
            started: 7,
            interrupted_before: 1,
            log_len: 3,
        };
        assert_eq!(attempt.files[0].len, 10);
        assert_eq!(attempt.names(), ["r.fleetbundle"]);
        assert_eq!(left_over(dir.path()), None);
        begin(dir.path(), &attempt).unwrap();
        assert_eq!(left_over(dir.path()), Some(attempt.clone()));
        // Stamps are stable for an unchanged file, and change with a copy put in its place.
        assert_eq!(stamps(std::slice::from_ref(&file)), attempt.files);
        std::fs::write(dir.path().join("copy"), b"0123456789").unwrap();
        std::fs::rename(dir.path().join("copy"), &file).unwrap();
        assert_ne!(stamps(std::slice::from_ref(&file)), attempt.files);

        end(dir.path()).unwrap();
        assert_eq!(left_over(dir.path()), None);
        end(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["r.fleetbundle"], "no temp file left");

        std::fs::write(dir.path().join(ATTEMPT_FILE), b"{garbage").unwrap();
        let garbled = left_over(dir.path()).expect("a damaged marker still counts");
        assert!(garbled.files.is_empty());
    }
}

//! Interrupted imports: `bundles/attempt.json` names the import under way; it is written before
//! the import starts and removed once its outcome is recorded. Found by the next import (under
//! the same lock, so nobody else is importing), it means the last one never finished: the agent
//! or the command was killed, or the machine lost power.
//!
//! That is recorded (outcome `interrupted` in `imports.jsonl`) and counted per bundle files in
//! `bundles/interrupted.json`, whatever other imports ran in between; the inbox gives up on a
//! bundle whose import was interrupted [`INBOX_LIMIT`] times: the agent runs the site's Wasm
//! workloads in its own process, so a bundle that kills it (memory exhausted while unpacking)
//! must not take the site down again at every restart. The bundle is filed under `rejected/`
//! with the reason; copying it in again (a new file) starts the count afresh. An import cut
//! short by the machine restarting (a power cut) is recorded but not counted: the bundle is not
//! to blame, nor is one the agent was asked to stop during (systemd kills an agent whose import
//! outlasts the stop timeout).

use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const ATTEMPT_FILE: &str = "attempt.json";
pub const COUNTS_FILE: &str = "interrupted.json";
/// Bundles whose interruptions are remembered; the oldest is forgotten beyond that.
const MAX_COUNTED: usize = 32;
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
    /// Length of `imports.jsonl` when it started: only this import appends to it until the
    /// marker goes, so a longer log means it recorded its outcome (and died just after).
    pub log_len: u64,
    /// The kernel's boot id when it started: a marker from another boot was cut short by the
    /// machine going down, not by the bundle.
    #[serde(default)]
    pub boot: Option<String>,
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
            log_len: u64::MAX,
            boot: None,
        })),
        Err(_) => None,
    }
}

/// Written when the agent is asked to stop (SIGTERM) during an import: systemd kills it if the
/// import outlasts the stop timeout, and that kill is not the bundle's doing.
pub const STOP_FILE: &str = "stop-requested.json";

/// Notes that a stop was asked during the import under way, if any; whether there was one.
/// Called from the signal handler without the import lock: a marker read mid-replace is
/// garbled, names no import, and so matches none.
pub fn note_stop(bundles: &Path) -> std::io::Result<bool> {
    let Some(marker) = left_over(bundles) else {
        return Ok(false);
    };
    let id = (marker.started, marker.log_len);
    write_whole(
        bundles,
        STOP_FILE,
        &serde_json::to_vec(&id).unwrap_or_default(),
    )?;
    Ok(true)
}

/// Whether a stop was asked during the import `marker` names.
pub fn stop_requested(bundles: &Path, marker: &Attempt) -> bool {
    std::fs::read(bundles.join(STOP_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<(i64, u64)>(&b).ok())
        .is_some_and(|id| id == (marker.started, marker.log_len))
}

/// This boot's id (Linux), to tell a crash from a restart of the machine.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Interrupted imports per bundle files, kept across other imports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    entries: Vec<Count>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Count {
    files: Vec<FileStamp>,
    count: u32,
    /// (started, logLen) of the marker last counted: a kill between counting and recording
    /// must not count the same marker twice.
    last_marker: (i64, u64),
}

impl Counts {
    /// What `bundles` holds; nothing if missing or unreadable (a count lost is a retry more).
    pub fn load(bundles: &Path) -> Counts {
        std::fs::read(bundles.join(COUNTS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn get(&self, files: &[FileStamp]) -> u32 {
        self.entries
            .iter()
            .find(|c| c.files == files)
            .map_or(0, |c| c.count)
    }

    /// Counts `marker`'s interruption once; whether it was new.
    pub fn add(&mut self, marker: &Attempt) -> bool {
        let id = (marker.started, marker.log_len);
        let entry = match self.entries.iter().position(|c| c.files == marker.files) {
            Some(i) => self.entries.remove(i),
            None => Count {
                files: marker.files.clone(),
                count: 0,
                last_marker: (i64::MIN, 0),
            },
        };
        let new = entry.last_marker != id;
        let entry = Count {
            count: entry.count + u32::from(new),
            last_marker: id,
            ..entry
        };
        self.entries.push(entry);
        if self.entries.len() > MAX_COUNTED {
            self.entries.remove(0);
        }
        new
    }

    /// Forgets `files` (their import reached an outcome); whether they were counted.
    pub fn clear(&mut self, files: &[FileStamp]) -> bool {
        let before = self.entries.len();
        self.entries.retain(|c| c.files != files);
        self.entries.len() != before
    }

    /// Writes the counts whole (temp, fsync, rename, fsync dir).
    pub fn save(&self, bundles: &Path) -> std::io::Result<()> {
        write_whole(
            bundles,
            COUNTS_FILE,
            &serde_json::to_vec(self).unwrap_or_default(),
        )
    }
}

/// The agent's atomic write, then the directory synced: these files must survive a power cut
/// once written (the status file need not).
fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    crate::agent::write_atomic(&dir.join(name), bytes)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the marker for the import about to start (temp, fsync, rename, fsync dir: a marker
/// that is there must be whole).
pub fn begin(bundles: &Path, attempt: &Attempt) -> std::io::Result<()> {
    write_whole(
        bundles,
        ATTEMPT_FILE,
        &serde_json::to_vec(attempt).unwrap_or_default(),
    )
}

/// Removes the marker once the import's outcome is recorded (and any stop noted during it).
pub fn end(bundles: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(bundles.join(STOP_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
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

    fn marker(files: Vec<FileStamp>, started: i64) -> Attempt {
        Attempt {
            files,
            started,
            log_len: 0,
            boot: None,
        }
    }

    #[test]
    fn counts_are_per_files_once_per_marker_and_survive_other_imports() {
        let r = vec![stamp("r.fleetbundle", 1)];
        let s = vec![stamp("s.fleetbundle", 2)];
        let copy = vec![stamp("r.fleetbundle", 3)];
        let mut counts = Counts::default();
        assert!(counts.add(&marker(r.clone(), 1)));
        assert!(!counts.add(&marker(r.clone(), 1)), "the same marker twice");
        assert!(counts.add(&marker(s.clone(), 2)), "another bundle between");
        assert!(counts.add(&marker(r.clone(), 3)));
        assert_eq!(
            (counts.get(&r), counts.get(&s), counts.get(&copy)),
            (2, 1, 0)
        );
        assert!(counts.clear(&s));
        assert!(!counts.clear(&s));
        assert_eq!((counts.get(&r), counts.get(&s)), (2, 0));
        for i in 0..MAX_COUNTED as u64 {
            counts.add(&marker(vec![stamp("x", 100 + i)], 10));
        }
        assert_eq!(counts.get(&r), 0, "the oldest is forgotten");
    }

    #[test]
    fn begin_and_end_leave_a_whole_marker_or_none_and_counts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.fleetbundle");
        std::fs::write(&file, b"0123456789").unwrap();
        let attempt = Attempt {
            files: stamps(std::slice::from_ref(&file)),
            started: 7,
            log_len: 3,
            boot: boot_id(),
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

        let mut counts = Counts::default();
        counts.add(&attempt);
        counts.save(dir.path()).unwrap();
        assert_eq!(Counts::load(dir.path()), counts);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [COUNTS_FILE, "r.fleetbundle"], "no temp file left");

        std::fs::write(dir.path().join(ATTEMPT_FILE), b"{garbage").unwrap();
        let garbled = left_over(dir.path()).expect("a damaged marker still counts");
        assert!(garbled.files.is_empty());
        std::fs::write(dir.path().join(COUNTS_FILE), b"{garbage").unwrap();
        assert_eq!(Counts::load(dir.path()), Counts::default());
    }
}

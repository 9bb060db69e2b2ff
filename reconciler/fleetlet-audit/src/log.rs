//! Writing a site's log: each outcome chained onto the head, made durable in the state store
//! (one fsync, the only wait the reconcile loop sees), then mirrored as JSON Lines to a file
//! for log shippers. The mirror is a copy: after a crash it may lag the store, and opening the
//! log brings it level again.

use crate::record::{Checkpoint, Entry, Event, GENESIS, Line, VERSION, canonical_without};
use base64::Engine as _;
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit journal: {0}")]
    Journal(String),
    #[error("audit log mirror {path}: {message}")]
    Mirror { path: PathBuf, message: String },
    #[error("the audit journal is damaged at record {index}: {message}")]
    Damaged { index: u64, message: String },
    #[error("signing the audit checkpoint: {0}")]
    Sign(String),
}

/// The durable store of the log's lines, in order (the agent's state store). `append` returns
/// only once the line is on disk.
pub trait Journal: Send {
    fn append(&mut self, line: &[u8]) -> Result<(), String>;
    /// Several lines with one wait for the disk (a cycle's outcomes).
    fn append_all(&mut self, lines: &[Vec<u8>]) -> Result<(), String> {
        lines.iter().try_for_each(|l| self.append(l))
    }
    /// Every line, in order.
    fn lines(&self) -> Result<Vec<Vec<u8>>, String>;
}

/// A journal in memory, for tests and tools.
#[derive(Default)]
pub struct MemJournal(pub Vec<Vec<u8>>);

impl Journal for MemJournal {
    fn append(&mut self, line: &[u8]) -> Result<(), String> {
        self.0.push(line.to_vec());
        Ok(())
    }
    fn lines(&self) -> Result<Vec<Vec<u8>>, String> {
        Ok(self.0.clone())
    }
}

pub struct AuditLog {
    site: String,
    journal: Box<dyn Journal>,
    mirror: Option<(PathBuf, File)>,
    next_seq: u64,
    head: String,
    /// The head the last checkpoint signed.
    checkpointed: Option<String>,
    /// The entry it covers.
    checkpointed_seq: u64,
    /// Whether any checkpoint was ever signed (its key must then stay the site's).
    signed_before: bool,
    /// The release the log last shows running: the commit of the latest `applied` entry, or
    /// the one a later `rolledBack` entry returned to (None: it left nothing running).
    running: Option<String>,
    /// The highest agent event number in the log.
    last_event_id: u64,
    /// A mirror write failed: the mirror is rebuilt from the journal before the next write.
    mirror_dirty: bool,
}

/// What runs after `event`, when it changes that: an applied release, or the release a
/// rollback returned to (`Some(None)`: nothing).
fn runs(event: &Event) -> Option<Option<String>> {
    match event.action {
        crate::record::Action::Applied | crate::record::Action::RolledBack => {
            Some(event.commit.clone())
        }
        _ => None,
    }
}

impl AuditLog {
    /// Opens the log of `site` kept in `journal`, mirrored to `mirror` when given.
    pub fn open(
        site: &str,
        journal: Box<dyn Journal>,
        mirror: Option<&Path>,
    ) -> Result<AuditLog, AuditError> {
        let lines = journal.lines().map_err(AuditError::Journal)?;
        Self::from_lines(site, journal, &lines, mirror)
    }

    /// [`open`](Self::open), also verifying the journal (the durable copy) as `fleetlet audit
    /// verify` would — from the same read, so a start reads the journal once. A chain found
    /// broken must never be signed over.
    pub fn open_verified(
        site: &str,
        journal: Box<dyn Journal>,
        mirror: Option<&Path>,
        key: Option<&TrustedKey>,
    ) -> Result<(AuditLog, Result<crate::Verified, crate::Problem>), AuditError> {
        let lines = journal.lines().map_err(AuditError::Journal)?;
        let mut text = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in &lines {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        let verified = crate::verify(&text[..], key);
        drop(text);
        Ok((Self::from_lines(site, journal, &lines, mirror)?, verified))
    }

    fn from_lines(
        site: &str,
        journal: Box<dyn Journal>,
        lines: &[Vec<u8>],
        mirror: Option<&Path>,
    ) -> Result<AuditLog, AuditError> {
        let mut log = AuditLog {
            site: site.to_string(),
            journal,
            mirror: None,
            next_seq: 1,
            head: GENESIS.to_string(),
            checkpointed: None,
            checkpointed_seq: 0,
            signed_before: false,
            running: None,
            last_event_id: 0,
            mirror_dirty: false,
        };
        for (i, bytes) in lines.iter().enumerate() {
            let damaged = |message: String| AuditError::Damaged {
                index: i as u64 + 1,
                message,
            };
            match serde_json::from_slice::<Line>(bytes).map_err(|e| damaged(e.to_string()))? {
                Line::Entry(e) => {
                    log.next_seq = e.seq + 1;
                    log.head = e.hash;
                    if let Some(id) = e.event.event_id {
                        log.last_event_id = log.last_event_id.max(id);
                    }
                    if let Some(running) = runs(&e.event) {
                        log.running = running;
                    }
                }
                Line::Checkpoint(c) => {
                    log.checkpointed_seq = c.seq;
                    log.checkpointed = Some(c.head);
                    log.signed_before = true;
                }
            }
        }
        if let Some(path) = mirror {
            log.mirror = Some((path.to_path_buf(), sync_mirror(path, lines)?));
        }
        Ok(log)
    }

    pub fn head(&self) -> &str {
        &self.head
    }

    /// Whether checkpoints were signed before: a missing site key is then a lost identity,
    /// not a first start.
    pub fn has_checkpoints(&self) -> bool {
        self.signed_before
    }

    /// The highest agent event number the log holds (0: none).
    pub fn last_event_id(&self) -> u64 {
        self.last_event_id
    }

    /// The last entry a checkpoint covers (0: none yet).
    pub fn checkpointed_len(&self) -> u64 {
        self.checkpointed_seq
    }

    /// The release the log last shows running: the latest `applied` entry's commit, or the
    /// release a later rollback returned to.
    pub fn running(&self) -> Option<&str> {
        self.running.as_deref()
    }

    /// The number of entries so far.
    pub fn len(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn is_empty(&self) -> bool {
        self.next_seq == 1
    }

    /// Chains `event`, stores it, mirrors it; returns the entry.
    pub fn record(&mut self, event: Event) -> Result<Entry, AuditError> {
        let entry = Entry::chain(&self.site, self.next_seq, &self.head, event);
        let running = runs(&entry.event);
        // Once in the journal the entry is part of the chain, whatever the mirror does.
        let mirrored = self.write(&Line::Entry(entry.clone()))?;
        self.next_seq += 1;
        self.head = entry.hash.clone();
        if let Some(id) = entry.event.event_id {
            self.last_event_id = self.last_event_id.max(id);
        }
        if let Some(running) = running {
            self.running = running;
        }
        mirrored.map(|()| entry)
    }

    /// Chains every event of a cycle and stores them with one journal write (one fsync), then
    /// mirrors them.
    /// Events numbered no higher than what the log holds are repeats (offered again after a
    /// crash) and are left out.
    pub fn record_all(&mut self, events: Vec<Event>) -> Result<Vec<Entry>, AuditError> {
        let seen = self.last_event_id;
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| e.event_id.is_none_or(|id| id > seen))
            .collect();
        let mut entries = Vec::with_capacity(events.len());
        let (mut seq, mut head) = (self.next_seq, self.head.clone());
        for event in events {
            let entry = Entry::chain(&self.site, seq, &head, event);
            seq += 1;
            head = entry.hash.clone();
            entries.push(entry);
        }
        if entries.is_empty() {
            return Ok(entries);
        }
        let lines: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| Line::Entry(e.clone()).to_json())
            .collect();
        self.journal
            .append_all(&lines)
            .map_err(AuditError::Journal)?;
        self.next_seq = seq;
        self.head = head;
        if let Some(id) = entries.iter().filter_map(|e| e.event.event_id).max() {
            self.last_event_id = self.last_event_id.max(id);
        }
        if let Some(running) = entries.iter().rev().find_map(|e| runs(&e.event)) {
            self.running = running;
        }
        self.mirror_lines(&lines).map(|()| entries)
    }

    /// Signs the head with `key` at `time`, unless the last checkpoint already signed it.
    pub fn checkpoint(
        &mut self,
        key: &SigningKey,
        time: i64,
    ) -> Result<Option<Checkpoint>, AuditError> {
        if self.is_empty() || self.checkpointed.as_deref() == Some(self.head.as_str()) {
            return Ok(None);
        }
        let public = key
            .public_pem()
            .and_then(|pem| TrustedKey::from_pem("site", pem.as_bytes()))
            .map_err(|e| AuditError::Sign(e.to_string()))?;
        let mut cp = Checkpoint {
            v: VERSION,
            seq: self.next_seq - 1,
            head: self.head.clone(),
            time,
            site: self.site.clone(),
            key: public.fingerprint(),
            signature: String::new(),
        };
        let value = serde_json::to_value(Line::Checkpoint(cp.clone())).expect("serializes");
        let signature = key
            .sign(&canonical_without(&value, "signature"))
            .map_err(|e| AuditError::Sign(e.to_string()))?;
        cp.signature = base64::engine::general_purpose::STANDARD.encode(signature);
        let mirrored = self.write(&Line::Checkpoint(cp.clone()))?;
        self.checkpointed = Some(cp.head.clone());
        self.checkpointed_seq = cp.seq;
        self.signed_before = true;
        mirrored.map(|()| Some(cp))
    }

    /// Appends to the journal (the outer error: nothing was recorded), then to the mirror
    /// (the inner error: recorded, only the copy for shippers lags; it is rebuilt from the
    /// journal before the next write).
    fn write(&mut self, line: &Line) -> Result<Result<(), AuditError>, AuditError> {
        let bytes = line.to_json();
        self.journal.append(&bytes).map_err(AuditError::Journal)?;
        Ok(self.mirror_lines(&[bytes]))
    }

    /// Appends lines already in the journal to the mirror.
    fn mirror_lines(&mut self, lines: &[Vec<u8>]) -> Result<(), AuditError> {
        let Some((path, file)) = &mut self.mirror else {
            return Ok(());
        };
        let path = path.clone();
        if self.mirror_dirty {
            let all = self.journal.lines().map_err(AuditError::Journal)?;
            let f = sync_mirror(&path, &all)?;
            *file = f;
            self.mirror_dirty = false;
            return Ok(());
        }
        // No fsync: the journal is the durable copy, and a slow disk must not hold the
        // reconcile loop twice. Opening the log repairs a mirror that lost lines.
        let mut record = Vec::new();
        for l in lines {
            record.extend_from_slice(l);
            record.push(b'\n');
        }
        file.write_all(&record).map_err(|e| {
            self.mirror_dirty = true;
            AuditError::Mirror {
                path,
                message: e.to_string(),
            }
        })
    }
}

/// Brings the mirror level with the journal: drops a torn last line, appends what is missing,
/// and rewrites it whole if it disagrees with the journal (someone edited the copy, or the
/// journal was restored from an older backup) — keeping the old copy beside it as evidence.
fn sync_mirror(path: &Path, lines: &[Vec<u8>]) -> Result<File, AuditError> {
    let err = |e: std::io::Error| AuditError::Mirror {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let mut have = Vec::new();
    let mut complete_len = 0u64;
    {
        let mut reader = BufReader::new(&file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(err)?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            complete_len += n as u64;
            buf.pop();
            have.push(buf.clone());
        }
    }
    let agrees = have.len() <= lines.len() && have.iter().zip(lines).all(|(a, b)| a == b);
    if !agrees {
        let kept = path.with_extension(format!("jsonl.conflict-{}", std::process::id()));
        std::fs::copy(path, &kept).map_err(err)?;
        file.set_len(0).map_err(err)?;
        have.clear();
    } else if file.metadata().map_err(err)?.len() != complete_len {
        file.set_len(complete_len).map_err(err)?;
    }
    file.seek(SeekFrom::End(0)).map_err(err)?;
    let mut missing = Vec::new();
    for line in &lines[have.len()..] {
        missing.extend_from_slice(line);
        missing.push(b'\n');
    }
    file.write_all(&missing).map_err(err)?;
    file.sync_data().map_err(err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Action;

    pub(crate) fn event(time: i64, commit: &str) -> Event {
        Event {
            commit: Some(commit.into()),
            reference: Some("refs/heads/main".into()),
            ..Event::new(time, Action::Applied)
        }
    }

    #[test]
    fn what_runs_follows_releases_and_rollbacks_and_survives_reopening() {
        let rollback = |to: Option<&str>, from: &str| Event {
            action: Action::RolledBack,
            commit: to.map(String::from),
            from: Some(from.into()),
            ..event(9, "x")
        };
        let drift = Event {
            action: Action::DriftCorrected,
            ..event(9, "c1")
        };
        let cases: &[(&str, Vec<Event>, Option<&str>)] = &[
            ("nothing yet", vec![], None),
            ("applied", vec![event(1, "c1")], Some("c1")),
            (
                "rolled back to the last-known-good",
                vec![event(1, "c1"), event(2, "c2"), rollback(Some("c1"), "c2")],
                Some("c1"),
            ),
            (
                "a failed first release leaves nothing",
                vec![event(1, "c1"), rollback(None, "c1")],
                None,
            ),
            (
                "other outcomes change nothing",
                vec![event(1, "c1"), drift],
                Some("c1"),
            ),
        ];
        for (what, events, want) in cases {
            let mut one_by_one = AuditLog::open("s1", Box::new(MemJournal(vec![])), None).unwrap();
            for e in events {
                one_by_one.record(e.clone()).unwrap();
            }
            assert_eq!(one_by_one.running(), *want, "{what}: record");
            let mut batch = AuditLog::open("s1", Box::new(MemJournal(vec![])), None).unwrap();
            batch.record_all(events.clone()).unwrap();
            assert_eq!(batch.running(), *want, "{what}: record_all");
            let lines = events
                .iter()
                .enumerate()
                .fold(
                    (Vec::new(), GENESIS.to_string()),
                    |(mut lines, prev), (i, e)| {
                        let entry = Entry::chain("s1", i as u64 + 1, &prev, e.clone());
                        let head = entry.hash.clone();
                        lines.push(Line::Entry(entry).to_json());
                        (lines, head)
                    },
                )
                .0;
            let reopened = AuditLog::open("s1", Box::new(MemJournal(lines)), None).unwrap();
            assert_eq!(reopened.running(), *want, "{what}: reopened");
        }
    }

    #[test]
    fn entries_chain_and_the_mirror_catches_up_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("audit.jsonl");
        let key = SigningKey::generate().unwrap();
        let mut log = AuditLog::open("s1", Box::new(MemJournal::default()), Some(&mirror)).unwrap();
        let a = log.record(event(1, "c1")).unwrap();
        let b = log.record(event(2, "c2")).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(b.prev, a.hash);
        assert!(log.checkpoint(&key, 3).unwrap().is_some());
        assert!(log.checkpoint(&key, 4).unwrap().is_none(), "head unchanged");
        let public = TrustedKey::from_pem("site", key.public_pem().unwrap().as_bytes()).unwrap();
        let verified =
            crate::verify(BufReader::new(File::open(&mirror).unwrap()), Some(&public)).unwrap();
        assert_eq!(
            (verified.entries, verified.checkpoints, verified.unanchored),
            (2, 1, 0)
        );

        // The mirror lost its last line and half of another; the journal has all of them.
        let journal = MemJournal(
            std::fs::read_to_string(&mirror)
                .unwrap()
                .lines()
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        );
        let text = std::fs::read(&mirror).unwrap();
        std::fs::write(&mirror, &text[..text.len() * 2 / 3]).unwrap();
        let mut log = AuditLog::open("s1", Box::new(journal), Some(&mirror)).unwrap();
        assert_eq!(std::fs::read(&mirror).unwrap(), text);
        let c = log.record(event(5, "c3")).unwrap();
        assert_eq!((c.seq, c.prev.as_str()), (3, b.hash.as_str()));
        let verified =
            crate::verify(BufReader::new(File::open(&mirror).unwrap()), Some(&public)).unwrap();
        assert_eq!((verified.entries, verified.unanchored), (3, 1));
        assert_eq!(log.running(), Some("c3"));
        assert!(log.has_checkpoints());
        // A cycle's outcomes in one write, chained like any others.
        let batch = log
            .record_all(vec![event(6, "c4"), event(7, "c5")])
            .unwrap();
        assert_eq!((batch[0].seq, batch[1].seq), (4, 5));
        assert_eq!(batch[1].prev, batch[0].hash);
        assert_eq!(log.running(), Some("c5"));
        assert!(log.record_all(vec![]).unwrap().is_empty());
        // Numbered events offered again after a crash are written once.
        let numbered = |id: u64, commit: &str| Event {
            event_id: Some(id),
            ..event(8, commit)
        };
        assert_eq!(log.record_all(vec![numbered(1, "n1")]).unwrap().len(), 1);
        assert_eq!(log.last_event_id(), 1);
        let again = log
            .record_all(vec![numbered(1, "n1"), numbered(2, "n2")])
            .unwrap();
        assert_eq!(
            again.iter().map(|e| e.event.event_id).collect::<Vec<_>>(),
            [Some(2)]
        );
        assert_eq!(log.len(), 7);
        let (_, intact) = AuditLog::open_verified(
            "s1",
            Box::new(MemJournal(log.journal.lines().unwrap())),
            None,
            Some(&public),
        )
        .unwrap();
        assert_eq!(intact.unwrap().entries, 7);
        // A journal edited while the agent was down is found before anything is signed.
        let mut lines = log.journal.lines().unwrap();
        lines[1] = String::from_utf8(lines[1].clone())
            .unwrap()
            .replacen("\"c2\"", "\"cX\"", 1)
            .into_bytes();
        let (_, tampered) =
            AuditLog::open_verified("s1", Box::new(MemJournal(lines)), None, Some(&public))
                .unwrap();
        assert!(matches!(
            tampered,
            Err(crate::Problem::Edited { seq: 2, .. })
        ));
        let verified =
            crate::verify(BufReader::new(File::open(&mirror).unwrap()), Some(&public)).unwrap();
        assert_eq!(verified.entries, 7);

        // A mirror that disagrees with the journal is rebuilt, and the old copy kept as
        // evidence.
        let journal = MemJournal(
            std::fs::read_to_string(&mirror)
                .unwrap()
                .lines()
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        );
        let good = std::fs::read(&mirror).unwrap();
        let edited = String::from_utf8(good.clone())
            .unwrap()
            .replacen("c1", "cX", 1);
        std::fs::write(&mirror, &edited).unwrap();
        AuditLog::open("s1", Box::new(journal), Some(&mirror)).unwrap();
        assert_eq!(std::fs::read(&mirror).unwrap(), good);
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".conflict-"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(std::fs::read_to_string(kept[0].path()).unwrap(), edited);
    }
}

//! The air-gap bundle inbox: a directory a technician copies sync bundles into, e.g. from a USB
//! stick — one file `NAME`, or a split bundle `NAME.part-001`, `NAME.part-002`, …
//! [`Inbox::ready`] offers the bundles whose files have stopped changing; the agent imports each
//! and hands its verdict to [`Inbox::finish`], which files the bundle under `done/` or
//! `rejected/` with a note for the technician, or leaves it in place until one of its files
//! changes.
//!
//! Copy tools give no signal that a file is complete, so completeness is judged from outside: a
//! file is settled once its (length, mtime, inode) stayed the same for the settle time. Temporary
//! names that tools write before renaming into place (rsync's `.NAME.XXXX`, browsers'
//! `.crdownload`, …) are never looked at. Whether a settled bundle is really whole (the last part
//! of a split bundle may not have been started yet) only the import can tell; it answers
//! [`Verdict::Wait`] then.

use crate::agent::{format_time, now};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use tracing::warn;

const DONE: &str = "done";
const REJECTED: &str = "rejected";
const PART: &str = ".part-";

/// Names tools use while a file is still being written, and our own notes.
const IGNORED_SUFFIXES: &[&str] = &[
    ".tmp",
    ".partial",
    ".crdownload",
    ".part",
    ".reason",
    ".result",
];

pub struct Inbox {
    dir: PathBuf,
    settle: Duration,
    /// Per file name: what the last scan saw, and since when unchanged.
    seen: HashMap<String, Seen>,
    /// Per file name: the stamp at which a verdict left the file in place (Wait, or a failed
    /// move). While it still matches, the file does not make its bundle ready again.
    parked: HashMap<String, Stamp>,
}

/// A bundle ready to import: one file, or all parts of a split bundle in part order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The bundle's name: the file name, or the part's base name without `.part-NNN`.
    pub name: String,
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Imported; the text summarises what (commit, artifacts).
    Done(String),
    /// Refused; the text is the reason shown to the technician.
    Rejected(String),
    /// Not complete yet (e.g. a split bundle whose last part is still being copied): leave the
    /// files where they are and offer them again only once any of them changes.
    Wait(String),
}

/// What tells one state of a file from another. The inode is part of it because tools that
/// write a temporary file and rename it over the old one may keep length and mtime (`rsync -t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: Option<SystemTime>,
    ino: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            mtime: meta.modified().ok(),
            ino: meta.ino(),
        }
    }
}

struct Seen {
    stamp: Stamp,
    since: Instant,
}

impl Inbox {
    /// Creates `dir`, `dir/done` and `dir/rejected` when missing.
    pub fn open(dir: &Path, settle: Duration) -> io::Result<Inbox> {
        for sub in [DONE, REJECTED] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| at_path(e, "creating", &path))?;
        }
        Ok(Inbox {
            dir: dir.to_path_buf(),
            settle,
            seen: HashMap::new(),
            parked: HashMap::new(),
        })
    }

    /// Bundles whose files have all been unchanged (same size and mtime, and the same inode) for
    /// at least `settle` since first observed so, plus how soon to call again when some file is
    /// still settling (None when nothing is pending).
    pub fn ready(&mut self) -> (Vec<Candidate>, Option<Duration>) {
        let now = Instant::now();
        let files = match self.scan() {
            Ok(files) => files,
            Err(e) => {
                // The watcher or the next cycle brings us back; nothing here is worth a timer.
                warn!(error = %e, dir = %self.dir.display(), "cannot list the bundle inbox");
                return (Vec::new(), None);
            }
        };
        self.seen.retain(|name, _| files.contains_key(name));
        self.parked
            .retain(|name, stamp| files.get(name) == Some(stamp));
        for (name, stamp) in &files {
            if self.seen.get(name).is_none_or(|seen| seen.stamp != *stamp) {
                let seen = Seen {
                    stamp: *stamp,
                    since: now,
                };
                self.seen.insert(name.clone(), seen);
            }
        }

        let mut candidates = Vec::new();
        let mut next: Option<Duration> = None;
        for (name, members) in group(files.keys()) {
            if members.iter().all(|m| self.parked.contains_key(m)) {
                continue;
            }
            let wait = members
                .iter()
                .map(|m| {
                    let since = self.seen[m].since;
                    self.settle.saturating_sub(now.duration_since(since))
                })
                .max()
                .unwrap_or_default();
            if wait.is_zero() {
                let files = members.iter().map(|m| self.dir.join(m)).collect();
                candidates.push(Candidate { name, files });
            } else {
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        // A plain file and a split bundle may share a name; the files keep the order stable.
        candidates.sort_by(|a, b| (&a.name, &a.files).cmp(&(&b.name, &b.files)));
        (candidates, next)
    }

    /// Records the verdict: Done → files moved into done/, a `NAME.result` text file written
    /// beside them; Rejected → files moved into rejected/ with `NAME.reason`; Wait → files stay,
    /// remembered so they are not offered again until one changes.
    /// Returns the directory the files went to (or the inbox itself for Wait).
    ///
    /// A failed move (e.g. a read-only medium) puts back what was already moved and remembers
    /// the files like Wait does, so a broken inbox does not turn into an import loop. A file
    /// that changed since it was offered is not filed under a verdict about its old contents:
    /// that is an error too, and the bundle is offered again once it settles.
    pub fn finish(&mut self, candidate: &Candidate, verdict: &Verdict) -> io::Result<PathBuf> {
        let (sub, label, text, note_ext) = match verdict {
            Verdict::Wait(_) => {
                self.park(candidate);
                return Ok(self.dir.clone());
            }
            Verdict::Done(summary) => (DONE, "imported", summary, "result"),
            Verdict::Rejected(reason) => (REJECTED, "rejected", reason, "reason"),
        };
        let names = candidate
            .files
            .iter()
            .map(|path| {
                file_name(path).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not a bundle file name", path.display()),
                    )
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        self.check_unchanged(candidate, &names)?;

        let dest = self.dir.join(sub);
        let note = match move_all(&dest, candidate, &names, note_ext) {
            Ok(note) => note,
            Err(e) => {
                self.park(candidate);
                return Err(e);
            }
        };
        for name in &names {
            self.seen.remove(name);
            self.parked.remove(name);
        }
        // The renames changed both directories.
        sync_dir(&dest)?;
        sync_dir(&self.dir)?;
        write_note(&dest, &note, &note_text(label, text, &names, now()))?;
        Ok(dest)
    }

    /// Watches the inbox (not recursively: done/ and rejected/ are ignored) and calls `wake` on
    /// any event that may make a bundle ready.
    pub fn watch(
        &self,
        wake: impl Fn() + Send + 'static,
    ) -> notify::Result<notify::RecommendedWatcher> {
        use notify::event::{AccessKind, AccessMode, EventKind};
        use notify::{RecursiveMode, Watcher};
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let relevant = match res {
                    // The import reading a bundle must not wake the loop again; a writer closing a
                    // file is the best hint there is that a copy has finished.
                    Ok(ev) => !matches!(
                        ev.kind,
                        EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write)
                    ),
                    // An overflowed event queue may hide anything: rescan.
                    Err(_) => true,
                };
                if relevant {
                    wake();
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }

    /// The regular files directly in the inbox that may belong to a bundle.
    fn scan(&self) -> io::Result<BTreeMap<String, Stamp>> {
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            // A name that is not UTF-8 cannot be named in a candidate or a note, and no bundle
            // tool makes one.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if ignored(&name) {
                continue;
            }
            // Gone since the listing (a tool renaming its temporary file) is no error: the next
            // scan sees the new name.
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.file_type().is_file() {
                files.insert(name, Stamp::of(&meta));
            }
        }
        Ok(files)
    }

    fn check_unchanged(&self, candidate: &Candidate, names: &[String]) -> io::Result<()> {
        for (path, name) in candidate.files.iter().zip(names) {
            let meta = fs::symlink_metadata(path).map_err(|e| at_path(e, "reading", path))?;
            if let Some(seen) = self.seen.get(name)
                && seen.stamp != Stamp::of(&meta)
            {
                return Err(io::Error::other(format!(
                    "{} changed while it was imported; it is offered again once it settles",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn park(&mut self, candidate: &Candidate) {
        for path in &candidate.files {
            let Some(name) = file_name(path) else {
                continue;
            };
            // The stamp the offer was based on, not the current one: a file that changed during
            // the import must be offered again.
            let stamp = match self.seen.get(&name) {
                Some(seen) => Some(seen.stamp),
                None => fs::symlink_metadata(path).ok().map(|m| Stamp::of(&m)),
            };
            if let Some(stamp) = stamp {
                self.parked.insert(name, stamp);
            }
        }
    }
}

fn ignored(name: &str) -> bool {
    // `done` and `rejected` are ours even when something replaced the directory with a file.
    name == DONE
        || name == REJECTED
        || name.starts_with('.')
        || IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The bundles among `names`: each plain file alone, and each split bundle whose parts are
/// numbered 1..=n without a gap, in part order. A split bundle with a gap is left out: a part
/// is still missing, and no timer can tell when it arrives.
fn group<'a>(names: impl Iterator<Item = &'a String>) -> Vec<(String, Vec<String>)> {
    let mut bundles = Vec::new();
    let mut splits: BTreeMap<&str, Vec<(u32, &String)>> = BTreeMap::new();
    for name in names {
        match fleetlet_bundle::split_part_name(name) {
            Some((base, _, number)) => splits.entry(base).or_default().push((number, name)),
            None => bundles.push((name.clone(), vec![name.clone()])),
        }
    }
    for (base, mut parts) in splits {
        parts.sort();
        if parts
            .iter()
            .zip(1..)
            .all(|((number, _), want)| *number == want)
        {
            let files = parts.into_iter().map(|(_, name)| name.clone()).collect();
            bundles.push((base.to_string(), files));
        }
    }
    bundles
}

/// `NAME` + `-1` → `NAME-1`; `NAME.part-001` + `-1` → `NAME-1.part-001`.
fn with_suffix(name: &str, suffix: &str) -> String {
    match fleetlet_bundle::split_part_name(name) {
        Some((base, digits, _)) => format!("{base}{suffix}{PART}{digits}"),
        None => format!("{name}{suffix}"),
    }
}

/// Moves the candidate's files into `dest` under names free there (the note's name included),
/// all with the same suffix; returns the note's path. On failure, what was moved is put back.
fn move_all(
    dest: &Path,
    candidate: &Candidate,
    names: &[String],
    note_ext: &str,
) -> io::Result<PathBuf> {
    let (targets, note) = free_names(dest, &candidate.name, names, note_ext)?;
    let mut moved: Vec<(&PathBuf, &PathBuf)> = Vec::new();
    for (from, to) in candidate.files.iter().zip(&targets) {
        // The agent is the only writer in done/ and rejected/, so a name found free stays free
        // until the rename.
        if let Err(e) = fs::rename(from, to) {
            for (from, to) in moved.into_iter().rev() {
                if let Err(e) = fs::rename(to, from) {
                    warn!(error = %e, file = %to.display(), "cannot put a bundle file back into the inbox");
                }
            }
            return Err(io::Error::new(
                e.kind(),
                format!("moving {} to {}: {e}", from.display(), to.display()),
            ));
        }
        moved.push((from, to));
    }
    Ok(note)
}

fn free_names(
    dest: &Path,
    bundle: &str,
    names: &[String],
    note_ext: &str,
) -> io::Result<(Vec<PathBuf>, PathBuf)> {
    for k in 0u64.. {
        let suffix = if k == 0 {
            String::new()
        } else {
            format!("-{k}")
        };
        let targets: Vec<PathBuf> = names
            .iter()
            .map(|n| dest.join(with_suffix(n, &suffix)))
            .collect();
        let note = dest.join(format!("{bundle}{suffix}.{note_ext}"));
        let mut free = true;
        for path in targets.iter().chain([&note]) {
            match fs::symlink_metadata(path) {
                Ok(_) => free = false,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Anything else (no permission, not a directory) would be the same for every k.
                Err(e) => return Err(at_path(e, "checking", path)),
            }
        }
        if free {
            return Ok((targets, note));
        }
    }
    unreachable!("some suffix up to u64::MAX is free")
}

fn note_text(label: &str, text: &str, files: &[String], at: i64) -> String {
    // Continuation lines are indented so that a multi-line reason cannot pass for the `at:` or
    // `files:` line.
    let text = text.trim_end().replace('\n', "\n  ");
    format!(
        "{label}: {text}\nat: {}\nfiles: {}\n",
        format_time(at),
        files.join(", ")
    )
}

/// Write-temp + fsync + rename, so the technician never finds a half-written note.
fn write_note(dest: &Path, path: &Path, body: &str) -> io::Result<()> {
    let name = file_name(path).unwrap_or_default();
    let tmp = dest.join(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        // Not a tempfile: those are 0600, and the technician may not be the agent's user.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(body.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dest)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        at_path(e, "writing", path)
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| at_path(e, "syncing", dir))
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_string)
}

fn at_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;

    fn inbox(settle: Duration) -> (tempfile::TempDir, Inbox) {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(&tmp.path().join("inbox"), settle).unwrap();
        (tmp, inbox)
    }

    fn write(dir: &Path, name: &str, body: &str) {
        fs::write(dir.join(name), body).unwrap();
    }

    fn append(path: &Path, body: &str) {
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(body.as_bytes()).unwrap();
    }

    /// Each candidate as (name, its files' names), for comparing with literals.
    fn offered(candidates: &[Candidate]) -> Vec<(String, Vec<String>)> {
        candidates
            .iter()
            .map(|c| {
                let files = c.files.iter().map(|f| file_name(f).unwrap()).collect();
                (c.name.clone(), files)
            })
            .collect()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn open_creates_the_inbox_with_done_and_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/inbox");
        let inbox = Inbox::open(&dir, Duration::ZERO).unwrap();
        assert_eq!(inbox.dir.as_path(), dir);
        assert_eq!(listing(&dir), ["done", "rejected"]);
        // Opening an existing inbox is no error.
        Inbox::open(&dir, Duration::ZERO).unwrap();
    }

    #[test]
    fn only_regular_files_with_bundle_names_are_offered() {
        // (file name, the candidate it makes)
        let cases = [
            ("bundle.tar.zst", Some("bundle.tar.zst")),
            (".bundle.tar.zst.Xy12ab", None), // rsync's temporary file
            ("b.tmp", None),
            ("c.partial", None),
            ("d.crdownload", None),
            ("e.part", None),
            ("f.reason", None),
            ("g.result", None),
            ("h.part-01", Some("h.part-01")), // two digits: not a part
            ("i.part-001", Some("i")),
        ];
        let (tmp, mut inbox) = inbox(Duration::ZERO);
        for (name, _) in cases {
            write(inbox.dir.as_path(), name, "x");
        }
        fs::create_dir(inbox.dir.as_path().join("j")).unwrap();
        write(tmp.path(), "outside", "x");
        std::os::unix::fs::symlink(tmp.path().join("outside"), inbox.dir.as_path().join("k"))
            .unwrap();

        let (candidates, next) = inbox.ready();
        let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
        let want: Vec<&str> = cases.iter().filter_map(|(_, c)| *c).collect();
        assert_eq!(names, want);
        assert_eq!(next, None);
    }

    #[test]
    fn zero_settle_offers_a_file_at_first_sight() {
        let (_tmp, mut inbox) = inbox(Duration::ZERO);
        write(inbox.dir.as_path(), "b", "x");
        let (candidates, next) = inbox.ready();
        let want = Candidate {
            name: "b".into(),
            files: vec![inbox.dir.as_path().join("b")],
        };
        assert_eq!(candidates, [want]);
        assert_eq!(next, None);
    }

    #[test]
    fn a_file_is_offered_once_unchanged_for_the_settle_time() {
        let settle = Duration::from_millis(200);
        let (_tmp, mut inbox) = inbox(settle);
        let path = inbox.dir.as_path().join("b");
        write(inbox.dir.as_path(), "b", "x");

        let (candidates, next) = inbox.ready();
        assert!(candidates.is_empty());
        assert_eq!(next, Some(settle));

        std::thread::sleep(Duration::from_millis(150));
        append(&path, "y");
        let (candidates, next) = inbox.ready();
        assert!(candidates.is_empty());
        assert_eq!(next, Some(settle), "a change restarts the settle clock");

        std::thread::sleep(next.unwrap());
        let (candidates, next) = inbox.ready();
        assert_eq!(offered(&candidates), [("b".to_string(), strings(&["b"]))]);
        assert_eq!(next, None);
    }

    #[test]
    fn a_split_bundle_is_offered_only_with_parts_one_to_n() {
        // (parts in the order they are written, the files offered)
        let cases: &[(&[&str], Option<&[&str]>)] = &[
            (&["a.part-001"], Some(&["a.part-001"])),
            (
                &["a.part-003", "a.part-001", "a.part-002"],
                Some(&["a.part-001", "a.part-002", "a.part-003"]),
            ),
            // Part order is by number, not by name.
            (
                &["a.part-001", "a.part-0002", "a.part-003"],
                Some(&["a.part-001", "a.part-0002", "a.part-003"]),
            ),
            (&["a.part-001", "a.part-003"], None),
            (&["a.part-002", "a.part-003"], None),
            (&["a.part-000", "a.part-001"], None),
            (&["a.part-001", "a.part-0001"], None),
        ];
        for (parts, want) in cases {
            let (_tmp, mut inbox) = inbox(Duration::ZERO);
            for part in *parts {
                write(inbox.dir.as_path(), part, part);
            }
            let (candidates, next) = inbox.ready();
            let want: Vec<(String, Vec<String>)> = want
                .iter()
                .map(|files| ("a".to_string(), strings(files)))
                .collect();
            assert_eq!(offered(&candidates), want, "parts {parts:?}");
            assert_eq!(next, None, "parts {parts:?}");
        }
    }

    #[test]
    fn a_split_bundle_with_a_gap_sets_no_timer() {
        let (_tmp, mut inbox) = inbox(Duration::from_millis(200));
        write(inbox.dir.as_path(), "a.part-001", "1");
        write(inbox.dir.as_path(), "a.part-003", "3");
        assert_eq!(inbox.ready(), (Vec::new(), None));

        write(inbox.dir.as_path(), "a.part-002", "2");
        let (candidates, next) = inbox.ready();
        assert!(candidates.is_empty());
        assert!(next.is_some(), "complete now, and settling");
    }

    #[test]
    fn candidates_come_sorted_by_name() {
        let (_tmp, mut inbox) = inbox(Duration::ZERO);
        for name in ["z", "x.part-002", "x", "m", "x.part-001"] {
            write(inbox.dir.as_path(), name, name);
        }
        let (candidates, _) = inbox.ready();
        let want = [
            ("m".to_string(), strings(&["m"])),
            ("x".to_string(), strings(&["x"])),
            ("x".to_string(), strings(&["x.part-001", "x.part-002"])),
            ("z".to_string(), strings(&["z"])),
        ];
        assert_eq!(offered(&candidates), want);
    }

    #[test]
    fn finish_files_the_bundle_with_a_note() {
        // (verdict, where it goes, the note, the note's first lines)
        let cases = [
            (
                Verdict::Done("commit abc123, 2 artifacts".into()),
                "done",
                "a.result",
                vec!["imported: commit abc123, 2 artifacts"],
            ),
            (
                Verdict::Rejected("bad signature".into()),
                "rejected",
                "a.reason",
                vec!["rejected: bad signature"],
            ),
            (
                Verdict::Rejected("bad signature\ncaused by: unknown key\n".into()),
                "rejected",
                "a.reason",
                vec!["rejected: bad signature", "  caused by: unknown key"],
            ),
        ];
        for (verdict, sub, note, first) in cases {
            let (_tmp, mut inbox) = inbox(Duration::ZERO);
            write(inbox.dir.as_path(), "a.part-001", "one");
            write(inbox.dir.as_path(), "a.part-002", "two");
            let (candidates, _) = inbox.ready();

            let dest = inbox.finish(&candidates[0], &verdict).unwrap();
            assert_eq!(dest, inbox.dir.as_path().join(sub), "{verdict:?}");
            assert_eq!(
                listing(inbox.dir.as_path()),
                ["done", "rejected"],
                "{verdict:?}"
            );
            assert_eq!(listing(&dest), ["a.part-001", "a.part-002", note]);
            assert_eq!(fs::read_to_string(dest.join("a.part-002")).unwrap(), "two");

            let text = fs::read_to_string(dest.join(note)).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines[..first.len()], first, "{verdict:?}");
            let at = lines[first.len()];
            assert!(at.starts_with("at: 20") && at.ends_with('Z'), "{at}");
            assert_eq!(lines[first.len() + 1..], ["files: a.part-001, a.part-002"]);
            assert_eq!(inbox.ready(), (Vec::new(), None));
        }
    }

    #[test]
    fn a_name_taken_in_done_gets_a_numbered_suffix() {
        // (files in the inbox, files already in done/, the names they get, the note)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a str);
        let cases: &[Case] = &[
            (
                &["bundle.tar.zst"],
                &[],
                &["bundle.tar.zst"],
                "bundle.tar.zst.result",
            ),
            (
                &["bundle.tar.zst"],
                &["bundle.tar.zst"],
                &["bundle.tar.zst-1"],
                "bundle.tar.zst-1.result",
            ),
            (
                &["bundle.tar.zst"],
                &["bundle.tar.zst", "bundle.tar.zst-1"],
                &["bundle.tar.zst-2"],
                "bundle.tar.zst-2.result",
            ),
            // A note left behind takes the name too.
            (
                &["bundle.tar.zst"],
                &["bundle.tar.zst.result"],
                &["bundle.tar.zst-1"],
                "bundle.tar.zst-1.result",
            ),
            // One part taken: every part gets the suffix, before `.part-NNN`.
            (
                &["x.part-001", "x.part-002"],
                &["x.part-002"],
                &["x-1.part-001", "x-1.part-002"],
                "x-1.result",
            ),
        ];
        for (files, taken, want, note) in cases {
            let (_tmp, mut inbox) = inbox(Duration::ZERO);
            let done = inbox.dir.as_path().join("done");
            for name in *taken {
                write(&done, name, "old");
            }
            for name in *files {
                write(inbox.dir.as_path(), name, "new");
            }
            let (candidates, _) = inbox.ready();
            inbox
                .finish(&candidates[0], &Verdict::Done("ok".into()))
                .unwrap();

            let mut all: Vec<&str> = taken.iter().chain(*want).copied().collect();
            all.push(note);
            all.sort();
            assert_eq!(listing(&done), all, "files {files:?}, taken {taken:?}");
            for name in *taken {
                assert_eq!(fs::read_to_string(done.join(name)).unwrap(), "old");
            }
            for name in *want {
                assert_eq!(fs::read_to_string(done.join(name)).unwrap(), "new");
            }
            let text = fs::read_to_string(done.join(note)).unwrap();
            let original = files.join(", ");
            assert!(text.contains(&format!("\nfiles: {original}\n")), "{text}");
        }
    }

    #[test]
    fn wait_keeps_the_files_until_one_changes() {
        let (_tmp, mut inbox) = inbox(Duration::ZERO);
        write(inbox.dir.as_path(), "a.part-001", "1");
        write(inbox.dir.as_path(), "a.part-002", "2");
        let (candidates, _) = inbox.ready();
        let wait = Verdict::Wait("part 2 of 3 is the last one here".into());

        assert_eq!(
            inbox.finish(&candidates[0], &wait).unwrap(),
            inbox.dir.as_path()
        );
        assert_eq!(
            listing(inbox.dir.as_path()),
            ["a.part-001", "a.part-002", "done", "rejected"]
        );
        assert_eq!(inbox.ready(), (Vec::new(), None));
        assert_eq!(inbox.ready(), (Vec::new(), None));

        append(&inbox.dir.as_path().join("a.part-002"), "more");
        let (again, _) = inbox.ready();
        assert_eq!(again, candidates, "a changed part offers the bundle again");

        inbox.finish(&again[0], &wait).unwrap();
        assert_eq!(inbox.ready(), (Vec::new(), None));
        write(inbox.dir.as_path(), "a.part-003", "3");
        let (again, _) = inbox.ready();
        let want = strings(&["a.part-001", "a.part-002", "a.part-003"]);
        assert_eq!(offered(&again), [("a".to_string(), want)], "a new part too");
    }

    #[test]
    fn a_failed_move_is_not_offered_again_until_a_file_changes() {
        /// Breaks done/; false when it cannot be broken that way here.
        type BreakDone = fn(&Path) -> bool;
        let not_a_dir: BreakDone = |done| {
            fs::remove_dir(done).unwrap();
            fs::write(done, "").unwrap();
            true
        };
        let read_only: BreakDone = |done| {
            fs::set_permissions(done, fs::Permissions::from_mode(0o555)).unwrap();
            // Root writes into a read-only directory anyway: nothing to test then.
            let probe = done.join("probe");
            if fs::write(&probe, "").is_ok() {
                fs::remove_file(probe).unwrap();
                return false;
            }
            true
        };
        let cases = [
            ("done/ is a file", not_a_dir),
            ("done/ is read-only", read_only),
        ];
        for (case, break_done) in cases {
            let (_tmp, mut inbox) = inbox(Duration::ZERO);
            write(inbox.dir.as_path(), "a.part-001", "1");
            write(inbox.dir.as_path(), "a.part-002", "2");
            let (candidates, _) = inbox.ready();
            let done = inbox.dir.as_path().join("done");
            if !break_done(&done) {
                eprintln!("skipped {case}: running as root");
                continue;
            }

            let err = inbox.finish(&candidates[0], &Verdict::Done("ok".into()));
            assert!(err.is_err(), "{case}");
            let mut left = listing(inbox.dir.as_path());
            left.retain(|n| n.starts_with("a."));
            assert_eq!(left, ["a.part-001", "a.part-002"], "{case}");
            assert_eq!(inbox.ready(), (Vec::new(), None), "{case}");

            append(&inbox.dir.as_path().join("a.part-001"), "more");
            assert_eq!(inbox.ready().0, candidates, "{case}");
            // So the temporary directory can be removed.
            let _ = fs::set_permissions(&done, fs::Permissions::from_mode(0o755));
        }
    }

    #[test]
    fn a_move_that_fails_halfway_puts_back_what_was_moved() {
        let (_tmp, inbox) = inbox(Duration::ZERO);
        write(inbox.dir.as_path(), "a.part-001", "1");
        // The second part vanishing is the one failure a test can cause even as root.
        let candidate = Candidate {
            name: "a".into(),
            files: vec![
                inbox.dir.as_path().join("a.part-001"),
                inbox.dir.as_path().join("a.part-002"),
            ],
        };
        let names = strings(&["a.part-001", "a.part-002"]);
        let done = inbox.dir.as_path().join("done");

        assert!(move_all(&done, &candidate, &names, "result").is_err());
        assert_eq!(listing(&done), Vec::<String>::new());
        assert_eq!(
            fs::read_to_string(inbox.dir.as_path().join("a.part-001")).unwrap(),
            "1"
        );
    }

    #[test]
    fn a_file_changed_during_the_import_is_not_filed() {
        let (_tmp, mut inbox) = inbox(Duration::ZERO);
        write(inbox.dir.as_path(), "b", "x");
        let (candidates, _) = inbox.ready();
        append(&inbox.dir.as_path().join("b"), "y");

        let err = inbox.finish(&candidates[0], &Verdict::Done("ok".into()));
        assert!(err.is_err());
        assert_eq!(
            listing(&inbox.dir.as_path().join("done")),
            Vec::<String>::new()
        );
        assert_eq!(inbox.ready().0, candidates, "offered again once settled");
    }

    #[test]
    fn watch_wakes_when_a_file_is_created() {
        let (_tmp, inbox) = inbox(Duration::ZERO);
        let (tx, rx) = mpsc::channel();
        let _watcher = inbox
            .watch(move || {
                let _ = tx.send(());
            })
            .unwrap();
        write(inbox.dir.as_path(), "b", "x");
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}

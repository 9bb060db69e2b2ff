//! Splitting the compressed stream across files for small media (`FILE.part-001`, `-002`, …)
//! and reading it back in order. Parts are plain byte ranges of the one zstd stream, so
//! `cat FILE.part-* | zstd -d | tar t` works; the zstd frame checksum and the manifest catch a
//! wrong part, and the numbering catches a missing one.

use crate::BundleError;
use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// `FILE.part-NNN`.
pub fn part_path(base: &Path, number: u32) -> PathBuf {
    let mut name = OsString::from(base.as_os_str());
    name.push(format!(".part-{number:03}"));
    PathBuf::from(name)
}

/// Whether `path` is named as a part of a split bundle (`FILE.part-NNN`).
pub fn is_part(path: &Path) -> bool {
    parse_part(path).is_some()
}

/// `FILE.part-NNN` → (`FILE`, `NNN` as written, its number): at least three digits, and a number
/// that fits in u32 (no one copies more parts than that; such a name is one whole file). The one
/// reading of part names, for this crate and for the agent's inbox alike.
pub fn split_part_name(name: &str) -> Option<(&str, &str, u32)> {
    let (base, digits) = name.rsplit_once(".part-")?;
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) || base.is_empty() {
        return None;
    }
    Some((base, digits, digits.parse().ok()?))
}

/// `(FILE, NNN)` for `FILE.part-NNN`.
fn parse_part(path: &Path) -> Option<(PathBuf, u32)> {
    let (base, _, number) = split_part_name(path.to_str()?)?;
    Some((PathBuf::from(base), number))
}

/// The files of one bundle in stream order: a single file as given, or parts ordered by their
/// number (not by argument order, so a shell glob in any order works), refusing gaps,
/// duplicates and parts of different bundles. A missing *last* part cannot be seen from the
/// names; it shows as a truncated stream.
pub fn order(parts: &[PathBuf]) -> Result<Vec<PathBuf>, BundleError> {
    let Some(first) = parts.first() else {
        return Err(BundleError::NoParts);
    };
    if parts.len() == 1 && parse_part(first).is_none() {
        return Ok(vec![first.clone()]);
    }
    let mut numbered = Vec::with_capacity(parts.len());
    let mut base_of_first = None;
    for path in parts {
        let (base, number) =
            parse_part(path).ok_or_else(|| BundleError::PartName { path: path.clone() })?;
        let expected_base = base_of_first.get_or_insert_with(|| base.clone());
        if *expected_base != base {
            return Err(BundleError::PartMismatch {
                path: path.clone(),
                first: first.clone(),
            });
        }
        numbered.push((number, path.clone()));
    }
    numbered.sort();
    for (i, pair) in numbered.iter().enumerate() {
        if i > 0 && numbered[i - 1].0 == pair.0 {
            return Err(BundleError::PartDuplicate {
                path: pair.1.clone(),
                number: pair.0,
            });
        }
        let expected = i as u32 + 1;
        if pair.0 != expected {
            return Err(BundleError::PartMissing {
                base: base_of_first.clone().unwrap_or_default(),
                number: expected,
                given: numbered
                    .iter()
                    .map(|(n, _)| format!("{n:03}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(numbered.into_iter().map(|(_, p)| p).collect())
}

/// Reads the parts back to back. An I/O error is recorded with the part's name in `failure`
/// (the zstd and tar layers above only pass a bare `io::Error` on).
pub struct PartReader {
    parts: Vec<(PathBuf, Option<File>)>,
    current: usize,
    failure: Rc<RefCell<Option<BundleError>>>,
}

impl PartReader {
    /// Opens every part up front, so that an unreadable one is reported before any work.
    pub fn open(
        parts: &[PathBuf],
        failure: Rc<RefCell<Option<BundleError>>>,
    ) -> Result<Self, BundleError> {
        let parts = parts
            .iter()
            .map(|p| {
                File::open(p)
                    .map(|f| (p.clone(), Some(f)))
                    .map_err(|e| BundleError::io(p, e))
            })
            .collect::<Result<_, _>>()?;
        Ok(PartReader {
            parts,
            current: 0,
            failure,
        })
    }
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((path, file)) = self.parts.get_mut(self.current) {
            let Some(f) = file else {
                self.current += 1;
                continue;
            };
            match f.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    // Close parts as they are done: a long split bundle should not hold them all.
                    *file = None;
                    self.current += 1;
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let message = e.to_string();
                    self.failure
                        .borrow_mut()
                        .get_or_insert(BundleError::io(path.clone(), e));
                    return Err(io::Error::other(message));
                }
            }
        }
        Ok(0)
    }
}

/// Writes the compressed stream to `FILE`, or with a limit to `FILE.part-001`, `-002`, …
/// each at most `limit` bytes. Every file is fsynced when it is complete: media is often
/// pulled out as soon as the command returns.
pub struct SplitWriter {
    base: PathBuf,
    limit: Option<u64>,
    current: Option<File>,
    written: u64,
    /// Every file created, for the caller to remove if writing fails.
    pub created: Rc<RefCell<Vec<PathBuf>>>,
}

impl SplitWriter {
    pub fn new(base: &Path, limit: Option<u64>) -> Result<Self, BundleError> {
        if limit == Some(0) {
            return Err(BundleError::PartSize { size: 0 });
        }
        let mut writer = SplitWriter {
            base: base.to_path_buf(),
            limit,
            current: None,
            written: 0,
            created: Rc::default(),
        };
        if limit.is_none() {
            let file = writer
                .create(base.to_path_buf())
                .map_err(|e| BundleError::io(base, e))?;
            writer.current = Some(file);
        }
        Ok(writer)
    }

    fn create(&mut self, path: PathBuf) -> io::Result<File> {
        let file = File::create(&path)?;
        self.created.borrow_mut().push(path);
        Ok(file)
    }

    /// Closes the last file and returns all of them, in order. Parts left over from an
    /// earlier, longer bundle at the same name are removed so a glob picks up only this one.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, BundleError> {
        if let Some(file) = self.current.take() {
            let path = self.created.borrow().last().cloned().unwrap_or_default();
            file.sync_all().map_err(|e| BundleError::io(path, e))?;
        }
        let created = self.created.borrow().clone();
        let dir = match self.base.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if self.limit.is_some() {
            self.remove_stale_parts(&dir, created.len() as u32)?;
        }
        crate::sync_dir(&dir)?;
        Ok(created)
    }
}

impl SplitWriter {
    /// Removes `FILE.part-NNN` files numbered above `last`, left by an earlier bundle written
    /// to the same name, so that `FILE.part-*` names exactly this bundle.
    fn remove_stale_parts(&self, dir: &Path, last: u32) -> Result<(), BundleError> {
        let listing = std::fs::read_dir(dir).map_err(|e| BundleError::io(dir, e))?;
        for entry in listing {
            let path = entry.map_err(|e| BundleError::io(dir, e))?.path();
            let ours = parse_part(&path)
                .is_some_and(|(base, n)| n > last && base.file_name() == self.base.file_name());
            if ours && path.is_file() {
                std::fs::remove_file(&path).map_err(|e| BundleError::io(&path, e))?;
            }
        }
        Ok(())
    }
}

impl Write for SplitWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(limit) = self.limit else {
            return self.current.as_mut().expect("opened in new").write(buf);
        };
        if self.current.is_none() || self.written == limit {
            if let Some(done) = self.current.take() {
                done.sync_all()?;
            }
            let number = self.created.borrow().len() as u32 + 1;
            let file = self.create(part_path(&self.base, number))?;
            self.current = Some(file);
            self.written = 0;
        }
        let room = (limit - self.written).min(buf.len() as u64) as usize;
        let n = self
            .current
            .as_mut()
            .expect("opened above")
            .write(&buf[..room])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn part_names_are_read_one_way() {
        type Split<'a> = Option<(&'a str, &'a str, u32)>;
        let cases: &[(&str, Split)] = &[
            ("r.bundle.part-001", Some(("r.bundle", "001", 1))),
            ("r.bundle.part-0042", Some(("r.bundle", "0042", 42))),
            ("a.part-001.part-002", Some(("a.part-001", "002", 2))),
            ("r.bundle.part-01", None),
            ("r.bundle.part-1x3", None),
            (".part-001", None),
            ("r.bundle", None),
            ("r.bundle.part-99999999999", None),
        ];
        for (name, want) in cases {
            assert_eq!(split_part_name(name), *want, "{name}");
        }
    }

    #[test]
    fn orders_parts_by_number_and_refuses_gaps() {
        assert_eq!(order(&[p("b.fbz")]).unwrap(), [p("b.fbz")]);
        assert_eq!(
            order(&[p("b.part-002"), p("b.part-001")]).unwrap(),
            [p("b.part-001"), p("b.part-002")]
        );
        let gap = order(&[p("b.part-001"), p("b.part-003")]).unwrap_err();
        assert!(gap.to_string().contains("part 2 of b is missing"), "{gap}");
        assert!(order(&[p("b.part-002")]).is_err());
        assert!(order(&[p("b.part-001"), p("b.part-001")]).is_err());
        assert!(order(&[p("b.part-001"), p("c.part-002")]).is_err());
        assert!(order(&[p("b.part-001"), p("b")]).is_err());
        assert!(order(&[]).is_err());
    }
}

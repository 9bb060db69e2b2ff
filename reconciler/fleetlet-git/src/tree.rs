//! Reading a commit's files for the "observe/pull" step of the reconcile cycle: after a poll has
//! brought a commit into the mirror, the engine asks for its files. They are read straight from
//! the mirror's object database (there is no working tree), and everything that could make the
//! agent read outside the repo or exhaust memory is refused here, before any bytes are loaded.
//!
//! Symlinks: a link whose target stays inside the repo is replaced by the content of the file it
//! points to (following chains and links in intermediate folders, like the kernel would). A link
//! that is absolute, climbs above the repo root, points to a folder, dangles or loops is refused:
//! the engine only ever sees regular files, so no later step has to think about links.

use fleetlet_core::RepoTree;
use git2::{Commit, ObjectType, Oid, Repository};
use std::collections::{BTreeMap, BTreeSet};
use tracing::warn;

/// Git's file modes (the tree entry's mode, not the file system's).
const MODE_TREE: i32 = 0o040000;
const MODE_BLOB: i32 = 0o100644;
const MODE_BLOB_GROUP_WRITABLE: i32 = 0o100664;
const MODE_EXECUTABLE: i32 = 0o100755;
const MODE_SYMLINK: i32 = 0o120000;
const MODE_GITLINK: i32 = 0o160000;

/// The same bound as Linux's SYMLOOP_MAX-ish limit: deeper chains are almost surely loops.
const MAX_LINK_DEPTH: u32 = 40;
/// A link target longer than PATH_MAX cannot be a real path; don't load a huge "link" blob.
const MAX_LINK_TARGET: usize = 4096;

/// Size limits applied while reading a tree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_file_size: u64,
    pub max_tree_size: u64,
}

/// Why a tree cannot be used. Every variant names the offending path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TreeError {
    #[error("{path}: file is {size} bytes, over the limit of {max} bytes per file")]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error(
        "{path}: the files up to here total {total} bytes, over the limit of {max} bytes per tree"
    )]
    TreeTooLarge { path: String, total: u64, max: u64 },
    #[error("{path}: symlink to {target:?} leaves the repository")]
    SymlinkEscapes { path: String, target: String },
    #[error("{path}: symlink to {target:?} points to a folder; only links to files are supported")]
    SymlinkToDir { path: String, target: String },
    #[error("{path}: symlink to {target:?} points to nothing in this commit")]
    SymlinkDangling { path: String, target: String },
    #[error("{path}: symlink chain longer than {MAX_LINK_DEPTH} links (a loop?)")]
    SymlinkLoop { path: String },
    #[error("{path}: symlink target is not a valid UTF-8 path or is too long")]
    BadSymlink { path: String },
    #[error("{path}: path is not valid UTF-8")]
    NonUtf8Path { path: String },
    #[error("{path}: unexpected tree entry mode {mode:o}")]
    UnknownMode { path: String, mode: i32 },
    /// The object database itself failed: not a property of the tree.
    #[error("{0}")]
    Git(#[from] git2::Error),
}

/// Reads every file of `commit` into a [`RepoTree`], enforcing `limits`.
pub(crate) fn read_commit_tree(
    repo: &Repository,
    commit: &Commit<'_>,
    limits: Limits,
) -> Result<RepoTree, TreeError> {
    let odb = repo.odb()?;
    let mut walk = Walk {
        limits,
        total: 0,
        files: BTreeMap::new(),
        links: BTreeMap::new(),
        dirs: BTreeSet::new(),
        resolved: Vec::new(),
    };

    // Depth-first over the trees; an explicit stack so a deep repo cannot overflow ours.
    let mut stack = vec![(String::new(), commit.tree()?)];
    while let Some((prefix, tree)) = stack.pop() {
        for entry in tree.iter() {
            let path = match entry.name() {
                Ok(name) if prefix.is_empty() => name.to_string(),
                Ok(name) => format!("{prefix}/{name}"),
                Err(_) => {
                    let lossy = String::from_utf8_lossy(entry.name_bytes());
                    return Err(TreeError::NonUtf8Path {
                        path: format!("{prefix}/{lossy}"),
                    });
                }
            };
            match entry.filemode() {
                MODE_TREE => {
                    walk.dirs.insert(path.clone());
                    stack.push((path, repo.find_tree(entry.id())?));
                }
                MODE_BLOB | MODE_BLOB_GROUP_WRITABLE | MODE_EXECUTABLE => {
                    // The header gives the size without inflating the object: a 10 GiB blob is
                    // refused without ever being read.
                    let (size, _) = odb.read_header(entry.id())?;
                    let size = size as u64;
                    if size > limits.max_file_size {
                        return Err(TreeError::FileTooLarge {
                            path,
                            size,
                            max: limits.max_file_size,
                        });
                    }
                    walk.add_to_total(&path, size)?;
                    let bytes = read_blob(&odb, entry.id())?;
                    walk.files.insert(path, bytes);
                }
                MODE_SYMLINK => {
                    let (size, _) = odb.read_header(entry.id())?;
                    if size > MAX_LINK_TARGET {
                        return Err(TreeError::BadSymlink { path });
                    }
                    let target = String::from_utf8(read_blob(&odb, entry.id())?)
                        .map_err(|_| TreeError::BadSymlink { path: path.clone() })?;
                    walk.links.insert(path, target);
                }
                MODE_GITLINK => {
                    // A submodule is another repository at another commit; the fleet repo must
                    // be self-contained, so its content is simply not part of the tree.
                    warn!(path = %path, commit = %entry.id(), "skipping submodule: submodules are not fetched");
                }
                mode => return Err(TreeError::UnknownMode { path, mode }),
            }
        }
    }

    let links: Vec<String> = walk.links.keys().cloned().collect();
    for link in links {
        let real = walk.resolve_file(&link)?;
        let bytes = walk.files[&real].clone();
        walk.add_to_total(&link, bytes.len() as u64)?;
        walk.resolved.push((link, bytes));
    }

    let mut out = RepoTree::new();
    for (path, bytes) in walk.files.into_iter().chain(walk.resolved) {
        out.insert(path, bytes);
    }
    Ok(out)
}

fn read_blob(odb: &git2::Odb<'_>, id: Oid) -> Result<Vec<u8>, git2::Error> {
    let object = odb.read(id)?;
    if object.kind() != ObjectType::Blob {
        return Err(git2::Error::from_str(&format!(
            "object {id} is a {}, expected a blob",
            object.kind()
        )));
    }
    Ok(object.data().to_vec())
}

struct Walk {
    limits: Limits,
    total: u64,
    files: BTreeMap<String, Vec<u8>>,
    links: BTreeMap<String, String>,
    dirs: BTreeSet<String>,
    /// Links already resolved to their target's bytes.
    resolved: Vec<(String, Vec<u8>)>,
}

impl Walk {
    fn add_to_total(&mut self, path: &str, size: u64) -> Result<(), TreeError> {
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_tree_size {
            return Err(TreeError::TreeTooLarge {
                path: path.to_string(),
                total: self.total,
                max: self.limits.max_tree_size,
            });
        }
        Ok(())
    }

    /// The regular file that symlink `link` finally points to.
    fn resolve_file(&self, link: &str) -> Result<String, TreeError> {
        let real = self.resolve(link, 0)?;
        if self.files.contains_key(&real) {
            return Ok(real);
        }
        let target = self.links[link].clone();
        if real.is_empty() || self.dirs.contains(&real) {
            Err(TreeError::SymlinkToDir {
                path: link.to_string(),
                target,
            })
        } else {
            Err(TreeError::SymlinkDangling {
                path: link.to_string(),
                target,
            })
        }
    }

    /// Resolves `link` to a path free of symlinks, relative to the repo root. Works component by
    /// component so that `..` after a linked folder goes to the parent of the link's target, as
    /// on a real file system (a purely textual normalisation would get that wrong).
    fn resolve(&self, link: &str, depth: u32) -> Result<String, TreeError> {
        if depth > MAX_LINK_DEPTH {
            return Err(TreeError::SymlinkLoop {
                path: link.to_string(),
            });
        }
        let target = &self.links[link];
        if target.starts_with('/') {
            return Err(TreeError::SymlinkEscapes {
                path: link.to_string(),
                target: target.clone(),
            });
        }
        // Relative targets start from the folder holding the link.
        let mut current: Vec<String> = link.split('/').map(str::to_string).collect();
        current.pop();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if current.pop().is_none() {
                        return Err(TreeError::SymlinkEscapes {
                            path: link.to_string(),
                            target: target.clone(),
                        });
                    }
                }
                name => {
                    current.push(name.to_string());
                    let so_far = current.join("/");
                    if self.links.contains_key(&so_far) {
                        let real = self.resolve(&so_far, depth + 1)?;
                        current = if real.is_empty() {
                            Vec::new()
                        } else {
                            real.split('/').map(str::to_string).collect()
                        };
                    }
                }
            }
        }
        Ok(current.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(files: &[&str], dirs: &[&str], links: &[(&str, &str)]) -> Walk {
        Walk {
            limits: Limits {
                max_file_size: 100,
                max_tree_size: 1000,
            },
            total: 0,
            files: files
                .iter()
                .map(|f| (f.to_string(), f.as_bytes().to_vec()))
                .collect(),
            links: links
                .iter()
                .map(|(l, t)| (l.to_string(), t.to_string()))
                .collect(),
            dirs: dirs.iter().map(|d| d.to_string()).collect(),
            resolved: Vec::new(),
        }
    }

    #[test]
    fn resolves_links_inside_the_repo() {
        let w = walk(
            &["a/b/file", "top"],
            &["a", "a/b"],
            &[
                ("a/same", "b/file"),
                ("a/b/up", "../../top"),
                ("dirlink", "a/b"),
                ("via_dir", "dirlink/file"),
                ("via_dir_parent", "dirlink/../b/file"),
                ("chain", "a/same"),
            ],
        );
        assert_eq!(w.resolve_file("a/same").unwrap(), "a/b/file");
        assert_eq!(w.resolve_file("a/b/up").unwrap(), "top");
        assert_eq!(w.resolve_file("via_dir").unwrap(), "a/b/file");
        // `dirlink/..` is `a`, not the root: POSIX semantics.
        assert_eq!(w.resolve_file("via_dir_parent").unwrap(), "a/b/file");
        assert_eq!(w.resolve_file("chain").unwrap(), "a/b/file");
    }

    #[test]
    fn refuses_escapes_dirs_dangling_and_loops() {
        let w = walk(
            &["f"],
            &["d"],
            &[
                ("abs", "/etc/passwd"),
                ("d/up", "../../etc/passwd"),
                ("d/root", ".."),
                ("dl", "d"),
                ("gone", "nope"),
                ("loop1", "loop2"),
                ("loop2", "loop1"),
                ("via_escape", "d/up"),
            ],
        );
        assert!(matches!(
            w.resolve_file("abs"),
            Err(TreeError::SymlinkEscapes { .. })
        ));
        assert!(matches!(
            w.resolve_file("d/up"),
            Err(TreeError::SymlinkEscapes { .. })
        ));
        assert!(matches!(
            w.resolve_file("d/root"),
            Err(TreeError::SymlinkToDir { .. })
        ));
        assert!(matches!(
            w.resolve_file("dl"),
            Err(TreeError::SymlinkToDir { .. })
        ));
        assert!(matches!(
            w.resolve_file("gone"),
            Err(TreeError::SymlinkDangling { .. })
        ));
        assert!(matches!(
            w.resolve_file("loop1"),
            Err(TreeError::SymlinkLoop { .. })
        ));
        let err = w.resolve_file("via_escape").unwrap_err().to_string();
        assert!(
            err.contains("d/up") && err.contains("leaves the repository"),
            "{err}"
        );
    }
}

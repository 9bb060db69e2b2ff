//! Reads a fleet repo from a plain directory (an operator's checkout) into a [`RepoTree`], for
//! `fleetlet validate` and `render` before anything is committed. `.git` and Cargo `target/`
//! build folders are skipped; symlinks that leave the directory or point at folders, and
//! oversized files, are refused, as the Git source refuses them.

use anyhow::{Context, bail};
use fleetlet_core::RepoTree;
use std::path::Path;

pub const MAX_FILE_SIZE: u64 = 64 << 20;

pub fn read_dir_tree(root: &Path) -> anyhow::Result<RepoTree> {
    let root = root
        .canonicalize()
        .with_context(|| format!("opening fleet repo {}", root.display()))?;
    let mut tree = RepoTree::new();
    walk(&root, &root, &mut tree)?;
    Ok(tree)
}

fn walk(root: &Path, dir: &Path, tree: &mut RepoTree) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if name == ".git" || name == "target" {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .expect("walk stays under root")
            .to_string_lossy()
            .replace('\\', "/");
        let meta = std::fs::symlink_metadata(&path)?;
        let (real, meta) = if meta.file_type().is_symlink() {
            let real = path
                .canonicalize()
                .with_context(|| format!("{rel}: broken symlink"))?;
            if !real.starts_with(root) {
                bail!(
                    "{rel}: symlink points outside the repo (to {})",
                    real.display()
                );
            }
            let m = std::fs::metadata(&real)?;
            (real, m)
        } else {
            (path.clone(), meta)
        };
        if meta.is_dir() {
            if real != path {
                // As the Git source does: a link to a folder is refused, not silently skipped.
                bail!("{rel}: symlink to a folder (only links to files are supported)");
            }
            walk(root, &path, tree)?;
        } else if meta.is_file() {
            if meta.len() > MAX_FILE_SIZE {
                bail!(
                    "{rel}: file is {} bytes, more than the {MAX_FILE_SIZE}-byte limit",
                    meta.len()
                );
            }
            tree.insert(
                rel,
                std::fs::read(&real).with_context(|| format!("reading {}", real.display()))?,
            );
        }
    }
    Ok(())
}

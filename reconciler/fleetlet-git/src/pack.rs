//! Git objects carried across an air gap: the pack a sync bundle holds (every object needed to
//! reach the release commit, or only those after a base the site already has), and its import
//! into the agent's mirror. Packs are made with one thread so the same inputs give the same
//! bytes (bundles are deterministic).

use git2::{ObjectType, Oid, Repository};
use std::path::Path;

/// The mirror's ref for the release of the last imported bundle: a symbolic ref to the branch
/// the bundle carried (`refs/heads/main`), which points at the release commit.
pub const IMPORTED_REF: &str = "refs/fleetlet/imported";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(
        "the bundle carries {new}, which does not descend from {current}, the release this site already has (an older release replayed, or rewritten history)"
    )]
    Rollback { current: String, new: String },
    #[error("{path}: {message}")]
    Repo { path: String, message: String },
    #[error("{rev:?} does not name a commit in {path}")]
    UnknownRevision { path: String, rev: String },
    #[error(
        "this delta needs base commit {base}, which the site does not have: carry a full bundle, or a delta since a commit the site has"
    )]
    MissingBase { base: String },
    #[error("importing the pack: {0}")]
    Import(String),
    #[error("{reference} is not a branch: an imported release is published on refs/heads/…")]
    NotABranch { reference: String },
    /// A tag the bundle names is not what it claims (not a tag object of that name on the
    /// release commit), or would replace a different tag of the same name.
    #[error("tag {name}: {message}")]
    Tag { name: String, message: String },
}

/// Most annotated tags one release may carry (release tags, rollback instructions).
pub const MAX_TAGS: usize = 64;

/// Ref and object writes reach the disk before the call returns (libgit2 does not fsync by
/// default): the branch a site publishes must never survive a power loss that its objects
/// did not.
pub fn enable_fsync() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a process-wide libgit2 option, set once, with the (int) argument
        // GIT_OPT_ENABLE_FSYNC_GITDIR expects; libgit2 is initialised by git2 first.
        unsafe {
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as std::ffi::c_int,
                1 as std::ffi::c_int,
            );
        }
    });
}

/// What [`export_pack`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackExport {
    /// The commit the pack reaches.
    pub commit: String,
    /// The pack (`PACK` format, no index).
    pub pack: Vec<u8>,
    pub objects: usize,
    /// Annotated tags pointing at the commit that the pack carries: (name, tag object id).
    pub tags: Vec<(String, String)>,
}

fn repo_err(path: &Path, e: git2::Error) -> PackError {
    PackError::Repo {
        path: path.display().to_string(),
        message: e.message().to_string(),
    }
}

/// A pack with every object needed to reach `rev` (a branch, tag or commit id of the repo at
/// `path`) and the annotated tags on that commit, without the objects `since` already reaches.
pub fn export_pack(path: &Path, rev: &str, since: Option<&str>) -> Result<PackExport, PackError> {
    let repo = Repository::open(path).map_err(|e| repo_err(path, e))?;
    let resolve = |r: &str| -> Result<Oid, PackError> {
        repo.revparse_single(r)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .map_err(|_| PackError::UnknownRevision {
                path: path.display().to_string(),
                rev: r.to_string(),
            })
    };
    let commit = resolve(rev)?;
    let base = since.map(resolve).transpose()?;
    let mut walk = repo.revwalk().map_err(|e| repo_err(path, e))?;
    walk.push(commit).map_err(|e| repo_err(path, e))?;
    if let Some(b) = base {
        walk.hide(b).map_err(|e| repo_err(path, e))?;
    }
    let mut builder = repo.packbuilder().map_err(|e| repo_err(path, e))?;
    builder.set_threads(1);
    builder
        .insert_walk(&mut walk)
        .map_err(|e| repo_err(path, e))?;
    // Release tags and rollback instructions travel with the commit they sign.
    let mut tags = Vec::new();
    repo.tag_foreach(|oid, name| {
        if let Ok(tag) = repo.find_tag(oid)
            && tag.target_id() == commit
            && tag.target_type() == Some(ObjectType::Commit)
        {
            let name = String::from_utf8_lossy(name)
                .trim_start_matches("refs/tags/")
                .to_string();
            tags.push((name, oid));
        }
        true
    })
    .map_err(|e| repo_err(path, e))?;
    tags.sort();
    for (name, oid) in &tags {
        builder
            .insert_object(*oid, Some(name))
            .map_err(|e| repo_err(path, e))?;
    }
    let mut buf = git2::Buf::new();
    builder.write_buf(&mut buf).map_err(|e| repo_err(path, e))?;
    Ok(PackExport {
        commit: commit.to_string(),
        pack: buf.to_vec(),
        objects: builder.object_count(),
        tags: tags.into_iter().map(|(n, o)| (n, o.to_string())).collect(),
    })
}

/// The commit `rev` (a branch, tag, commit id or any revision Git understands) names in the
/// repository at `path`.
pub fn rev_commit(path: &Path, rev: &str) -> Result<String, PackError> {
    let repo = Repository::open(path).map_err(|e| repo_err(path, e))?;
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id().to_string())
        .map_err(|_| PackError::UnknownRevision {
            path: path.display().to_string(),
            rev: rev.to_string(),
        })
}

/// The commit of the release last imported into the mirror, if any.
pub fn imported_commit(mirror: &Path) -> Option<String> {
    let repo = Repository::open_bare(mirror).ok()?;
    let r = repo.find_reference(IMPORTED_REF).ok()?;
    Some(r.resolve().ok()?.peel_to_commit().ok()?.id().to_string())
}

/// Whether the mirror at `mirror` (bare) has `commit`.
pub fn has_commit(mirror: &Path, commit: &str) -> bool {
    let Ok(repo) = Repository::open_bare(mirror) else {
        return false;
    };
    Oid::from_str(commit)
        .ok()
        .is_some_and(|oid| repo.find_commit(oid).is_ok())
}

/// Adds the objects of `pack` to the bare mirror at `mirror` (created if missing), after
/// checking that a delta's base is there. Objects are only added: nothing that refers to them
/// changes here, so an import that fails half-way leaves nothing the agent would use.
pub fn import_pack(
    mirror: &Path,
    mut pack: impl std::io::Read,
    base: Option<&str>,
) -> Result<(), PackError> {
    enable_fsync();
    let repo = if mirror.join("HEAD").exists() {
        Repository::open_bare(mirror)
    } else {
        std::fs::create_dir_all(mirror).map_err(|e| PackError::Repo {
            path: mirror.display().to_string(),
            message: e.to_string(),
        })?;
        Repository::init_bare(mirror)
    }
    .map_err(|e| repo_err(mirror, e))?;
    if let Some(b) = base
        && Oid::from_str(b)
            .ok()
            .is_none_or(|oid| repo.find_commit(oid).is_err())
    {
        return Err(PackError::MissingBase {
            base: b.to_string(),
        });
    }
    let odb = repo.odb().map_err(|e| repo_err(mirror, e))?;
    let mut writer = odb
        .packwriter()
        .map_err(|e| PackError::Import(e.message().to_string()))?;
    // Streamed: a pack may be large, and is indexed as it arrives.
    std::io::copy(&mut pack, &mut writer).map_err(|e| PackError::Import(e.to_string()))?;
    writer
        .commit()
        .map_err(|e| PackError::Import(e.message().to_string()))?;
    Ok(())
}

/// Imports `pack` into a fresh bare repository at `staging` that borrows the objects of
/// `mirror` (Git alternates), so an import can be checked — signatures read, tree rendered,
/// descent from what the site has — before anything reaches the mirror. Dropping `staging`
/// leaves the mirror exactly as it was. A delta's base must be in the mirror.
pub fn stage_import(
    mirror: &Path,
    staging: &Path,
    pack: impl std::io::Read,
    base: Option<&str>,
) -> Result<(), PackError> {
    let repo = Repository::init_bare(staging).map_err(|e| repo_err(staging, e))?;
    let objects = mirror.join("objects");
    if objects.is_dir() {
        let objects = objects.canonicalize().map_err(|e| PackError::Repo {
            path: objects.display().to_string(),
            message: e.to_string(),
        })?;
        let alternates = staging.join("objects").join("info").join("alternates");
        std::fs::create_dir_all(alternates.parent().unwrap_or(staging))
            .and_then(|()| std::fs::write(&alternates, format!("{}\n", objects.display())))
            .map_err(|e| PackError::Repo {
                path: alternates.display().to_string(),
                message: e.to_string(),
            })?;
    }
    drop(repo);
    import_pack(staging, pack, base)
}

/// Makes an imported release visible to the agent: tag refs first (the engine reads release
/// tags and rollback instructions from them), then the branch, then the imported ref — each a
/// single ref write, the branch move being the one that publishes. Refuses a commit that does
/// not descend from the release imported before (rollback protection on the air-gap path too),
/// unless `allow_rollback`.
pub fn publish_import(
    mirror: &Path,
    branch: &str,
    commit: &str,
    tags: &[(String, String)],
    allow_rollback: bool,
) -> Result<(), PackError> {
    enable_fsync();
    let repo = Repository::open_bare(mirror).map_err(|e| repo_err(mirror, e))?;
    let bad = |rev: &str| PackError::UnknownRevision {
        path: mirror.display().to_string(),
        rev: rev.to_string(),
    };
    let new = Oid::from_str(commit).map_err(|_| bad(commit))?;
    repo.find_commit(new).map_err(|_| bad(commit))?;
    let branch_ref = if branch.starts_with("refs/") {
        branch.to_string()
    } else {
        format!("refs/heads/{branch}")
    };
    // Only a branch: the imported ref points at it, and the policy's per-ref rules judge the
    // release by its name.
    if !branch_ref.starts_with("refs/heads/") || !git2::Reference::is_valid_name(&branch_ref) {
        return Err(PackError::NotABranch {
            reference: branch_ref,
        });
    }
    if let Ok(current) = repo
        .find_reference(IMPORTED_REF)
        .and_then(|r| r.resolve())
        .and_then(|r| r.peel_to_commit())
    {
        let current = current.id();
        let descends = current == new
            || repo
                .graph_descendant_of(new, current)
                .map_err(|e| repo_err(mirror, e))?;
        if !descends && !allow_rollback {
            return Err(PackError::Rollback {
                current: current.to_string(),
                new: commit.to_string(),
            });
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(PackError::Tag {
            name: tags[MAX_TAGS].0.clone(),
            message: format!("a release carries at most {MAX_TAGS} tags"),
        });
    }
    // Every tag checked before any is written.
    let mut checked = Vec::with_capacity(tags.len());
    for (name, oid) in tags {
        let tag_err = |message: String| PackError::Tag {
            name: name.clone(),
            message,
        };
        let oid =
            Oid::from_str(oid).map_err(|_| tag_err(format!("{oid:?} is not an object id")))?;
        let tag = repo
            .find_tag(oid)
            .map_err(|_| tag_err(format!("{oid} is not an annotated tag in the pack")))?;
        if tag.name_bytes() != name.as_bytes() || tag.target_id() != new {
            return Err(tag_err(format!(
                "{oid} is tag {:?} on {}, not {name:?} on {commit}",
                String::from_utf8_lossy(tag.name_bytes()),
                tag.target_id()
            )));
        }
        let full = format!("refs/tags/{name}");
        if let Ok(existing) = repo.find_reference(&full)
            && existing.target() != Some(oid)
        {
            return Err(tag_err(
                "the site already has a different tag of this name; tags are never replaced".into(),
            ));
        }
        if !git2::Reference::is_valid_name(&full) {
            return Err(tag_err("not a valid tag name".into()));
        }
        checked.push((full, oid));
    }
    for (full, oid) in checked {
        repo.reference(&full, oid, true, "fleetlet: imported tag")
            .map_err(|e| repo_err(mirror, e))?;
    }
    repo.reference(&branch_ref, new, true, "fleetlet: imported release")
        .map_err(|e| repo_err(mirror, e))?;
    repo.reference_symbolic(
        IMPORTED_REF,
        &branch_ref,
        true,
        "fleetlet: imported release",
    )
    .map_err(|e| repo_err(mirror, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
            .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit(dir: &Path, file: &str, content: &str) -> String {
        std::fs::write(dir.join(file), content).unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", content]);
        git(dir, &["rev-parse", "HEAD"])
    }

    #[test]
    fn full_and_delta_packs_import_into_a_mirror() {
        let src = tempfile::tempdir().unwrap();
        git(src.path(), &["init", "-q", "-b", "main"]);
        // Incompressible, so the delta's saving shows.
        let noise: String = (0..20_000u32)
            .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
            .collect();
        let c1 = commit(src.path(), "a", &noise);
        let c2 = commit(src.path(), "b", "two");
        git(src.path(), &["tag", "-a", "-m", "release", "release-1"]);

        let full = export_pack(src.path(), "main", None).unwrap();
        assert_eq!(full.commit, c2);
        assert_eq!(full.tags.len(), 1);
        assert_eq!(full.tags[0].0, "release-1");
        assert_eq!(
            export_pack(src.path(), "main", None).unwrap(),
            full,
            "deterministic"
        );
        let delta = export_pack(src.path(), "main", Some(&c1)).unwrap();
        assert!(
            delta.pack.len() < full.pack.len() / 2,
            "{} vs {}",
            delta.pack.len(),
            full.pack.len()
        );

        // A delta needs its base.
        let empty = tempfile::tempdir().unwrap();
        let err = import_pack(empty.path(), &delta.pack[..], Some(&c1)).unwrap_err();
        assert!(err.to_string().contains(&c1), "{err}");
        assert!(!has_commit(empty.path(), &c2));

        let mirror = tempfile::tempdir().unwrap();
        let first = export_pack(src.path(), &c1, None).unwrap();
        import_pack(mirror.path(), &first.pack[..], None).unwrap();
        assert!(has_commit(mirror.path(), &c1) && !has_commit(mirror.path(), &c2));
        import_pack(mirror.path(), &delta.pack[..], Some(&c1)).unwrap();
        assert!(has_commit(mirror.path(), &c2));
        let repo = Repository::open_bare(mirror.path()).unwrap();
        let tag = repo
            .find_tag(Oid::from_str(&delta.tags[0].1).unwrap())
            .unwrap();
        assert_eq!(tag.target_id().to_string(), c2);

        // Garbage is refused, and adds nothing.
        assert!(import_pack(mirror.path(), &b"PACK garbage"[..], None).is_err());
        assert!(matches!(
            export_pack(src.path(), "nope", None),
            Err(PackError::UnknownRevision { .. })
        ));
    }

    #[test]
    fn a_staged_import_borrows_the_mirror_and_leaves_it_untouched() {
        let src = tempfile::tempdir().unwrap();
        git(src.path(), &["init", "-q", "-b", "main"]);
        let c1 = commit(src.path(), "a", "one");
        let c2 = commit(src.path(), "b", "two");
        let mirror = tempfile::tempdir().unwrap();
        import_pack(
            mirror.path(),
            &export_pack(src.path(), &c1, None).unwrap().pack[..],
            None,
        )
        .unwrap();
        publish_import(mirror.path(), "main", &c1, &[], false).unwrap();
        let listing = |dir: &Path| {
            let mut out = Vec::new();
            let mut stack = vec![dir.to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap().flatten() {
                    if e.path().is_dir() {
                        stack.push(e.path());
                    } else {
                        out.push(e.path());
                    }
                }
            }
            out.sort();
            out
        };
        let before = listing(mirror.path());

        let delta = export_pack(src.path(), "main", Some(&c1)).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let staging = scratch.path().join("stage");
        // The delta's base is found through the mirror's objects.
        stage_import(mirror.path(), &staging, &delta.pack[..], Some(&c1)).unwrap();
        assert!(has_commit(&staging, &c2) && has_commit(&staging, &c1));
        publish_import(&staging, "main", &c2, &[], false).unwrap();
        assert_eq!(imported_commit(&staging).as_deref(), Some(c2.as_str()));
        drop(scratch);
        assert_eq!(listing(mirror.path()), before, "the mirror did not change");
        assert!(!has_commit(mirror.path(), &c2));
        assert_eq!(imported_commit(mirror.path()).as_deref(), Some(c1.as_str()));

        // A base the mirror lacks is named.
        let empty = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let err = stage_import(
            empty.path(),
            &scratch.path().join("s"),
            &delta.pack[..],
            Some(&c1),
        )
        .unwrap_err();
        assert!(
            matches!(&err, PackError::MissingBase { base } if *base == c1),
            "{err}"
        );
        assert_eq!(rev_commit(src.path(), "main").unwrap(), c2);
        assert!(rev_commit(src.path(), "nope").is_err());
    }

    #[test]
    fn tags_and_branches_are_checked_before_they_are_published() {
        let src = tempfile::tempdir().unwrap();
        git(src.path(), &["init", "-q", "-b", "main"]);
        let c1 = commit(src.path(), "a", "one");
        git(src.path(), &["tag", "-a", "-m", "one", "release-1"]);
        let c2 = commit(src.path(), "b", "two");
        git(src.path(), &["tag", "-a", "-m", "two", "release-2"]);
        let full = export_pack(src.path(), "main", None).unwrap();
        let mirror = tempfile::tempdir().unwrap();
        import_pack(mirror.path(), &full.pack[..], None).unwrap();
        // export_pack carries only the tags on the release commit.
        let t2 = full.tags[0].1.clone();
        let t1 = git(src.path(), &["rev-parse", "release-1"]);
        type Tags = Vec<(String, String)>;
        let cases: [(&str, &str, Tags, &str); 5] = [
            (
                "main",
                &c2,
                vec![("release-2".into(), c2.clone())],
                "not an annotated tag",
            ),
            (
                "main",
                &c2,
                vec![("release-9".into(), t2.clone())],
                "not \"release-9\"",
            ),
            (
                "main",
                &c2,
                vec![("release-1".into(), t1.clone())],
                "not an annotated tag",
            ),
            ("refs/tags/x", &c2, vec![], "not a branch"),
            ("refs/fleetlet/imported", &c2, vec![], "not a branch"),
        ];
        for (branch, commit, tags, want) in cases {
            let err = publish_import(mirror.path(), branch, commit, &tags, false).unwrap_err();
            assert!(err.to_string().contains(want), "{branch} {tags:?}: {err}");
            assert!(
                imported_commit(mirror.path()).is_none(),
                "nothing published"
            );
        }
        let too_many: Vec<(String, String)> = (0..=MAX_TAGS)
            .map(|i| (format!("t{i}"), t2.clone()))
            .collect();
        assert!(publish_import(mirror.path(), "main", &c2, &too_many, false).is_err());
        // A different tag object under a name the site has is never accepted.
        let repo = Repository::open_bare(mirror.path()).unwrap();
        repo.reference(
            "refs/tags/release-2",
            Oid::from_str(&c1).unwrap(),
            true,
            "t",
        )
        .unwrap();
        let tag2 = vec![("release-2".to_string(), t2.clone())];
        let clash = publish_import(mirror.path(), "main", &c2, &tag2, false).unwrap_err();
        assert!(clash.to_string().contains("never replaced"), "{clash}");
        repo.find_reference("refs/tags/release-2")
            .unwrap()
            .delete()
            .unwrap();
        publish_import(mirror.path(), "main", &c2, &tag2, false).unwrap();
        // The same tag again is fine.
        publish_import(mirror.path(), "main", &c2, &tag2, false).unwrap();
        assert_eq!(imported_commit(mirror.path()).as_deref(), Some(c2.as_str()));
    }

    #[test]
    fn an_imported_release_is_what_the_imported_source_follows() {
        use fleetlet_engine::ports::{Poll, Source};
        let src = tempfile::tempdir().unwrap();
        git(src.path(), &["init", "-q", "-b", "main"]);
        let c1 = commit(src.path(), "a", "one");
        let c2 = commit(src.path(), "a", "two");
        git(src.path(), &["tag", "-a", "-m", "release two", "release-2"]);
        let mirror = tempfile::tempdir().unwrap();
        let mirror = mirror.path().join("git");

        let first = export_pack(src.path(), &c1, None).unwrap();
        import_pack(&mirror, &first.pack[..], None).unwrap();
        let config = crate::GitSourceConfig::new("", crate::Follow::Imported, &mirror);
        let mut source = crate::GitSource::open(config).unwrap();
        assert!(source.poll(None).is_err(), "nothing published yet");
        publish_import(&mirror, "main", &c1, &first.tags, false).unwrap();
        match source.poll(None).unwrap() {
            Poll::Changed(r) => {
                assert_eq!(
                    (r.commit.as_str(), r.reference.as_str()),
                    (c1.as_str(), "refs/heads/main")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            source.poll(Some(&c1)).unwrap(),
            Poll::Unchanged(_)
        ));

        let delta = export_pack(src.path(), "main", Some(&c1)).unwrap();
        import_pack(&mirror, &delta.pack[..], Some(&c1)).unwrap();
        assert!(
            matches!(source.poll(Some(&c1)).unwrap(), Poll::Unchanged(_)),
            "objects alone publish nothing"
        );
        publish_import(&mirror, "main", &c2, &delta.tags, false).unwrap();
        assert!(matches!(source.poll(Some(&c1)).unwrap(), Poll::Changed(r) if r.commit == c2));
        let tags = source.tags_at(&c2).unwrap();
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].name, "release-2");

        // An older release replayed through a bundle is refused.
        let err = publish_import(&mirror, "main", &c1, &[], false).unwrap_err();
        assert!(matches!(err, PackError::Rollback { .. }), "{err}");
        assert!(matches!(
            source.poll(Some(&c2)).unwrap(),
            Poll::Unchanged(_)
        ));
    }
}

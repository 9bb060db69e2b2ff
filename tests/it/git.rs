//! Integration tests of the Git source, the "observe/pull" step of the reconcile cycle, against
//! real Git: repos written by the `git` CLI, served from a path, `file://` and a real
//! `git daemon`, plus servers that are down, answer junk or never answer.

use crate::testkit::git::{
    GitDaemon, HttpsServer, SshServer, TestRepo, free_port, serve_garbage, serve_silent,
    ssh_signing_key,
};
use fleetlet_engine::ports::{Poll, Source, SourceError};
use fleetlet_git::{Follow, GitSource, GitSourceConfig, local_path};
use std::path::Path;
use std::time::{Duration, Instant};

/// libgit2's timeout is process-wide; nextest runs each test in its own process, so a test may
/// set its own. Long enough that a busy machine's slow fork of `git daemon` is not mistaken for
/// a dead server.
const TIMEOUT: Duration = Duration::from_secs(10);
/// For the test of the timeout itself.
const SILENT_TIMEOUT: Duration = Duration::from_secs(2);
/// A refused connection must fail at once, not after the timeout.
const FAST: Duration = Duration::from_secs(5);

fn config(url: &str, follow: Follow, mirror: &Path) -> GitSourceConfig {
    let mut c = GitSourceConfig::new(url, follow, mirror);
    c.timeout = TIMEOUT;
    c
}

fn main_branch() -> Follow {
    Follow::Branch("main".into())
}

fn changed(p: Poll) -> fleetlet_engine::ports::Revision {
    match p {
        Poll::Changed(r) => r,
        other => panic!("expected Changed, got {other:?}"),
    }
}

/// The whole poll cycle over one URL: first poll fetches, a repeat poll fetches nothing, a new
/// commit is fetched with its tree (including a removal).
fn poll_cycle(url: &str, repo: &TestRepo) -> anyhow::Result<()> {
    let first = repo.commit_files(
        &[
            ("sites/edge-1/site.yaml", b"name: edge-1\n"),
            ("README.md", b"fleet\n"),
        ],
        "first commit\n\nbody",
    )?;
    let mirror = tempfile::tempdir()?;
    let mut source = GitSource::open(config(url, main_branch(), &mirror.path().join("mirror")))?;
    assert!(
        mirror.path().join("mirror/HEAD").exists(),
        "bare mirror created"
    );

    let rev = changed(source.poll(None)?);
    assert_eq!(rev.commit, first);
    assert_eq!(rev.reference, "refs/heads/main");
    assert_eq!(rev.summary, "first commit");
    assert!(rev.time > 1_700_000_000);
    assert_eq!(source.fetch_count(), 1);
    let tree = source.read_tree(&first)?;
    assert_eq!(
        tree.get("sites/edge-1/site.yaml"),
        Some(&b"name: edge-1\n"[..])
    );
    assert_eq!(tree.len(), 2);

    // Nothing moved: answered from the ref advertisement alone.
    for _ in 0..2 {
        match source.poll(Some(&first))? {
            Poll::Unchanged(r) => assert_eq!(r.commit, first),
            other => panic!("expected Unchanged, got {other:?}"),
        }
    }
    assert_eq!(source.fetch_count(), 1, "an unchanged poll must not fetch");

    repo.remove("README.md")?;
    let second = repo.commit_files(
        &[("sites/edge-1/site.yaml", b"name: edge-1\nlabels: {a: b}\n")],
        "second",
    )?;
    let rev = changed(source.poll(Some(&first))?);
    assert_eq!(
        (rev.commit.as_str(), rev.summary.as_str()),
        (second.as_str(), "second")
    );
    assert_eq!(source.fetch_count(), 2);
    let tree = source.read_tree(&second)?;
    assert_eq!(
        tree.get("sites/edge-1/site.yaml"),
        Some(&b"name: edge-1\nlabels: {a: b}\n"[..])
    );
    assert!(!tree.contains_file("README.md"), "removed file gone");
    // The old commit stays readable from the mirror.
    assert!(source.read_tree(&first)?.contains_file("README.md"));

    // A restarted agent (new source, same mirror) with the commit already mirrored does not fetch.
    let mut reopened = GitSource::open(config(url, main_branch(), &mirror.path().join("mirror")))?;
    assert!(matches!(reopened.poll(Some(&second))?, Poll::Unchanged(_)));
    assert_eq!(reopened.fetch_count(), 0);
    Ok(())
}

#[test]
fn polls_a_local_path() -> anyhow::Result<()> {
    let repo = TestRepo::new()?;
    let url = repo.path().to_str().unwrap().to_string();
    assert_eq!(local_path(&url).as_deref(), Some(repo.path()));
    poll_cycle(&url, &repo)
}

#[test]
fn polls_a_file_url() -> anyhow::Result<()> {
    let repo = TestRepo::new()?;
    assert_eq!(local_path(&repo.file_url()).as_deref(), Some(repo.path()));
    poll_cycle(&repo.file_url(), &repo)
}

#[test]
fn polls_git_daemon() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let repo = TestRepo::new_in(root.path(), "fleet")?;
    let daemon = GitDaemon::start(root.path())?;
    let url = daemon.url_for("fleet");
    assert_eq!(local_path(&url), None);
    poll_cycle(&url, &repo)
}

#[test]
fn follows_newest_semver_tag_and_peels_annotated_tags() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let repo = TestRepo::new_in(root.path(), "fleet")?;
    let c100 = repo.commit_files(&[("v", b"1.0.0")], "one")?;
    repo.tag("v1.0.0", false)?;
    let c1100 = repo.commit_files(&[("v", b"1.10.0")], "ten")?;
    repo.tag("v1.10.0", true)?;
    // v1.2.0 is the most recent commit and tag: only semver order puts v1.10.0 first.
    repo.commit_files(&[("v", b"1.2.0")], "two")?;
    repo.tag("v1.2.0", true)?;
    repo.tag("other-9.9.9", false)?;
    let head = repo.commit_files(&[("v", b"main")], "untagged work")?;
    let daemon = GitDaemon::start(root.path())?;
    let url = daemon.url_for("fleet");

    let mirror = tempfile::tempdir()?;
    let mut tags = GitSource::open(config(
        &url,
        Follow::TagPattern("v*".into()),
        &mirror.path().join("tags"),
    ))?;
    let rev = changed(tags.poll(None)?);
    assert_eq!(rev.reference, "refs/tags/v1.10.0");
    assert_ne!(
        repo.rev_parse("v1.10.0")?,
        c1100,
        "v1.10.0 is an annotated tag object"
    );
    assert_eq!(
        rev.commit, c1100,
        "the annotated tag is peeled to its commit"
    );
    assert_eq!(rev.summary, "ten");
    assert_eq!(tags.read_tree(&rev.commit)?.get("v"), Some(&b"1.10.0"[..]));
    assert!(matches!(tags.poll(Some(&c1100))?, Poll::Unchanged(_)));
    assert_eq!(tags.fetch_count(), 1);

    // A newer release moves the source; an older one does not.
    repo.force_reset(&c100)?;
    repo.tag("v1.1.0", false)?;
    assert!(matches!(tags.poll(Some(&c1100))?, Poll::Unchanged(_)));
    repo.force_reset(&head)?;
    repo.tag("v1.11.0", true)?;
    let rev = changed(tags.poll(Some(&c1100))?);
    assert_eq!(
        (rev.reference.as_str(), rev.commit.as_str()),
        ("refs/tags/v1.11.0", head.as_str())
    );

    // The same repo followed by branch gives main's head.
    let mut branch = GitSource::open(config(&url, main_branch(), &mirror.path().join("branch")))?;
    assert_eq!(changed(branch.poll(None)?).commit, head);
    Ok(())
}

#[test]
fn orders_non_semver_tags_by_commit_time() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let repo = TestRepo::new_in(root.path(), "fleet")?;
    repo.commit_files(&[("colour", b"green")], "green")?;
    repo.tag("deploy-green", true)?;
    let newer = repo.commit_files(&[("colour", b"blue")], "blue")?;
    // Alphabetically first, but on the newer commit.
    repo.tag("deploy-blue", false)?;
    let daemon = GitDaemon::start(root.path())?;
    let mirror = tempfile::tempdir()?;
    let mut source = GitSource::open(config(
        &daemon.url_for("fleet"),
        Follow::TagPattern("deploy-*".into()),
        mirror.path(),
    ))?;
    let rev = changed(source.poll(None)?);
    assert_eq!(
        (rev.reference.as_str(), rev.commit.as_str()),
        ("refs/tags/deploy-blue", newer.as_str())
    );
    // Both candidates are now mirrored: polling again fetches nothing.
    assert!(matches!(source.poll(Some(&newer))?, Poll::Unchanged(_)));
    assert_eq!(source.fetch_count(), 1);

    // No tag matches: a retryable error naming the pattern.
    let mut none = GitSource::open(config(
        &daemon.url_for("fleet"),
        Follow::TagPattern("prod-*".into()),
        &mirror.path().join("none"),
    ))?;
    match none.poll(None) {
        Err(SourceError::Unreachable { message, .. }) => {
            assert!(message.contains("prod-*"), "{message}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    Ok(())
}

#[test]
fn reports_rewritten_history_for_the_engine_to_judge() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let repo = TestRepo::new_in(root.path(), "fleet")?;
    let a = repo.commit_files(&[("f", b"a")], "a")?;
    let b = repo.commit_files(&[("f", b"b")], "b")?;
    let daemon = GitDaemon::start(root.path())?;
    let url = daemon.url_for("fleet");
    let mirror = tempfile::tempdir()?;
    let mut source = GitSource::open(config(&url, main_branch(), mirror.path()))?;
    assert_eq!(changed(source.poll(None)?).commit, b);

    // Rewrite history: main now holds c, whose parent is a, not b.
    repo.force_reset(&a)?;
    let c = repo.commit_files(&[("f", b"c")], "c (rewritten)")?;
    assert_eq!(changed(source.poll(Some(&b))?).commit, c);
    assert!(!source.descends_from(&c, &b)?, "c does not descend from b");
    assert!(source.descends_from(&c, &a)?);
    assert!(source.descends_from(&c, &c)?);
    assert!(
        !source.descends_from(&a, &c)?,
        "an older commit is not a descendant"
    );
    // The applied commit stays readable while the rewrite waits for a human.
    assert_eq!(source.read_tree(&b)?.get("f"), Some(&b"b"[..]));
    let d = repo.commit_files(&[("f", b"d")], "d")?;
    assert_eq!(changed(source.poll(Some(&c))?).commit, d);
    assert!(source.descends_from(&d, &c)?);
    Ok(())
}

#[test]
fn hands_over_commit_signatures_and_the_tags_on_a_commit() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let keys = tempfile::tempdir()?;
    let key = ssh_signing_key(keys.path(), "ops")?;
    let repo = TestRepo::new_in(root.path(), "fleet")?;
    let unsigned = repo.commit_files(&[("f", b"a")], "unsigned")?;
    let signed = repo.commit_signed(&[("f", b"b")], "signed", &key)?;

    let daemon = GitDaemon::start(root.path())?;
    let mirror = tempfile::tempdir()?;
    let mut source = GitSource::open(config(
        &daemon.url_for("fleet"),
        main_branch(),
        mirror.path(),
    ))?;
    assert_eq!(changed(source.poll(None)?).commit, signed);
    assert_eq!(source.commit_signature(&unsigned)?, None);
    let sig = source.commit_signature(&signed)?.expect("a signature");
    assert!(sig.signature.starts_with(b"-----BEGIN SSH SIGNATURE-----"));
    assert!(!String::from_utf8_lossy(&sig.payload).contains("gpgsig"));
    assert!(String::from_utf8_lossy(&sig.payload).ends_with("signed\n"));
    assert!(source.tags_at(&signed)?.is_empty());

    // Tags pushed onto the same commit later still come in with the next poll.
    repo.tag_with_message("release-1", "release one", Some(&key))?;
    repo.tag_with_message("note-1", "not signed", None)?;
    repo.tag("lightweight-1", false)?;
    assert!(matches!(source.poll(Some(&signed))?, Poll::Unchanged(_)));
    let tags = source.tags_at(&signed)?;
    let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["note-1", "release-1"], "annotated tags only");
    let release = &tags[1];
    assert_eq!(release.message.lines().next(), Some("release one"));
    let s = release.signed.as_ref().expect("release-1 is signed");
    assert!(s.signature.starts_with(b"-----BEGIN SSH SIGNATURE-----"));
    assert!(String::from_utf8_lossy(&s.payload).starts_with("object "));
    assert!(tags[0].signed.is_none());
    let fetches = source.fetch_count();
    assert!(matches!(source.poll(Some(&signed))?, Poll::Unchanged(_)));
    assert_eq!(
        source.fetch_count(),
        fetches,
        "known tags are not fetched again"
    );
    Ok(())
}

fn expect_unreachable(result: Result<Poll, SourceError>, url: &str) -> String {
    match result {
        Err(SourceError::Unreachable { url: u, message }) => {
            assert_eq!(u, url);
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn remote_down_is_unreachable_fast() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let repo = TestRepo::new_in(root.path(), "fleet")?;
    let first = repo.commit_files(&[("f", b"1")], "1")?;
    let daemon = GitDaemon::start(root.path())?;
    let url = daemon.url_for("fleet");
    let mirror = tempfile::tempdir()?;
    let mut source = GitSource::open(config(&url, main_branch(), mirror.path()))?;
    changed(source.poll(None)?);

    daemon.stop();
    let started = Instant::now();
    let message = expect_unreachable(source.poll(Some(&first)), &url);
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    println!("daemon stopped: {message}");
    // What was mirrored stays usable.
    assert!(source.read_tree(&first)?.contains_file("f"));

    let closed = format!("git://127.0.0.1:{}/fleet", free_port()?);
    let mut source = GitSource::open(config(&closed, main_branch(), mirror.path()))?;
    let started = Instant::now();
    expect_unreachable(source.poll(None), &closed);
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());

    // A missing repo on a live daemon, and a missing local path, are retryable too.
    let daemon = GitDaemon::start(root.path())?;
    let missing = daemon.url_for("nope");
    expect_unreachable(
        GitSource::open(config(&missing, main_branch(), mirror.path()))?.poll(None),
        &missing,
    );
    let gone = root.path().join("gone").display().to_string();
    expect_unreachable(
        GitSource::open(config(&gone, main_branch(), mirror.path()))?.poll(None),
        &gone,
    );
    // The branch is missing.
    let mut no_branch = GitSource::open(config(
        &daemon.url_for("fleet"),
        Follow::Branch("prod".into()),
        mirror.path(),
    ))?;
    let message = expect_unreachable(no_branch.poll(None), &daemon.url_for("fleet"));
    assert!(message.contains("refs/heads/prod"), "{message}");
    Ok(())
}

#[test]
fn garbage_server_is_unreachable() -> anyhow::Result<()> {
    let (port, _guard) = serve_garbage()?;
    let mirror = tempfile::tempdir()?;
    for url in [
        format!("git://127.0.0.1:{port}/fleet"),
        format!("http://127.0.0.1:{port}/fleet.git"),
    ] {
        let mut source = GitSource::open(config(&url, main_branch(), mirror.path()))?;
        let started = Instant::now();
        let message = expect_unreachable(source.poll(None), &url);
        println!("garbage over {url}: {message}");
        assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
        assert_eq!(source.fetch_count(), 0);
    }
    Ok(())
}

#[test]
fn silent_server_times_out() -> anyhow::Result<()> {
    let (port, _guard) = serve_silent()?;
    let mirror = tempfile::tempdir()?;
    for url in [
        format!("git://127.0.0.1:{port}/fleet"),
        format!("http://127.0.0.1:{port}/fleet.git"),
    ] {
        let mut c = config(&url, main_branch(), mirror.path());
        c.timeout = SILENT_TIMEOUT;
        let mut source = GitSource::open(c)?;
        let started = Instant::now();
        let message = expect_unreachable(source.poll(None), &url);
        let took = started.elapsed();
        println!("silent over {url}: {message} after {took:?}");
        assert!(
            took >= SILENT_TIMEOUT - Duration::from_millis(200),
            "gave up before the timeout: {took:?}"
        );
        assert!(took < SILENT_TIMEOUT * 3, "timeout not enforced: {took:?}");
    }
    Ok(())
}

#[test]
fn read_tree_reads_nested_files_and_safe_symlinks() -> anyhow::Result<()> {
    let repo = TestRepo::new()?;
    repo.symlink("sites/edge-2/site.yaml", "../edge-1/site.yaml")?;
    repo.symlink("chain", "sites/edge-2/site.yaml")?;
    let commit = repo.commit_files(
        &[
            ("sites/edge-1/site.yaml", b"name: edge-1\n"),
            ("a/b/c/d/e/deep.txt", b"deep"),
            ("bin/run.sh", b"#!/bin/sh\n"),
            ("empty", b""),
        ],
        "nested",
    )?;
    // A submodule (gitlink) entry: skipped, not an error.
    git_update_index(repo.path(), &commit)?;
    let commit = repo.commit_files(&[], "add a submodule")?;

    let mirror = tempfile::tempdir()?;
    let mut source = GitSource::open(config(&repo.file_url(), main_branch(), mirror.path()))?;
    changed(source.poll(None)?);
    let tree = source.read_tree(&commit)?;
    let paths: Vec<&str> = tree.iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "a/b/c/d/e/deep.txt",
            "bin/run.sh",
            "chain",
            "empty",
            "sites/edge-1/site.yaml",
            "sites/edge-2/site.yaml",
        ],
        "the submodule is skipped"
    );
    assert_eq!(tree.get("a/b/c/d/e/deep.txt"), Some(&b"deep"[..]));
    assert_eq!(tree.get("empty"), Some(&b""[..]));
    assert_eq!(
        tree.get("sites/edge-2/site.yaml"),
        Some(&b"name: edge-1\n"[..]),
        "symlink resolved"
    );
    assert_eq!(
        tree.get("chain"),
        Some(&b"name: edge-1\n"[..]),
        "symlink chain resolved"
    );

    // Unknown and malformed commit ids are errors, not panics.
    assert!(matches!(
        source.read_tree(&"0".repeat(40)),
        Err(SourceError::Local(_))
    ));
    assert!(matches!(
        source.read_tree("nope"),
        Err(SourceError::BadTree { .. })
    ));
    Ok(())
}

/// Adds a gitlink (mode 160000) at `vendor/sub` pointing at `commit`, as `git submodule add` would.
fn git_update_index(dir: &Path, commit: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args([
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{commit},vendor/sub"),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn expect_bad_tree(
    result: Result<fleetlet_core::RepoTree, SourceError>,
    commit: &str,
    needles: &[&str],
) {
    match result {
        Err(SourceError::BadTree { commit: c, message }) => {
            assert_eq!(c, commit);
            for n in needles {
                assert!(message.contains(n), "{message:?} lacks {n:?}");
            }
        }
        other => panic!("expected BadTree, got {other:?}"),
    }
}

#[test]
fn read_tree_refuses_escaping_symlinks() -> anyhow::Result<()> {
    let repo = TestRepo::new()?;
    let mirror = tempfile::tempdir()?;
    let mut source = GitSource::open(config(&repo.file_url(), main_branch(), mirror.path()))?;

    // From `sites/`, `../../etc/passwd` is the host's file, outside the checkout.
    repo.symlink("sites/passwd", "../../etc/passwd")?;
    let escaping = repo.commit_files(&[("sites/edge-1/site.yaml", b"x")], "escape")?;
    changed(source.poll(None)?);
    expect_bad_tree(
        source.read_tree(&escaping),
        &escaping,
        &["sites/passwd", "../../etc/passwd", "leaves"],
    );

    repo.remove("sites/passwd")?;
    repo.symlink("abs", "/etc/passwd")?;
    let absolute = repo.commit_files(&[], "absolute")?;
    changed(source.poll(Some(&escaping))?);
    expect_bad_tree(
        source.read_tree(&absolute),
        &absolute,
        &["abs", "/etc/passwd"],
    );

    repo.remove("abs")?;
    repo.symlink("dangling", "nowhere.yaml")?;
    let dangling = repo.commit_files(&[], "dangling")?;
    changed(source.poll(Some(&absolute))?);
    expect_bad_tree(
        source.read_tree(&dangling),
        &dangling,
        &["dangling", "nowhere.yaml"],
    );

    // Links to folders are refused rather than expanded (see the crate's tree module).
    repo.remove("dangling")?;
    repo.symlink("sites/edge-2", "edge-1")?;
    let dir_link = repo.commit_files(&[], "folder link")?;
    changed(source.poll(Some(&dangling))?);
    expect_bad_tree(
        source.read_tree(&dir_link),
        &dir_link,
        &["sites/edge-2", "folder"],
    );
    Ok(())
}

#[test]
fn read_tree_enforces_size_limits() -> anyhow::Result<()> {
    let repo = TestRepo::new()?;
    let big = vec![b'x'; 1025];
    let small = vec![b'y'; 1000];
    let commit = repo.commit_files(&[("ok.txt", &small), ("blobs/big.bin", &big)], "big")?;

    let mirror = tempfile::tempdir()?;
    let mut cfg = config(&repo.file_url(), main_branch(), mirror.path());
    cfg.max_file_size = 1024;
    let mut source = GitSource::open(cfg)?;
    changed(source.poll(None)?);
    expect_bad_tree(
        source.read_tree(&commit),
        &commit,
        &["blobs/big.bin", "1025", "1024"],
    );

    // Exactly at the limit is fine; the total is limited separately.
    let mut cfg = config(&repo.file_url(), main_branch(), mirror.path());
    cfg.max_file_size = 1025;
    cfg.max_tree_size = 2000;
    let source = GitSource::open(cfg)?;
    expect_bad_tree(source.read_tree(&commit), &commit, &["2025", "2000"]);

    let mut cfg = config(&repo.file_url(), main_branch(), mirror.path());
    cfg.max_file_size = 1025;
    cfg.max_tree_size = 2025;
    assert_eq!(GitSource::open(cfg)?.read_tree(&commit)?.len(), 2);
    Ok(())
}

#[test]
fn ssh_requires_known_hosts() -> anyhow::Result<()> {
    let mirror = tempfile::tempdir()?;
    for url in [
        "ssh://git@127.0.0.1:2222/fleet.git",
        "git@example.org:fleet.git",
    ] {
        match GitSource::open(config(url, main_branch(), mirror.path())) {
            Err(SourceError::Refused(msg)) => assert!(msg.contains("known_hosts"), "{msg}"),
            other => panic!("expected Refused, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn polls_over_ssh_with_pinned_host_key() -> anyhow::Result<()> {
    let Some(server) = SshServer::start()? else {
        return Ok(());
    };
    let repo = TestRepo::new()?;
    let first = repo.commit_files(&[("f", b"over ssh")], "ssh")?;
    let url = server.url_for(repo.path());
    assert_eq!(local_path(&url), None);
    let mirror = tempfile::tempdir()?;
    let ssh_config = |known_hosts: &Path, mirror: &Path| {
        let mut c = config(&url, main_branch(), mirror);
        c.ssh_key = Some(server.client_key.clone());
        c.known_hosts = Some(known_hosts.to_path_buf());
        c
    };

    let mut source = GitSource::open(ssh_config(&server.known_hosts, &mirror.path().join("ok")))?;
    let rev = changed(source.poll(None)?);
    assert_eq!(rev.commit, first);
    assert_eq!(source.read_tree(&first)?.get("f"), Some(&b"over ssh"[..]));
    assert!(matches!(source.poll(Some(&first))?, Poll::Unchanged(_)));
    assert_eq!(source.fetch_count(), 1);

    // Same host, another key: refused (a human must decide), and nothing fetched.
    let wrong = server.wrong_known_hosts()?;
    let mut source = GitSource::open(ssh_config(&wrong, &mirror.path().join("wrong")))?;
    match source.poll(None) {
        Err(SourceError::Refused(msg)) => assert!(msg.contains("does not match"), "{msg}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(source.fetch_count(), 0);

    // Host not in the file at all: refused, never trusted on first use.
    let unrelated = server.unrelated_known_hosts()?;
    let mut source = GitSource::open(ssh_config(&unrelated, &mirror.path().join("unknown")))?;
    match source.poll(None) {
        Err(SourceError::Refused(msg)) => assert!(msg.contains("not in known_hosts"), "{msg}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    Ok(())
}

#[test]
fn polls_over_https_with_custom_ca() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let repo = TestRepo::new_in(root.path(), "fleet")?;
    let first = repo.commit_files(&[("f", b"over https")], "https")?;
    // A second server whose certificate nobody trusts.
    let untrusted_root = tempfile::tempdir()?;
    TestRepo::new_in(untrusted_root.path(), "fleet")?.commit_files(&[("f", b"x")], "x")?;
    let Some(untrusted) = HttpsServer::start(untrusted_root.path())? else {
        return Ok(());
    };
    let Some(server) = HttpsServer::start(root.path())? else {
        return Ok(());
    };
    let mirror = tempfile::tempdir()?;

    let url = untrusted.url_for("fleet");
    let mut source = GitSource::open(config(
        &url,
        main_branch(),
        &mirror.path().join("untrusted"),
    ))?;
    let message = expect_unreachable(source.poll(None), &url);
    println!("untrusted certificate: {message}");

    let mut cfg = config(
        &server.url_for("fleet"),
        main_branch(),
        &mirror.path().join("ok"),
    );
    cfg.ca_file = Some(server.ca_file.clone());
    let mut source = GitSource::open(cfg)?;
    assert_eq!(changed(source.poll(None)?).commit, first);
    assert_eq!(source.read_tree(&first)?.get("f"), Some(&b"over https"[..]));
    assert!(matches!(source.poll(Some(&first))?, Poll::Unchanged(_)));
    assert_eq!(source.fetch_count(), 1);
    Ok(())
}

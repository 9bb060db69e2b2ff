//! Commit and tag signature verification against independent producers: keys from `ssh-keygen`
//! and `gpg`, commits and tags signed by real `git`, signatures extracted with libgit2. Every SSH
//! verdict is cross-checked against `ssh-keygen -Y find-principals` + `-Y verify`, run the way
//! git runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fleetlet_verify::commit::{
    CommitSigError, CommitSigner, CommitSigners, SignatureKind, split_signed_tag,
};

/// A scratch world: HOME, git config and GNUPGHOME isolated in a temp dir, one repository.
struct World {
    dir: tempfile::TempDir,
    repo: PathBuf,
    gnupg: PathBuf,
}

/// What git signed: the armored signature, the exact signed bytes and the commit/tag time.
#[derive(Clone)]
struct Signed {
    signature: Vec<u8>,
    data: Vec<u8>,
    time: i64,
}

impl Drop for World {
    fn drop(&mut self) {
        // gpg starts an agent per GNUPGHOME; stop ours (and only ours) with the directory.
        if self.gnupg.join("pubring.kbx").exists() {
            let _ = Command::new("gpgconf")
                .args(["--kill", "gpg-agent"])
                .env("GNUPGHOME", &self.gnupg)
                .status();
        }
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir(&repo).unwrap();
        std::fs::create_dir(&gnupg).unwrap();
        let mut perms = std::fs::metadata(&gnupg).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        std::fs::set_permissions(&gnupg, perms).unwrap();
        std::fs::write(dir.path().join("gitconfig"), "").unwrap();
        let world = Self { dir, repo, gnupg };
        world.git(&["init", "-q", "-b", "main"]);
        world
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.path("gitconfig"))
            .env("GNUPGHOME", &self.gnupg)
            .env("TZ", "UTC")
            .env("GIT_AUTHOR_NAME", "Alice")
            .env("GIT_AUTHOR_EMAIL", "alice@example.com")
            .env("GIT_COMMITTER_NAME", "Alice")
            .env("GIT_COMMITTER_EMAIL", "alice@example.com");
    }

    fn git_at(&self, date: &str, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new("git");
        self.env(&mut cmd);
        cmd.current_dir(&self.repo)
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .args(args);
        run(&mut cmd)
    }

    fn git(&self, args: &[&str]) -> Vec<u8> {
        self.git_at("2024-06-01T12:00:00+02:00", args)
    }

    /// A new ssh key pair; returns (private key path, `type base64` public key).
    fn ssh_key(&self, name: &str, args: &[&str]) -> (PathBuf, String) {
        let path = self.path(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .args(args));
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        let public = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        (path, public)
    }

    /// Commits (empty) with an SSH signature made by git itself.
    fn commit_ssh(&self, key: &Path, message: &str, date: &str) -> Signed {
        let key = key.to_str().unwrap();
        self.git_at(
            date,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={key}"),
                "commit",
                "-q",
                "--allow-empty",
                "-S",
                "-m",
                message,
            ],
        );
        self.head_signature()
    }

    fn commit_pgp(&self, key: &str, message: &str, date: &str) -> Signed {
        self.commit_pgp_with("gpg", key, message, date)
    }

    fn commit_pgp_with(&self, program: &str, key: &str, message: &str, date: &str) -> Signed {
        self.git_at(
            date,
            &[
                "-c",
                "gpg.format=openpgp",
                "-c",
                &format!("gpg.program={program}"),
                "-c",
                &format!("user.signingkey={key}"),
                "commit",
                "-q",
                "--allow-empty",
                "-S",
                "-m",
                message,
            ],
        );
        self.head_signature()
    }

    fn commit_unsigned(&self) -> git2::Oid {
        self.git(&["commit", "-q", "--allow-empty", "-m", "unsigned"]);
        self.head()
    }

    fn head(&self) -> git2::Oid {
        let repo = git2::Repository::open(&self.repo).unwrap();
        repo.head().unwrap().target().unwrap()
    }

    /// The signature and signed data of HEAD, as libgit2 extracts them.
    fn head_signature(&self) -> Signed {
        let repo = git2::Repository::open(&self.repo).unwrap();
        let oid = self.head();
        let (signature, data) = repo.extract_signature(&oid, None).unwrap();
        Signed {
            signature: signature.to_vec(),
            data: data.to_vec(),
            time: repo.find_commit(oid).unwrap().time().seconds(),
        }
    }

    /// Creates a signed annotated tag with the given extra `git -c` settings; returns the raw tag
    /// object and the tagger time.
    fn tag(&self, name: &str, config: &[&str]) -> (Vec<u8>, i64) {
        let mut args: Vec<&str> = config.to_vec();
        args.extend(["tag", "-s", "-m", "release", name]);
        self.git(&args);
        let repo = git2::Repository::open(&self.repo).unwrap();
        let oid = repo.refname_to_id(&format!("refs/tags/{name}")).unwrap();
        let raw = repo.odb().unwrap().read(oid).unwrap().data().to_vec();
        let time = repo
            .find_tag(oid)
            .unwrap()
            .tagger()
            .unwrap()
            .when()
            .seconds();
        (raw, time)
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new("gpg");
        self.env(&mut cmd);
        run(cmd
            .args(["--batch", "--quiet", "--passphrase", ""])
            .args(args))
    }

    /// Generates an OpenPGP key; returns its fingerprint.
    fn gpg_key(&self, uid: &str, extra: &[&str]) -> String {
        let mut args = extra.to_vec();
        args.extend(["--quick-gen-key", uid, "ed25519", "sign", "never"]);
        self.gpg(&args);
        self.gpg_fingerprint(uid)
    }

    fn gpg_fingerprint(&self, uid: &str) -> String {
        let listing = String::from_utf8(self.gpg(&["--with-colons", "--list-keys", uid])).unwrap();
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .unwrap()
    }

    fn gpg_export(&self, fingerprints: &[&str]) -> String {
        let mut args = vec!["--armor", "--export"];
        args.extend(fingerprints);
        String::from_utf8(self.gpg(&args)).unwrap()
    }

    fn ssh_fingerprint(&self, key: &Path) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub")));
        String::from_utf8(out)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    }
}

/// `ssh-keygen`'s verdict, obtained as git obtains it: `find-principals` for the key at the
/// commit time, then `verify -n git -I <principal>` for each until one succeeds. With
/// `identity`, only `verify -I identity` (what a per-call restriction to that identity means).
fn ssh_keygen_verdict(
    allowed_signers: &Path,
    signed: &Signed,
    identity: Option<&str>,
) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let sig = dir.path().join("sig");
    std::fs::write(&sig, &signed.signature).unwrap();
    let verify_time = format!("-Overify-time={}", utc_stamp(signed.time));
    let principals: Vec<String> = match identity {
        Some(id) => vec![id.to_owned()],
        None => {
            let out = Command::new("ssh-keygen")
                .env("TZ", "UTC")
                .args(["-Y", "find-principals", "-f"])
                .arg(allowed_signers)
                .arg("-s")
                .arg(&sig)
                .arg(&verify_time)
                .stderr(Stdio::null())
                .output()
                .unwrap();
            if !out.status.success() {
                return None;
            }
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    };
    principals.into_iter().find(|principal| {
        let mut child = Command::new("ssh-keygen")
            .env("TZ", "UTC")
            .args(["-Y", "verify", "-n", "git", "-f"])
            .arg(allowed_signers)
            .args(["-I", principal, "-s"])
            .arg(&sig)
            .arg(&verify_time)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &signed.data).unwrap();
        child.wait().unwrap().success()
    })
}

/// `YYYYMMDDHHMMSSZ` for Unix seconds, via `date` so the test does not share our calendar code.
fn utc_stamp(t: i64) -> String {
    let out =
        run(Command::new("date")
            .env("TZ", "UTC")
            .args(["-d", &format!("@{t}"), "+%Y%m%d%H%M%SZ"]));
    String::from_utf8(out).unwrap().trim().to_owned()
}

/// Verifies with our code and with ssh-keygen, asserts they agree, returns our verdict.
fn check_ssh(
    world: &World,
    allowed_signers: &str,
    signed: &Signed,
    identity: Option<&str>,
) -> Result<CommitSigner, CommitSigError> {
    let path = world.path("allowed_signers");
    std::fs::write(&path, allowed_signers).unwrap();
    let signers = CommitSigners::load(Some(&path), &[]).unwrap();
    let allowed = identity.map(|id| vec![id.to_owned()]);
    let ours = signers.verify(
        &signed.signature,
        &signed.data,
        signed.time,
        allowed.as_deref(),
    );
    let theirs = ssh_keygen_verdict(&path, signed, identity);
    assert_eq!(
        ours.is_ok(),
        theirs.is_some(),
        "verdicts differ for allowed_signers {allowed_signers:?} identity {identity:?}: ours {ours:?}, ssh-keygen {theirs:?}"
    );
    if let (Ok(ours), Some(theirs), None) = (&ours, &theirs, identity) {
        assert_eq!(
            &ours.principal, theirs,
            "reported principal differs from git's"
        );
    }
    ours
}

const NOON: &str = "2024-06-01T12:00:00+02:00";

#[test]
fn ssh_good_signatures_ed25519_ecdsa_rsa() {
    let w = World::new();
    for (name, args) in [
        ("alice_ed25519", &["-t", "ed25519"][..]),
        ("alice_ecdsa", &["-t", "ecdsa", "-b", "256"][..]),
        ("alice_rsa", &["-t", "rsa", "-b", "2048"][..]),
    ] {
        let (key, public) = w.ssh_key(name, args);
        let signed = w.commit_ssh(&key, name, NOON);
        let allowed = format!("# site signers\n\nalice@example.com {public} {name}\n");
        let signer =
            check_ssh(&w, &allowed, &signed, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            signer,
            CommitSigner {
                kind: SignatureKind::Ssh,
                principal: "alice@example.com".to_owned(),
                fingerprint: w.ssh_fingerprint(&key),
            },
            "{name}"
        );
        assert_eq!(signed.time, 1_717_236_000, "committer time is UTC seconds");
    }
}

#[test]
fn ssh_unknown_key_and_unsigned() {
    let w = World::new();
    let (alice, alice_pub) = w.ssh_key("alice", &["-t", "ed25519"]);
    let (mallory, _) = w.ssh_key("mallory", &["-t", "ed25519"]);
    let signed = w.commit_ssh(&mallory, "evil", NOON);
    let err = check_ssh(
        &w,
        &format!("alice@example.com {alice_pub}\n"),
        &signed,
        None,
    )
    .unwrap_err();
    let fp = w.ssh_fingerprint(&mallory);
    assert!(
        matches!(&err, CommitSigError::UnknownKey { fingerprint, .. } if *fingerprint == fp),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("SSH signature by key {fp} is not in ")),
        "{msg}"
    );
    assert!(msg.ends_with("allowed_signers"), "{msg}");

    // No allowed_signers at all: still "unknown key", never accepted.
    let signers = CommitSigners::new(None, &[]).unwrap();
    assert!(matches!(
        signers.verify(&signed.signature, &signed.data, signed.time, None),
        Err(CommitSigError::UnknownKey { .. })
    ));

    // Unsigned: libgit2 finds no signature; an empty signature is Unsigned.
    let oid = w.commit_unsigned();
    let repo = git2::Repository::open(&w.repo).unwrap();
    let err = repo.extract_signature(&oid, None).err().unwrap();
    assert_eq!(err.code(), git2::ErrorCode::NotFound);
    let signers = CommitSigners::new(
        Some(("allowed_signers", &format!("alice@example.com {alice_pub}"))),
        &[],
    )
    .unwrap();
    assert!(!signers.is_empty());
    assert!(matches!(
        signers.verify(b"", b"tree 1\n", 0, None),
        Err(CommitSigError::Unsigned)
    ));
    let _ = alice;
}

#[test]
fn ssh_namespaces_option() {
    let w = World::new();
    let (key, public) = w.ssh_key("alice", &["-t", "ed25519"]);
    let signed = w.commit_ssh(&key, "ns", NOON);

    let err = check_ssh(
        &w,
        &format!("alice@example.com namespaces=\"file\" {public}\n"),
        &signed,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, CommitSigError::NamespaceNotAllowed { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("allowed_signers:1"), "{err}");

    for ok in [
        "namespaces=\"git,file\"",
        "namespaces=\"g*\"",
        "NAMESPACES=\"git\"",
    ] {
        check_ssh(
            &w,
            &format!("alice@example.com {ok} {public}\n"),
            &signed,
            None,
        )
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    check_ssh(
        &w,
        &format!("alice@example.com namespaces=\"*,!git\" {public}\n"),
        &signed,
        None,
    )
    .unwrap_err();
    // A second line for the same key that does permit git is enough.
    let two = format!(
        "alice@example.com namespaces=\"file\" {public}\nalice@example.com namespaces=\"git\" {public}\n"
    );
    check_ssh(&w, &two, &signed, None).unwrap();

    // A signature git did not make: the right key, but the "file" namespace.
    let data = w.path("data");
    std::fs::write(&data, &signed.data).unwrap();
    run(Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(&key)
        .arg(&data));
    let other = Signed {
        signature: std::fs::read(w.path("data.sig")).unwrap(),
        ..signed.clone()
    };
    let err = check_ssh(&w, &format!("alice@example.com {public}\n"), &other, None).unwrap_err();
    assert!(
        matches!(&err, CommitSigError::WrongNamespace { namespace, .. } if namespace == "file"),
        "{err:?}"
    );
}

#[test]
fn ssh_validity_window_at_commit_time() {
    let w = World::new();
    let (key, public) = w.ssh_key("alice", &["-t", "ed25519"]);
    // Committed 2024-06-01T10:00:00Z.
    let signed = w.commit_ssh(&key, "window", NOON);
    let cases = [
        ("valid-before=\"20240101\"", false),
        ("valid-before=\"20240601095959Z\"", false),
        ("valid-before=\"20240601100000Z\"", true),
        ("valid-after=\"20250101Z\"", false),
        ("valid-after=\"20240601100001Z\"", false),
        ("valid-after=\"202406011000Z\"", true),
        ("valid-after=\"20240101\",valid-before=\"20250101\"", true),
        ("valid-after=\"20200101\",valid-before=\"20230101\"", false),
    ];
    for (options, want) in cases {
        let result = check_ssh(
            &w,
            &format!("alice@example.com {options} {public}\n"),
            &signed,
            None,
        );
        assert_eq!(result.is_ok(), want, "{options}: {result:?}");
        if let Err(err) = result {
            assert!(
                matches!(err, CommitSigError::NotValidAt { .. }),
                "{options}: {err:?}"
            );
            assert!(err.to_string().contains("2024-06-01T10:00:00Z"), "{err}");
        }
    }
}

#[test]
fn ssh_wildcard_and_negated_principals_and_restrictions() {
    let w = World::new();
    let (key, public) = w.ssh_key("alice", &["-t", "ed25519"]);
    let signed = w.commit_ssh(&key, "patterns", NOON);

    let wildcard = format!("*@example.com,!mallory@example.com {public}\n");
    let signer = check_ssh(&w, &wildcard, &signed, None).unwrap();
    assert_eq!(signer.principal, "*@example.com");
    // Restricting to an identity: accepted iff `ssh-keygen -Y verify -I <identity>` accepts.
    for (identity, want) in [
        ("alice@example.com", true),
        ("mallory@example.com", false),
        ("alice@example.org", false),
    ] {
        let result = check_ssh(&w, &wildcard, &signed, Some(identity));
        assert_eq!(result.is_ok(), want, "{identity}: {result:?}");
        match result {
            Ok(signer) => assert_eq!(signer.principal, identity),
            Err(err) => assert!(
                matches!(&err, CommitSigError::SignerNotAllowed { principal, allowed, .. }
                    if principal == "*@example.com,!mallory@example.com" && allowed == &[identity.to_owned()]),
                "{err:?}"
            ),
        }
    }

    let quoted = format!("\"alice@example.com,ops-bot\" {public}\n");
    assert_eq!(
        check_ssh(&w, &quoted, &signed, Some("ops-bot"))
            .unwrap()
            .principal,
        "ops-bot"
    );
    check_ssh(
        &w,
        &format!("?lice@example.com {public}\n"),
        &signed,
        Some("alice@example.com"),
    )
    .unwrap();
    check_ssh(
        &w,
        &format!("alice@example.com {public}\n"),
        &signed,
        Some("bob@example.com"),
    )
    .unwrap_err();

    // Patterns in the restriction (no ssh-keygen equivalent, so checked on our side only).
    let path = w.path("allowed_signers");
    std::fs::write(&path, format!("alice@example.com {public}\n")).unwrap();
    let signers = CommitSigners::load(Some(&path), &[]).unwrap();
    let verify = |allowed: &[&str]| {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        signers.verify(&signed.signature, &signed.data, signed.time, Some(&allowed))
    };
    assert_eq!(
        verify(&["*@example.com"]).unwrap().principal,
        "alice@example.com"
    );
    assert_eq!(
        verify(&["bob@example.com", "alice@*"]).unwrap().principal,
        "alice@example.com"
    );
    let err = verify(&["*@example.com", "!alice@example.com"]).unwrap_err();
    assert!(
        matches!(err, CommitSigError::SignerNotAllowed { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("alice@example.com") && msg.contains("not allowed"),
        "{msg}"
    );
    let err = verify(&["release-bot@example.com"]).unwrap_err();
    assert!(
        matches!(err, CommitSigError::SignerNotAllowed { .. }),
        "{err:?}"
    );
}

#[test]
fn ssh_tampered_data_and_transplanted_signature() {
    let w = World::new();
    let (key, public) = w.ssh_key("alice", &["-t", "ecdsa"]);
    let allowed = format!("alice@example.com {public}\n");
    let first = w.commit_ssh(&key, "first", NOON);
    let second = w.commit_ssh(&key, "second", NOON);
    check_ssh(&w, &allowed, &first, None).unwrap();

    // One byte of the signed commit changed (the message's first letter).
    let mut tampered = first.clone();
    let at = tampered
        .data
        .windows(6)
        .position(|w| w == b"\nfirst")
        .unwrap()
        + 1;
    tampered.data[at] = b'F';
    let err = check_ssh(&w, &allowed, &tampered, None).unwrap_err();
    assert!(
        matches!(
            err,
            CommitSigError::BadSignature {
                kind: SignatureKind::Ssh,
                ..
            }
        ),
        "{err:?}"
    );

    // The first commit's signature presented for the second commit.
    let transplanted = Signed {
        signature: first.signature.clone(),
        ..second
    };
    let err = check_ssh(&w, &allowed, &transplanted, None).unwrap_err();
    assert!(
        matches!(err, CommitSigError::BadSignature { .. }),
        "{err:?}"
    );
}

#[test]
fn ssh_signed_tags() {
    let w = World::new();
    let (key, public) = w.ssh_key("alice", &["-t", "ed25519"]);
    w.commit_ssh(&key, "base", NOON);
    let keyopt = format!("user.signingkey={}", key.display());
    let (raw, time) = w.tag("v1.0.0", &["-c", "gpg.format=ssh", "-c", &keyopt]);
    let (data, signature) = split_signed_tag(&raw).unwrap();
    assert!(signature.starts_with(b"-----BEGIN SSH SIGNATURE-----"));
    assert!(
        data.ends_with(b"release\n"),
        "{}",
        String::from_utf8_lossy(&data)
    );
    let signed = Signed {
        signature,
        data,
        time,
    };
    let allowed = format!("alice@example.com {public}\n");
    assert_eq!(
        check_ssh(&w, &allowed, &signed, None).unwrap().principal,
        "alice@example.com"
    );

    let mut tampered = signed.clone();
    let at = tampered
        .data
        .windows(6)
        .position(|w| w == b"v1.0.0")
        .unwrap()
        + 5;
    tampered.data[at] = b'1';
    assert!(matches!(
        check_ssh(&w, &allowed, &tampered, None),
        Err(CommitSigError::BadSignature { .. })
    ));

    w.git(&["tag", "-a", "-m", "plain", "v0.9.0"]);
    let repo = git2::Repository::open(&w.repo).unwrap();
    let oid = repo.refname_to_id("refs/tags/v0.9.0").unwrap();
    assert_eq!(
        split_signed_tag(repo.odb().unwrap().read(oid).unwrap().data()),
        None
    );
}

#[test]
fn allowed_signers_errors_name_the_line() {
    let w = World::new();
    let (_, public) = w.ssh_key("alice", &["-t", "ed25519"]);
    let text =
        format!("# signers\nalice@example.com {public}\nbob@example.com foo=\"bar\" {public}\n");
    let err = CommitSigners::new(Some(("allowed_signers", &text)), &[]).unwrap_err();
    assert_eq!(err.to_string(), "allowed_signers:3: unknown option 'foo'");
    assert!(matches!(
        err,
        CommitSigError::AllowedSigners { line: 3, .. }
    ));

    let path = w.path("site_signers");
    std::fs::write(
        &path,
        format!("alice@example.com cert-authority {public}\n"),
    )
    .unwrap();
    let err = CommitSigners::load(Some(&path), &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}:1: 'cert-authority' is not supported",
            path.display()
        )),
        "{msg}"
    );

    let err = CommitSigners::load(Some(&w.path("missing")), &[]).unwrap_err();
    assert!(matches!(err, CommitSigError::Io { .. }), "{err:?}");

    let empty = CommitSigners::new(Some(("allowed_signers", "")), &[]).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn openpgp_good_unknown_tampered_restricted() {
    let w = World::new();
    let alice = w.gpg_key("Alice <alice@example.com>", &[]);
    let bob = w.gpg_key("Bob <bob@example.com>", &[]);
    let signed = w.commit_pgp(&alice, "pgp", NOON);
    assert!(
        signed
            .signature
            .starts_with(b"-----BEGIN PGP SIGNATURE-----")
    );

    // Both keys in one export, plus a second armor block in the same file.
    let both = format!(
        "{}\n{}",
        w.gpg_export(&[&alice, &bob]),
        w.gpg_export(&[&bob])
    );
    let keyfile = w.path("trusted.asc");
    std::fs::write(&keyfile, &both).unwrap();
    let signers = CommitSigners::load(None, &[keyfile]).unwrap();
    let signer = signers
        .verify(&signed.signature, &signed.data, signed.time, None)
        .unwrap();
    assert_eq!(
        signer,
        CommitSigner {
            kind: SignatureKind::OpenPgp,
            principal: "Alice <alice@example.com>".to_owned(),
            fingerprint: alice.clone(),
        }
    );

    // Not in the keyring.
    let only_bob =
        CommitSigners::new(None, &[("bob.asc".to_owned(), w.gpg_export(&[&bob]))]).unwrap();
    let err = only_bob
        .verify(&signed.signature, &signed.data, signed.time, None)
        .unwrap_err();
    assert!(
        matches!(&err, CommitSigError::UnknownKey { kind: SignatureKind::OpenPgp, fingerprint, .. } if *fingerprint == alice),
        "{err:?}"
    );
    assert!(err.to_string().contains("bob.asc"), "{err}");

    // One byte changed; another commit's signature.
    let mut tampered = signed.clone();
    let last = tampered.data.len() - 2;
    tampered.data[last] ^= 0x20;
    let err = signers
        .verify(&tampered.signature, &tampered.data, tampered.time, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitSigError::BadSignature {
                kind: SignatureKind::OpenPgp,
                ..
            }
        ),
        "{err:?}"
    );
    let other = w.commit_pgp(&alice, "other", NOON);
    let err = signers
        .verify(&signed.signature, &other.data, other.time, None)
        .unwrap_err();
    assert!(
        matches!(err, CommitSigError::BadSignature { .. }),
        "{err:?}"
    );

    // Restrictions: by e-mail pattern, by fingerprint, and a refusal.
    let verify = |allowed: &[&str]| {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        signers.verify(&signed.signature, &signed.data, signed.time, Some(&allowed))
    };
    assert_eq!(verify(&["alice@example.com"]).unwrap().fingerprint, alice);
    assert_eq!(
        verify(&["*@EXAMPLE.com"]).unwrap().principal,
        "Alice <alice@example.com>"
    );
    assert_eq!(verify(&[&alice.to_lowercase()]).unwrap().fingerprint, alice);
    let err = verify(&["bob@example.com"]).unwrap_err();
    assert!(
        matches!(&err, CommitSigError::SignerNotAllowed { principal, .. } if principal == "Alice <alice@example.com>"),
        "{err:?}"
    );

    // git agrees the commit is good (independent verifier).
    w.git(&["-c", "gpg.program=gpg", "verify-commit", "HEAD"]);
}

#[test]
fn openpgp_signing_subkey_and_tags() {
    let w = World::new();
    let alice = w.gpg_key("Alice <alice@example.com>", &[]);
    w.gpg(&["--quick-add-key", &alice, "ed25519", "sign", "never"]);
    let listing = String::from_utf8(w.gpg(&["--with-colons", "--list-keys", &alice])).unwrap();
    let subkey = listing
        .lines()
        .filter_map(|l| l.strip_prefix("fpr:"))
        .map(|l| l.trim_matches(':').to_owned())
        .nth(1)
        .unwrap();
    // `!` makes gpg sign with exactly this subkey.
    let signed = w.commit_pgp(&format!("{subkey}!"), "subkey", NOON);
    let verbose = {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sig"), &signed.signature).unwrap();
        std::fs::write(dir.path().join("data"), &signed.data).unwrap();
        let mut cmd = Command::new("gpg");
        w.env(&mut cmd);
        let out = cmd
            .args(["--batch", "--verify"])
            .arg(dir.path().join("sig"))
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        verbose.contains(&format!("using EDDSA key {subkey}")),
        "signed by the subkey: {verbose}"
    );

    let signers =
        CommitSigners::new(None, &[("alice.asc".to_owned(), w.gpg_export(&[&alice]))]).unwrap();
    let signer = signers
        .verify(&signed.signature, &signed.data, signed.time, None)
        .unwrap();
    assert_eq!(signer.fingerprint, alice);

    let (raw, time) = w.tag(
        "v2",
        &[
            "-c",
            "gpg.program=gpg",
            "-c",
            &format!("user.signingkey={alice}"),
        ],
    );
    let (data, signature) = split_signed_tag(&raw).unwrap();
    assert!(signature.starts_with(b"-----BEGIN PGP SIGNATURE-----"));
    signers.verify(&signature, &data, time, None).unwrap();
    let mut tampered = data.clone();
    tampered[0] ^= 1;
    assert!(matches!(
        signers.verify(&signature, &tampered, time, None),
        Err(CommitSigError::BadSignature { .. })
    ));
}

#[test]
fn openpgp_expired_and_revoked_keys() {
    let w = World::new();
    // A key that lived 2020-01-01 .. 2020-01-03, and a gpg that believes it is 2020-01-02.
    let old = w.gpg_key(
        "Old <old@example.com>",
        &["--faked-system-time", "20200101T000000"],
    );
    w.gpg(&[
        "--faked-system-time",
        "20200101T000000",
        "--quick-set-expire",
        &old,
        "2d",
    ]);
    let fake_gpg = w.path("gpg-2020");
    std::fs::write(
        &fake_gpg,
        "#!/bin/sh\nexec gpg --faked-system-time 20200102T000000 \"$@\"\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&fake_gpg).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake_gpg, perms).unwrap();
    let program = fake_gpg.to_str().unwrap();
    let keys = [("old.asc".to_owned(), w.gpg_export(&[&old]))];
    let signers = CommitSigners::new(None, &keys).unwrap();

    let in_time = w.commit_pgp_with(program, &old, "in time", "2020-01-02T00:00:00Z");
    signers
        .verify(&in_time.signature, &in_time.data, in_time.time, None)
        .unwrap();
    let late = w.commit_pgp_with(program, &old, "late", "2020-01-05T00:00:00Z");
    let err = signers
        .verify(&late.signature, &late.data, late.time, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitSigError::NotValidAt {
                kind: SignatureKind::OpenPgp,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("expired"), "{err}");

    // Revoked after signing: gpg's own revocation certificate, imported then exported.
    let gone = w.gpg_key("Gone <gone@example.com>", &[]);
    let signed = w.commit_pgp(&gone, "before revocation", NOON);
    let before =
        CommitSigners::new(None, &[("gone.asc".to_owned(), w.gpg_export(&[&gone]))]).unwrap();
    before
        .verify(&signed.signature, &signed.data, signed.time, None)
        .unwrap();
    let cert =
        std::fs::read_to_string(w.gnupg.join(format!("openpgp-revocs.d/{gone}.rev"))).unwrap();
    let cert = cert.replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    let cert_path = w.path("gone.rev");
    std::fs::write(&cert_path, cert).unwrap();
    w.gpg(&["--import", cert_path.to_str().unwrap()]);
    let after =
        CommitSigners::new(None, &[("gone.asc".to_owned(), w.gpg_export(&[&gone]))]).unwrap();
    let err = after
        .verify(&signed.signature, &signed.data, signed.time, None)
        .unwrap_err();
    assert!(matches!(err, CommitSigError::KeyRevoked { .. }), "{err:?}");
}

#[test]
fn openpgp_key_file_errors() {
    let err =
        CommitSigners::new(None, &[("keys.asc".to_owned(), "not a key".to_owned())]).unwrap_err();
    assert!(
        matches!(&err, CommitSigError::OpenPgpKey { origin, .. } if origin == "keys.asc"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("keys.asc: "), "{err}");
    let garbage =
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n";
    let err = CommitSigners::new(None, &[("bad.asc".to_owned(), garbage.to_owned())]).unwrap_err();
    assert!(err.to_string().starts_with("bad.asc: "), "{err}");
}

#[test]
fn ssh_signature_checked_against_pgp_only_signers_and_vice_versa() {
    let w = World::new();
    let (key, _) = w.ssh_key("alice", &["-t", "ed25519"]);
    let alice = w.gpg_key("Alice <alice@example.com>", &[]);
    let ssh_signed = w.commit_ssh(&key, "ssh", NOON);
    let pgp_signed = w.commit_pgp(&alice, "pgp", NOON);
    let pgp_only =
        CommitSigners::new(None, &[("a.asc".to_owned(), w.gpg_export(&[&alice]))]).unwrap();
    assert!(matches!(
        pgp_only.verify(
            &ssh_signed.signature,
            &ssh_signed.data,
            ssh_signed.time,
            None
        ),
        Err(CommitSigError::UnknownKey {
            kind: SignatureKind::Ssh,
            ..
        })
    ));
    let ssh_only = CommitSigners::new(Some(("allowed_signers", "")), &[]).unwrap();
    assert!(matches!(
        ssh_only.verify(
            &pgp_signed.signature,
            &pgp_signed.data,
            pgp_signed.time,
            None
        ),
        Err(CommitSigError::UnknownKey {
            kind: SignatureKind::OpenPgp,
            ..
        })
    ));
}

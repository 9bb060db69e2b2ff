//! The air-gap import's bad-input corpus, through a real agent: a site that runs a release
//! imported from a bundle is handed, one after another, every kind of hostile or wrong bundle
//! from the issue (crafted from a good one: paths, entry types, manifests, signatures, bombs, a
//! full disk, and releases that are wrong for the site). Each must land in `rejected/` with a
//! reason naming the problem, and leave the site exactly as it was: same Git mirror and
//! artifact store, same applied commit, the workload still serving, no staging left behind.

use super::bundle::{Fleet, PASSWORD, T, applied, keygen, ok, place_into, tree_digest, wait_filed};
use crate::testkit::agent::{Agent, wait_body};
use crate::testkit::components::{probe_http, probe_http_v2};
use fleetlet_bundle::{Manifest, ManifestEntry};
use fleetlet_core::Digest;
use fleetlet_verify::cosign::{SigningKey, TrustedKey};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tar::EntryType;

/// The site's `source.bundles.maxSize`: small, so that a bomb needs only tens of megabytes.
const MAX_SIZE: &str = "32Mi";
const MAX_BYTES: u64 = 32 << 20;
/// What the bombs unpack to: twice the cap.
const BOMB: u64 = 2 * MAX_BYTES;
/// How much room the full-disk case leaves on the state file system before its import.
const HEADROOM: u64 = 6 << 20;

// ---------------------------------------------------------------------------------------------
// Crafting bundles

enum Data {
    Bytes(Vec<u8>),
    /// That many zero bytes, streamed (bombs).
    Zeros(u64),
}

/// One tar entry, written exactly as given: no path checks, any type.
struct Raw {
    path: Vec<u8>,
    ty: EntryType,
    data: Data,
}

impl Raw {
    fn file(path: &str, data: Vec<u8>) -> Raw {
        Raw {
            path: path.as_bytes().to_vec(),
            ty: EntryType::Regular,
            data: Data::Bytes(data),
        }
    }

    fn special(path: &str, ty: EntryType) -> Raw {
        Raw {
            path: path.as_bytes().to_vec(),
            ty,
            data: Data::Bytes(Vec::new()),
        }
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Bytes(b) => b,
            Data::Zeros(_) => panic!("{}: a streamed entry", self.name()),
        }
    }
}

/// A good bundle taken apart: its manifest and the entries after the head, in tar order.
struct Unpacked {
    manifest: Manifest,
    entries: Vec<Raw>,
}

fn unpack(bundle: &Path) -> Unpacked {
    let tar = zstd::decode_all(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        assert_eq!(entry.header().entry_type(), EntryType::Regular);
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.push(Raw::file(&path, data));
    }
    let head: Vec<String> = entries[..3].iter().map(Raw::name).collect();
    assert_eq!(head, ["manifest.json", "manifest.sig", "manifest.key"]);
    let manifest = Manifest::parse(entries[0].bytes()).unwrap();
    Unpacked {
        manifest,
        entries: entries.split_off(3),
    }
}

fn fingerprint(key: &SigningKey) -> String {
    TrustedKey::from_pem("k", key.public_pem().unwrap().as_bytes())
        .unwrap()
        .fingerprint()
}

/// `manifest.json`, `manifest.sig` (by `key`) and `manifest.key` (naming `claimed`).
fn head(manifest: &Manifest, key: &SigningKey, claimed: &str) -> Vec<Raw> {
    use base64::Engine as _;
    let bytes = manifest.to_canonical_json();
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&bytes).unwrap());
    vec![
        Raw::file("manifest.json", bytes),
        Raw::file("manifest.sig", sig.into_bytes()),
        Raw::file("manifest.key", claimed.as_bytes().to_vec()),
    ]
}

/// Writes `entries` as a zstd-compressed tar, then `trailing_zeros` zero bytes past the tar's
/// end (inside the same zstd frame).
fn write_bundle(out: &Path, entries: &[Raw], trailing_zeros: u64) -> PathBuf {
    let file = std::fs::File::create(out).unwrap();
    let mut encoder = zstd::stream::write::Encoder::new(file, 3).unwrap();
    encoder.include_checksum(true).unwrap();
    let mut builder = tar::Builder::new(encoder);
    for raw in entries {
        let mut header = tar::Header::new_gnu();
        // Straight into the name field: `set_path` would refuse the hostile ones.
        assert!(
            raw.path.len() <= 100,
            "{}: too long for a tar name",
            raw.name()
        );
        header.as_old_mut().name[..raw.path.len()].copy_from_slice(&raw.path);
        header.set_entry_type(raw.ty);
        header.set_mode(0o644);
        match raw.ty {
            EntryType::Symlink | EntryType::Link => header.set_link_name("/etc/shadow").unwrap(),
            EntryType::Char => {
                // /dev/mem.
                header.set_device_major(1).unwrap();
                header.set_device_minor(1).unwrap();
            }
            _ => {}
        }
        match &raw.data {
            Data::Bytes(b) => {
                header.set_size(b.len() as u64);
                header.set_cksum();
                builder.append(&header, &b[..]).unwrap();
            }
            Data::Zeros(n) => {
                header.set_size(*n);
                header.set_cksum();
                builder
                    .append(&header, std::io::repeat(0).take(*n))
                    .unwrap();
            }
        }
    }
    let mut encoder = builder.into_inner().unwrap();
    std::io::copy(&mut std::io::repeat(0).take(trailing_zeros), &mut encoder).unwrap();
    encoder.finish().unwrap().sync_all().unwrap();
    out.to_path_buf()
}

/// Pseudo-random, incompressible bytes (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `bytes` with a Wasm custom section appended: another valid component, another digest.
fn salted(component: &Path, salt: &str, out: &Path) -> PathBuf {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"salt";
    let len = 1 + name.len() + salt.len();
    assert!(len < 128, "one-byte LEB128 sizes only");
    bytes.extend([0u8, len as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(salt.as_bytes());
    std::fs::write(out, bytes).unwrap();
    out.to_path_buf()
}

/// The blob entry a store would hold `bytes` under.
fn blob_path(digest: &Digest) -> String {
    format!("oci/blobs/sha256/{}", digest.hex())
}

/// Crafts variants of one good bundle, signed with the courier's key unless said otherwise.
struct Crafter {
    out_dir: PathBuf,
    good: Unpacked,
    courier: SigningKey,
}

impl Crafter {
    fn out(&self, name: &str) -> PathBuf {
        self.out_dir.join(format!("{name}.bundle"))
    }

    /// The good manifest, re-signed by the courier, followed by `entries`.
    fn signed(&self, name: &str, manifest: &Manifest, entries: Vec<Raw>) -> PathBuf {
        let mut all = head(manifest, &self.courier, &fingerprint(&self.courier));
        all.extend(entries);
        write_bundle(&self.out(name), &all, 0)
    }

    /// The good entries with `change` applied to their list.
    fn entries_with(&self, change: impl FnOnce(&mut Vec<Raw>)) -> Vec<Raw> {
        let mut entries: Vec<Raw> = self
            .good
            .entries
            .iter()
            .map(|r| Raw::file(&r.name(), r.bytes().to_vec()))
            .collect();
        change(&mut entries);
        entries
    }

    fn position(&self, path: &str) -> usize {
        self.good
            .entries
            .iter()
            .position(|r| r.name() == path)
            .unwrap_or_else(|| panic!("the good bundle has no {path}"))
    }

    /// The good manifest with the entry at `path` describing `bytes` instead.
    fn manifest_replacing(&self, path: &str, bytes: &[u8]) -> Manifest {
        let mut manifest = self.good.manifest.clone();
        let entry = manifest
            .entries
            .iter_mut()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("the good bundle has no {path}"));
        entry.sha256 = Digest::of(bytes);
        entry.size = bytes.len() as u64;
        manifest
    }

    /// The good manifest with `entry` added in its sorted place.
    fn manifest_with(&self, entry: ManifestEntry) -> Manifest {
        let mut manifest = self.good.manifest.clone();
        manifest.entries.push(entry);
        manifest.entries.sort_by(|a, b| a.path.cmp(&b.path));
        manifest
    }
}

// ---------------------------------------------------------------------------------------------
// The site and its checks

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: u64) -> Option<Tmpfs> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        mounted.then(|| Tmpfs(at.to_path_buf()))
    }

    /// Shrinks (or grows) the file system in place, its files kept.
    fn resize(&self, size: u64) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn used_and_free(&self) -> (u64, u64) {
        let out = Command::new("stat")
            .args(["-f", "-c", "%b %a %S"])
            .arg(&self.0)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let n: Vec<u64> = text
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        ((n[0] - n[1]) * n[2], n[1] * n[2])
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every file under `dir` with its size and sha256 (sizes alone miss a ref that moved).
fn contents(dir: &Path) -> Vec<(String, u64, Digest)> {
    tree_digest(dir)
        .into_iter()
        .map(|(path, size)| {
            let digest = Digest::of(&std::fs::read(dir.join(&path)).unwrap());
            (path, size, digest)
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What must not change when a bundle is rejected.
#[derive(Debug, PartialEq)]
struct Snapshot {
    git: Vec<(String, u64, Digest)>,
    oci: Vec<(String, u64, Digest)>,
    /// The state dir's own entries (names only: status.json and the like are rewritten, and
    /// their `.status.json.*.tmp` while a write is in flight is left out).
    top: Vec<String>,
}

impl Snapshot {
    fn take(state: &Path) -> Snapshot {
        Snapshot {
            git: contents(&state.join("git")),
            oci: contents(&state.join("oci")),
            top: names(state)
                .into_iter()
                .filter(|n| !(n.starts_with('.') && n.ends_with(".tmp")))
                .collect(),
        }
    }
}

fn records(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("bundles/imports.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits for the inbox to file `name` either way; the sub-directory it went to.
fn verdict(inbox: &Path, name: &str) -> &'static str {
    let deadline = Instant::now() + T;
    loop {
        for (sub, note) in [("rejected", "reason"), ("done", "result")] {
            if inbox.join(sub).join(format!("{name}.{note}")).exists() {
                return sub;
            }
        }
        assert!(Instant::now() < deadline, "{name} was never filed");
        std::thread::sleep(Duration::from_millis(25));
    }
}

struct Case {
    name: &'static str,
    bundle: PathBuf,
    /// Expected in the first line of the `.reason` file and in the import record.
    reason: String,
    /// The import record's outcome.
    outcome: &'static str,
    /// Where an entry that escaped the staging directory would have landed.
    escapes: Vec<PathBuf>,
}

fn case(name: &'static str, bundle: PathBuf, reason: impl Into<String>) -> Case {
    Case {
        name,
        bundle,
        reason: reason.into(),
        outcome: "rejected",
        escapes: Vec::new(),
    }
}

struct Site<'a> {
    agent: &'a Agent,
    inbox: &'a Path,
    state: &'a Path,
    commit: &'a str,
    port: u16,
}

impl Site<'_> {
    /// Drops the case's bundle into the inbox and checks the refusal and that nothing changed;
    /// returns the reason's first line.
    fn refuses(&self, case: &Case) -> String {
        let name = case
            .bundle
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let before = Snapshot::take(self.state);
        let records_before = records(self.state).len();

        place_into(self.inbox, std::slice::from_ref(&case.bundle));
        let sub = verdict(self.inbox, &name);
        assert_eq!(
            sub,
            "rejected",
            "accepted: {}",
            std::fs::read_to_string(self.inbox.join("done").join(format!("{name}.result")))
                .unwrap_or_default()
        );
        let note = wait_filed(self.agent, self.inbox, "rejected", &name);
        let first = note.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("rejected: ") && first.contains(&case.reason),
            "expected {:?} in the reason's first line:\n{note}",
            case.reason
        );

        let records = records(self.state);
        assert_eq!(records.len(), records_before + 1, "one record per import");
        let last = &records[records_before];
        assert_eq!(last["files"], serde_json::json!([name]), "{last}");
        assert_eq!(last["outcome"], case.outcome, "{last}");
        assert!(
            last["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(&case.reason),
            "{last}"
        );

        assert_eq!(
            names(&self.state.join("bundles")),
            [".lock", "imports.jsonl"],
            "staging left behind"
        );
        for path in &case.escapes {
            assert!(!path.exists(), "an entry escaped to {}", path.display());
        }
        assert_eq!(
            Snapshot::take(self.state),
            before,
            "the site's state changed"
        );
        let status = self.agent.status();
        assert_eq!(
            status["appliedCommit"].as_str(),
            Some(self.commit),
            "{status:#}"
        );
        wait_body(self.port, "/", "two", Duration::from_secs(5))
            .expect("the workload still serves release two");
        first.to_string()
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

// ---------------------------------------------------------------------------------------------
// The corpus

#[test]
fn bundle_corpus_every_bad_bundle_is_rejected_and_the_site_is_unchanged() {
    let started = Instant::now();
    let mut fleet = Fleet::new();
    let work = fleet.dir.path().join("corpus");
    std::fs::create_dir(&work).unwrap();

    // The operator's side: two good releases, then releases a site must refuse.
    fleet.publish(&probe_http(), "v1");
    let c1 = fleet.release(&fleet.image("v1"), "one", "release one");
    let r1 = fleet.create("r1.bundle", &["--rev", "main", "--site", "store-1"]);
    fleet.publish(&probe_http_v2(), "v2");
    let c2 = fleet.release(&fleet.image("v2"), "two", "release two");
    let r2 = fleet.create("r2.bundle", &["--rev", "main", "--site", "store-1"]);
    let other_site = fleet.create("other-site.bundle", &["--rev", "main", "--site", "store-2"]);
    // Signed by the courier, but published on a branch the site does not follow (whose
    // per-ref signer rules would be another's), or for another platform.
    let other_branch = fleet.create(
        "other-branch.bundle",
        &[
            "--rev",
            "main",
            "--site",
            "store-1",
            "--branch",
            "feature-x",
        ],
    );
    let other_platform = fleet.create(
        "other-platform.bundle",
        &[
            "--rev",
            "main",
            "--site",
            "store-1",
            "--platform",
            "linux/s390x",
        ],
    );

    // Pushed, never signed.
    let v3 = ok(&[
        "push",
        salted(&probe_http_v2(), "v3", &work.join("v3.wasm"))
            .to_str()
            .unwrap(),
        &fleet.image("v3"),
    ])
    .trim()
    .to_string();
    fleet.release(
        &fleet.image("v3"),
        "three",
        "release three, artifact unsigned",
    );
    let unsigned_artifact = fleet.create(
        "unsigned-artifact.bundle",
        &["--rev", "main", "--site", "store-1"],
    );
    // Signed, by a key the site has never heard of.
    let (stranger_key, _) = keygen(&work, "stranger");
    let v4 = ok(&[
        "push",
        salted(&probe_http_v2(), "v4", &work.join("v4.wasm"))
            .to_str()
            .unwrap(),
        &fleet.image("v4"),
    ])
    .trim()
    .to_string();
    ok(&["sign", &v4, "--key", stranger_key.to_str().unwrap()]);
    fleet.release(
        &fleet.image("v4"),
        "four",
        "release four, signed by a stranger",
    );
    let stranger_artifact = fleet.create(
        "stranger-artifact.bundle",
        &["--rev", "main", "--site", "store-1"],
    );
    // The signed v2 again, in a commit nobody signed.
    let c5 = fleet.release_unsigned(&fleet.image("v2"), "five", "release five, unsigned");
    let unsigned_commit = fleet.create(
        "unsigned-commit.bundle",
        &["--rev", "main", "--site", "store-1"],
    );
    fleet.cut_off();

    // The site: its state dir on a tmpfs (for the full-disk case), release two imported.
    let site_dir = tempfile::tempdir().unwrap();
    let state = site_dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let tmpfs = Tmpfs::mount(&state, 256 << 20);
    let inbox = site_dir.path().join("inbox");
    let config = fleet.site_config("store-1", site_dir.path(), Some(&inbox));
    let text = std::fs::read_to_string(&config).unwrap();
    // Bundles are placed whole (`place_into`), so a short settle time is safe here.
    let settled = text.replace(
        "    settle: 1s\n",
        &format!("    settle: 300ms\n    maxSize: {MAX_SIZE}\n"),
    );
    assert_ne!(settled, text, "the site config changed shape");
    let text = settled;
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config);
    agent.wait_status(T, "agent up, nothing imported", |s| s["site"] == "store-1");
    place_into(&inbox, std::slice::from_ref(&r2));
    let note = wait_filed(&agent, &inbox, "done", "r2.bundle");
    assert!(note.starts_with("imported: commit "), "{note}");
    agent.wait_status(T, "release two applied from the bundle", applied(&c2));
    wait_body(fleet.port, "/", "two", T).unwrap();
    assert_eq!(names(&state.join("bundles")), [".lock", "imports.jsonl"]);
    let baseline = Snapshot::take(&state);
    assert!(
        baseline.git.iter().any(|(p, ..)| p.starts_with("objects/"))
            && baseline.oci.iter().any(|(p, ..)| p.starts_with("blobs/")),
        "the site holds no release to compare against: {baseline:?}"
    );
    let setup = started.elapsed();

    // The hostile bundles, crafted from the good one.
    let password = PASSWORD.as_bytes();
    let load = |path: &Path| {
        SigningKey::from_encrypted_pem(&std::fs::read(path).unwrap(), password).unwrap()
    };
    let craft = Crafter {
        out_dir: work.clone(),
        good: unpack(&r2),
        courier: load(&fleet.courier_key),
    };
    let release_key = load(&fleet.release_key);
    let good = &craft.good.manifest;
    let mut cases = Vec::new();

    let escaped = state.join("escaped");
    cases.push(Case {
        escapes: vec![escaped.clone(), state.join("bundles/escaped")],
        ..case(
            "path traversal",
            craft.signed(
                "traversal",
                good,
                craft.entries_with(|e| e.insert(0, Raw::file("../../escaped", b"x".to_vec()))),
            ),
            "entry ../../escaped: path leaves the bundle",
        )
    });
    let absolute = site_dir.path().join("absolute");
    let absolute_name = absolute.to_str().unwrap().to_string();
    cases.push(Case {
        escapes: vec![absolute.clone()],
        ..case(
            "absolute path",
            craft.signed(
                "absolute",
                good,
                craft.entries_with(|e| e.insert(0, Raw::file(&absolute_name, b"x".to_vec()))),
            ),
            format!("entry {absolute_name}: absolute paths are not allowed"),
        )
    });
    for (name, file, path, ty, what) in [
        (
            "symlink entry",
            "symlink",
            "oci/index.json",
            EntryType::Symlink,
            "symlink",
        ),
        (
            "hard link entry",
            "hardlink",
            "oci/oci-layout",
            EntryType::Link,
            "hard link",
        ),
        (
            "character device entry",
            "chardev",
            "git/release.pack",
            EntryType::Char,
            "character device",
        ),
    ] {
        let at = craft.position(path);
        cases.push(case(
            name,
            craft.signed(
                file,
                good,
                craft.entries_with(|e| e[at] = Raw::special(path, ty)),
            ),
            format!("entry {path}: {what} entries are not allowed"),
        ));
    }
    let index = craft.position("oci/index.json");
    cases.push(case(
        "duplicate entries",
        craft.signed(
            "duplicate",
            good,
            craft.entries_with(|e| {
                let again = Raw::file("oci/index.json", e[index].bytes().to_vec());
                e.insert(index + 1, again);
            }),
        ),
        "entry oci/index.json: appears twice in the bundle",
    ));
    let whole = std::fs::read(&r2).unwrap();
    let truncated = work.join("truncated.bundle");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    cases.push(Case {
        // Only a split bundle is waited for; a single file that ends early is refused.
        outcome: "rejected",
        ..case("truncated file", truncated, "the bundle is truncated")
    });
    let pack = craft.position("git/release.pack");
    cases.push(case(
        "wrong digest (entry changed after signing)",
        craft.signed(
            "wrong-digest",
            good,
            craft.entries_with(|e| {
                let mut bytes = e[pack].bytes().to_vec();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x55;
                e[pack] = Raw::file("git/release.pack", bytes);
            }),
        ),
        "entry git/release.pack: sha256 is",
    ));
    let mut unsigned = head(good, &craft.courier, &fingerprint(&craft.courier));
    unsigned.remove(1);
    unsigned.extend(craft.entries_with(|_| {}));
    cases.push(case(
        "unsigned manifest",
        write_bundle(&craft.out("unsigned"), &unsigned, 0),
        "manifest.json is not signed",
    ));
    let mut by_release = head(good, &release_key, &fingerprint(&release_key));
    by_release.extend(craft.entries_with(|_| {}));
    cases.push(case(
        "manifest signed by an untrusted key",
        write_bundle(&craft.out("untrusted-signer"), &by_release, 0),
        format!(
            "manifest signed by key {} which this site does not trust",
            fingerprint(&release_key)
        ),
    ));
    let mut claiming = head(good, &release_key, &fingerprint(&craft.courier));
    claiming.extend(craft.entries_with(|_| {}));
    cases.push(case(
        "manifest signed by an untrusted key that claims to be the trusted one",
        write_bundle(&craft.out("claims-courier"), &claiming, 0),
        format!(
            "manifest signature does not verify with trusted key {}",
            fingerprint(&craft.courier)
        ),
    ));
    let mut omitting = good.clone();
    omitting.entries.retain(|e| e.path != "oci/oci-layout");
    cases.push(case(
        "manifest omits an entry of the tar",
        craft.signed("omits-entry", &omitting, craft.entries_with(|_| {})),
        "entry oci/oci-layout: not listed in the manifest",
    ));
    let absent = Digest::of(b"listed, never packed");
    cases.push(case(
        "manifest lists an entry the tar lacks",
        craft.signed(
            "extra-listed",
            &craft.manifest_with(ManifestEntry {
                path: blob_path(&absent),
                sha256: absent,
                size: 20,
            }),
            craft.entries_with(|_| {}),
        ),
        format!(
            "manifest lists {} but the bundle does not contain it",
            blob_path(&absent)
        ),
    ));
    cases.push(case(
        "bundle for another site",
        other_site,
        "the bundle is for site(s) store-2, not for store-1",
    ));
    cases.push(case(
        "bundle publishing another branch",
        other_branch,
        "the bundle publishes its release on refs/heads/feature-x; this site takes releases on \
         refs/heads/main",
    ));
    cases.push(case(
        "bundle for another platform",
        other_platform,
        "the bundle carries images for linux/s390x",
    ));
    // An index entry whose name claims one digest and points at another.
    let index_at = craft.position("oci/index.json");
    let index_text = String::from_utf8(craft.good.entries[index_at].bytes().to_vec()).unwrap();
    let mut index: Value = serde_json::from_str(&index_text).unwrap();
    let first = &mut index["manifests"][0];
    let name = first["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_string();
    let (base, _) = name.rsplit_once('@').unwrap();
    let lie = format!("{base}@{}", Digest::of(b"another manifest"));
    first["annotations"]["org.opencontainers.image.ref.name"] = Value::String(lie.clone());
    let lying = serde_json::to_vec(&index).unwrap();
    cases.push(case(
        "index entry named for another digest",
        craft.signed(
            "lying-index",
            &craft.manifest_replacing("oci/index.json", &lying),
            craft.entries_with(|e| e[index_at] = Raw::file("oci/index.json", lying.clone())),
        ),
        format!("oci/index.json names {lie} for "),
    ));
    let rollback = work.join("rollback.bundle");
    std::fs::copy(&r1, &rollback).unwrap();
    cases.push(case(
        "older release (rollback)",
        rollback,
        format!("commit {c1} does not descend from {c2}, the commit this site runs"),
    ));

    // Bombs: each a small file that unpacks past the cap.
    let zeros = Digest::of(&vec![0u8; BOMB as usize]);
    let honest = craft.signed(
        "bomb",
        &craft.manifest_with(ManifestEntry {
            path: blob_path(&zeros),
            sha256: zeros,
            size: BOMB,
        }),
        craft.entries_with(|e| {
            e.insert(
                0,
                Raw {
                    path: blob_path(&zeros).into_bytes(),
                    ty: EntryType::Regular,
                    data: Data::Zeros(BOMB),
                },
            )
        }),
    );
    let limit = format!("unpacked size exceeds the {MAX_BYTES}-byte limit");
    cases.push(case("zstd bomb the manifest declares", honest, &limit));
    let small = Digest::of(&[0u8; 1024]);
    let understated = craft.signed(
        "bomb-understated",
        &craft.manifest_with(ManifestEntry {
            path: blob_path(&small),
            sha256: small,
            size: 1024,
        }),
        craft.entries_with(|e| {
            e.insert(
                0,
                Raw {
                    path: blob_path(&small).into_bytes(),
                    ty: EntryType::Regular,
                    data: Data::Zeros(BOMB),
                },
            )
        }),
    );
    cases.push(case(
        "zstd bomb, the manifest understates an entry's size",
        understated,
        format!(
            "entry {}: size is {BOMB} bytes but the manifest says 1024",
            blob_path(&small)
        ),
    ));
    let mut hidden = head(good, &craft.courier, &fingerprint(&craft.courier));
    hidden.extend(craft.entries_with(|_| {}));
    cases.push(case(
        "zstd bomb past the tar's end, the manifest's sizes all small",
        write_bundle(&craft.out("bomb-hidden"), &hidden, BOMB),
        &limit,
    ));
    for c in &cases[cases.len() - 3..] {
        let size = std::fs::metadata(&c.bundle).unwrap().len();
        assert!(size < 1 << 20, "{}: {size} bytes is not a bomb", c.name);
    }

    cases.push(case(
        "artifact not signed",
        unsigned_artifact,
        format!("artifact(s) failed verification; first: {v3}: unsigned"),
    ));
    cases.push(case(
        "artifact signed by an unknown key",
        stranger_artifact,
        format!("artifact(s) failed verification; first: {v4}: no valid signature by release"),
    ));
    cases.push(case(
        "commit not signed",
        unsigned_commit,
        format!("commit {}: unsigned commit", &c5[..12]),
    ));
    let crafted = started.elapsed() - setup;

    let site = Site {
        agent: &agent,
        inbox: &inbox,
        state: &state,
        commit: &c2,
        port: fleet.port,
    };
    let mut failures = Vec::new();
    let mut run = |case: &Case| {
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| site.refuses(case)));
        match result {
            Ok(reason) => eprintln!("case {:?} ({:.1?}): {reason}", case.name, t.elapsed()),
            Err(payload) => {
                eprintln!("case {:?} ({:.1?}): FAILED", case.name, t.elapsed());
                failures.push(format!("{}: {}", case.name, panic_text(payload.as_ref())));
            }
        }
    };
    for c in &cases {
        run(c);
    }

    // A full disk during the import: the state file system shrunk to a little more than it
    // holds, then a good bundle with one more (unreferenced, correctly named) blob than fits.
    match &tmpfs {
        Some(fs) => {
            let (used, _) = fs.used_and_free();
            if fs.resize(used + HEADROOM) {
                let (_, free) = fs.used_and_free();
                let big = noise((free + (2 << 20)) as usize, 7);
                let digest = Digest::of(&big);
                let entry = ManifestEntry {
                    path: blob_path(&digest),
                    sha256: digest,
                    size: big.len() as u64,
                };
                let bundle = craft.signed(
                    "disk-full",
                    &craft.manifest_with(entry),
                    craft.entries_with(|e| e.insert(0, Raw::file(&blob_path(&digest), big))),
                );
                // The site's fault, not the bundle's: recorded as failed, filed as rejected
                // all the same so that the technician sees why.
                run(&Case {
                    outcome: "failed",
                    ..case(
                        "full disk during the import",
                        bundle,
                        format!("{}: no space left on the device", blob_path(&digest)),
                    )
                });
            } else {
                eprintln!("SKIPPED full disk during the import: cannot resize the tmpfs");
            }
        }
        None => eprintln!("SKIPPED full disk during the import: cannot mount a tmpfs"),
    }

    // A signed bundle may carry index entries the release does not need (an unrelated image's
    // tag, say): the import succeeds, but only what the release uses is tagged on the site.
    let mut index: Value = serde_json::from_str(&index_text).unwrap();
    let extra_digest = Digest::of(b"{}");
    let extra = format!("mirror.example/pause:3.6@{extra_digest}");
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": extra_digest.to_string(),
            "size": 2,
            "annotations": {"org.opencontainers.image.ref.name": extra},
        }));
    let padded = serde_json::to_vec(&index).unwrap();
    let bundle = craft.signed(
        "extra-index-entry",
        &craft.manifest_replacing("oci/index.json", &padded),
        craft.entries_with(|e| e[index_at] = Raw::file("oci/index.json", padded.clone())),
    );
    place_into(&inbox, std::slice::from_ref(&bundle));
    let note = wait_filed(&agent, &inbox, "done", "extra-index-entry.bundle");
    assert!(note.starts_with("imported: "), "{note}");
    let site_index = std::fs::read_to_string(state.join("oci/index.json")).unwrap();
    assert!(!site_index.contains("mirror.example"), "{site_index}");
    assert!(
        site_index.contains(&name),
        "the release's own tag is there: {site_index}"
    );

    eprintln!(
        "setup {setup:.1?}, crafting {crafted:.1?}, {} cases, total {:.1?}",
        cases.len() + 1,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(agent.terminate().success());
}

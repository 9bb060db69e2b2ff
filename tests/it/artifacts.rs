//! Image components end to end: `fleetlet push` to a real registry, the agent pulls and pins
//! them per release, serves them, and restarts with the registry gone; `fleetlet cache` finds
//! what the store holds and what is corrupt.

use crate::testkit::agent::{Agent, fleetlet, http_app, site_yaml, wait_body, write_config};
use crate::testkit::components::{free_port, probe_http, probe_http_v2};
use crate::testkit::git::TestRepo;
use crate::testkit::registry::TestRegistry;
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn push(file: &std::path::Path, reference: &str) -> String {
    let (code, out, err) = fleetlet(&["push", file.to_str().unwrap(), reference]);
    assert_eq!(code, 0, "{out}{err}");
    out.trim().to_string()
}

#[test]
fn image_components_are_pulled_pinned_per_release_and_survive_the_registry_going_away() {
    let registry = TestRegistry::start().unwrap();
    let image = format!("{}/fleet/probe:v1", registry.host());
    let pinned_v1 = push(&probe_http(), &image);
    assert!(
        pinned_v1.starts_with(&format!("{image}@sha256:")),
        "{pinned_v1}"
    );

    let repo = TestRepo::new().unwrap();
    let port = free_port();
    let app = |greeting: &str| {
        http_app("shop", "web", port, greeting, "").replace("components/probe.wasm", &image)
    };
    let c1 = repo
        .commit_files(
            &[
                ("sites/s.yaml", site_yaml("store-1", "wasm").as_bytes()),
                ("apps/a.yaml", app("one").as_bytes()),
            ],
            "image component",
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), "200ms", "");
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "image release applied", |s| {
        s["appliedCommit"].as_str() == Some(c1.as_str())
    });
    wait_body(port, "/version", "v1", T).unwrap();
    let artifact = s["workloads"][0]["artifact"].as_str().unwrap().to_string();
    assert!(
        artifact.starts_with("sha256:"),
        "status names the component digest: {s:#}"
    );

    // `render` shows the digests the tag resolves to (and `--no-pin` the reference as written).
    let repo_dir = repo.path().to_str().unwrap().to_string();
    let (code, out, err) = fleetlet(&[
        "render", "--repo", &repo_dir, "--site", "store-1", "-o", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let component = &d["workloads"]["shop/web"]["wasm"]["component"];
    assert_eq!(
        component["pinned"].as_str(),
        Some(pinned_v1.as_str()),
        "{component:#}"
    );
    assert_eq!(component["digest"].as_str(), Some(artifact.as_str()));
    let (_, out, _) = fleetlet(&[
        "render", "--repo", &repo_dir, "--site", "store-1", "-o", "json", "--no-pin",
    ]);
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(d["workloads"]["shop/web"]["wasm"]["component"]["digest"].is_null());

    // The tag moves: nothing changes until the next release pins it again.
    let pinned_v2 = push(&probe_http_v2(), &image);
    assert_ne!(pinned_v1, pinned_v2);
    std::thread::sleep(Duration::from_secs(1));
    wait_body(port, "/version", "v1", Duration::from_secs(1)).unwrap();
    let c2 = repo
        .commit_files(&[("apps/a.yaml", app("two").as_bytes())], "new release")
        .unwrap();
    agent.wait_status(T, "second release", |s| {
        s["appliedCommit"].as_str() == Some(c2.as_str())
    });
    wait_body(port, "/version", "v2", T).unwrap();

    // The store is a layout skopeo reads, and cache ls shows the pinned reference.
    let state = agent.state_dir.to_str().unwrap().to_string();
    let (code, ls, _) = fleetlet(&["cache", "ls", "--state-dir", &state, "-o", "json"]);
    assert_eq!(code, 0);
    let ls: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let names: Vec<&str> = ls["refs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&pinned_v2.as_str()), "{names:?}");

    // Registry gone, agent killed: it comes back from the store alone.
    agent.kill9();
    drop(registry);
    let agent = Agent::start(&config);
    wait_body(port, "/version", "v2", T).unwrap();
    assert!(agent.terminate().success());

    // verify: clean, then a corrupted blob is named, removed, and the exit code says so.
    let (code, out, _) = fleetlet(&["cache", "verify", "--state-dir", &state]);
    assert_eq!(code, 0, "{out}");
    let blobs = std::path::Path::new(&state).join("oci/blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&victim, b"bit rot").unwrap();
    let (code, out, _) = fleetlet(&["cache", "verify", "--state-dir", &state]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{out}"
    );
    assert!(!victim.exists());
}

#[test]
fn a_release_whose_image_cannot_be_pulled_is_held() {
    let registry = TestRegistry::start().unwrap();
    let repo = TestRepo::new().unwrap();
    let port = free_port();
    let good = format!("{}/fleet/probe:v1", registry.host());
    push(&probe_http(), &good);
    let app = |image: &str| {
        http_app("shop", "web", port, "x", "").replace("components/probe.wasm", image)
    };
    let c1 = repo
        .commit_files(
            &[
                ("sites/s.yaml", site_yaml("store-1", "wasm").as_bytes()),
                ("apps/a.yaml", app(&good).as_bytes()),
            ],
            "good",
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), "200ms", "");
    let agent = Agent::start(&config);
    agent.wait_status(T, "good release", |s| {
        s["appliedCommit"].as_str() == Some(c1.as_str())
    });
    // A tag that does not exist: refused (not found), the old version serves.
    let missing = format!("{}/fleet/probe:nope", registry.host());
    let bad = repo
        .commit_files(&[("apps/a.yaml", app(&missing).as_bytes())], "missing tag")
        .unwrap();
    let s = agent.wait_status(T, "refused", |s| {
        s["lastError"]["commit"].as_str() == Some(bad.as_str())
    });
    assert_eq!(s["lastError"]["stage"], "store", "{s:#}");
    assert!(
        s["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("probe:nope"),
        "{s:#}"
    );
    wait_body(port, "/", "hello", Duration::from_secs(2)).unwrap();
    assert!(agent.terminate().success());
}

/// Incompressible bytes (so gzip keeps layers big and pulls take time).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn pulls_killed_at_random_moments_leave_no_corrupt_blob_and_resume() {
    let registry = TestRegistry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let layers: Vec<Vec<u8>> = (0..4).map(|i| noise(i, 12 << 20)).collect();
    let files: Vec<Vec<(&str, &[u8])>> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| vec![(["a", "b", "c", "d"][i], l.as_slice())])
        .collect();
    let file_refs: Vec<&[(&str, &[u8])]> = files.iter().map(|f| f.as_slice()).collect();
    crate::testkit::registry::make_umoci_image(&layout, "big", &file_refs).unwrap();
    let image = format!("{}/fleet/big:1", registry.host());
    crate::testkit::registry::push_image_with_skopeo(&layout, "big", &image, None).unwrap();

    let state = tmp.path().join("state");
    let state_s = state.to_str().unwrap();
    let bin = crate::testkit::agent::fleetlet_bin();
    let mut seed = 7u64;
    let mut mid_write = 0;
    for round in 0..50 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis((seed >> 33) % 120);
        let tmp_dir = state.join("oci/.tmp");
        let temps = |dir: &Path| -> Vec<std::ffi::OsString> {
            std::fs::read_dir(dir)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        };
        let before = temps(&tmp_dir);
        let mut child = std::process::Command::new(bin)
            .args(["pull", &image, "--state-dir", state_s, "-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The kill lands a random moment after a download began, not after the process
        // started: on a busy machine starting it can take longer than any fixed delay.
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none()
            && temps(&tmp_dir).iter().all(|t| before.contains(t))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        if std::fs::read_dir(&tmp_dir).is_ok_and(|mut d| d.next().is_some()) {
            mid_write += 1;
        }
        if state.join("oci").exists() {
            let (code, out, err) = fleetlet(&["cache", "verify", "--state-dir", state_s]);
            assert_eq!(code, 0, "round {round}: {out}{err}");
            // Drop what landed, so the next round's kill again meets a download in progress.
            if round % 5 != 4 {
                for e in std::fs::read_dir(state.join("oci/blobs/sha256"))
                    .unwrap()
                    .flatten()
                {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        }
    }
    let (code, out, err) = fleetlet(&["pull", &image, "--state-dir", state_s]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = fleetlet(&["cache", "verify", "--state-dir", state_s]);
    assert_eq!(code, 0, "{out}");
    assert!(
        mid_write > 5,
        "only {mid_write} of 50 kills landed mid-download: the test lost its point"
    );
    let (code, ls, _) = fleetlet(&["cache", "ls", "--state-dir", state_s, "-o", "json"]);
    assert_eq!(code, 0);
    let ls: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert!(
        ls["blobs"].as_array().unwrap().len() >= 6,
        "manifest, config, 4 layers: {ls:#}"
    );
}

/// A small tmpfs, unmounted on drop; `None` where mounting is not allowed.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_pull_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "10m") else {
        eprintln!("NOTICE: skipping: cannot mount a tmpfs here (needs root)");
        return;
    };
    let registry = TestRegistry::start().unwrap();
    let layout = tmp.path().join("layout");
    let (a, b) = (noise(11, 6 << 20), noise(12, 6 << 20));
    crate::testkit::registry::make_umoci_image(
        &layout,
        "fat",
        &[&[("a", a.as_slice())], &[("b", b.as_slice())]],
    )
    .unwrap();
    let image = format!("{}/fleet/fat:1", registry.host());
    crate::testkit::registry::push_image_with_skopeo(&layout, "fat", &image, None).unwrap();

    let state = disk.0.join("state");
    let state_s = state.to_str().unwrap();
    let (code, out, err) = fleetlet(&["pull", &image, "--state-dir", state_s]);
    assert_eq!(code, 1, "12 MiB cannot fit in 10 MiB: {out}{err}");
    assert!(
        err.contains("fleet/fat:1") && err.contains("No space left"),
        "{err}"
    );
    // Nothing partial: every visible blob is whole, the temp area is cleaned, nothing is tagged.
    let (code, out, _) = fleetlet(&["cache", "verify", "--state-dir", state_s]);
    assert_eq!(code, 0, "{out}");
    assert!(
        std::fs::read_dir(state.join("oci/.tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    let (_, ls, _) = fleetlet(&["cache", "ls", "--state-dir", state_s, "-o", "json"]);
    let ls: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert!(ls["refs"].as_array().unwrap().is_empty(), "{ls:#}");
}

#[test]
fn components_from_a_local_layout_need_no_registry_but_the_sites_permission() {
    let tmp = tempfile::tempdir().unwrap();
    let usb = tmp.path().join("usb");
    let layout = usb.join("layout");
    let pinned = push(&probe_http(), &format!("oci:{}:probe", layout.display()));
    assert!(
        pinned.starts_with(&format!("oci:{}:probe@sha256:", layout.display())),
        "{pinned}"
    );

    let repo = TestRepo::new().unwrap();
    let port = free_port();
    let app = http_app("shop", "web", port, "from usb", "").replace(
        "components/probe.wasm",
        &format!("oci:{}:probe", layout.display()),
    );
    let c1 = repo
        .commit_files(
            &[
                ("sites/s.yaml", site_yaml("store-1", "wasm").as_bytes()),
                ("apps/a.yaml", app.as_bytes()),
            ],
            "layout component",
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), "200ms", "");

    // Without the site's permission the release is held, saying what to configure.
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "refused", |s| {
        s["lastError"]["commit"].as_str() == Some(c1.as_str())
    });
    assert!(
        s["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("registries.localLayouts"),
        "{s:#}"
    );
    assert!(agent.terminate().success());

    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "registries:\n  localLayouts: [{}]\n",
        usb.display()
    ));
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "applied from the layout", |s| {
        s["appliedCommit"].as_str() == Some(c1.as_str())
    });
    wait_body(port, "/", "from usb", T).unwrap();
    assert!(
        s["workloads"][0]["artifact"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{s:#}"
    );
    assert!(agent.terminate().success());
}

/// The uplink goes down after a pull: a new release of the same image (only the workload's env
/// changes) still resolves the tag, from what the site's store last pulled for it, and applies.
#[test]
fn a_new_release_of_a_pulled_image_applies_with_the_registry_gone() {
    let registry = TestRegistry::start().unwrap();
    let image = format!("{}/fleet/probe:v1", registry.host());
    let pinned = push(&probe_http(), &image);
    let repo = TestRepo::new().unwrap();
    let port = free_port();
    let app = |greeting: &str| {
        http_app("shop", "web", port, greeting, "").replace("components/probe.wasm", &image)
    };
    let c1 = repo
        .commit_files(
            &[
                ("sites/s.yaml", site_yaml("store-1", "wasm").as_bytes()),
                ("apps/a.yaml", app("online").as_bytes()),
            ],
            "image component",
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), "200ms", "");
    let agent = Agent::start(&config);
    let s = agent.wait_status(T, "pulled online", |s| {
        s["appliedCommit"].as_str() == Some(c1.as_str())
    });
    let artifact = s["workloads"][0]["artifact"].clone();
    wait_body(port, "/", "hello from probe-http online", T).unwrap();

    // The registry goes away; the agent keeps running.
    drop(registry);
    let log_len = agent.logs().len();
    let c2 = repo
        .commit_files(&[("apps/a.yaml", app("offline").as_bytes())], "env only")
        .unwrap();
    let s = agent.wait_status(T, "applied offline", |s| {
        s["appliedCommit"].as_str() == Some(c2.as_str())
    });
    wait_body(port, "/", "hello from probe-http offline", T).unwrap();
    assert_eq!(
        s["workloads"][0]["artifact"], artifact,
        "the same component: {s:#}"
    );
    let logs = agent.logs();
    assert!(
        logs[log_len..].contains("answered from the site's store"),
        "{}",
        &logs[log_len..]
    );
    assert!(logs[log_len..].contains(&pinned), "{}", &logs[log_len..]);
    assert!(agent.terminate().success());
}

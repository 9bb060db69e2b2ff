//! The CLI as operators use it: `validate`, `render`, `--help` and exit codes, on the example
//! fleet repo and on broken copies of it.

use crate::testkit::agent::fleetlet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A copy of `fleet-repo-example` with its component built and in place, as the demo makes it.
fn example_repo() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleet-repo-example");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = src.join("components/hello-http/Cargo.toml");
        let out = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(&manifest)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tmp = tempfile::tempdir().unwrap();
        let dst = tmp.path().join("fleet");
        copy_without_target(&src, &dst);
        std::fs::copy(
            src.join("components/hello-http/target/wasm32-wasip2/release/hello_http.wasm"),
            dst.join("components/hello-http.wasm"),
        )
        .unwrap();
        (tmp, dst)
    })
    .1
}

/// Copies the tree at `src` except Cargo's `target/` directories, which another test process's
/// build of the same component may be writing to.
fn copy_without_target(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if entry.file_name() != "target" {
                copy_without_target(&from, &to);
            }
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

#[test]
fn the_example_repo_is_valid_and_renders_every_site() {
    let repo = example_repo().to_str().unwrap();
    let (code, out, err) = fleetlet(&["validate", "--repo", repo]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 3 site(s), 2 app(s)"), "{out}");

    let (code, out, err) = fleetlet(&[
        "render",
        "--repo",
        repo,
        "--site",
        "store-berlin-01",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hello = &d["workloads"]["greeter/hello"]["wasm"];
    assert_eq!(hello["env"]["GREETING"], "Hallo");
    assert_eq!(hello["env"]["SITE"], "store-berlin-01 in Berlin");
    assert!(
        hello["component"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(d["workloads"]["inventory/inventory"]["runtime"], "k3s");

    let (code, out, _) = fleetlet(&["render", "--repo", repo, "--site", "turbine-north-07"]);
    assert_eq!(code, 0);
    let d: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    let hello = &d["workloads"]["greeter/hello"]["wasm"];
    assert_eq!(hello["kind"]["port"].as_u64(), Some(8081));
    assert_eq!(hello["limits"]["memory"].as_str(), Some("16Mi"));
    assert!(d["workloads"].get("inventory/inventory").is_none());
}

#[test]
fn render_reads_a_git_revision() {
    let repo = crate::testkit::git::TestRepo::new().unwrap();
    let example = example_repo();
    let mut files = Vec::new();
    for entry in [
        "sites/store-austin-02.yaml",
        "sites/store-berlin-01.yaml",
        "sites/turbine-north-07.yaml",
        "apps/greeter.yaml",
        "apps/inventory.yaml",
        "k3s/inventory/deployment.yaml",
        "k3s/inventory/service.yaml",
        "components/hello-http.wasm",
    ] {
        files.push((entry, std::fs::read(example.join(entry)).unwrap()));
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    let commit = repo.commit_files(&refs, "example").unwrap();
    let (code, out, err) = fleetlet(&[
        "render",
        "--repo",
        &repo.file_url(),
        "--rev",
        "main",
        "--site",
        "store-austin-02",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["revision"], commit.as_str());
    assert_eq!(
        d["workloads"]["greeter/hello"]["wasm"]["env"]["GREETING"],
        "Hello"
    );
}

#[test]
fn validate_lists_every_error_with_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("broken");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(example_repo())
            .arg(&dst)
            .status()
            .unwrap()
            .success()
    );
    let greeter = std::fs::read_to_string(dst.join("apps/greeter.yaml")).unwrap();
    std::fs::write(
        dst.join("apps/greeter.yaml"),
        greeter
            .replace("port: 8080", "port: \"80a\"")
            .replace("maxConcurrentRequests", "maxConcurency"),
    )
    .unwrap();
    std::fs::write(dst.join("sites/extra.yaml"), "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: store-berlin-01}\nspec: {runtimes: [wasm]}\n").unwrap();
    let (code, out, _) = fleetlet(&["validate", "--repo", dst.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("apps/greeter.yaml:17: spec.workloads[0].http.port: expected integer 1-65535, got \"80a\""), "{out}");
    assert!(
        out.contains(
            "sites/store-berlin-01.yaml:5: metadata.name: duplicate Site \"store-berlin-01\""
        ),
        "{out}"
    );
    assert!(out.contains("error(s)"), "{out}");

    let (code, out, _) = fleetlet(&["validate", "--repo", dst.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 1);
    let diags: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        diags
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["file"].is_string() && d["line"].is_u64())
    );
}

#[test]
fn usage_errors_exit_2_and_help_works_everywhere() {
    assert_eq!(fleetlet(&["render"]).0, 2);
    assert_eq!(fleetlet(&["no-such-command"]).0, 2);
    for cmd in [
        &["--help"][..],
        &["agent", "--help"],
        &["validate", "--help"],
        &["render", "--help"],
        &["status", "--help"],
    ] {
        let (code, out, _) = fleetlet(cmd);
        assert_eq!(code, 0, "{cmd:?}");
        assert!(out.contains("Usage"), "{cmd:?}: {out}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("agent.yaml");
    std::fs::write(&cfg, "apiVersion: fleetlet.dev/v1alpha1\nkind: AgentConfig\nsite: s\nstateDir: x\nsource: {git: {url: r}}\nsurprise: 1\n").unwrap();
    let (code, _, err) = fleetlet(&["agent", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "a bad config is a usage error: {err}");
    assert!(err.contains("surprise"), "{err}");
}

#[test]
fn site_side_commands_read_the_installed_config_when_given_none() {
    // A technician types `fleetlet bundle import FILE`: the config is the one install.sh put
    // in /etc/fleetlet. This machine has none, so each names the path it looked for.
    if std::path::Path::new("/etc/fleetlet/agent.yaml").exists() {
        eprintln!("SKIPPED: this machine has an installed agent config");
        return;
    }
    for cmd in [
        &["agent"][..],
        &["bundle", "import", "release.bundle"],
        &["bundle", "export-status", "--out", "status.bundle"],
    ] {
        let out = Command::new(crate::testkit::agent::fleetlet_bin())
            .args(cmd)
            .env_remove("FLEETLET_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("/etc/fleetlet/agent.yaml"), "{cmd:?}: {err}");
    }
    // Another state dir: the installed config may be another site's, so it must be named.
    let (code, _, err) = fleetlet(&[
        "bundle",
        "export-status",
        "--out",
        "status.bundle",
        "--state-dir",
        "/nonexistent",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give --config with --state-dir"), "{err}");
}

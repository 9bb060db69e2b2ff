//! The local registry mirror as a registry client sees it: `skopeo` inspects and copies images
//! from it, `curl` takes byte ranges of blobs, tags resolve per upstream registry.

use fleetlet_core::Digest;
use fleetlet_engine::registry::Descriptor;
use fleetlet_store::OciStore;
use std::process::Command;
use std::sync::Arc;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A store holding a small image tagged as the pull step tags it.
fn filled_store(dir: &std::path::Path) -> (Arc<OciStore>, Digest, Digest) {
    let store = OciStore::open(&dir.join("store")).unwrap();
    let layer = store.put(b"0123456789abcdef").unwrap();
    let config = store.put(b"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}").unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":16}}]}}"#,
        store.size_of(&config).unwrap()
    );
    let m = store.put(manifest.as_bytes()).unwrap();
    let desc = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: m,
        size: manifest.len() as u64,
    };
    store
        .set_ref(&format!("registry.example.com/fleet/app:v1@{m}"), &desc)
        .unwrap();
    (Arc::new(store), m, layer)
}

#[test]
fn serves_the_store_to_registry_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, manifest, layer) = filled_store(tmp.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(fleetlet_mirror::serve(listener, store, async {
        let _ = stopped.await;
    }));
    let base = format!("http://{addr}");

    // Manifest by tag, as containerd asks a mirror (?ns=upstream), and by digest.
    let (ok, body) = run(Command::new("curl").args([
        "-sf",
        &format!("{base}/v2/fleet/app/manifests/v1?ns=registry.example.com"),
    ]));
    assert!(ok, "{body}");
    assert_eq!(Digest::of(body.as_bytes()), manifest);
    let (ok, _) =
        run(Command::new("curl")
            .args(["-sf", &format!("{base}/v2/fleet/app/manifests/{manifest}")]));
    assert!(ok);
    // Another upstream's tag of the same name is not this one.
    let (ok, _) = run(Command::new("curl").args([
        "-sf",
        &format!("{base}/v2/fleet/app/manifests/v1?ns=docker.io"),
    ]));
    assert!(!ok, "tag of another registry must be unknown");
    let (ok, _) =
        run(Command::new("curl").args(["-sf", &format!("{base}/v2/fleet/app/manifests/v2")]));
    assert!(!ok, "unknown tag");

    // Blobs, whole and by range.
    let (ok, body) =
        run(Command::new("curl").args(["-sf", &format!("{base}/v2/fleet/app/blobs/{layer}")]));
    assert!(ok && body == "0123456789abcdef", "{body}");
    let (ok, body) = run(Command::new("curl").args([
        "-sf",
        "-r",
        "4-7",
        &format!("{base}/v2/fleet/app/blobs/{layer}"),
    ]));
    assert!(ok && body == "4567", "{body}");
    let (ok, body) = run(Command::new("curl").args([
        "-sf",
        "-r",
        "-3",
        &format!("{base}/v2/fleet/app/blobs/{layer}"),
    ]));
    assert!(ok && body == "def", "{body}");

    // Read-only.
    let (_, code) = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        &format!("{base}/v2/fleet/app/manifests/v9"),
    ]));
    assert_eq!(code.trim(), "405");

    // An independent registry client reads the image.
    if Command::new("skopeo").arg("--version").output().is_ok() {
        let (ok, out) = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{addr}/fleet/app:v1"),
        ]));
        assert!(ok, "{out}");
        assert_eq!(Digest::of(out.as_bytes()), manifest);
        let dest = tmp.path().join("copy");
        let (ok, out) = run(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{addr}/fleet/app@{manifest}"),
            &format!("oci:{}:v1", dest.display()),
        ]));
        assert!(ok, "{out}");
    } else {
        eprintln!("NOTICE: skopeo missing; skipped the independent client check");
    }
    let _ = stop.send(());
}

//! The artifact store is a standard OCI image layout: images written into it through our API are
//! read by independent tools (`skopeo`, `umoci`).

use fleetlet_core::Digest;
use fleetlet_engine::registry::Descriptor;
use fleetlet_store::OciStore;
use std::path::Path;
use std::process::Command;

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A two-layer image made by umoci in its own layout; returns its manifest descriptor.
fn umoci_image(layout: &Path, work: &Path) -> Descriptor {
    let image = format!("{}:v1", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    for (i, file) in ["first.txt", "second.txt"].iter().enumerate() {
        let bundle = work.join(format!("bundle{i}"));
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle));
        std::fs::write(bundle.join("rootfs").join(file), format!("layer {i}\n")).unwrap();
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle));
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    Descriptor {
        media_type: m["mediaType"].as_str().unwrap().to_string(),
        digest: m["digest"].as_str().unwrap().parse().unwrap(),
        size: m["size"].as_u64().unwrap(),
    }
}

#[test]
fn skopeo_and_umoci_read_what_the_store_wrote() {
    if !have("umoci") || !have("skopeo") {
        eprintln!("NOTICE: skipping: umoci or skopeo missing (apt-get install umoci skopeo)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    let manifest = umoci_image(&theirs, tmp.path());

    // Copy every blob through our writer (hash-as-you-stream, verify, rename) and tag it.
    let ours = tmp.path().join("ours");
    let store = OciStore::open(&ours).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(theirs.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        store.put(&bytes).unwrap();
        copied += 1;
    }
    assert!(copied >= 4, "manifest, config and two layers at least");
    store.set_ref("v1", &manifest).unwrap();

    let inspected =
        run(Command::new("skopeo").args(["inspect", &format!("oci:{}:v1", ours.display())]));
    let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(v["Digest"].as_str().unwrap(), manifest.digest.to_string());
    assert!(v["Layers"].as_array().unwrap().len() >= 2, "{v:#}");

    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:v1", ours.display()),
    ]));
    assert_eq!(Digest::of(raw.as_bytes()), manifest.digest);

    // A full copy out of our layout reads every blob.
    let copy = tmp.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:v1", ours.display()),
        &format!("oci:{}:v1", copy.display()),
    ]));
    let stat =
        run(Command::new("umoci").args(["stat", "--image", &format!("{}:v1", ours.display())]));
    assert!(stat.contains("LAYER"), "{stat}");
}

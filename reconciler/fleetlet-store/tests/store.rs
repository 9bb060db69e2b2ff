//! The artifact store's guarantees, on a real file system.

use fleetlet_core::Digest;
use fleetlet_engine::registry::{BlobSink, Descriptor};
use fleetlet_store::{OciStore, StoreError, WriteSlot};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn writer<'s>(
    store: &'s OciStore,
    d: &Digest,
    size: Option<u64>,
) -> Box<fleetlet_store::BlobWriter<'s>> {
    match store.slot(d, size).unwrap() {
        WriteSlot::Writer(w) => w,
        WriteSlot::Present => panic!("{d} unexpectedly present"),
    }
}

#[test]
fn opens_a_standard_layout_and_cleans_interrupted_writes() {
    let dir = tempfile::tempdir().unwrap();
    OciStore::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    std::fs::write(dir.path().join(".tmp/half-written"), b"x").unwrap();
    OciStore::open(dir.path()).unwrap();
    assert!(
        std::fs::read_dir(dir.path().join(".tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn a_blob_is_visible_only_when_complete_and_correct() {
    let dir = tempfile::tempdir().unwrap();
    let store = OciStore::open(dir.path()).unwrap();
    let data = b"layer bytes".to_vec();
    let d = Digest::of(&data);

    // Truncated: nothing visible.
    let mut w = writer(&store, &d, Some(data.len() as u64));
    w.write_all(&data[..4]).unwrap();
    assert!(!store.contains(&d), "visible before commit");
    assert!(matches!(w.commit(), Err(StoreError::SizeMismatch { .. })));
    assert!(!store.contains(&d));

    // A size that lies (more bytes than declared) is refused while writing.
    let mut w = writer(&store, &d, Some(4));
    assert!(w.write_all(&data).is_err());
    drop(w);

    // Wrong content for the digest.
    let mut w = writer(&store, &d, None);
    w.write_all(b"other bytes").unwrap();
    assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
    assert!(!store.contains(&d));

    // A restart discards what was written (a retried download).
    let mut w = writer(&store, &d, Some(data.len() as u64));
    w.write_all(b"garbage").unwrap();
    w.restart().unwrap();
    w.write_all(&data).unwrap();
    assert_eq!(w.commit().unwrap(), d);
    assert_eq!(store.read(&d).unwrap().unwrap(), data);
    assert!(matches!(store.slot(&d, None).unwrap(), WriteSlot::Present));
    assert!(
        std::fs::read_dir(dir.path().join(".tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temp files left"
    );
}

#[test]
fn concurrent_writers_of_one_blob_share_one_download() {
    let dir = tempfile::tempdir().unwrap();
    let store = OciStore::open(dir.path()).unwrap();
    let data = vec![7u8; 1 << 20];
    let d = Digest::of(&data);
    let downloads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| match store.slot(&d, Some(data.len() as u64)).unwrap() {
                WriteSlot::Present => {}
                WriteSlot::Writer(mut w) => {
                    downloads.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    w.write_all(&data).unwrap();
                    w.commit().unwrap();
                }
            });
        }
    });
    assert_eq!(downloads.load(Ordering::SeqCst), 1);
    assert!(store.contains(&d));
}

#[test]
fn a_failed_writer_hands_the_download_to_a_waiting_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = OciStore::open(dir.path()).unwrap();
    let d = Digest::of(b"x");
    let first = writer(&store, &d, None);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| matches!(store.slot(&d, None).unwrap(), WriteSlot::Writer(_)));
        std::thread::sleep(Duration::from_millis(50));
        drop(first); // failed download: nothing committed
        assert!(waiter.join().unwrap(), "the waiter takes over");
    });
}

#[test]
fn refs_gc_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = OciStore::open(dir.path()).unwrap();
    let layer = store.put(b"layer-1").unwrap();
    let config = store.put(b"{}").unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":7}}]}}"#
    );
    let m = store.put(manifest.as_bytes()).unwrap();
    let orphan = store.put(b"nobody uses me").unwrap();
    let pinned = store.put(b"root of an applied release").unwrap();

    store
        .set_ref(
            "app:v1",
            &Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: m,
                size: manifest.len() as u64,
            },
        )
        .unwrap();
    assert_eq!(store.refs().unwrap()[0].name(), Some("app:v1"));

    // Young blobs are kept whatever the roots say.
    let r = store
        .gc(&BTreeSet::new(), Duration::from_secs(3600), false)
        .unwrap();
    assert!(r.removed.is_empty());
    // Dry run removes nothing but reports the orphans.
    let roots = BTreeSet::from([pinned]);
    let r = store.gc(&roots, Duration::ZERO, true).unwrap();
    assert_eq!(
        r.removed.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        vec![orphan]
    );
    assert!(store.contains(&orphan));
    let r = store.gc(&roots, Duration::ZERO, false).unwrap();
    assert_eq!(r.removed.len(), 1);
    for d in [layer, config, m, pinned] {
        assert!(store.contains(&d), "{d} is reachable");
    }
    assert!(!store.contains(&orphan));

    // Untagging makes the image collectable.
    assert!(store.remove_ref("app:v1").unwrap());
    let r = store.gc(&roots, Duration::ZERO, false).unwrap();
    assert_eq!(r.removed.len(), 3);

    // verify removes a corrupt blob so that the next pull repairs it.
    std::fs::write(store.path_of(&pinned), b"bit rot").unwrap();
    let v = store.verify().unwrap();
    assert_eq!(v.corrupt, vec![pinned]);
    assert!(!store.contains(&pinned));
    assert_eq!(store.put(b"root of an applied release").unwrap(), pinned);
}

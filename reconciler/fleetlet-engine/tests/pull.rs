//! The pull step with fakes behind both ports: platform selection, only missing blobs fetched,
//! digests checked, nothing tagged when a blob fails.

mod support;

use fleetlet_core::Digest;
use fleetlet_core::reference::{ArtifactRef, RegistryRef};
use fleetlet_engine::artifacts::{Platform, PullError, pull, wasm_layer};
use fleetlet_engine::ports::BlobStore;
use fleetlet_engine::registry::*;
use std::collections::BTreeMap;
use std::sync::Mutex;
use support::MemBlobs;

#[derive(Default)]
struct FakeRegistry {
    manifests: BTreeMap<String, (Vec<u8>, String)>,
    blobs: BTreeMap<Digest, Vec<u8>>,
    fetched: Mutex<Vec<Digest>>,
    /// Blobs served with other content than their digest says.
    lying: Vec<Digest>,
}

impl FakeRegistry {
    fn blob(&mut self, bytes: &[u8], media_type: &str) -> String {
        let d = Digest::of(bytes);
        self.blobs.insert(d, bytes.to_vec());
        format!(
            r#"{{"mediaType":"{media_type}","digest":"{d}","size":{}}}"#,
            bytes.len()
        )
    }
    fn manifest(&mut self, key: &str, bytes: String, media_type: &str) -> Digest {
        let d = Digest::of(bytes.as_bytes());
        self.manifests.insert(
            key.to_string(),
            (bytes.clone().into_bytes(), media_type.into()),
        );
        self.manifests
            .insert(d.to_string(), (bytes.into_bytes(), media_type.into()));
        d
    }
}

impl Registry for FakeRegistry {
    fn fetch_manifest(&self, r: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        let key = r.digest.map(|d| d.to_string()).or(r.tag.clone()).unwrap();
        let (bytes, media_type) =
            self.manifests
                .get(&key)
                .cloned()
                .ok_or_else(|| RegistryError::NotFound {
                    reference: r.to_string(),
                    message: "no such manifest".into(),
                })?;
        Ok(FetchedManifest {
            digest: Digest::of(&bytes),
            bytes,
            media_type,
        })
    }
    fn fetch_blob(
        &self,
        _: &RegistryRef,
        d: &Descriptor,
        sink: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        self.fetched.lock().unwrap().push(d.digest);
        let mut bytes = self.blobs[&d.digest].clone();
        if self.lying.contains(&d.digest) {
            bytes[0] ^= 1;
        }
        sink.write_all(&bytes).unwrap();
        Ok(bytes.len() as u64)
    }
    fn push_blob(&self, _: &RegistryRef, _: &Digest, _: &[u8]) -> Result<(), RegistryError> {
        unreachable!()
    }
    fn push_manifest(&self, _: &RegistryRef, _: &[u8], _: &str) -> Result<Digest, RegistryError> {
        unreachable!()
    }
}

fn reference(s: &str) -> RegistryRef {
    match s.parse::<ArtifactRef>().unwrap() {
        ArtifactRef::Registry(r) => r,
        ArtifactRef::Layout(_) => panic!(),
    }
}

fn image(reg: &mut FakeRegistry, layers: &[&[u8]], tag: &str) -> Digest {
    let config = reg.blob(
        b"{\"os\":\"linux\"}",
        "application/vnd.oci.image.config.v1+json",
    );
    let layers: Vec<String> = layers
        .iter()
        .map(|l| reg.blob(l, "application/vnd.oci.image.layer.v1.tar"))
        .collect();
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI}","config":{config},"layers":[{}]}}"#,
        layers.join(","),
        OCI = "application/vnd.oci.image.manifest.v1+json"
    );
    reg.manifest(tag, m, "application/vnd.oci.image.manifest.v1+json")
}

#[test]
fn pulls_the_platform_manifest_of_an_index_and_only_missing_blobs() {
    let mut reg = FakeRegistry::default();
    let amd = image(&mut reg, &[b"base", b"app-amd64"], "amd");
    let arm7 = image(&mut reg, &[b"base", b"app-armv7"], "arm");
    let idx = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{amd}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},
        {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{arm7}","size":{},"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
        reg.manifests[&amd.to_string()].0.len(),
        reg.manifests[&arm7.to_string()].0.len()
    );
    let idx_digest = reg.manifest("1.0", idx, "application/vnd.oci.image.index.v1+json");
    let store = MemBlobs::downloading();
    let r = reference("127.0.0.1:5000/app:1.0");

    let arm = Platform::parse("linux/arm/v7").unwrap();
    let pulled = pull(&reg, &store, &r, &arm).unwrap();
    assert_eq!(pulled.resolved.manifest.digest, arm7);
    assert_eq!(pulled.resolved.index.as_ref().unwrap().digest, idx_digest);
    assert_eq!(pulled.resolved.pinned.digest, Some(idx_digest));
    assert_eq!(pulled.fetched.len(), 3, "config and both layers");
    assert!(
        store
            .tags()
            .contains_key(&format!("127.0.0.1:5000/app:1.0@{idx_digest}"))
    );

    // The amd64 image shares the base layer and config: only its own layer is fetched.
    reg.fetched.lock().unwrap().clear();
    let pulled = pull(&reg, &store, &r, &Platform::parse("linux/amd64").unwrap()).unwrap();
    assert_eq!(pulled.resolved.manifest.digest, amd);
    assert_eq!(*reg.fetched.lock().unwrap(), vec![Digest::of(b"app-amd64")]);

    // No manifest for the platform: a clear error listing what there is.
    let e = pull(&reg, &store, &r, &Platform::parse("linux/riscv64").unwrap()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("no manifest for linux/riscv64") && msg.contains("linux/arm/v7"),
        "{msg}"
    );
}

#[test]
fn a_blob_with_wrong_content_is_refused_and_nothing_is_tagged() {
    let mut reg = FakeRegistry::default();
    image(&mut reg, &[b"good", b"evil"], "v1");
    reg.lying.push(Digest::of(b"evil"));
    let store = MemBlobs::downloading();
    let e = pull(&reg, &store, &reference("h.io/app:v1"), &Platform::host()).unwrap_err();
    assert!(matches!(e, PullError::Store { .. }), "{e}");
    assert!(!store.contains(&Digest::of(b"evil")));
    assert!(store.tags().is_empty());
}

#[test]
fn finds_the_component_of_a_wasm_artifact() {
    let mut reg = FakeRegistry::default();
    let config = reg.blob(b"{}", "application/vnd.wasm.config.v0+json");
    let layer = reg.blob(b"\0asm component", "application/wasm");
    reg.manifest("v1", format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{config},"layers":[{layer}]}}"#), "application/vnd.oci.image.manifest.v1+json");
    let store = MemBlobs::downloading();
    let pulled = pull(&reg, &store, &reference("h.io/comp:v1"), &Platform::host()).unwrap();
    assert_eq!(
        wasm_layer(&pulled.resolved.config, &pulled.resolved.layers)
            .unwrap()
            .digest,
        Digest::of(b"\0asm component")
    );
    assert_eq!(
        store.get(&Digest::of(b"\0asm component")).unwrap().unwrap(),
        b"\0asm component"
    );
}

//! The OCI registry adapter (the reconcile cycle's "fetch artifacts" step, between render and
//! verify) against a real registry — Debian's `docker-registry` fed by `umoci` and `skopeo` —
//! and against a registry of our own that misbehaves on purpose (truncation, size lies, hangs,
//! HTML, 401/404/429/5xx), plus mirrors.

use crate::testkit::components::{free_port, probe_http};
use crate::testkit::registry::{
    BEARER_TOKEN, Fault, FaultyRegistry, TestRegistry, VecSink, docker_config, make_umoci_image,
    push_image_with_skopeo, skopeo_inspect_raw,
};
use fleetlet_core::Digest;
use fleetlet_core::reference::{ArtifactRef, RegistryRef};
use fleetlet_engine::registry::{Descriptor, Registry, RegistryError};
use fleetlet_oci::{
    DOCKER_MANIFEST, HostConfig, OCI_INDEX, OCI_MANIFEST, OciRegistry, RegistryConfig,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, wasm_artifact,
};
use std::time::{Duration, Instant};

/// The adapter and the runtime it runs on (dropped after the adapter).
struct Adapter {
    registry: OciRegistry,
    _runtime: tokio::runtime::Runtime,
}

impl std::ops::Deref for Adapter {
    type Target = OciRegistry;
    fn deref(&self) -> &OciRegistry {
        &self.registry
    }
}

/// Short timeouts and backoff so fault tests are quick.
fn fast_config() -> RegistryConfig {
    RegistryConfig {
        timeout: Duration::from_secs(2),
        retries: 3,
        backoff: Duration::from_millis(10),
        ..Default::default()
    }
}

fn adapter(config: RegistryConfig) -> Adapter {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let registry = OciRegistry::new(config, runtime.handle().clone()).expect("adapter");
    Adapter {
        registry,
        _runtime: runtime,
    }
}

fn reference(s: &str) -> RegistryRef {
    match s.parse::<ArtifactRef>().expect("reference") {
        ArtifactRef::Registry(r) => r,
        ArtifactRef::Layout(_) => panic!("{s} is a layout reference"),
    }
}

fn descriptors(manifest: &[u8]) -> Vec<Descriptor> {
    let v: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
    let mut out = vec![serde_json::from_value(v["config"].clone()).expect("config descriptor")];
    for layer in v["layers"].as_array().expect("layers") {
        out.push(serde_json::from_value(layer.clone()).expect("layer descriptor"));
    }
    out
}

/// A three-layer image in an OCI layout, made with umoci.
fn three_layer_image(dir: &std::path::Path, tag: &str, salt: &str) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    make_umoci_image(
        &layout,
        tag,
        &[
            &[("etc/app.conf", format!("salt={salt}\n").as_bytes())],
            &[("usr/bin/app", &big)],
            &[("var/lib/app/state", b"ready\n"), ("etc/motd", b"hello\n")],
        ],
    )
    .expect("umoci image");
    layout
}

#[test]
fn pulls_manifest_and_blobs_of_a_skopeo_pushed_image() {
    let reg = TestRegistry::start().expect("registry");
    let layout = three_layer_image(reg.scratch(), "v1", "a");
    let name = format!("{}/fleet/app:v1", reg.host());
    push_image_with_skopeo(&layout, "v1", &name, None).expect("skopeo push");
    let raw = skopeo_inspect_raw(&name, None).expect("skopeo inspect");

    let a = adapter(fast_config());
    let m = a.fetch_manifest(&reference(&name)).expect("manifest");
    assert_eq!(m.bytes, raw, "exact bytes, never re-serialised");
    assert_eq!(m.digest, Digest::of(&raw));
    assert_eq!(m.media_type, OCI_MANIFEST);

    let descs = descriptors(&m.bytes);
    assert_eq!(descs.len(), 4, "config and three layers");
    for d in &descs {
        let mut sink = VecSink::default();
        let n = a.fetch_blob(&reference(&name), d, &mut sink).expect("blob");
        assert_eq!(n, d.size);
        assert_eq!(sink.data.len() as u64, d.size);
        assert_eq!(Digest::of(&sink.data), d.digest, "{}", d.media_type);
        assert_eq!(sink.restarts, 0);
    }

    // Pinned by digest (and by digest with a tag): same bytes.
    let pinned = reference(&name).pinned(m.digest);
    assert_eq!(a.fetch_manifest(&pinned).expect("pinned").bytes, raw);
    let only_digest = RegistryRef {
        tag: None,
        ..pinned
    };
    assert_eq!(
        a.fetch_manifest(&only_digest).expect("by digest").bytes,
        raw
    );
}

#[test]
fn docker_v2_manifests_and_indexes_keep_their_media_types() {
    let reg = TestRegistry::start().expect("registry");
    let layout = three_layer_image(reg.scratch(), "amd", "amd");
    make_umoci_image(&layout, "arm", &[&[("etc/arch", b"arm64\n")]]).expect("second image");
    let a = adapter(fast_config());

    // Docker schema 2, converted by skopeo.
    let docker = format!("{}/app:docker", reg.host());
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
        ])
        .arg(format!("oci:{}:amd", layout.display()))
        .arg(format!("docker://{docker}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = a
        .fetch_manifest(&reference(&docker))
        .expect("docker manifest");
    assert_eq!(m.media_type, DOCKER_MANIFEST);
    assert_eq!(m.bytes, skopeo_inspect_raw(&docker, None).expect("inspect"));

    // An OCI index over two platform images, built by hand and pushed with the adapter.
    let mut entries = Vec::new();
    for (tag, arch) in [("amd", "amd64"), ("arm", "arm64")] {
        let name = format!("{}/app:{tag}", reg.host());
        push_image_with_skopeo(&layout, tag, &name, None).expect("push");
        let raw = skopeo_inspect_raw(&name, None).expect("inspect");
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": Digest::of(&raw).to_string(),
            "size": raw.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    }))
    .expect("index JSON");
    let multi = format!("{}/app:multi", reg.host());
    let pushed = a
        .push_manifest(&reference(&multi), &index, OCI_INDEX)
        .expect("push index");
    assert_eq!(pushed, Digest::of(&index));

    let fetched = a.fetch_manifest(&reference(&multi)).expect("index");
    assert_eq!(fetched.media_type, OCI_INDEX);
    assert_eq!(fetched.bytes, index);
    assert_eq!(fetched.digest, pushed);
    assert_eq!(
        skopeo_inspect_raw(&multi, None).expect("skopeo reads the index"),
        index
    );
}

#[test]
fn basic_auth_is_denied_without_credentials_and_works_with_a_docker_config() {
    let reg = TestRegistry::start_with_htpasswd("edge", "s3cret").expect("registry");
    let layout = three_layer_image(reg.scratch(), "v1", "auth");
    let name = format!("{}/secure/app:v1", reg.host());
    push_image_with_skopeo(&layout, "v1", &name, Some("edge:s3cret")).expect("skopeo push");

    let anonymous = adapter(fast_config());
    let err = anonymous
        .fetch_manifest(&reference(&name))
        .expect_err("anonymous must fail");
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with(&name), "{text}");
    assert!(
        text.contains(&format!("no credentials for {}", reg.host())),
        "{text}"
    );

    let wrong =
        docker_config(&reg.scratch().join("."), &reg.host(), "edge", "wrong").expect("config");
    let with_wrong = adapter(RegistryConfig {
        docker_config: Some(wrong),
        ..fast_config()
    });
    let err = with_wrong
        .fetch_manifest(&reference(&name))
        .expect_err("wrong password must fail");
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");

    let good_dir = tempfile::tempdir().expect("tempdir");
    let good = docker_config(good_dir.path(), &reg.host(), "edge", "s3cret").expect("config");
    let authed = adapter(RegistryConfig {
        docker_config: Some(good),
        ..fast_config()
    });
    let m = authed
        .fetch_manifest(&reference(&name))
        .expect("with credentials");
    assert_eq!(
        m.bytes,
        skopeo_inspect_raw(&name, Some("edge:s3cret")).expect("inspect")
    );
    let layer = &descriptors(&m.bytes)[2];
    let mut sink = VecSink::default();
    authed
        .fetch_blob(&reference(&name), layer, &mut sink)
        .expect("blob with credentials");
    assert_eq!(Digest::of(&sink.data), layer.digest);

    // Pushing with credentials works too.
    let art = wasm_artifact(b"\0asm\x0d\x00\x01\x00").expect("artifact");
    let target = reference(&format!("{}/secure/tiny:v1", reg.host()));
    authed
        .push_blob(
            &target,
            &art.layer_descriptor.digest,
            b"\0asm\x0d\x00\x01\x00",
        )
        .expect("push layer");
    authed
        .push_blob(&target, &art.config_descriptor.digest, &art.config)
        .expect("push config");
    authed
        .push_manifest(&target, &art.manifest, art.manifest_media_type)
        .expect("push manifest");
}

#[test]
fn pushes_a_wasm_component_that_skopeo_reads_as_a_wasm_artifact() {
    let reg = TestRegistry::start().expect("registry");
    let component = std::fs::read(probe_http()).expect("probe-http component");
    let art = wasm_artifact(&component).expect("artifact");
    assert_eq!(
        art,
        wasm_artifact(&component).expect("again"),
        "deterministic"
    );

    let a = adapter(fast_config());
    let target = reference(&format!("{}/components/probe-http:1.0.0", reg.host()));
    a.push_blob(&target, &art.layer_descriptor.digest, &component)
        .expect("push layer");
    // Already there: HEAD finds it, nothing is uploaded again.
    a.push_blob(&target, &art.layer_descriptor.digest, &component)
        .expect("push layer again");
    a.push_blob(&target, &art.config_descriptor.digest, &art.config)
        .expect("push config");
    let digest = a
        .push_manifest(&target, &art.manifest, art.manifest_media_type)
        .expect("push manifest");
    assert_eq!(digest, art.manifest_digest);

    let raw = skopeo_inspect_raw(&target.to_string(), None).expect("skopeo inspect");
    assert_eq!(raw, art.manifest);
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(v["mediaType"], OCI_MANIFEST);
    assert_eq!(v["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
    assert_eq!(v["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
    let config: serde_json::Value = serde_json::from_slice(&art.config).expect("config");
    assert_eq!(config["os"], "wasip2");
    assert!(
        config["component"]["exports"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x
                .as_str()
                .is_some_and(|s| s.starts_with("wasi:http/incoming-handler")))),
        "{config}"
    );

    // And it comes back byte for byte, pinned by digest.
    let pinned = target.pinned(digest);
    let m = a.fetch_manifest(&pinned).expect("fetch");
    assert_eq!(m.bytes, art.manifest);
    let mut sink = VecSink::default();
    a.fetch_blob(&pinned, &art.layer_descriptor, &mut sink)
        .expect("layer");
    assert_eq!(sink.data, component);
    // A digest the bytes do not have is refused before anything is sent.
    let wrong = RegistryRef {
        tag: None,
        ..target.pinned(Digest::of(b"other"))
    };
    assert!(matches!(
        a.push_manifest(&wrong, &art.manifest, OCI_MANIFEST),
        Err(RegistryError::Invalid { .. })
    ));
}

#[test]
fn a_pinned_digest_that_the_bytes_do_not_have_is_invalid() {
    // A real registry answers 404 for a digest it does not hold...
    let reg = TestRegistry::start().expect("registry");
    let layout = three_layer_image(reg.scratch(), "v1", "pin");
    let name = format!("{}/app:v1", reg.host());
    push_image_with_skopeo(&layout, "v1", &name, None).expect("push");
    let a = adapter(fast_config());
    let wrong = reference(&name).pinned(Digest::of(b"not this manifest"));
    let err = a.fetch_manifest(&wrong).expect_err("unknown digest");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    // ...and a registry that serves other bytes under that digest is caught by the hash.
    let liar = FaultyRegistry::start(Fault::None).expect("faulty");
    let wrong = liar.reference().pinned(Digest::of(b"not this manifest"));
    let err = a.fetch_manifest(&wrong).expect_err("lying registry");
    assert!(matches!(err, RegistryError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("hash to"), "{err}");
    assert_eq!(liar.manifest_hits(), 1, "no retry on an invalid answer");
}

#[test]
fn faulty_registry_serves_a_correct_pull_when_it_behaves() {
    let f = FaultyRegistry::start(Fault::None).expect("faulty");
    let a = adapter(fast_config());
    let m = a.fetch_manifest(&f.reference()).expect("manifest");
    assert_eq!(m.bytes, f.manifest_bytes());
    let mut sink = VecSink::default();
    assert_eq!(
        a.fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
            .expect("blob"),
        65536
    );
    assert_eq!(sink.data, f.blob());
}

#[test]
fn a_blob_cut_off_mid_body_is_retried_from_the_start() {
    let f = FaultyRegistry::start(Fault::TruncateBlob(1)).expect("faulty");
    let a = adapter(fast_config());
    let mut sink = VecSink::default();
    a.fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
        .expect("succeeds on the retry");
    assert_eq!(sink.data, f.blob());
    assert_eq!(sink.restarts, 1, "the half-written sink was restarted");
    assert_eq!(f.blob_hits(), 2);

    // Always truncated: unavailable after 1 + retries attempts, each restarting the sink.
    let f = FaultyRegistry::start(Fault::TruncateBlob(usize::MAX)).expect("faulty");
    let a = adapter(RegistryConfig {
        retries: 2,
        ..fast_config()
    });
    let mut sink = VecSink::default();
    let err = a
        .fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
        .expect_err("always truncated");
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&f.blob_descriptor().digest.to_string()),
        "{err}"
    );
    assert_eq!(f.blob_hits(), 3);
    assert_eq!(sink.restarts, 2);
}

#[test]
fn blobs_whose_size_lies_are_invalid_and_not_retried() {
    for fault in [
        Fault::OverlongBlob,
        Fault::ExtraBytesUndeclared,
        Fault::ShortBlobUndeclared,
    ] {
        let f = FaultyRegistry::start(fault).expect("faulty");
        let a = adapter(fast_config());
        let mut sink = VecSink::default();
        let err = a
            .fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
            .expect_err("size lie");
        assert!(
            matches!(err, RegistryError::Invalid { .. }),
            "{fault:?}: {err}"
        );
        assert!(
            sink.data.len() <= 65536,
            "{fault:?}: never more than the descriptor's size is written"
        );
        assert_eq!(f.blob_hits(), 1, "{fault:?}");
    }
}

#[test]
fn a_registry_that_hangs_mid_body_fails_within_the_timeout() {
    let f = FaultyRegistry::start(Fault::HangBlob).expect("faulty");
    let a = adapter(RegistryConfig {
        timeout: Duration::from_secs(1),
        retries: 0,
        ..fast_config()
    });
    let mut sink = VecSink::default();
    let start = Instant::now();
    let err = a
        .fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
        .expect_err("hang");
    let took = start.elapsed();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // With retries, each attempt is bounded by the timeout too.
    let a = adapter(RegistryConfig {
        timeout: Duration::from_secs(1),
        retries: 1,
        ..fast_config()
    });
    let start = Instant::now();
    let err = a
        .fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
        .expect_err("hang");
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(f.blob_hits(), 3);
}

#[test]
fn html_and_oversized_manifests_are_invalid() {
    for fault in [
        Fault::HtmlManifest,
        Fault::HugeManifestDeclared,
        Fault::HugeManifestUndeclared,
    ] {
        let f = FaultyRegistry::start(fault).expect("faulty");
        let a = adapter(fast_config());
        let start = Instant::now();
        let err = a.fetch_manifest(&f.reference()).expect_err("invalid");
        assert!(
            matches!(err, RegistryError::Invalid { .. }),
            "{fault:?}: {err}"
        );
        assert!(
            err.to_string().starts_with(&f.reference().to_string()),
            "{err}"
        );
        assert_eq!(f.manifest_hits(), 1, "{fault:?}: not retried");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{fault:?}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let f = FaultyRegistry::start(Fault::TooManyRequests(1)).expect("faulty");
    let a = adapter(fast_config());
    let start = Instant::now();
    let m = a.fetch_manifest(&f.reference()).expect("after Retry-After");
    assert_eq!(m.bytes, f.manifest_bytes());
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "honours Retry-After: {:?}",
        start.elapsed()
    );
    assert_eq!(f.manifest_hits(), 2);

    // Capped: a registry asking for 1 s gets at most max_retry_after.
    let f = FaultyRegistry::start(Fault::TooManyRequests(1)).expect("faulty");
    let a = adapter(RegistryConfig {
        max_retry_after: Duration::from_millis(100),
        ..fast_config()
    });
    let start = Instant::now();
    a.fetch_manifest(&f.reference()).expect("after capped wait");
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let f = FaultyRegistry::start(Fault::Unavailable(2)).expect("faulty");
    let a = adapter(fast_config());
    let m = a.fetch_manifest(&f.reference()).expect("third time lucky");
    assert_eq!(m.bytes, f.manifest_bytes());
    assert_eq!(f.manifest_hits(), 3);
    let mut sink = VecSink::default();
    a.fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
        .expect("blob");
    assert_eq!(f.blob_hits(), 1, "the faults were used up");

    let f = FaultyRegistry::start(Fault::Unavailable(usize::MAX)).expect("faulty");
    let a = adapter(RegistryConfig {
        retries: 1,
        ..fast_config()
    });
    let err = a.fetch_manifest(&f.reference()).expect_err("always 503");
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(f.manifest_hits(), 2);
}

#[test]
fn unauthorized_and_not_found_are_not_retried() {
    let f = FaultyRegistry::start(Fault::Unauthorized).expect("faulty");
    let a = adapter(fast_config());
    let err = a.fetch_manifest(&f.reference()).expect_err("401");
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: access denied: 401 Unauthorized (no credentials for {})",
            f.reference(),
            f.host()
        )
    );
    assert_eq!(f.manifest_hits(), 1);

    let f = FaultyRegistry::start(Fault::NotFound).expect("faulty");
    let err = a.fetch_manifest(&f.reference()).expect_err("404");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("NAME_UNKNOWN"), "{err}");
    let mut sink = VecSink::default();
    let err = a
        .fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
        .expect_err("404");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert_eq!(f.manifest_hits() + f.blob_hits(), 2);
}

fn with_mirrors(upstream: &str, mirrors: Vec<String>) -> RegistryConfig {
    let mut config = fast_config();
    config.hosts.insert(
        upstream.to_string(),
        HostConfig {
            mirrors,
            ..Default::default()
        },
    );
    config
}

#[test]
fn mirrors_that_fail_fall_through_to_upstream() {
    let upstream = FaultyRegistry::start(Fault::None).expect("upstream");
    let missing = FaultyRegistry::start(Fault::NotFound).expect("404 mirror");
    let down = format!("127.0.0.1:{}", free_port());
    let a = adapter(with_mirrors(&upstream.host(), vec![down, missing.host()]));

    let m = a
        .fetch_manifest(&upstream.reference())
        .expect("from upstream");
    assert_eq!(m.bytes, upstream.manifest_bytes());
    let mut sink = VecSink::default();
    a.fetch_blob(
        &upstream.reference(),
        &upstream.blob_descriptor(),
        &mut sink,
    )
    .expect("blob");
    assert_eq!(sink.data, upstream.blob());
    assert_eq!(
        (missing.manifest_hits(), missing.blob_hits()),
        (1, 1),
        "the 404 mirror was asked once each"
    );
    assert_eq!((upstream.manifest_hits(), upstream.blob_hits()), (1, 1));
}

#[test]
fn a_working_mirror_is_used_first() {
    let upstream = FaultyRegistry::start(Fault::None).expect("upstream");
    let mirror = FaultyRegistry::start(Fault::None).expect("mirror");
    let a = adapter(with_mirrors(
        &upstream.host(),
        vec![format!("http://{}", mirror.host())],
    ));

    let m = a
        .fetch_manifest(&upstream.reference())
        .expect("from mirror");
    assert_eq!(m.bytes, mirror.manifest_bytes());
    let mut sink = VecSink::default();
    a.fetch_blob(
        &upstream.reference(),
        &upstream.blob_descriptor(),
        &mut sink,
    )
    .expect("blob");
    assert_eq!((mirror.manifest_hits(), mirror.blob_hits()), (1, 1));
    assert_eq!(
        upstream.manifest_hits() + upstream.blob_hits(),
        0,
        "upstream untouched"
    );
    // The mirror is told which upstream is meant (containerd's ?ns=).
    let ns = format!("ns={}", upstream.host().replace(':', "%3A"));
    assert!(
        mirror.seen().iter().any(|t| t.ends_with(&ns)),
        "{:?}",
        mirror.seen()
    );
}

#[test]
fn an_unreachable_registry_is_unavailable_naming_the_reference() {
    let host = format!("127.0.0.1:{}", free_port());
    let a = adapter(RegistryConfig {
        retries: 1,
        ..fast_config()
    });
    let r = reference(&format!("{host}/app:v1"));
    let err = a.fetch_manifest(&r).expect_err("nothing listens");
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{host}/app:v1: registry unavailable:")),
        "{text}"
    );
    assert!(text.contains("onnect"), "names the cause: {text}");
}

#[test]
fn bearer_token_flow_with_docker_config_credentials() {
    let f = FaultyRegistry::start(Fault::Bearer).expect("token registry");

    let anonymous = adapter(fast_config());
    let err = anonymous
        .fetch_manifest(&f.reference())
        .expect_err("no credentials");
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("anonymous access"), "{err}");

    let before = f.seen().len();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = docker_config(dir.path(), &f.host(), "edge", "s3cret").expect("config");
    let a = adapter(RegistryConfig {
        docker_config: Some(config),
        ..fast_config()
    });
    let m = a.fetch_manifest(&f.reference()).expect("with a token");
    assert_eq!(m.bytes, f.manifest_bytes());
    let mut sink = VecSink::default();
    a.fetch_blob(&f.reference(), &f.blob_descriptor(), &mut sink)
        .expect("blob with the cached token");
    assert_eq!(sink.data, f.blob());
    let seen = f.seen().split_off(before);
    let token_requests: Vec<_> = seen.iter().filter(|t| t.starts_with("/token")).collect();
    assert_eq!(
        token_requests.len(),
        1,
        "the token is cached per repository: {seen:?}"
    );
    assert!(
        token_requests[0].contains("scope=repository%3Aapp%3Apull"),
        "{seen:?}"
    );
    assert!(token_requests[0].contains("service=faulty"), "{seen:?}");
    assert!(!BEARER_TOKEN.is_empty());
}

#[test]
fn tls_registry_with_a_custom_ca() {
    let reg = TestRegistry::start_tls().expect("TLS registry");
    let ca = reg.ca.clone().expect("CA");
    let layout = three_layer_image(reg.scratch(), "v1", "tls");
    let name = format!("{}/app:v1", reg.host());
    push_image_with_skopeo(&layout, "v1", &name, None).expect("skopeo push (no verify)");

    // Trusting the CA for that host: HTTPS even on loopback, and the certificate checks out.
    let mut config = fast_config();
    config.hosts.insert(
        reg.host(),
        HostConfig {
            ca_file: Some(ca),
            ..Default::default()
        },
    );
    let a = adapter(config);
    let m = a.fetch_manifest(&reference(&name)).expect("over TLS");
    assert_eq!(m.bytes, skopeo_inspect_raw(&name, None).expect("inspect"));

    // Without the CA but forced to HTTPS through a mirror entry: the certificate is refused.
    let mut config = fast_config();
    config.retries = 0;
    config.hosts.insert(
        "upstream.invalid".into(),
        HostConfig {
            mirrors: vec![format!("https://{}", reg.host())],
            ..Default::default()
        },
    );
    let a = adapter(config);
    let err = a
        .fetch_manifest(&reference("upstream.invalid/app:v1"))
        .expect_err("untrusted certificate");
    assert!(
        err.to_string().contains(&format!("mirror {}", reg.host())),
        "{err}"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

/// A registry with the OCI 1.1 referrers API (which Debian's docker-registry lacks): answers
/// `GET /v2/app/referrers/<digest>` with `index` for `known`, 404 otherwise; counts requests.
fn referrers_server(
    known: Digest,
    index: Vec<u8>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.clone());
            let mut out = stream;
            let (status, body): (&str, &[u8]) = if path == format!("/v2/app/referrers/{known}") {
                ("200 OK", &index)
            } else {
                ("404 Not Found", b"not found")
            };
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(body);
        }
    });
    (host, seen)
}

#[test]
fn referrers_come_from_the_api_where_the_registry_has_it() {
    let subject = Digest::of(b"an artifact");
    let bundle = Digest::of(b"a bundle manifest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": bundle.to_string(), "size": 1,
                       "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}],
    }))
    .unwrap();
    let (host, seen) = referrers_server(subject, index.clone());
    let a = adapter(fast_config());
    let at = |d: Digest| reference(&format!("{host}/app@{d}"));
    let found = a.referrers(&at(subject)).unwrap().expect("referrers");
    assert_eq!(found.bytes, index);
    assert_eq!(found.digest, Digest::of(&index));
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [format!("/v2/app/referrers/{subject}")],
        "the API answered: no fallback tag is asked for"
    );
    // Unknown to the API (404): the tag-schema fallback is tried, and finds nothing.
    seen.lock().unwrap().clear();
    let other = Digest::of(b"another artifact");
    assert_eq!(a.referrers(&at(other)).unwrap(), None);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            format!("/v2/app/referrers/{other}"),
            format!("/v2/app/manifests/sha256-{}", other.hex())
        ]
    );
}

#[test]
fn referrers_fall_back_to_the_tag_schema_on_a_registry_without_the_api() {
    let registry = TestRegistry::start().unwrap();
    let a = adapter(fast_config());
    let subject = Digest::of(b"an artifact");
    let target = reference(&format!("{}/app@{subject}", registry.host()));
    assert_eq!(a.referrers(&target).unwrap(), None, "none yet");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
    }))
    .unwrap();
    let fallback = reference(&format!("{}/app:sha256-{}", registry.host(), subject.hex()));
    a.push_manifest(&fallback, &index, OCI_INDEX).unwrap();
    let found = a.referrers(&target).unwrap().expect("the fallback index");
    assert_eq!(found.bytes, index);
}

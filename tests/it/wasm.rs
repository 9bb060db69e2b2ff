//! Integration tests of the embedded Wasm runtime (`fleetlet-wasm`) with real guest components
//! (`tests/components/`) over real HTTP on 127.0.0.1: serving, sandboxing, limits, replacement
//! without lost requests, the compiled-component cache and command supervision.

use crate::testkit::components::{
    Responder, free_port, http_get, http_get_timeout, probe_cmd, probe_http, probe_http_v2,
};
use fleetlet_core::model::{Capabilities, DirCapability, Runtime};
use fleetlet_core::render::{
    ComponentRef, DesiredWorkload, ResolvedLimits, WasmKind, WasmSpec, canonical_json,
};
use fleetlet_core::units::{ByteSize, DurationSpec, Port};
use fleetlet_core::{Digest, WorkloadHealth};
use fleetlet_engine::ports::{RuntimeError, WorkloadRuntime};
use fleetlet_wasm::{PoolingOptions, WasmHost, WasmHostConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A host on its own runtime and temp dirs.
struct Fixture {
    host: WasmHost,
    tmp: tempfile::TempDir,
    // Dropped last: servers and supervisors run on it.
    _rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn host_over(
    rt: &tokio::runtime::Runtime,
    cache: &Path,
    volumes: &Path,
    pooling: bool,
) -> WasmHost {
    let mut config = WasmHostConfig::new(
        cache.to_path_buf(),
        volumes.to_path_buf(),
        "127.0.0.1".parse().expect("ip"),
        rt.handle().clone(),
    );
    if pooling {
        config.pooling = Some(PoolingOptions {
            max_instances: 32,
            max_memory_per_instance: 64 << 20,
        });
    }
    WasmHost::new(config).expect("wasm host")
}

fn fixture() -> Fixture {
    fixture_with(false)
}

fn fixture_with(pooling: bool) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let host = host_over(
        &rt,
        &tmp.path().join("cache"),
        &tmp.path().join("volumes"),
        pooling,
    );
    Fixture { host, tmp, _rt: rt }
}

impl Fixture {
    fn volume(&self, app: &str, name: &str, guest: &str) -> PathBuf {
        self.tmp.path().join("volumes").join(app).join(name).join(
            guest
                .trim_start_matches('/')
                .replace('%', "%25")
                .replace('/', "%2F"),
        )
    }

    /// prepare + activate, panicking on error.
    fn run(&self, w: &Workload) -> DesiredWorkload {
        let d = w.desired();
        let prepared = self
            .host
            .prepare(&d, &w.bytes)
            .unwrap_or_else(|e| panic!("prepare {}: {e}", d.id()));
        self.host
            .activate(prepared)
            .unwrap_or_else(|e| panic!("activate {}: {e}", d.id()));
        d
    }
}

/// A test workload, turned into the `DesiredWorkload` that render would produce.
#[derive(Clone)]
struct Workload {
    app: String,
    name: String,
    bytes: Vec<u8>,
    kind: WasmKind,
    env: BTreeMap<String, String>,
    memory: u64,
    cpu_ms: u64,
    concurrency: u32,
    caps: Capabilities,
}

impl Workload {
    fn http(name: &str, component: &Path, port: u16) -> Self {
        Self::new(name, component, WasmKind::Http { port: Port(port) })
    }

    fn command(name: &str, args: &[&str]) -> Self {
        Self::new(
            name,
            &probe_cmd(),
            WasmKind::Command {
                args: args.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    fn new(name: &str, component: &Path, kind: WasmKind) -> Self {
        Workload {
            app: "test".into(),
            name: name.into(),
            bytes: std::fs::read(component)
                .unwrap_or_else(|e| panic!("reading {}: {e}", component.display())),
            kind,
            env: BTreeMap::new(),
            memory: 64 << 20,
            cpu_ms: 10_000,
            concurrency: 64,
            caps: Capabilities::default(),
        }
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    fn dir(mut self, path: &str, read_only: bool) -> Self {
        self.caps.dirs.push(DirCapability {
            path: path.into(),
            read_only,
        });
        self
    }

    fn outbound(mut self, host: &str) -> Self {
        self.caps.outbound_hosts.push(host.into());
        self
    }

    fn desired(&self) -> DesiredWorkload {
        let mut d = DesiredWorkload {
            app: self.app.clone(),
            name: self.name.clone(),
            runtime: Runtime::Wasm,
            wasm: Some(WasmSpec {
                component: ComponentRef {
                    path: Some("components/probe.wasm".into()),
                    image: None,
                    pinned: None,
                    digest: Some(Digest::of(&self.bytes)),
                    size: Some(self.bytes.len() as u64),
                },
                kind: self.kind.clone(),
                env: self.env.clone(),
                limits: ResolvedLimits {
                    memory: ByteSize(self.memory),
                    cpu_time_per_request: DurationSpec(self.cpu_ms),
                    max_concurrent_requests: self.concurrency,
                },
                capabilities: self.caps.clone(),
            }),
            k3s: None,
            hash: Digest::from_bytes([0; 32]),
        };
        d.hash = Digest::of(&canonical_json(&d));
        d
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn get(port: u16, path: &str) -> (u16, String) {
    http_get(local(port), path).unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

/// Polls `f` until it returns true or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn serves_http_with_only_declared_env() {
    // Pooling allocator on here, so both allocation strategies are exercised.
    let fx = fixture_with(true);
    let port = free_port();
    let w = Workload::http("web", &probe_http(), port)
        .env("GREETING", "fleet")
        .env("ZONE", "edge-1");
    let d = fx.run(&w);

    assert_eq!(
        get(port, "/"),
        (200, "hello from probe-http fleet".to_string())
    );
    let (status, env) = get(port, "/env");
    assert_eq!(status, 200);
    let mut lines: Vec<&str> = env.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["GREETING=fleet", "ZONE=edge-1"],
        "host env must not leak: {env}"
    );

    let observed = fx.host.observe();
    assert_eq!(observed.len(), 1);
    assert_eq!(observed["test/web"].hash, d.hash);
    assert_eq!(observed["test/web"].health, WorkloadHealth::Running);
}

#[test]
fn spinning_request_is_cut_off_while_others_keep_serving() {
    let fx = fixture();
    let (pa, pb) = (free_port(), free_port());
    let mut a = Workload::http("a", &probe_http(), pa);
    a.cpu_ms = 200;
    fx.run(&a);
    fx.run(&Workload::http("b", &probe_http(), pb));

    // Two spinning requests at once: with 2 worker threads, only yielding keeps the rest alive.
    let spins: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || (Instant::now(), http_get(local(pa), "/spin"))))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..5 {
        assert_eq!(get(pa, "/").0, 200);
        assert_eq!(get(pb, "/").0, 200);
    }
    for s in spins {
        let (started, result) = s.join().expect("spin thread");
        let (status, body) = result.expect("spin request answered");
        assert_eq!(status, 503, "spin got {status} {body}");
        assert!(body.contains("cpu time per request exceeded"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cut off too late: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(get(pa, "/").0, 200);
}

#[test]
fn excess_concurrent_requests_get_503() {
    let fx = fixture();
    let port = free_port();
    let mut w = Workload::http("narrow", &probe_http(), port);
    // A budget long enough that the spin is surely still running when the others knock, however
    // slowly this machine admits it.
    w.cpu_ms = 3000;
    w.concurrency = 1;
    fx.run(&w);
    // Knock rarely: a knock that comes while the spin is still being admitted takes the one
    // slot for a moment, and the spin is then the one turned away (tried again).
    let deadline = Instant::now() + Duration::from_secs(30);
    let spin = loop {
        let spin = std::thread::spawn(move || http_get(local(port), "/spin"));
        let mut turned_away = false;
        while !spin.is_finished() {
            std::thread::sleep(Duration::from_millis(300));
            if !spin.is_finished() && get(port, "/").0 == 503 {
                turned_away = true;
                break;
            }
        }
        if turned_away {
            break spin;
        }
        assert!(Instant::now() < deadline, "no request was ever turned away");
    };
    assert!(spin.join().expect("spin thread").expect("spin answered").0 >= 500);
    assert!(eventually(Duration::from_secs(2), || get(port, "/").0 == 200));
}

#[test]
fn allocating_past_memory_limit_traps_and_host_keeps_serving() {
    let fx = fixture();
    let port = free_port();
    let mut w = Workload::http("hog", &probe_http(), port);
    w.memory = 32 << 20;
    fx.run(&w);
    let started = Instant::now();
    let (status, body) = get(port, "/alloc");
    assert_eq!((status, body.as_str()), (500, "guest trapped\n"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        get(port, "/"),
        (200, "hello from probe-http world".to_string())
    );
}

#[test]
fn replace_on_same_port_loses_no_request() {
    let fx = fixture();
    let port = free_port();
    let v1 = Workload::http("web", &probe_http(), port);
    fx.run(&v1);
    assert_eq!(get(port, "/version"), (200, "v1".to_string()));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push(http_get(local(port), "/version").map_err(|e| e.to_string()));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let v2 = Workload::http("web", &probe_http_v2(), port);
    let d2 = fx.run(&v2);
    assert!(eventually(Duration::from_secs(5), || get(port, "/version")
        .1
        == "v2"));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut v2_seen = 0;
    for c in clients {
        for r in c.join().expect("client thread") {
            total += 1;
            let (status, body) = r.expect("request failed during replace");
            assert_eq!(status, 200, "{body}");
            assert!(body == "v1" || body == "v2", "{body}");
            v2_seen += usize::from(body == "v2");
        }
    }
    assert!(total > 20 && v2_seen > 0, "total {total}, v2 {v2_seen}");
    assert_eq!(fx.host.observe()["test/web"].hash, d2.hash);
}

#[test]
fn replace_on_new_port_moves_and_frees_old_port() {
    let fx = fixture();
    let (p1, p2) = (free_port(), free_port());
    fx.run(&Workload::http("web", &probe_http(), p1));
    fx.run(&Workload::http("web", &probe_http_v2(), p2));
    assert_eq!(get(p2, "/version"), (200, "v2".to_string()));
    assert!(http_get_timeout(local(p1), "/", Duration::from_secs(1)).is_err());
    assert_eq!(
        fx.host.status("test/web").and_then(|s| s.listen),
        Some(local(p2))
    );
}

#[test]
fn stop_frees_the_port() {
    let fx = fixture();
    let port = free_port();
    fx.run(&Workload::http("web", &probe_http(), port));
    assert_eq!(get(port, "/").0, 200);
    fx.host.stop("test/web").expect("stop");
    assert!(fx.host.observe().is_empty());
    assert!(http_get_timeout(local(port), "/", Duration::from_secs(1)).is_err());
    std::net::TcpListener::bind(local(port)).expect("port is free after stop");
    // Stopping what does not run is not an error.
    fx.host.stop("test/web").expect("second stop");
}

#[test]
fn activate_on_a_taken_port_is_a_host_error() {
    let fx = fixture();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let w = Workload::http("web", &probe_http(), port);
    let prepared = fx.host.prepare(&w.desired(), &w.bytes).expect("prepare");
    match fx.host.activate(prepared) {
        Err(RuntimeError::Host { id, message }) => {
            assert_eq!(id, "test/web");
            assert!(message.contains("binding"), "{message}");
        }
        other => panic!("expected a host error, got {other:?}"),
    }
}

fn rejected(fx: &Fixture, w: &Workload, bytes: &[u8]) -> String {
    match fx.host.prepare(&w.desired(), bytes) {
        Err(RuntimeError::Rejected { message, .. }) => message,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[test]
fn bad_components_are_rejected_at_prepare() {
    let fx = fixture();
    let port = free_port();

    let mut junk = Workload::http("junk", &probe_http(), port);
    junk.bytes = b"not wasm at all".to_vec();
    let m = rejected(&fx, &junk, &junk.bytes.clone());
    assert!(m.contains("cannot be compiled"), "{m}");

    // A core module (just the header) is Wasm but not a component.
    let mut core = junk.clone();
    core.bytes = b"\0asm\x01\0\0\0".to_vec();
    let m = rejected(&fx, &core, &core.bytes.clone());
    assert!(m.contains("cannot be compiled"), "{m}");

    // A command served as http lacks the handler export, and vice versa.
    let cmd_as_http = Workload::http("cmd", &probe_cmd(), port);
    let m = rejected(&fx, &cmd_as_http, &cmd_as_http.bytes);
    assert!(
        m.contains("does not export wasi:http/incoming-handler"),
        "{m}"
    );
    let http_as_cmd = Workload::new("h", &probe_http(), WasmKind::Command { args: vec![] });
    let m = rejected(&fx, &http_as_cmd, &http_as_cmd.bytes);
    assert!(m.contains("does not export wasi:cli/run"), "{m}");

    // Bytes that do not match the declared digest.
    let ok = Workload::http("web", &probe_http(), port);
    let mut other = ok.bytes.clone();
    other.push(0);
    let m = rejected(&fx, &ok, &other);
    assert!(m.contains("expected sha256:"), "{m}");

    assert!(fx.host.observe().is_empty());
}

#[test]
fn compiled_components_are_cached_across_hosts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cache, volumes) = (tmp.path().join("cache"), tmp.path().join("volumes"));
    let w = Workload::http("web", &probe_http(), free_port());
    let d = w.desired();
    {
        let rt = runtime();
        let host = host_over(&rt, &cache, &volumes, false);
        host.prepare(&d, &w.bytes).expect("prepare");
        let s = host.stats();
        assert_eq!((s.compiled, s.loaded_from_cache), (1, 0));
    }
    let files: Vec<String> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(&Digest::of(&w.bytes).hex()) && files[0].ends_with(".cwasm"));

    let rt = runtime();
    let host = host_over(&rt, &cache, &volumes, false);
    let prepared = host.prepare(&d, &w.bytes).expect("prepare from cache");
    let s = host.stats();
    assert_eq!((s.compiled, s.loaded_from_cache), (0, 1));
    // And the cached code really runs.
    let port = match &d.wasm.as_ref().expect("wasm").kind {
        WasmKind::Http { port } => port.0,
        WasmKind::Command { .. } => unreachable!(),
    };
    host.activate(prepared).expect("activate");
    assert_eq!(get(port, "/").0, 200);
}

#[test]
fn command_heartbeat_advances_in_declared_dir() {
    let fx = fixture();
    let w = Workload::command("beat", &["heartbeat", "/state"]).dir("/state", false);
    fx.run(&w);
    let file = fx.volume("test", "beat", "/state").join("heartbeat");
    let read = || {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    assert!(
        eventually(Duration::from_secs(5), || read().is_some()),
        "no heartbeat file"
    );
    let first = read().unwrap_or(0);
    assert!(
        eventually(Duration::from_secs(5), || read().unwrap_or(0) >= first + 3),
        "heartbeat stuck at {first}"
    );
    assert_eq!(
        fx.host.observe()["test/beat"].health,
        WorkloadHealth::Running
    );

    fx.host.stop("test/beat").expect("stop");
    std::thread::sleep(Duration::from_millis(300));
    let after_stop = read();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(read(), after_stop, "heartbeat continued after stop");
}

#[test]
fn crashing_command_is_restarted_with_backoff() {
    let fx = fixture();
    fx.run(&Workload::command("crashy", &["crash"]));
    assert!(
        eventually(Duration::from_secs(5), || fx
            .host
            .status("test/crashy")
            .is_some_and(|s| s.restarts >= 3)),
        "not restarted: {:?}",
        fx.host.status("test/crashy")
    );
    let s = fx.host.status("test/crashy").expect("status");
    assert!(
        matches!(
            s.health,
            WorkloadHealth::Restarting | WorkloadHealth::Running
        ),
        "{s:?}"
    );
    // Backoff doubles from 100 ms: after ~1.5 s there cannot have been dozens of restarts.
    std::thread::sleep(Duration::from_millis(500));
    assert!(fx.host.status("test/crashy").expect("status").restarts < 8);
}

#[test]
fn command_exit0_completes_and_spinning_commands_do_not_starve_http() {
    let fx = fixture();
    fx.run(&Workload::command("once", &["exit0"]));
    assert!(eventually(Duration::from_secs(5), || {
        fx.host.observe().get("test/once").map(|o| o.health) == Some(WorkloadHealth::Completed)
    }));
    assert_eq!(fx.host.status("test/once").expect("status").restarts, 0);

    // Two spinning commands on a 2-worker runtime: only yielding keeps HTTP alive.
    fx.run(&Workload::command("spin1", &["spin"]));
    fx.run(&Workload::command("spin2", &["spin"]));
    let port = free_port();
    fx.run(&Workload::http("web", &probe_http(), port));
    for _ in 0..5 {
        assert_eq!(get(port, "/").0, 200);
    }
    assert_eq!(
        fx.host.observe()["test/spin1"].health,
        WorkloadHealth::Running
    );
    fx.host.stop("test/spin1").expect("stop spin1");
    fx.host.stop("test/spin2").expect("stop spin2");
}

#[test]
fn file_access_follows_declared_dirs() {
    let fx = fixture();
    let (p_none, p_rw, p_ro) = (free_port(), free_port(), free_port());
    fx.run(&Workload::http("nodir", &probe_http(), p_none));
    fx.run(&Workload::http("rw", &probe_http(), p_rw).dir("/data", false));
    let ro = Workload::http("ro", &probe_http(), p_ro).dir("/data", true);
    // The read-only volume gets content from the host side.
    let ro_dir = fx.volume("test", "ro", "/data");
    std::fs::create_dir_all(&ro_dir).expect("mkdir");
    std::fs::write(ro_dir.join("x"), "seeded").expect("seed");
    fx.run(&ro);

    let (_, body) = get(p_none, "/file?path=/data/x");
    assert!(
        body.contains("read: error") && body.contains("write: error"),
        "{body}"
    );

    let (_, body) = get(p_rw, "/file?path=/data/x");
    assert!(body.contains("write: ok"), "{body}");
    let host_file = fx.volume("test", "rw", "/data").join("x");
    assert_eq!(
        std::fs::read_to_string(&host_file).expect("written file"),
        "written by probe-http"
    );
    let (_, body) = get(p_rw, "/file?path=/data/x");
    assert!(
        body.contains("read: ok \"written by probe-http\""),
        "{body}"
    );

    let (_, body) = get(p_ro, "/file?path=/data/x");
    assert!(
        body.contains("read: ok \"seeded\"") && body.contains("write: error"),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(ro_dir.join("x")).expect("seeded file"),
        "seeded"
    );

    // Paths outside the volume stay out of reach.
    let (_, body) = get(p_rw, "/file?path=/data/../../etc/passwd");
    assert!(body.contains("read: error"), "{body}");
}

#[test]
fn outbound_requests_only_to_declared_hosts() {
    let fx = fixture();
    let upstream = Responder::start();
    let url = format!("/outbound?url=http://{}/ping", upstream.addr);
    let (p_allowed, p_denied, p_other_port) = (free_port(), free_port(), free_port());
    fx.run(
        &Workload::http("allowed", &probe_http(), p_allowed).outbound(&upstream.addr.to_string()),
    );
    fx.run(&Workload::http("denied", &probe_http(), p_denied));
    fx.run(&Workload::http("otherport", &probe_http(), p_other_port).outbound("127.0.0.1:1"));

    assert_eq!(
        get(p_allowed, &url),
        (200, "outbound status: 200".to_string())
    );
    assert_eq!(upstream.hits(), 1);

    let (_, body) = get(p_denied, &url);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    let (_, body) = get(p_other_port, &url);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(upstream.hits(), 1, "a denied request reached the upstream");
}

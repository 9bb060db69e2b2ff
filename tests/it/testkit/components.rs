//! Test harness for the Wasm runtime: the guest components of `tests/components/` built once per
//! test process with the real `cargo` for `wasm32-wasip2`, a minimal HTTP/1.1 client over
//! `std::net::TcpStream` (no client crate: it must speak plainly what any client would), a tiny
//! HTTP responder for outbound tests, and free-port allocation.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

fn components_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("components")
}

/// Builds the guest workspace into `target/<flavor>` with `PROBE_VERSION=<version>`; returns
/// the release dir. Panics with cargo's output on failure: every caller needs the components.
fn build(flavor: &str, version: &str) -> PathBuf {
    let dir = components_dir();
    let target_dir = dir.join("target").join(flavor);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PROBE_VERSION", version)
        // Settings of the outer `cargo test` must not leak into the guest build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("running cargo to build the guest components");
    assert!(
        out.status.success(),
        "building guest components failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("wasm32-wasip2").join("release")
}

fn v1_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build("probe-v1", "v1"))
}

/// `probe-http` (`/version` answers `v1`).
pub fn probe_http() -> PathBuf {
    v1_dir().join("probe_http.wasm")
}

/// `probe-http` built with `PROBE_VERSION=v2`, in a separate target dir.
pub fn probe_http_v2() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build("probe-v2", "v2"))
        .join("probe_http.wasm")
}

/// `probe-cmd` (`heartbeat DIR | crash | exit0 | spin`).
pub fn probe_cmd() -> PathBuf {
    v1_dir().join("probe-cmd.wasm")
}

/// A port that was free a moment ago on 127.0.0.1, and never handed out before in this process.
///
/// Under nextest each running test has a slot number no other running test holds at the same
/// time (`NEXTEST_TEST_GLOBAL_SLOT`): ports come from that slot's own block, below the kernel's
/// ephemeral range, so another test's process cannot be handed the same one, nor can the kernel
/// give it to anyone's outgoing connection, in the seconds between choosing a port and a server
/// binding it. Elsewhere (plain `cargo test`) the kernel picks. Either way a port is never
/// handed out twice in one process: the kernel may give the same ephemeral port to two binds in
/// a row once the first is closed (seen in CI: two workloads "claiming" one port).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    if let Some((start, len)) = slot_block() {
        // Start at a point of the block that differs from one test process to the next, so a
        // port the slot's previous test used (perhaps still in TIME_WAIT) is rarely the first.
        let offset = std::process::id() as usize % len;
        for i in 0..len {
            let port = start + ((offset + i) % len) as u16;
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding an ephemeral port");
        if given.insert(port) {
            return port;
        }
    }
}

/// This test's block of ports under nextest: (first, length), below the ephemeral range.
pub(crate) fn slot_block() -> Option<(u16, usize)> {
    const BASE: usize = 10_000;
    const LEN: usize = 400;
    let slot: usize = std::env::var("NEXTEST_TEST_GLOBAL_SLOT")
        .ok()?
        .parse()
        .ok()?;
    let ephemeral_low: usize = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let start = BASE + slot * LEN;
    (start + LEN <= ephemeral_low).then_some((start as u16, LEN))
}

/// `GET path` with `Connection: close`; returns (status, body). Times out after 10 s.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    http_get_timeout(addr, path, Duration::from_secs(10))
}

pub fn http_get_timeout(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A minimal HTTP responder on 127.0.0.1: answers every request with 200 "pong" and counts
/// them. Stops when dropped.
pub struct Responder {
    pub addr: SocketAddr,
    hits: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    pub fn start() -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding responder");
        listener
            .set_nonblocking(true)
            .expect("nonblocking responder");
        let addr = listener.local_addr().expect("responder address");
        let hits = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut reader = BufReader::new(match conn.try_clone() {
                            Ok(c) => c,
                            Err(_) => continue,
                        });
                        let mut line = String::new();
                        // Read the request head up to the blank line.
                        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                            if line == "\r\n" || line == "\n" {
                                break;
                            }
                            line.clear();
                        }
                        *h.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                        let _ = conn
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Responder {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    pub fn hits(&self) -> u32 {
        *self.hits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

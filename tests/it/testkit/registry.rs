//! Test harness for the OCI registry adapter (the "fetch artifacts" step of the reconcile
//! cycle, between render and verify): a real registry (Debian's `docker-registry`, CNCF
//! distribution 2.8) on a free loopback port with temporary storage, images made with the real
//! `umoci` and pushed with the real `skopeo` (independent tools, so the adapter is checked
//! against what others write), and a small misbehaving registry of our own on a std
//! `TcpListener` for the faults a real registry will not produce on demand.

use super::components::{free_port, http_get};
use anyhow::{Context, Result, bail};
use fleetlet_core::Digest;
use fleetlet_core::reference::RegistryRef;
use fleetlet_engine::registry::{BlobSink, Descriptor};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `docker-registry`, killed (by its PID) on drop.
pub struct TestRegistry {
    pub port: u16,
    /// For [`TestRegistry::start_tls`]: the CA (PEM) that signed the registry's certificate.
    pub ca: Option<PathBuf>,
    child: Child,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// An anonymous registry.
    pub fn start() -> Result<Self> {
        Self::start_inner(None, false)
    }

    /// An anonymous registry on HTTPS, with a certificate for `IP:127.0.0.1` signed by a
    /// throwaway CA (in [`TestRegistry::ca`]).
    pub fn start_tls() -> Result<Self> {
        Self::start_inner(None, true)
    }

    /// A registry that demands basic auth (`htpasswd -Bbn user pw`).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Result<Self> {
        Self::start_inner(Some((user, password)), false)
    }

    fn start_inner(auth: Option<(&str, &str)>, tls: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let auth_yaml = match auth {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .context("running htpasswd (apache2-utils)")?;
                if !out.status.success() {
                    bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout)?;
                format!(
                    "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let (tls_yaml, ca) = if tls {
            let (cert, key, ca) = make_tls_material(dir.path())?;
            (
                format!(
                    ", tls: {{certificate: {}, key: {}}}",
                    cert.display(),
                    key.display()
                ),
                Some(ca),
            )
        } else {
            (String::new(), None)
        };
        // A free port can be taken between probing and binding; retry a few times.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log: {{level: warn, accesslog: {{disabled: true}}}}\n\
                     storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}, maintenance: {{uploadpurging: {{enabled: false}}}}}}\n\
                     http: {{addr: 127.0.0.1:{port}, secret: test-only{tls_yaml}}}\n\
                     {auth_yaml}",
                    storage.display()
                ),
            )?;
            let log = std::fs::File::create(dir.path().join("registry.log"))?;
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting docker-registry")?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // 200 anonymous, 401 with auth, 400 (plain HTTP to TLS): either way it serves.
                if let Ok((status, _)) = http_get(addr, "/v2/")
                    && (status == 200 || status == 401 || (tls && status == 400))
                {
                    return Ok(TestRegistry {
                        port,
                        ca,
                        child,
                        dir,
                    });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(dir.path().join("registry.log"))
                        .unwrap_or_default();
                    last_err = Some(anyhow::anyhow!("docker-registry exited ({status}): {log}"));
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(anyhow::anyhow!("docker-registry did not answer on {addr}"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("docker-registry did not start")))
    }

    /// `127.0.0.1:PORT`, as references spell the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for `IP:127.0.0.1` signed by it (P-256), with `openssl`.
fn make_tls_material(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let p = |name: &str| dir.join(name);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=fleetlet test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")))?;
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))?;
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.pem")))?;
    Ok((p("server.pem"), p("server.key"), p("ca.pem")))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes an OCI image layout at `layout` with image `tag`, one layer per entry of `layers`
/// (each a list of `(path in rootfs, contents)`), with the real `umoci`.
pub fn make_umoci_image(layout: &Path, tag: &str, layers: &[&[(&str, &[u8])]]) -> Result<()> {
    let bundle_parent = tempfile::tempdir()?;
    let bundle = bundle_parent.path().join("bundle");
    let image = format!("{}:{tag}", layout.display());
    if !layout.join("index.json").exists() {
        run(Command::new("umoci").args(["init", "--layout"]).arg(layout))?;
    }
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    for files in layers {
        if bundle.exists() {
            std::fs::remove_dir_all(&bundle)?;
        }
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle))?;
        for (path, contents) in *files {
            let file = bundle.join("rootfs").join(path.trim_start_matches('/'));
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, contents)?;
        }
        // Fixed history and time: the same files give the same image.
        run(Command::new("umoci")
            .args(["repack", "--no-history", "--image", &image])
            .arg(&bundle))?;
    }
    Ok(())
}

/// `skopeo copy oci:LAYOUT:TAG docker://DEST` to a plain-HTTP registry; `creds` as `user:pw`.
pub fn push_image_with_skopeo(
    layout: &Path,
    tag: &str,
    dest: &str,
    creds: Option<&str>,
) -> Result<()> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"));
    run(&mut cmd).map(|_| ())
}

/// `skopeo inspect --raw docker://REF`: the manifest bytes as the registry stores them.
pub fn skopeo_inspect_raw(reference: &str, creds: Option<&str>) -> Result<Vec<u8>> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    cmd.arg(format!("docker://{reference}"));
    let out = cmd.output().context("running skopeo inspect")?;
    if !out.status.success() {
        bail!(
            "skopeo inspect {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// A sink that keeps everything in memory and counts restarts.
#[derive(Default, Debug)]
pub struct VecSink {
    pub data: Vec<u8>,
    pub restarts: usize,
}

impl Write for VecSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobSink for VecSink {
    fn restart(&mut self) -> io::Result<()> {
        self.data.clear();
        self.restarts += 1;
        Ok(())
    }
}

/// What the faulty registry does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a well-behaved (minimal) registry.
    None,
    /// The first `n` blob responses announce the full length and stop halfway.
    TruncateBlob(usize),
    /// `Content-Length` and body are 16 bytes longer than the blob.
    OverlongBlob,
    /// No `Content-Length`; 16 bytes more than the blob, then close.
    ExtraBytesUndeclared,
    /// No `Content-Length`; 16 bytes fewer than the blob, then a clean close.
    ShortBlobUndeclared,
    /// Headers and half the blob, then silence (the connection stays open).
    HangBlob,
    /// Manifests answered with a 200 HTML page.
    HtmlManifest,
    /// The first `n` requests for a manifest or blob get 429 with `Retry-After: 1`.
    TooManyRequests(usize),
    /// The first `n` requests for a manifest or blob get 503.
    Unavailable(usize),
    /// Every request (but `/v2/`) gets 401 with a basic challenge.
    Unauthorized,
    /// Every request (but `/v2/`) gets 404.
    NotFound,
    /// Manifests of 5 MiB with a `Content-Length`.
    HugeManifestDeclared,
    /// Manifests of 5 MiB, close-delimited (no `Content-Length`).
    HugeManifestUndeclared,
    /// Token auth: everything needs `Bearer tok-123`, which `/token` gives only for basic
    /// credentials `edge:s3cret` (scopes and services are recorded in `seen`).
    Bearer,
}

/// The token the [`Fault::Bearer`] registry hands out.
pub const BEARER_TOKEN: &str = "tok-123";

struct Shared {
    fault: Fault,
    addr: SocketAddr,
    manifest: Vec<u8>,
    blob: Vec<u8>,
    blob_digest: String,
    stop: AtomicBool,
    manifest_hits: AtomicUsize,
    blob_hits: AtomicUsize,
    /// Faulty responses still to give (for the "first n" faults).
    faults_left: AtomicUsize,
    /// Request targets seen (path and query), in order.
    seen: Mutex<Vec<String>>,
}

/// A tiny registry that serves one repository (`app`): one manifest for any tag or digest, and
/// one blob,
/// misbehaving as told. Stopped on drop.
pub struct FaultyRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyRegistry {
    pub fn start(fault: Fault) -> Result<Self> {
        // A deterministic 64 KiB blob, not all zeros (so truncation changes the hash).
        let blob: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let blob_digest = Digest::of(&blob).to_string();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{blob_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{blob_digest}","size":{}}}]}}"#,
            blob.len(),
            blob.len()
        )
        .into_bytes();
        let faults_left = match fault {
            Fault::TruncateBlob(n) | Fault::TooManyRequests(n) | Fault::Unavailable(n) => n,
            _ => usize::MAX,
        };
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault,
            addr,
            manifest,
            blob,
            blob_digest,
            stop: AtomicBool::new(false),
            manifest_hits: AtomicUsize::new(0),
            blob_hits: AtomicUsize::new(0),
            faults_left: AtomicUsize::new(faults_left),
            seen: Mutex::new(Vec::new()),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let s = thread_shared.clone();
                // One thread per connection: a hanging response must not block the others.
                std::thread::spawn(move || {
                    let _ = serve(stream, &s);
                });
            }
        });
        Ok(FaultyRegistry {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `HOST/app:v1`.
    pub fn reference(&self) -> RegistryRef {
        RegistryRef {
            registry: self.host(),
            repository: "app".into(),
            tag: Some("v1".into()),
            digest: None,
        }
    }

    pub fn manifest_bytes(&self) -> &[u8] {
        &self.shared.manifest
    }

    pub fn blob(&self) -> &[u8] {
        &self.shared.blob
    }

    pub fn blob_descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: Digest::of(&self.shared.blob),
            size: self.shared.blob.len() as u64,
        }
    }

    pub fn manifest_hits(&self) -> usize {
        self.shared.manifest_hits.load(Ordering::SeqCst)
    }

    pub fn blob_hits(&self) -> usize {
        self.shared.blob_hits.load(Ordering::SeqCst)
    }

    /// Request targets (path and query) seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for FaultyRegistry {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Takes one of the "first n" faults, if any are left.
fn take_fault(s: &Shared) -> bool {
    s.faults_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn head(stream: &mut TcpStream, status: &str, headers: &[(&str, String)]) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    head(
        stream,
        status,
        &[
            ("Content-Type", content_type.to_string()),
            ("Content-Length", body.len().to_string()),
        ],
    )?;
    stream.write_all(body)
}

fn serve(mut stream: TcpStream, s: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = value.trim().to_string();
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    if target.is_empty() {
        return Ok(()); // the wake-up connection of Drop, or junk
    }
    if let Ok(mut seen) = s.seen.lock() {
        seen.push(target.clone());
    }
    let path = target.split('?').next().unwrap_or("");
    if s.fault == Fault::Bearer {
        use base64::Engine as _;
        if path == "/token" {
            let good = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("edge:s3cret")
            );
            return if authorization == good {
                respond(
                    &mut stream,
                    "200 OK",
                    "application/json",
                    format!(r#"{{"token":"{BEARER_TOKEN}"}}"#).as_bytes(),
                )
            } else {
                respond(
                    &mut stream,
                    "401 Unauthorized",
                    "text/plain",
                    b"bad credentials\n",
                )
            };
        }
        if authorization != format!("Bearer {BEARER_TOKEN}") {
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="faulty",scope="repository:app:pull""#,
                s.addr
            );
            head(
                &mut stream,
                "401 Unauthorized",
                &[
                    ("WWW-Authenticate", challenge),
                    ("Content-Length", "0".into()),
                ],
            )?;
            return Ok(());
        }
    }
    if path == "/v2/" || path == "/v2" {
        return respond(&mut stream, "200 OK", "application/json", b"{}");
    }
    let is_manifest = path.starts_with("/v2/app/manifests/");
    let is_blob = path == format!("/v2/app/blobs/{}", s.blob_digest);
    if is_manifest {
        s.manifest_hits.fetch_add(1, Ordering::SeqCst);
    }
    if is_blob {
        s.blob_hits.fetch_add(1, Ordering::SeqCst);
    }
    match s.fault {
        Fault::Unauthorized => {
            head(
                &mut stream,
                "401 Unauthorized",
                &[
                    ("WWW-Authenticate", "Basic realm=\"faulty\"".into()),
                    ("Content-Type", "application/json".into()),
                    ("Content-Length", "2".into()),
                ],
            )?;
            return stream.write_all(b"{}");
        }
        Fault::NotFound => {
            let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
            return respond(&mut stream, "404 Not Found", "application/json", body);
        }
        Fault::TooManyRequests(_) if (is_manifest || is_blob) && take_fault(s) => {
            head(
                &mut stream,
                "429 Too Many Requests",
                &[("Retry-After", "1".into()), ("Content-Length", "0".into())],
            )?;
            return Ok(());
        }
        Fault::Unavailable(_) if (is_manifest || is_blob) && take_fault(s) => {
            return respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                b"down for maintenance\n",
            );
        }
        _ => {}
    }
    if is_manifest {
        // Any tag or digest gets the one manifest: a lying registry is one of the faults to
        // test (a pinned digest must still be checked against the bytes).
        return match s.fault {
            Fault::HtmlManifest => respond(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                b"<!DOCTYPE html><html><body>Please log in to the captive portal</body></html>",
            ),
            Fault::HugeManifestDeclared | Fault::HugeManifestUndeclared => {
                let mut big = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
                big.resize(5 << 20, b'a');
                big.extend_from_slice(b"\"}}");
                let mut headers = vec![(
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".to_string(),
                )];
                if s.fault == Fault::HugeManifestDeclared {
                    headers.push(("Content-Length", big.len().to_string()));
                }
                head(&mut stream, "200 OK", &headers)?;
                // The client may hang up early (that is the point); ignore write errors.
                let _ = stream.write_all(&big);
                Ok(())
            }
            _ => {
                let digest = Digest::of(&s.manifest).to_string();
                head(
                    &mut stream,
                    "200 OK",
                    &[
                        (
                            "Content-Type",
                            "application/vnd.oci.image.manifest.v1+json".into(),
                        ),
                        ("Docker-Content-Digest", digest),
                        ("Content-Length", s.manifest.len().to_string()),
                    ],
                )?;
                if method == "HEAD" {
                    return Ok(());
                }
                stream.write_all(&s.manifest)
            }
        };
    }
    if is_blob {
        let blob = &s.blob;
        let half = blob.len() / 2;
        let octet = ("Content-Type", "application/octet-stream".to_string());
        return match s.fault {
            Fault::TruncateBlob(_) if take_fault(s) => {
                head(
                    &mut stream,
                    "200 OK",
                    &[octet, ("Content-Length", blob.len().to_string())],
                )?;
                stream.write_all(&blob[..half])?;
                stream.flush()?;
                stream.shutdown(std::net::Shutdown::Both)
            }
            Fault::OverlongBlob => {
                head(
                    &mut stream,
                    "200 OK",
                    &[octet, ("Content-Length", (blob.len() + 16).to_string())],
                )?;
                stream.write_all(blob)?;
                let _ = stream.write_all(&[0u8; 16]);
                Ok(())
            }
            Fault::ExtraBytesUndeclared => {
                head(&mut stream, "200 OK", &[octet])?;
                stream.write_all(blob)?;
                let _ = stream.write_all(&[0u8; 16]);
                stream.shutdown(std::net::Shutdown::Both)
            }
            Fault::ShortBlobUndeclared => {
                head(&mut stream, "200 OK", &[octet])?;
                stream.write_all(&blob[..blob.len() - 16])?;
                stream.shutdown(std::net::Shutdown::Both)
            }
            Fault::HangBlob => {
                head(
                    &mut stream,
                    "200 OK",
                    &[octet, ("Content-Length", blob.len().to_string())],
                )?;
                stream.write_all(&blob[..half])?;
                stream.flush()?;
                // Keep the connection open and silent until the registry is dropped.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !s.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            }
            _ => {
                head(
                    &mut stream,
                    "200 OK",
                    &[
                        octet,
                        ("Docker-Content-Digest", s.blob_digest.clone()),
                        ("Content-Length", blob.len().to_string()),
                    ],
                )?;
                if method == "HEAD" {
                    return Ok(());
                }
                stream.write_all(blob)
            }
        };
    }
    respond(
        &mut stream,
        "404 Not Found",
        "application/json",
        br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#,
    )
}

/// The path of a Docker `config.json` with `user:password` for `host`, written under `dir`.
pub fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> Result<PathBuf> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("docker-config.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )?;
    Ok(path)
}

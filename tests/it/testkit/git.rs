//! Test harness for the Git source (the "observe/pull" step of the reconcile cycle): working
//! repos built with the real `git` CLI (so fleetlet's libgit2 code reads what real Git wrote),
//! a real `git daemon`, and two broken servers (one answering junk, one never answering).
//! Every server listens on 127.0.0.1 on a free port and is stopped by its own PID or guard.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs `git` with a clean, fixed identity and no user/system config, so tests do not depend on
/// the machine's Git setup.
fn git(dir: &Path, args: &[&str], date: Option<i64>) -> Result<String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Fleet Tester")
        .env("GIT_AUTHOR_EMAIL", "tester@fleetlet.invalid")
        .env("GIT_COMMITTER_NAME", "Fleet Tester")
        .env("GIT_COMMITTER_EMAIL", "tester@fleetlet.invalid");
    if let Some(t) = date {
        let d = format!("@{t} +0000");
        cmd.env("GIT_AUTHOR_DATE", &d).env("GIT_COMMITTER_DATE", &d);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A non-bare working repository on branch `main`.
pub struct TestRepo {
    _dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// Commit (and tag) times advance one minute per commit from a fixed epoch, so ordering by
    /// time is deterministic even when a test runs faster than a second.
    clock: std::cell::Cell<i64>,
}

impl TestRepo {
    /// A repo in its own temporary directory.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("repo");
        let mut repo = Self::init(&path)?;
        repo._dir = Some(dir);
        Ok(repo)
    }

    /// A repo at `root/name` (for serving `root` with [`GitDaemon`]); the caller owns `root`.
    pub fn new_in(root: &Path, name: &str) -> Result<Self> {
        Self::init(&root.join(name))
    }

    fn init(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        git(path, &["init", "-q", "-b", "main"], None)?;
        Ok(Self {
            _dir: None,
            path: path.to_path_buf(),
            clock: std::cell::Cell::new(1_700_000_000),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    fn tick(&self) -> i64 {
        self.clock.set(self.clock.get() + 60);
        self.clock.get()
    }

    /// Writes `files` (creating folders), stages everything (including earlier [`Self::remove`]
    /// and [`Self::symlink`] changes) and commits. Returns the commit id.
    pub fn commit_files(&self, files: &[(&str, &[u8])], msg: &str) -> Result<String> {
        for (rel, bytes) in files {
            let p = self.path.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, bytes)?;
        }
        git(&self.path, &["add", "-A"], None)?;
        git(
            &self.path,
            &["commit", "-q", "--allow-empty", "-m", msg],
            Some(self.tick()),
        )?;
        self.head()
    }

    /// Like [`Self::commit_files`], but signed by `key` (an SSH private key) through real
    /// `git -c gpg.format=ssh commit -S`.
    pub fn commit_signed(&self, files: &[(&str, &[u8])], msg: &str, key: &Path) -> Result<String> {
        for (rel, bytes) in files {
            let p = self.path.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, bytes)?;
        }
        git(&self.path, &["add", "-A"], None)?;
        let signing = format!("user.signingkey={}", key.display());
        git(
            &self.path,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &signing,
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                msg,
            ],
            Some(self.tick()),
        )?;
        self.head()
    }

    /// An annotated tag on HEAD with `message`, signed by `key` (SSH) when given.
    pub fn tag_with_message(&self, name: &str, message: &str, key: Option<&Path>) -> Result<()> {
        let signing = key.map(|k| format!("user.signingkey={}", k.display()));
        let mut args: Vec<&str> = Vec::new();
        if let Some(s) = &signing {
            args.extend(["-c", "gpg.format=ssh", "-c", s, "tag", "-s"]);
        } else {
            args.extend(["tag", "-a"]);
        }
        args.extend(["-m", message, name]);
        git(&self.path, &args, Some(self.tick()))?;
        Ok(())
    }

    /// Stages a symlink `path -> target` (committed by the next [`Self::commit_files`]).
    pub fn symlink(&self, path: &str, target: &str) -> Result<()> {
        let p = self.path.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &p)?;
        Ok(())
    }

    /// Stages the removal of `path` (committed by the next [`Self::commit_files`]).
    pub fn remove(&self, path: &str) -> Result<()> {
        git(&self.path, &["rm", "-r", "-q", path], None)?;
        Ok(())
    }

    /// Tags HEAD; an annotated tag gets its own tag object (which the source must peel).
    pub fn tag(&self, name: &str, annotated: bool) -> Result<()> {
        if annotated {
            git(
                &self.path,
                &["tag", "-a", name, "-m", &format!("release {name}")],
                Some(self.tick()),
            )?;
        } else {
            git(&self.path, &["tag", name], None)?;
        }
        Ok(())
    }

    /// Moves `main` (and the working tree) to `commit`, as a force-push would leave the remote.
    pub fn force_reset(&self, commit: &str) -> Result<()> {
        git(&self.path, &["reset", "-q", "--hard", commit], None)?;
        Ok(())
    }

    pub fn head(&self) -> Result<String> {
        git(&self.path, &["rev-parse", "HEAD"], None)
    }

    pub fn rev_parse(&self, rev: &str) -> Result<String> {
        git(&self.path, &["rev-parse", rev], None)
    }
}

/// A port nobody listens on right now ([`super::components::free_port`], never the same twice).
pub fn free_port() -> Result<u16> {
    Ok(super::components::free_port())
}

fn wait_for_port(port: u16, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("server did not listen on port {port} within 10 s")
}

/// A real `git daemon` serving every repo under `root` over git://. Killed on drop.
pub struct GitDaemon {
    pub port: u16,
    child: Child,
}

impl GitDaemon {
    pub fn start(root: &Path) -> Result<Self> {
        let port = free_port()?;
        let root_s = root.to_str().context("root path is not UTF-8")?;
        // Run git-daemon itself: `git daemon` would start it as a child of `git`, and killing
        // `git` by PID would leave the daemon listening.
        let exec_path = git(root, &["--exec-path"], None)?;
        let mut child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={root_s}"),
                "--export-all",
                "--enable=receive-pack",
                root_s,
            ])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting git daemon")?;
        if let Err(e) = wait_for_port(port, &mut child) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Self { port, child })
    }

    pub fn url_for(&self, repo_name: &str) -> String {
        format!("git://127.0.0.1:{}/{repo_name}", self.port)
    }

    /// Stops the daemon now (the port then refuses connections).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // Kill by our own child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops a test TCP server thread on drop.
pub struct ServerGuard {
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    on_connection: impl Fn(TcpStream, &mut Vec<TcpStream>) + Send + 'static,
) -> Result<(u16, ServerGuard)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        // Connections kept open (by the silent server) until the guard drops.
        let mut held = Vec::new();
        for conn in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(conn) = conn {
                on_connection(conn, &mut held);
            }
        }
    });
    Ok((
        port,
        ServerGuard {
            stop,
            port,
            thread: Some(thread),
        },
    ))
}

/// A server that answers every connection with junk bytes and hangs up.
pub fn serve_garbage() -> Result<(u16, ServerGuard)> {
    serve(|mut conn, _| {
        let _ = conn
            .write_all(b"\xff\xfe this is not git \x00\x01\x02 zzzz\r\n\r\nHTTP/9.9 nonsense\n");
        let _ = conn.flush();
    })
}

/// A server that accepts connections and never sends a byte (for timeouts).
pub fn serve_silent() -> Result<(u16, ServerGuard)> {
    serve(|conn, held| held.push(conn))
}

/// Whether `bin` can be run; optional servers skip their tests (with a notice) when it cannot.
fn have(bin: &str) -> bool {
    Path::new(bin).exists()
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A real OpenSSH server on 127.0.0.1 serving repos by absolute path, with throwaway host and
/// client keys. `known_hosts` pins its real host key.
pub struct SshServer {
    pub port: u16,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

impl SshServer {
    /// `None` (after printing why) when openssh-server is not installed.
    pub fn start() -> Result<Option<Self>> {
        if !have("/usr/sbin/sshd") || !have("/usr/bin/ssh-keyscan") {
            println!(
                "NOTICE: skipping ssh test: /usr/sbin/sshd or ssh-keyscan missing (apt-get install openssh-server)"
            );
            return Ok(None);
        }
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd")?;
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        for key in ["host_key", "client_key", "other_host_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key)))?;
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))?;
        let port = free_port()?;
        let cfg = d.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nStrictModes no\n\
                 UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )?;
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sshd")?;
        if let Err(e) = wait_for_port(port, &mut child) {
            kill_child(&mut child);
            return Err(e);
        }
        // ssh-keyscan doubles as the readiness probe: it needs a full key exchange.
        let scan = run(Command::new("ssh-keyscan").args([
            "-t",
            "ed25519",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ]));
        let scan = match scan {
            Ok(s) if !s.trim().is_empty() => s,
            other => {
                kill_child(&mut child);
                bail!("ssh-keyscan failed: {other:?}");
            }
        };
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, scan)?;
        Ok(Some(Self {
            port,
            client_key: d.join("client_key"),
            known_hosts,
            dir,
            child,
        }))
    }

    /// `ssh://user@127.0.0.1:port/abs/path` for a repo at `path`.
    pub fn url_for(&self, path: &Path) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        format!("ssh://{user}@127.0.0.1:{}{}", self.port, path.display())
    }

    /// A known_hosts file that names this server with a different (wrong) key.
    pub fn wrong_known_hosts(&self) -> Result<PathBuf> {
        let other = std::fs::read_to_string(self.dir.path().join("other_host_key.pub"))?;
        let mut fields = other.split_whitespace();
        let (kind, key) = (
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        );
        let path = self.dir.path().join("wrong_known_hosts");
        std::fs::write(&path, format!("[127.0.0.1]:{} {kind} {key}\n", self.port))?;
        Ok(path)
    }

    /// A known_hosts file that knows only some other host.
    pub fn unrelated_known_hosts(&self) -> Result<PathBuf> {
        let real = std::fs::read_to_string(&self.known_hosts)?;
        let path = self.dir.path().join("unrelated_known_hosts");
        std::fs::write(&path, real.replace("[127.0.0.1]", "[git.example.org]"))?;
        Ok(path)
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// lighttpd serving `root` over HTTPS through git-http-backend (smart HTTP), with a fresh
/// self-signed P-256 certificate for 127.0.0.1 (`ca_file` trusts it).
pub struct HttpsServer {
    pub port: u16,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
    child: Child,
}

impl HttpsServer {
    /// `None` (after printing why) when lighttpd is not installed.
    pub fn start(root: &Path) -> Result<Option<Self>> {
        let backend = Path::new(&git(root, &["--exec-path"], None)?).join("git-http-backend");
        if !have("/usr/sbin/lighttpd") || !have("/usr/bin/openssl") || !backend.exists() {
            println!(
                "NOTICE: skipping https test: lighttpd, openssl or git-http-backend missing (apt-get install lighttpd lighttpd-mod-openssl)"
            );
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
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
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        let port = free_port()?;
        let conf = d.join("lighttpd.conf");
        std::fs::write(
            &conf,
            format!(
                r#"server.modules = ("mod_alias", "mod_cgi", "mod_setenv", "mod_openssl")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{log}"
ssl.engine = "enable"
ssl.pemfile = "{cert}"
ssl.privkey = "{key}"
alias.url = ("/git/" => "{backend}/")
$HTTP["url"] =~ "^/git/" {{
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
"#,
                root = root.display(),
                log = d.join("error.log").display(),
                cert = cert.display(),
                key = key.display(),
                backend = backend.display(),
            ),
        )?;
        let mut child = Command::new("/usr/sbin/lighttpd")
            .args(["-D", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting lighttpd")?;
        if let Err(e) = wait_for_port(port, &mut child) {
            kill_child(&mut child);
            let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
            bail!("{e}; lighttpd log: {log}");
        }
        Ok(Some(Self {
            port,
            ca_file: cert,
            _dir: dir,
            child,
        }))
    }

    pub fn url_for(&self, repo_name: &str) -> String {
        format!("https://127.0.0.1:{}/git/{repo_name}", self.port)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// A throwaway SSH signing key, as an operator makes one.
pub fn ssh_signing_key(dir: &std::path::Path, name: &str) -> Result<std::path::PathBuf> {
    let key = dir.join(name);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()?;
    anyhow::ensure!(out.status.success(), "ssh-keygen: {out:?}");
    Ok(key)
}

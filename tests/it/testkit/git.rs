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

/// A port nobody listens on right now (bound then released; the race is harmless in tests).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

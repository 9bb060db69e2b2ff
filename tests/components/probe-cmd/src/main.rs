//! probe-cmd: a `wasi:cli/run` command whose first argument selects a behaviour, so the host's
//! supervisor can be tested against a guest that works, crashes, exits or never yields.
//!
//! argv[0] is the workload name (the host puts it there); argv[1] is the behaviour:
//! `heartbeat DIR` writes an incrementing counter to DIR/heartbeat every 100 ms forever,
//! `crash` panics, `exit0` exits successfully, `spin` loops forever without any host call.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("heartbeat") => {
            let dir = args.get(2).map(String::as_str).unwrap_or("/data");
            let path = format!("{dir}/heartbeat");
            let mut n: u64 = 0;
            loop {
                n += 1;
                if let Err(e) = std::fs::write(&path, n.to_string()) {
                    eprintln!("probe-cmd: writing {path}: {e}");
                    std::process::exit(2);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some("crash") => panic!("probe-cmd: crashing on purpose"),
        Some("exit0") => println!("probe-cmd: done"),
        Some("spin") => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        other => {
            eprintln!(
                "probe-cmd: unknown behaviour {other:?} (heartbeat DIR | crash | exit0 | spin)"
            );
            std::process::exit(64);
        }
    }
}

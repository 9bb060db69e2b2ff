//! A process for crash tests: writes state records or blobs in a loop, acknowledging each one
//! on stdout after it returned, until it is killed with SIGKILL.
//!
//!   crash-writer state DIR    records whose fields must agree (lastSync == lastError.at)
//!   crash-writer blobs DIR    blobs of 256 KiB to 4 MiB into an OCI layout store

use fleetlet_engine::ports::StateStore;
use fleetlet_engine::{AgentState, CycleError, Stage};
use fleetlet_state::SledStateStore;
use fleetlet_store::OciStore;
use std::io::Write;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[2]);
    let mut out = std::io::stdout();
    match args[1].as_str() {
        "state" => {
            let store = SledStateStore::open(dir).expect("open state store");
            let start = store
                .load()
                .expect("load")
                .map(|s| s.last_sync.unwrap_or(0))
                .unwrap_or(0);
            for n in start + 1.. {
                let state = AgentState {
                    version: 1,
                    last_sync: Some(n),
                    last_error: Some(CycleError {
                        at: n,
                        stage: Stage::Source,
                        commit: None,
                        // Records of varying size, so a torn write would show.
                        message: "x".repeat((n as usize * 7919) % 20_000),
                        details: vec![],
                        retryable: true,
                    }),
                    ..Default::default()
                };
                store.save(&state).expect("save");
                writeln!(out, "{n}").unwrap();
            }
        }
        "blobs" => {
            let store = OciStore::open(dir).expect("open artifact store");
            let mut seed: u64 = std::process::id() as u64;
            loop {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = (256 << 10) + (seed >> 40) as usize % (4 << 20);
                let blob: Vec<u8> = (0..len).map(|i| (seed as usize + i * 31) as u8).collect();
                let d = store.put(&blob).expect("put");
                writeln!(out, "{d}").unwrap();
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

//! Crash consistency: a writer process is killed with SIGKILL at random moments while it saves
//! state records or lands blobs. Afterwards the store holds the old record or the new one —
//! never a mix — and every visible blob is complete and matches its digest.

use fleetlet_core::Digest;
use fleetlet_engine::ports::{BlobStore, StateStore};
use fleetlet_state::SledStateStore;
use fleetlet_store::OciStore;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs the writer, kills it after `ms`, returns the last value it acknowledged.
fn run_and_kill(mode: &str, dir: &std::path::Path, ms: u64) -> Option<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(mode)
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Wait for the first acknowledgement, so the kill lands mid-work rather than at start-up.
    let first = rx.recv_timeout(Duration::from_secs(30)).ok();
    std::thread::sleep(Duration::from_millis(ms));
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    rx.try_iter().last().or(first)
}

#[test]
fn state_records_survive_sigkill_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0i64;
    for round in 0..8u64 {
        let acked: i64 = run_and_kill("state", dir.path(), 20 + round * 37 % 150)
            .unwrap()
            .parse()
            .unwrap();
        let store = SledStateStore::open(dir.path()).unwrap();
        let state = store.load().unwrap().expect("a record after the crash");
        let n = state.last_sync.unwrap();
        let e = state.last_error.unwrap();
        assert_eq!(e.at, n, "fields of one record from two writes");
        assert_eq!(
            e.message.len(),
            (n as usize * 7919) % 20_000,
            "a torn record"
        );
        assert!(
            n >= acked,
            "an acknowledged save was lost: acked {acked}, found {n}"
        );
        assert!(
            n <= acked + 1,
            "found {n}, more than one past the last acknowledged {acked}"
        );
        assert!(n > last, "no progress in round {round}");
        last = n;
    }
}

#[test]
fn blobs_are_never_visible_partially_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for round in 0..6u64 {
        if let Some(d) = run_and_kill("blobs", dir.path(), 10 + round * 23) {
            acked.push(d.parse::<Digest>().unwrap());
        }
        let store = OciStore::open(dir.path()).unwrap();
        assert!(
            std::fs::read_dir(dir.path().join(".tmp"))
                .unwrap()
                .next()
                .is_none(),
            "opening the store removes leftover temp files"
        );
        let mut visible = 0;
        for entry in std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest: Digest = format!("sha256:{name}").parse().unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_eq!(
                Digest::of(&bytes),
                digest,
                "blob {name} is partial or corrupt"
            );
            visible += 1;
        }
        assert!(visible > 0);
        for d in &acked {
            assert!(
                store.get(d).unwrap().is_some(),
                "acknowledged blob {d} lost"
            );
        }
    }
}

//! Supervising `wasi:cli/run` command components: run, and on a trap or error exit restart with
//! exponential backoff (100 ms doubling to 30 s, reset after a run that lasted over a minute);
//! a successful exit is final (`Completed`).
//!
//! The guest yields to tokio every epoch tick (10 ms), so a command that never calls the host
//! cannot starve the executor that also serves HTTP.

use crate::sandbox::{GuestState, SandboxSpec};
use fleetlet_core::WorkloadHealth;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::CommandPre;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next crash starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long `stop` waits for the supervisor task to unwind.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One prepared version of a command workload.
pub(crate) struct CommandRunner {
    pub pre: CommandPre<GuestState>,
    pub sandbox: SandboxSpec,
}

impl CommandRunner {
    fn new_store(&self) -> Result<Store<GuestState>, String> {
        let mut store = Store::new(self.pre.engine(), self.sandbox.state(u64::MAX)?);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    /// Instantiates without running: catches link errors and traps at start.
    pub async fn trial(&self) -> Result<(), String> {
        let mut store = self.new_store()?;
        self.pre
            .instantiate_async(&mut store)
            .await
            .map(drop)
            .map_err(|e| format!("instantiating failed: {e:#}"))
    }

    /// One run to completion: `Ok` on a successful exit.
    async fn run_once(&self) -> Result<(), String> {
        let mut store = self.new_store()?;
        let command = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("instantiating failed: {e:#}"))?;
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err("exited with an error".into()),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                // `exit(0)` unwinds as an error value, but it is a success.
                Some(wasmtime_wasi::I32Exit(0)) => Ok(()),
                Some(wasmtime_wasi::I32Exit(code)) => Err(format!("exited with code {code}")),
                None => Err(format!("trapped: {e:#}")),
            },
        }
    }
}

/// What the supervisor reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandStatus {
    pub health: WorkloadHealth,
    pub restarts: u32,
}

pub(crate) struct Supervisor {
    pub status: Arc<Mutex<CommandStatus>>,
    /// `None` once stopped.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Supervisor {
    /// A dropped host must not leave guests running on the runtime.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Supervisor {
    /// Starts supervising. Must run inside the tokio runtime.
    pub fn start(runner: Arc<CommandRunner>) -> Self {
        let status = Arc::new(Mutex::new(CommandStatus {
            health: WorkloadHealth::Running,
            restarts: 0,
        }));
        let task = tokio::spawn(supervise(runner, status.clone()));
        Supervisor {
            status,
            task: Some(task),
        }
    }

    pub fn status(&self) -> CommandStatus {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels the run (the guest is dropped at its next yield, within one epoch tick).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
        }
    }
}

fn set(status: &Mutex<CommandStatus>, f: impl FnOnce(&mut CommandStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

async fn supervise(runner: Arc<CommandRunner>, status: Arc<Mutex<CommandStatus>>) {
    let id = runner.sandbox.id.clone();
    let mut backoff = BACKOFF_START;
    loop {
        set(&status, |s| s.health = WorkloadHealth::Running);
        let started = Instant::now();
        match runner.run_once().await {
            Ok(()) => {
                tracing::info!(workload = %id, "command completed");
                set(&status, |s| s.health = WorkloadHealth::Completed);
                return;
            }
            Err(e) => {
                if started.elapsed() > HEALTHY_RUN {
                    backoff = BACKOFF_START;
                }
                tracing::warn!(workload = %id, error = %e, restart_in_ms = backoff.as_millis() as u64, "command failed; restarting");
                set(&status, |s| {
                    s.health = WorkloadHealth::Restarting;
                    s.restarts += 1;
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

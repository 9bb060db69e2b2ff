//! fleetlet's embedded Wasm runtime: a [`WasmHost`] runs the site's `wasm` workloads in one
//! shared wasmtime engine and implements the engine's [`WorkloadRuntime`] port.
//!
//! - `http` workloads are `wasi:http` handler components served with hyper on
//!   `bind_address:port`, a fresh instance per request, with per-request memory, CPU-time and
//!   concurrency limits ([`http`]).
//! - `command` workloads run `wasi:cli/run` under a supervisor that restarts them with backoff
//!   ([`command`]).
//! - Every instance is sandboxed: declared env, args and dirs only; outgoing HTTP only to
//!   declared hosts ([`sandbox`]).
//! - Compiled code is cached on disk by component digest, so a restart does not recompile
//!   ([`compile`]).
//!
//! Limitations: outgoing requests are plain HTTP only (HTTPS is answered with an error code);
//! the CPU budget is counted in 10 ms epoch ticks observed while the guest runs, an approximation
//! of CPU time.
//!
//! The [`WorkloadRuntime`] methods are synchronous: the engine calls them from its own thread,
//! and they drive async work on the tokio runtime given in [`WasmHostConfig`].

mod command;
mod compile;
mod http;
mod outbound;
mod sandbox;

pub use compile::HostStats;

use command::{CommandRunner, Supervisor};
use fleetlet_core::render::{DesiredWorkload, WasmKind};
use fleetlet_core::{Digest, ObservedWorkload, WorkloadHealth};
use fleetlet_engine::ports::{RuntimeError, WorkloadRuntime};
use http::{HttpHandler, HttpServer};
use sandbox::{GuestState, SandboxSpec};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// How often the epoch advances: the granularity of CPU limits and of yielding to tokio.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Where and how a [`WasmHost`] runs workloads.
#[derive(Debug, Clone)]
pub struct WasmHostConfig {
    /// Precompiled components (`<sha256 hex>-<engine hash>.cwasm`); created if missing.
    pub compiled_cache_dir: PathBuf,
    /// Root of the per-workload dirs: guest dir `/a/b` of workload `app/w` is
    /// `<volumes_dir>/app/w/_a_b`.
    pub volumes_dir: PathBuf,
    /// Address http workloads listen on (their port comes from the workload).
    pub bind_address: IpAddr,
    /// The runtime servers and supervisors run on.
    pub runtime: tokio::runtime::Handle,
    /// Pre-reserve instance slots (faster per-request instantiation, more virtual memory).
    /// `None`: allocate on demand.
    pub pooling: Option<PoolingOptions>,
}

impl WasmHostConfig {
    pub fn new(
        compiled_cache_dir: PathBuf,
        volumes_dir: PathBuf,
        bind_address: IpAddr,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        WasmHostConfig {
            compiled_cache_dir,
            volumes_dir,
            bind_address,
            runtime,
            pooling: None,
        }
    }
}

/// Sizing of wasmtime's pooling instance allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingOptions {
    /// Instances alive at once across all workloads (requests in flight + commands).
    pub max_instances: u32,
    /// Largest linear memory of one instance; workloads with a larger `memory` limit are
    /// capped here.
    pub max_memory_per_instance: u64,
}

impl Default for PoolingOptions {
    fn default() -> Self {
        PoolingOptions {
            max_instances: 256,
            max_memory_per_instance: 256 << 20,
        }
    }
}

/// Errors creating a [`WasmHost`].
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("configuring wasmtime: {0}")]
    Engine(String),
    #[error("compiled component cache {dir}: {source}")]
    Cache {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("volumes dir {dir}: {source}")]
    Volumes {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// What the host knows about one workload, beyond [`ObservedWorkload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadStatus {
    pub hash: Digest,
    pub health: WorkloadHealth,
    /// Where an http workload listens.
    pub listen: Option<SocketAddr>,
    /// How often a command has been restarted after failing.
    pub restarts: u32,
}

/// A workload compiled, linked and trial-instantiated by [`WasmHost::prepare`], ready to
/// [`WasmHost::activate`].
pub struct Prepared {
    id: String,
    hash: Digest,
    kind: PreparedKind,
}

enum PreparedKind {
    Http {
        port: u16,
        handler: Arc<HttpHandler>,
    },
    Command(Arc<CommandRunner>),
}

impl Prepared {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("id", &self.id)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

enum Running {
    Http {
        hash: Digest,
        server: HttpServer,
    },
    Command {
        hash: Digest,
        supervisor: Supervisor,
    },
}

/// The embedded Wasm runtime. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct WasmHost {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: compile::CompiledCache,
    volumes_dir: PathBuf,
    bind_address: IpAddr,
    runtime: tokio::runtime::Handle,
    workloads: Mutex<BTreeMap<String, Running>>,
    /// Tells the epoch ticker thread to end when the host is dropped.
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl WasmHost {
    pub fn new(config: WasmHostConfig) -> Result<Self, HostError> {
        let engine = compile::build_engine(config.pooling.as_ref())
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let cache = compile::CompiledCache::new(&engine, config.compiled_cache_dir.clone())
            .map_err(|source| HostError::Cache {
                dir: config.compiled_cache_dir.clone(),
                source,
            })?;
        std::fs::create_dir_all(&config.volumes_dir).map_err(|source| HostError::Volumes {
            dir: config.volumes_dir.clone(),
            source,
        })?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            // A plain thread rather than a tokio task: it must keep ticking even when every
            // worker thread is busy running guests, or no guest could be cut off.
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(HostError::Ticker)?;
        }
        Ok(WasmHost {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                volumes_dir: config.volumes_dir,
                bind_address: config.bind_address,
                runtime: config.runtime,
                workloads: Mutex::new(BTreeMap::new()),
                ticker_stop,
            }),
        })
    }

    /// Compiled-component cache counters.
    pub fn stats(&self) -> HostStats {
        self.inner.cache.stats()
    }

    /// Details of one workload, `None` when the host does not run it.
    pub fn status(&self, id: &str) -> Option<WorkloadStatus> {
        let map = self.workloads();
        map.get(id).map(|r| match r {
            Running::Http { hash, server } => WorkloadStatus {
                hash: *hash,
                health: WorkloadHealth::Running,
                listen: Some(server.addr),
                restarts: 0,
            },
            Running::Command { hash, supervisor } => {
                let s = supervisor.status();
                WorkloadStatus {
                    hash: *hash,
                    health: s.health,
                    listen: None,
                    restarts: s.restarts,
                }
            }
        })
    }

    fn workloads(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        // The map stays consistent even if a holder panicked: entries are replaced whole.
        self.inner
            .workloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `fut` to completion on the host's runtime from synchronous code, also when called
    /// from inside a runtime (where `block_on` would panic): then a helper thread waits.
    fn block_on<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                let h = s.spawn(|| self.inner.runtime.block_on(fut));
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            self.inner.runtime.block_on(fut)
        }
    }

    fn prepare_inner(&self, w: &DesiredWorkload, bytes: &[u8]) -> Result<Prepared, String> {
        let spec = w.wasm.as_ref().ok_or("not a wasm workload")?;
        let digest = &spec.component.digest.ok_or_else(|| {
            format!(
                "component {} is not pinned to a digest",
                spec.component.describe()
            )
        })?;
        let component = self
            .inner
            .cache
            .load_or_compile(&self.inner.engine, digest, bytes)?;
        let volume_root = self.inner.volumes_dir.join(&w.app).join(&w.name);
        let (export, args) = match &spec.kind {
            WasmKind::Http { .. } => ("wasi:http/incoming-handler", vec![w.name.clone()]),
            WasmKind::Command { args } => {
                let mut all = vec![w.name.clone()];
                all.extend(args.iter().cloned());
                ("wasi:cli/run", all)
            }
        };
        if !exports(&self.inner.engine, &component, export) {
            return Err(format!(
                "component {} does not export {export}",
                digest.short()
            ));
        }
        let sandbox = SandboxSpec::new(
            &w.id(),
            args,
            &spec.env,
            &spec.capabilities,
            volume_root,
            spec.limits.memory.0,
        )?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("component {} cannot be linked: {e:#}", digest.short()))?;
        let kind = match &spec.kind {
            WasmKind::Http { port } => {
                let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(|e| {
                    format!(
                        "component {} is not a wasi:http proxy: {e:#}",
                        digest.short()
                    )
                })?;
                let tick = EPOCH_TICK.as_millis().max(1) as u64;
                let handler = Arc::new(HttpHandler {
                    pre,
                    sandbox,
                    cpu_budget_ticks: spec.limits.cpu_time_per_request.0.div_ceil(tick).max(1),
                    concurrency: Arc::new(tokio::sync::Semaphore::new(
                        spec.limits.max_concurrent_requests.max(1) as usize,
                    )),
                });
                self.block_on(handler.trial())?;
                PreparedKind::Http {
                    port: port.0,
                    handler,
                }
            }
            WasmKind::Command { .. } => {
                let pre = wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(|e| {
                    format!(
                        "component {} is not a wasi:cli command: {e:#}",
                        digest.short()
                    )
                })?;
                let runner = Arc::new(CommandRunner { pre, sandbox });
                self.block_on(runner.trial())?;
                PreparedKind::Command(runner)
            }
        };
        Ok(Prepared {
            id: w.id(),
            hash: w.hash,
            kind,
        })
    }

    async fn stop_running(running: Running) {
        match running {
            Running::Http { server, .. } => server.shutdown().await,
            Running::Command { supervisor, .. } => supervisor.stop().await,
        }
    }
}

/// Whether the component exports `interface` (any version of it).
fn exports(engine: &Engine, component: &Component, interface: &str) -> bool {
    component.component_type().exports(engine).any(|(name, _)| {
        name == interface
            || name
                .strip_prefix(interface)
                .is_some_and(|v| v.starts_with('@'))
    })
}

impl WorkloadRuntime for WasmHost {
    type Prepared = Prepared;

    fn observe(&self) -> BTreeMap<String, ObservedWorkload> {
        let ids: Vec<String> = self.workloads().keys().cloned().collect();
        ids.into_iter()
            .filter_map(|id| {
                self.status(&id).map(|s| {
                    (
                        id,
                        ObservedWorkload {
                            hash: s.hash,
                            health: s.health,
                        },
                    )
                })
            })
            .collect()
    }

    fn prepare(
        &self,
        workload: &DesiredWorkload,
        component: &[u8],
    ) -> Result<Prepared, RuntimeError> {
        self.prepare_inner(workload, component).map_err(|message| {
            tracing::warn!(workload = %workload.id(), %message, "workload rejected");
            RuntimeError::Rejected {
                id: workload.id(),
                message,
            }
        })
    }

    fn activate(&self, prepared: Prepared) -> Result<(), RuntimeError> {
        let Prepared { id, hash, kind } = prepared;
        let host_err = |message: String| RuntimeError::Host {
            id: id.clone(),
            message,
        };
        match kind {
            PreparedKind::Http { port, handler } => {
                let addr = SocketAddr::new(self.inner.bind_address, port);
                let mut map = self.workloads();
                // Same port: swap the handler under the running listener; nothing closes.
                if let Some(Running::Http { hash: h, server }) = map.get_mut(&id)
                    && server.addr == addr
                {
                    server.swap(handler);
                    *h = hash;
                    tracing::info!(workload = %id, %addr, "replaced handler in place");
                    return Ok(());
                }
                let old = map.remove(&id);
                drop(map);
                // A command being replaced by a server holds nothing of the port: stop it first.
                // An old server on another port keeps serving until the new one is bound.
                let old = match old {
                    Some(r @ Running::Command { .. }) => {
                        self.block_on(Self::stop_running(r));
                        None
                    }
                    other => other,
                };
                let started = {
                    let _guard = self.inner.runtime.enter();
                    HttpServer::start(addr, handler)
                };
                let server = match started {
                    Ok(s) => s,
                    Err(e) => {
                        // Keep the old version serving when the new port cannot be bound.
                        if let Some(old) = old {
                            self.workloads().insert(id.clone(), old);
                        }
                        return Err(host_err(format!("binding {addr}: {e}")));
                    }
                };
                self.workloads()
                    .insert(id.clone(), Running::Http { hash, server });
                tracing::info!(workload = %id, %addr, "serving");
                if let Some(old) = old {
                    self.block_on(Self::stop_running(old));
                }
                Ok(())
            }
            PreparedKind::Command(runner) => {
                let old = self.workloads().remove(&id);
                if let Some(old) = old {
                    self.block_on(Self::stop_running(old));
                }
                let supervisor = {
                    let _guard = self.inner.runtime.enter();
                    Supervisor::start(runner)
                };
                self.workloads()
                    .insert(id.clone(), Running::Command { hash, supervisor });
                tracing::info!(workload = %id, "command started");
                Ok(())
            }
        }
    }

    fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let old = self.workloads().remove(id);
        if let Some(old) = old {
            self.block_on(Self::stop_running(old));
            tracing::info!(workload = %id, "stopped");
        }
        Ok(())
    }
}

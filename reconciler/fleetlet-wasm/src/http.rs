//! Serving `wasi:http` handler components: one hyper HTTP/1.1 listener per workload, a fresh
//! instance and store per request (as `wasmtime serve` does), per-request limits.
//!
//! The listener reads the current [`HttpHandler`] from a swappable slot for every request, so a
//! replacement on the same port is a pointer swap: requests already running finish on the old
//! handler (they hold an `Arc` to it), the next ones get the new one, and the socket never
//! closes. Stopping a server closes the listener, asks every connection to finish its current
//! request, and waits (bounded) for them.

use crate::sandbox::{GuestState, SandboxSpec, text_body};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

/// How long `stop` waits for in-flight requests before dropping them.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One prepared version of an http workload.
pub(crate) struct HttpHandler {
    pub pre: ProxyPre<GuestState>,
    pub sandbox: SandboxSpec,
    /// Epoch ticks (10 ms) a request may compute.
    pub cpu_budget_ticks: u64,
    pub concurrency: Arc<Semaphore>,
}

impl HttpHandler {
    pub fn new_store(&self) -> Result<Store<GuestState>, String> {
        let mut store = Store::new(
            self.pre.engine(),
            self.sandbox.state(self.cpu_budget_ticks)?,
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut cx| cx.data_mut().on_epoch_tick());
        Ok(store)
    }

    /// Instantiates without handling a request: catches link errors and traps at start.
    pub async fn trial(&self) -> Result<(), String> {
        let mut store = self.new_store()?;
        self.pre
            .instantiate_async(&mut store)
            .await
            .map(drop)
            .map_err(|e| format!("instantiating failed: {e:#}"))
    }

    async fn handle(self: Arc<Self>, req: hyper::Request<Incoming>) -> hyper::Response<WasiBody> {
        // Excess requests are refused at once rather than queued: a queue would hide overload
        // from the client and from the load balancer in front of the site.
        let Ok(permit) = self.concurrency.clone().try_acquire_owned() else {
            return plain(503, "too many concurrent requests\n");
        };
        let id = self.sandbox.id.clone();
        let mut store = match self.new_store() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(workload = %id, error = %e, "cannot create sandbox");
                return plain(500, "cannot create sandbox\n");
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prepared = (|| -> wasmtime::Result<_> {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, req)?;
            let out = store.data_mut().http().new_response_outparam(tx)?;
            Ok((req, out))
        })();
        let (req, out) = match prepared {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(workload = %id, error = %e, "bad request");
                return plain(400, "bad request\n");
            }
        };
        let handler = self.clone();
        // The guest runs in its own task so it can keep streaming the body after it has set
        // the response head; the permit lives until the guest is done.
        let task = tokio::spawn(async move {
            let _permit = permit;
            let result = async {
                let proxy = handler.pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            }
            .await;
            result.map_err(|e| (e, store.data().cpu_exceeded))
        });
        match rx.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(code)) => {
                tracing::warn!(workload = %id, error = ?code, "guest answered with an error code");
                plain(500, "guest error\n")
            }
            Err(_) => match task.await {
                Ok(Ok(())) => {
                    tracing::warn!(workload = %id, "guest returned without setting a response");
                    plain(500, "guest set no response\n")
                }
                Ok(Err((e, true))) => {
                    tracing::warn!(workload = %id, error = %e, "request cut off: cpu time per request exceeded");
                    plain(503, "cpu time per request exceeded\n")
                }
                Ok(Err((e, false))) => {
                    tracing::warn!(workload = %id, error = %format!("{e:#}"), "guest trapped");
                    plain(500, "guest trapped\n")
                }
                Err(e) => {
                    tracing::error!(workload = %id, error = %e, "request task failed");
                    plain(500, "internal error\n")
                }
            },
        }
    }
}

fn plain(status: u16, text: &'static str) -> hyper::Response<WasiBody> {
    let mut resp = hyper::Response::new(text_body(text));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

pub(crate) type HandlerSlot = Arc<RwLock<Arc<HttpHandler>>>;

/// A running listener of one workload.
pub(crate) struct HttpServer {
    pub addr: SocketAddr,
    pub slot: HandlerSlot,
    shutdown: watch::Sender<bool>,
    /// Closed (recv → None) once the accept loop and every connection have ended.
    drained: mpsc::Receiver<()>,
}

impl HttpServer {
    /// Binds `addr` and starts accepting. Must run inside the tokio runtime.
    pub fn start(addr: SocketAddr, handler: Arc<HttpHandler>) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let slot: HandlerSlot = Arc::new(RwLock::new(handler));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (tracker, drained) = mpsc::channel::<()>(1);
        tokio::spawn(accept_loop(listener, slot.clone(), shutdown_rx, tracker));
        Ok(HttpServer {
            addr,
            slot,
            shutdown,
            drained,
        })
    }

    /// Switches to `handler` for every request from now on.
    pub fn swap(&self, handler: Arc<HttpHandler>) {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the value is whole.
        let mut guard = self.slot.write().unwrap_or_else(|p| p.into_inner());
        *guard = handler;
    }

    /// Closes the listener and waits until in-flight requests finish, at most `DRAIN_TIMEOUT`.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let id = self.current().sandbox.id.clone();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.drained.recv())
            .await
            .is_err()
        {
            tracing::warn!(workload = %id, addr = %self.addr, "in-flight requests did not finish in time; dropping them");
        }
    }

    pub fn current(&self) -> Arc<HttpHandler> {
        self.slot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    slot: HandlerSlot,
    mut shutdown: watch::Receiver<bool>,
    tracker: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = slot.clone();
        let mut shutdown = shutdown.clone();
        let tracker = tracker.clone();
        tokio::spawn(async move {
            let _tracker = tracker;
            let service = hyper::service::service_fn(move |req| {
                let handler = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
                async move { Ok::<_, Infallible>(handler.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                // Bounds how long a client may take to send request headers (slowloris).
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.changed() => {
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Dropping the listener here frees the port before the drain completes.
    drop(listener);
}

//! The sandbox of one workload: what a guest's `Store` holds and what the guest may reach.
//!
//! Every store gets a fresh `WasiCtx` built from the workload's declaration only: its declared env
//! (never the host's), its args, its declared dirs as preopens, no sockets except to declared
//! outbound IP addresses, and guest stdout/stderr forwarded line by line to `tracing`. Memory is
//! capped per store by [`MemoryLimiter`]; outgoing `wasi:http` requests go through
//! [`OutboundPolicy`], which refuses every authority the workload did not declare.

use crate::outbound;
use bytes::Bytes;
use fleetlet_core::model::Capabilities;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Everything needed to build a fresh sandbox for one workload, computed once at prepare.
#[derive(Debug)]
pub(crate) struct SandboxSpec {
    /// `app/workload`, used in logs.
    pub id: Arc<str>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (host dir, guest path, read-only)
    pub dirs: Vec<(PathBuf, String, bool)>,
    pub outbound: Arc<HostPatterns>,
    /// Bytes of linear memory (all memories together) one instance may hold.
    pub memory_limit: usize,
}

impl SandboxSpec {
    /// Host dirs are created here so that a missing volume is a prepare-time error.
    pub fn new(
        id: &str,
        args: Vec<String>,
        env: &std::collections::BTreeMap<String, String>,
        caps: &Capabilities,
        volume_root: PathBuf,
        memory_limit: u64,
    ) -> Result<Self, String> {
        let mut dirs = Vec::new();
        for d in &caps.dirs {
            if !d.path.starts_with('/') {
                return Err(format!(
                    "capability dir {:?} must be an absolute guest path",
                    d.path
                ));
            }
            // `/data/x` → `data%2Fx`: flat, so a workload's volumes cannot nest or escape its
            // root, and one-to-one (validation refuses `//`, `.`, `..` and a trailing `/`), so two
            // guest paths never share a folder.
            let encoded = d
                .path
                .trim_start_matches('/')
                .replace('%', "%25")
                .replace('/', "%2F");
            let host = volume_root.join(encoded);
            std::fs::create_dir_all(&host)
                .map_err(|e| format!("creating volume {}: {e}", host.display()))?;
            dirs.push((host, d.path.clone(), d.read_only));
        }
        let outbound = HostPatterns::parse(&caps.outbound_hosts)?;
        Ok(SandboxSpec {
            id: Arc::from(id),
            args,
            env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            dirs,
            outbound: Arc::new(outbound),
            memory_limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
        })
    }

    /// A fresh store state. `cpu_budget_ticks` is how many epoch ticks the guest may run before
    /// it is cut off (`u64::MAX`: never).
    pub fn state(&self, cpu_budget_ticks: u64) -> Result<GuestState, String> {
        let mut b = WasiCtxBuilder::new();
        b.args(&self.args)
            .envs(&self.env)
            .stdout(LogStream::new(&self.id, "stdout"))
            .stderr(LogStream::new(&self.id, "stderr"))
            .allow_ip_name_lookup(false)
            .allow_udp(false);
        for (host, guest, read_only) in &self.dirs {
            let perms = if *read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            b.preopened_dir(host, guest, perms)
                .map_err(|e| format!("opening volume {}: {e}", host.display()))?;
        }
        let patterns = self.outbound.clone();
        b.socket_addr_check(move |addr, usage| {
            let ok = patterns.allows_socket(addr, usage);
            Box::pin(async move { ok })
        });
        Ok(GuestState {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundPolicy {
                id: self.id.clone(),
                patterns: self.outbound.clone(),
            },
            limiter: MemoryLimiter {
                limit: self.memory_limit,
                used: 0,
            },
            cpu_budget_ticks,
            cpu_ticks: 0,
            cpu_exceeded: false,
        })
    }
}

/// The `T` of every `Store<T>` this host creates.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundPolicy,
    pub limiter: MemoryLimiter,
    cpu_budget_ticks: u64,
    cpu_ticks: u64,
    /// Set when the epoch callback cut the guest off, so the caller can say why it failed.
    pub cpu_exceeded: bool,
}

impl GuestState {
    /// Epoch callback for request handlers: every tick that finds the guest running counts
    /// against its CPU budget (ticks spent waiting on I/O never reach the callback), and each
    /// tick yields to tokio so a busy guest cannot hold a worker thread.
    pub fn on_epoch_tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        self.cpu_ticks += 1;
        if self.cpu_ticks > self.cpu_budget_ticks {
            self.cpu_exceeded = true;
            return Err(wasmtime::Error::msg("cpu time per request exceeded"));
        }
        Ok(UpdateDeadline::Yield(1))
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps the total linear memory of one store. `StoreLimits` caps each memory separately; a
/// component can have several, so the budget is summed here.
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.used.saturating_sub(current).saturating_add(desired);
        if used > self.limit {
            // An error (not `Ok(false)`) traps the guest: a guest that ignores a failed
            // `memory.grow` would otherwise keep running in a degraded state.
            return Err(wasmtime::Error::msg(format!(
                "memory limit exceeded: {used} bytes requested, limit {} bytes",
                self.limit
            )));
        }
        self.used = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold references, not data; this only stops a runaway guest.
        Ok(desired <= 1_000_000)
    }
}

/// Outgoing `wasi:http` requests: allowed only to declared authorities.
struct OutboundPolicy {
    id: Arc<str>,
    patterns: Arc<HostPatterns>,
}

type ErrorFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: ErrorFuture,
    ) -> Box<
        dyn Future<
                Output = Result<(http::Response<WasiBody>, ErrorFuture), wasmtime_wasi_http::Error>,
            > + Send,
    > {
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let default_port = if https { 443 } else { 80 };
        let authority = request.uri().authority().cloned();
        let allowed = authority.as_ref().is_some_and(|a| {
            self.patterns
                .allows(a.host(), a.port_u16().unwrap_or(default_port))
        });
        let id = self.id.clone();
        Box::new(async move {
            let Some(authority) = authority else {
                return Err(wasmtime_wasi_http::Error::HttpRequestUriInvalid);
            };
            if !allowed {
                tracing::warn!(workload = %id, %authority, "outgoing request denied: authority not in outboundHosts");
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            if https {
                // TLS would need a second crypto provider in the agent; see the crate docs.
                return Err(wasmtime_wasi_http::Error::InternalError(Some(
                    "https outgoing requests are not supported by this host".into(),
                )));
            }
            let (resp, io) =
                outbound::send_plain_http(request, options, authority.as_str(), default_port)
                    .await?;
            Ok((resp, Box::new(io) as ErrorFuture))
        })
    }
}

/// Parsed `outboundHosts`: `host`, `host:port`, `*.domain`, `*.domain:port`, port `*` = any.
#[derive(Debug, Default)]
pub(crate) struct HostPatterns(Vec<HostPattern>);

use fleetlet_core::hostpattern::{HostMatch, HostPattern};

impl HostPatterns {
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        patterns
            .iter()
            .map(|p| HostPattern::parse(p))
            .collect::<Result<_, _>>()
            .map(HostPatterns)
    }

    /// Whether an outgoing request to `host:port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.0.iter().any(|p| {
            p.port.is_none_or(|x| x == port)
                && match &p.host {
                    HostMatch::Exact(h) => *h == host,
                    HostMatch::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
                    HostMatch::Ip(a) => ip == Some(*a),
                }
        })
    }

    /// Raw sockets: name lookup is off in the sandbox, so only IP-literal patterns can match a
    /// connect; the implicit wildcard bind that precedes a connect is allowed when any could.
    fn allows_socket(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            SocketAddrUse::TcpConnect => self.0.iter().any(|p| {
                matches!(p.host, HostMatch::Ip(ip) if ip == addr.ip())
                    && p.port.is_none_or(|x| x == addr.port())
            }),
            SocketAddrUse::TcpBind => {
                addr.ip().is_unspecified()
                    && addr.port() == 0
                    && self.0.iter().any(|p| matches!(p.host, HostMatch::Ip(_)))
            }
            _ => false,
        }
    }
}

/// Guest stdout/stderr → `tracing`, one event per line, tagged with the workload id.
struct LogStream {
    id: Arc<str>,
    stream: &'static str,
}

impl LogStream {
    fn new(id: &Arc<str>, stream: &'static str) -> Self {
        LogStream {
            id: id.clone(),
            stream,
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            id: self.id.clone(),
            stream: self.stream,
            buf: Vec::new(),
        })
    }
}

/// Longest line kept before it is logged anyway, so a guest cannot grow host memory.
const MAX_LINE: usize = 16 * 1024;

struct LineLogger {
    id: Arc<str>,
    stream: &'static str,
    buf: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        tracing::info!(workload = %self.id, stream = self.stream, "{}", text.trim_end_matches('\r'));
    }

    fn flush_lines(&mut self) {
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.buf.len() >= MAX_LINE {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

impl tokio::io::AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.buf.extend_from_slice(data);
        self.flush_lines();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

/// A response body with a fixed text, for answers the host gives itself (503, 500).
pub(crate) fn text_body(text: impl Into<Bytes>) -> WasiBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> HostPatterns {
        HostPatterns::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn host_patterns_match_as_documented() {
        let p = pats(&[
            "api.example.com",
            "127.0.0.1:8080",
            "*.svc.local:443",
            "db.local:*",
            "[::1]:9000",
        ]);
        assert!(p.allows("api.example.com", 80));
        assert!(p.allows("API.example.com", 443));
        assert!(p.allows("127.0.0.1", 8080));
        assert!(!p.allows("127.0.0.1", 8081));
        assert!(p.allows("a.svc.local", 443));
        assert!(p.allows("a.b.svc.local", 443));
        assert!(!p.allows("svc.local", 443));
        assert!(!p.allows("a.svc.local", 80));
        assert!(p.allows("db.local", 5432));
        assert!(p.allows("[::1]", 9000));
        assert!(!p.allows("evil.com", 80));
        assert!(!pats(&[]).allows("127.0.0.1", 80));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a:b", "foo*.com", "*.", "h:70000", "[::1"] {
            assert!(HostPatterns::parse(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sockets_only_to_ip_patterns() {
        let p = pats(&["127.0.0.1:8080", "example.com"]);
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(p.allows_socket(a, SocketAddrUse::TcpConnect));
        assert!(!p.allows_socket("127.0.0.1:8081".parse().unwrap(), SocketAddrUse::TcpConnect));
        assert!(p.allows_socket("0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind));
        assert!(!p.allows_socket("0.0.0.0:80".parse().unwrap(), SocketAddrUse::TcpBind));
        assert!(!p.allows_socket(a, SocketAddrUse::TcpListen));
        assert!(
            !pats(&["example.com"])
                .allows_socket("0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind)
        );
    }

    #[test]
    fn memory_limiter_sums_and_traps() {
        let mut l = MemoryLimiter {
            limit: 100,
            used: 0,
        };
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.memory_growing(60, 100, None).unwrap());
        assert!(l.memory_growing(100, 101, None).is_err());
    }
}

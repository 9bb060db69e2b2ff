//! Sending a guest's outgoing `wasi:http` request over plain HTTP/1.1, once the sandbox policy
//! has allowed its authority. wasmtime-wasi-http's own sender is built without (its default
//! feature pulls a second rustls crypto provider into the agent), so the host sends requests
//! itself; HTTPS is refused before this point.

use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Longest wait for connect and for the response head when the guest sets no timeout: long
/// enough for slow upstreams, short enough that a dead one does not pin a request forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `request` to `authority` (host or host:port) and returns the response plus a future
/// that drives the connection until the response body is consumed.
pub(crate) async fn send_plain_http(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    authority: &str,
    default_port: u16,
) -> Result<
    (
        http::Response<WasiBody>,
        impl Future<Output = Result<(), Error>> + Send + 'static,
    ),
    Error,
> {
    use http_body_util::BodyExt;

    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(&addr)).await {
        Ok(s) => s.map_err(Error::Connect)?,
        Err(_) => return Err(Error::ConnectionTimeout),
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request line must carry only the path: scheme and authority are for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection must be driven while waiting for the response head and afterwards while
    // the guest reads the body; a task keeps it going and reports how it ended.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(conn.await);
    });
    let resp = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let resp = resp.map(|b| b.map_err(Error::from).boxed_unsync());
    let io = async move {
        match done_rx.await {
            Ok(Err(e)) => Err(Error::from(e)),
            _ => Ok(()),
        }
    };
    Ok((resp, io))
}

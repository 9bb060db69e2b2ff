//! probe-http: a `wasi:http` handler that reports what its sandbox lets it see and do, so the
//! host's isolation and limits can be tested with a real component over real HTTP.
//!
//! Routes: `/` greeting (`GREETING` env or "world"), `/env` every env var it sees, `/spin` loops
//! forever, `/alloc` allocates without bound, `/file?path=P` reads then writes P,
//! `/outbound?url=http://HOST:PORT/PATH` makes an outgoing request, `/version` the build's
//! `PROBE_VERSION` (default "v1"), so tests can build two versions to exercise replacement.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

wasip2::http::proxy::export!(Probe);

struct Probe;

const VERSION: &str = match option_env!("PROBE_VERSION") {
    Some(v) => v,
    None => "v1",
};

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_query.clone(), String::new()),
        };
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let (status, body) = match path.as_str() {
            "/" => {
                let who = std::env::var("GREETING").unwrap_or_else(|_| "world".to_string());
                (200, format!("hello from probe-http {who}"))
            }
            "/env" => (
                200,
                std::env::vars()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect(),
            ),
            "/version" => (200, VERSION.to_string()),
            "/spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/alloc" => {
                let mut chunks: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch the memory so the allocation is real.
                    chunks.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&chunks);
                }
            }
            "/file" => match param("path") {
                Some(p) => (200, file_probe(&p)),
                None => (400, "missing ?path=".to_string()),
            },
            "/outbound" => match param("url") {
                Some(u) => outbound(&u),
                None => (400, "missing ?url=".to_string()),
            },
            _ => (404, format!("no route {path}")),
        };
        respond(out, status, body.as_bytes());
    }
}

fn file_probe(path: &str) -> String {
    let read = match std::fs::read_to_string(path) {
        Ok(s) => format!("read: ok {s:?}"),
        Err(e) => format!("read: error {e}"),
    };
    let write = match std::fs::write(path, "written by probe-http") {
        Ok(()) => "write: ok".to_string(),
        Err(e) => format!("write: error {e}"),
    };
    format!("{read}\n{write}\n")
}

fn outbound(url: &str) -> (u16, String) {
    let Some(rest) = url.strip_prefix("http://") else {
        return (400, "only http:// urls".to_string());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let set = req.set_scheme(Some(&Scheme::Http)).is_ok()
        && req.set_authority(Some(authority)).is_ok()
        && req.set_path_with_query(Some(path)).is_ok();
    if !set {
        return (400, format!("bad url {url}"));
    }
    let future = match outgoing_handler::handle(req, None) {
        Ok(f) => f,
        Err(e) => return (200, format!("outbound error: {e:?}")),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(resp))) => (200, format!("outbound status: {}", resp.status())),
        Some(Ok(Err(e))) => (200, format!("outbound error: {e:?}")),
        Some(Err(())) => (500, "outbound: response taken twice".to_string()),
        None => (500, "outbound: future not ready after block".to_string()),
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let resp = OutgoingResponse::new(Fields::new());
    let _ = resp.set_status_code(status);
    let Ok(out_body) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(stream) = out_body.write() {
        // blocking_write_and_flush accepts at most 4096 bytes per call.
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(out_body, None);
}

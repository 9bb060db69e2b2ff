//! Shared fixtures: the adapter on its own runtime, pointed at a fresh stand-in, and a raw
//! HTTP client (to act as another field manager without going through the adapter).

#![allow(dead_code)]

use fleetlet_k3s::standin::StandIn;
use fleetlet_k3s::{K3sCluster, K3sConfig};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Fixture {
    // Dropped in this order: the adapter before the runtime it runs on.
    pub cluster: K3sCluster,
    pub runtime: tokio::runtime::Runtime,
    pub standin: StandIn,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

pub fn fixture_with_timeout(timeout: Duration) -> Fixture {
    let standin = StandIn::start();
    let runtime = runtime();
    let cluster = K3sCluster::new(
        K3sConfig {
            kubeconfig: Some(standin.kubeconfig_path().to_path_buf()),
            timeout,
        },
        runtime.handle().clone(),
    )
    .unwrap();
    Fixture {
        cluster,
        runtime,
        standin,
    }
}

pub fn fixture() -> Fixture {
    fixture_with_timeout(Duration::from_secs(5))
}

/// One HTTP/1.1 request on a fresh connection; (status code, JSON body or Null).
pub fn raw(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let content_type = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code: u16 = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A server-side apply as another field manager, through raw HTTP.
pub fn apply_as(
    standin: &StandIn,
    manager: &str,
    path: &str,
    force: bool,
    object: &Value,
) -> (u16, Value) {
    let force = if force { "&force=true" } else { "" };
    raw(
        standin.addr(),
        "PATCH",
        &format!("{path}?fieldManager={manager}{force}"),
        Some("application/apply-patch+yaml"),
        &serde_yaml::to_string(object).unwrap(),
    )
}

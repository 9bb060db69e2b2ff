//! The local registry mirror: serves the site's artifact store read-only over the OCI
//! distribution API (`GET`/`HEAD` of `/v2/`, manifests by tag and digest, blobs with ranges), so
//! k3s's containerd, pointed here by `/etc/rancher/k3s/registries.yaml`, pulls images from the
//! site itself — also while the uplink is down. It only reads the store; the cycle fills it.
//!
//! Tags resolve through the store's `index.json`, whose entries are named
//! `registry/repository:tag@digest` by the pull step. containerd tells a mirror which upstream
//! it stands in for with `?ns=registry`; without it, any registry's tag of that repository
//! matches.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetlet_core::Digest;
use fleetlet_core::reference::ArtifactRef;
use fleetlet_store::OciStore;
use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The mirror's routes over `store`.
pub fn router(store: Arc<OciStore>) -> Router {
    Router::new()
        .route("/v2/", get(base).head(base))
        .route("/v2/{*rest}", get(dispatch).head(dispatch))
        .with_state(store)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<OciStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn base() -> impl IntoResponse {
    ([("Docker-Distribution-API-Version", "registry/2.0")], "{}")
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn dispatch(
    State(store): State<Arc<OciStore>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(
            &store,
            name,
            reference,
            query.get("ns").map(String::as_str),
            method == Method::HEAD,
        )
        .await;
    }
    if let Some((_name, digest)) = rest.rsplit_once("/blobs/") {
        return match digest.parse::<Digest>() {
            Ok(d) => blob(&store, &d, &headers, method == Method::HEAD).await,
            Err(e) => error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string()),
        };
    }
    error(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        format!("no route /v2/{rest}"),
    )
}

/// The digest `reference` (a tag or a digest) names in `repository`, if the store has it.
fn resolve(
    store: &OciStore,
    repository: &str,
    reference: &str,
    ns: Option<&str>,
) -> Option<Digest> {
    if let Ok(d) = reference.parse::<Digest>() {
        return store.contains(&d).then_some(d);
    }
    let entries = store.refs().ok()?;
    // The newest pull of a tag wins (the store numbers its tag entries), as offline
    // resolution in the engine does.
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            let Some(Ok(ArtifactRef::Registry(r))) = e.name().map(str::parse::<ArtifactRef>) else {
                return false;
            };
            r.repository == repository
                && r.tag.as_deref() == Some(reference)
                && ns.is_none_or(|ns| ns == r.registry)
        })
        .max_by_key(|(i, e)| (e.sequence(), *i))
        .map(|(_, e)| e.digest)
}

async fn manifest(
    store: &OciStore,
    repository: &str,
    reference: &str,
    ns: Option<&str>,
    head: bool,
) -> Response {
    let Some(digest) = resolve(store, repository, reference, ns) else {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("{repository}:{reference} is not in this site's store"),
        );
    };
    let bytes = match store.read(&digest) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                format!("{digest} is not in this site's store"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()),
    };
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::from(bytes.clone())
    });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media_type).unwrap_or(HeaderValue::from_static(OCI_MANIFEST)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("Docker-Content-Digest", v);
    }
    resp
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` → (start, end inclusive), clamped to `len`.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

async fn blob(store: &OciStore, digest: &Digest, headers: &HeaderMap, head: bool) -> Response {
    let path = store.path_of(digest);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("{digest} is not in this site's store"),
        );
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(r) => match parse_range(r, len) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            None => {
                let mut resp = error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "RANGE_INVALID",
                    format!("range {r:?} of {len} bytes"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        },
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    let body = if head || count == 0 {
        Body::empty()
    } else {
        if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "seek failed".into(),
            );
        }
        Body::from_stream(tokio_util::io::ReaderStream::new(file.take(count)))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("Docker-Content-Digest", v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        for (spec, want) in [
            ("bytes=0-9", Some((0, 9))),
            ("bytes=5-", Some((5, 99))),
            ("bytes=-10", Some((90, 99))),
            ("bytes=90-200", Some((90, 99))),
            ("bytes=100-", None),
            ("bytes=9-5", None),
            ("bytes=0-1,5-6", None),
            ("items=0-1", None),
        ] {
            assert_eq!(parse_range(spec, 100), want, "{spec}");
        }
    }
}

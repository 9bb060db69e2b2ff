//! The OCI registry adapter: the step of the reconcile cycle that fetches artifacts (after render
//! has pinned them to digests, before the store verifies and commits them), and that publishes
//! Wasm components for `fleetlet push`.
//!
//! What is used from `oci-client` and what is not: its reqwest-based HTTP stack (the same
//! `reqwest`/`rustls` build, so one crypto provider, aws-lc-rs) and its bearer-token handshake
//! (`Client::auth`: challenge, realm, service, scope, token JSON). The requests themselves are
//! made here with `reqwest`, because `oci-client`'s pull/push calls cannot give what the engine
//! needs: they buffer whole manifests without a size cap, stream blobs without a size cut-off,
//! fold HTTP statuses into strings (no `Retry-After`, no way to tell 429 from 500 from 403),
//! and have no retries or mirrors.

use crate::config::{
    ConfigError, Credentials, HostConfig, RegistryConfig, is_loopback, load_ca, load_docker_config,
};
use fleetlet_core::Digest;
use fleetlet_core::reference::RegistryRef;
use fleetlet_engine::registry::{
    BlobSink, Descriptor, FetchedManifest, MAX_MANIFEST_SIZE, Registry, RegistryError,
};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION,
    RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifest media types fleetlet understands (schema 1 and anything else is refused).
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The API host of Docker Hub, which references call `docker.io`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Longest error body read to explain a failed request.
const ERROR_BODY_LIMIT: usize = 2048;

/// Which permission a request needs (bearer tokens are scoped by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Pull,
    Push,
}

/// One place a repository can be reached: a mirror or the registry itself.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host[:port]` the requests go to.
    host: String,
    scheme: &'static str,
    /// For mirrors: the upstream registry, sent as `?ns=` (containerd's convention), so one
    /// mirror can serve several upstreams.
    ns: Option<String>,
}

impl Endpoint {
    fn is_mirror(&self) -> bool {
        self.ns.is_some()
    }

    fn url(&self, path: &str) -> Result<Url, Failure> {
        let mut url = Url::parse(&format!("{}://{}{}", self.scheme, self.host, path))
            .map_err(|e| Failure::Invalid(format!("bad URL for {}: {e}", self.host)))?;
        if let Some(ns) = &self.ns {
            url.query_pairs_mut().append_pair("ns", ns);
        }
        Ok(url)
    }
}

/// A failed attempt, classified by what happens next.
#[derive(Debug)]
enum Failure {
    /// Worth retrying: network errors, timeouts, 5xx, 429 (with its `Retry-After`).
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Denied(String),
    NotFound(String),
    Invalid(String),
    /// The sink (our own disk) failed: no registry can fix that, so nothing is retried.
    Local(String),
}

impl Failure {
    fn transient(message: impl Into<String>) -> Failure {
        Failure::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Failure {
        // Every transport error (refused, reset, timeout, TLS, a body cut short) is treated as
        // transient: retrying is cheap and the final error still names the cause.
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "connection broke while reading"
        } else {
            "request failed"
        };
        Failure::transient(format!("{kind}: {}", error_chain(&e)))
    }

    fn into_error(self, reference: String) -> RegistryError {
        match self {
            Failure::Transient { message, .. } => RegistryError::Unavailable { reference, message },
            Failure::Local(message) => RegistryError::Local { reference, message },
            Failure::Denied(message) => RegistryError::Denied { reference, message },
            Failure::NotFound(message) => RegistryError::NotFound { reference, message },
            Failure::Invalid(message) => RegistryError::Invalid { reference, message },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transient { message, .. } => write!(f, "unavailable: {message}"),
            Failure::Denied(m) => write!(f, "access denied: {m}"),
            Failure::NotFound(m) => write!(f, "not found: {m}"),
            Failure::Invalid(m) => write!(f, "invalid answer: {m}"),
            Failure::Local(m) => write!(f, "{m}"),
        }
    }
}

/// reqwest's Display stops at the outermost error; the cause (refused, reset, …) is inside.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// HTTP clients for one registry host: reqwest for the requests, oci-client for the token
/// handshake, both with that host's scheme and trusted CAs.
#[derive(Clone)]
struct HostClients {
    http: reqwest::Client,
    oci: oci_client::Client,
}

/// The registry adapter. Blocking on the outside (the engine calls it from a plain thread),
/// async inside on the runtime whose handle it was given.
pub struct OciRegistry {
    handle: tokio::runtime::Handle,
    config: RegistryConfig,
    credentials: BTreeMap<String, Credentials>,
    /// Extra CAs per host, read once at construction.
    cas: BTreeMap<String, Vec<reqwest::Certificate>>,
    clients: Mutex<HashMap<String, HostClients>>,
    /// `Authorization` values that worked, per (host, repository, op): a bearer token is scoped
    /// to one repository and one permission.
    auth_cache: Mutex<HashMap<(String, String, Op), HeaderValue>>,
    jitter_counter: AtomicU64,
}

impl fmt::Debug for OciRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciRegistry")
            .field("config", &self.config)
            .field(
                "credential_hosts",
                &self.credentials.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl OciRegistry {
    /// Builds the adapter. `handle` must belong to a multi-thread runtime (or a current-thread
    /// one that another thread drives): the adapter blocks on it with `Handle::block_on` from
    /// the caller's thread, which must not be a runtime worker (a plain or `spawn_blocking`
    /// thread is fine). The runtime needs its time and I/O drivers (`enable_all`). Reads the
    /// CA files and the Docker config now, so a broken one is reported at start-up.
    pub fn new(
        config: RegistryConfig,
        handle: tokio::runtime::Handle,
    ) -> Result<OciRegistry, ConfigError> {
        let credentials = match &config.docker_config {
            Some(path) => load_docker_config(path)?,
            None => BTreeMap::new(),
        };
        let mut cas = BTreeMap::new();
        for (host, host_config) in &config.hosts {
            if let Some(path) = &host_config.ca_file {
                cas.insert(host.clone(), load_ca(path)?);
            }
            for mirror in &host_config.mirrors {
                parse_mirror(mirror).map_err(|message| ConfigError::Mirror {
                    registry: host.clone(),
                    mirror: mirror.clone(),
                    message,
                })?;
            }
        }
        let registry = OciRegistry {
            handle,
            config,
            credentials,
            cas,
            clients: Mutex::new(HashMap::new()),
            auth_cache: Mutex::new(HashMap::new()),
            jitter_counter: AtomicU64::new(0),
        };
        // Build the clients of configured hosts now: a CA that rustls refuses shows up here.
        for host in registry.config.hosts.keys() {
            registry.build_clients(host)?;
        }
        Ok(registry)
    }

    fn host_config(&self, host: &str) -> Option<&HostConfig> {
        self.config.hosts.get(host)
    }

    /// Plain HTTP when the host is marked insecure, or is loopback without a CA of its own.
    fn scheme_for(&self, host: &str) -> &'static str {
        let hc = self.host_config(host);
        let insecure = hc.is_some_and(|h| h.insecure);
        let has_ca = hc.is_some_and(|h| h.ca_file.is_some());
        if insecure || (is_loopback(host) && !has_ca) {
            "http"
        } else {
            "https"
        }
    }

    fn build_clients(&self, host: &str) -> Result<HostClients, ConfigError> {
        let cas = self.cas.get(host).cloned().unwrap_or_default();
        let http = reqwest::Client::builder()
            .connect_timeout(self.config.timeout)
            .read_timeout(self.config.timeout)
            .user_agent(concat!("fleetlet/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(cas.clone())
            .build()
            .map_err(|e| ConfigError::Client(format!("{host}: {}", error_chain(&e))))?;
        let oci_config = oci_client::client::ClientConfig {
            protocol: if self.scheme_for(host) == "http" {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            extra_root_certificates: match self.host_config(host).and_then(|h| h.ca_file.as_ref()) {
                Some(path) => vec![oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: std::fs::read(path).map_err(|e| ConfigError::CaFile {
                        path: path.clone(),
                        message: e.to_string(),
                    })?,
                }],
                None => Vec::new(),
            },
            connect_timeout: Some(self.config.timeout),
            read_timeout: Some(self.config.timeout),
            ..Default::default()
        };
        // try_from, not new: `Client::new` silently falls back to defaults on a bad config.
        let oci = oci_client::Client::try_from(oci_config)
            .map_err(|e| ConfigError::Client(format!("{host}: {e}")))?;
        let clients = HostClients { http, oci };
        if let Ok(mut map) = self.clients.lock() {
            map.insert(host.to_string(), clients.clone());
        }
        Ok(clients)
    }

    fn clients(&self, host: &str) -> Result<HostClients, Failure> {
        if let Some(c) = self.clients.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(c);
        }
        self.build_clients(host)
            .map_err(|e| Failure::Invalid(e.to_string()))
    }

    /// The mirrors of `registry`, then the registry itself.
    fn endpoints(&self, registry: &str, with_mirrors: bool) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if with_mirrors {
            for mirror in self
                .host_config(registry)
                .map(|h| h.mirrors.as_slice())
                .unwrap_or_default()
            {
                // Checked in `new`; a mirror that does not parse is skipped, never fatal here.
                if let Ok((scheme, host)) = parse_mirror(mirror) {
                    let scheme = scheme.unwrap_or_else(|| self.scheme_for(&host));
                    out.push(Endpoint {
                        host,
                        scheme,
                        ns: Some(registry.to_string()),
                    });
                }
            }
        }
        let host = if registry == fleetlet_core::reference::DEFAULT_REGISTRY {
            DOCKER_HUB_API.to_string()
        } else {
            registry.to_string()
        };
        out.push(Endpoint {
            scheme: self.scheme_for(registry),
            host,
            ns: None,
        });
        out
    }

    fn credentials_for(&self, host: &str) -> Option<&Credentials> {
        let key = if host == DOCKER_HUB_API {
            "docker.io"
        } else {
            host
        };
        self.credentials.get(key)
    }

    /// Runs `fut` to completion from the caller's thread. That thread must not be a runtime
    /// worker (tokio panics then); a plain thread or a `spawn_blocking` thread is fine. There is
    /// no guard: `Handle::try_current` cannot tell a worker from a `spawn_blocking` thread, and
    /// refusing the latter would refuse the agent's normal way of calling the engine.
    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        self.handle.block_on(fut)
    }

    /// Backoff before retry number `attempt` (0-based): exponential, capped, with jitter
    /// ("equal jitter": half fixed, half random) so many sites do not retry in lock-step.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.backoff.as_millis().max(1) as u64;
        let ceiling = base.saturating_mul(1 << attempt.min(5));
        let random = std::collections::hash_map::RandomState::new()
            .hash_one(self.jitter_counter.fetch_add(1, Ordering::Relaxed));
        Duration::from_millis(ceiling / 2 + random % (ceiling / 2 + 1))
    }

    /// Runs `attempt` on each endpoint in turn (mirrors first, on any failure the next one),
    /// and repeats the whole chain with backoff while the last endpoint's failure is transient.
    async fn with_retries<T>(
        &self,
        endpoints: &[Endpoint],
        mut attempt: impl AsyncFnMut(&Endpoint) -> Result<T, Failure>,
    ) -> Result<T, (Failure, Vec<String>)> {
        let mut round = 0;
        loop {
            let mut mirror_failures = Vec::new();
            let mut last = None;
            for endpoint in endpoints {
                match attempt(endpoint).await {
                    Ok(value) => return Ok(value),
                    Err(failure @ Failure::Local(_)) => return Err((failure, mirror_failures)),
                    Err(failure) if endpoint.is_mirror() => {
                        tracing::warn!(mirror = %endpoint.host, %failure, "registry mirror failed; trying the next");
                        mirror_failures.push(format!("mirror {}: {failure}", endpoint.host));
                    }
                    Err(failure) => last = Some(failure),
                }
            }
            let Some(failure) = last else {
                // Unreachable (the registry itself is always the last endpoint), but not worth a panic.
                return Err((
                    Failure::Invalid("no endpoint to try".into()),
                    mirror_failures,
                ));
            };
            let Failure::Transient { retry_after, .. } = &failure else {
                return Err((failure, mirror_failures));
            };
            if round >= self.config.retries {
                return Err((failure, mirror_failures));
            }
            let delay = match retry_after {
                Some(asked) => (*asked).min(self.config.max_retry_after),
                None => self.backoff(round),
            };
            tracing::debug!(%failure, ?delay, retry = round + 1, "transient registry failure; retrying");
            tokio::time::sleep(delay).await;
            round += 1;
        }
    }

    /// Sends one request, with cached credentials; on a 401 it answers the challenge (basic
    /// from the Docker config, or a bearer token through oci-client) and sends it once more.
    /// Returns any response: statuses are the caller's to judge.
    async fn send(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        op: Op,
        method: Method,
        url: Url,
        decorate: &dyn Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, Failure> {
        let clients = self.clients(&endpoint.host)?;
        // Credentials go only to the registry they belong to, never to a host a Location
        // header points at (cloud storage, a CDN): the distribution spec forbids it.
        let same_host = url
            .host_str()
            .zip(url.port_or_known_default())
            .map(|(h, p)| (h.to_string(), p))
            == Url::parse(&format!("{}://{}", endpoint.scheme, endpoint.host))
                .ok()
                .and_then(|u| {
                    u.host_str()
                        .zip(u.port_or_known_default())
                        .map(|(h, p)| (h.to_string(), p))
                });
        let key = (endpoint.host.clone(), repository.to_string(), op);
        let mut answered_challenge = false;
        loop {
            let auth = if same_host {
                self.auth_cache
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).cloned())
            } else {
                None
            };
            let mut request = decorate(clients.http.request(method.clone(), url.clone()));
            if let Some(value) = &auth {
                request = request.header(AUTHORIZATION, value.clone());
            }
            let response = request.send().await.map_err(Failure::from_reqwest)?;
            if response.status() != StatusCode::UNAUTHORIZED || answered_challenge || !same_host {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Some(value) = self
                .answer_challenge(endpoint, &clients, repository, op, &challenge)
                .await?
            else {
                return Ok(response);
            };
            if let Ok(mut cache) = self.auth_cache.lock() {
                cache.insert(key.clone(), value);
            }
            answered_challenge = true;
        }
    }

    /// The `Authorization` value that answers `challenge`, or `None` when there is nothing to
    /// answer with (no credentials for a basic challenge).
    async fn answer_challenge(
        &self,
        endpoint: &Endpoint,
        clients: &HostClients,
        repository: &str,
        op: Op,
        challenge: &str,
    ) -> Result<Option<HeaderValue>, Failure> {
        let creds = self.credentials_for(&endpoint.host);
        let scheme = challenge
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if scheme == "bearer" {
            let auth = match creds {
                Some(c) => {
                    oci_client::secrets::RegistryAuth::Basic(c.username.clone(), c.password.clone())
                }
                None => oci_client::secrets::RegistryAuth::Anonymous,
            };
            let reference = oci_client::Reference::with_tag(
                endpoint.host.clone(),
                repository.to_string(),
                "latest".to_string(),
            );
            let oci_op = match op {
                Op::Pull => oci_client::RegistryOperation::Pull,
                Op::Push => oci_client::RegistryOperation::Push,
            };
            return match clients.oci.auth(&reference, &auth, oci_op).await {
                Ok(Some(token)) => HeaderValue::from_str(&format!("Bearer {token}"))
                    .map(Some)
                    .map_err(|_| {
                        Failure::Invalid(
                            "the token service returned a token that is not a valid header".into(),
                        )
                    }),
                Ok(None) => Ok(None),
                Err(oci_client::errors::OciDistributionError::AuthenticationFailure(reason)) => {
                    Err(Failure::Denied(format!(
                        "token service refused {} ({}): {}",
                        if creds.is_some() {
                            "the credentials"
                        } else {
                            "anonymous access"
                        },
                        endpoint.host,
                        reason.trim()
                    )))
                }
                Err(e) => Err(Failure::transient(format!("token service: {e}"))),
            };
        }
        // A basic challenge (or none at all): send the user and password, if we have them.
        let Some(creds) = creds else { return Ok(None) };
        let value = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", creds.username, creds.password),
        );
        HeaderValue::from_str(&format!("Basic {value}"))
            .map(Some)
            .map_err(|_| Failure::Invalid("credentials cannot be sent as a header".into()))
    }

    /// Turns a non-success response into a failure naming the status and the registry's words.
    async fn status_failure(&self, endpoint: &Endpoint, mut response: Response) -> Failure {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let detail = error_detail(&body);
        let status_text = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let with_detail = |s: String| {
            if detail.is_empty() {
                s
            } else {
                format!("{s}: {detail}")
            }
        };
        match status {
            StatusCode::UNAUTHORIZED => {
                Failure::Denied(match self.credentials_for(&endpoint.host) {
                    Some(c) => format!(
                        "{status_text} (credentials of {} for {} rejected)",
                        c.username, endpoint.host
                    ),
                    None => format!("{status_text} (no credentials for {})", endpoint.host),
                })
            }
            StatusCode::FORBIDDEN => Failure::Denied(with_detail(status_text)),
            StatusCode::NOT_FOUND => Failure::NotFound(with_detail(status_text)),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => Failure::Transient {
                message: with_detail(status_text),
                retry_after,
            },
            s if s.is_server_error() => Failure::Transient {
                message: with_detail(status_text),
                retry_after,
            },
            _ => Failure::Invalid(with_detail(format!("unexpected {status_text}"))),
        }
    }

    async fn fetch_manifest_once(
        &self,
        endpoint: &Endpoint,
        reference: &RegistryRef,
        target: &str,
    ) -> Result<FetchedManifest, Failure> {
        let url = endpoint.url(&format!("/v2/{}/manifests/{target}", reference.repository))?;
        let accept = MANIFEST_MEDIA_TYPES.join(", ");
        let mut response = self
            .send(
                endpoint,
                &reference.repository,
                Op::Pull,
                Method::GET,
                url,
                &|r| r.header(ACCEPT, accept.as_str()),
            )
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self.status_failure(endpoint, response).await);
        }
        if let Some(len) = declared_length(response.headers())
            && len > MAX_MANIFEST_SIZE
        {
            return Err(Failure::Invalid(format!(
                "manifest of {len} bytes exceeds the {MAX_MANIFEST_SIZE}-byte limit"
            )));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Failure::from_reqwest)? {
            // Counted as it arrives: a registry without Content-Length cannot make us buffer more.
            if bytes.len() as u64 + chunk.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(Failure::Invalid(format!(
                    "manifest exceeds the {MAX_MANIFEST_SIZE}-byte limit"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let media_type = manifest_media_type(&content_type, &bytes).map_err(Failure::Invalid)?;
        let digest = Digest::of(&bytes);
        if let Some(want) = &reference.digest
            && *want != digest
        {
            return Err(Failure::Invalid(format!(
                "manifest bytes hash to {digest}, not the pinned {want}"
            )));
        }
        if let Some(header) = header_digest
            && let Ok(claimed) = header.parse::<Digest>()
            && claimed != digest
        {
            return Err(Failure::Invalid(format!(
                "Docker-Content-Digest says {claimed} but the manifest bytes hash to {digest}"
            )));
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The referrers API (OCI 1.1): `Ok(None)` when the registry does not have it (404), so the
    /// caller falls back to the tag schema.
    async fn referrers_once(
        &self,
        endpoint: &Endpoint,
        subject: &RegistryRef,
        digest: &Digest,
    ) -> Result<Option<FetchedManifest>, Failure> {
        let url = endpoint.url(&format!("/v2/{}/referrers/{digest}", subject.repository))?;
        let mut response = self
            .send(
                endpoint,
                &subject.repository,
                Op::Pull,
                Method::GET,
                url,
                &|r| r.header(ACCEPT, OCI_INDEX),
            )
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST => {
                return Ok(None);
            }
            _ => return Err(self.status_failure(endpoint, response).await),
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Failure::from_reqwest)? {
            if bytes.len() as u64 + chunk.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(Failure::Invalid(format!(
                    "referrers index exceeds the {MAX_MANIFEST_SIZE}-byte limit"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        // A registry without the API may answer 200 with something else (an HTML page): only
        // an index counts.
        let is_index = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .is_some_and(|v| v.get("manifests").is_some_and(|m| m.is_array()));
        if !is_index {
            return Ok(None);
        }
        let digest = Digest::of(&bytes);
        Ok(Some(FetchedManifest {
            bytes,
            media_type: OCI_INDEX.to_string(),
            digest,
        }))
    }

    async fn fetch_blob_once(
        &self,
        endpoint: &Endpoint,
        reference: &RegistryRef,
        descriptor: &Descriptor,
        sink: &mut dyn BlobSink,
        dirty: &mut bool,
    ) -> Result<u64, Failure> {
        if *dirty {
            // Bytes of a broken attempt are in the sink: start it over rather than append.
            sink.restart().map_err(|e| {
                Failure::Local(format!("restarting the download in the store: {e}"))
            })?;
            *dirty = false;
        }
        let url = endpoint.url(&format!(
            "/v2/{}/blobs/{}",
            reference.repository, descriptor.digest
        ))?;
        let mut response = self
            .send(
                endpoint,
                &reference.repository,
                Op::Pull,
                Method::GET,
                url,
                &|r| r,
            )
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self.status_failure(endpoint, response).await);
        }
        let size = descriptor.size;
        match declared_length(response.headers()) {
            Some(len) if len != size => {
                return Err(Failure::Invalid(format!(
                    "blob {} announced {len} bytes but its descriptor says {size}",
                    descriptor.digest
                )));
            }
            _ => {}
        }
        let mut written: u64 = 0;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::transient(format!(
                        "blob {} broke off after {written} of {size} bytes: {}",
                        descriptor.digest,
                        Failure::from_reqwest(e)
                    )));
                }
            };
            if written + chunk.len() as u64 > size {
                return Err(Failure::Invalid(format!(
                    "blob {} sent more than the {size} bytes its descriptor says; cut off",
                    descriptor.digest
                )));
            }
            *dirty = true;
            sink.write_all(&chunk).map_err(|e| {
                Failure::Local(format!(
                    "writing blob {} to the store: {e}",
                    descriptor.digest
                ))
            })?;
            written += chunk.len() as u64;
        }
        if written < size {
            return Err(Failure::Invalid(format!(
                "blob {} ended after {written} of the {size} bytes its descriptor says",
                descriptor.digest
            )));
        }
        sink.flush().map_err(|e| {
            Failure::Local(format!(
                "writing blob {} to the store: {e}",
                descriptor.digest
            ))
        })?;
        Ok(written)
    }

    async fn push_blob_once(
        &self,
        endpoint: &Endpoint,
        reference: &RegistryRef,
        digest: &Digest,
        body: &bytes::Bytes,
    ) -> Result<(), Failure> {
        let repo = &reference.repository;
        let blob_url = endpoint.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let head = self
            .send(endpoint, repo, Op::Push, Method::HEAD, blob_url, &|r| r)
            .await?;
        match head.status() {
            StatusCode::OK => return Ok(()),
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.status_failure(endpoint, head).await),
        }
        let start_url = endpoint.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        let started = self
            .send(
                endpoint,
                repo,
                Op::Push,
                Method::POST,
                start_url.clone(),
                &|r| r.header(CONTENT_LENGTH, "0"),
            )
            .await?;
        if started.status() != StatusCode::ACCEPTED {
            return Err(self.status_failure(endpoint, started).await);
        }
        let location = started
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::Invalid("upload started without a Location header".into()))?;
        // Location may be relative to the registry, or absolute (another host, even).
        let mut put_url = start_url.join(location).map_err(|e| {
            Failure::Invalid(format!("upload Location {location:?} is not a URL: {e}"))
        })?;
        put_url
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let body = body.clone();
        let put = self
            .send(endpoint, repo, Op::Push, Method::PUT, put_url, &|r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        if put.status() != StatusCode::CREATED {
            return Err(self.status_failure(endpoint, put).await);
        }
        Ok(())
    }

    async fn push_manifest_once(
        &self,
        endpoint: &Endpoint,
        reference: &RegistryRef,
        target: &str,
        body: &bytes::Bytes,
        media_type: &str,
        computed: Digest,
    ) -> Result<Digest, Failure> {
        let url = endpoint.url(&format!("/v2/{}/manifests/{target}", reference.repository))?;
        let response = self
            .send(
                endpoint,
                &reference.repository,
                Op::Push,
                Method::PUT,
                url,
                &|r| r.header(CONTENT_TYPE, media_type).body(body.clone()),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.status_failure(endpoint, response).await);
        }
        match response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(header) => {
                let claimed: Digest = header.parse().map_err(|e| {
                    Failure::Invalid(format!(
                        "registry answered Docker-Content-Digest {header:?}: {e}"
                    ))
                })?;
                if claimed != computed {
                    return Err(Failure::Invalid(format!(
                        "registry stored the manifest as {claimed}, but its bytes hash to {computed}"
                    )));
                }
                Ok(claimed)
            }
            None => Ok(computed),
        }
    }
}

/// Joins the registry's failure with what happened on the mirrors before it.
fn finish<T>(
    reference: String,
    result: Result<T, (Failure, Vec<String>)>,
) -> Result<T, RegistryError> {
    result.map_err(|(failure, mirrors)| {
        let failure = if mirrors.is_empty() {
            failure
        } else {
            let suffix = format!(" (after {})", mirrors.join("; "));
            match failure {
                Failure::Transient {
                    message,
                    retry_after,
                } => Failure::Transient {
                    message: message + &suffix,
                    retry_after,
                },
                Failure::Denied(m) => Failure::Denied(m + &suffix),
                Failure::NotFound(m) => Failure::NotFound(m + &suffix),
                Failure::Invalid(m) => Failure::Invalid(m + &suffix),
                Failure::Local(m) => Failure::Local(m + &suffix),
            }
        };
        failure.into_error(reference)
    })
}

impl Registry for OciRegistry {
    fn fetch_manifest(&self, reference: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        let target = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => {
                return Err(RegistryError::Invalid {
                    reference: reference.to_string(),
                    message: "the reference names neither a tag nor a digest".into(),
                });
            }
        };
        let endpoints = self.endpoints(&reference.registry, true);
        self.block_on(async {
            let result = self
                .with_retries(&endpoints, async |ep| {
                    self.fetch_manifest_once(ep, reference, &target).await
                })
                .await;
            finish(reference.to_string(), result)
        })
    }

    fn fetch_blob(
        &self,
        reference: &RegistryRef,
        descriptor: &Descriptor,
        sink: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        let blob_ref = format!(
            "{}/{}@{}",
            reference.registry, reference.repository, descriptor.digest
        );
        let endpoints = self.endpoints(&reference.registry, true);
        let mut dirty = false;
        self.block_on(async {
            let result = self
                .with_retries(&endpoints, async |ep| {
                    self.fetch_blob_once(ep, reference, descriptor, &mut *sink, &mut dirty)
                        .await
                })
                .await;
            finish(blob_ref.clone(), result)
        })
    }

    fn referrers(&self, subject: &RegistryRef) -> Result<Option<FetchedManifest>, RegistryError> {
        let Some(digest) = subject.digest else {
            return Ok(None);
        };
        let endpoints = self.endpoints(&subject.registry, true);
        let api = self.block_on(async {
            let result = self
                .with_retries(&endpoints, async |ep| {
                    self.referrers_once(ep, subject, &digest).await
                })
                .await;
            finish(subject.to_string(), result)
        })?;
        if api.is_some() {
            return Ok(api);
        }
        // The tag-schema fallback, as cosign uses on registries without the API.
        let fallback = RegistryRef {
            tag: Some(fleetlet_engine::trust::referrers_tag(&digest)),
            digest: None,
            ..subject.clone()
        };
        match self.fetch_manifest(&fallback) {
            Ok(m) => Ok(Some(m)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn push_blob(
        &self,
        reference: &RegistryRef,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let blob_ref = format!("{}/{}@{}", reference.registry, reference.repository, digest);
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(RegistryError::Invalid {
                reference: blob_ref,
                message: format!("refusing to upload: the bytes hash to {actual}"),
            });
        }
        // Pushes go to the registry itself: mirrors are read-only caches.
        let endpoints = self.endpoints(&reference.registry, false);
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.block_on(async {
            let result = self
                .with_retries(&endpoints, async |ep| {
                    self.push_blob_once(ep, reference, digest, &body).await
                })
                .await;
            finish(blob_ref.clone(), result)
        })
    }

    fn push_manifest(
        &self,
        reference: &RegistryRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let computed = Digest::of(bytes);
        if let Some(want) = &reference.digest
            && *want != computed
        {
            return Err(RegistryError::Invalid {
                reference: reference.to_string(),
                message: format!("refusing to upload: the manifest hashes to {computed}"),
            });
        }
        let target = reference
            .tag
            .clone()
            .unwrap_or_else(|| computed.to_string());
        let endpoints = self.endpoints(&reference.registry, false);
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.block_on(async {
            let result = self
                .with_retries(&endpoints, async |ep| {
                    self.push_manifest_once(ep, reference, &target, &body, media_type, computed)
                        .await
                })
                .await;
            finish(reference.to_string(), result)
        })
    }
}

/// Splits a mirror entry into an optional forced scheme and `host[:port]`.
fn parse_mirror(mirror: &str) -> Result<(Option<&'static str>, String), String> {
    let (scheme, rest) = match mirror.split_once("://") {
        Some(("http", rest)) => (Some("http"), rest),
        Some(("https", rest)) => (Some("https"), rest),
        Some((other, _)) => return Err(format!("unsupported scheme {other:?} (http or https)")),
        None => (None, mirror),
    };
    let rest = rest.trim_end_matches('/');
    let host = rest.strip_suffix("/v2").unwrap_or(rest);
    if host.is_empty() || host.contains('/') {
        return Err("expected host[:port], optionally with http:// or https://".into());
    }
    Ok((scheme, host.to_string()))
}

/// The `Content-Length` header as sent (reqwest's `content_length` is the body's size hint).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// A short description of an error body: the OCI error envelope's first code and message, or
/// the first line of text.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<EnvelopeError>,
    }
    #[derive(serde::Deserialize)]
    struct EnvelopeError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body)
        && let Some(first) = env.errors.first()
    {
        return format!("{} {}", first.code, first.message)
            .trim()
            .to_string();
    }
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// The media type of a fetched manifest: the Content-Type when it is a manifest type, else the
/// JSON's own `mediaType`, else what its shape says (OCI allows leaving `mediaType` out).
fn manifest_media_type(content_type: &str, bytes: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u64>,
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    if content_type.starts_with("text/html") {
        return Err("the registry answered an HTML page, not a manifest".into());
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "the manifest is not JSON ({e}; Content-Type {:?})",
            if content_type.is_empty() {
                "none"
            } else {
                content_type
            }
        )
    })?;
    if probe.schema_version != Some(2) {
        return Err(format!(
            "unsupported manifest schemaVersion {} (only 2)",
            probe
                .schema_version
                .map_or("missing".to_string(), |v| v.to_string())
        ));
    }
    let known = |t: &str| MANIFEST_MEDIA_TYPES.contains(&t);
    if known(content_type) {
        return Ok(content_type.to_string());
    }
    match probe.media_type {
        Some(t) if known(&t) => Ok(t),
        Some(t) => Err(format!("unsupported manifest media type {t:?}")),
        None if probe.manifests.is_some() => Ok(OCI_INDEX.to_string()),
        None if probe.config.is_some() => Ok(OCI_MANIFEST.to_string()),
        None => Err(format!(
            "cannot tell what kind of manifest this is (Content-Type {content_type:?}, no mediaType)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_from_header_body_or_shape() {
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            manifest_media_type("application/json", oci).as_deref(),
            Ok(OCI_INDEX)
        );
        assert_eq!(
            manifest_media_type(DOCKER_MANIFEST, br#"{"schemaVersion":2}"#).as_deref(),
            Ok(DOCKER_MANIFEST)
        );
        assert_eq!(
            manifest_media_type("", br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Ok(OCI_MANIFEST)
        );
        assert!(manifest_media_type("text/html", b"<html>").is_err());
        assert!(manifest_media_type("application/json", b"<html>").is_err());
        assert!(manifest_media_type("application/json", br#"{"schemaVersion":1}"#).is_err());
        assert!(
            manifest_media_type(
                "",
                br#"{"schemaVersion":2,"mediaType":"application/x-foo"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn mirrors_parse() {
        assert_eq!(
            parse_mirror("mirror.local:5000"),
            Ok((None, "mirror.local:5000".to_string()))
        );
        assert_eq!(
            parse_mirror("http://127.0.0.1:5001/v2/"),
            Ok((Some("http"), "127.0.0.1:5001".to_string()))
        );
        assert!(parse_mirror("ftp://x").is_err());
        assert!(parse_mirror("https://host/some/path").is_err());
    }

    #[test]
    fn error_bodies_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(error_detail(body), "MANIFEST_UNKNOWN manifest unknown");
        assert_eq!(
            error_detail(b"\n  404 page not found\n"),
            "404 page not found"
        );
    }

    #[test]
    fn the_adapter_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OciRegistry>();
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let config = RegistryConfig {
            backoff: Duration::from_millis(100),
            ..Default::default()
        };
        let reg = OciRegistry::new(config, rt.handle().clone()).expect("registry");
        for attempt in 0..10 {
            let d = reg.backoff(attempt);
            let ceiling = 100u64 << attempt.min(5);
            assert!(
                d.as_millis() as u64 >= ceiling / 2 && d.as_millis() as u64 <= ceiling,
                "{attempt}: {d:?}"
            );
        }
    }
}

//! Settings of the OCI registry adapter — the part of the reconcile cycle that fetches artifacts
//! (after render has pinned their digests, before the store verifies them): per-registry TLS,
//! plain-HTTP and mirror settings, the Docker `config.json` credentials come from, and the
//! timeout/retry policy. Everything here is read once, when the adapter is built, so a bad CA
//! file or credentials file fails at start-up rather than in the middle of a pull.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default for [`RegistryConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`RegistryConfig::retries`].
pub const DEFAULT_RETRIES: u32 = 3;
/// Default for [`RegistryConfig::backoff`].
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(250);
/// Default for [`RegistryConfig::max_retry_after`].
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How the adapter reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Per-registry settings, keyed by registry host as references spell it (`host[:port]`).
    pub hosts: BTreeMap<String, HostConfig>,
    /// A Docker `config.json` to take credentials from (`auths.<host>.auth` or
    /// `username`/`password`). `None`: every registry is accessed anonymously.
    pub docker_config: Option<PathBuf>,
    /// Connect timeout, and idle timeout of every read (headers and each body chunk): a registry
    /// that stops sending mid-body fails within it instead of stalling the cycle forever.
    pub timeout: Duration,
    /// Retries after the first attempt on transient failures (network, 5xx, 429).
    pub retries: u32,
    /// First backoff delay; doubled per retry, with full jitter, capped at 32× this.
    pub backoff: Duration,
    /// Longest `Retry-After` honoured; a registry asking for longer gets this.
    pub max_retry_after: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            hosts: BTreeMap::new(),
            docker_config: None,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            backoff: DEFAULT_BACKOFF,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// Settings of one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Talk plain HTTP to this registry. Loopback registries (`127.0.0.1`, `::1`, `localhost`)
    /// get plain HTTP without it, like Docker does, unless they have a `ca_file`.
    pub insecure: bool,
    /// An extra CA (PEM) trusted for this registry, on top of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Mirrors tried in order before this registry: `host[:port]` (scheme from that host's own
    /// settings), or `http://host[:port]` / `https://host[:port]` to force one.
    pub mirrors: Vec<String>,
}

/// Why the adapter could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("registry CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("docker config {path}: {message}")]
    DockerConfig { path: PathBuf, message: String },
    #[error("registry mirror {mirror:?} of {registry}: {message}")]
    Mirror {
        registry: String,
        mirror: String,
        message: String,
    },
    #[error("HTTP client: {0}")]
    Client(String),
}

/// A user name and password for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password into a log line.
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// Whether `host[:port]` names the local machine (Docker's rule for implicit plain HTTP).
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = strip_port(host);
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host` without `:port`; IPv6 literals come bracketed (`[::1]:5000`).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // A single colon separates a port; more than one is a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Reduces a `config.json` key (`https://index.docker.io/v1/`, `host:5000`, `http://host`) to
/// the registry host it stands for.
fn normalise_auth_key(key: &str) -> String {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        // Docker Hub has three names; references say docker.io.
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

#[derive(serde::Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Reads the credentials of a Docker `config.json`, keyed by normalised registry host.
pub(crate) fn load_docker_config(
    path: &Path,
) -> Result<BTreeMap<String, Credentials>, ConfigError> {
    let err = |message: String| ConfigError::DockerConfig {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let file: DockerConfigFile =
        serde_json::from_slice(&text).map_err(|e| err(format!("not a Docker config.json: {e}")))?;
    if let Some(store) = file.creds_store {
        // Credential helpers are programs; an agent on an edge site should not run them.
        tracing::warn!(path = %path.display(), store, "docker config credsStore is not supported; using only its auths");
    }
    let mut out = BTreeMap::new();
    for (key, entry) in file.auths {
        let creds = match (
            entry.auth.filter(|a| !a.is_empty()),
            entry.username,
            entry.password,
        ) {
            (Some(auth), _, _) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| err(format!("auths.{key}.auth is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| err(format!("auths.{key}.auth is not UTF-8")))?;
                let (username, password) = decoded.split_once(':').ok_or_else(|| {
                    err(format!("auths.{key}.auth is not base64 of user:password"))
                })?;
                Credentials {
                    username: username.to_string(),
                    password: password.to_string(),
                }
            }
            (None, Some(username), Some(password)) => Credentials { username, password },
            // An entry without a secret (e.g. only an identitytoken) gives nothing usable here.
            _ => continue,
        };
        out.insert(normalise_auth_key(&key), creds);
    }
    Ok(out)
}

/// Reads a PEM CA file, checking that it holds at least one certificate.
pub(crate) fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let err = |message: String| ConfigError::CaFile {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| err(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "::1",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn docker_config_keys_and_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}},
                    "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                    "https://reg.example.com/v2/": {{"identitytoken": "x"}}}}}}"#
            ),
        )
        .expect("write");
        let creds = load_docker_config(&path).expect("load");
        assert_eq!(creds["docker.io"].username, "alice");
        assert_eq!(creds["docker.io"].password, "s3cr:et");
        assert_eq!(creds["127.0.0.1:5000"].username, "bob");
        assert!(!creds.contains_key("reg.example.com"));
        assert!(!format!("{:?}", creds["127.0.0.1:5000"]).contains("pw"));
    }

    #[test]
    fn bad_docker_config_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths": {"h": {"auth": "!!"}}}"#).expect("write");
        assert!(matches!(
            load_docker_config(&path),
            Err(ConfigError::DockerConfig { .. })
        ));
    }
}

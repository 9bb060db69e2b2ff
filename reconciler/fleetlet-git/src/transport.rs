//! How the "observe/pull" step of the reconcile cycle talks to the remote: which URLs are local,
//! ssh host-key checking against a pinned `known_hosts` file, ssh credentials, and libgit2's
//! network timeouts. An edge site is often on a hostile or flaky network, so the defaults are
//! strict: an ssh host that is not in the file is refused (never trusted on first use), and a
//! silent server costs at most the configured timeout.

use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

/// Whether `url` names a repository on this machine (a plain path or a `file://` URL), and where.
///
/// The agent watches such a path for changes instead of waiting for the next poll. `user@host:path`
/// (scp-like ssh) and every other `scheme://` URL are remote.
pub fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        // `file://localhost/srv/x` and `file:///srv/x` name the same path.
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        return Some(PathBuf::from(rest));
    }
    if url.contains("://") || scp_like(url).is_some() || url.is_empty() {
        return None;
    }
    Some(PathBuf::from(url))
}

/// `[user@]host:path`, the scp-like ssh syntax Git accepts: a colon before the first slash.
fn scp_like(url: &str) -> Option<(&str, &str)> {
    if url.starts_with('/') || url.starts_with('.') {
        return None;
    }
    let colon = url.find(':')?;
    if url[..colon].contains('/') {
        return None;
    }
    Some((&url[..colon], &url[colon + 1..]))
}

/// Where an ssh remote lives, for host-key lookup and the login name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl SshTarget {
    /// The name a `known_hosts` file uses for this host: `host` on port 22, else `[host]:port`.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// Parses `ssh://[user@]host[:port]/path` and `[user@]host:path`; `None` for other URLs.
pub(crate) fn ssh_target(url: &str) -> Option<SshTarget> {
    let authority = if let Some(rest) = url
        .strip_prefix("ssh://")
        .or_else(|| url.strip_prefix("git+ssh://"))
    {
        rest.split('/').next().unwrap_or(rest)
    } else if !url.contains("://") {
        // scp-like syntax has no port.
        let (authority, _) = scp_like(url)?;
        let (user, host) = split_user(authority);
        return Some(SshTarget {
            user,
            host: host.to_string(),
            port: 22,
        });
    } else {
        return None;
    };
    let (user, hostport) = split_user(authority);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ => 22,
    };
    Some(SshTarget {
        user,
        host: host.to_string(),
        port,
    })
}

fn split_user(authority: &str) -> (Option<String>, &str) {
    match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), host),
        None => (None, authority),
    }
}

/// Why an ssh host key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostKeyError {
    #[error("ssh host {host} is not in known_hosts {file}; add its key (ssh-keyscan) to trust it")]
    Unknown { host: String, file: String },
    #[error(
        "ssh host key of {host} ({key_type}) does not match known_hosts {file}: possible man-in-the-middle"
    )]
    Mismatch {
        host: String,
        key_type: String,
        file: String,
    },
    #[error("ssh host key of {host} is marked @revoked in known_hosts {file}")]
    Revoked { host: String, file: String },
    #[error("libgit2 gave no raw ssh host key for {host}; cannot check it")]
    NoKey { host: String },
}

/// A pinned OpenSSH `known_hosts` file.
///
/// Supports plain and `[host]:port` names, comma lists, `*`/`?` wildcards, `!` negation and
/// `@revoked`. Hashed names (`|1|...`, from `ssh-keyscan -H`) and `@cert-authority` lines are
/// ignored: write plain names for the hosts the agent pulls from.
#[derive(Debug, Clone)]
pub(crate) struct KnownHosts {
    file: String,
    entries: Vec<KnownHost>,
}

#[derive(Debug, Clone)]
struct KnownHost {
    patterns: Vec<String>,
    key_type: String,
    key: Vec<u8>,
    revoked: bool,
}

impl KnownHosts {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(
            &path.display().to_string(),
            &std::fs::read_to_string(path)?,
        ))
    }

    pub fn parse(file: &str, text: &str) -> Self {
        let mut entries = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace().peekable();
            let revoked = match fields.peek() {
                None => continue,
                Some(f) if f.starts_with('#') => continue,
                Some(&"@revoked") => {
                    fields.next();
                    true
                }
                Some(f) if f.starts_with('@') => continue,
                Some(_) => false,
            };
            let (Some(hosts), Some(key_type), Some(key)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if hosts.starts_with('|') {
                continue;
            }
            let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key) else {
                continue;
            };
            entries.push(KnownHost {
                patterns: hosts.split(',').map(str::to_string).collect(),
                key_type: key_type.to_string(),
                key,
                revoked,
            });
        }
        Self {
            file: file.to_string(),
            entries,
        }
    }

    /// Accepts the key only if a line for `host` carries exactly this key.
    pub fn check(&self, host: &str, key_type: &str, key: &[u8]) -> Result<(), HostKeyError> {
        let lines: Vec<&KnownHost> = self
            .entries
            .iter()
            .filter(|e| host_matches(&e.patterns, host))
            .collect();
        if lines.iter().any(|e| e.revoked && e.key == key) {
            return Err(HostKeyError::Revoked {
                host: host.to_string(),
                file: self.file.clone(),
            });
        }
        if lines
            .iter()
            .any(|e| !e.revoked && e.key_type == key_type && e.key == key)
        {
            return Ok(());
        }
        if lines.iter().any(|e| !e.revoked) {
            return Err(HostKeyError::Mismatch {
                host: host.to_string(),
                key_type: key_type.to_string(),
                file: self.file.clone(),
            });
        }
        Err(HostKeyError::Unknown {
            host: host.to_string(),
            file: self.file.clone(),
        })
    }
}

fn host_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard(negated.as_bytes(), host.as_bytes()) {
                return false;
            }
        } else if wildcard(pattern.as_bytes(), host.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// OpenSSH's pattern language: `*` any run, `?` one character, everything else literal
/// (so `[host]:port` is literal, unlike in a shell glob).
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], text) || (!text.is_empty() && wildcard(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => wildcard(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// What the callbacks of one connection learnt, to tell a refused host key (a human must act)
/// from a network failure (retry later) once libgit2 returns its error.
#[derive(Debug, Default, Clone)]
pub(crate) struct CallbackOutcome {
    pub host_key_error: Rc<RefCell<Option<HostKeyError>>>,
}

/// Settings the callbacks need, borrowed from the source's configuration.
pub(crate) struct CallbackSettings<'a> {
    pub ssh: Option<&'a SshTarget>,
    pub known_hosts: Option<&'a KnownHosts>,
    pub ssh_key: Option<&'a Path>,
}

/// libgit2 asks for credentials again after each rejected attempt; stop instead of looping.
const MAX_CREDENTIAL_ATTEMPTS: u32 = 3;

pub(crate) fn callbacks<'a>(
    settings: &CallbackSettings<'a>,
    outcome: &CallbackOutcome,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();

    let ssh = settings.ssh;
    let known_hosts = settings.known_hosts;
    let host_key_error = outcome.host_key_error.clone();
    cb.certificate_check(move |cert, hostname| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has already verified the chain against the system CAs plus `ca_file`;
            // keep its verdict.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let host = match ssh {
            Some(t) => t.known_hosts_name(),
            None => hostname.to_string(),
        };
        let result = match (known_hosts, hostkey.hostkey(), hostkey.hostkey_type()) {
            (Some(kh), Some(key), Some(kind)) => kh.check(&host, kind.name(), key),
            (None, _, _) => Err(HostKeyError::Unknown {
                host,
                file: "(none configured)".into(),
            }),
            _ => Err(HostKeyError::NoKey { host }),
        };
        match result {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(e) => {
                let message = e.to_string();
                *host_key_error.borrow_mut() = Some(e);
                Err(git2::Error::from_str(&message))
            }
        }
    });

    let ssh_key = settings.ssh_key.map(Path::to_path_buf);
    let default_user = ssh
        .and_then(|t| t.user.clone())
        .unwrap_or_else(|| "git".to_string());
    let attempts = Cell::new(0u32);
    cb.credentials(move |_url, username_from_url, allowed| {
        attempts.set(attempts.get() + 1);
        if attempts.get() > MAX_CREDENTIAL_ATTEMPTS {
            return Err(git2::Error::from_str(
                "authentication failed: the remote rejected the configured credentials",
            ));
        }
        let user = username_from_url
            .map(str::to_string)
            .unwrap_or_else(|| default_user.clone());
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            return match &ssh_key {
                Some(key) => Cred::ssh_key(&user, None, key, None),
                None => Err(git2::Error::from_str(
                    "the remote requires an ssh key and no ssh_key is configured",
                )),
            };
        }
        Err(git2::Error::from_str(&format!(
            "the remote requires credentials of type {allowed:?}; none are configured"
        )))
    });
    cb
}

/// libgit2's timeouts are process-wide settings; remember what was set so each poll only writes
/// them when a source with another timeout polls.
static APPLIED_TIMEOUT_MS: Mutex<Option<i32>> = Mutex::new(None);

/// Sets libgit2's connect and read/write timeouts (both to `timeout`). They apply to TCP-based
/// transports (git://, http(s)://, and the connect of ssh://); libssh2 reads have no timeout.
///
/// The setting is global to the process: with several sources, the one that polls sets it for
/// its own connection; the agent runs a single source, so in practice it is set once.
pub(crate) fn apply_timeouts(timeout: Duration) -> Result<(), git2::Error> {
    let ms = i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    let mut applied = APPLIED_TIMEOUT_MS.lock().unwrap_or_else(|e| e.into_inner());
    if *applied == Some(ms) {
        return Ok(());
    }
    // SAFETY: libgit2 documents these as unsynchronised globals. Writes are serialised by the
    // mutex above; a concurrent read by another thread's connect sees either the old or the new
    // aligned int (no allocation or pointer is involved).
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(ms)?;
        git2::opts::set_server_timeout_in_milliseconds(ms)?;
    }
    *applied = Some(ms);
    Ok(())
}

/// Adds `ca_file` to the certificate authorities libgit2's TLS trusts (in addition to the
/// system's). This too is process-wide; adding the same file twice is harmless.
pub(crate) fn add_ca_file(ca_file: &Path) -> Result<(), git2::Error> {
    static ADDED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut added = ADDED.lock().unwrap_or_else(|e| e.into_inner());
    if added.iter().any(|p| p == ca_file) {
        return Ok(());
    }
    // SAFETY: as above, a libgit2 global; calls are serialised by the mutex. It loads the file
    // into the shared OpenSSL context, which OpenSSL itself locks.
    unsafe { git2::opts::set_ssl_cert_file(ca_file)? };
    added.push(ca_file.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_local_from_remote() {
        assert_eq!(local_path("/srv/fleet"), Some(PathBuf::from("/srv/fleet")));
        assert_eq!(local_path("./fleet"), Some(PathBuf::from("./fleet")));
        assert_eq!(local_path("fleet"), Some(PathBuf::from("fleet")));
        assert_eq!(
            local_path("file:///srv/fleet"),
            Some(PathBuf::from("/srv/fleet"))
        );
        assert_eq!(
            local_path("file://localhost/srv/fleet"),
            Some(PathBuf::from("/srv/fleet"))
        );
        for remote in [
            "git://h/x",
            "https://h/x",
            "ssh://git@h/x",
            "git@github.com:o/r.git",
            "",
        ] {
            assert_eq!(local_path(remote), None, "{remote}");
        }
    }

    #[test]
    fn parses_ssh_targets() {
        let t = ssh_target("ssh://deploy@127.0.0.1:2222/srv/repo.git").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host.as_str(), t.port),
            (Some("deploy"), "127.0.0.1", 2222)
        );
        assert_eq!(t.known_hosts_name(), "[127.0.0.1]:2222");
        let t = ssh_target("git@example.org:fleet/repo.git").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.known_hosts_name()),
            ("example.org", 22, "example.org".to_string())
        );
        let t = ssh_target("ssh://[::1]:22/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 22));
        assert!(ssh_target("https://example.org/x").is_none());
        assert!(ssh_target("/srv/x").is_none());
    }

    #[test]
    fn checks_known_hosts() {
        let k1 = base64::engine::general_purpose::STANDARD.encode(b"key-one");
        let k2 = base64::engine::general_purpose::STANDARD.encode(b"key-two");
        let text = format!(
            "# comment\n[127.0.0.1]:2222 ssh-ed25519 {k1}\n*.example.org,!bad.example.org ssh-ed25519 {k2}\n\
             @revoked old.example.org ssh-ed25519 {k1}\n|1|hashed|entry ssh-ed25519 {k1}\n"
        );
        let kh = KnownHosts::parse("kh", &text);
        assert_eq!(
            kh.check("[127.0.0.1]:2222", "ssh-ed25519", b"key-one"),
            Ok(())
        );
        assert!(matches!(
            kh.check("[127.0.0.1]:2222", "ssh-ed25519", b"key-two"),
            Err(HostKeyError::Mismatch { .. })
        ));
        assert!(matches!(
            kh.check("127.0.0.1", "ssh-ed25519", b"key-one"),
            Err(HostKeyError::Unknown { .. })
        ));
        assert_eq!(
            kh.check("git.example.org", "ssh-ed25519", b"key-two"),
            Ok(())
        );
        assert!(matches!(
            kh.check("bad.example.org", "ssh-ed25519", b"key-two"),
            Err(HostKeyError::Unknown { .. })
        ));
        assert!(matches!(
            kh.check("old.example.org", "ssh-ed25519", b"key-one"),
            Err(HostKeyError::Revoked { .. })
        ));
    }
}

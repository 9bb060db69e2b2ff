//! Outbound host patterns of a workload's capabilities (`host`, `host:port`, `*.domain:port`,
//! `[v6]:port`; port `*` = any). One parser, used by validation and by the Wasm sandbox, so what
//! validates is exactly what the sandbox enforces.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: HostMatch,
    /// `None`: any port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` → `.example.com`: any name below it, not the domain itself.
    Suffix(String),
    Ip(IpAddr),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("outbound host {raw:?}: {why}");
        let s = raw.trim().to_ascii_lowercase();
        // `[v6]:port`, `[v6]`, `host:port`, `host`; a bare v6 literal has several colons.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (h.to_string(), Some(p.to_string())),
                None if after.is_empty() => (h.to_string(), None),
                None => return Err(bad("unexpected text after ]")),
            }
        } else if s.matches(':').count() == 1 {
            let (h, p) = s.split_once(':').ok_or_else(|| bad("bad port"))?;
            (h.to_string(), Some(p.to_string()))
        } else {
            (s.clone(), None)
        };
        let port = match port.as_deref() {
            None | Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("port must be 1-65535 or *"))?,
            ),
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            HostMatch::Ip(ip)
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(bad("a wildcard must be `*.domain`"));
            }
            HostMatch::Suffix(format!(".{domain}"))
        } else if host.contains('*') {
            return Err(bad("a wildcard must be `*.domain`"));
        } else {
            HostMatch::Exact(host)
        };
        Ok(HostPattern { host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        for (raw, ok) in [
            ("api.example.com", true),
            ("api.example.com:443", true),
            ("*.example.com:*", true),
            ("127.0.0.1:8080", true),
            ("[::1]:80", true),
            ("::1", true),
            ("*.*.example.com", false),
            ("*.", false),
            ("[::1", false),
            ("host:0", false),
            ("host:99999", false),
            ("", false),
        ] {
            assert_eq!(HostPattern::parse(raw).is_ok(), ok, "{raw:?}");
        }
    }
}

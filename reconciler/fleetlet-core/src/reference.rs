//! Artifact references as workloads name them: `registry/repo:tag`, `registry/repo@sha256:…`,
//! both, or a local OCI image layout (`oci:PATH:TAG`, `oci:PATH@sha256:…`, skopeo's
//! convention). Parsed once here; everything downstream carries the typed value.

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's registry name, for references without one (`nginx` → `docker.io/library/nginx`).
pub const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactRef {
    Registry(RegistryRef),
    /// A local OCI image layout directory.
    Layout(LayoutRef),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryRef {
    /// Host and optional port: `registry.example.com`, `127.0.0.1:5000`.
    pub registry: String,
    /// `fleet/edge-gateway`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayoutRef {
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid artifact reference {input:?}: {reason}")]
pub struct RefParseError {
    pub input: String,
    pub reason: String,
}

impl RegistryRef {
    /// The same repository at `digest` (what a tag resolves to).
    pub fn pinned(&self, digest: Digest) -> RegistryRef {
        RegistryRef {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

fn valid_tag(t: &str) -> bool {
    // OCI distribution: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_repository(r: &str) -> bool {
    // Path components of lower-case alphanumerics separated by `.`, `_`, `__` or `-` runs.
    !r.is_empty()
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

/// Splits `name[:tag][@digest]`, where the name may itself hold a `:port`.
fn split_tag_digest(s: &str) -> Result<(&str, Option<String>, Option<Digest>), String> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (
            r,
            Some(d.parse::<Digest>().map_err(|e| e.reason.to_string())?),
        ),
        None => (s, None),
    };
    // A tag is after the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &rest[last_slash + i + 1..];
            if !valid_tag(tag) {
                return Err(format!("invalid tag {tag:?}"));
            }
            Ok((&rest[..last_slash + i], Some(tag.to_string()), digest))
        }
        None => Ok((rest, None, digest)),
    }
}

impl FromStr for ArtifactRef {
    type Err = RefParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| RefParseError {
            input: input.to_string(),
            reason,
        };
        if let Some(rest) = input.strip_prefix("oci:") {
            // skopeo: oci:PATH[:TAG] or oci:PATH@DIGEST; a path may not contain ':' then.
            let (path, digest) = match rest.split_once('@') {
                Some((p, d)) => (
                    p,
                    Some(d.parse::<Digest>().map_err(|e| err(e.reason.to_string()))?),
                ),
                None => (rest, None),
            };
            let (path, tag) = match (digest.is_some(), path.rsplit_once(':')) {
                (false, Some((p, t))) => {
                    if !valid_tag(t) {
                        return Err(err(format!("invalid tag {t:?}")));
                    }
                    (p, Some(t.to_string()))
                }
                _ => (path, None),
            };
            if path.is_empty() {
                return Err(err("empty layout path".into()));
            }
            if tag.is_none() && digest.is_none() {
                return Err(err("a layout reference needs :TAG or @sha256:DIGEST".into()));
            }
            return Ok(ArtifactRef::Layout(LayoutRef {
                path: path.to_string(),
                tag,
                digest,
            }));
        }
        if input.contains("://") {
            return Err(err("no scheme: write registry/repository:tag".into()));
        }
        let (name, tag, digest) = split_tag_digest(input).map_err(err)?;
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if name.contains('/') => (DEFAULT_REGISTRY.to_string(), name.to_string()),
            _ => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
        };
        if !valid_repository(&repository) {
            return Err(err(format!(
                "invalid repository {repository:?} (lower-case letters, digits, '.', '_', '-', separated by '/')"
            )));
        }
        if tag.is_none() && digest.is_none() {
            return Err(err(
                "name a tag (:1.2.0) or a digest (@sha256:…); fleetlet never assumes :latest"
                    .into(),
            ));
        }
        Ok(ArtifactRef::Registry(RegistryRef {
            registry,
            repository,
            tag,
            digest,
        }))
    }
}

fn write_tail(
    f: &mut fmt::Formatter<'_>,
    tag: &Option<String>,
    digest: &Option<Digest>,
) -> fmt::Result {
    if let Some(t) = tag {
        write!(f, ":{t}")?;
    }
    if let Some(d) = digest {
        write!(f, "@{d}")?;
    }
    Ok(())
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        write_tail(f, &self.tag, &self.digest)
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactRef::Registry(r) => r.fmt(f),
            ArtifactRef::Layout(l) => {
                write!(f, "oci:{}", l.path)?;
                write_tail(f, &l.tag, &l.digest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_registry_references() {
        let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
            (
                "registry.example.com/fleet/gw:1.4.0",
                "registry.example.com",
                "fleet/gw",
                Some("1.4.0"),
                false,
            ),
            (
                "127.0.0.1:5000/app:v1",
                "127.0.0.1:5000",
                "app",
                Some("v1"),
                false,
            ),
            ("localhost/app:v1", "localhost", "app", Some("v1"), false),
            (
                "nginx:1.27",
                "docker.io",
                "library/nginx",
                Some("1.27"),
                false,
            ),
            ("acme/app:2", "docker.io", "acme/app", Some("2"), false),
        ];
        for (input, registry, repository, tag, _) in cases {
            let ArtifactRef::Registry(r) = input.parse().unwrap() else {
                panic!("{input}")
            };
            assert_eq!(
                (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
                (*registry, *repository, *tag),
                "{input}"
            );
        }
        let r: ArtifactRef = format!("127.0.0.1:5000/a/b:t@{D}").parse().unwrap();
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a/b:t@{D}"));
        let ArtifactRef::Registry(r) = format!("host.io/a@{D}").parse().unwrap() else {
            panic!()
        };
        assert_eq!(r.digest.unwrap().to_string(), D);
        assert_eq!(r.tag, None);
    }

    #[test]
    fn parses_layout_references() {
        let ArtifactRef::Layout(l) = "oci:/tmp/layout:v1".parse().unwrap() else {
            panic!()
        };
        assert_eq!(
            (l.path.as_str(), l.tag.as_deref()),
            ("/tmp/layout", Some("v1"))
        );
        let ArtifactRef::Layout(l) = format!("oci:rel/dir@{D}").parse().unwrap() else {
            panic!()
        };
        assert_eq!((l.path.as_str(), l.tag), ("rel/dir", None));
        assert_eq!(l.digest.unwrap().to_string(), D);
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "registry.example.com/app",
            "https://registry.example.com/app:1",
            "Registry.example.com/App:1",
            "host.io/app:bad tag",
            "host.io/app@sha256:abc",
            "oci:/tmp/layout",
            "oci::v1",
            "host.io//app:1",
        ] {
            assert!(bad.parse::<ArtifactRef>().is_err(), "{bad}");
        }
    }
}

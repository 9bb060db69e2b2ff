//! Which ref the "observe/pull" step of the reconcile cycle follows: a branch, or the newest tag
//! matching a pattern. Works on the remote's ref advertisement (what `git ls-remote` prints), so
//! the choice is made before any object is fetched.
//!
//! The tag rule: among tags matching the glob, strip the pattern's literal prefix (the text before
//! its first wildcard: `release-` in `release-*`) and then one leading `v`/`V`; if every match
//! then parses as a semantic version, the highest version wins by semver precedence
//! (`v1.10.0` > `v1.2.0`; equal versions are ordered by tag name). Pre-releases
//! (`v2.0.0-rc.1`) are passed over while any release matches, so a release candidate never rolls
//! out to a fleet that follows `v*`; a pattern that names them (`v*-rc*`) matches only them. If any match does not parse, all matches are compared by
//! the commit time of the commit they tag instead (ties: tag name). Mixing schemes would make
//! "newest" ambiguous, so it is all-or-nothing.

use git2::Oid;
use globset::{Glob, GlobMatcher};
use std::collections::BTreeMap;

/// What the source follows on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// A branch name (`main`) or a full ref (`refs/heads/main`).
    Branch(String),
    /// A glob over tag names (`v*`, `release-*`); `*` also matches `/`. See the module docs for
    /// how the newest match is chosen.
    TagPattern(String),
    /// What the last imported sync bundle carried (the mirror's `refs/fleetlet/imported`):
    /// air-gapped sites have no remote at all.
    Imported,
}

impl Follow {
    /// The full ref name of a followed branch.
    pub(crate) fn branch_ref(name: &str) -> String {
        if name.starts_with("refs/") {
            name.to_string()
        } else {
            format!("refs/heads/{name}")
        }
    }
}

/// One advertised ref, with the commit an annotated tag points to when the server sent it
/// (the `^{}` lines of the advertisement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub name: String,
    pub oid: Oid,
    pub peeled: Option<Oid>,
}

/// Folds `refs/tags/x^{}` lines into the `refs/tags/x` they peel.
pub(crate) fn collect_heads<'a>(advertised: impl IntoIterator<Item = (&'a str, Oid)>) -> Vec<Head> {
    let mut heads: BTreeMap<String, Head> = BTreeMap::new();
    let mut peeled = Vec::new();
    for (name, oid) in advertised {
        match name.strip_suffix("^{}") {
            Some(base) => peeled.push((base.to_string(), oid)),
            None => {
                heads.insert(
                    name.to_string(),
                    Head {
                        name: name.to_string(),
                        oid,
                        peeled: None,
                    },
                );
            }
        }
    }
    for (base, oid) in peeled {
        if let Some(head) = heads.get_mut(&base) {
            head.peeled = Some(oid);
        }
    }
    heads.into_values().collect()
}

/// A compiled tag pattern.
#[derive(Debug, Clone)]
pub(crate) struct TagPattern {
    matcher: GlobMatcher,
    /// Literal text before the first wildcard, stripped before parsing versions.
    prefix: String,
}

impl TagPattern {
    pub fn new(pattern: &str) -> Result<Self, globset::Error> {
        let matcher = Glob::new(pattern)?.compile_matcher();
        let prefix: String = pattern
            .chars()
            .take_while(|c| !matches!(c, '*' | '?' | '[' | '{' | '\\'))
            .collect();
        Ok(Self { matcher, prefix })
    }

    /// Advertised tags matching the pattern.
    pub fn matches<'h>(&self, heads: &'h [Head]) -> Vec<&'h Head> {
        heads
            .iter()
            .filter(|h| {
                h.name
                    .strip_prefix("refs/tags/")
                    .is_some_and(|t| self.matcher.is_match(t))
            })
            .collect()
    }

    /// The semantic version a tag name encodes under this pattern, if any.
    pub fn version(&self, tag_ref: &str) -> Option<semver::Version> {
        let tag = tag_ref.strip_prefix("refs/tags/").unwrap_or(tag_ref);
        let rest = tag.strip_prefix(self.prefix.as_str()).unwrap_or(tag);
        let rest = rest.strip_prefix(['v', 'V']).unwrap_or(rest);
        semver::Version::parse(rest).ok()
    }

    /// The newest of `candidates` by semantic version, or `None` if any of them is not a version
    /// (then the caller orders them by commit time).
    pub fn newest_by_version<'h>(&self, candidates: &[&'h Head]) -> Option<&'h Head> {
        let versions: Option<Vec<(semver::Version, &Head)>> = candidates
            .iter()
            .map(|h| self.version(&h.name).map(|v| (v, *h)))
            .collect();
        let versions = versions?;
        let has_release = versions.iter().any(|(v, _)| v.pre.is_empty());
        versions
            .into_iter()
            .filter(|(v, _)| !has_release || v.pre.is_empty())
            .max_by(|(va, ha), (vb, hb)| va.cmp(vb).then_with(|| ha.name.cmp(&hb.name)))
            .map(|(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_over_pre_releases_while_a_release_matches() {
        let oid = Oid::ZERO_SHA1;
        let heads = collect_heads([("refs/tags/v1.10.0", oid), ("refs/tags/v2.0.0-rc.1", oid)]);
        let p = TagPattern::new("v*").unwrap();
        let all = p.matches(&heads);
        assert_eq!(p.newest_by_version(&all).unwrap().name, "refs/tags/v1.10.0");
        let rc = TagPattern::new("v*-rc*").unwrap();
        let only_rc = rc.matches(&heads);
        assert_eq!(
            rc.newest_by_version(&only_rc).unwrap().name,
            "refs/tags/v2.0.0-rc.1"
        );
    }

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    fn heads(names: &[&str]) -> Vec<Head> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Head {
                name: n.to_string(),
                oid: oid(i as u8),
                peeled: None,
            })
            .collect()
    }

    #[test]
    fn folds_peeled_tags() {
        let got = collect_heads([
            ("refs/tags/a", oid(1)),
            ("refs/tags/a^{}", oid(2)),
            ("refs/heads/main", oid(3)),
        ]);
        assert_eq!(got.len(), 2);
        let a = got.iter().find(|h| h.name == "refs/tags/a").unwrap();
        assert_eq!((a.oid, a.peeled), (oid(1), Some(oid(2))));
    }

    #[test]
    fn picks_highest_semver() {
        let p = TagPattern::new("v*").unwrap();
        let hs = heads(&[
            "refs/tags/v1.0.0",
            "refs/tags/v1.10.0",
            "refs/tags/v1.2.0",
            "refs/tags/v1.10.0-rc.1",
            "refs/heads/v9.0.0",
        ]);
        let m = p.matches(&hs);
        assert_eq!(m.len(), 4);
        assert_eq!(p.newest_by_version(&m).unwrap().name, "refs/tags/v1.10.0");
        // Among pre-releases only, plain semver precedence.
        let hs = heads(&["refs/tags/v1.10.0-rc.2", "refs/tags/v2.0.0-rc.1"]);
        assert_eq!(
            p.newest_by_version(&p.matches(&hs)).unwrap().name,
            "refs/tags/v2.0.0-rc.1"
        );
    }

    #[test]
    fn strips_the_pattern_prefix() {
        let p = TagPattern::new("release-*").unwrap();
        let hs = heads(&[
            "refs/tags/release-1.9.0",
            "refs/tags/release-v1.11.0",
            "refs/tags/other-3.0.0",
        ]);
        let m = p.matches(&hs);
        assert_eq!(
            p.newest_by_version(&m).unwrap().name,
            "refs/tags/release-v1.11.0"
        );
    }

    #[test]
    fn falls_back_when_any_tag_is_not_a_version() {
        let p = TagPattern::new("*").unwrap();
        let hs = heads(&["refs/tags/v1.0.0", "refs/tags/nightly"]);
        assert!(p.newest_by_version(&p.matches(&hs)).is_none());
    }
}

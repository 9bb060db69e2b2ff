//! A snapshot of the fleet repo's files at one commit, as bytes. The Git source builds it from the
//! object database; tests build it from literals. Paths are relative, `/`-separated, normalised.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoTree {
    files: BTreeMap<String, Vec<u8>>,
}

impl RepoTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), bytes.into());
    }

    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(normalize(path)?.as_str()).map(Vec::as_slice)
    }

    pub fn contains_file(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Whether `path` names a folder holding at least one file.
    pub fn contains_dir(&self, path: &str) -> bool {
        self.files_under(path).next().is_some()
    }

    /// Files under folder `dir` (recursively), in path order.
    pub fn files_under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = normalize(dir)
            .map(|d| if d.is_empty() { d } else { format!("{d}/") })
            .unwrap_or_else(|| "\0invalid".to_string());
        self.files
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Normalises a repo-relative path: strips `./` and trailing `/`, refuses absolute paths and `..`.
pub fn normalize(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        for (input, want) in [
            ("a/b", Some("a/b")),
            ("./a//b/", Some("a/b")),
            ("", Some("")),
            ("/etc/passwd", None),
            ("a/../b", None),
        ] {
            assert_eq!(normalize(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn lists_folders() {
        let mut t = RepoTree::new();
        t.insert("k3s/a.yaml", "a");
        t.insert("k3s/sub/b.yaml", "b");
        t.insert("k3sx/c.yaml", "c");
        let got: Vec<_> = t.files_under("k3s/").map(|(p, _)| p).collect();
        assert_eq!(got, ["k3s/a.yaml", "k3s/sub/b.yaml"]);
        assert!(t.contains_dir("./k3s"));
        assert!(!t.contains_dir("k3"));
    }
}

//! Entry paths: what a bundle may name. The rules are strict on purpose: a path that passes
//! can be joined under the staging directory with no way out of it, on any file system.

use crate::BundleError;

/// Longest accepted path, and longest component (what Linux file systems store).
pub const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;

/// Checks `raw` as the relative, normalized, `/`-separated path of a file in a bundle and
/// returns it as a string.
pub fn validate(raw: &[u8]) -> Result<String, BundleError> {
    let path = match std::str::from_utf8(raw) {
        Ok(p) => p.to_string(),
        Err(_) => {
            return Err(BundleError::PathNotUtf8 {
                path: String::from_utf8_lossy(raw).into_owned(),
            });
        }
    };
    let bad = |reason| BundleError::PathNotNormalized {
        path: path.clone(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("empty"));
    }
    // Checked before the `..` rule so that `/etc/passwd` is called what it is.
    if path.starts_with('/') {
        return Err(BundleError::AbsolutePath { path });
    }
    // Backslashes are separators (and `C:\` absolute) to Windows tools that may later copy the
    // staging tree; control characters make paths that display as something else.
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(BundleError::PathCharacters { path });
    }
    if path.len() > MAX_PATH {
        return Err(BundleError::PathTooLong {
            path,
            limit: MAX_PATH,
        });
    }
    for component in path.split('/') {
        match component {
            ".." => return Err(BundleError::PathEscapes { path }),
            "" => return Err(bad("empty component")),
            "." => return Err(bad("`.` component")),
            c if c.len() > MAX_COMPONENT => {
                return Err(BundleError::PathTooLong {
                    path,
                    limit: MAX_PATH,
                });
            }
            _ => {}
        }
    }
    if is_reserved(&path) {
        return Err(BundleError::ReservedPath { path });
    }
    Ok(path)
}

/// `manifest.json`, `manifest.sig`, `manifest.key` and any future `manifest.*` at the top.
pub fn is_reserved(path: &str) -> bool {
    path.starts_with("manifest.")
}

/// The parent directories of `path`, innermost last: `a/b/c` → `a`, `a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in [
            "a",
            "oci/index.json",
            "blobs/sha256/ab12",
            "git/objects/pack/pack-1.pack",
            "a.b/c-d_e",
        ] {
            assert_eq!(validate(ok.as_bytes()).unwrap(), ok);
        }
    }

    #[test]
    fn rejects_each_bad_form_with_its_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"../etc/passwd", "path leaves the bundle"),
            (b"a/../../b", "path leaves the bundle"),
            (b"..", "path leaves the bundle"),
            (b"/etc/passwd", "absolute"),
            (b"a\\..\\b", "backslashes"),
            (b"C:\\x", "backslashes"),
            (b"a\nb", "control"),
            (b"a//b", "empty component"),
            (b"a/", "empty component"),
            (b"./a", "`.` component"),
            (b"", "empty"),
            (b"manifest.json", "reserved"),
            (b"manifest.anything", "reserved"),
            (b"\xff", "not UTF-8"),
        ];
        for (raw, want) in cases {
            let err = validate(raw).unwrap_err().to_string();
            assert!(err.contains(want), "{raw:?}: {err}");
        }
        assert!(validate("a/".repeat(3000).as_bytes()).is_err());
        assert!(validate(&vec![b'a'; 256]).is_err());
        // Not reserved below the top.
        assert!(validate(b"x/manifest.json").is_ok());
    }

    #[test]
    fn lists_ancestors() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
    }
}

//! The `allowed_signers` file of `ssh-keygen(1)` (section ALLOWED SIGNERS): which SSH keys may
//! sign, as which principals, for which namespaces and during which time window.
//!
//! The parser follows OpenSSH's own (`sshsig.c`, `auth-options.c`) rather than only the man
//! page, so a file that `ssh-keygen -Y verify` accepts means the same here. Where OpenSSH merely
//! skips a broken line (and so silently distrusts that key), we refuse the whole file with the
//! line number: a typo in a trust root should be loud.
//!
//! Deliberate differences from `ssh-keygen`:
//! - `cert-authority` lines are refused: SSH certificates are not supported.
//! - Timestamps without a `Z` suffix are read as UTC, not in the system time zone, so a verdict
//!   does not depend on the agent's `TZ`.

use ssh_key::{Algorithm, PublicKey};

use super::CommitSigError;
use super::pattern::{PatternMatch, match_pattern_list};
use super::time::format_utc;

/// One parsed, usable line of an `allowed_signers` file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// 1-based line number in the source, for messages.
    pub line: usize,
    /// The principal patterns, in file order (may contain `*`, `?` and `!` negations).
    pub principals: Vec<String>,
    /// `namespaces="…"`: a pattern list the signature namespace must match; `None` allows all.
    pub namespaces: Option<String>,
    /// `valid-after="…"`, as Unix seconds (inclusive).
    pub valid_after: Option<i64>,
    /// `valid-before="…"`, as Unix seconds (inclusive, as OpenSSH compares with `>`).
    pub valid_before: Option<i64>,
    /// The trusted key.
    pub key: PublicKey,
}

impl AllowedSigner {
    /// Whether this entry permits signatures in `namespace`.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(list) => match_pattern_list(namespace, list) == PatternMatch::Positive,
        }
    }

    /// Why this entry is not valid at `time`, if it is not.
    pub fn invalid_at(&self, time: i64) -> Option<String> {
        if let Some(after) = self.valid_after
            && time < after
        {
            return Some(format!(
                "key is not yet valid: valid-after {}",
                format_utc(after)
            ));
        }
        if let Some(before) = self.valid_before
            && time > before
        {
            return Some(format!(
                "key has expired: valid-before {}",
                format_utc(before)
            ));
        }
        None
    }

    /// The principal identities this entry vouches for, the way `git` asks for them: each
    /// non-negated principal that the entry's own pattern list accepts (`ssh-keygen -Y verify
    /// -I <principal>`), in file order.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        let list = self.principals.join(",");
        self.principals
            .iter()
            .map(String::as_str)
            .filter(|p| !p.starts_with('!'))
            .filter(move |p| match_pattern_list(p, &list) == PatternMatch::Positive)
    }

    /// Whether a signer restriction (a pattern list given per call) admits this entry: either
    /// one of the entry's identities matches the restriction, or a literal identity named in the
    /// restriction is accepted by the entry's principal patterns (`ssh-keygen -I` semantics, so
    /// `*@example.com,!mallory@example.com` admits `alice@example.com` but not mallory).
    pub fn admitted_by(&self, allowed: &[String]) -> Option<String> {
        let allowed_list = allowed.join(",");
        if let Some(id) = self
            .identities()
            .find(|id| match_pattern_list(id, &allowed_list) == PatternMatch::Positive)
        {
            return Some(id.to_owned());
        }
        let own_list = self.principals.join(",");
        allowed
            .iter()
            .filter(|a| !a.starts_with('!'))
            .find(|a| {
                match_pattern_list(a, &own_list) == PatternMatch::Positive
                    && match_pattern_list(a, &allowed_list) == PatternMatch::Positive
            })
            .cloned()
    }
}

/// A parsed `allowed_signers` file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    /// Where the text came from (a path or a config key), for messages.
    pub source: String,
    pub entries: Vec<AllowedSigner>,
}

impl AllowedSigners {
    /// Parses `text`; `source` names it in errors (`source:line: message`).
    pub fn parse(source: &str, text: &str) -> Result<Self, CommitSigError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |message: String| CommitSigError::AllowedSigners {
                origin: source.to_owned(),
                line,
                message,
            };
            if let Some(entry) = parse_line(raw).map_err(fail)? {
                entries.push(AllowedSigner { line, ..entry });
            }
        }
        Ok(Self {
            source: source.to_owned(),
            entries,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses one line; `Ok(None)` for blank and comment lines. The returned entry's `line` is 0.
fn parse_line(raw: &str) -> Result<Option<AllowedSigner>, String> {
    let rest = raw
        .strip_suffix('\r')
        .unwrap_or(raw)
        .trim_start_matches(is_blank);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }

    let (principals_field, rest) = split_principals(rest)?;
    let principals: Vec<String> = principals_field.split(',').map(str::to_owned).collect();
    if principals.iter().any(|p| p.is_empty() || p == "!") {
        return Err(format!("empty principal in '{principals_field}'"));
    }

    // OpenSSH tells options from the key type by trying to read a key first; we decide by the
    // token's shape so a broken key is reported as a broken key, not as an unknown option.
    let rest = rest.trim_start_matches(is_blank);
    let first = rest.split(is_blank).next().unwrap_or_default();
    let (options, rest) = if first.is_empty() {
        return Err("missing key".to_owned());
    } else if looks_like_key_type(first) {
        (Options::default(), rest)
    } else {
        let (opts, rest) = split_options(rest)?;
        (parse_options(opts)?, rest.trim_start_matches(is_blank))
    };

    let key = parse_key(rest)?;
    Ok(Some(AllowedSigner {
        line: 0,
        principals,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
    }))
}

/// Splits off the principals field: a whitespace-delimited word, or a double-quoted string
/// (quotes removed, no escapes — like OpenSSH's `strdelimw`).
fn split_principals(line: &str) -> Result<(&str, &str), String> {
    if let Some(quoted) = line.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or_else(|| "missing closing quote in principals".to_owned())?;
        let after = &quoted[end + 1..];
        if !after.is_empty() && !after.starts_with(is_blank) {
            return Err("expected whitespace after quoted principals".to_owned());
        }
        if end == 0 {
            return Err("empty principals".to_owned());
        }
        return Ok((&quoted[..end], after));
    }
    match line.find(is_blank) {
        Some(end) => Ok((&line[..end], &line[end..])),
        None => Err("missing key".to_owned()),
    }
}

fn looks_like_key_type(token: &str) -> bool {
    Algorithm::new(token).is_ok()
        || token.ends_with("-cert-v01@openssh.com")
        || token.starts_with("ssh-")
        || token.starts_with("ecdsa-")
        || token.starts_with("sk-")
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

/// Splits off the options field: up to the first whitespace outside double quotes.
fn split_options(rest: &str) -> Result<(&str, &str), String> {
    let mut in_quotes = false;
    let mut prev_backslash = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' if !prev_backslash => in_quotes = !in_quotes,
            c if is_blank(c) && !in_quotes => return Ok((&rest[..i], &rest[i..])),
            _ => {}
        }
        prev_backslash = c == '\\';
    }
    if in_quotes {
        Err("missing closing quote in options".to_owned())
    } else {
        Err("missing key after options".to_owned())
    }
}

/// Parses `opt[,opt…]` as `sshsigopt_parse` does: keywords are case-insensitive, values must be
/// double-quoted (`\"` escapes a quote), each option at most once.
fn parse_options(mut s: &str) -> Result<Options, String> {
    let mut options = Options::default();
    while !s.is_empty() {
        let name_len = s.find(['=', ',']).unwrap_or(s.len());
        let name = &s[..name_len];
        let lower = name.to_ascii_lowercase();
        s = &s[name_len..];
        if lower == "cert-authority" {
            return Err(
                "'cert-authority' is not supported (SSH certificates are not accepted for commit signatures)"
                    .to_owned(),
            );
        }
        if !matches!(
            lower.as_str(),
            "namespaces" | "valid-after" | "valid-before"
        ) {
            return Err(if name.is_empty() {
                "empty option".to_owned()
            } else {
                format!("unknown option '{name}'")
            });
        }
        let Some(value_part) = s.strip_prefix('=') else {
            return Err(format!("option '{name}' needs a value ({lower}=\"…\")"));
        };
        let (value, after) = dequote(value_part)
            .ok_or_else(|| format!("value of '{name}' must be in double quotes ({lower}=\"…\")"))?;
        s = after;
        match lower.as_str() {
            "namespaces" => {
                if options.namespaces.replace(value).is_some() {
                    return Err("multiple 'namespaces' options".to_owned());
                }
            }
            "valid-after" => {
                let t = parse_time(&value).map_err(|e| format!("invalid valid-after: {e}"))?;
                if options.valid_after.replace(t).is_some() {
                    return Err("multiple 'valid-after' options".to_owned());
                }
            }
            _ => {
                let t = parse_time(&value).map_err(|e| format!("invalid valid-before: {e}"))?;
                if options.valid_before.replace(t).is_some() {
                    return Err("multiple 'valid-before' options".to_owned());
                }
            }
        }
        if s.is_empty() {
            break;
        }
        s = s
            .strip_prefix(',')
            .ok_or_else(|| format!("unexpected text after option '{name}': '{s}'"))?;
        if s.is_empty() {
            return Err("trailing comma in options".to_owned());
        }
    }
    if let (Some(after), Some(before)) = (options.valid_after, options.valid_before)
        && before <= after
    {
        return Err("valid-before is not after valid-after".to_owned());
    }
    Ok(options)
}

/// Reads a `"…"` value (with `\"` escapes) off the front of `s`; `None` when not quoted or
/// unterminated.
fn dequote(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some((_, '"'))) => {
                value.push('"');
                chars.next();
            }
            '"' => return Some((value, &body[i + 1..])),
            c => value.push(c),
        }
    }
    None
}

/// `YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]` (OpenSSH also accepts a `UTC` suffix) to Unix
/// seconds. All times are read as UTC, see the module docs.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    let digits = if let Some(d) = s.strip_suffix(['Z', 'z']) {
        d
    } else if s.len() > 3
        && s.is_char_boundary(s.len() - 3)
        && s[s.len() - 3..].eq_ignore_ascii_case("utc")
    {
        &s[..s.len() - 3]
    } else {
        s
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 8 | 12 | 14) {
        return Err(format!("'{s}' is not YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]"));
    }
    let num = |range: std::ops::Range<usize>| -> i64 {
        digits
            .get(range)
            .and_then(|d| d.parse().ok())
            .unwrap_or_default()
    };
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    let (hour, minute, second) = (num(8..10), num(10..12), num(12..14));
    let t = super::time::unix_from_utc(year, month, day, hour, minute, second)
        .ok_or_else(|| format!("'{s}' is not a valid date and time"))?;
    // OpenSSH treats 0 as "unset" and refuses it.
    if t <= 0 {
        return Err(format!("'{s}' is not after 1970-01-01T00:00:00Z"));
    }
    Ok(t)
}

/// `keytype base64 [comment]`.
fn parse_key(rest: &str) -> Result<PublicKey, String> {
    let mut words = rest.split(is_blank).filter(|w| !w.is_empty());
    let key_type = words.next().ok_or_else(|| "missing key".to_owned())?;
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(format!(
            "key type '{key_type}' is an SSH certificate; certificates are not supported"
        ));
    }
    let algorithm =
        Algorithm::new(key_type).map_err(|_| format!("unsupported key type '{key_type}'"))?;
    let blob = words
        .next()
        .ok_or_else(|| format!("missing base64 key after '{key_type}'"))?;
    let key = PublicKey::from_openssh(&format!("{key_type} {blob}"))
        .map_err(|e| format!("invalid {key_type} key: {e}"))?;
    // The blob names its own algorithm; a mismatch with the stated type is a copy-paste error.
    if key.algorithm() != algorithm {
        return Err(format!(
            "key type '{key_type}' does not match the key, which is {}",
            key.algorithm().as_str()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILWZEvKL4TsZmm2vK7FuO0pqJ5NWzHzVRd5eHuq01kkm";

    fn parse(text: &str) -> Result<AllowedSigners, String> {
        AllowedSigners::parse("allowed_signers", text).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_documented_forms() {
        // (line, principals, namespaces, valid_after, valid_before)
        type Want = (
            &'static [&'static str],
            Option<&'static str>,
            Option<i64>,
            Option<i64>,
        );
        let cases: Vec<(String, Want)> = vec![
            (
                format!("alice@example.com {ED}"),
                (&["alice@example.com"], None, None, None),
            ),
            (
                format!("alice@example.com {ED} alice's laptop"),
                (&["alice@example.com"], None, None, None),
            ),
            (
                format!("  a@x,b@y\t{ED}"),
                (&["a@x", "b@y"], None, None, None),
            ),
            (
                format!("*@example.com,!mallory@example.com {ED}"),
                (&["*@example.com", "!mallory@example.com"], None, None, None),
            ),
            (
                format!("\"alice smith@example.com,bob\" {ED}"),
                (&["alice smith@example.com", "bob"], None, None, None),
            ),
            (
                format!("a@x namespaces=\"git,file\" {ED}"),
                (&["a@x"], Some("git,file"), None, None),
            ),
            (
                format!("a@x NameSpaces=\"git\" {ED}"),
                (&["a@x"], Some("git"), None, None),
            ),
            (
                format!("a@x valid-after=\"20200101\",valid-before=\"20300101Z\" {ED}"),
                (&["a@x"], None, Some(1_577_836_800), Some(1_893_456_000)),
            ),
            (
                format!("a@x valid-after=\"202001011230\" {ED}"),
                (&["a@x"], None, Some(1_577_881_800), None),
            ),
            (
                format!("a@x valid-before=\"20200101123045UTC\" {ED}"),
                (&["a@x"], None, None, Some(1_577_881_845)),
            ),
            (
                format!("a@x namespaces=\"we ird\\\"ns\" {ED}"),
                (&["a@x"], Some("we ird\"ns"), None, None),
            ),
            (format!("a@x {ED}\r"), (&["a@x"], None, None, None)),
        ];
        for (line, (principals, namespaces, after, before)) in cases {
            let parsed = parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(parsed.entries.len(), 1, "{line:?}");
            let entry = &parsed.entries[0];
            assert_eq!(entry.line, 1);
            assert_eq!(entry.principals, principals, "{line:?}");
            assert_eq!(entry.namespaces.as_deref(), namespaces, "{line:?}");
            assert_eq!(entry.valid_after, after, "{line:?}");
            assert_eq!(entry.valid_before, before, "{line:?}");
        }
    }

    #[test]
    fn skips_comments_and_blank_lines_and_numbers_lines() {
        let text = format!("# comment\n\n   \n\t# indented comment\na@x {ED}\n\nb@y {ED}\n");
        let parsed = parse(&text).unwrap();
        let lines: Vec<usize> = parsed.entries.iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 7]);
        assert!(parse("# only comments\n\n").unwrap().is_empty());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_lines_naming_the_line() {
        let cases: Vec<(String, &str)> = vec![
            (
                format!("a@x foo=\"bar\" {ED}"),
                "allowed_signers:2: unknown option 'foo'",
            ),
            (
                format!("a@x nosuchflag {ED}"),
                "allowed_signers:2: unknown option 'nosuchflag'",
            ),
            (
                format!("a@x cert-authority {ED}"),
                "allowed_signers:2: 'cert-authority' is not supported",
            ),
            (
                format!("a@x valid-before=20200101 {ED}"),
                "allowed_signers:2: value of 'valid-before' must be in double quotes",
            ),
            (
                format!("a@x valid-before=\"2020-01-01\" {ED}"),
                "allowed_signers:2: invalid valid-before: '2020-01-01' is not YYYYMMDD",
            ),
            (
                format!("a@x valid-after=\"20201301\" {ED}"),
                "allowed_signers:2: invalid valid-after: '20201301' is not a valid date",
            ),
            (
                format!("a@x valid-after=\"20200101\",valid-before=\"20190101\" {ED}"),
                "allowed_signers:2: valid-before is not after valid-after",
            ),
            (
                format!("a@x namespaces=\"git\",namespaces=\"file\" {ED}"),
                "allowed_signers:2: multiple 'namespaces' options",
            ),
            (
                format!("a@x namespaces=\"git\", {ED}"),
                "allowed_signers:2: trailing comma in options",
            ),
            (
                format!("a@x namespaces=\"git {ED}"),
                "allowed_signers:2: missing closing quote in options",
            ),
            ("a@x".to_owned(), "allowed_signers:2: missing key"),
            ("a@x   ".to_owned(), "allowed_signers:2: missing key"),
            (
                "a@x ssh-ed25519".to_owned(),
                "allowed_signers:2: missing base64 key after 'ssh-ed25519'",
            ),
            (
                "a@x ssh-ed25519 AAAAnotakey".to_owned(),
                "allowed_signers:2: invalid ssh-ed25519 key",
            ),
            (
                "a@x ssh-dss2 AAAA".to_owned(),
                "allowed_signers:2: unsupported key type 'ssh-dss2'",
            ),
            (
                format!("a@x {}", ED.replace("ssh-ed25519", "ecdsa-sha2-nistp256")),
                "allowed_signers:2: invalid ecdsa-sha2-nistp256 key",
            ),
            (
                "a@x ssh-ed25519-cert-v01@openssh.com AAAA".to_owned(),
                "allowed_signers:2: key type 'ssh-ed25519-cert-v01@openssh.com' is an SSH certificate",
            ),
            (
                format!("\"a@x {ED}"),
                "allowed_signers:2: missing closing quote in principals",
            ),
            (
                format!("a@x,,b@y {ED}"),
                "allowed_signers:2: empty principal",
            ),
            (format!("a@x,! {ED}"), "allowed_signers:2: empty principal"),
        ];
        for (line, want) in cases {
            let text = format!("# header\n{line}\n");
            let err = parse(&text).expect_err(&line);
            assert!(
                err.starts_with(want),
                "{line:?}: got {err:?}, want prefix {want:?}"
            );
        }
    }

    #[test]
    fn namespace_time_and_principal_rules() {
        let parsed = parse(&format!(
            "*@example.com,!mallory@example.com namespaces=\"git,fi*\",valid-after=\"20200101Z\",valid-before=\"20210101Z\" {ED}"
        ))
        .unwrap();
        let e = &parsed.entries[0];
        assert!(e.allows_namespace("git"));
        assert!(e.allows_namespace("file"));
        assert!(!e.allows_namespace("gitx"));
        assert!(
            e.invalid_at(1_577_836_800).is_none(),
            "valid-after is inclusive"
        );
        assert!(
            e.invalid_at(1_609_459_200).is_none(),
            "valid-before is inclusive"
        );
        assert!(
            e.invalid_at(1_577_836_799)
                .unwrap()
                .contains("not yet valid")
        );
        assert!(e.invalid_at(1_609_459_201).unwrap().contains("expired"));
        assert_eq!(e.identities().collect::<Vec<_>>(), ["*@example.com"]);
        let allow = |pats: &[&str]| {
            let pats: Vec<String> = pats.iter().map(|p| p.to_string()).collect();
            e.admitted_by(&pats)
        };
        assert_eq!(
            allow(&["alice@example.com"]).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(allow(&["mallory@example.com"]), None);
        assert_eq!(allow(&["*@example.com"]).as_deref(), Some("*@example.com"));
        assert_eq!(allow(&["*"]).as_deref(), Some("*@example.com"));
        assert_eq!(allow(&["alice@other.org"]), None);
    }
}

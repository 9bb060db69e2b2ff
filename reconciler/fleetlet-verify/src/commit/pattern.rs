//! OpenSSH pattern lists (`ssh_config(5)`, PATTERNS): comma-separated patterns with `*` and `?`
//! wildcards, where a leading `!` negates. Used for allowed_signers principals and namespaces and
//! for the per-call signer restriction, so all three read the same way.

/// Outcome of matching a string against a pattern list, as OpenSSH's `match_pattern_list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternMatch {
    /// No pattern matched.
    None,
    /// A positive pattern matched and no negated one did.
    Positive,
    /// A negated pattern matched; this wins over any positive match.
    Negative,
}

/// Matches `s` against the comma-separated pattern list `list` (case-sensitive).
pub(crate) fn match_pattern_list(s: &str, list: &str) -> PatternMatch {
    let mut positive = false;
    for pattern in list.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if match_pattern(s, negated) => return PatternMatch::Negative,
            Some(_) => {}
            None if match_pattern(s, pattern) => positive = true,
            None => {}
        }
    }
    if positive {
        PatternMatch::Positive
    } else {
        PatternMatch::None
    }
}

/// Matches `s` against one glob pattern where `*` is any run of characters and `?` exactly one.
pub(crate) fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matching with single-star backtracking: linear in practice, no recursion.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((star_pi, star_si)) => {
                    pi = star_pi + 1;
                    si = star_si + 1;
                    star = Some((star_pi, star_si + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let cases = [
            ("alice@example.com", "alice@example.com", true),
            ("alice@example.com", "*@example.com", true),
            ("alice@example.com", "*", true),
            ("", "*", true),
            ("", "", true),
            ("a", "", false),
            ("alice@example.com", "?lice@*.com", true),
            ("alice@example.com", "alice", false),
            ("alice@example.com", "*@example.org", false),
            ("Alice@example.com", "alice@example.com", false),
            ("aXbXc", "a*b*c", true),
            ("abc", "a*b*c*d", false),
        ];
        for (s, p, want) in cases {
            assert_eq!(match_pattern(s, p), want, "{s:?} ~ {p:?}");
        }
    }

    #[test]
    fn lists() {
        use PatternMatch::*;
        let cases = [
            ("a@x", "a@x,b@y", Positive),
            ("c@x", "a@x,b@y", None),
            ("m@x", "*@x,!m@x", Negative),
            ("a@x", "*@x,!m@x", Positive),
            ("m@x", "!m@x", Negative),
            ("a@x", "!m@x", None),
        ];
        for (s, l, want) in cases {
            assert_eq!(match_pattern_list(s, l), want, "{s:?} ~ {l:?}");
        }
    }
}

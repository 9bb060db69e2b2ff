//! Canonical JSON straight from the bytes of a line, without building a `serde_json::Value`
//! tree: verifying a log hashes every entry, and the tree (an allocation per key and string)
//! was most of the cost.
//!
//! Only a simple subset is handled — no backslash escapes in strings, integers only, no
//! duplicate keys, bounded nesting — where the result is exactly
//! [`crate::record::canonical`] of the parsed value: strings without escapes are written back
//! as they are, integers that serde_json prints with the same digits, keys sorted bytewise
//! like serde_json's sorted map. Anything else returns `None` and the caller takes the exact
//! path through `Value`. Every line fleetlet writes is in the subset unless a string needs an
//! escape (a reason with a quote or a newline).

/// Deeper nesting goes the exact way (serde_json's own limit is 128).
const MAX_DEPTH: usize = 100;

/// Working space of [`canonical_into`], kept from line to line so a line allocates nothing.
#[derive(Default)]
pub(crate) struct Stacks {
    /// The members of the objects being read, innermost last: where the key is in the line,
    /// where its canonical value is in the output.
    members: Vec<(usize, usize, usize, usize)>,
    /// The members' order being worked out (see [`Parser::object`]).
    order: Vec<u128>,
    /// Where an object's values wait while its members are put in order.
    values: Vec<u8>,
}

/// Appends to `out` the canonical JSON of the JSON document `line` with the top-level field
/// `skip` left out, and returns the top-level `type` string (empty when there is none); or
/// `None` when the line is outside the subset (`out` then holds garbage).
pub(crate) fn canonical_into<'a>(
    line: &'a [u8],
    skip: &[u8],
    out: &mut Vec<u8>,
    stacks: &mut Stacks,
) -> Option<&'a [u8]> {
    // serde_json rejects invalid UTF-8 in any string, even in a field it ignores.
    std::str::from_utf8(line).ok()?;
    stacks.members.clear();
    stacks.order.clear();
    stacks.values.clear();
    let mut p = Parser {
        b: line,
        i: 0,
        kind: b"",
        st: stacks,
    };
    p.value(out, Some(skip), 0)?;
    p.ws();
    (p.i == line.len()).then_some(p.kind)
}

struct Parser<'a, 's> {
    b: &'a [u8],
    i: usize,
    /// The top-level `type`, as found.
    kind: &'a [u8],
    st: &'s mut Stacks,
}

impl<'a> Parser<'a, '_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `skip` is `Some` only for the top-level value.
    fn value(&mut self, out: &mut Vec<u8>, skip: Option<&[u8]>, depth: usize) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'{' if depth < MAX_DEPTH => self.object(out, skip, depth + 1),
            b'[' if depth < MAX_DEPTH => self.array(out, depth + 1),
            b'"' => {
                let s = self.string()?;
                out.push(b'"');
                out.extend_from_slice(s);
                out.push(b'"');
                Some(())
            }
            b't' => self.literal(b"true", out),
            b'f' => self.literal(b"false", out),
            b'n' => self.literal(b"null", out),
            b'-' | b'0'..=b'9' => self.integer(out),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| {
            self.i = end;
            out.extend_from_slice(word);
        })
    }

    /// The raw contents of the string at the cursor: `None` if it has an escape (its canonical
    /// form may differ from how it is written) or a control character (invalid).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.i += 1;
        let start = self.i;
        let len = special(&self.b[start..])?;
        self.i += len;
        if self.b[self.i] != b'"' {
            return None;
        }
        self.i += 1;
        Some(&self.b[start..start + len])
    }

    /// An integer serde_json reads as an `i64` or `u64` and writes back with the same digits.
    fn integer(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        self.i += digits;
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        let fits = match text.strip_prefix('-') {
            // `-0` is read as 0 and written without the sign.
            Some(rest) => rest != "0" && text.parse::<i64>().is_ok(),
            None => text.parse::<u64>().is_ok(),
        };
        let canonical = digits > 0 && (digits == 1 || self.b[self.i - digits] != b'0') && fits;
        canonical.then(|| out.extend_from_slice(text.as_bytes()))
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        self.i += 1;
        out.push(b'[');
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            out.push(b']');
            return Some(());
        }
        loop {
            self.value(out, None, depth)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    out.push(b',');
                }
                b']' => {
                    self.i += 1;
                    out.push(b']');
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Members are written as they come, then put in key order.
    fn object(&mut self, out: &mut Vec<u8>, skip: Option<&[u8]>, depth: usize) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            out.extend_from_slice(b"{}");
            return Some(());
        }
        let base = out.len();
        let first_member = self.st.members.len();
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key_start = self.i + 1;
            let key = self.string()?;
            let key_end = key_start + key.len();
            self.expect(b':')?;
            let start = out.len();
            self.ws();
            if skip.is_some() && key == b"type" && self.peek() == Some(b'"') {
                let kind = self.string()?;
                self.kind = kind;
                out.push(b'"');
                out.extend_from_slice(kind);
                out.push(b'"');
            } else {
                self.value(out, None, depth)?;
            }
            self.st.members.push((key_start, key_end, start, out.len()));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        let line = self.b;
        let members = &self.st.members[first_member..];
        let key = |i: u128| {
            let (from, to, _, _) = members[i as u64 as usize];
            &line[from..to]
        };
        // Sorting the members by slice comparison was the parse's largest cost: sort numbers
        // instead — each key's first eight bytes above its index — and settle ties on those
        // bytes (keys sharing them: rare) by the whole key.
        let order_base = self.st.order.len();
        self.st.order.extend(
            members
                .iter()
                .enumerate()
                .map(|(i, m)| (u128::from(key_head(&line[m.0..m.1])) << 64) | i as u128),
        );
        let order = &mut self.st.order[order_base..];
        order.sort_unstable();
        if order.windows(2).any(|w| w[0] >> 64 == w[1] >> 64) {
            order.sort_unstable_by(|a, b| key_order(key(*a), key(*b)));
            if order.windows(2).any(|w| key(w[0]) == key(w[1])) {
                return None;
            }
        }
        let values = self.st.values.len();
        self.st.values.extend_from_slice(&out[base..]);
        out.truncate(base);
        out.push(b'{');
        let mut first = true;
        for &i in &self.st.order[order_base..] {
            let (key_start, key_end, start, end) = members[i as u64 as usize];
            let key = &line[key_start..key_end];
            if Some(key) == skip {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(key);
            out.extend_from_slice(b"\":");
            out.extend_from_slice(&self.st.values[values + start - base..values + end - base]);
        }
        out.push(b'}');
        self.st.members.truncate(first_member);
        self.st.order.truncate(order_base);
        self.st.values.truncate(values);
        Some(())
    }
}

/// Bytewise order of two keys, by their first eight bytes as one number when those differ
/// (keys are short; a key holds no zero byte, so zero padding sorts a prefix first as
/// bytewise order does).
fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    key_head(a).cmp(&key_head(b)).then_with(|| a.cmp(b))
}

/// A key's first eight bytes as a big-endian number, zero-padded.
fn key_head(k: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = k.len().min(8);
    buf[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(buf)
}

/// The length of `s` up to its first `"`, `\\` or control character (`None`: there is none).
/// Eight bytes at a time: strings here are mostly digests and references, and this scan was
/// most of the parse.
fn special(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bytes below `n` (n ≤ 128) set their high bit here; exact for ASCII, and a non-ASCII
    // byte (high bit set in `v`) is masked out by `!v`.
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    let zero = |v: u64| below(v, 1);
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        if zero(v ^ (ONES * u64::from(b'"'))) | zero(v ^ (ONES * u64::from(b'\\'))) | below(v, 0x20)
            != 0
        {
            break;
        }
        i += 8;
    }
    s[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|n| i + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The exact path: what the fast one must equal whenever it answers.
    fn exact(line: &str, skip: &str) -> Option<Vec<u8>> {
        let value: Value = serde_json::from_str(line).ok()?;
        let mut out = Vec::new();
        match value {
            Value::Object(mut map) => {
                map.remove(skip);
                crate::record::canonical(&Value::Object(map), &mut out);
            }
            other => crate::record::canonical(&other, &mut out),
        }
        Some(out)
    }

    #[test]
    fn agrees_with_the_exact_path_or_declines() {
        // (line, whether the fast path must answer)
        let cases: &[(&str, bool)] = &[
            (
                r#"{"type":"entry","b":1,"a":[1,-2,{"z":null,"y":true}],"hash":"x"}"#,
                true,
            ),
            (
                r#" { "type" : "checkpoint" , "a" : { } , "b" : [ ] } "#,
                true,
            ),
            (
                r#"{"k":"ünïcödé ✓","j":18446744073709551615,"i":-9223372036854775808}"#,
                true,
            ),
            (r#"{"a":{"c":1,"b":{"e":2,"d":3}},"hash":{"x":1}}"#, true),
            (r#"{"a":"with \"quote\""}"#, false),
            (r#"{"a":"\u00e9"}"#, false),
            (r#"{"a":1.5}"#, false),
            (r#"{"a":1e3}"#, false),
            (r#"{"a":-0}"#, false),
            (r#"{"a":18446744073709551616}"#, false),
            (r#"{"a":-9223372036854775809}"#, false),
            (r#"{"a":1,"a":2}"#, false),
            (r#"{"abcdefghZ":1,"abcdefghA":2,"abcdefgh":3,"b":4}"#, true),
            (r#"{"abcdefghZ":1,"x":0,"abcdefghZ":2}"#, false),
            (r#"{"hash":1,"hash":2}"#, false),
            (r#"{"a":01}"#, false),
            (r#"{"a":1,}"#, false),
            (r#"{"a":1} x"#, false),
            (r#"{"a":[1 2]}"#, false),
            (r#"{"a":tru}"#, false),
            (r#"{"a":"unterminated}"#, false),
            (r#"{"a":-}"#, false),
            ("{\"a\":\"tab\there\"}", false),
        ];
        for (line, answers) in cases {
            let mut out = Vec::new();
            let fast = canonical_into(line.as_bytes(), b"hash", &mut out, &mut Stacks::default());
            assert_eq!(fast.is_some(), *answers, "{line}");
            if fast.is_some() {
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(exact(line, "hash").unwrap()).unwrap(),
                    "{line}"
                );
            }
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(
            canonical_into(
                deep.as_bytes(),
                b"hash",
                &mut Vec::new(),
                &mut Stacks::default()
            )
            .is_none()
        );
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(
            canonical_into(
                ok.as_bytes(),
                b"hash",
                &mut Vec::new(),
                &mut Stacks::default()
            )
            .is_some()
        );
        assert!(
            canonical_into(
                b"{\"a\":\"\xff\"}",
                b"hash",
                &mut Vec::new(),
                &mut Stacks::default()
            )
            .is_none()
        );

        let mut out = Vec::new();
        assert_eq!(
            canonical_into(
                br#"{"x":{"type":"inner"},"type":"entry"}"#,
                b"",
                &mut out,
                &mut Stacks::default()
            ),
            Some(&b"entry"[..])
        );
        assert_eq!(
            canonical_into(br#"{"type":5}"#, b"", &mut out, &mut Stacks::default()),
            Some(&b""[..])
        );
    }

    #[test]
    fn keys_sort_bytewise() {
        let keys: [&[u8]; 9] = [
            b"",
            b"a",
            b"ab",
            b"abcdefgh",
            b"abcdefghi",
            b"abcdefgi",
            b"b",
            b"\xc3\xa9",
            b"\xff",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(key_order(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn the_scan_finds_the_first_special_byte() {
        for len in 0..40 {
            for at in 0..len {
                for special_byte in [b'"', b'\\', 0x00, 0x1f] {
                    let mut s = vec![b'a'; len];
                    // Bytes around the specials that must not be taken for them.
                    for (i, b) in s.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0xc3, 0xa9, 0xff][i % 10];
                    }
                    s[at] = special_byte;
                    assert_eq!(special(&s), Some(at), "{s:?}");
                }
            }
            let plain: Vec<u8> = (0..len).map(|i| b"ab \x7f\xc3\xa9#]"[i % 8]).collect();
            assert_eq!(special(&plain), None, "{plain:?}");
        }
    }
}

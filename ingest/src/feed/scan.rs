//! A scanner for the common shape of a feed line: one flat JSON object whose values are strings
//! without escapes or unsigned integers.
//!
//! It decides nothing on its own. A line it takes is one serde would decode to the same raw
//! record; anything else (an escape, a `null`, a nested value, a duplicate or unknown key, a
//! number that is not a plain unsigned integer, bytes after the object, invalid UTF-8, a control
//! character in a string) makes it give up, and the line goes to serde, which accepts it or
//! names what is wrong. So strictness and every error message are serde's; only the common line
//! is read faster. `tests/feed_scanner.rs` checks both give the same answer on generated and
//! mutated lines, and `fuzz/fuzz_targets/feed.rs` on fuzzed bytes.

/// One value as scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// A string with no escape in it.
    Text(&'a str),
    /// An unsigned integer written without sign, fraction, exponent or leading zero.
    Count(u64),
}

/// Scans `text` as one flat JSON object, calling `field(key, value)` for each member in order.
///
/// Returns `false` as soon as the line leaves the shape above or `field` returns `false`
/// (an unknown or repeated key, a value of the wrong kind): the caller then decodes the line
/// with serde instead. Members already passed to `field` must then be thrown away.
pub(crate) fn object<'a>(text: &'a [u8], mut field: impl FnMut(&'a [u8], Value<'a>) -> bool) -> bool {
    let mut at = skip_space(text, 0);
    if text.get(at) != Some(&b'{') {
        return false;
    }
    at = skip_space(text, at + 1);
    if text.get(at) == Some(&b'}') {
        return skip_space(text, at + 1) == text.len();
    }
    loop {
        // "key"
        if text.get(at) != Some(&b'"') {
            return false;
        }
        let Some((key, after)) = string(text, at + 1) else { return false };
        at = skip_space(text, after);
        if text.get(at) != Some(&b':') {
            return false;
        }
        at = skip_space(text, at + 1);
        // value
        let value = match text.get(at) {
            Some(b'"') => {
                let Some((bytes, after)) = string(text, at + 1) else { return false };
                at = after;
                let Ok(s) = std::str::from_utf8(bytes) else { return false };
                Value::Text(s)
            }
            Some(b'0'..=b'9') => {
                let Some((n, after)) = count(text, at) else { return false };
                at = after;
                Value::Count(n)
            }
            _ => return false,
        };
        if !field(key, value) {
            return false;
        }
        at = skip_space(text, at);
        match text.get(at) {
            Some(b',') => at = skip_space(text, at + 1),
            Some(b'}') => return skip_space(text, at + 1) == text.len(),
            _ => return false,
        }
    }
}

/// The bytes of a string starting just after its opening quote, and the position after its
/// closing quote; `None` at an escape, a control character or the end of the line.
fn string(text: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = &text[start..];
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    (rest[end] == b'"').then(|| (&rest[..end], start + end + 1))
}

/// An unsigned integer starting at `start` and the position after it; `None` for a leading
/// zero, a fraction or exponent, or a value past `u64`.
fn count(text: &[u8], start: usize) -> Option<(u64, usize)> {
    let mut at = start;
    let mut n: u64 = 0;
    while let Some(&d @ b'0'..=b'9') = text.get(at) {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        at += 1;
    }
    let leading_zero = text[start] == b'0' && at - start > 1;
    let continues = matches!(text.get(at), Some(b'.' | b'e' | b'E'));
    (!leading_zero && !continues).then_some((n, at))
}

/// The position of the first byte at or after `at` that is not JSON whitespace.
fn skip_space(text: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = text.get(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Option<Vec<(String, Value<'_>)>> {
        let mut out = Vec::new();
        object(text.as_bytes(), |k, v| {
            out.push((String::from_utf8(k.to_vec()).expect("key"), v));
            true
        })
        .then_some(out)
    }

    #[test]
    fn the_common_shape_is_scanned() {
        let got = members(r#" { "kind" : "sale", "n":18 ,"z":0, "e":"" } "#).expect("scanned");
        assert_eq!(
            got,
            vec![
                ("kind".into(), Value::Text("sale")),
                ("n".into(), Value::Count(18)),
                ("z".into(), Value::Count(0)),
                ("e".into(), Value::Text("")),
            ]
        );
        assert_eq!(members("{}"), Some(vec![]));
        assert_eq!(members(r#"{"payer":"张三"}"#), Some(vec![("payer".into(), Value::Text("张三"))]));
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        for line in [
            "",
            "[]",
            r#"{"a":"b\"c"}"#,
            r#"{"a":"\u0041"}"#,
            "{\"a\":\"b\tc\"}",
            r#"{"a":null}"#,
            r#"{"a":true}"#,
            r#"{"a":{}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":-1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":"b"} x"#,
            r#"{"a":"b"}{"#,
            r#"{"a":"b",}"#,
            r#"{"a":"b""#,
            r#"{"a" "b"}"#,
            r#"{a:"b"}"#,
            "{\"a\":\"\u{0}\"}",
        ] {
            assert_eq!(members(line), None, "{line}");
        }
        assert!(!object(b"{\"a\":\"\xff\"}", |_, _| true));
        assert_eq!(members(r#"{"a":18446744073709551615}"#), Some(vec![("a".into(), Value::Count(u64::MAX))]));
    }
}

//! Request bodies and parameters: the records of an ingest body (a JSON array or NDJSON),
//! percent-decoded path segments, and query parameters read by one function per kind.

use std::collections::HashMap;

use warp::http::StatusCode;

use super::INGEST_RECORDS_MAX;
use super::problem::Problem;

/// The records of a body: a JSON array (each element re-serialised) or NDJSON lines, with
/// their 1-based record numbers.
pub(crate) fn records(body: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, Problem> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Problem::bad_request("invalid_utf8", format!("the body is not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    let trimmed = text.trim_start();
    let too_many = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            "Too many records",
            format!("more than {INGEST_RECORDS_MAX} records; at most {INGEST_RECORDS_MAX} a request"),
        )
    };
    if trimmed.starts_with('[') {
        let items = split_json_array(trimmed, INGEST_RECORDS_MAX)
            .map_err(|e| Problem::bad_request("invalid_json", format!("the body is not a JSON array: {e}")))?
            .ok_or_else(too_many)?;
        return Ok(items.into_iter().enumerate().map(|(i, item)| (i as u64 + 1, item.as_bytes().to_vec())).collect());
    }
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if out.len() == INGEST_RECORDS_MAX {
            return Err(too_many());
        }
        out.push((i as u64 + 1, l.as_bytes().to_vec()));
    }
    Ok(out)
}

/// The top-level elements of a JSON array, as slices of `text` (each is checked as a record
/// later); `None` when there are more than `max`. Only the array's structure is scanned here:
/// strings (with their escapes) are skipped, brackets counted, nothing is built.
pub(crate) fn split_json_array(text: &str, max: usize) -> Result<Option<Vec<&str>>, String> {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut after_comma = false;
    let mut start = None::<usize>;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                start.get_or_insert(i);
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > 1 {
                    start.get_or_insert(i);
                }
            }
            b']' | b'}' => {
                if depth == 0 {
                    return Err(format!("unbalanced {} at byte {i}", b as char));
                }
                depth -= 1;
                if depth == 0 {
                    match start.take() {
                        Some(s) => items.push(text[s..i].trim()),
                        None if after_comma => return Err(format!("a trailing comma before byte {i}")),
                        None => {}
                    }
                    let rest = text[i + 1..].trim();
                    if !rest.is_empty() {
                        return Err(format!("unexpected text after the array at byte {}", i + 1));
                    }
                    if items.len() > max {
                        return Ok(None);
                    }
                    return Ok(Some(items));
                }
            }
            b',' if depth == 1 => match start.take() {
                Some(s) => {
                    after_comma = true;
                    items.push(text[s..i].trim());
                    if items.len() > max {
                        return Ok(None);
                    }
                }
                None => return Err(format!("an empty element at byte {i}")),
            },
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => {
                if depth == 0 {
                    return Err(format!("unexpected {:?} at byte {i}", b as char));
                }
                start.get_or_insert(i);
            }
        }
    }
    Err("the array is not closed".into())
}

/// A path segment with its `%XX` escapes decoded.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `?currency=` (default CNY).
pub(crate) fn currency_param(query: &HashMap<String, String>) -> Result<ingest::money::Currency, Problem> {
    match query.get("currency") {
        None => Ok(ingest::money::Currency::Cny),
        Some(c) => c
            .parse()
            .map_err(|_| Problem::bad_request("invalid_query", format!("unknown currency {c:?}")).field("currency")),
    }
}

/// A whole-number query parameter (`from`, `limit`), `default` when absent.
pub(crate) fn count_param(query: &HashMap<String, String>, name: &'static str, default: u64) -> Result<u64, Problem> {
    query.get(name).map_or(Ok(default), |t| {
        t.parse().map_err(|_| {
            Problem::bad_request("invalid_query", format!("{name} {t:?} is not a whole number")).field(name)
        })
    })
}

/// A date query parameter (`YYYY-MM-DD`, in the years `app::dates` bounds).
pub(crate) fn date_param(
    query: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<chrono::NaiveDate>, Problem> {
    query
        .get(name)
        .map(|t| {
            app::dates::parse_date(t, name).map_err(|f| Problem::bad_request("invalid_query", f.message).field(name))
        })
        .transpose()
}

/// A required date query parameter.
pub(crate) fn required_date(query: &HashMap<String, String>, name: &'static str) -> Result<chrono::NaiveDate, Problem> {
    date_param(query, name)?
        .ok_or_else(|| Problem::bad_request("invalid_query", format!("{name} is required")).field(name))
}

/// `?channel=` of a statement.
pub(crate) fn channel_param(
    query: &HashMap<String, String>,
) -> Result<Option<ingest::statement::StatementChannel>, Problem> {
    use ingest::statement::StatementChannel as C;
    query
        .get("channel")
        .map(|c| match c.as_str() {
            "wechat" => Ok(C::Wechat),
            "alipay" => Ok(C::Alipay),
            "unionpay" => Ok(C::Unionpay),
            "generic" => Ok(C::Generic),
            other => Err(Problem::bad_request(
                "invalid_query",
                format!("channel {other:?} is not wechat, alipay, unionpay or generic"),
            )
            .field("channel")),
        })
        .transpose()
}

/// `?as_of=`: now, a position or an RFC 3339 time.
pub(crate) fn as_of_param(query: &HashMap<String, String>) -> Result<app::AsOf, Problem> {
    app::AsOf::parse_optional(query.get("as_of").map(String::as_str), "as_of").map_err(|f| {
        let mut p = Problem::from(f);
        p.kind = "invalid_query".into();
        p
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_is_split_into_its_elements_without_parsing_them() {
        // Strings with brackets, commas and escaped quotes stay inside their element.
        let text = r#" [ {"a": "x],\"{"}, {"b": [1, 2]} , 3, "s" ] "#;
        let items = split_json_array(text.trim(), 10).expect("splits").expect("within max");
        assert_eq!(items, [r#"{"a": "x],\"{"}"#, r#"{"b": [1, 2]}"#, "3", r#""s""#]);
        assert_eq!(split_json_array("[]", 10).expect("empty").expect("ok"), Vec::<&str>::new());
        assert!(split_json_array("[1,2,3]", 2).expect("splits").is_none(), "over the maximum");
        for bad in ["[1,,2]", "[1", "[1] x", "[1]]", "[,1]", "[1,]"] {
            assert!(split_json_array(bad, 10).is_err(), "{bad}");
        }
    }
}

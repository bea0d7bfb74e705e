//! The feed's scanner against serde: every line, generated, taken from the fixtures or mutated
//! into something hostile, gets the same record or the same error (line, field and reason) from
//! `parse_feed_line` as from `parse_feed_line_with_serde`.

use ingest::feed::{parse_feed_line, parse_feed_line_with_serde};
use ingest::generate::{Shape, SplitMix, write_admin, write_feed};
use proptest::prelude::*;

fn same(text: &[u8]) {
    let fast = parse_feed_line(9, text);
    let reference = parse_feed_line_with_serde(9, text);
    assert_eq!(fast, reference, "line {:?}", String::from_utf8_lossy(text));
}

/// Generated lines (sales of every channel, voids, refunds, reversals) and the fixture days'.
fn valid_lines() -> Vec<String> {
    let shape = Shape { merchants: 20, terminals_per_merchant: 2, seed: 7 };
    let mut feed = Vec::new();
    write_feed(&mut feed, shape, 3_000).expect("feed");
    let mut lines: Vec<String> = String::from_utf8(feed).expect("utf-8").lines().map(str::to_owned).collect();
    for day in ["2026-11-24", "2026-11-25"] {
        let path = format!("{}/../tests/fixtures/day/feed-{day}.ndjson", env!("CARGO_MANIFEST_DIR"));
        lines.extend(std::fs::read_to_string(path).expect("fixture").lines().map(str::to_owned));
    }
    lines
}

#[test]
fn every_valid_line_reads_the_same() {
    let lines = valid_lines();
    let kinds = ["\"sale\"", "\"void\"", "\"refund\"", "\"reversal\"", "\"batch_close\""];
    for kind in kinds {
        assert!(lines.iter().any(|l| l.contains(kind)), "no {kind} line generated");
    }
    for line in &lines {
        assert!(parse_feed_line(1, line.as_bytes()).is_ok(), "{line}");
        same(line.as_bytes());
    }
    // Admin records are not feed records: the same refusal either way.
    let mut admin = Vec::new();
    write_admin(&mut admin, Shape { merchants: 3, terminals_per_merchant: 1, seed: 1 }).expect("admin");
    for line in String::from_utf8(admin).expect("utf-8").lines() {
        same(line.as_bytes());
    }
}

#[test]
fn hand_picked_hostile_lines_read_the_same() {
    let sale = &valid_lines()[0];
    let body = sale.trim_end_matches('}');
    let cases = [
        String::new(),
        "{}".into(),
        " { } ".into(),
        "null".into(),
        "[]".into(),
        format!("{sale} "),
        format!("{sale}\n"),
        format!("{sale},"),
        format!("{sale}{sale}"),
        format!("{body},\"kind\":\"sale\"}}"),
        format!("{body},\"kind\":\"void\"}}"),
        format!("{body},\"tip\":\"1.00\"}}"),
        format!("{body},\"payer\":null}}"),
        format!("{body},\"debit_count\":1}}"),
        format!("{body},\"debit_count\":\"1\"}}"),
        sale.replace("\"kind\"", "\"k\\u0069nd\""),
        sale.replace("\"sale\"", "\"s\\u0061le\""),
        sale.replace("\"sale\"", "\"SALE\""),
        sale.replace("\"CNY\"", "\"cny\""),
        sale.replace("\"CNY\"", "\"\\u0043NY\""),
        sale.replace(':', " : "),
        sale.replace(',', " ,\t"),
        sale.replace('"', "'"),
        sale.replace("\"amount\":\"", "\"amount\":"),
        sale.replacen('{', "{\"kind\":\"sale\",", 1),
        r#"{"kind":"batch_close","merchant_id":"M1","terminal_id":"T1","batch_no":"000001","debit_count":01,"debit_amount":"1.00","credit_count":0,"credit_amount":"0.00","at":"2026-11-24T23:59:59+08:00"}"#.into(),
        r#"{"kind":"batch_close","merchant_id":"M1","terminal_id":"T1","batch_no":"000001","debit_count":1.0,"debit_amount":"1.00","credit_count":0,"credit_amount":"0.00","at":"2026-11-24T23:59:59+08:00"}"#.into(),
        r#"{"kind":"batch_close","merchant_id":"M1","terminal_id":"T1","batch_no":"000001","debit_count":-0,"debit_amount":"1.00","credit_count":0,"credit_amount":"0.00","at":"2026-11-24T23:59:59+08:00"}"#.into(),
        r#"{"kind":"batch_close","merchant_id":"M1","terminal_id":"T1","batch_no":"000001","debit_count":18446744073709551616,"debit_amount":"1.00","credit_count":0,"credit_amount":"0.00","at":"2026-11-24T23:59:59+08:00"}"#.into(),
        r#"{"kind":"batch_close","merchant_id":"M1","terminal_id":"T1","batch_no":"000001","debit_count":1e2,"debit_amount":"1.00","credit_count":0,"credit_amount":"0.00","at":"2026-11-24T23:59:59+08:00"}"#.into(),
        format!("{} ", " ".repeat(ingest::feed::FEED_LINE_BYTES_MAX)),
        format!("{body},\"mcc\":\"{}\"}}", "9".repeat(ingest::feed::FEED_LINE_BYTES_MAX)),
    ];
    for case in &cases {
        same(case.as_bytes());
    }
    // Bytes that are not UTF-8, a control character and a card number inside a string.
    for (from, to) in [("M0", "M\u{0}"), ("M0", "M\t"), ("5812", "6222021234567890128")] {
        same(sale.replacen(from, to, 1).as_bytes());
    }
    let mut bytes = sale.as_bytes().to_vec();
    let at = sale.find("M0").expect("merchant") + 1;
    bytes[at] = 0xff;
    same(&bytes);
    bytes[at] = 0xc3;
    same(&bytes);
}

/// A token a mutation may put in place of a value, a key or a separator.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("{}".to_owned()),
        Just("[]".to_owned()),
        Just("0".to_owned()),
        Just("007".to_owned()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        Just("1e3".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"\\\"\"".to_owned()),
        Just("\"\\u00e9\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just("\"é张\"".to_owned()),
        Just("\"6222021234567890128\"".to_owned()),
        Just("\"kind\"".to_owned()),
        Just("\"amount\"".to_owned()),
        Just("\"debit_count\"".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just(" ".to_owned()),
        Just("\n".to_owned()),
        Just("}".to_owned()),
        "[ -~]{0,6}",
        "\"[0-9A-Za-z.:+-]{0,12}\"",
        "[0-9]{1,22}",
    ]
}

/// A mutation of a valid line: a byte range replaced by a token, a byte set to any value, the
/// line cut short, or a member repeated.
#[derive(Debug, Clone)]
enum Mutation {
    Replace { at: usize, len: usize, token: String },
    Byte { at: usize, value: u8 },
    Cut { at: usize },
    Repeat { member: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..12, token()).prop_map(|(at, len, token)| Mutation::Replace { at, len, token }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        any::<usize>().prop_map(|member| Mutation::Repeat { member }),
    ]
}

fn apply(line: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = line.to_vec();
    match m {
        Mutation::Replace { at, len, token } => {
            let at = at % (out.len() + 1);
            let end = (at + len).min(out.len());
            out.splice(at..end, token.bytes());
        }
        Mutation::Byte { at, value } => {
            let at = at % out.len();
            out[at] = *value;
        }
        Mutation::Cut { at } => out.truncate(at % (out.len() + 1)),
        Mutation::Repeat { member } => {
            let text = String::from_utf8_lossy(line).into_owned();
            let inner = text.trim_start_matches('{').trim_end_matches('}');
            let members: Vec<&str> = inner.split(",\"").collect();
            let chosen = members[member % members.len()].trim_start_matches('"');
            out = format!("{{{inner},\"{chosen}}}").into_bytes();
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_lines_read_the_same(pick in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..4)) {
        thread_local!(static LINES: Vec<String> = valid_lines());
        let line = LINES.with(|lines| lines[pick % lines.len()].clone());
        let mut bytes = line.into_bytes();
        for m in &mutations {
            if bytes.is_empty() {
                break;
            }
            bytes = apply(&bytes, m);
        }
        same(&bytes);
    }
}

#[test]
fn random_bytes_read_the_same() {
    let mut rng = SplitMix::new(2026);
    let alphabet = b"{}[]\":,\\ 0123456789-.eEkindsaletxn_idamountcurrencyCNYnulltrue\t\n\xc3\xa9\xff";
    for _ in 0..50_000 {
        let len = rng.below(80) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect();
        same(&bytes);
    }
}

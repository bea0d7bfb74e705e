//! The terminal feed: NDJSON records (`sale`, `void`, `refund`, `reversal`, `batch_close`)
//! validated once into typed [`FeedCommand`]s.
//!
//! Every field is checked here, at the edge; an error names the line, the field and why.
//! Whether a valid record is *accepted* (terminal active, original exists, ...) is the write
//! model's decision, not the parser's.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

mod scan;

use crate::event::{Channel, Event, PaymentAdjustment, PaymentCaptured, TerminalBatchClosed};
use crate::fields::{self, FieldError, absent, mask_card_numbers, required};
use crate::money::Currency;

/// Longest feed line accepted, in bytes.
pub const FEED_LINE_BYTES_MAX: usize = 16 * 1024;

/// A valid terminal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedCommand {
    /// A sale.
    Sale(PaymentCaptured),
    /// Cancel a sale within its batch.
    Void(PaymentAdjustment),
    /// Give money back on a sale.
    Refund(PaymentAdjustment),
    /// Technical reversal of a sale.
    Reversal(PaymentAdjustment),
    /// The terminal's own totals at batch close.
    BatchClose(TerminalBatchClosed),
}

impl FeedCommand {
    /// The record's kind as written in the feed.
    pub fn kind(&self) -> &'static str {
        match self {
            FeedCommand::Sale(_) => "sale",
            FeedCommand::Void(_) => "void",
            FeedCommand::Refund(_) => "refund",
            FeedCommand::Reversal(_) => "reversal",
            FeedCommand::BatchClose(_) => "batch_close",
        }
    }

    /// The event the record becomes if it is accepted.
    pub fn into_event(self) -> Event {
        match self {
            FeedCommand::Sale(s) => Event::PaymentCaptured(s),
            FeedCommand::Void(a) => Event::PaymentVoided(a),
            FeedCommand::Refund(a) => Event::PaymentRefunded(a),
            FeedCommand::Reversal(a) => Event::PaymentReversed(a),
            FeedCommand::BatchClose(b) => Event::TerminalBatchClosed(b),
        }
    }
}

/// Why a line of input was refused, naming the line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: u64,
    /// The field at fault, if the fault is in one field.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, field `{field}`: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

impl std::error::Error for LineError {}

impl LineError {
    pub(crate) fn from_field(line: u64, e: FieldError) -> Self {
        LineError { line, field: Some(e.field.to_owned()), reason: mask_card_numbers(&e.reason).into_owned() }
    }

    /// Turns a JSON decoding error into a line error naming the field it was in.
    pub(crate) fn from_json(line: u64, e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut reason = inner.to_string();
        // serde_json appends " at line 1 column N"; the line is ours to name, the column helps.
        if let Some(i) = reason.rfind(" at line 1 ") {
            reason.replace_range(i..i + " at line 1".len(), "");
        }
        let field = (path != "." && !path.is_empty()).then(|| mask_card_numbers(&path).into_owned());
        let reason = if inner.is_syntax() || inner.is_eof() { format!("not valid JSON: {reason}") } else { reason };
        // serde quotes the offending value; a card number must not travel on in a message.
        LineError { line, field, reason: mask_card_numbers(&reason).into_owned() }
    }
}

/// The record as it arrives, before any check.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeedRecord<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    txn_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    original_txn_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    merchant_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    terminal_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    batch_no: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stan: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    rrn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel_txn_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    amount: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    currency: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    mcc: Option<Cow<'a, str>>,
    #[serde(default)]
    debit_count: Option<u64>,
    #[serde(borrow, default)]
    debit_amount: Option<Cow<'a, str>>,
    #[serde(default)]
    credit_count: Option<u64>,
    #[serde(borrow, default)]
    credit_amount: Option<Cow<'a, str>>,
}

/// Parses one feed line (`line` is its 1-based number, for errors).
///
/// A line of the common shape is read by a scanner; any other line by serde, which gives the
/// same record or names what is wrong (see [`parse_feed_line_with_serde`]).
pub fn parse_feed_line(line: u64, text: &[u8]) -> Result<FeedCommand, LineError> {
    match (text.len() <= FEED_LINE_BYTES_MAX).then(|| scan_raw(text)).flatten() {
        Some(raw) => validate(raw).map_err(|e| LineError::from_field(line, e)),
        None => parse_feed_line_with_serde(line, text),
    }
}

/// Parses one feed line with serde alone: the reference [`parse_feed_line`] must always agree
/// with, record for record and error for error.
pub fn parse_feed_line_with_serde(line: u64, text: &[u8]) -> Result<FeedCommand, LineError> {
    let raw: RawFeedRecord<'_> = parse_raw(line, text)?;
    validate(raw).map_err(|e| LineError::from_field(line, e))
}

/// The raw record of a line of the common shape, as serde would decode it; `None` for any
/// other line (a key unknown or repeated, a value of the wrong kind among them).
fn scan_raw(text: &[u8]) -> Option<RawFeedRecord<'_>> {
    let mut r = RawFeedRecord::default();
    let complete = scan::object(text, |key, value| match value {
        scan::Value::Count(n) => {
            let slot = match key {
                b"debit_count" => &mut r.debit_count,
                b"credit_count" => &mut r.credit_count,
                _ => return false,
            };
            slot.replace(n).is_none()
        }
        scan::Value::Text(s) => {
            let slot = match key {
                b"kind" => &mut r.kind,
                b"txn_id" => &mut r.txn_id,
                b"original_txn_id" => &mut r.original_txn_id,
                b"merchant_id" => &mut r.merchant_id,
                b"terminal_id" => &mut r.terminal_id,
                b"batch_no" => &mut r.batch_no,
                b"stan" => &mut r.stan,
                b"rrn" => &mut r.rrn,
                b"channel" => &mut r.channel,
                b"channel_txn_id" => &mut r.channel_txn_id,
                b"amount" => &mut r.amount,
                b"currency" => &mut r.currency,
                b"at" => &mut r.at,
                b"payer" => &mut r.payer,
                b"mcc" => &mut r.mcc,
                b"debit_amount" => &mut r.debit_amount,
                b"credit_amount" => &mut r.credit_amount,
                _ => return false,
            };
            slot.replace(Cow::Borrowed(s)).is_none()
        }
    });
    complete.then_some(r)
}

/// Decodes one NDJSON line into its raw record type, refusing lines over
/// [`FEED_LINE_BYTES_MAX`]. Shared by the feed and admin parsers.
pub(crate) fn parse_raw<'a, T: Deserialize<'a>>(line: u64, text: &'a [u8]) -> Result<T, LineError> {
    if text.len() > FEED_LINE_BYTES_MAX {
        return Err(LineError {
            line,
            field: None,
            reason: format!("line is longer than {FEED_LINE_BYTES_MAX} bytes"),
        });
    }
    match serde_json::from_slice(text) {
        Ok(raw) => Ok(raw),
        // Only a bad line pays for finding out which field it was: parse again, tracking the path.
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(text);
            Err(match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) => LineError::from_json(line, e),
                Ok(_) => match de.end() {
                    Err(e) => LineError { line, field: None, reason: format!("not valid JSON: {e}") },
                    Ok(()) => LineError { line, field: None, reason: "not valid JSON".into() },
                },
            })
        }
    }
}

fn validate(mut r: RawFeedRecord<'_>) -> Result<FeedCommand, FieldError> {
    let kind = required("kind", r.kind.take())?;
    match kind.as_ref() {
        "sale" => {
            absent("original_txn_id", &r.original_txn_id, "sale")?;
            reject_batch_totals(&r, "sale")?;
            let channel = fields::channel("channel", r.channel)?;
            let currency = fields::currency("currency", r.currency)?;
            let channel_txn_id = match (channel, r.channel_txn_id) {
                (Channel::Cash, None) => None,
                (_, v @ Some(_)) => Some(fields::id("channel_txn_id", v)?),
                (_, None) => {
                    return Err(FieldError::new("channel_txn_id", "is required for non-cash sales"));
                }
            };
            let rrn = r.rrn.map(|v| fields::id("rrn", Some(v))).transpose()?;
            Ok(FeedCommand::Sale(PaymentCaptured {
                txn_id: fields::id("txn_id", r.txn_id)?,
                merchant_id: fields::id("merchant_id", r.merchant_id)?,
                terminal_id: fields::id("terminal_id", r.terminal_id)?,
                batch_no: fields::fixed_digits("batch_no", r.batch_no, 6)?,
                stan: fields::fixed_digits("stan", r.stan, 6)?,
                rrn,
                channel,
                channel_txn_id,
                amount: fields::positive_amount("amount", r.amount, currency)?,
                currency,
                at: fields::timestamp("at", r.at)?,
                payer: fields::payer("payer", r.payer, channel)?,
                mcc: fields::mcc("mcc", r.mcc)?,
            }))
        }
        kind @ ("void" | "refund" | "reversal") => {
            for (field, v) in
                [("payer", &r.payer), ("mcc", &r.mcc), ("channel_txn_id", &r.channel_txn_id), ("rrn", &r.rrn)]
            {
                absent(field, v, kind)?;
            }
            reject_batch_totals(&r, kind)?;
            let currency = fields::currency("currency", r.currency)?;
            let adjustment = PaymentAdjustment {
                txn_id: fields::id("txn_id", r.txn_id)?,
                original_txn_id: fields::id("original_txn_id", r.original_txn_id)?,
                merchant_id: fields::id("merchant_id", r.merchant_id)?,
                terminal_id: fields::id("terminal_id", r.terminal_id)?,
                batch_no: fields::fixed_digits("batch_no", r.batch_no, 6)?,
                stan: fields::fixed_digits("stan", r.stan, 6)?,
                channel: fields::channel("channel", r.channel)?,
                amount: fields::positive_amount("amount", r.amount, currency)?,
                currency,
                at: fields::timestamp("at", r.at)?,
            };
            if adjustment.txn_id == adjustment.original_txn_id {
                return Err(FieldError::new("original_txn_id", "must differ from txn_id"));
            }
            Ok(match kind {
                "void" => FeedCommand::Void(adjustment),
                "refund" => FeedCommand::Refund(adjustment),
                _ => FeedCommand::Reversal(adjustment),
            })
        }
        "batch_close" => {
            for (field, v) in [
                ("txn_id", &r.txn_id),
                ("original_txn_id", &r.original_txn_id),
                ("stan", &r.stan),
                ("rrn", &r.rrn),
                ("channel", &r.channel),
                ("channel_txn_id", &r.channel_txn_id),
                ("amount", &r.amount),
                ("payer", &r.payer),
                ("mcc", &r.mcc),
            ] {
                absent(field, v, "batch_close")?;
            }
            let currency = match r.currency {
                Some(c) => fields::currency("currency", Some(c))?,
                None => Currency::Cny,
            };
            let close = TerminalBatchClosed {
                merchant_id: fields::id("merchant_id", r.merchant_id)?,
                terminal_id: fields::id("terminal_id", r.terminal_id)?,
                batch_no: fields::fixed_digits("batch_no", r.batch_no, 6)?,
                debit_count: batch_count("debit_count", r.debit_count)?,
                debit_amount: fields::non_negative_amount("debit_amount", r.debit_amount, currency)?,
                credit_count: batch_count("credit_count", r.credit_count)?,
                credit_amount: fields::non_negative_amount("credit_amount", r.credit_amount, currency)?,
                currency,
                at: fields::timestamp("at", r.at)?,
            };
            // A count of nothing has no amount, and an amount comes from something counted.
            for (field, count, amount) in [
                ("debit_amount", close.debit_count, close.debit_amount),
                ("credit_amount", close.credit_count, close.credit_amount),
            ] {
                if (count == 0) != amount.is_zero() {
                    return Err(FieldError::new(field, format!("{amount} does not fit a count of {count}")));
                }
            }
            Ok(FeedCommand::BatchClose(close))
        }
        other => Err(FieldError::new(
            "kind",
            format!("unknown kind {other:?} (expected sale, void, refund, reversal or batch_close)"),
        )),
    }
}

/// Most transactions one terminal batch may report.
pub const BATCH_COUNT_MAX: u64 = 1_000_000;

fn batch_count(field: &'static str, value: Option<u64>) -> Result<u64, FieldError> {
    let n = required(field, value)?;
    if n > BATCH_COUNT_MAX {
        return Err(FieldError::new(field, format!("must be at most {BATCH_COUNT_MAX}")));
    }
    Ok(n)
}

fn reject_batch_totals(r: &RawFeedRecord<'_>, kind: &str) -> Result<(), FieldError> {
    absent("debit_count", &r.debit_count, kind)?;
    absent("debit_amount", &r.debit_amount, kind)?;
    absent("credit_count", &r.credit_count, kind)?;
    absent("credit_amount", &r.credit_amount, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALE: &str = r#"{"kind":"sale","txn_id":"M000001-20261126-000123","merchant_id":"M000001","terminal_id":"T0000001","batch_no":"000012","stan":"000123","rrn":"633012345678","channel":"wechat","channel_txn_id":"4200000000202611260000000001","amount":"25.00","currency":"CNY","at":"2026-11-26T12:00:01+08:00","payer":"oAbC1xyz","mcc":"5812"}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(SALE).expect("json");
        if value == "<remove>" {
            v.as_object_mut().expect("object").remove(field);
        } else {
            v[field] = serde_json::from_str(value).expect("value json");
        }
        v.to_string()
    }

    fn err(text: &str) -> LineError {
        parse_feed_line(7, text.as_bytes()).expect_err("should be refused")
    }

    #[test]
    fn the_design_example_parses() {
        let FeedCommand::Sale(s) = parse_feed_line(1, SALE.as_bytes()).expect("valid") else { panic!("a sale") };
        assert_eq!(s.amount.to_string(), "25.00");
        assert_eq!(s.channel, Channel::Wechat);
        assert_eq!(s.at.offset().local_minus_utc(), 8 * 3600);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("amount", r#""-1.00""#, "greater than zero"),
            ("amount", r#""0.00""#, "greater than zero"),
            ("amount", r#""1.001""#, "decimal places"),
            ("amount", "25.0", "expected a string"),
            ("channel", r#""paypal""#, "unknown channel"),
            ("currency", r#""EUR""#, "unsupported currency"),
            ("at", r#""yesterday""#, "RFC 3339"),
            ("at", r#""1999-12-31T23:59:59+08:00""#, "years"),
            ("at", r#""2026-11-26T23:59:60+08:00""#, "leap second"),
            ("at", r#""2026-11-26T12:00:00+20:00""#, "offset"),
            ("batch_no", r#""12""#, "exactly 6 digits"),
            ("stan", r#""0001234""#, "exactly 6 digits"),
            ("payer", r#""6222021234567890128""#, "full card number"),
            ("mcc", r#""58""#, "four-digit"),
            ("txn_id", "<remove>", "required"),
            ("channel_txn_id", "<remove>", "required for non-cash"),
            ("original_txn_id", r#""X""#, "not allowed"),
            ("tip", r#""1.00""#, "unknown field"),
        ];
        for (field, value, reason) in cases {
            let e = err(&with(field, value));
            assert_eq!(e.line, 7);
            assert!(e.reason.contains(reason), "{field}={value}: {e}");
            let named = e.field.as_deref() == Some(field) || (field == "tip" && e.reason.contains("tip"));
            assert!(named, "{field}={value}: {e}");
        }
    }

    #[test]
    fn a_card_sale_never_carries_a_full_pan_into_the_error() {
        let line = with("channel", r#""unionpay_card""#).replace("oAbC1xyz", "6222021234567890128");
        let e = err(&line);
        assert!(!e.to_string().contains("6222021234567890128"), "{e}");
        // Wherever it is put, whatever error it causes, the number is masked in the message.
        for (field, value) in [
            ("payer", "6222021234567890128"),
            ("amount", r#""6222021234567890128""#),
            ("currency", r#""6222021234567890128""#),
            ("kind", r#""6222 0212 3456 7890 128""#),
            ("6222021234567890128", "1"),
        ] {
            let e = err(&with(field, value));
            let text = format!("{e} {:?}", e.field);
            assert!(!text.contains("3456789"), "{field}: {text}");
            assert!(!text.contains("3456 7890"), "{field}: {text}");
        }
    }

    #[test]
    fn malformed_json_and_oversized_lines_are_refused() {
        assert!(err("{not json").reason.contains("not valid JSON"));
        assert!(err(&format!("{SALE} trailing")).reason.contains("not valid JSON"));
        assert!(err(&" ".repeat(FEED_LINE_BYTES_MAX + 1)).reason.contains("longer than"));
        assert!(err(r#"{"kind":"sell"}"#).reason.contains("unknown kind"));
    }

    #[test]
    fn batch_close_parses_with_default_currency() {
        let line = r#"{"kind":"batch_close","merchant_id":"M1","terminal_id":"T1","batch_no":"739944","debit_count":18,"debit_amount":"751.59","credit_count":0,"credit_amount":"0.00","at":"2026-11-24T23:59:59+08:00"}"#;
        let FeedCommand::BatchClose(b) = parse_feed_line(1, line.as_bytes()).expect("valid") else { panic!() };
        assert_eq!((b.debit_count, b.debit_amount.to_string(), b.currency), (18, "751.59".into(), Currency::Cny));
        assert!(
            err(&line.replace(r#""debit_count":18"#, r#""debit_count":-1"#)).field.as_deref() == Some("debit_count")
        );
        assert!(
            err(&line.replace(r#""debit_count":18"#, r#""debit_count":0"#)).field.as_deref() == Some("debit_amount")
        );
        assert!(
            err(&line.replace(r#""debit_count":18"#, r#""debit_count":1000001"#)).field.as_deref()
                == Some("debit_count")
        );
    }

    #[test]
    fn the_common_line_is_read_by_the_scanner() {
        let path = format!("{}/../tests/fixtures/day/feed-2026-11-24.ndjson", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).expect("fixture");
        for line in text.lines().chain([SALE]) {
            assert!(scan_raw(line.as_bytes()).is_some(), "{line}");
        }
        assert!(scan_raw(with("payer", r#""a\"b""#).as_bytes()).is_none(), "an escape goes to serde");
    }

    #[test]
    fn the_fixture_feeds_parse_completely() {
        for day in ["2026-11-24", "2026-11-25"] {
            let path = format!("{}/../tests/fixtures/day/feed-{day}.ndjson", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).expect("fixture");
            let mut kinds = std::collections::BTreeMap::new();
            for (i, line) in text.lines().enumerate() {
                let cmd = parse_feed_line(i as u64 + 1, line.as_bytes()).unwrap_or_else(|e| panic!("{day}: {e}"));
                *kinds.entry(cmd.kind()).or_insert(0) += 1;
                let event = cmd.into_event();
                assert_eq!(event.payload_json(), event.payload_json_serde(), "{day} line {}", i + 1);
            }
            assert_eq!(kinds["sale"], 400, "{day}");
            assert_eq!(kinds["batch_close"], 17, "{day}");
        }
    }
}

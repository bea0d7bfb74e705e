//! Channel statements: what WeChat Pay, Alipay, UnionPay (or any other channel, as a generic
//! CSV) say they settled, read into [`Statement`]s.
//!
//! Every parser is strict: a file in the wrong encoding, a missing column, a malformed amount,
//! a truncated record, or totals that disagree with the rows fail with a [`StatementError`]
//! naming the file, the line and the field — and nothing of the file is used. Columns are found
//! by their header name where the format has a header (legacy names are accepted); the
//! UnionPay ZM file has none and is sliced by byte widths.
//!
//! Amounts are exact decimals in major units of the line's currency (yuan, unless the file
//! names another: WeChat's 货币种类). A statement line is either a payment (the channel took
//! the money) or a refund (it gave money back); its `fee` is the channel's fee on the line
//! (charged on a payment, given back on a refund) in the direction the channel's format gives
//! it: negative when the file writes it with the wrong sign (see [`StatementLine::fee`]).
//!
//! [`detect`] tells a file's channel from its name or, failing that, its first bytes.

pub mod alipay;
pub mod generic;
pub mod unionpay;
pub mod wechat;
pub mod write;

use std::borrow::Cow;
use std::fmt;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::fields::ID_BYTES_MAX;
use crate::money::Currency;

/// Largest statement file accepted, in bytes.
pub const STATEMENT_BYTES_MAX: u64 = 1 << 30;
/// Most lines a statement may hold.
pub const STATEMENT_LINES_MAX: u64 = 10_000_000;
/// Largest amount on a statement line, in yuan.
pub const STATEMENT_AMOUNT_MAX: Decimal = crate::money::AMOUNT_MAX;

/// The channel a statement comes from. `Unionpay` covers both UnionPay card and QR payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementChannel {
    /// WeChat Pay trade bill.
    Wechat,
    /// Alipay 业务明细.
    Alipay,
    /// UnionPay 全渠道 ZM file (card and QR).
    Unionpay,
    /// Any other channel, as a CSV with named columns.
    Generic,
}

impl StatementChannel {
    /// The name used on the command line and in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatementChannel::Wechat => "wechat",
            StatementChannel::Alipay => "alipay",
            StatementChannel::Unionpay => "unionpay",
            StatementChannel::Generic => "generic",
        }
    }
}

impl fmt::Display for StatementChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a statement line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The channel collected a payment.
    Payment,
    /// The channel gave money back.
    Refund,
}

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Line number in the file (from 1).
    pub line: u64,
    /// Payment or refund.
    pub kind: LineKind,
    /// Our order number: the sale's `txn_id` on a payment, the refund's `txn_id` on a refund.
    pub txn_id: String,
    /// On a refund, the sale's `txn_id` when the file gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_txn_id: Option<String>,
    /// The channel's transaction id.
    pub channel_txn_id: String,
    /// Amount paid or refunded, positive.
    pub amount: Decimal,
    /// The channel's fee on the line, in the direction the channel's convention gives it for
    /// this kind of line (see each parser; WeChat: charged on payments, given back on refunds):
    /// its size when the file's sign is the convention's, negative when the sign is the wrong
    /// one, which reconciliation reports as a `fee_mismatch` (the money then differs by twice
    /// the fee). Imports recorded before signs were checked hold sizes.
    pub fee: Decimal,
    /// When the channel says it happened (local time as printed), if the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<NaiveDateTime>,
    /// The currency of the amount and fee: the file's when it names one (WeChat 货币种类),
    /// else CNY. Stored only when it is not CNY.
    #[serde(default = "Currency::cny", skip_serializing_if = "Currency::is_cny")]
    pub currency: Currency,
}

/// Sums over a statement's lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Payment lines.
    pub payments: u64,
    /// Their amounts.
    pub payment_amount: Decimal,
    /// Refund lines.
    pub refunds: u64,
    /// Their amounts.
    pub refund_amount: Decimal,
    /// The fees net: those charged on payments less those given back on refunds.
    pub fees: Decimal,
}

impl Totals {
    fn add(&mut self, line: &StatementLine) {
        match line.kind {
            LineKind::Payment => {
                self.payments += 1;
                self.payment_amount += line.amount;
                self.fees += line.fee;
            }
            LineKind::Refund => {
                self.refunds += 1;
                self.refund_amount += line.amount;
                self.fees -= line.fee;
            }
        }
    }
}

/// A statement as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Where it comes from.
    pub channel: StatementChannel,
    /// The date the file itself names (Alipay's header), if it names one.
    pub stated_date: Option<NaiveDate>,
    /// Its lines, in file order.
    pub lines: Vec<StatementLine>,
    /// Sums over the lines (checked against the file's own summary where it has one).
    pub totals: Totals,
}

impl Statement {
    /// Whether the statement holds together: every amount positive (a fee may have either
    /// sign: a wrong one is reported by reconciliation),
    /// and its totals the sums of its lines (what the parsers promise; the fuzz targets check
    /// it on whatever they accept).
    pub fn consistent(&self) -> bool {
        let mut totals = Totals::default();
        for line in &self.lines {
            // A fee may be negative (the wrong sign, which reconciliation reports); an amount
            // may not.
            if line.amount <= Decimal::ZERO {
                return false;
            }
            totals.add(line);
        }
        totals == self.totals
    }
}

/// Why a statement file was refused: which file, line and field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{file} line {line}{}: {reason}", field.as_deref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
pub struct StatementError {
    /// The file's name as given.
    pub file: String,
    /// Line number (from 1; 0: the file as a whole).
    pub line: u64,
    /// The column or field, when one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// Builds errors for one file.
#[derive(Clone, Copy)]
pub(crate) struct Blame<'a> {
    pub(crate) file: &'a str,
}

impl Blame<'_> {
    pub(crate) fn at(&self, line: u64, field: Option<&str>, reason: impl Into<String>) -> StatementError {
        StatementError { file: self.file.to_owned(), line, field: field.map(str::to_owned), reason: reason.into() }
    }

    pub(crate) fn file(&self, reason: impl Into<String>) -> StatementError {
        self.at(0, None, reason)
    }
}

/// Checks a file's size before it is read.
pub fn check_size(file: &str, bytes: u64) -> Result<(), StatementError> {
    if bytes > STATEMENT_BYTES_MAX {
        return Err(Blame { file }.file(format!(
            "is {bytes} bytes; statements are limited to {STATEMENT_BYTES_MAX} bytes (STATEMENT_BYTES_MAX)"
        )));
    }
    Ok(())
}

/// Longest statement name accepted (the file's name, or `?name=` of an upload), in bytes.
pub const STATEMENT_NAME_BYTES_MAX: usize = 255;

/// Refuses a statement name that is empty, longer than [`STATEMENT_NAME_BYTES_MAX`] or holds
/// a control character (an escape code would be echoed into every report that names the
/// file). The error shows the name escaped and cut short.
pub fn check_name(file: &str) -> Result<(), StatementError> {
    if file.is_empty() || file.len() > STATEMENT_NAME_BYTES_MAX || file.chars().any(char::is_control) {
        let cut: String = file.chars().take(64).collect();
        let shown = format!("{cut:?}{}", if cut.len() < file.len() { "…" } else { "" });
        return Err(Blame { file: &shown }.file(format!(
            "is not a statement name: 1 to {STATEMENT_NAME_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

/// The channel whose statement a file is: from its name (`wechat…`, `alipay…`, `unionpay…`,
/// `generic…`, any case), else from its first bytes (a WeChat bill's header naming 微信订单号,
/// an Alipay export's `#支付宝` first line in GBK or its zip, a UnionPay ZM record's `S22`/`S30`,
/// a generic CSV header naming `reference` and `amount`); `None` when neither says.
pub fn detect(name: &str, bytes: &[u8]) -> Option<StatementChannel> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name).to_ascii_lowercase();
    for (prefix, channel) in [
        ("wechat", StatementChannel::Wechat),
        ("alipay", StatementChannel::Alipay),
        ("unionpay", StatementChannel::Unionpay),
        ("generic", StatementChannel::Generic),
    ] {
        if base.starts_with(prefix) {
            return Some(channel);
        }
    }
    let head = &bytes[..bytes.len().min(4096)];
    let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let utf8 = String::from_utf8_lossy(first_line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(first_line)).into_owned();
    if utf8.contains("微信订单号") {
        return Some(StatementChannel::Wechat);
    }
    if head.starts_with(b"PK\x03\x04") || encoding_rs::GBK.decode(first_line).0.starts_with("#支付宝") {
        return Some(StatementChannel::Alipay);
    }
    if head.starts_with(b"S22 ") || head.starts_with(b"S30 ") {
        return Some(StatementChannel::Unionpay);
    }
    let lower = utf8.to_ascii_lowercase();
    if lower.contains("reference") && lower.contains("amount") {
        return Some(StatementChannel::Generic);
    }
    None
}

/// The business date a statement's rows are of: the date its file states (Alipay), else the
/// latest date among its lines (a file also holds the last minutes of the day before, carried
/// to it); `None` for a file with neither.
pub fn content_date(statement: &Statement) -> Option<NaiveDate> {
    statement.stated_date.or_else(|| statement.lines.iter().filter_map(|l| l.at.map(|t| t.date())).max())
}

/// Splits a file into lines (`\n`, with an optional `\r` before it), numbered from 1; a last
/// line without `\n` counts, an empty tail does not.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    body.split(|b| *b == b'\n')
        .filter(move |_| !empty)
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
}

/// Splits one CSV record into fields. Quotes follow RFC 4180 (a quoted field may hold commas
/// and doubled quotes); most statements have none, and then nothing is copied.
pub(crate) fn csv_fields(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    if !line.contains('"') {
        return Ok(line.split(',').map(Cow::Borrowed).collect());
    }
    let mut fields = Vec::new();
    let mut chars = line.char_indices().peekable();
    let mut field = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some((_, c)) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek().is_some_and(|(_, n)| *n == '"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err("a quote in the middle of an unquoted field".into()),
            (false, ',') => {
                fields.push(Cow::Owned(std::mem::take(&mut field)));
                was_quoted = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(Cow::Owned(field));
    Ok(fields)
}

/// Where each wanted column is in a header row.
pub(crate) struct Columns {
    index: Vec<Option<usize>>,
}

/// A column a parser wants: its name and the older names it is also found by.
pub(crate) struct Wanted<'a> {
    pub(crate) names: &'a [&'a str],
    pub(crate) required: bool,
}

impl Columns {
    /// Finds `wanted` in `header` (names compared after `normalise`); a missing required
    /// column is an error naming it.
    pub(crate) fn find(
        header: &[Cow<'_, str>],
        wanted: &[Wanted<'_>],
        normalise: impl Fn(&str) -> String,
        blame: Blame<'_>,
        line: u64,
    ) -> Result<Columns, StatementError> {
        let names: Vec<String> = header.iter().map(|h| normalise(h)).collect();
        let mut index = Vec::with_capacity(wanted.len());
        for w in wanted {
            let found = w.names.iter().find_map(|n| names.iter().position(|h| h == &normalise(n)));
            if found.is_none() && w.required {
                let also = if w.names.len() > 1 {
                    format!(" (also accepted: {})", w.names[1..].join(", "))
                } else {
                    String::new()
                };
                return Err(blame.at(line, Some(w.names[0]), format!("the header has no column {}{also}", w.names[0])));
            }
            index.push(found);
        }
        Ok(Columns { index })
    }

    /// The value of wanted column `i` in `row` (`None` when the column is absent).
    pub(crate) fn get<'r>(&self, row: &'r [Cow<'r, str>], i: usize) -> Option<&'r str> {
        self.index[i].and_then(|c| row.get(c)).map(|v| v.as_ref())
    }
}

/// Largest total a file's summary may state (its lines add up to far more than one amount).
pub const STATEMENT_TOTAL_MAX: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 10^15

/// An exact decimal with at most `scale` places, optionally negative, at most
/// [`STATEMENT_AMOUNT_MAX`] in size.
pub(crate) fn decimal(text: &str, scale: u32) -> Result<Decimal, String> {
    bounded(text, scale, STATEMENT_AMOUNT_MAX)
}

/// A summary's total: like [`decimal`], up to [`STATEMENT_TOTAL_MAX`].
pub(crate) fn total(text: &str, scale: u32) -> Result<Decimal, String> {
    bounded(text, scale, STATEMENT_TOTAL_MAX)
}

fn bounded(text: &str, scale: u32, max: Decimal) -> Result<Decimal, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac) = digits.split_once('.').map_or((digits, ""), |(i, f)| (i, f));
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !plain(int_part) || !plain(frac) || (digits.contains('.') && frac.is_empty()) {
        return Err(format!("{text:?} is not an amount"));
    }
    if frac.len() as u32 > scale {
        return Err(format!("{text:?} has more than {scale} decimal places"));
    }
    if int_part.len() > 16 {
        return Err(format!("{text:?} is too large"));
    }
    let value: Decimal = text.parse().map_err(|_| format!("{text:?} is not an amount"))?;
    if value.abs() > max {
        return Err(format!("{text:?} is over the largest amount {max}"));
    }
    Ok(value)
}

/// An id: 1 to [`ID_BYTES_MAX`] bytes without control characters or spaces.
pub(crate) fn id(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.len() > ID_BYTES_MAX || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{text:?} is not an id (1 to {ID_BYTES_MAX} bytes, no spaces)"));
    }
    Ok(text.to_owned())
}

/// `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn local_time(text: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .map_err(|_| format!("{text:?} is not a time like 2026-11-24 12:00:00"))
}

/// Fails when a file's own total disagrees with the sum of its rows.
pub(crate) fn agree(
    blame: Blame<'_>,
    line: u64,
    field: &str,
    stated: Decimal,
    counted: Decimal,
) -> Result<(), StatementError> {
    if stated != counted {
        return Err(blame.at(line, Some(field), format!("the file says {stated}, its rows add up to {counted}")));
    }
    Ok(())
}

/// The statement date a file name carries (`...2026-11-24...` or `...20261124...`), if any.
pub fn date_in_name(name: &str) -> Option<NaiveDate> {
    let bytes = name.as_bytes();
    for start in 0..bytes.len() {
        for (len, format) in [(10, "%Y-%m-%d"), (8, "%Y%m%d")] {
            let Some(candidate) = name.get(start..start + len) else { continue };
            let bounded = |i: usize| bytes.get(i).is_none_or(|b| !b.is_ascii_digit());
            if (start == 0 || bounded(start - 1))
                && bounded(start + len)
                && let Ok(date) = NaiveDate::parse_from_str(candidate, format)
            {
                return Some(date);
            }
        }
    }
    None
}

/// Counts a parsed line in, refusing files with more than [`STATEMENT_LINES_MAX`] lines.
pub(crate) fn push_line(
    statement: &mut Statement,
    line: StatementLine,
    blame: Blame<'_>,
) -> Result<(), StatementError> {
    if statement.lines.len() as u64 >= STATEMENT_LINES_MAX {
        return Err(blame.at(line.line, None, format!("more than {STATEMENT_LINES_MAX} lines (STATEMENT_LINES_MAX)")));
    }
    statement.totals.add(&line);
    statement.lines.push(line);
    Ok(())
}

/// Reads a statement of `channel` from its bytes (`name` is used in errors; a date in it
/// dates records that carry no year).
pub fn parse(channel: StatementChannel, name: &str, bytes: &[u8]) -> Result<Statement, StatementError> {
    parse_dated(channel, name, bytes, date_in_name(name))
}

/// [`parse`] with the statement's date given (UnionPay records carry month and day only).
pub fn parse_dated(
    channel: StatementChannel,
    name: &str,
    bytes: &[u8],
    date: Option<NaiveDate>,
) -> Result<Statement, StatementError> {
    check_size(name, bytes.len() as u64)?;
    match channel {
        StatementChannel::Wechat => wechat::parse(name, bytes),
        StatementChannel::Alipay => alipay::parse(name, bytes),
        StatementChannel::Unionpay => unionpay::parse_dated(name, bytes, date),
        StatementChannel::Generic => generic::parse(name, bytes, &generic::Mapping::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_names_are_printable_and_bounded() {
        assert!(check_name("wechat-2026-11-24.csv").is_ok());
        assert!(check_name("微信对账单 2026-11-24.csv").is_ok());
        for bad in ["", "wechat\u{1b}[2J.csv", "a\nb.csv", "tab\there", &"x".repeat(STATEMENT_NAME_BYTES_MAX + 1)] {
            let e = check_name(bad).expect_err(bad);
            assert!(!e.file.contains('\u{1b}') && !e.file.contains('\n'), "shown escaped: {}", e.file);
            assert!(e.file.chars().count() <= 70, "cut short: {}", e.file);
        }
    }

    #[test]
    fn csv_fields_follow_rfc_4180() {
        assert_eq!(csv_fields("a,b,,c").expect("plain"), vec!["a", "b", "", "c"]);
        assert_eq!(csv_fields(r#""a,1","b""x""",c"#).expect("quoted"), vec!["a,1", "b\"x\"", "c"]);
        assert!(csv_fields(r#""open,b"#).is_err());
        assert!(csv_fields(r#"a"b,c"#).is_err());
    }

    #[test]
    fn amounts_are_exact_and_bounded() {
        assert_eq!(decimal("15.14", 2), Ok(Decimal::new(1514, 2)));
        assert_eq!(decimal("-0.03785", 5), Ok(Decimal::new(-3785, 5)));
        assert!(decimal("250995000.00", 2).is_err(), "one line's amount is bounded");
        assert_eq!(total("250995000.00", 2), Ok(Decimal::new(25_099_500_000, 2)));
        assert_eq!(STATEMENT_TOTAL_MAX, Decimal::new(1_000_000_000_000_000, 0));
        for bad in ["", "1.", ".5", "1.234", "1e3", "12,00", "--1", "1 000", "9999999999999"] {
            assert!(decimal(bad, 2).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_are_found_in_file_names() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 24);
        assert_eq!(date_in_name("statements/unionpay-2026-11-24.txt"), d);
        assert_eq!(date_in_name("ZM_898110000000001_20261124.txt"), d);
        assert_eq!(date_in_name("bill-2026-13-01.csv"), None);
        assert_eq!(date_in_name("x12026112455.csv"), None);
    }
}

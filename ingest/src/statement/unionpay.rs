//! The UnionPay 全渠道 (online and POS) ZM transaction file.
//!
//! Fixed-width GBK records, one a line, fields separated by one space and sliced by bytes
//! (some fields hold Chinese text, two bytes a character). The widths, in order, are
//! [`WIDTHS`]; the fields used:
//!
//! | # | field | use |
//! |---|---|---|
//! | 1 | 交易代码 | `S22` a payment, `S30` a refund |
//! | 5 | 交易传输时间 | `MMDDhhmmss` |
//! | 7 | 交易金额 | amount in fen, 12 digits |
//! | 10 | 查询流水号 | the channel's id |
//! | 12 | 商户订单号 | our `txn_id` (of the sale, or of the refund) |
//! | 16 | 商户手续费 | `C`/`D` and 12 digits of fen: `C` on payments (charged) and refunds (given back) alike; `D` is the wrong sign |
//! | 17 | 结算金额 | `C`/`D` and 12 digits of fen (checked for form) |
//! | 41 | 原始交易订单号 | on a refund, the sale's `txn_id` |
//!
//! The file has no header and no totals of its own; every record is checked for its length,
//! separators, digits and signs, so a UTF-8 file (other byte widths) or a cut record fails.

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;

use crate::money::Currency;

use super::{
    Blame, LineKind, Statement, StatementChannel, StatementError, StatementLine, Totals, id, lines, push_line,
};

/// Byte widths of the 42 fields of a ZM record.
pub const WIDTHS: [usize; 42] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21, 15, 1, 15, 32, 13,
    13, 8, 32, 13, 13, 12, 2, 1, 32, 98,
];

/// Bytes of a record: the fields and the 41 spaces between them.
pub const RECORD_BYTES: usize = {
    let mut sum = WIDTHS.len() - 1;
    let mut i = 0;
    while i < WIDTHS.len() {
        sum += WIDTHS[i];
        i += 1;
    }
    sum
};

const CODE: usize = 0;
const TIME: usize = 4;
const AMOUNT: usize = 6;
const QUERY_ID: usize = 9;
const ORDER: usize = 11;
const FEE: usize = 15;
const SETTLED: usize = 16;
const ORIGINAL_ORDER: usize = 40;

const NAMES: [(usize, &str); 8] = [
    (CODE, "交易代码"),
    (TIME, "交易传输时间"),
    (AMOUNT, "交易金额"),
    (QUERY_ID, "查询流水号"),
    (ORDER, "商户订单号"),
    (FEE, "商户手续费"),
    (SETTLED, "结算金额"),
    (ORIGINAL_ORDER, "原始交易订单号"),
];

fn name_of(field: usize) -> &'static str {
    NAMES.iter().find(|(i, _)| *i == field).map_or("?", |(_, n)| n)
}

/// Reads a ZM file. `date` is the statement's date (its records carry month and day only).
pub fn parse(name: &str, bytes: &[u8]) -> Result<Statement, StatementError> {
    parse_dated(name, bytes, super::date_in_name(name))
}

/// [`parse`] with the statement date given (for the year of the records' times).
pub fn parse_dated(name: &str, bytes: &[u8], date: Option<NaiveDate>) -> Result<Statement, StatementError> {
    let blame = Blame { file: name };
    let mut statement = Statement {
        channel: StatementChannel::Unionpay,
        stated_date: None,
        lines: Vec::new(),
        totals: Totals::default(),
    };
    let mut starts = [0usize; 42];
    let mut at = 0;
    for (i, w) in WIDTHS.iter().enumerate() {
        starts[i] = at;
        at += w + 1;
    }
    for (n, record) in lines(bytes) {
        if record.iter().all(|b| *b == b' ') {
            continue;
        }
        if record.len() != RECORD_BYTES {
            let why = if std::str::from_utf8(record).is_ok() && !record.is_ascii() {
                " (UTF-8 text? a ZM file is GBK, two bytes a Chinese character)"
            } else {
                ""
            };
            return Err(blame.at(n, None, format!("is {} bytes, a ZM record is {RECORD_BYTES}{why}", record.len())));
        }
        for i in 1..WIDTHS.len() {
            if record[starts[i] - 1] != b' ' {
                return Err(blame.at(n, None, format!("no separator before field {}", i + 1)));
            }
        }
        let raw = |i: usize| &record[starts[i]..starts[i] + WIDTHS[i]];
        let text = |i: usize| -> Result<&str, StatementError> {
            std::str::from_utf8(raw(i)).map(str::trim).map_err(|_| blame.at(n, Some(name_of(i)), "is not ASCII"))
        };
        let fen = |i: usize, digits: &[u8]| -> Result<Decimal, StatementError> {
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(blame.at(
                    n,
                    Some(name_of(i)),
                    format!("{:?} is not a number of fen", String::from_utf8_lossy(digits)),
                ));
            }
            let v: i64 = std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            let value = Decimal::new(v, 2);
            if value > super::STATEMENT_AMOUNT_MAX {
                return Err(blame.at(n, Some(name_of(i)), format!("{value} is over the largest amount")));
            }
            Ok(value)
        };
        let signed = |i: usize| -> Result<Decimal, StatementError> {
            let field = raw(i);
            let value = fen(i, &field[1..])?;
            match field[0] {
                b'C' => Ok(value),
                b'D' => Ok(-value),
                other => Err(blame.at(n, Some(name_of(i)), format!("sign {:?} is neither C nor D", other as char))),
            }
        };
        let kind = match text(CODE)? {
            "S22" => LineKind::Payment,
            "S30" => LineKind::Refund,
            other => {
                return Err(blame.at(
                    n,
                    Some(name_of(CODE)),
                    format!("{other:?} is neither S22 (sale) nor S30 (refund)"),
                ));
            }
        };
        let amount = fen(AMOUNT, raw(AMOUNT))?;
        if amount <= Decimal::ZERO {
            return Err(blame.at(n, Some(name_of(AMOUNT)), "is zero"));
        }
        let fee = signed(FEE)?;
        // The settled amount is read for its form only (sign and digits): how it relates to
        // the amount and fee differs between UnionPay's products.
        signed(SETTLED)?;
        let channel_txn_id = id(text(QUERY_ID)?).map_err(|e| blame.at(n, Some(name_of(QUERY_ID)), e))?;
        let txn_id = id(text(ORDER)?).map_err(|e| blame.at(n, Some(name_of(ORDER)), e))?;
        let original_txn_id = match kind {
            LineKind::Payment => None,
            LineKind::Refund => {
                Some(id(text(ORIGINAL_ORDER)?).map_err(|e| blame.at(n, Some(name_of(ORIGINAL_ORDER)), e))?)
            }
        };
        let at = time(text(TIME)?, date).map_err(|e| blame.at(n, Some(name_of(TIME)), e))?;
        push_line(
            &mut statement,
            StatementLine {
                line: n,
                kind,
                txn_id,
                original_txn_id,
                channel_txn_id,
                amount,
                // A size, `C`, on payments (charged) and refunds (given back) alike: `D` is the
                // wrong sign.
                fee,
                at,
                currency: Currency::Cny,
            },
            blame,
        )?;
    }
    Ok(statement)
}

/// `MMDDhhmmss` in the year of the statement date (the year before, for a December record in
/// a January statement); unknown without a date.
fn time(text: &str, date: Option<NaiveDate>) -> Result<Option<NaiveDateTime>, String> {
    if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not MMDDhhmmss"));
    }
    let Some(date) = date else { return Ok(None) };
    let year = chrono::Datelike::year(&date);
    let month: u32 = text[..2].parse().unwrap_or(0);
    let year = if month == 12 && chrono::Datelike::month(&date) == 1 { year - 1 } else { year };
    NaiveDateTime::parse_from_str(&format!("{year}{text}"), "%Y%m%d%H%M%S")
        .map(Some)
        .map_err(|_| format!("{text:?} is not MMDDhhmmss"))
}

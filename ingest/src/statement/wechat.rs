//! The WeChat Pay trade bill (交易账单, types ALL, SUCCESS and REFUND).
//!
//! UTF-8 (a BOM is allowed), CRLF or LF. A header row of column names, then one row per
//! transaction with every value prefixed by a backtick, then a summary header
//! (`总交易单数,...`) and the summary line. Payment rows have 交易状态 `SUCCESS`: 商户订单号 is
//! our `txn_id`, 微信订单号 the channel's id, 应结订单金额 the amount. Refund rows have
//! `REFUND`: 商户退款单号 is the refund's `txn_id`, 商户订单号 the sale's, 退款金额 the amount,
//! and 手续费 is negative (the fee given back). Fees have up to 5 decimal places. 货币种类 (when
//! the bill has it) is the row's currency: `CNY`, or `HKD` (and the others posledger books) on a
//! cross-border bill.
//!
//! The summary is checked: 总交易单数 = rows, 应结订单总金额 = Σ 应结订单金额, 退款总金额 =
//! Σ 退款金额, 手续费总金额 = Σ 手续费.

use super::{
    Blame, Columns, LineKind, Statement, StatementChannel, StatementError, StatementLine, Totals, Wanted, agree,
    csv_fields, decimal, id, lines, local_time, push_line, total,
};
use rust_decimal::Decimal;

use crate::money::Currency;

const TIME: usize = 0;
const CHANNEL_ID: usize = 1;
const ORDER: usize = 2;
const STATUS: usize = 3;
const AMOUNT: usize = 4;
const REFUND_ORDER: usize = 5;
const REFUND_AMOUNT: usize = 6;
const FEE: usize = 7;
const CURRENCY: usize = 8;

const WANTED: &[Wanted<'static>] = &[
    Wanted { names: &["交易时间"], required: true },
    Wanted { names: &["微信订单号"], required: true },
    Wanted { names: &["商户订单号"], required: true },
    Wanted { names: &["交易状态"], required: true },
    Wanted { names: &["应结订单金额", "总金额"], required: true },
    Wanted { names: &["商户退款单号"], required: true },
    Wanted { names: &["退款金额", "企业红包退款金额"], required: true },
    Wanted { names: &["手续费"], required: true },
    Wanted { names: &["货币种类"], required: false },
];

/// The first cell of the summary header.
const SUMMARY_HEADER: &str = "总交易单数";

/// A value without its backtick.
fn value(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('`').unwrap_or(v)
}

/// Reads a WeChat trade bill.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Statement, StatementError> {
    let blame = Blame { file: name };
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut statement = Statement {
        channel: StatementChannel::Wechat,
        stated_date: None,
        lines: Vec::new(),
        totals: Totals::default(),
    };
    let mut columns: Option<(Columns, usize)> = None;
    let mut summary_header: Option<(u64, Vec<String>)> = None;
    let mut summary: Option<(u64, Vec<String>, Vec<String>)> = None;
    // Column sums over every row, for the summary.
    let (mut settle_sum, mut refund_sum, mut fee_sum) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for (n, raw) in lines(bytes) {
        let line = std::str::from_utf8(raw)
            .map_err(|_| blame.at(n, None, "is not UTF-8 (a WeChat bill is UTF-8); is this a GBK file?"))?;
        if line.trim().is_empty() {
            continue;
        }
        if summary.is_some() {
            return Err(blame.at(n, None, "text after the summary line"));
        }
        let fields = csv_fields(line).map_err(|e| blame.at(n, None, e))?;
        if let Some((header_line, names)) = &summary_header {
            let values: Vec<String> = fields.iter().map(|f| value(f).to_owned()).collect();
            if values.len() != names.len() {
                return Err(blame.at(
                    n,
                    None,
                    format!("the summary has {} values for {} names (line {header_line})", values.len(), names.len()),
                ));
            }
            summary = Some((n, names.clone(), values));
            continue;
        }
        if value(&fields[0]) == SUMMARY_HEADER {
            summary_header = Some((n, fields.iter().map(|f| value(f).to_owned()).collect()));
            continue;
        }
        let Some((cols, width)) = &columns else {
            let cols = Columns::find(&fields, WANTED, |s| value(s).to_owned(), blame, n)?;
            columns = Some((cols, fields.len()));
            continue;
        };
        if fields.len() != *width {
            return Err(blame.at(n, None, format!("{} fields, the header has {width}", fields.len())));
        }
        let get = |i: usize| cols.get(&fields, i).map(value).unwrap_or_default();
        let field = |i: usize| WANTED[i].names[0];
        let at = local_time(get(TIME)).map_err(|e| blame.at(n, Some(field(TIME)), e))?;
        let channel_txn_id = id(get(CHANNEL_ID)).map_err(|e| blame.at(n, Some(field(CHANNEL_ID)), e))?;
        let order = id(get(ORDER)).map_err(|e| blame.at(n, Some(field(ORDER)), e))?;
        // The row's currency (CNY when the bill has no such column).
        let currency = match get(CURRENCY) {
            "" => Currency::Cny,
            code => code.parse::<Currency>().map_err(|e| blame.at(n, Some(field(CURRENCY)), e))?,
        };
        let fee = decimal(get(FEE), 5).map_err(|e| blame.at(n, Some(field(FEE)), e))?;
        let amount = decimal(get(AMOUNT), 2).map_err(|e| blame.at(n, Some(field(AMOUNT)), e))?;
        let refunded = decimal(get(REFUND_AMOUNT), 2).map_err(|e| blame.at(n, Some(field(REFUND_AMOUNT)), e))?;
        (settle_sum, refund_sum, fee_sum) = (settle_sum + amount, refund_sum + refunded, fee_sum + fee);
        let line = match get(STATUS) {
            "SUCCESS" => {
                if amount <= Decimal::ZERO {
                    return Err(blame.at(n, Some(field(AMOUNT)), format!("{amount} is not a positive payment")));
                }
                StatementLine {
                    line: n,
                    kind: LineKind::Payment,
                    txn_id: order,
                    original_txn_id: None,
                    channel_txn_id,
                    amount,
                    // Charged: positive in the file.
                    fee,
                    at: Some(at),
                    currency,
                }
            }
            "REFUND" => {
                let refund_order = id(get(REFUND_ORDER)).map_err(|e| blame.at(n, Some(field(REFUND_ORDER)), e))?;
                let amount = refunded;
                if amount <= Decimal::ZERO {
                    return Err(blame.at(n, Some(field(REFUND_AMOUNT)), format!("{amount} is not a positive refund")));
                }
                StatementLine {
                    line: n,
                    kind: LineKind::Refund,
                    txn_id: refund_order,
                    original_txn_id: Some(order),
                    channel_txn_id,
                    amount,
                    // Given back: negative in the file.
                    fee: -fee,
                    at: Some(at),
                    currency,
                }
            }
            other => {
                return Err(blame.at(n, Some(field(STATUS)), format!("{other:?} is neither SUCCESS nor REFUND")));
            }
        };
        push_line(&mut statement, line, blame)?;
    }
    if columns.is_none() {
        return Err(blame.file("has no header row: is this a WeChat trade bill?"));
    }
    let Some((n, names, values)) = summary else {
        return Err(blame.file("has no summary line at its end: the file is truncated"));
    };
    let stated = |name: &str| -> Result<Option<&str>, StatementError> {
        Ok(names.iter().position(|x| x == name).map(|i| values[i].as_str()))
    };
    let count = stated(SUMMARY_HEADER)?.ok_or_else(|| blame.at(n, Some(SUMMARY_HEADER), "missing"))?;
    let count: u64 =
        count.parse().map_err(|_| blame.at(n, Some(SUMMARY_HEADER), format!("{count:?} is not a count")))?;
    let rows = statement.lines.len() as u64;
    if count != rows {
        return Err(blame.at(n, Some(SUMMARY_HEADER), format!("the file says {count} rows, it has {rows}")));
    }
    let sums = [("应结订单总金额", settle_sum, 2), ("退款总金额", refund_sum, 2), ("手续费总金额", fee_sum, 5)];
    for (name, counted, scale) in sums {
        let Some(text) = stated(name)? else {
            return Err(blame.at(n, Some(name), "the summary has no such total"));
        };
        let total = total(text, scale).map_err(|e| blame.at(n, Some(name), e))?;
        agree(blame, n, name, total, counted)?;
    }
    Ok(statement)
}

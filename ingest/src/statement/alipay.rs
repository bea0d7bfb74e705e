//! The Alipay 业务明细 (account detail) CSV, as exported or inside the zip Alipay serves it in.
//!
//! GBK, CRLF. `#` comment lines before the column header (the account and the period:
//! `#起始日期：[2026年11月24日 00:00:00] ...`), the header, one row per transaction, and `#`
//! footer lines with totals (`#交易合计：126笔，商家实收共4903.77元，...`,
//! `#退款合计：4笔，商家实收退款共-121.61元，...`). Id fields end in a tab. 业务类型 is `交易`
//! (a payment: 商户订单号 is our `txn_id`) or `退款` (a refund: negative amounts, 退款批次号/请求号
//! is the refund's `txn_id`). 服务费 is negative when charged and positive when given back.
//!
//! The footer is checked: the counts and 商家实收 sums of payments and of refunds.

use std::io::Read;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::money::Currency;

use super::{
    Blame, Columns, LineKind, Statement, StatementChannel, StatementError, StatementLine, Totals, Wanted, agree,
    csv_fields, decimal, id, lines, local_time, push_line, total,
};

const CHANNEL_ID: usize = 0;
const ORDER: usize = 1;
const KIND: usize = 2;
const FINISHED: usize = 3;
const AMOUNT: usize = 4;
const RECEIVED: usize = 5;
const REFUND_ORDER: usize = 6;
const FEE: usize = 7;

const WANTED: &[Wanted<'static>] = &[
    Wanted { names: &["支付宝交易号"], required: true },
    Wanted { names: &["商户订单号"], required: true },
    Wanted { names: &["业务类型", "账务类型"], required: true },
    Wanted { names: &["完成时间", "创建时间"], required: true },
    Wanted { names: &["订单金额(元)", "订单金额"], required: true },
    Wanted { names: &["商家实收(元)", "商家实收", "实收金额(元)"], required: true },
    Wanted { names: &["退款批次号/请求号", "退款批次号"], required: true },
    Wanted { names: &["服务费(元)", "服务费"], required: true },
];

/// Header names compared without full-width parentheses or surrounding space.
fn normalise(name: &str) -> String {
    name.trim().replace('（', "(").replace('）', ")")
}

/// The largest zip entry read, in bytes.
const ZIP_ENTRY_BYTES_MAX: u64 = super::STATEMENT_BYTES_MAX;
/// The largest unpacked-to-packed ratio of a zip entry (CSV text packs about 10:1).
pub const ZIP_RATIO_MAX: u64 = 200;

/// Reads an Alipay statement: the CSV itself, or a zip holding it.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Statement, StatementError> {
    if bytes.starts_with(b"PK\x03\x04") {
        let csv = from_zip(name, bytes)?;
        return parse_csv(name, &csv);
    }
    parse_csv(name, bytes)
}

/// The 业务明细 CSV inside an Alipay zip (not the 汇总 summary file next to it).
fn from_zip(name: &str, bytes: &[u8]) -> Result<Vec<u8>, StatementError> {
    let blame = Blame { file: name };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| blame.file(format!("is not a readable zip: {e}")))?;
    let mut chosen = None;
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| blame.file(format!("zip entry {i}: {e}")))?;
        let raw = entry.name_raw().to_vec();
        // Alipay writes entry names in GBK; other tools in UTF-8.
        let entry_name = match std::str::from_utf8(&raw) {
            Ok(utf8) => utf8.to_owned(),
            Err(_) => encoding_rs::GBK.decode_without_bom_handling(&raw).0.into_owned(),
        };
        let csv = entry_name.to_ascii_lowercase().ends_with(".csv");
        if csv && !entry_name.contains("汇总") && (entry_name.contains("明细") || chosen.is_none()) {
            chosen = Some((i, entry_name));
        }
    }
    let Some((i, entry_name)) = chosen else {
        return Err(blame.file("the zip holds no .csv account detail (业务明细) file"));
    };
    let entry = archive.by_index(i).map_err(|e| blame.file(format!("zip entry {entry_name}: {e}")))?;
    // A zip entry says how large it unpacks: refuse more than a statement may be, or a ratio
    // no text file compresses to (a zip bomb), before unpacking anything.
    let (size, packed) = (entry.size(), entry.compressed_size().max(1));
    if size > ZIP_ENTRY_BYTES_MAX || size / packed > ZIP_RATIO_MAX {
        return Err(blame.file(format!(
            "zip entry {entry_name} unpacks to {size} bytes from {packed}: over the limits \
             (STATEMENT_BYTES_MAX, a ratio of {ZIP_RATIO_MAX})"
        )));
    }
    let mut out = Vec::new();
    entry
        .take(size.min(ZIP_ENTRY_BYTES_MAX) + 1)
        .read_to_end(&mut out)
        .map_err(|e| blame.file(format!("reading {entry_name} from the zip: {e}")))?;
    super::check_size(&format!("{name}:{entry_name}"), out.len() as u64)?;
    Ok(out)
}

/// A `#` line's `[2026年11月24日 ...]` date.
fn bracket_date(line: &str) -> Option<NaiveDate> {
    let start = line.find('[')? + 1;
    let text = line[start..].split_whitespace().next()?;
    NaiveDate::parse_from_str(text, "%Y年%m月%d日").ok()
}

/// The number before `笔` and the amount between `共` and the next `元` of a footer line.
fn footer(line: &str) -> Option<(String, String)> {
    let body = line.split_once('：').map(|(_, b)| b)?;
    let count = body.split_once('笔')?.0.trim();
    let amount = body.split_once('共')?.1.split_once('元')?.0.trim();
    Some((count.to_owned(), amount.to_owned()))
}

fn parse_csv(name: &str, bytes: &[u8]) -> Result<Statement, StatementError> {
    let blame = Blame { file: name };
    // UTF-8 Chinese also decodes as (wrong) GBK: catch it by name.
    if !bytes.is_ascii() && std::str::from_utf8(bytes).is_ok() {
        return Err(blame.file("is UTF-8 text; an Alipay statement is GBK (convert it with iconv -t GBK)"));
    }
    let mut statement = Statement {
        channel: StatementChannel::Alipay,
        stated_date: None,
        lines: Vec::new(),
        totals: Totals::default(),
    };
    let mut columns: Option<(Columns, usize)> = None;
    let mut rows_ended = false;
    let (mut paid, mut refunded) = (None, None);
    // 商家实收 sums of payments and of refunds, as the footer adds them.
    let (mut received, mut received_back) = (Decimal::ZERO, Decimal::ZERO);
    for (n, raw) in lines(bytes) {
        let (text, bad) = encoding_rs::GBK.decode_without_bom_handling(raw);
        if bad {
            return Err(blame.at(n, None, "is not GBK (an Alipay statement is GBK-encoded)"));
        }
        let line = text.as_ref();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if columns.is_none() {
                if comment.contains("起始日期") {
                    statement.stated_date = bracket_date(comment);
                    let end = comment.split_once("终止日期").and_then(|(_, rest)| bracket_date(rest));
                    if let (Some(start), Some(end)) = (statement.stated_date, end)
                        && end != start + chrono::Duration::days(1)
                    {
                        return Err(blame.at(
                            n,
                            Some("起始日期"),
                            format!("the statement covers {start} to {end}: a statement is one day"),
                        ));
                    }
                }
            } else {
                rows_ended = true;
                if comment.starts_with("交易合计") {
                    paid = Some((n, footer(comment).ok_or_else(|| blame.at(n, Some("交易合计"), "unreadable total"))?));
                } else if comment.starts_with("退款合计") {
                    refunded =
                        Some((n, footer(comment).ok_or_else(|| blame.at(n, Some("退款合计"), "unreadable total"))?));
                }
            }
            continue;
        }
        if rows_ended {
            return Err(blame.at(n, None, "a row after the footer"));
        }
        let fields = csv_fields(line).map_err(|e| blame.at(n, None, e))?;
        let Some((cols, width)) = &columns else {
            let cols = Columns::find(&fields, WANTED, normalise, blame, n)?;
            columns = Some((cols, fields.len()));
            continue;
        };
        if fields.len() != *width {
            return Err(blame.at(n, None, format!("{} fields, the header has {width}", fields.len())));
        }
        let get = |i: usize| cols.get(&fields, i).map(str::trim).unwrap_or_default();
        let field = |i: usize| WANTED[i].names[0];
        let channel_txn_id = id(get(CHANNEL_ID)).map_err(|e| blame.at(n, Some(field(CHANNEL_ID)), e))?;
        let order = id(get(ORDER)).map_err(|e| blame.at(n, Some(field(ORDER)), e))?;
        let at = local_time(get(FINISHED)).map_err(|e| blame.at(n, Some(field(FINISHED)), e))?;
        let amount = decimal(get(AMOUNT), 2).map_err(|e| blame.at(n, Some(field(AMOUNT)), e))?;
        let got = decimal(get(RECEIVED), 2).map_err(|e| blame.at(n, Some(field(RECEIVED)), e))?;
        let fee = decimal(get(FEE), 2).map_err(|e| blame.at(n, Some(field(FEE)), e))?;
        let line = match get(KIND) {
            "交易" => {
                if amount <= Decimal::ZERO {
                    return Err(blame.at(n, Some(field(AMOUNT)), format!("{amount} is not a positive payment")));
                }
                received += got;
                StatementLine {
                    line: n,
                    kind: LineKind::Payment,
                    txn_id: order,
                    original_txn_id: None,
                    channel_txn_id,
                    amount,
                    // Charged: negative in the file.
                    fee: -fee,
                    at: Some(at),
                    currency: Currency::Cny,
                }
            }
            "退款" => {
                if amount >= Decimal::ZERO {
                    return Err(blame.at(n, Some(field(AMOUNT)), format!("{amount} is not a negative refund")));
                }
                received_back += got;
                let refund_order = id(get(REFUND_ORDER)).map_err(|e| blame.at(n, Some(field(REFUND_ORDER)), e))?;
                StatementLine {
                    line: n,
                    kind: LineKind::Refund,
                    txn_id: refund_order,
                    original_txn_id: Some(order),
                    channel_txn_id,
                    amount: -amount,
                    // Given back: positive in the file.
                    fee,
                    at: Some(at),
                    currency: Currency::Cny,
                }
            }
            other => return Err(blame.at(n, Some(field(KIND)), format!("{other:?} is neither 交易 nor 退款"))),
        };
        push_line(&mut statement, line, blame)?;
    }
    if columns.is_none() {
        return Err(blame.file("has no column header: is this an Alipay 业务明细 file?"));
    }
    let (Some((pn, (pcount, pamount))), Some((rn, (rcount, ramount)))) = (paid, refunded) else {
        return Err(blame.file("has no #交易合计 / #退款合计 footer: the file is truncated"));
    };
    let counts = [
        (pn, "交易合计", pcount, statement.totals.payments, pamount, received),
        (rn, "退款合计", rcount, statement.totals.refunds, ramount, received_back),
    ];
    for (n, field, count, rows, amount, counted) in counts {
        let count: u64 = count.parse().map_err(|_| blame.at(n, Some(field), format!("{count:?} is not a count")))?;
        if count != rows {
            return Err(blame.at(n, Some(field), format!("the file says {count} rows, it has {rows}")));
        }
        let stated = total(&amount, 2).map_err(|e| blame.at(n, Some(field), e))?;
        agree(blame, n, field, stated, counted)?;
    }
    Ok(statement)
}

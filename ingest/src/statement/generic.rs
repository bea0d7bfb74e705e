//! A generic statement CSV for any other channel: UTF-8, a header row, one row per line.
//!
//! Columns are named by a [`Mapping`] (defaults: `reference`, `amount`, `fee`, `date`,
//! `status`, and optionally `channel_txn_id` and `original_reference`). `status` is `payment`
//! (or `SUCCESS`) or `refund` (or `REFUND`); `reference` is our `txn_id` (the refund's on a
//! refund); amounts are positive with at most 2 decimal places, fees at most 5; `date` is
//! `YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS`. An optional last row `#total,COUNT,AMOUNT,FEES`
//! (payments and refunds together) is checked against the rows.

use std::borrow::Cow;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::money::Currency;

use super::{
    Blame, Columns, LineKind, Statement, StatementChannel, StatementError, StatementLine, Totals, Wanted, agree,
    csv_fields, decimal, id, lines, local_time, push_line, total,
};

/// The header names of the generic CSV's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Our order number.
    pub reference: String,
    /// Amount (positive).
    pub amount: String,
    /// The channel's fee (its size).
    pub fee: String,
    /// Date or date and time.
    pub date: String,
    /// `payment` or `refund`.
    pub status: String,
    /// The channel's own id (optional column; the reference when absent).
    pub channel_txn_id: String,
    /// On a refund, the sale's reference (optional column).
    pub original_reference: String,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            reference: "reference".into(),
            amount: "amount".into(),
            fee: "fee".into(),
            date: "date".into(),
            status: "status".into(),
            channel_txn_id: "channel_txn_id".into(),
            original_reference: "original_reference".into(),
        }
    }
}

impl Mapping {
    /// Applies `name=column` pairs (e.g. `reference=order_no`) to the defaults.
    pub fn with(pairs: &[(String, String)]) -> Result<Mapping, String> {
        let mut m = Mapping::default();
        for (name, column) in pairs {
            let slot = match name.as_str() {
                "reference" => &mut m.reference,
                "amount" => &mut m.amount,
                "fee" => &mut m.fee,
                "date" => &mut m.date,
                "status" => &mut m.status,
                "channel_txn_id" => &mut m.channel_txn_id,
                "original_reference" => &mut m.original_reference,
                other => {
                    return Err(format!(
                        "{other:?} is not a generic statement column (reference, amount, fee, date, status, channel_txn_id, original_reference)"
                    ));
                }
            };
            *slot = column.clone();
        }
        Ok(m)
    }
}

/// Reads a generic statement with the columns `mapping` names.
pub fn parse(name: &str, bytes: &[u8], mapping: &Mapping) -> Result<Statement, StatementError> {
    let blame = Blame { file: name };
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let names: Vec<[&str; 1]> = [
        &mapping.reference,
        &mapping.amount,
        &mapping.fee,
        &mapping.date,
        &mapping.status,
        &mapping.channel_txn_id,
        &mapping.original_reference,
    ]
    .into_iter()
    .map(|n| [n.as_str()])
    .collect();
    let wanted: Vec<Wanted<'_>> =
        names.iter().enumerate().map(|(i, names)| Wanted { names, required: i < 5 }).collect();
    let mut statement = Statement {
        channel: StatementChannel::Generic,
        stated_date: None,
        lines: Vec::new(),
        totals: Totals::default(),
    };
    let mut columns: Option<(Columns, usize)> = None;
    let mut total_row: Option<(u64, Vec<Cow<'_, str>>)> = None;
    let mut signed_sum = Decimal::ZERO;
    let mut fee_sum = Decimal::ZERO;
    for (n, raw) in lines(bytes) {
        let line = std::str::from_utf8(raw).map_err(|_| blame.at(n, None, "is not UTF-8"))?;
        if line.trim().is_empty() {
            continue;
        }
        if total_row.is_some() {
            return Err(blame.at(n, None, "a row after the #total row"));
        }
        let fields = csv_fields(line).map_err(|e| blame.at(n, None, e))?;
        if fields[0].trim() == "#total" {
            total_row = Some((n, fields));
            continue;
        }
        let Some((cols, width)) = &columns else {
            let cols = Columns::find(&fields, &wanted, |s| s.trim().to_owned(), blame, n)?;
            columns = Some((cols, fields.len()));
            continue;
        };
        if fields.len() != *width {
            return Err(blame.at(n, None, format!("{} fields, the header has {width}", fields.len())));
        }
        let get = |i: usize| cols.get(&fields, i).map(str::trim).unwrap_or_default();
        let field = |i: usize| wanted[i].names[0];
        let txn_id = id(get(0)).map_err(|e| blame.at(n, Some(field(0)), e))?;
        let amount = decimal(get(1), 2).map_err(|e| blame.at(n, Some(field(1)), e))?;
        if amount <= Decimal::ZERO {
            return Err(blame.at(n, Some(field(1)), format!("{amount} is not positive")));
        }
        let fee = decimal(get(2), 5).map_err(|e| blame.at(n, Some(field(2)), e))?;
        let date = get(3);
        let at = if date.len() == 10 {
            NaiveDate::parse_from_str(date, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0))
        } else {
            local_time(date).ok()
        }
        .ok_or_else(|| blame.at(n, Some(field(3)), format!("{date:?} is not YYYY-MM-DD or YYYY-MM-DD HH:MM:SS")))?;
        let kind = match get(4).to_ascii_lowercase().as_str() {
            "payment" | "success" => LineKind::Payment,
            "refund" => LineKind::Refund,
            other => return Err(blame.at(n, Some(field(4)), format!("{other:?} is neither payment nor refund"))),
        };
        let channel_txn_id = match get(5) {
            "" => txn_id.clone(),
            v => id(v).map_err(|e| blame.at(n, Some(field(5)), e))?,
        };
        let original_txn_id = match get(6) {
            "" => None,
            v => Some(id(v).map_err(|e| blame.at(n, Some(field(6)), e))?),
        };
        signed_sum += if kind == LineKind::Payment { amount } else { -amount };
        fee_sum += fee;
        push_line(
            &mut statement,
            StatementLine {
                line: n,
                kind,
                txn_id,
                original_txn_id,
                channel_txn_id,
                amount,
                // A size on every line: a negative fee has the wrong sign.
                fee,
                at: Some(at),
                currency: Currency::Cny,
            },
            blame,
        )?;
    }
    if columns.is_none() {
        return Err(blame.file("has no header row"));
    }
    if let Some((n, fields)) = total_row {
        if fields.len() != 4 {
            return Err(blame.at(n, None, "a #total row is #total,COUNT,AMOUNT,FEES"));
        }
        let count: u64 = fields[1].trim().parse().map_err(|_| blame.at(n, Some("COUNT"), "not a count"))?;
        let rows = statement.lines.len() as u64;
        if count != rows {
            return Err(blame.at(n, Some("COUNT"), format!("the file says {count} rows, it has {rows}")));
        }
        let amount = total(fields[2].trim(), 2).map_err(|e| blame.at(n, Some("AMOUNT"), e))?;
        agree(blame, n, "AMOUNT", amount, signed_sum)?;
        let fees = total(fields[3].trim(), 5).map_err(|e| blame.at(n, Some("FEES"), e))?;
        agree(blame, n, "FEES", fees, fee_sum)?;
    }
    Ok(statement)
}

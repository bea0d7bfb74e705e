//! Writing statements in the channels' own formats: what the demo, the benchmarks and the tests
//! hand to `statement import` and `day-end`. Each writer is the inverse of its parser: a file
//! written from some [`Row`]s reads back as lines with the same kinds, ids, amounts, times and
//! fees (at the format's precision), and with totals that agree with them.
//!
//! A [`Row`]'s `fee` follows [`StatementLine::fee`](super::StatementLine::fee): the size of the
//! fee in the direction the channel's convention gives it, negative to write it with the wrong
//! sign. Each writer prints it the way its channel does (WeChat: positive on payments, negative
//! on refunds, 5 places; Alipay: negative on payments, positive on refunds, 2 places; UnionPay:
//! `C` and fen on both, `D` for the wrong sign), rounding half away from zero to the format's
//! places.

use std::fmt::Write as _;

use chrono::{Days, NaiveDate, NaiveDateTime};
use rust_decimal::{Decimal, RoundingStrategy};

use super::{Blame, LineKind, StatementError, unionpay};

/// One line to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    /// The merchant (printed where the format has a merchant or store column).
    pub merchant_id: &'a str,
    /// The terminal (printed where the format has a device column).
    pub terminal_id: &'a str,
    /// Payment or refund.
    pub kind: LineKind,
    /// Our order number: the sale's `txn_id`, or the refund's.
    pub txn_id: &'a str,
    /// On a refund, the sale's `txn_id`.
    pub original_txn_id: Option<&'a str>,
    /// The channel's transaction id (on a refund, the sale's).
    pub channel_txn_id: &'a str,
    /// Amount paid or refunded, positive.
    pub amount: Decimal,
    /// The fee, in the convention's direction (negative: the wrong sign).
    pub fee: Decimal,
    /// When it happened, local time.
    pub at: NaiveDateTime,
}

fn places(v: Decimal, dp: u32) -> Decimal {
    let mut v = v.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    v.rescale(dp);
    v
}

/// A row's ids must fit the format: no separators, no spaces.
fn check_ids(blame: Blame<'_>, n: u64, row: &Row<'_>, forbidden: &[char]) -> Result<(), StatementError> {
    let ids = [
        ("txn_id", Some(row.txn_id)),
        ("original_txn_id", row.original_txn_id),
        ("channel_txn_id", Some(row.channel_txn_id)),
    ];
    for (field, id) in ids {
        let Some(id) = id else { continue };
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control() || forbidden.contains(&c)) {
            return Err(blame.at(n, Some(field), format!("{id:?} cannot be written in this format")));
        }
    }
    if row.amount <= Decimal::ZERO {
        return Err(blame.at(n, Some("amount"), format!("{} is not positive", row.amount)));
    }
    if row.kind == LineKind::Refund && row.original_txn_id.is_none() {
        return Err(blame.at(n, Some("original_txn_id"), "a refund names its sale"));
    }
    Ok(())
}

const WECHAT_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

/// A WeChat Pay trade bill (type ALL): UTF-8 with a BOM, CRLF, backticked values, the summary
/// at the end.
pub fn wechat(rows: &[Row<'_>]) -> Result<Vec<u8>, StatementError> {
    let blame = Blame { file: "wechat" };
    let mut out = String::with_capacity(64 + rows.len() * 300);
    out.push('\u{feff}');
    out.push_str(WECHAT_HEADER);
    out.push_str("\r\n");
    let (mut settled, mut refunded, mut fees) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for (i, row) in rows.iter().enumerate() {
        check_ids(blame, i as u64 + 1, row, &[',', '`'])?;
        let at = row.at.format("%Y-%m-%d %H:%M:%S");
        let amount = places(row.amount, 2);
        let (m, t, ctid) = (row.merchant_id, row.terminal_id, row.channel_txn_id);
        let _ = match row.kind {
            LineKind::Payment => {
                let fee = places(row.fee, 5);
                (settled, fees) = (settled + amount, fees + fee);
                write!(
                    out,
                    "`{at},`wx8888888888888888,`1900000109,`{m},`{t},`{ctid},`{},`o0000000000000,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`{amount},`0.00,`0,`0,`0.00,`0.00,`,`,`POS sale,`,`{fee},`,`{amount},`0.00,`\r\n",
                    row.txn_id
                )
            }
            LineKind::Refund => {
                let fee = places(-row.fee, 5);
                (refunded, fees) = (refunded + amount, fees + fee);
                write!(
                    out,
                    "`{at},`wx8888888888888888,`1900000109,`{m},`{t},`{ctid},`{},`o0000000000000,`MICROPAY,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`5{ctid},`{},`{amount},`0.00,`ORIGINAL,`SUCCESS,`POS sale,`,`{fee},`,`{amount},`{amount},`\r\n",
                    row.original_txn_id.unwrap_or_default(),
                    row.txn_id
                )
            }
        };
    }
    let n = rows.len();
    let fees = places(fees, 5);
    let _ = write!(
        out,
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n`{n},`{settled},`{refunded},`0.00,`{fees},`{settled},`{refunded}\r\n"
    );
    Ok(out.into_bytes())
}

const ALIPAY_HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";

/// An Alipay 业务明细 of `date`: GBK, CRLF, the `#` header and footer lines with the totals.
pub fn alipay(date: NaiveDate, rows: &[Row<'_>]) -> Result<Vec<u8>, StatementError> {
    let blame = Blame { file: "alipay" };
    let cn = |d: NaiveDate| d.format("%Y年%m月%d日").to_string();
    let next = date.checked_add_days(Days::new(1)).ok_or_else(|| blame.file(format!("{date} has no next day")))?;
    let mut out = String::with_capacity(512 + rows.len() * 250);
    let _ = write!(
        out,
        "#支付宝业务明细查询\r\n#账号：[20880000000000010156]\r\n#起始日期：[{} 00:00:00]   终止日期：[{} 00:00:00]\r\n#-----------------------------------------业务明细列表----------------------------------------\r\n{ALIPAY_HEADER}\r\n",
        cn(date),
        cn(next)
    );
    let (mut paid, mut received, mut back, mut received_back) = (0u64, Decimal::ZERO, 0u64, Decimal::ZERO);
    for (i, row) in rows.iter().enumerate() {
        check_ids(blame, i as u64 + 1, row, &[',', '#'])?;
        let at = row.at.format("%Y-%m-%d %H:%M:%S");
        let amount = places(row.amount, 2);
        let (m, t, ctid) = (row.merchant_id, row.terminal_id, row.channel_txn_id);
        let _ = match row.kind {
            LineKind::Payment => {
                (paid, received) = (paid + 1, received + amount);
                write!(
                    out,
                    "{ctid}\t,{}\t,交易\t,POS消费,{at},{at},{m}\t,门店\t,op1\t,{t}\t,*0000\t,{amount},{amount},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,{},0.00,\r\n",
                    row.txn_id,
                    places(-row.fee, 2)
                )
            }
            LineKind::Refund => {
                (back, received_back) = (back + 1, received_back - amount);
                write!(
                    out,
                    "{ctid}\t,{}\t,退款\t,POS消费,{at},{at},{m}\t,门店\t,op1\t,{t}\t,*0000\t,-{amount},-{amount},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,{}\t,{},0.00,\r\n",
                    row.original_txn_id.unwrap_or_default(),
                    row.txn_id,
                    places(row.fee, 2)
                )
            }
        };
    }
    let _ = write!(
        out,
        "#-----------------------------------------业务明细列表结束------------------------------------\r\n#交易合计：{paid}笔，商家实收共{received}元，商家优惠共0.00元\r\n#退款合计：{back}笔，商家实收退款共{received_back}元，商家优惠退款共0.00元\r\n#导出时间：[{} 09:00:00]\r\n",
        cn(next)
    );
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&out);
    if unmappable {
        return Err(blame.file("a value has characters GBK cannot write"));
    }
    Ok(gbk.into_owned())
}

/// A UnionPay ZM file: fixed-width records, one a line, CRLF.
pub fn unionpay(rows: &[Row<'_>]) -> Result<Vec<u8>, StatementError> {
    let blame = Blame { file: "unionpay" };
    let mut out = Vec::with_capacity(rows.len() * (unionpay::RECORD_BYTES + 2));
    let mut record = String::with_capacity(unionpay::RECORD_BYTES);
    for (i, row) in rows.iter().enumerate() {
        let n = i as u64 + 1;
        check_ids(blame, n, row, &[])?;
        let fen = |v: Decimal, field: &str| -> Result<i64, StatementError> {
            let f = places(v, 2) * Decimal::ONE_HUNDRED;
            i64::try_from(f)
                .ok()
                .filter(|f| (0..1_000_000_000_000).contains(f))
                .ok_or_else(|| blame.at(n, Some(field), format!("{v} does not fit 12 digits of fen")))
        };
        let amount = fen(row.amount, "amount")?;
        let (sign, fee) =
            if row.fee < Decimal::ZERO { ('D', fen(-row.fee, "fee")?) } else { ('C', fen(row.fee, "fee")?) };
        let settled = amount - if sign == 'C' { fee } else { -fee };
        let settled = if settled < 0 { format!("D{:012}", -settled) } else { format!("C{settled:012}") };
        let code = if row.kind == LineKind::Payment { "S22" } else { "S30" };
        let time = row.at.format("%m%d%H%M%S").to_string();
        let original = row.original_txn_id.unwrap_or_default();
        let values: [(usize, &str); 9] = [
            (0, code),
            (4, &time),
            (9, row.channel_txn_id),
            (11, row.txn_id),
            (27, row.merchant_id),
            (33, row.terminal_id),
            (40, original),
            (7, "5812"),
            (16, &settled),
        ];
        record.clear();
        for (field, width) in unionpay::WIDTHS.iter().enumerate() {
            if field > 0 {
                record.push(' ');
            }
            let value: String = match field {
                6 => format!("{amount:012}"),
                15 => format!("{sign}{fee:012}"),
                32 => format!("C{amount:012}"),
                31 | 35 | 36 => "C000000000000".into(),
                _ => values.iter().find(|(f, _)| *f == field).map_or_else(
                    || if *width <= 2 { "0".repeat(*width) } else { String::new() },
                    |(_, v)| (*v).to_owned(),
                ),
            };
            if value.len() > *width {
                return Err(blame.at(
                    n,
                    Some(&format!("field {}", field + 1)),
                    format!("{value:?} is wider than {width} bytes"),
                ));
            }
            let _ = write!(record, "{value:<width$}");
        }
        out.extend_from_slice(record.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{StatementChannel, parse_dated};
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn rows() -> Vec<Row<'static>> {
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("time");
        let row = |kind, txn_id, original_txn_id, channel_txn_id, amount: &str, fee: &str, t: &str| Row {
            merchant_id: "M000001",
            terminal_id: "T0000101",
            kind,
            txn_id,
            original_txn_id,
            channel_txn_id,
            amount: d(amount),
            fee: d(fee),
            at: at(t),
        };
        vec![
            row(LineKind::Payment, "M1-0001", None, "4200000001", "25.00", "0.0625", "2026-11-24 12:01:02"),
            row(LineKind::Payment, "M1-0002", None, "4200000002", "1999.99", "5.00", "2026-11-24 19:30:00"),
            // The wrong sign.
            row(LineKind::Payment, "M1-0003", None, "4200000003", "8.80", "-0.02", "2026-11-24 23:55:10"),
            row(LineKind::Refund, "M1-0002-R1", Some("M1-0002"), "4200000002", "100.00", "0.25", "2026-11-24 21:00:00"),
        ]
    }

    #[test]
    fn every_writer_reads_back_through_its_parser() {
        // Given rows of both kinds, one fee of the wrong sign, each format written and parsed
        // again gives the rows back (fees at the format's places) with agreeing totals.
        let date = NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");
        let rows = rows();
        let files = [
            (StatementChannel::Wechat, "wechat-2026-11-24.csv", wechat(&rows).expect("wechat"), 5),
            (StatementChannel::Alipay, "alipay-2026-11-24.csv", alipay(date, &rows).expect("alipay"), 2),
            (StatementChannel::Unionpay, "unionpay-2026-11-24.txt", unionpay(&rows).expect("unionpay"), 2),
        ];
        for (channel, name, bytes, dp) in files {
            assert_eq!(super::super::detect(name, &bytes), Some(channel), "{name}");
            assert_eq!(super::super::detect("statement", &bytes), Some(channel), "{name} by content");
            let s = parse_dated(channel, name, &bytes, Some(date)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(s.consistent(), "{name}");
            assert_eq!(s.lines.len(), rows.len(), "{name}");
            for (line, row) in s.lines.iter().zip(&rows) {
                assert_eq!(line.kind, row.kind, "{name}");
                assert_eq!(line.txn_id, row.txn_id, "{name}");
                assert_eq!(line.original_txn_id.as_deref(), row.original_txn_id, "{name}");
                assert_eq!(line.channel_txn_id, row.channel_txn_id, "{name}");
                assert_eq!(line.amount, row.amount, "{name}");
                assert_eq!(line.fee, places(row.fee, dp), "{name} fee of {}", row.txn_id);
                assert_eq!(line.at, Some(row.at), "{name}");
            }
            assert_eq!(super::super::content_date(&s), Some(date), "{name}");
        }
    }

    #[test]
    fn ids_a_format_cannot_hold_are_refused_naming_the_line() {
        let mut rows = rows();
        rows[1].txn_id = "M1,0002";
        let e = wechat(&rows).expect_err("comma");
        assert_eq!((e.line, e.field.as_deref()), (2, Some("txn_id")));
        rows[1].txn_id = "M1-0002-a-very-long-order-number-beyond-32-bytes";
        let e = unionpay(&rows).expect_err("too wide");
        assert_eq!((e.line, e.field.as_deref()), (2, Some("field 12")));
    }
}

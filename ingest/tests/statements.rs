//! The statement parsers on the fixture day's real-shaped files, and on damaged copies of
//! them: every damage is refused with the file, line and field named.

use std::path::PathBuf;

use ingest::money::Currency;
use ingest::statement::{self, LineKind, StatementChannel, StatementError, alipay, generic, unionpay, wechat};
use rust_decimal::Decimal;

fn fixture(name: &str) -> (String, Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day/statements").join(name);
    (name.to_owned(), std::fs::read(&path).expect("fixture"))
}

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn refused(result: Result<statement::Statement, StatementError>, line: u64, field: Option<&str>, words: &str) {
    let Err(err) = result else { panic!("accepted, expected a refusal mentioning {words:?}") };
    assert_eq!((err.line, err.field.as_deref()), (line, field), "{err}");
    assert!(err.to_string().contains(words), "{err}");
}

#[test]
fn wechat_bills_are_read_and_their_summary_checked() {
    let (name, bytes) = fixture("wechat-2026-11-24.csv");
    let s = wechat::parse(&name, &bytes).expect("parses");
    assert_eq!(s.lines.len(), 164);
    assert_eq!((s.totals.payment_amount, s.totals.refund_amount), (d("7674.16"), d("338.10")));
    let first = &s.lines[0];
    assert_eq!((first.line, first.kind, first.txn_id.as_str()), (2, LineKind::Payment, "M000006-20261124-000042"));
    assert_eq!(
        (first.channel_txn_id.as_str(), first.amount, first.fee),
        ("4200020261124000000000000086", d("15.14"), d("0.03785"))
    );
    let refund = s.lines.iter().find(|l| l.kind == LineKind::Refund).expect("a refund");
    assert!(
        refund.txn_id.ends_with("-R1")
            && refund.original_txn_id.as_deref().is_some_and(|o| refund.txn_id.starts_with(o))
    );
    assert!(
        wechat::parse(&name, &String::from_utf8(bytes.clone()).expect("utf8").replace("\r\n", "\n").into_bytes())
            .is_ok(),
        "LF works too"
    );

    let text = String::from_utf8(bytes).expect("utf8");
    // GBK bytes where UTF-8 is expected.
    let (gbk, _, _) = encoding_rs::GBK.encode(&text);
    refused(wechat::parse(&name, &gbk), 1, None, "not UTF-8");
    // A missing column.
    refused(
        wechat::parse(&name, text.replacen("商户订单号", "订单号", 1).as_bytes()),
        1,
        Some("商户订单号"),
        "no column",
    );
    // A malformed amount on line 3.
    refused(
        wechat::parse(&name, text.replacen("`59.05,", "`59.0.5,", 1).as_bytes()),
        3,
        Some("应结订单金额"),
        "not an amount",
    );
    // Cut before the summary.
    let cut = &text[..text.find("总交易单数").expect("summary")];
    refused(wechat::parse(&name, cut.as_bytes()), 0, None, "truncated");
    // A row cut short.
    let short = text.replacen("`0.25%,`15.14,`0.00,`\r\n", "\r\n", 1);
    refused(wechat::parse(&name, short.as_bytes()), 2, None, "fields, the header has");
    // Totals that disagree with the rows.
    refused(
        wechat::parse(&name, text.replacen("`7674.16,", "`7674.17,", 1).as_bytes()),
        167,
        Some("应结订单总金额"),
        "add up to 7674.16",
    );
    refused(wechat::parse(&name, text.replacen("`164,", "`165,", 1).as_bytes()), 167, Some("总交易单数"), "165 rows");
}

#[test]
fn a_wechat_row_is_in_the_currency_its_bill_names() {
    // 货币种类: CNY on the fixture's rows; HKD on a cross-border bill's row; a currency
    // posledger does not book is refused naming the field; a bill without the column is CNY.
    let (name, bytes) = fixture("wechat-2026-11-24.csv");
    let text = String::from_utf8(bytes).expect("utf8");
    let s = wechat::parse(&name, text.as_bytes()).expect("parses");
    assert!(s.lines.iter().all(|l| l.currency == Currency::Cny));
    let hkd = wechat::parse(&name, text.replacen("`CNY,", "`HKD,", 1).as_bytes()).expect("parses");
    let currencies: Vec<_> = hkd.lines.iter().take(2).map(|l| l.currency).collect();
    assert_eq!(currencies, [Currency::Hkd, Currency::Cny]);
    refused(wechat::parse(&name, text.replacen("`CNY,", "`EUR,", 1).as_bytes()), 2, Some("货币种类"), "EUR");
    let without: String = text
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            if fields.len() == 27 { [&fields[..11], &fields[12..]].concat().join(",") } else { l.to_owned() }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let s = wechat::parse(&name, without.as_bytes()).expect("parses without 货币种类");
    assert!(s.lines.iter().all(|l| l.currency == Currency::Cny));
}

#[test]
fn alipay_statements_are_read_from_gbk_and_from_their_zip() {
    let (name, bytes) = fixture("alipay-2026-11-25.csv");
    let s = alipay::parse(&name, &bytes).expect("parses");
    assert_eq!((s.totals.payments, s.totals.refunds), (131, 4));
    assert_eq!(s.stated_date, chrono::NaiveDate::from_ymd_opt(2026, 11, 25));
    let refund = s.lines.iter().find(|l| l.kind == LineKind::Refund).expect("a refund");
    assert_eq!(
        (refund.txn_id.as_str(), refund.amount, refund.fee),
        ("M000008-20261125-000153-R1", d("34.16"), d("0.09"))
    );
    assert_eq!(refund.original_txn_id.as_deref(), Some("M000008-20261125-000153"));
    assert!(!s.lines[0].channel_txn_id.contains('\t'), "the trailing tab is not part of the id");

    // The same file inside a zip, next to a summary file.
    let mut zipped = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(&mut zipped);
        let opts = zip::write::SimpleFileOptions::default();
        w.start_file("20880000000000010156_20261125_业务明细(汇总).csv", opts).expect("entry");
        w.write_all(b"#summary\r\n").expect("write");
        w.start_file("20880000000000010156_20261125_业务明细.csv", opts).expect("entry");
        w.write_all(&bytes).expect("write");
        w.finish().expect("zip");
    }
    let from_zip = alipay::parse("alipay.zip", zipped.get_ref()).expect("zip parses");
    assert_eq!(from_zip.lines, s.lines);
    refused(alipay::parse("bad.zip", b"PK\x03\x04garbage"), 0, None, "zip");

    let text = encoding_rs::GBK.decode(&bytes).0.into_owned();
    let gbk = |t: &str| encoding_rs::GBK.encode(t).0.into_owned();
    refused(alipay::parse(&name, text.as_bytes()), 0, None, "UTF-8");
    refused(
        alipay::parse(&name, &gbk(&text.replacen("支付宝交易号", "交易号", 1))),
        5,
        Some("支付宝交易号"),
        "no column",
    );
    refused(
        alipay::parse(&name, &gbk(&text.replacen(",13.13,13.13", ",1x.13,13.13", 1))),
        6,
        Some("订单金额(元)"),
        "not an amount",
    );
    let cut = &text[..text.find("#交易合计").expect("footer")];
    refused(alipay::parse(&name, &gbk(cut)), 0, None, "truncated");
    refused(alipay::parse(&name, &gbk(&text.replacen("131笔", "130笔", 1))), 142, Some("交易合计"), "130 rows");
    refused(
        alipay::parse(&name, &gbk(&text.replacen("共-121.61元", "共-121.60元", 1))),
        143,
        Some("退款合计"),
        "add up to",
    );
    let mut broken = bytes.clone();
    let at = broken.windows(2).position(|w| w[0] >= 0x81).expect("a GBK character") + 400;
    let at = at + broken[at..].iter().position(|b| *b >= 0x81).expect("another");
    broken[at + 1] = 0x20;
    let err = alipay::parse(&name, &broken).expect_err("not GBK");
    assert!(err.line > 0 && err.to_string().contains("not GBK"), "{err}");
}

#[test]
fn unionpay_zm_files_are_sliced_by_bytes() {
    let (name, bytes) = fixture("unionpay-2026-11-24.txt");
    let s = unionpay::parse(&name, &bytes).expect("parses");
    assert_eq!(s.lines.len(), 103);
    let first = &s.lines[0];
    assert_eq!(
        (first.kind, first.txn_id.as_str(), first.channel_txn_id.as_str()),
        (LineKind::Payment, "M000004-20261124-000321", "112405173000000000631")
    );
    assert_eq!((first.amount, first.fee), (d("23.68"), d("0.11")));
    assert_eq!(first.at.map(|t| t.to_string()).as_deref(), Some("2026-11-24 05:17:30"));
    let refund = s.lines.iter().find(|l| l.kind == LineKind::Refund).expect("a refund");
    assert_eq!(refund.original_txn_id.as_deref(), Some(refund.txn_id.trim_end_matches("-R1")));

    // The same file as UTF-8: the Chinese names change the byte widths.
    let utf8 = encoding_rs::GBK.decode(&bytes).0.into_owned();
    refused(unionpay::parse(&name, utf8.as_bytes()), 1, None, "UTF-8");
    // A record cut short.
    let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    lines[2].truncate(300);
    refused(unionpay::parse(&name, &lines.join(&b'\n')), 3, None, "a ZM record is 607");
    // A malformed amount and a bad sign.
    let mut bad = bytes.clone();
    bad[3 + 1 + 11 + 1 + 11 + 1 + 6 + 1 + 10 + 1 + 19 + 1] = b'x';
    refused(unionpay::parse(&name, &bad), 1, Some("交易金额"), "fen");
    let fee_at = unionpay::WIDTHS[..15].iter().sum::<usize>() + 15;
    let mut bad = bytes;
    bad[fee_at] = b'X';
    refused(unionpay::parse(&name, &bad), 1, Some("商户手续费"), "sign");
}

#[test]
fn generic_csvs_take_their_columns_from_a_mapping() {
    let csv = "order_no,amt,fee,day,state\nA1,10.00,0.03,2026-11-24,payment\nA1-R1,4.00,0.01,2026-11-24 10:00:00,REFUND\n#total,2,6.00,0.04\n";
    let mapping = generic::Mapping::with(&[
        ("reference".into(), "order_no".into()),
        ("amount".into(), "amt".into()),
        ("date".into(), "day".into()),
        ("status".into(), "state".into()),
    ])
    .expect("mapping");
    let s = generic::parse("g.csv", csv.as_bytes(), &mapping).expect("parses");
    // A fee of the wrong sign is kept with its sign (reconciliation reports it); the trailer
    // sums the fee column as written.
    let wrong = "reference,amount,fee,date,status\nG-1,10.00,0.03,2026-11-24,payment\nG-2,20.00,-0.05,2026-11-24,payment\n#total,2,30.00,-0.02\n";
    let w = generic::parse("w.csv", wrong.as_bytes(), &generic::Mapping::default()).expect("parses");
    assert_eq!((w.lines[1].fee, w.totals.fees), (d("-0.05"), d("-0.02")));
    // Fees net: 0.03 charged on the payment less 0.01 given back on the refund.
    assert_eq!((s.totals.payments, s.totals.refunds, s.totals.fees), (1, 1, d("0.02")));
    assert_eq!(s.lines[1].channel_txn_id, "A1-R1");
    refused(generic::parse("g.csv", csv.as_bytes(), &generic::Mapping::default()), 1, Some("reference"), "no column");
    refused(
        generic::parse("g.csv", csv.replace("#total,2,6.00", "#total,2,6.01").as_bytes(), &mapping),
        4,
        Some("AMOUNT"),
        "add up to",
    );
    refused(
        generic::parse("g.csv", csv.replace("10.00", "-10.00").as_bytes(), &mapping),
        2,
        Some("amt"),
        "not positive",
    );
    refused(
        generic::parse("g.csv", csv.replace("payment", "chargeback").as_bytes(), &mapping),
        2,
        Some("state"),
        "neither",
    );
    assert!(generic::Mapping::with(&[("colour".into(), "x".into())]).is_err());
}

#[test]
fn every_fixture_statement_parses() {
    for (channel, file) in [
        (StatementChannel::Wechat, "wechat-2026-11-24.csv"),
        (StatementChannel::Wechat, "wechat-2026-11-25.csv"),
        (StatementChannel::Alipay, "alipay-2026-11-24.csv"),
        (StatementChannel::Alipay, "alipay-2026-11-25.csv"),
        (StatementChannel::Unionpay, "unionpay-2026-11-24.txt"),
        (StatementChannel::Unionpay, "unionpay-2026-11-25.txt"),
    ] {
        let (name, bytes) = fixture(file);
        let s = statement::parse(channel, &name, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.lines.len() > 80, "{file}");
    }
}

#[test]
fn legacy_header_names_are_accepted() {
    // An older WeChat bill names the settled amount 总金额; an older Alipay export writes
    // ASCII parentheses.
    let (name, bytes) = fixture("wechat-2026-11-24.csv");
    let text = String::from_utf8(bytes).expect("utf8");
    let old = text.replacen("应结订单金额", "总金额", 1);
    assert_eq!(wechat::parse(&name, old.as_bytes()).expect("legacy wechat").lines.len(), 164);
    let (name, bytes) = fixture("alipay-2026-11-24.csv");
    let text = encoding_rs::GBK.decode(&bytes).0.into_owned();
    let old = text.replace("（元）", "(元)");
    let gbk = encoding_rs::GBK.encode(&old).0.into_owned();
    assert_eq!(alipay::parse(&name, &gbk).expect("legacy alipay").totals.payments, 126);
}

#[test]
fn zip_bombs_long_periods_and_huge_amounts_are_refused() {
    // An entry that unpacks far beyond what text packs to.
    let mut zipped = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(&mut zipped);
        let opts = zip::write::SimpleFileOptions::default();
        w.start_file("业务明细.csv", opts).expect("entry");
        w.write_all(&vec![b'#'; 20 << 20]).expect("write");
        w.finish().expect("zip");
    }
    let err = alipay::parse("bomb.zip", zipped.get_ref()).expect_err("refused");
    assert!(err.to_string().contains("ratio"), "{err}");

    // An Alipay export of two days is not one day's statement.
    let (name, bytes) = fixture("alipay-2026-11-24.csv");
    let text = encoding_rs::GBK.decode(&bytes).0.into_owned().replacen(
        "2026年11月25日 00:00:00",
        "2026年11月26日 00:00:00",
        1,
    );
    let err = alipay::parse(&name, &encoding_rs::GBK.encode(&text).0).expect_err("two days");
    assert!(err.to_string().contains("a statement is one day"), "{err}");

    // A UnionPay amount over the largest one accepted.
    let (name, mut bytes) = fixture("unionpay-2026-11-24.txt");
    let at = 3 + 1 + 11 + 1 + 11 + 1 + 6 + 1 + 10 + 1 + 19 + 1;
    bytes[at..at + 12].copy_from_slice(b"999999999999");
    let err = unionpay::parse(&name, &bytes).expect_err("too large");
    assert!(err.to_string().contains("largest amount") && err.line == 1, "{err}");
}

#[test]
fn parsed_statements_hold_together() {
    let (name, bytes) = fixture("wechat-2026-11-25.csv");
    let mut s = wechat::parse(&name, &bytes).expect("parses");
    assert!(s.consistent());
    s.totals.fees += d("0.00001");
    assert!(!s.consistent(), "totals that are not the lines' sums");
    s.totals.fees -= d("0.00001");
    s.lines[0].amount = d("-1.00");
    assert!(!s.consistent(), "a negative amount");
}

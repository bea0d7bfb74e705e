//! A second currency through reconciliation, end to end on the command line: a merchant taking
//! HKD (and some CNY) through its WeChat Pay bill (货币种类 HKD), reconciled with a match and
//! breaks, a break resolved, the merchant settled and the books written as a ledger-cli
//! journal. Every HKD amount stays HKD: what the breaks park, the clearing they relieve, the
//! resolution, the settlement; every currency balances on its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rust_decimal::Decimal;

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");

fn posledger(data: &Path, args: &[&str]) -> Output {
    Command::new(POSLEDGER).arg("--data-dir").arg(data).args(args).stdin(Stdio::null()).output().expect("run")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn decimal(v: &serde_json::Value) -> Decimal {
    v.as_str().map(d).unwrap_or_else(|| panic!("{v} is not a decimal"))
}

const ADMIN: &str = r#"{"kind": "channel_terms", "channel": "wechat", "fee_rate": "0.0025", "fee_tolerance": "0.01", "carry_forward_days": 1, "effective_from": "2026-10-25"}
{"kind": "merchant_applied", "merchant_id": "H000001", "legal_name": "Harbour Noodles Ltd.", "licence_no": "913100000000000091", "mcc": "5812", "timezone": "Asia/Shanghai", "settlement_account": "6222020200000000091", "at": "2026-11-04T09:01:00+08:00"}
{"kind": "merchant_approved", "merchant_id": "H000001", "reviewer": "risk-01", "at": "2026-11-05T09:01:00+08:00"}
{"kind": "contract_signed", "merchant_id": "H000001", "fees": {"wechat": {"rate": "0.0038"}}, "settlement_cycle": "T1", "at": "2026-11-06T09:01:00+08:00"}
{"kind": "terminal_bound", "merchant_id": "H000001", "terminal_id": "T9000001", "serial": "NL-ME31-900001", "model": "ME31", "at": "2026-11-07T09:01:00+08:00"}
{"kind": "terminal_activated", "terminal_id": "T9000001", "at": "2026-11-08T09:01:00+08:00"}
"#;

/// A sale on the merchant's terminal.
fn sale(n: u32, amount: &str, currency: &str, at: &str) -> String {
    format!(
        r#"{{"kind": "sale", "txn_id": "H000001-20261124-{n:06}", "merchant_id": "H000001", "terminal_id": "T9000001", "batch_no": "000001", "stan": "{n:06}", "rrn": "26328000{n:04}", "channel": "wechat", "amount": "{amount}", "currency": "{currency}", "at": "2026-11-24T{at}+08:00", "mcc": "5812", "channel_txn_id": "42000202611240000000000{n:05}", "payer": "ohk00000000{n:02}"}}"#
    )
}

/// One row of a WeChat trade bill (27 columns, every value after a backtick).
fn bill_row(
    at: &str,
    channel_txn_id: &str,
    order: &str,
    refund: Option<(&str, &str)>,
    amount: &str,
    fee: &str,
    currency: &str,
) -> String {
    let (status, settled, refund_id, refund_order, refunded, kind) = match refund {
        None => ("SUCCESS", amount, "0", "0", "0.00", ""),
        Some((refund_order, refunded)) => ("REFUND", "0.00", "500000000000000901", refund_order, refunded, "ORIGINAL"),
    };
    let refund_state = if refund.is_some() { "SUCCESS" } else { "" };
    [
        format!("2026-11-24 {at}"),
        "wx8888888888888888".into(),
        "1900000109".into(),
        "1900012345".into(),
        "T9000001".into(),
        channel_txn_id.into(),
        order.into(),
        "ohk0000000000".into(),
        "MICROPAY".into(),
        status.into(),
        "OTHERS".into(),
        currency.into(),
        settled.into(),
        "0.00".into(),
        refund_id.into(),
        refund_order.into(),
        refunded.into(),
        "0.00".into(),
        kind.into(),
        refund_state.into(),
        "POS sale".into(),
        String::new(),
        fee.into(),
        "0.25%".into(),
        amount.into(),
        refunded.into(),
        String::new(),
    ]
    .iter()
    .map(|v| format!("`{v}"))
    .collect::<Vec<_>>()
    .join(",")
}

/// Sums of amounts (or fees) as text, at `places` decimals.
fn sum(values: &[&str], places: u32) -> String {
    let mut total: Decimal = values.iter().map(|v| d(v)).sum();
    total.rescale(places);
    total.to_string()
}

/// The merchant's day (2026-11-24) and the channel's bill of it: an HKD sale settled and
/// partly refunded (both lines match), an HKD sale settled short (`amount_mismatch`), an HKD
/// sale the bill lacks (`missing_in_statement`), an HKD payment we never took
/// (`missing_in_ledger`, in HKD because the bill says so), and a CNY sale settled in CNY.
fn setup(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::write(root.join("admin.ndjson"), ADMIN).expect("admin");
    let feed = [
        sale(1, "100.00", "HKD", "10:00:00"),
        sale(2, "58.80", "HKD", "11:00:00"),
        sale(3, "33.33", "HKD", "12:00:00"),
        sale(4, "20.00", "CNY", "13:00:00"),
        r#"{"kind": "refund", "txn_id": "H000001-20261124-000001-R1", "original_txn_id": "H000001-20261124-000001", "merchant_id": "H000001", "terminal_id": "T9000001", "batch_no": "000001", "stan": "500001", "channel": "wechat", "amount": "10.00", "currency": "HKD", "at": "2026-11-24T15:00:00+08:00"}"#.to_owned(),
    ];
    std::fs::write(root.join("feed.ndjson"), feed.join("\n") + "\n").expect("feed");
    let id = |n: u32| (format!("42000202611240000000000{n:05}"), format!("H000001-20261124-{n:06}"));
    let rows = [
        bill_row("10:00:00", &id(1).0, &id(1).1, None, "100.00", "0.25000", "HKD"),
        bill_row("11:00:00", &id(2).0, &id(2).1, None, "58.00", "0.14500", "HKD"),
        bill_row("13:00:00", &id(4).0, &id(4).1, None, "20.00", "0.05000", "CNY"),
        bill_row(
            "15:00:00",
            &id(1).0,
            &id(1).1,
            Some(("H000001-20261124-000001-R1", "10.00")),
            "100.00",
            "-0.02500",
            "HKD",
        ),
        bill_row(
            "16:00:00",
            "4200020261124000000099000009",
            "H000001-20261124-G00009",
            None,
            "12.34",
            "0.03085",
            "HKD",
        ),
    ];
    let header = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    let settled = sum(&["100.00", "58.00", "20.00", "12.34"], 2);
    let fees = sum(&["0.25", "0.145", "0.05", "-0.025", "0.03085"], 5);
    let bill = format!(
        "\u{feff}{header}\r\n{}\r\n总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n`{},`{settled},`10.00,`0.00,`{fees},`{settled},`10.00\r\n",
        rows.join("\r\n"),
        rows.len()
    );
    std::fs::write(root.join("wechat-2026-11-24.csv"), bill).expect("bill");
    let path = |f: &str| root.join(f).display().to_string();
    assert_eq!(posledger(&data, &["merchants", "import", &path("admin.ndjson")]).status.code(), Some(0));
    let ingested = posledger(&data, &["ingest", &path("feed.ndjson"), "--format", "json"]);
    assert_eq!(json(&ingested)["accepted"], 5, "{}", String::from_utf8_lossy(&ingested.stdout));
    let imported = posledger(
        &data,
        &["statement", "import", "--channel", "wechat", &path("wechat-2026-11-24.csv"), "--format", "json"],
    );
    assert_eq!(imported.status.code(), Some(0), "{}", String::from_utf8_lossy(&imported.stdout));
    data
}

/// Balances per account and currency (`trial-balance --format json`).
fn trial_balance(data: &Path) -> BTreeMap<(String, String), Decimal> {
    json(&posledger(data, &["trial-balance", "--format", "json"]))["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .map(|r| {
            let text = |f: &str| r[f].as_str().expect("text").to_owned();
            ((text("account"), text("currency")), decimal(&r["balance"]))
        })
        .collect()
}

/// Every currency's balances add up to zero.
fn assert_zero_per_currency(books: &BTreeMap<(String, String), Decimal>) {
    let mut sums: BTreeMap<&str, Decimal> = BTreeMap::new();
    for ((_, currency), balance) in books {
        *sums.entry(currency).or_default() += balance;
    }
    assert!(sums.contains_key("HKD") && sums.contains_key("CNY"), "{sums:?}");
    assert!(sums.values().all(Decimal::is_zero), "the trial balance per currency: {sums:?}");
}

#[test]
fn an_hkd_payment_goes_through_reconciliation_settlement_and_the_journal_in_hkd() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = setup(root.path());

    // Reconcile: the HKD sale and its refund match, as does the CNY sale; the breaks are HKD.
    let out = posledger(&data, &["reconcile", "--date", "2026-11-24", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "breaks: exit 1; {}", String::from_utf8_lossy(&out.stderr));
    let report = &json(&out)["reports"][0];
    let counts = &report["counts"];
    assert_eq!(
        [&counts["matched"], &counts["amount_mismatch"], &counts["missing_in_statement"], &counts["missing_in_ledger"]],
        [3, 1, 1, 1]
    );
    let breaks: Vec<_> = report["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .map(|b| (b["outcome"].as_str().expect("outcome").to_owned(), b["currency"].clone()))
        .collect();
    assert_eq!(
        breaks,
        [("amount_mismatch", "HKD"), ("missing_in_ledger", "HKD"), ("missing_in_statement", "HKD")]
            .map(|(o, c)| (o.to_owned(), serde_json::Value::from(c)))
    );
    // Clearing per currency at the end of the day: all settled or parked, in each currency.
    let clearing: Vec<_> = report["clearing"]
        .as_array()
        .expect("clearing")
        .iter()
        .map(|c| (c["currency"].as_str().expect("currency").to_owned(), decimal(&c["closing"])))
        .collect();
    assert_eq!(clearing, [("CNY".to_owned(), d("0")), ("HKD".to_owned(), d("0"))]);

    // What each break parks, in HKD: short by 0.80; 33.33 never settled; 12.34 came for nothing.
    let listed = json(&posledger(&data, &["breaks", "--format", "json"]))["breaks"].clone();
    let parked: BTreeMap<_, _> = listed
        .as_array()
        .expect("breaks")
        .iter()
        .map(|b| {
            (
                b["outcome"].as_str().expect("outcome").to_owned(),
                (decimal(&b["suspense_amount"]), b["currency"].clone()),
            )
        })
        .collect();
    let hkd = serde_json::Value::from("HKD");
    assert_eq!(
        parked,
        BTreeMap::from([
            ("amount_mismatch".to_owned(), (d("0.80"), hkd.clone())),
            ("missing_in_ledger".to_owned(), (d("-12.34"), hkd.clone())),
            ("missing_in_statement".to_owned(), (d("33.33"), hkd.clone())),
        ])
    );
    let books = trial_balance(&data);
    let balance = |books: &BTreeMap<(String, String), Decimal>, account: &str, currency: &str| {
        books.get(&(account.to_owned(), currency.to_owned())).copied()
    };
    assert_eq!(balance(&books, "assets:suspense:wechat", "HKD"), Some(d("21.79")), "0.80 + 33.33 − 12.34");
    assert_eq!(balance(&books, "assets:suspense:wechat", "CNY"), None, "nothing parked as CNY");
    assert_eq!(balance(&books, "assets:clearing:wechat", "HKD"), Some(d("0.00")));
    assert_eq!(balance(&books, "assets:clearing:wechat", "CNY"), Some(d("0.00")));
    // The bank received what the bill settled: HKD 100.00 + 58.00 + 12.34 − 10.00 less its fees
    // (the matched lines' 0.25 − 0.025 as the day's 0.23, the short line's 0.15, the
    // stranger's 0.03: each rounded to the cent as it is booked); CNY 20.00 less 0.05.
    assert_eq!(balance(&books, "assets:bank:settlement", "HKD"), Some(d("159.93")));
    assert_eq!(balance(&books, "assets:bank:settlement", "CNY"), Some(d("19.95")));
    assert_zero_per_currency(&books);

    // Resolve the unsettled sale: written off in HKD.
    let id = listed
        .as_array()
        .expect("breaks")
        .iter()
        .find(|b| b["outcome"] == "missing_in_statement")
        .and_then(|b| b["id"].as_str())
        .expect("id")
        .to_owned();
    let out =
        posledger(&data, &["resolve", &id, "--action", "write-off", "--reason", "never settled", "--by", "ops-1"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let books = trial_balance(&data);
    assert_eq!(balance(&books, "assets:suspense:wechat", "HKD"), Some(d("-11.54")), "21.79 − 33.33");
    assert_eq!(balance(&books, "expenses:write-offs:wechat", "HKD"), Some(d("33.33")));
    assert_eq!(balance(&books, "expenses:write-offs:wechat", "CNY"), None);
    assert_zero_per_currency(&books);

    // Settle (T+1): one settlement per currency. HKD: gross 100.00 + 58.80 + 33.33, refunds
    // 10.00, fees 0.38 + 0.22 + 0.13 − 0.04 (the refund's share of 0.38); CNY: 20.00, fee 0.08.
    let out = posledger(&data, &["settle", "--date", "2026-11-25", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let settled: BTreeMap<_, _> = json(&out)["settled"]
        .as_array()
        .expect("settled")
        .iter()
        .map(|s| {
            assert_eq!(s["merchant_id"], "H000001");
            let money = ["gross", "refunds", "fees", "net"].map(|f| decimal(&s[f]));
            (s["currency"].as_str().expect("currency").to_owned(), money)
        })
        .collect();
    assert_eq!(
        settled,
        BTreeMap::from([
            ("CNY".to_owned(), [d("20.00"), d("0.00"), d("0.08"), d("19.92")]),
            ("HKD".to_owned(), [d("192.13"), d("10.00"), d("0.69"), d("181.44")]),
        ])
    );
    let books = trial_balance(&data);
    assert_eq!(balance(&books, "liabilities:merchant:H000001:payable", "HKD"), Some(d("0.00")));
    assert_eq!(balance(&books, "liabilities:merchant:H000001:payable", "CNY"), Some(d("0.00")));
    assert_zero_per_currency(&books);

    // The journal: every transaction balances in each commodity, the HKD suspense postings are
    // HKD, and the postings add up to the books.
    let out = posledger(&data, &["journal", "--format", "ledger"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut totals: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    let mut suspense = Vec::new();
    for transaction in text.split("\n\n").filter(|t| !t.trim().is_empty()) {
        let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
        for posting in transaction.lines().skip(1).filter(|l| !l.trim_start().starts_with(';')) {
            let fields: Vec<&str> = posting.split_whitespace().collect();
            let [account, commodity, amount] = fields[..] else { panic!("posting {posting:?}") };
            *sums.entry(commodity.to_owned()).or_default() += d(amount);
            *totals.entry((account.to_owned(), commodity.to_owned())).or_default() += d(amount);
            if account == "assets:suspense:wechat" {
                suspense.push(commodity.to_owned());
            }
        }
        assert!(sums.values().all(Decimal::is_zero), "unbalanced transaction:\n{transaction}");
    }
    assert_eq!(suspense, ["HKD", "HKD"], "the breaks' and the resolution's suspense postings");
    let books: BTreeMap<_, _> = books.into_iter().filter(|(_, b)| !b.is_zero()).collect();
    let totals: BTreeMap<_, _> = totals.into_iter().filter(|(_, b)| !b.is_zero()).collect();
    assert_eq!(totals, books, "the journal gives the books' balances");
    // ledger-cli reads it and gives the same balances, commodity by commodity.
    let path = root.path().join("books.ledger");
    std::fs::write(&path, &text).expect("journal file");
    match Command::new("ledger").arg("--version").output() {
        Ok(o) if o.status.success() => {
            for commodity in ["CNY", "HKD"] {
                let limit = format!("commodity == \"{commodity}\"");
                let path = path.to_str().expect("utf8");
                let out = Command::new("ledger")
                    .args(["-f", path, "bal", "--flat", "--no-total", "--empty", "-l", &limit])
                    .output()
                    .expect("run ledger");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                // Lines like "   HKD 159.93  assets:bank:settlement".
                let theirs: BTreeMap<_, _> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|line| {
                        let [c, amount, account] = line.split_whitespace().collect::<Vec<_>>()[..] else { return None };
                        let amount = d(&amount.replace(',', ""));
                        (c == commodity && !amount.is_zero()).then(|| ((account.to_owned(), c.to_owned()), amount))
                    })
                    .collect();
                let ours: BTreeMap<_, _> =
                    books.iter().filter(|((_, c), _)| c == commodity).map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(theirs, ours, "ledger-cli's {commodity} balances against posledger's");
            }
        }
        _ => eprintln!(
            "ledger-cli is not installed (apt-get install ledger): the journal was checked by this test alone"
        ),
    }
    assert_eq!(posledger(&data, &["verify"]).status.code(), Some(0), "the books rebuild and balance");
}

//! The polars analytics on the small fixture (`tests/fixtures/small`), every figure worked
//! out by hand from its feed:
//!
//! | txn | merchant | channel | amount | day | payer | adjusted |
//! |---|---|---|---|---|---|---|
//! | P01 | M000001 | wechat | 100.00 | Mon 23 | oPayerA | |
//! | P02 | M000001 | alipay | 50.00 | Mon 23 | 2088000000000002 | refund 20.00 on the 24th |
//! | P03 | M000001 | cash | 20.00 | Mon 23 | — | |
//! | P04 | M000002 | wechat | 200.00 | Mon 23 | oPayerA | |
//! | P05 | M000001 | wechat | 80.00 | Tue 24 | oPayerA | |
//! | P06 | M000001 | card | 5000.00 | Tue 24 | 622848******0001 | refund 1000.00 on the 30th |
//! | P07 | M000002 | alipay | 40.00 | Tue 24 | 2088000000000002 | |
//! | P08 | M000002 | wechat | 10.00 | Tue 24 | oPayerD | voided on the 24th |
//! | P09 | M000001 | wechat | 60.00 | Mon 30 | oPayerB | |
//! | P10 | M000002 | wechat | 30.00 | Mon 30 | oPayerD | |

use analytics::habits::{self, Segment};
use analytics::table::Cell;
use rust_decimal::Decimal;

mod common;

/// Payer, recency days, frequency, monetary, (R, F, M), segment.
type PayerRow<'a> = (&'a str, i64, u64, Decimal, (u8, u8, u8), Segment);
/// Merchant, week, captures, net sales, change in percent, anomaly.
type WeekRow<'a> = (&'a str, chrono::NaiveDate, u64, Decimal, Option<Decimal>, &'a str);

fn money(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn day(s: &str) -> chrono::NaiveDate {
    s.parse().expect("date")
}

#[tokio::test(flavor = "multi_thread")]
async fn rfm_of_the_small_export() {
    // Net purchases per payer (P08 voided is none; refunds lower the money), as of the 30th:
    // oPayerA 3 × (100 + 200 + 80) last the 24th; 2088..02 2 × (30 + 40) the 24th; the card
    // 1 × 4000 the 24th; oPayerD 1 × 30 and oPayerB 1 × 60 the 30th. Five payers: three tie
    // on recency 6 days (rank 1: R1), two on 0 days (rank 4: R 1 + 5·3/5 = 4).
    let dir = tempfile::tempdir().expect("tmp");
    let export = common::small_export(dir.path()).await;
    let rfm = habits::rfm(&export, None).expect("rfm");
    assert_eq!(rfm.as_of, Some(day("2026-11-30")));
    let got: Vec<PayerRow<'_>> = rfm
        .payers
        .iter()
        .map(|p| {
            (
                p.activity.payer.as_str(),
                p.recency_days,
                p.activity.frequency,
                p.activity.monetary,
                (p.r, p.f, p.m),
                p.segment,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("622848******0001", 6, 1, money("4000.00"), (1, 1, 5), Segment::Lost),
            ("oPayerA", 6, 3, money("380.00"), (1, 5, 4), Segment::AtRisk),
            ("2088000000000002", 6, 2, money("70.00"), (1, 4, 3), Segment::AtRisk),
            ("oPayerB", 0, 1, money("60.00"), (4, 1, 2), Segment::New),
            ("oPayerD", 0, 1, money("30.00"), (4, 1, 1), Segment::New),
        ]
    );
    let segments = rfm.segments_table();
    let at_risk = segments.rows.iter().find(|r| r[0] == Cell::Text("at_risk".into())).expect("row");
    assert_eq!(
        at_risk[1..],
        [Cell::Text("CNY".into()), Cell::Int(2), Cell::Decimal(money("40.00")), Cell::Decimal(money("450.00"))]
    );
    assert_eq!(segments.rows.len(), Segment::ALL.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn rfm_as_of_an_earlier_day_leaves_out_what_came_later() {
    // As of the 29th: oPayerB and oPayerD bought only on the 30th, so they are not there, and
    // the card's refund of 1000 on the 30th has not happened yet (4000 + 1000). The others
    // are 5 days back.
    let dir = tempfile::tempdir().expect("tmp");
    let export = common::small_export(dir.path()).await;
    let rfm = habits::rfm(&export, Some(day("2026-11-29"))).expect("rfm");
    assert_eq!(rfm.as_of, Some(day("2026-11-29")));
    let got: Vec<(&str, i64, u64, Decimal)> = rfm
        .payers
        .iter()
        .map(|p| (p.activity.payer.as_str(), p.recency_days, p.activity.frequency, p.activity.monetary))
        .collect();
    assert_eq!(
        got,
        [
            ("622848******0001", 5, 1, money("5000.00")),
            ("oPayerA", 5, 3, money("380.00")),
            ("2088000000000002", 5, 2, money("70.00")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trend_of_the_small_export() {
    // Weeks of the 23rd and the 30th. M000001: 100 + 50 + 20 + 80 + 5000 less the refund of
    // 20 = 5230.00, then 60 less the refund of 1000 = -940.00 (-117.97 %), a drop; M000002:
    // 200 + 40 + 10 less the void of 10 = 240.00, then 30.00 (-87.50 %), a drop.
    let dir = tempfile::tempdir().expect("tmp");
    let export = common::small_export(dir.path()).await;
    let weeks = habits::trend(&export, None).expect("trend");
    let got: Vec<WeekRow<'_>> = weeks
        .iter()
        .map(|w| (w.merchant_id.as_str(), w.week, w.payments, w.net_sales, w.change_pct, w.anomaly))
        .collect();
    assert_eq!(
        got,
        [
            ("M000001", day("2026-11-23"), 5, money("5230.00"), None, "none"),
            ("M000001", day("2026-11-30"), 1, money("-940.00"), Some(money("-117.97")), "drop"),
            ("M000002", day("2026-11-23"), 3, money("240.00"), None, "none"),
            ("M000002", day("2026-11-30"), 1, money("30.00"), Some(money("-87.50")), "drop"),
        ]
    );
    assert_eq!(weeks[1].baseline, Some(money("5230.00")));
    let one = habits::trend(&export, Some("M000002")).expect("trend");
    assert_eq!(one.len(), 2);
    assert!(one.iter().all(|w| w.merchant_id == "M000002"));
}

#[tokio::test(flavor = "multi_thread")]
async fn analyses_keep_each_currency_apart() {
    // The small fixture plus H01 (300.00 HKD, oPayerH, M000001, the 23rd), H02 (100.00 HKD,
    // 2088000000000009, M000002, the 23rd) and a refund of 50.00 HKD of H01 on the 24th.
    let dir = tempfile::tempdir().expect("tmp");
    let export = common::currencies_export(dir.path()).await;

    // RFM scores each currency's payers among themselves: the two HKD payers are ranked
    // against each other only (oPayerH nets 250.00, more money: M 3 against 1).
    let rfm = habits::rfm(&export, None).expect("rfm");
    let hkd: Vec<(&str, u64, Decimal, u8)> = rfm
        .payers
        .iter()
        .filter(|p| p.activity.currency == "HKD")
        .map(|p| (p.activity.payer.as_str(), p.activity.frequency, p.activity.monetary, p.m))
        .collect();
    assert_eq!(hkd, [("oPayerH", 1, money("250.00"), 3), ("2088000000000009", 1, money("100.00"), 1)]);
    let cny = rfm.payers.iter().filter(|p| p.activity.currency == "CNY").count();
    assert_eq!(cny, 5, "the CNY payers as in the small export");
    let segments = rfm.segments_table();
    assert_eq!(segments.rows.len(), 2 * Segment::ALL.len(), "every segment of each currency");

    // Trend: M000001's HKD week of the 23rd nets 300.00 - 50.00, beside its CNY weeks.
    let weeks = habits::trend(&export, Some("M000001")).expect("trend");
    let got: Vec<(&str, chrono::NaiveDate, u64, Decimal)> =
        weeks.iter().map(|w| (w.currency.as_str(), w.week, w.payments, w.net_sales)).collect();
    assert_eq!(
        got,
        [
            ("CNY", day("2026-11-23"), 5, money("5230.00")),
            ("CNY", day("2026-11-30"), 1, money("-940.00")),
            ("HKD", day("2026-11-23"), 1, money("250.00")),
            ("HKD", day("2026-11-30"), 0, money("0")),
        ]
    );

    // Basket: HKD 100.00 and 300.00 fall in their own currency's bands.
    let table = habits::basket(&export).expect("basket");
    let hkd: Vec<String> = table
        .rows
        .iter()
        .filter(|r| r[1] == Cell::Text("HKD".into()) && r[2] != Cell::Int(0))
        .map(|r| r.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(hkd, ["100-200 HKD 1 50.00 100.00", "200-500 HKD 1 50.00 300.00"]);
    assert_eq!(table.rows.len(), 2 * habits::BASKET_BANDS.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn basket_sizes_of_the_small_export() {
    // Amounts 10 | 20 40 30 | 50 80 60 | 100 | 200 | 5000, every band listed.
    let dir = tempfile::tempdir().expect("tmp");
    let export = common::small_export(dir.path()).await;
    let table = habits::basket(&export).expect("basket");
    let got: Vec<String> =
        table.rows.iter().map(|r| r.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(
        got,
        [
            "0-10 CNY 0 0.00 0",
            "10-20 CNY 1 10.00 10.00",
            "20-50 CNY 3 30.00 90.00",
            "50-100 CNY 3 30.00 190.00",
            "100-200 CNY 1 10.00 100.00",
            "200-500 CNY 1 10.00 200.00",
            "500-1000 CNY 0 0.00 0",
            "1000+ CNY 1 10.00 5000.00",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cohorts_of_the_small_export() {
    // First purchases in the week of the 23rd: oPayerA, 2088..02 and the card (none of them
    // bought in the next week); in the week of the 30th: oPayerB and oPayerD (its voided P08
    // of the 24th was no purchase).
    let dir = tempfile::tempdir().expect("tmp");
    let export = common::small_export(dir.path()).await;
    let table = habits::cohort(&export).expect("cohort");
    let got: Vec<String> =
        table.rows.iter().map(|r| r.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(got, ["2026-11-23 0 3 100.00", "2026-11-23 1 0 0.00", "2026-11-30 0 2 100.00"]);
    // By month: every first purchase was in November.
    let monthly = habits::cohort_monthly(&export).expect("cohort by month");
    let got: Vec<String> =
        monthly.rows.iter().map(|r| r.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(got, ["2026-11 0 5 100.00"]);
    assert_eq!((habits::cohorts(&table), habits::cohorts(&monthly)), (2, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_export_gives_empty_answers() {
    // Nothing exported yet: no payers, no weeks, every band zero.
    let dir = tempfile::tempdir().expect("tmp");
    assert!(habits::rfm(dir.path(), None).expect("rfm").payers.is_empty());
    assert!(habits::trend(dir.path(), None).expect("trend").is_empty());
    assert!(habits::cohort(dir.path()).expect("cohort").rows.is_empty());
    assert_eq!(habits::basket(dir.path()).expect("basket").rows.len(), habits::BASKET_BANDS.len());
}

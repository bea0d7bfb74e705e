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
    assert_eq!(at_risk[1..], [Cell::Int(2), Cell::Decimal(money("40.00")), Cell::Decimal(money("450.00"))]);
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
            "0-10 0 0.00 0",
            "10-20 1 10.00 10.00",
            "20-50 3 30.00 90.00",
            "50-100 3 30.00 190.00",
            "100-200 1 10.00 100.00",
            "200-500 1 10.00 200.00",
            "500-1000 0 0.00 0",
            "1000+ 1 10.00 5000.00",
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

//! Settlement of the fixture merchants: what each is paid for a day equals what that day's
//! feed says they earned, the payout empties that part of the payable, and settling the
//! same date again settles nothing.

mod common;

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use common::{dec, fee, fee_terms, fixture, half_up, store_fixture};
use ingest::event::Event;
use ingest::money::Currency;
use ingest::store::{EventStore, ExpectedRevision};
use ledger::entry::Account;
use rust_decimal::Decimal;
use serde_json::Value;

/// Net of each merchant for the business day of one feed file, computed from the files.
fn day_nets(feed: &str) -> BTreeMap<String, Decimal> {
    let terms = fee_terms();
    let mut sales: HashMap<String, (Decimal, Decimal)> = HashMap::new();
    let mut net: BTreeMap<String, Decimal> = BTreeMap::new();
    for line in std::fs::read_to_string(fixture(feed)).expect("feed").lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        if v["kind"] == "batch_close" || v["channel"] == "cash" {
            continue;
        }
        let merchant = v["merchant_id"].as_str().expect("merchant").to_owned();
        let amount = dec(&v["amount"]);
        match v["kind"].as_str().expect("kind") {
            "sale" => {
                let fee = fee(&terms, &merchant, v["channel"].as_str().expect("ch"), amount);
                sales.insert(v["txn_id"].as_str().expect("txn").to_owned(), (amount, fee));
                *net.entry(merchant).or_default() += amount - fee;
            }
            "void" | "reversal" => {
                let (a, f) = sales[v["original_txn_id"].as_str().expect("original")];
                *net.entry(merchant).or_default() -= a - f;
            }
            // The day's refunds in the fixture are all of that day's sales, partial or whole.
            "refund" => {
                let original = v["original_txn_id"].as_str().expect("original");
                let (a, f) = sales.get(original).copied().unwrap_or((Decimal::ZERO, Decimal::ZERO));
                let part = if amount == a { f } else { half_up(f * amount / a) };
                *net.entry(merchant).or_default() -= amount - part;
            }
            other => panic!("unexpected {other}"),
        }
    }
    net
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_a_day_pays_its_net_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let date = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
    let books = ledger::replay(&*store, u64::MAX).await.expect("books");
    let due = books.settlements_due(date);
    let expected = day_nets("feed-2026-11-24.ndjson");
    assert_eq!(due.len(), expected.len(), "every merchant with business on 11-24 (T+1)");
    for s in &due {
        assert_eq!(s.business_date, date.pred_opt().expect("day before"));
        assert_eq!(s.net, expected[&s.merchant_id], "net of {}", s.merchant_id);
        assert_eq!(s.net, s.gross - s.refunds - s.fees);
    }
    for s in due {
        let event = Event::MerchantSettled(s);
        store.append(&event.stream(), ExpectedRevision::Any, vec![event.to_event_data()]).await.expect("append");
    }
    let after = ledger::replay(&*store, u64::MAX).await.expect("books after payout");
    for merchant in expected.keys() {
        let payable = after.balances().balance(&Account::payable(merchant), Currency::Cny, u64::MAX);
        assert_eq!(payable, Decimal::ZERO, "{merchant} paid everything of day one");
        assert!(after.is_settled(merchant, date, Currency::Cny));
    }
    assert!(after.settlements_due(date).is_empty(), "settling again settles nothing");
    let bank = after.balances().balance(&Account::bank(), Currency::Cny, u64::MAX);
    assert_eq!(-bank, expected.values().copied().sum::<Decimal>(), "the bank paid the sum of the nets");
}

/// A refund of a day-one sale, dated day one but recorded after day one was settled: the next
/// settlement pays it back (it is not lost in a settled day), and the payable ends at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_recorded_after_its_day_was_settled_is_settled_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let (day_two, day_three) =
        (NaiveDate::from_ymd_opt(2026, 11, 25).expect("date"), NaiveDate::from_ymd_opt(2026, 11, 26).expect("date"));
    let settle = |date: NaiveDate| {
        let store = store.clone();
        async move {
            let books = ledger::replay(&*store, u64::MAX).await.expect("books");
            let due = books.settlements_due(date);
            for s in &due {
                let event = Event::MerchantSettled(s.clone());
                store
                    .append(&event.stream(), ExpectedRevision::Any, vec![event.to_event_data()])
                    .await
                    .expect("append");
            }
            due
        }
    };
    assert!(!settle(day_two).await.is_empty());
    // The late refund: half of the first WeChat sale of M000006 on day one (15.14 at 0.38 %:
    // fee 0.06; half the amount gives back half the fee, 0.03).
    let sale = "M000006-20261124-000042";
    let refund = Event::PaymentRefunded(ingest::event::PaymentAdjustment {
        txn_id: format!("{sale}-late"),
        original_txn_id: sale.into(),
        merchant_id: "M000006".into(),
        terminal_id: "T0000601".into(),
        batch_no: "739944".into(),
        stan: "000999".into(),
        channel: ingest::event::Channel::Wechat,
        amount: Decimal::new(757, 2),
        currency: Currency::Cny,
        at: chrono::DateTime::parse_from_rfc3339("2026-11-24T23:00:00+08:00").expect("time"),
    });
    store.append(&refund.stream(), ExpectedRevision::Any, vec![refund.to_event_data()]).await.expect("append");
    let books = ledger::replay(&*store, u64::MAX).await.expect("books");
    let payable = books.balances().balance(&Account::payable("M000006"), Currency::Cny, u64::MAX);
    assert_eq!(payable, Decimal::new(757 - 3, 2), "the merchant owes the refund less the fee given back");
    // Settling day one again is still nothing; the next date carries the late refund.
    assert!(books.settlements_due(day_two).is_empty());
    let next = settle(day_three).await;
    let m6 = next.iter().find(|s| s.merchant_id == "M000006").expect("M000006 is due its late refund");
    assert_eq!(
        (m6.business_date, m6.gross, m6.refunds, m6.fees),
        (day_two, Decimal::ZERO, Decimal::new(757, 2), Decimal::new(-3, 2))
    );
    assert_eq!(m6.net, Decimal::new(-754, 2), "negative: the merchant pays it back");
    assert!(next.iter().all(|s| s.merchant_id == "M000006"), "nobody else had anything left: {next:?}");
    let after = ledger::replay(&*store, u64::MAX).await.expect("books");
    assert_eq!(after.balances().balance(&Account::payable("M000006"), Currency::Cny, u64::MAX), Decimal::ZERO);
    assert!(after.settlements_due(day_three).is_empty());
}

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
        txn_id: format!("{sale}-late").into(),
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

/// Two merchants' payments with one txn_id are two payments: each is booked to its merchant,
/// each one's refund or void applies to its own, and reconciliation's items and batch totals
/// keep them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_txn_id_of_two_merchants_is_two_payments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let before = ledger::replay(&*store, u64::MAX).await.expect("books");
    let record = |kind: &str, merchant: &str, terminal: &str, txn: &str, original: &str, amount: &str| {
        let (original, channel_txn) = match original {
            "" => (String::new(), format!(r#","channel_txn_id":"42{merchant}","payer":"oX","mcc":"5812""#)),
            o => (format!(r#","original_txn_id":"{o}""#), String::new()),
        };
        format!(
            r#"{{"kind":"{kind}","txn_id":"{txn}"{original},"merchant_id":"{merchant}","terminal_id":"{terminal}","batch_no":"000777","stan":"000001","channel":"wechat"{channel_txn},"amount":"{amount}","currency":"CNY","at":"2026-11-24T12:00:00+08:00"}}"#
        )
    };
    let feed = [
        record("sale", "M000003", "T0000300", "X-1", "", "100.00"),
        record("sale", "M000006", "T0000600", "X-1", "", "50.00"),
        record("refund", "M000003", "T0000300", "X-1-R", "X-1", "10.00"),
        record("void", "M000006", "T0000600", "X-1-V", "X-1", "50.00"),
    ]
    .join("\n");
    let mut ingestor = ingest::pipeline::Ingestor::open(store.clone(), None).await.expect("ingestor");
    let s =
        ingestor.ingest_reader(feed.as_bytes(), ingest::pipeline::InputKind::Feed, |_, _| {}).await.expect("ingest");
    assert_eq!((s.accepted, s.rejected), (4, 0), "{:?}", s.first_rejections);
    let after = ledger::replay(&*store, u64::MAX).await.expect("books");
    let payable =
        |books: &ledger::Projection, m: &str| -books.balances().balance(&Account::payable(m), Currency::Cny, u64::MAX);
    let terms = fee_terms();
    let sale_fee = fee(&terms, "M000003", "wechat", dec(&"100.00".into()));
    let refund_fee = half_up(sale_fee * Decimal::new(10, 2));
    let m3 = Decimal::new(10000, 2) - sale_fee - (Decimal::new(1000, 2) - refund_fee);
    assert_eq!(payable(&after, "M000003") - payable(&before, "M000003"), m3);
    assert_eq!(payable(&after, "M000006"), payable(&before, "M000006"), "the void cancels M000006's own sale");
    // Reconciliation's items: both sales, the voided one marked, the refund with its sale's
    // channel id.
    let date = NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");
    let (items, _) =
        ledger::recon::load_items(&*store, ingest::statement::StatementChannel::Wechat, date).await.expect("items");
    let mut ours: Vec<String> = items
        .iter()
        .filter(|i| i.txn_id.starts_with("X-1"))
        .map(|i| format!("{:?} {} {:?} {} {}", i.kind, i.txn_id, i.channel_txn_id, i.amount, i.cancelled))
        .collect();
    ours.sort();
    assert_eq!(
        ours,
        vec![
            r#"Payment X-1 Some("42M000003") 100.00 false"#,
            r#"Payment X-1 Some("42M000006") 50.00 true"#,
            r#"Refund X-1-R Some("42M000003") 10.00 false"#,
        ]
    );
}

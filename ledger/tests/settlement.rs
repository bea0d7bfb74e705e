//! Settlement of the fixture merchants: what each is paid for a day equals what that day's
//! feed says they earned, the payout empties that part of the payable, and settling the
//! same date again settles nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use ingest::event::Event;
use ingest::money::Currency;
use ingest::pipeline::{Ingestor, InputKind};
use ingest::store::{EmbeddedStore, EventStore, ExpectedRevision};
use ledger::entry::Account;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day").join(name)
}

fn dec(v: &Value) -> Decimal {
    v.as_str().expect("decimal string").parse().expect("decimal")
}

/// Net of each merchant for the business day of one feed file, computed from the files.
fn day_nets(feed: &str) -> BTreeMap<String, Decimal> {
    let admin = std::fs::read_to_string(fixture("admin.ndjson")).expect("admin");
    let mut terms: HashMap<(String, String), (Decimal, Option<Decimal>)> = HashMap::new();
    for line in admin.lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        if v["kind"] == "contract_signed" {
            for (channel, fee) in v["fees"].as_object().expect("fees") {
                let key = (v["merchant_id"].as_str().expect("id").to_owned(), channel.clone());
                terms.insert(key, (dec(&fee["rate"]), fee.get("cap").map(dec)));
            }
        }
    }
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
                let (rate, cap) = terms[&(merchant.clone(), v["channel"].as_str().expect("ch").to_owned())];
                let mut fee = (rate * amount).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
                if let Some(cap) = cap {
                    fee = fee.min(cap);
                }
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
                let part = if amount == a {
                    f
                } else {
                    (f * amount / a).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
                };
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
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    let mut ingestor = Ingestor::open(store.clone(), None).await.expect("ingestor");
    for (name, kind) in [("admin.ndjson", InputKind::Admin), ("feed-2026-11-24.ndjson", InputKind::Feed)] {
        let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
        ingestor.ingest_reader(file, kind, |_, _| {}).await.expect("ingest");
    }
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

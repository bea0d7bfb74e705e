//! The fixture days booked from the log: the trial balance is zero and every merchant's
//! payable equals what this test computes on its own from the feed files.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{dec, fee, fee_terms, fixture, half_up, store_fixture};
use ingest::money::Currency;
use ledger::entry::Account;
use rust_decimal::Decimal;
use serde_json::Value;

/// Payables computed straight from the files: fee = rate × amount rounded half up, capped;
/// voids and reversals undo; a refund gives back its share of the fee, the last refund the rest.
fn expected_payables() -> BTreeMap<String, Decimal> {
    let terms = fee_terms();
    // txn → (merchant, channel, amount, fee, refunded, fee returned)
    let mut sales: HashMap<String, (String, String, Decimal, Decimal, Decimal, Decimal)> = HashMap::new();
    let mut payable: BTreeMap<String, Decimal> = BTreeMap::new();
    for day in ["2026-11-24", "2026-11-25"] {
        let feed = std::fs::read_to_string(fixture(&format!("feed-{day}.ndjson"))).expect("feed");
        for line in feed.lines() {
            let v: Value = serde_json::from_str(line).expect("json");
            let kind = v["kind"].as_str().expect("kind");
            if kind == "batch_close" || v["channel"] == "cash" {
                continue;
            }
            let merchant = v["merchant_id"].as_str().expect("merchant").to_owned();
            let amount = dec(&v["amount"]);
            match kind {
                "sale" => {
                    let channel = v["channel"].as_str().expect("channel").to_owned();
                    let fee = fee(&terms, &merchant, &channel, amount);
                    *payable.entry(merchant.clone()).or_default() += amount - fee;
                    let txn = v["txn_id"].as_str().expect("txn").to_owned();
                    sales.insert(txn, (merchant, channel, amount, fee, Decimal::ZERO, Decimal::ZERO));
                }
                "void" | "reversal" => {
                    let s = &sales[v["original_txn_id"].as_str().expect("original")];
                    *payable.entry(merchant).or_default() -= s.2 - s.3;
                }
                "refund" => {
                    let s = sales.get_mut(v["original_txn_id"].as_str().expect("original")).expect("sale");
                    let part = if s.4 + amount == s.2 { s.3 - s.5 } else { half_up(s.3 * amount / s.2) };
                    s.4 += amount;
                    s.5 += part;
                    *payable.entry(merchant).or_default() -= amount - part;
                }
                other => panic!("unexpected kind {other}"),
            }
        }
    }
    payable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_days_balance_and_payables_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24", "2026-11-25"]).await;
    let books = ledger::replay(&*store, u64::MAX).await.expect("replay checks the trial balance");
    let expected = expected_payables();
    assert_eq!(expected.len(), 8, "every merchant has sales");
    for (merchant, amount) in expected {
        // Payables are credits: negative balances.
        let got = books.balances().balance(&Account::payable(&merchant), Currency::Cny, u64::MAX);
        assert_eq!(-got, amount, "payable of {merchant}");
    }
    // As of the end of day one (every event of the first feed), the books balance too.
    let day_one = 62 + 429;
    let early = ledger::replay(&*store, day_one).await.expect("replay to day one");
    assert_eq!(early.position(), day_one);
    for (account, currency, balance) in early.balances().trial_balance(u64::MAX) {
        assert_eq!(balance, books.balances().balance(&account, currency, day_one), "{account} as of day one");
    }
}

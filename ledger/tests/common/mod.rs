//! What the ledger tests share: the fixture day, stored, and the fee terms read straight from
//! its admin file (so the tests compute fees without the code under test).

#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ingest::pipeline::{Ingestor, InputKind};
use ingest::store::EmbeddedStore;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// A file of the fixture day.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day").join(name)
}

/// A JSON string holding a decimal.
pub fn dec(v: &Value) -> Decimal {
    v.as_str().expect("decimal string").parse().expect("decimal")
}

/// Stores the admin records and the given feed days in a new store in `dir`; nothing may be
/// rejected.
pub async fn store_fixture(dir: &std::path::Path, days: &[&str]) -> Arc<EmbeddedStore> {
    let store = Arc::new(EmbeddedStore::open(dir).expect("open"));
    let mut ingestor = Ingestor::open(store.clone(), None).await.expect("ingestor");
    let feeds: Vec<String> = days.iter().map(|d| format!("feed-{d}.ndjson")).collect();
    let files =
        std::iter::once(("admin.ndjson", InputKind::Admin)).chain(feeds.iter().map(|f| (f.as_str(), InputKind::Feed)));
    for (name, kind) in files {
        let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
        let s = ingestor.ingest_reader(file, kind, |_, _| {}).await.expect("ingest");
        assert_eq!(s.rejected, 0, "{name}: {:?}", s.first_rejections);
    }
    store
}

/// Fee terms by (merchant, channel) from the admin file: rate and optional cap.
pub fn fee_terms() -> HashMap<(String, String), (Decimal, Option<Decimal>)> {
    let admin = std::fs::read_to_string(fixture("admin.ndjson")).expect("admin");
    let mut terms = HashMap::new();
    for line in admin.lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        if v["kind"] == "contract_signed" {
            for (channel, fee) in v["fees"].as_object().expect("fees") {
                let key = (v["merchant_id"].as_str().expect("id").to_owned(), channel.clone());
                terms.insert(key, (dec(&fee["rate"]), fee.get("cap").map(dec)));
            }
        }
    }
    terms
}

/// The fee on a sale: rate × amount rounded half up, capped.
pub fn fee(
    terms: &HashMap<(String, String), (Decimal, Option<Decimal>)>,
    merchant: &str,
    channel: &str,
    amount: Decimal,
) -> Decimal {
    let (rate, cap) = terms[&(merchant.to_owned(), channel.to_owned())];
    let fee = half_up(rate * amount);
    cap.map_or(fee, |cap| fee.min(cap))
}

/// Rounded to fen, half up.
pub fn half_up(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

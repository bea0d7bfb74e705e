//! The golden reconciliation: the fixture day's admin records, both feeds and all six
//! statements, reconciled day by day, give exactly the breaks, matched counts and carried
//! items of `answer.json` — and the same classification when run again.

mod common;

use std::collections::BTreeSet;

use chrono::NaiveDate;
use common::{fixture, store_fixture};
use ingest::statement::{self, StatementChannel, StatementLine};
use ledger::recon::{Classification, Outcome, classify, load_items};
use serde_json::Value;

fn lines(channel: StatementChannel, date: NaiveDate) -> Vec<StatementLine> {
    let ext = if channel == StatementChannel::Unionpay { "txt" } else { "csv" };
    let name = format!("statements/{channel}-{date}.{ext}");
    match std::fs::read(fixture(&name)) {
        Ok(bytes) => statement::parse(channel, &name, &bytes).unwrap_or_else(|e| panic!("{e}")).lines,
        Err(_) => Vec::new(),
    }
}

async fn run(store: &ingest::store::EmbeddedStore, channel: StatementChannel, date: NaiveDate) -> Classification {
    let before = date.pred_opt().expect("date");
    let (items, terms) = load_items(store, channel, before, date).await.expect("items");
    let today = lines(channel, date);
    let earlier = lines(channel, before);
    classify(date, &today, &[&earlier], &items, |c| terms[&c])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_days_reconcile_to_the_answer_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24", "2026-11-25"]).await;
    let answer: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("answer.json")).expect("answer")).expect("json");
    let (mut breaks, mut carried) = (BTreeSet::new(), BTreeSet::new());
    for date in ["2026-11-24", "2026-11-25"] {
        let date: NaiveDate = date.parse().expect("date");
        for channel in [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay] {
            let c = run(&store, channel, date).await;
            assert_eq!(c, run(&store, channel, date).await, "a re-run gives the same classification");
            let matched = c.matched;
            let key = format!("{channel}:{date}");
            assert_eq!(Some(matched), answer["matched"][&key].as_u64(), "matched {key}");
            for i in &c.items {
                let row = (
                    channel.to_string(),
                    date.to_string(),
                    i.txn_id.clone(),
                    i.channel_txn_id.clone().unwrap_or_default(),
                );
                match i.outcome {
                    Outcome::CarriedForward => {
                        carried.insert(row);
                    }
                    o if o.is_break() => {
                        breaks.insert((o.as_str().to_owned(), row));
                    }
                    _ => {}
                }
            }
        }
    }
    let s = |v: &Value| v.as_str().expect("str").to_owned();
    let want_breaks: BTreeSet<_> = answer["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .map(|b| (s(&b["outcome"]), (s(&b["statement"]), s(&b["date"]), s(&b["txn_id"]), s(&b["channel_txn_id"]))))
        .collect();
    let missing: Vec<_> = want_breaks.difference(&breaks).collect();
    let extra: Vec<_> = breaks.difference(&want_breaks).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:#?}\nextra {extra:#?}");
    let want_carried: BTreeSet<_> = answer["carried_forward"]
        .as_array()
        .expect("carried")
        .iter()
        .map(|b| (s(&b["statement"]), s(&b["date"]), s(&b["txn_id"]), s(&b["channel_txn_id"])))
        .collect();
    assert_eq!(carried, want_carried);

    // Terminal batches: the terminals' own totals against the host's.
    let mut unbalanced = BTreeSet::new();
    for date in ["2026-11-24", "2026-11-25"] {
        let verdicts = ledger::recon::batch_verdicts(&*store, date.parse().expect("date")).await.expect("verdicts");
        assert!(verdicts.len() > 10, "every terminal closes its batch");
        for v in verdicts.iter().filter(|v| !v.balanced) {
            unbalanced.insert((date.to_owned(), v.terminal_id.clone(), v.batch_no.clone(), v.difference.to_string()));
        }
    }
    let want: BTreeSet<_> = answer["unbalanced_batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| (s(&b["date"]), s(&b["terminal_id"]), s(&b["batch_no"]), s(&b["difference"])))
        .collect();
    assert_eq!(unbalanced, want);
}

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
    let (items, terms) = load_items(store, channel, date).await.expect("items");
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

/// Importing the statements in another order, then reconciling, records the same results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_of_imports_does_not_matter() {
    let files = [
        (StatementChannel::Wechat, "statements/wechat-2026-11-24.csv"),
        (StatementChannel::Alipay, "statements/alipay-2026-11-24.csv"),
        (StatementChannel::Unionpay, "statements/unionpay-2026-11-24.txt"),
        (StatementChannel::Wechat, "statements/wechat-2026-11-25.csv"),
        (StatementChannel::Alipay, "statements/alipay-2026-11-25.csv"),
        (StatementChannel::Unionpay, "statements/unionpay-2026-11-25.txt"),
    ];
    let mut digests = Vec::new();
    for order in [vec![0, 1, 2, 3, 4, 5], vec![5, 3, 1, 4, 0, 2]] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_fixture(dir.path(), &["2026-11-24", "2026-11-25"]).await;
        for i in order {
            let (channel, name) = files[i];
            let bytes = std::fs::read(fixture(name)).expect("fixture");
            ledger::recon::import_statement(&*store, channel, name, &bytes, None).await.expect("import");
        }
        let mut run = Vec::new();
        for date in ["2026-11-24", "2026-11-25"] {
            for channel in [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay] {
                let r =
                    ledger::recon::reconcile(&*store, channel, date.parse().expect("date")).await.expect("reconcile");
                run.push(r.record);
            }
        }
        digests.push(run);
    }
    assert_eq!(digests[0], digests[1]);
}

mod shuffled {
    use chrono::NaiveDate;
    use ingest::event::Channel;
    use ingest::statement::{LineKind, StatementLine};
    use ledger::recon::{Item, Terms, classify};
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    /// What becomes of one of our payments on the statement.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Settled,
        Missing,
        WrongAmount,
        WrongFee,
        Twice,
        Voided,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            12 => Just(Fate::Settled),
            1 => Just(Fate::Missing),
            1 => Just(Fate::WrongAmount),
            1 => Just(Fate::WrongFee),
            1 => Just(Fate::Twice),
            1 => Just(Fate::Voided),
        ]
    }

    proptest! {
        /// Shuffling the statement's lines changes no line's or item's outcome.
        #[test]
        fn shuffling_lines_changes_no_outcome(
            fates in prop::collection::vec((fate(), 1i64..100_000, 0u32..1440), 1..120),
            strangers in 0usize..5,
            seed in any::<u64>(),
        ) {
            let date = NaiveDate::from_ymd_opt(2026, 11, 24).expect("date");
            let terms = Terms { fee_rate: Decimal::new(25, 4), fee_tolerance: Decimal::new(1, 2), carry_forward_days: 1 };
            let mut items = Vec::new();
            let mut lines = Vec::new();
            for (i, (fate, cents, minute)) in fates.iter().enumerate() {
                let amount = Decimal::new(*cents, 2);
                let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T00:00:00+08:00").expect("time")
                    + chrono::Duration::minutes(i64::from(*minute));
                items.push(Item {
                    kind: LineKind::Payment,
                    txn_id: format!("T{i}"),
                    channel_txn_id: Some(format!("C{i}")),
                    channel: Channel::Wechat,
                    amount,
                    at,
                    cancelled: matches!(fate, Fate::Voided),
                });
                let line = StatementLine {
                    line: 0,
                    kind: LineKind::Payment,
                    txn_id: format!("T{i}"),
                    original_txn_id: None,
                    channel_txn_id: format!("C{i}"),
                    amount: if matches!(fate, Fate::WrongAmount) { amount + Decimal::ONE } else { amount },
                    fee: if matches!(fate, Fate::WrongFee) { amount * Decimal::new(25, 4) + Decimal::ONE } else { amount * Decimal::new(25, 4) },
                    at: None,
                };
                match fate {
                    Fate::Missing => {}
                    Fate::Twice => {
                        lines.push(line.clone());
                        lines.push(line);
                    }
                    _ => lines.push(line),
                }
            }
            for k in 0..strangers {
                lines.push(StatementLine {
                    line: 0,
                    kind: LineKind::Payment,
                    txn_id: format!("X{k}"),
                    original_txn_id: None,
                    channel_txn_id: format!("Z{k}"),
                    amount: Decimal::ONE,
                    fee: Decimal::ZERO,
                    at: None,
                });
            }
            let outcomes = |lines: &[StatementLine]| {
                let c = classify(date, lines, &[], &items, |_| terms);
                let mut v: Vec<_> = c
                    .items
                    .iter()
                    .map(|x| (x.outcome, x.txn_id.clone(), x.channel_txn_id.clone(), x.their_amount, x.their_fee))
                    .collect();
                v.sort();
                (v, c.matched, c.matched_sums)
            };
            let before = outcomes(&lines);
            // A seeded Fisher-Yates shuffle.
            let mut state = seed | 1;
            for i in (1..lines.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                lines.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(outcomes(&lines), before);
        }
    }
}

/// Reconciled days clear the clearing accounts: what is left in each is what the statements
/// have not settled yet (the carried items); a re-run books nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_clears_the_clearing_accounts() {
    use ingest::money::Currency;
    use ledger::entry::Account;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24", "2026-11-25"]).await;
    for (channel, name) in [
        (StatementChannel::Wechat, "statements/wechat-2026-11-24.csv"),
        (StatementChannel::Alipay, "statements/alipay-2026-11-24.csv"),
        (StatementChannel::Unionpay, "statements/unionpay-2026-11-24.txt"),
        (StatementChannel::Wechat, "statements/wechat-2026-11-25.csv"),
        (StatementChannel::Alipay, "statements/alipay-2026-11-25.csv"),
        (StatementChannel::Unionpay, "statements/unionpay-2026-11-25.txt"),
    ] {
        let bytes = std::fs::read(fixture(name)).expect("fixture");
        ledger::recon::import_statement(&*store, channel, name, &bytes, None).await.expect("import");
    }
    let before = ledger::replay(&*store, u64::MAX).await.expect("books");
    let mut carried = std::collections::HashMap::new();
    for _ in 0..2 {
        for date in ["2026-11-24", "2026-11-25"] {
            for channel in [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay] {
                let r = ledger::recon::reconcile(&*store, channel, date.parse().expect("date")).await.expect("run");
                for b in r.breaks.iter().filter(|b| b.outcome == Outcome::CarriedForward) {
                    carried.insert((b.ledger_channel, b.txn_id.clone()), b.our_amount.unwrap_or_default());
                }
            }
        }
    }
    let after = ledger::replay(&*store, u64::MAX).await.expect("books balance after reconciling");
    for channel in [
        ingest::event::Channel::Wechat,
        ingest::event::Channel::Alipay,
        ingest::event::Channel::UnionpayCard,
        ingest::event::Channel::UnionpayQr,
    ] {
        let left = after.balances().balance(&Account::clearing(channel), Currency::Cny, u64::MAX);
        let want: rust_decimal::Decimal =
            carried.iter().filter(|((c, _), _)| *c == Some(channel)).map(|(_, a)| *a).sum();
        assert_eq!(left, want, "{channel}: only the carried items stay in clearing");
        let was = before.balances().balance(&Account::clearing(channel), Currency::Cny, u64::MAX);
        assert!(was > left, "{channel} was cleared");
    }
    assert!(after.balances().balance(&Account::bank(), Currency::Cny, u64::MAX) > rust_decimal::Decimal::ZERO);
    // The second round of runs booked nothing: the same books as after the first.
    let entries_after_first = after.entries();
    let third = async {
        for channel in [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay] {
            ledger::recon::reconcile(&*store, channel, "2026-11-25".parse().expect("date")).await.expect("run");
        }
    };
    third.await;
    let again = ledger::replay(&*store, u64::MAX).await.expect("books");
    assert_eq!((again.entries(), again.digest()), (entries_after_first, after.digest()));
}

/// A run with thousands of breaks records them in parts (each under the store's payload
/// limit), books all of them, and reads them all back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_breaks_are_recorded_in_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let mut csv = String::from("reference,amount,fee,date,status\n");
    for i in 0..2500 {
        csv.push_str(&format!("UNKNOWN-{i},10.00,0.03,2026-11-24,payment\n"));
    }
    let date: NaiveDate = "2026-11-24".parse().expect("date");
    ledger::recon::import_statement(&*store, StatementChannel::Generic, "other.csv", csv.as_bytes(), Some(date))
        .await
        .expect("import");
    let r = ledger::recon::reconcile(&*store, StatementChannel::Generic, date).await.expect("reconcile");
    assert_eq!((r.breaks.len(), r.record.break_parts), (2500, 3));
    let (latest, _) = ledger::recon::recorded_breaks(&*store).await.expect("read back");
    assert_eq!(latest[&(StatementChannel::Generic, date)].1, r.breaks);
    let books = ledger::replay(&*store, u64::MAX).await.expect("books balance");
    let suspense = books.balances().balance(
        &ledger::entry::Account::parse("assets:suspense:generic").expect("account"),
        ingest::money::Currency::Cny,
        u64::MAX,
    );
    assert_eq!(suspense, rust_decimal::Decimal::new(-2_500_000, 2), "every unknown line waits in suspense");
}

/// Re-imports: a re-downloaded file (other bytes, same rows) is another run that books the
/// same, an earlier file imported again is in force again, a file whose lines moved keeps its
/// breaks' ids (and their resolutions), and a date that disagrees with the file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reimports_keep_the_books_and_the_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let date: NaiveDate = "2026-11-24".parse().expect("date");
    let name = "statements/alipay-2026-11-24.csv";
    let original = std::fs::read(fixture(name)).expect("fixture");
    let text = encoding_rs::GBK.decode(&original).0.into_owned();
    let gbk = |t: &str| encoding_rs::GBK.encode(t).0.into_owned();
    let redownloaded =
        gbk(&text.replace("#导出时间：[2026年11月25日 09:12:00]", "#导出时间：[2026年11月25日 10:40:00]"));
    assert_ne!(redownloaded, original);
    let import = |bytes: Vec<u8>| {
        let store = store.clone();
        async move { ledger::recon::import_statement(&*store, StatementChannel::Alipay, name, &bytes, None).await }
    };
    let run = || async {
        let r = ledger::recon::reconcile(&*store, StatementChannel::Alipay, date).await.expect("reconcile");
        let books = ledger::replay(&*store, u64::MAX).await.expect("books");
        (r.breaks, books.digest())
    };
    import(original.clone()).await.expect("import");
    let (breaks, books) = run().await;
    assert_eq!(breaks.len(), 6);
    let first = import(redownloaded.clone()).await.expect("import");
    assert!(!first.again && first.statement.import_no == 2);
    let (again, books_again) = run().await;
    assert_eq!((again.len(), &books_again), (6, &books), "another run, the same books and breaks");
    let (latest, _) = ledger::recon::recorded_breaks(&*store).await.expect("read");
    assert_eq!(latest[&(StatementChannel::Alipay, date)].1.len(), 6);
    // The first file again: in force again (a third import), same books.
    let back = import(original.clone()).await.expect("import");
    assert!(
        !back.again && back.statement.import_no == 3 && back.statement.digest == ledger::recon::file_digest(&original)
    );
    assert!(import(original.clone()).await.expect("import").again, "the file in force: nothing changes");
    assert_eq!(run().await.1, books);

    // Resolve a break, then import the file with its lines moved down by one: same break ids,
    // the resolution holds.
    let ids = ledger::recon::break_ids(StatementChannel::Alipay, date, &breaks);
    let (id, _) = ids.iter().zip(&breaks).find(|(_, b)| b.outcome == Outcome::MissingInStatement).expect("one");
    ledger::recon::resolve(
        &*store,
        id,
        ingest::event::ResolveAction::WriteOff,
        "never paid",
        "ops-1",
        None,
        rust_decimal::Decimal::new(1000, 0),
    )
    .await
    .expect("resolved");
    let moved = gbk(&text.replacen("#支付宝业务明细查询\r\n", "#支付宝业务明细查询\r\n\r\n", 1));
    import(moved).await.expect("import");
    let (moved_breaks, _) = run().await;
    assert!(moved_breaks.iter().zip(&breaks).any(|(a, b)| a.line != b.line), "lines moved");
    assert_eq!(ledger::recon::break_ids(StatementChannel::Alipay, date, &moved_breaks), ids);
    let err = ledger::recon::resolve(
        &*store,
        id,
        ingest::event::ResolveAction::Refund,
        "again",
        "ops-2",
        None,
        rust_decimal::Decimal::new(1000, 0),
    )
    .await
    .expect_err("once");
    assert!(err.to_string().contains("resolved already"), "{err}");
    // Four eyes: the same name in other case or spacing is the same person.
    let big = ids
        .iter()
        .zip(&breaks)
        .find(|(_, b)| b.outcome == Outcome::MissingInLedger)
        .map(|(i, _)| i.clone())
        .expect("one");
    let err = ledger::recon::resolve(
        &*store,
        &big,
        ingest::event::ResolveAction::WriteOff,
        "x",
        "Ops-1",
        Some(" ops-1 "),
        rust_decimal::Decimal::ZERO,
    )
    .await
    .expect_err("needs another person");
    assert!(err.to_string().contains("--approved-by"), "{err}");

    let err =
        ledger::recon::import_statement(&*store, StatementChannel::Alipay, name, &original, "2026-11-25".parse().ok())
            .await
            .expect_err("the file says 11-24");
    assert!(err.to_string().contains("not of 2026-11-25"), "{err}");
}

/// A sale in the last minutes of a day, reversed, that the next day's file settles anyway is a
/// status mismatch there, not a line unknown to us.
#[test]
fn a_reversed_sale_settled_the_next_day_is_a_status_mismatch() {
    use ingest::event::Channel;
    use ingest::statement::LineKind;
    use ledger::recon::{Item, Outcome, Terms, classify};
    use rust_decimal::Decimal;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T23:58:00+08:00").expect("time");
    let item = Item {
        kind: LineKind::Payment,
        txn_id: "T1".into(),
        channel_txn_id: Some("C1".into()),
        channel: Channel::Wechat,
        amount: Decimal::new(1000, 2),
        at,
        cancelled: true,
    };
    let line = StatementLine {
        line: 2,
        kind: LineKind::Payment,
        txn_id: "T1".into(),
        original_txn_id: None,
        channel_txn_id: "C1".into(),
        amount: Decimal::new(1000, 2),
        fee: Decimal::new(3, 2),
        at: None,
    };
    let terms = Terms { fee_rate: Decimal::new(25, 4), fee_tolerance: Decimal::new(1, 2), carry_forward_days: 1 };
    let c = classify("2026-11-25".parse().expect("date"), &[line], &[&[]], &[item], |_| terms);
    assert_eq!(c.items.iter().map(|i| i.outcome).collect::<Vec<_>>(), vec![Outcome::StatusMismatch]);
}

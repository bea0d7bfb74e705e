//! The golden reconciliation: the fixture day's admin records, both feeds and all six
//! statements, classified day by day, give exactly the breaks (and what each parks), matched
//! counts and carried items of `answer.json` — and the same classification when run again.
//! Recording runs is the application layer's (`app/tests/recon.rs`).

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
    let mut parked = std::collections::BTreeMap::new();
    for date in ["2026-11-24", "2026-11-25"] {
        let date: NaiveDate = date.parse().expect("date");
        // One pass for every statement (the day-end's) gathers what each statement's own read
        // does, and the day's batch closes.
        let all = [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay];
        let day = ledger::recon::load_day(&*store, &all, date).await.expect("day");
        for channel in all {
            let (items, terms) = load_items(&*store, channel, date).await.expect("items");
            assert!(!items.is_empty(), "{channel} {date} has items");
            assert_eq!(day.items[&channel], items, "{channel} {date}");
            assert_eq!(day.terms, terms);
        }
        let closes = ledger::recon::batch_closes(&*store, date).await.expect("closes");
        assert!(!closes.is_empty(), "{date} closes batches");
        assert_eq!(day.closes, closes);
        for channel in all {
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
                        parked.insert((o.as_str().to_owned(), row.clone()), ledger::recon::parked(i).to_string());
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
    // What each break parks in suspense: the answer key's amounts, worked out from the fixture
    // files by tests/fixtures/day/answer_amounts.py.
    let want_parked: std::collections::BTreeMap<_, _> = answer["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .map(|b| {
            let key = (s(&b["outcome"]), (s(&b["statement"]), s(&b["date"]), s(&b["txn_id"]), s(&b["channel_txn_id"])));
            (key, s(&b["parked"]))
        })
        .collect();
    assert_eq!(parked, want_parked, "what each break parks");
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
        WrongSign,
        Twice,
        Voided,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            12 => Just(Fate::Settled),
            1 => Just(Fate::Missing),
            1 => Just(Fate::WrongAmount),
            1 => Just(Fate::WrongFee),
            1 => Just(Fate::WrongSign),
            1 => Just(Fate::Twice),
            1 => Just(Fate::Voided),
        ]
    }

    /// What a correct reconciliation says of each fate, worked out without the engine: the
    /// outcomes of the lines and items that do not match, by txn id, and how many match.
    fn naive(fates: &[(Fate, i64, u32)], strangers: usize) -> (Vec<(ledger::recon::Outcome, String)>, u64) {
        use ledger::recon::Outcome as O;
        let (mut out, mut matched) = (Vec::new(), 0);
        for (i, (fate, _, minute)) in fates.iter().enumerate() {
            let t = format!("T{i}");
            match fate {
                Fate::Settled => matched += 1,
                // In the last ten minutes of the day an unsettled item is carried forward.
                Fate::Missing if *minute >= 24 * 60 - ledger::recon::CUTOFF_MINUTES => out.push((O::CarriedForward, t)),
                Fate::Missing => out.push((O::MissingInStatement, t)),
                Fate::WrongAmount => out.push((O::AmountMismatch, t)),
                Fate::WrongFee | Fate::WrongSign => out.push((O::FeeMismatch, t)),
                Fate::Twice => {
                    matched += 1;
                    out.push((O::DuplicateInStatement, t));
                }
                Fate::Voided => out.push((O::StatusMismatch, t)),
            }
        }
        out.extend((0..strangers).map(|k| (O::MissingInLedger, format!("X{k}"))));
        out.sort();
        (out, matched)
    }

    proptest! {
        /// Every generated case gets the naive model's outcome, and shuffling the statement's
        /// lines changes no line's or item's outcome.
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
                    txn_id: format!("T{i}").into(),
                    channel_txn_id: Some(format!("C{i}").into()),
                    channel: Channel::Wechat,
                    amount,
                    at,
                    currency: ingest::money::Currency::Cny,
                    cancelled: matches!(fate, Fate::Voided),
                });
                let line = StatementLine {
                    line: 0,
                    kind: LineKind::Payment,
                    txn_id: format!("T{i}"),
                    original_txn_id: None,
                    channel_txn_id: format!("C{i}"),
                    amount: if matches!(fate, Fate::WrongAmount) { amount + Decimal::ONE } else { amount },
                    fee: match fate {
                        Fate::WrongFee => amount * Decimal::new(25, 4) + Decimal::ONE,
                        // The right size with the wrong sign: within the tolerance by its size.
                        Fate::WrongSign => -(amount * Decimal::new(25, 4)),
                        _ => amount * Decimal::new(25, 4),
                    },
                    at: None,
                    currency: ingest::money::Currency::Cny,
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
                    currency: ingest::money::Currency::Cny,
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
            // Every line and item gets the outcome a naive model gives it.
            let c = classify(date, &lines, &[], &items, |_| terms);
            let mut got: Vec<_> = c.items.iter().map(|x| (x.outcome, x.txn_id.clone())).collect();
            got.sort();
            prop_assert_eq!((got, c.matched), naive(&fates, strangers));
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
        currency: ingest::money::Currency::Cny,
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
        currency: ingest::money::Currency::Cny,
    };
    let terms = Terms { fee_rate: Decimal::new(25, 4), fee_tolerance: Decimal::new(1, 2), carry_forward_days: 1 };
    let c = classify("2026-11-25".parse().expect("date"), &[line], &[&[]], &[item], |_| terms);
    assert_eq!(c.items.iter().map(|i| i.outcome).collect::<Vec<_>>(), vec![Outcome::StatusMismatch]);
}

/// A fee of the wrong sign (here within the tolerance of the expected fee by its size) is a
/// fee mismatch, never matched by its absolute value; the same fee with the right sign matches.
#[test]
fn a_fee_of_the_wrong_sign_is_a_fee_mismatch_however_small() {
    use ingest::event::Channel;
    use ingest::statement::LineKind;
    use ledger::recon::{Item, Outcome, Terms, classify};
    use rust_decimal::Decimal;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T12:00:00+08:00").expect("time");
    let item = Item {
        kind: LineKind::Payment,
        txn_id: "T1".into(),
        channel_txn_id: Some("C1".into()),
        channel: Channel::Wechat,
        amount: Decimal::new(100, 2),
        at,
        currency: ingest::money::Currency::Cny,
        cancelled: false,
    };
    let line = |fee: Decimal| StatementLine {
        line: 2,
        kind: LineKind::Payment,
        txn_id: "T1".into(),
        original_txn_id: None,
        channel_txn_id: "C1".into(),
        amount: Decimal::new(100, 2),
        fee,
        at: None,
        currency: ingest::money::Currency::Cny,
    };
    let terms = Terms { fee_rate: Decimal::new(25, 4), fee_tolerance: Decimal::new(1, 2), carry_forward_days: 1 };
    let date = "2026-11-24".parse().expect("date");
    let outcome = |fee| {
        let c = classify(date, &[line(fee)], &[], std::slice::from_ref(&item), |_| terms);
        (c.matched, c.items.iter().map(|i| i.outcome).collect::<Vec<_>>())
    };
    assert_eq!(outcome(Decimal::new(25, 4)), (1, vec![]), "the expected fee, the right sign");
    assert_eq!(outcome(Decimal::new(-1, 3)), (0, vec![Outcome::FeeMismatch]), "the wrong sign");
    assert_eq!(outcome(Decimal::ZERO), (1, vec![]), "no fee at all is within the tolerance");
}

/// Currencies: a line matches an item only in the same currency, matched lines are summed per
/// currency, every break carries its currency (its item's, else its line's), and what a break
/// parks is rounded to that currency's minor unit.
#[test]
fn lines_and_items_match_only_in_their_own_currency() {
    use ingest::event::Channel;
    use ingest::money::Currency;
    use ingest::statement::LineKind;
    use ledger::recon::{Item, Outcome, Terms, classify, parked};
    use rust_decimal::Decimal;
    let d = |s: &str| s.parse::<Decimal>().expect("decimal");
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T12:00:00+08:00").expect("time");
    let item = |txn: &str, amount: &str, currency| Item {
        kind: LineKind::Payment,
        txn_id: txn.into(),
        channel_txn_id: Some(format!("C{txn}").into()),
        channel: Channel::Wechat,
        amount: d(amount),
        currency,
        at,
        cancelled: false,
    };
    let line = |txn: &str, amount: &str, fee: &str, currency| StatementLine {
        line: 2,
        kind: LineKind::Payment,
        txn_id: txn.into(),
        original_txn_id: None,
        channel_txn_id: format!("C{txn}"),
        amount: d(amount),
        fee: d(fee),
        at: None,
        currency,
    };
    // Given: an HKD payment settled, an HKD payment settled short, a CNY payment whose line
    // says HKD, a JPY payment charged 5 yen where 2.5 were expected.
    let items = [
        item("H1", "100.00", Currency::Hkd),
        item("H2", "50.00", Currency::Hkd),
        item("C1", "20.00", Currency::Cny),
        item("J1", "1000", Currency::Jpy),
    ];
    let lines = [
        line("H1", "100.00", "0.25", Currency::Hkd),
        line("H2", "49.00", "0.12", Currency::Hkd),
        line("C1", "20.00", "0.05", Currency::Hkd),
        line("J1", "1000", "5", Currency::Jpy),
    ];
    let terms = Terms { fee_rate: d("0.0025"), fee_tolerance: d("0.01"), carry_forward_days: 1 };
    // When: they are classified.
    let c = classify("2026-11-24".parse().expect("date"), &lines, &[], &items, |_| terms);
    // Then: one match, summed in HKD apart from CNY; each break in its own currency.
    assert_eq!(c.matched, 1);
    assert!(c.matched_sums.is_empty(), "nothing matched in CNY");
    assert_eq!(c.matched_by_currency[&Currency::Hkd][&Channel::Wechat].payment_amount, d("100.00"));
    let got: Vec<_> = c.items.iter().map(|b| (b.txn_id.as_str(), b.outcome, b.currency, parked(b))).collect();
    assert_eq!(
        got,
        vec![
            ("H2", Outcome::AmountMismatch, Currency::Hkd, d("1.00")),
            // The CNY item is not the HKD line's: the line is the channel's money for nothing we
            // hold in HKD, the item is still unsettled in CNY.
            ("C1", Outcome::MissingInLedger, Currency::Hkd, d("-20.00")),
            // 5 yen less the expected 2.5 rounded to the yen (3), not to two places (2.50).
            ("J1", Outcome::FeeMismatch, Currency::Jpy, d("2")),
            ("C1", Outcome::MissingInStatement, Currency::Cny, d("20.00")),
        ]
    );
}

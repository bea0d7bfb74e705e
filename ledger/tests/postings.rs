//! Given these events, when this one is applied, then these postings and balances.

use std::collections::BTreeMap;

use chrono::DateTime;
use ingest::event::{Channel, ContractSigned, Event, FeeTerms, PaymentAdjustment, PaymentCaptured, SettlementCycle};
use ingest::money::Currency;
use ledger::Projection;
use ledger::entry::Account;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn at() -> chrono::DateTime<chrono::FixedOffset> {
    DateTime::parse_from_rfc3339("2026-11-26T12:00:00+08:00").expect("time")
}

fn contract(merchant: &str) -> Event {
    let mut fees = BTreeMap::new();
    fees.insert(Channel::Wechat, FeeTerms { rate: d("0.0038"), min: None, cap: None });
    fees.insert(Channel::UnionpayCard, FeeTerms { rate: d("0.0060"), min: None, cap: Some(d("20.00")) });
    fees.insert(Channel::Cash, FeeTerms { rate: d("0"), min: None, cap: None });
    Event::ContractSigned(ContractSigned {
        merchant_id: merchant.into(),
        fees,
        settlement_cycle: SettlementCycle::T1,
        at: at(),
    })
}

fn sale(txn: &str, merchant: &str, channel: Channel, amount: &str) -> Event {
    Event::PaymentCaptured(PaymentCaptured {
        txn_id: txn.into(),
        merchant_id: merchant.into(),
        terminal_id: "T1".into(),
        batch_no: "000001".into(),
        stan: "000001".into(),
        rrn: None,
        channel,
        channel_txn_id: (channel != Channel::Cash).then(|| format!("C{txn}").into()),
        amount: d(amount),
        currency: Currency::Cny,
        at: at(),
        payer: None,
        mcc: "5812".into(),
    })
}

fn adjustment(txn: &str, original: &str, merchant: &str, channel: Channel, amount: &str) -> PaymentAdjustment {
    PaymentAdjustment {
        txn_id: txn.into(),
        original_txn_id: original.into(),
        merchant_id: merchant.into(),
        terminal_id: "T1".into(),
        batch_no: "000001".into(),
        stan: "000002".into(),
        channel,
        amount: d(amount),
        currency: Currency::Cny,
        at: at(),
    }
}

/// Applies events in order from position 0.
fn book(events: &[Event]) -> Projection {
    let mut p = Projection::default();
    for (i, e) in events.iter().enumerate() {
        p.apply(i as u64, e).unwrap_or_else(|err| panic!("event {i}: {err}"));
    }
    p.check_trial_balance().expect("trial balance zero");
    p
}

fn balance(p: &Projection, account: Account) -> Decimal {
    p.balances().balance(&account, Currency::Cny, u64::MAX)
}

#[test]
fn a_wechat_sale_books_clearing_payable_and_fee() {
    // design.md §4: 100.00 at 0.38 %: Dr clearing 100.00 / Cr payable 99.62 / Cr mdr 0.38.
    let mut p = Projection::default();
    p.apply(0, &contract("M1")).expect("contract");
    let entry = p.apply(1, &sale("A", "M1", Channel::Wechat, "100.00")).expect("sale").expect("an entry");
    let lines: Vec<_> = entry.postings().iter().map(|x| (x.account.path().to_owned(), x.amount)).collect();
    assert_eq!(
        lines,
        vec![
            ("assets:clearing:wechat".to_owned(), d("100.00")),
            ("liabilities:merchant:M1:payable".to_owned(), d("-99.62")),
            ("income:mdr:wechat".to_owned(), d("-0.38")),
        ]
    );
}

#[test]
fn cash_never_touches_clearing_and_costs_nothing() {
    let p = book(&[contract("M1"), sale("A", "M1", Channel::Cash, "47.82")]);
    assert!(p.balances().trial_balance(u64::MAX).is_empty());
    assert_eq!(p.entries(), 0);
}

#[test]
fn a_void_and_a_reversal_undo_their_sale() {
    let void = Event::PaymentVoided(adjustment("A-V", "A", "M1", Channel::Wechat, "25.00"));
    let reversal = Event::PaymentReversed(adjustment("B-X", "B", "M1", Channel::UnionpayCard, "5000.00"));
    let p = book(&[
        contract("M1"),
        sale("A", "M1", Channel::Wechat, "25.00"),
        void,
        sale("B", "M1", Channel::UnionpayCard, "5000.00"),
        reversal,
    ]);
    for (account, currency, b) in p.balances().trial_balance(u64::MAX) {
        assert_eq!(b, Decimal::ZERO, "{account} {currency}");
    }
}

#[test]
fn refunds_in_thirds_of_an_odd_amount_net_to_zero_everywhere() {
    let refund = |n: &str, amount: &str| Event::PaymentRefunded(adjustment(n, "A", "M1", Channel::Wechat, amount));
    let p = book(&[
        contract("M1"),
        sale("A", "M1", Channel::Wechat, "100.01"),
        refund("A-R1", "33.33"),
        refund("A-R2", "33.33"),
        refund("A-R3", "33.35"),
    ]);
    for (account, _, b) in p.balances().trial_balance(u64::MAX) {
        assert_eq!(b, Decimal::ZERO, "{account}");
    }
    // As of before the last refund: the first two gave back 0.13 + 0.13 of the 0.38 fee.
    assert_eq!(p.balances().balance(&Account::mdr(Channel::Wechat), Currency::Cny, 4), d("-0.12"));
}

#[test]
fn the_card_cap_is_reached_exactly() {
    let p = book(&[contract("M1"), sale("A", "M1", Channel::UnionpayCard, "3333.33")]);
    assert_eq!(balance(&p, Account::mdr(Channel::UnionpayCard)), d("-20.00"));
    assert_eq!(balance(&p, Account::payable("M1")), d("-3313.33"));
}

#[test]
fn balances_as_of_any_position() {
    let p = book(&[
        contract("M1"),
        sale("A", "M1", Channel::Wechat, "10.00"),
        sale("B", "M1", Channel::Wechat, "20.00"),
        Event::PaymentRefunded(adjustment("A-R1", "A", "M1", Channel::Wechat, "10.00")),
    ]);
    let clearing = Account::clearing(Channel::Wechat);
    let at = |until| p.balances().balance(&clearing, Currency::Cny, until);
    assert_eq!((at(0), at(2), at(3), at(4), at(u64::MAX)), (d("0"), d("10.00"), d("30.00"), d("20.00"), d("20.00")));
    assert_eq!(p.balances().trial_balance(2).len(), 3, "accounts used before position 2");
}

#[test]
fn the_channel_fee_rule_reduces_clearing() {
    let entry = Projection::channel_fee(9, Channel::Wechat, d("0.25"), Currency::Cny).expect("balanced");
    let lines: Vec<_> = entry.postings().iter().map(|x| (x.account.path().to_owned(), x.amount)).collect();
    assert_eq!(
        lines,
        vec![("expenses:channel-fees:wechat".to_owned(), d("0.25")), ("assets:clearing:wechat".to_owned(), d("-0.25"))]
    );
}

#[test]
fn a_reconciliation_books_each_currency_in_its_own() {
    // Given an HKD sale the channel settled, an HKD sale it did not and a CNY sale it settled,
    // when the run's break and completion are booked, then clearing is relieved and suspense
    // charged in HKD for the HKD items and in CNY for the CNY one; the resolution moves the
    // HKD out of suspense in HKD. Every currency balances on its own.
    use ingest::event::{
        BreakResolved, ReconBreak, ReconMatched, ReconOutcome, ReconciliationBreaks, ReconciliationCompleted,
        ResolveAction,
    };
    use ingest::statement::{LineKind, StatementChannel};
    let in_hkd = |e: Event| match e {
        Event::PaymentCaptured(s) => Event::PaymentCaptured(PaymentCaptured { currency: Currency::Hkd, ..s }),
        other => other,
    };
    let date = "2026-11-26".parse().expect("date");
    let missing = ReconBreak {
        outcome: ReconOutcome::MissingInStatement,
        kind: LineKind::Payment,
        txn_id: "B".into(),
        channel_txn_id: Some("CB".into()),
        ledger_channel: Some(Channel::Wechat),
        line: None,
        our_amount: Some(d("50.00")),
        expected_fee: Some(d("0.125")),
        their_amount: None,
        their_fee: None,
        item_date: Some(date),
        currency: Currency::Hkd,
    };
    let sums = |amount: &str, fees: &str| {
        let m =
            ReconMatched { payments: 1, payment_amount: d(amount), refunds: 0, refund_amount: d("0"), fees: d(fees) };
        BTreeMap::from([(Channel::Wechat, m)])
    };
    let run = |breaks: u64| ReconciliationCompleted {
        channel: StatementChannel::Wechat,
        date,
        statement_digest: "s".into(),
        counts: BTreeMap::new(),
        matched: sums("20.00", "0.05"),
        matched_by_currency: BTreeMap::from([(Currency::Hkd, sums("100.00", "0.25"))]),
        break_parts: 1,
        breaks,
        classification_digest: "c".into(),
        run_no: 0,
    };
    let resolved = BreakResolved {
        break_id: "b1".into(),
        statement: StatementChannel::Wechat,
        date,
        outcome: ReconOutcome::MissingInStatement,
        txn_id: "B".into(),
        suspense_amount: d("50.00"),
        currency: Currency::Hkd,
        ledger_channel: Some(Channel::Wechat),
        action: ResolveAction::WriteOff,
        reason: "never settled".into(),
        by: "ops-1".into(),
        approved_by: None,
        approval_over: d("1000.00"),
    };
    let mut events = vec![
        contract("M1"),
        in_hkd(sale("A", "M1", Channel::Wechat, "100.00")),
        in_hkd(sale("B", "M1", Channel::Wechat, "50.00")),
        sale("C", "M1", Channel::Wechat, "20.00"),
        Event::ReconciliationBreaks(ReconciliationBreaks {
            channel: StatementChannel::Wechat,
            date,
            classification_digest: "c".into(),
            part: 0,
            breaks: vec![missing],
            run_no: 0,
        }),
        Event::ReconciliationCompleted(run(1)),
    ];
    let p = book(&events);
    let of = |p: &Projection, path: &str, currency| {
        p.balances().balance(&Account::parse(path).expect("account"), currency, u64::MAX)
    };
    let hkd = |p: &Projection, path| of(p, path, Currency::Hkd);
    let cny = |p: &Projection, path| of(p, path, Currency::Cny);
    assert_eq!(hkd(&p, "assets:clearing:wechat"), d("0"), "both HKD sales left HKD clearing");
    assert_eq!(hkd(&p, "assets:suspense:wechat"), d("50.00"), "the HKD break parks HKD");
    assert_eq!(hkd(&p, "assets:bank:settlement"), d("99.75"));
    assert_eq!(hkd(&p, "expenses:channel-fees:wechat"), d("0.25"));
    assert_eq!(cny(&p, "assets:clearing:wechat"), d("0"));
    assert_eq!(cny(&p, "assets:suspense:wechat"), d("0"), "nothing parked in CNY");
    assert_eq!(cny(&p, "assets:bank:settlement"), d("19.95"));
    events.push(Event::BreakResolved(resolved));
    let p = book(&events);
    assert_eq!(hkd(&p, "assets:suspense:wechat"), d("0"), "resolved in HKD");
    assert_eq!(hkd(&p, "expenses:write-offs:wechat"), d("50.00"));
    assert_eq!(cny(&p, "expenses:write-offs:wechat"), d("0"));
}

#[test]
fn broken_history_fails_loudly_with_its_position() {
    let mut p = Projection::default();
    p.apply(0, &contract("M1")).expect("contract");
    p.apply(1, &sale("A", "M1", Channel::Wechat, "10.00")).expect("sale");
    let err = p
        .apply(2, &Event::PaymentRefunded(adjustment("A-R1", "A", "M1", Channel::Wechat, "10.01")))
        .expect_err("over-refund");
    assert!(err.to_string().contains("position 2"), "{err}");
    // Broken books stay broken: nothing more is booked on top of them.
    let again = p.apply(3, &sale("B", "M1", Channel::Wechat, "1.00")).expect_err("still broken");
    assert_eq!(again, err);
    assert_eq!(p.entries(), 1, "only the sale was booked");

    let mut p = Projection::default();
    p.apply(0, &contract("M1")).expect("contract");
    let err = p.apply(5, &sale("B", "M1", Channel::Wechat, "1.00")).expect_err("gap");
    assert!(matches!(err, ledger::LedgerError::OutOfOrder { expected: 1, got: 5 }), "{err}");
    let unknown = Event::PaymentVoided(adjustment("Z-V", "Z", "M1", Channel::Wechat, "1.00"));
    let err = p.apply(1, &unknown).expect_err("a void of a sale never booked");
    assert!(err.to_string().contains("never booked") && err.to_string().contains("position 1"), "{err}");
}

#[test]
fn nothing_posts_to_a_closed_merchant() {
    let mut p = Projection::default();
    p.apply(0, &contract("M1")).expect("contract");
    p.apply(1, &sale("A", "M1", Channel::Wechat, "10.00")).expect("sale");
    let closed = Event::MerchantClosed(ingest::event::MerchantClosed { merchant_id: "M1".into(), at: at() });
    p.apply(2, &closed).expect("closed");
    let refund = Event::PaymentRefunded(adjustment("A-R1", "A", "M1", Channel::Wechat, "1.00"));
    let err = p.apply(3, &refund).expect_err("refused");
    assert!(err.to_string().contains("closed") && err.to_string().contains("position 3"), "{err}");
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    Sale { channel: u8, cents: i64 },
    Refund { payment: usize, cents: i64 },
    Void { payment: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..3, 1i64..1_000_000).prop_map(|(channel, cents)| Step::Sale { channel, cents }),
        2 => (0usize..50, 1i64..1_000_000).prop_map(|(payment, cents)| Step::Refund { payment, cents }),
        1 => (0usize..50).prop_map(|payment| Step::Void { payment }),
    ]
}

/// Sets when the event happened: `minutes` after the fixed time of the other helpers.
fn timed(mut e: Event, minutes: i64) -> Event {
    let t = at() + chrono::Duration::minutes(minutes);
    match &mut e {
        Event::PaymentCaptured(s) => s.at = t,
        Event::PaymentRefunded(a) | Event::PaymentVoided(a) | Event::PaymentReversed(a) => a.at = t,
        _ => {}
    }
    e
}

/// The merchant fee of the contract in [`contract`], computed here on its own: rate × amount
/// rounded half away from zero to the fen, the card fee capped at 20.00.
fn naive_fee(channel: Channel, cents: i64) -> i64 {
    let (rate_per_10k, cap) = match channel {
        Channel::Wechat => (38, None),
        Channel::UnionpayCard => (60, Some(2000)),
        _ => (0, None),
    };
    // cents × rate / 10000, rounded half up (amounts are positive).
    let fee = (cents * rate_per_10k + 5000) / 10000;
    cap.map_or(fee, |c: i64| fee.min(c))
}

proptest! {
    /// Random valid histories, with events recorded out of the order they happened:
    /// - the trial balance is zero after every event;
    /// - clearing and fee income equal what a naive model of the payments computes;
    /// - the balances as of every position equal a replay to that position;
    /// - the balances as of any business time equal the sum of the entries of the events that
    ///   happened by then;
    /// - refunding what remains of everything empties the books.
    #[test]
    fn books_always_balance_and_full_unwinds_net_to_zero(
        steps in prop::collection::vec((step(), 0i64..600), 1..80),
    ) {
        let channels = [Channel::Wechat, Channel::UnionpayCard, Channel::Cash];
        let mut events = vec![contract("M1")];
        // (txn, channel, amount cents, refunded cents, cancelled, refunds)
        let mut payments: Vec<(String, Channel, i64, i64, bool, i64)> = Vec::new();
        for (s, minutes) in steps {
            match s {
                Step::Sale { channel, cents } => {
                    let txn = format!("P{}", payments.len());
                    let ch = channels[channel as usize];
                    events.push(timed(sale(&txn, "M1", ch, &Decimal::new(cents, 2).to_string()), minutes));
                    payments.push((txn, ch, cents, 0, false, 0));
                }
                Step::Refund { payment, cents } => {
                    let Some(p) = payments.get_mut(payment) else { continue };
                    let part = cents.min(p.2 - p.3);
                    if p.4 || part <= 0 { continue }
                    p.3 += part;
                    p.5 += 1;
                    let n = format!("{}-R{}", p.0, p.3);
                    let refund = adjustment(&n, &p.0, "M1", p.1, &Decimal::new(part, 2).to_string());
                    events.push(timed(Event::PaymentRefunded(refund), minutes));
                }
                Step::Void { payment } => {
                    let Some(p) = payments.get_mut(payment) else { continue };
                    if p.4 || p.3 > 0 { continue }
                    p.4 = true;
                    let n = format!("{}-V", p.0);
                    let void = adjustment(&n, &p.0, "M1", p.1, &Decimal::new(p.2, 2).to_string());
                    events.push(timed(Event::PaymentVoided(void), minutes));
                }
            }
        }
        let mut projection = Projection::default();
        // Every entry's postings with the time its event happened.
        let mut entries: Vec<(i64, Vec<(String, Decimal)>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let Some(entry) = projection.apply(i as u64, e).expect("apply") {
                let postings = entry.postings().iter().map(|p| (p.account.path().to_owned(), p.amount)).collect();
                entries.push((e.occurred_at().timestamp_micros(), postings));
            }
            projection.check_trial_balance().expect("zero after every event");
        }
        projection.check().expect("every balance is the sum of its postings");
        // The naive model: clearing holds what is not cancelled or refunded; fee income holds
        // the fee of what remains (exact without refunds, within a fen per refund with them).
        for channel in [Channel::Wechat, Channel::UnionpayCard] {
            let mine = payments.iter().filter(|p| p.1 == channel && !p.4);
            let clearing: i64 = mine.clone().map(|p| p.2 - p.3).sum();
            let got = projection.balances().balance(&Account::clearing(channel), Currency::Cny, u64::MAX);
            prop_assert_eq!(got, Decimal::new(clearing, 2), "clearing {}", channel);
            let fee_now = -projection.balances().balance(&Account::mdr(channel), Currency::Cny, u64::MAX);
            let (mut low, mut high) = (Decimal::ZERO, Decimal::ZERO);
            for p in mine {
                let fee = Decimal::new(naive_fee(channel, p.2), 2);
                let share = fee * Decimal::new(p.2 - p.3, 0) / Decimal::new(p.2, 0);
                let slack = Decimal::new(p.5, 2);
                low += if p.3 == p.2 { Decimal::ZERO } else { share - slack };
                high += if p.3 == p.2 { Decimal::ZERO } else { share + slack };
            }
            prop_assert!(low <= fee_now && fee_now <= high, "fee income {} of {} outside [{}, {}]", fee_now, channel, low, high);
        }
        // As of every position: equal to a replay of the events before it.
        for k in 0..=events.len() {
            let replayed = book(&events[..k]);
            prop_assert_eq!(projection.balances().trial_balance(k as u64), replayed.balances().trial_balance(u64::MAX), "as of {}", k);
        }
        // As of business times: the entries of the events that happened by then.
        let mut times: Vec<i64> = entries.iter().map(|(t, _)| *t).collect();
        times.push(at().timestamp_micros() - 1);
        for t in times {
            let mut want: BTreeMap<String, Decimal> = BTreeMap::new();
            for (_, postings) in entries.iter().filter(|(at, _)| *at <= t) {
                for (account, amount) in postings {
                    *want.entry(account.clone()).or_default() += *amount;
                }
            }
            let got: BTreeMap<String, Decimal> = projection
                .trial_balance_at_time(t)
                .into_iter()
                .map(|(a, _, b)| (a.path().to_owned(), b))
                .collect();
            prop_assert_eq!(got, want, "as of time {}", t);
        }
        // Unwind: refund what remains of everything not cancelled.
        let mut position = events.len() as u64;
        for p in &payments {
            if p.4 || p.3 == p.2 { continue }
            let n = format!("{}-RX", p.0);
            let e = Event::PaymentRefunded(adjustment(&n, &p.0, "M1", p.1, &Decimal::new(p.2 - p.3, 2).to_string()));
            projection.apply(position, &e).expect("final refund");
            position += 1;
        }
        for (account, _, b) in projection.balances().trial_balance(u64::MAX) {
            prop_assert_eq!(b, Decimal::ZERO, "{} after unwinding", account);
        }
    }
}

/// Thousands of payments, recorded out of time order (terminal clocks seconds apart, an
/// offline terminal's sales arriving hours late, in the middle and at the end): the balances
/// as of any business time equal the sum of the entries of the events that happened by then.
#[test]
fn as_of_time_holds_across_blocks_and_late_batches() {
    let p = as_of_time_case(5000, |i| if (2000..2300).contains(&i) || i >= 4900 { i / 10 - 240 } else { i / 10 });
    assert!(p.balances().history(&Account::clearing(Channel::Wechat), Currency::Cny).is_some_and(|h| h.keeps_late()));
}

/// Times in no order at all (a feed sorted by merchant, say): nearly everything is late, the
/// accounts give up keeping late postings aside (memory stays bounded) and the answers stay
/// exact through the whole window.
#[test]
fn as_of_time_holds_when_nothing_is_in_order() {
    let p = as_of_time_case(15_000, |i| (i * 7919) % 600 - 100);
    let clearing = p.balances().history(&Account::clearing(Channel::Wechat), Currency::Cny).expect("used");
    assert!(!clearing.keeps_late(), "given up");
}

/// Books `n` payments (and a refund for one in seven) dated `minutes(i)` after the helpers'
/// time, plus a few seconds of clock skew, and checks the balances as of many times against
/// the sum of the entries of the events that happened by then.
fn as_of_time_case(n: i64, minutes: impl Fn(i64) -> i64) -> Projection {
    let mut events = vec![contract("M1"), contract("M2")];
    let channels = [Channel::Wechat, Channel::UnionpayCard, Channel::Alipay];
    let mut fees = BTreeMap::new();
    fees.insert(Channel::Alipay, FeeTerms { rate: d("0.006"), min: None, cap: None });
    if let Event::ContractSigned(c) = &mut events[1] {
        c.fees.extend(fees);
    }
    if let Event::ContractSigned(c) = &mut events[0] {
        c.fees.insert(Channel::Alipay, FeeTerms { rate: d("0.006"), min: None, cap: None });
    }
    for i in 0..n {
        let merchant = if i % 3 == 0 { "M2" } else { "M1" };
        let minutes = minutes(i);
        let e = sale(&format!("P{i}"), merchant, channels[(i % 3) as usize], &Decimal::new(100 + i * 7, 2).to_string());
        let mut e = timed(e, minutes);
        if let Event::PaymentCaptured(s) = &mut e {
            s.at += chrono::Duration::seconds(i % 13);
        }
        events.push(e);
        if i % 7 == 0 {
            let refund = adjustment(&format!("P{i}-R"), &format!("P{i}"), merchant, channels[(i % 3) as usize], "0.50");
            events.push(timed(Event::PaymentRefunded(refund), minutes + 1));
        }
    }
    let mut p = Projection::default();
    let mut entries: Vec<(i64, Vec<(String, Decimal)>)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(entry) = p.apply(i as u64, e).expect("apply") {
            let postings = entry.postings().iter().map(|x| (x.account.path().to_owned(), x.amount)).collect();
            entries.push((e.occurred_at().timestamp_micros(), postings));
        }
    }
    assert!((0..events.len() as u64).filter(|&i| p.timeline().is_late(i)).count() > 300, "late events");
    let base = at().timestamp_micros();
    for m in (-250..1520).step_by(11) {
        let t = base + m * 60_000_000 + 30_000_000;
        let mut want: BTreeMap<String, Decimal> = BTreeMap::new();
        for (_, postings) in entries.iter().filter(|(at, _)| *at <= t) {
            for (account, amount) in postings {
                *want.entry(account.clone()).or_default() += *amount;
            }
        }
        let got: BTreeMap<String, Decimal> =
            p.trial_balance_at_time(t).into_iter().map(|(a, _, b)| (a.path().to_owned(), b)).collect();
        assert_eq!(got, want, "as of {m} minutes");
        let payable = Account::payable("M2");
        assert_eq!(
            p.balance_at_time(&payable, Currency::Cny, t),
            want.get(payable.path()).copied().unwrap_or_default()
        );
    }
    p
}

//! The matching engine: a channel's statement for a date against our items, every statement
//! line and every item classified into exactly one outcome. Pure and deterministic: the same
//! inputs give the same classification, in the same order (statement lines in file order,
//! then our unmatched items by date and `txn_id`).
//!
//! Keys: a payment line is matched to our payment by the channel's transaction id, then by our
//! order number (`txn_id`); a refund line to our refund by the refund's `txn_id`. Outcomes, the
//! first that applies winning:
//!
//! | outcome | when |
//! |---|---|
//! | `duplicate_in_statement` | a second line with the same key (the first is classified normally) |
//! | `status_mismatch` | the line is a payment we voided or reversed |
//! | `missing_in_ledger` | no item of ours for the line (长款) |
//! | `amount_mismatch` | amounts differ (no tolerance) |
//! | `fee_mismatch` | the line's fee differs from amount × the channel's rate by more than the tolerance |
//! | `matched` | everything agrees |
//! | `carried_forward` | an item of ours the statement does not hold yet, from the last [`CUTOFF_MINUTES`] of its business day (it may be settled in the next day's file), for up to the channel's `carry_forward_days` |
//! | `missing_in_statement` | an item of ours the statement does not hold (短款), or a carried item still missing after `carry_forward_days` |
//!
//! Voided and reversed sales are not items (they never reach a statement); cash is never an
//! item.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Timelike};
use ingest::event::Channel;
use ingest::statement::{LineKind, StatementChannel, StatementLine};
use rust_decimal::Decimal;
use serde::Serialize;

/// Minutes before midnight from which an unsettled item is carried forward rather than
/// missing: a sale in the last minutes of a day may be settled in the next day's file.
pub const CUTOFF_MINUTES: u32 = 10;

/// The statement that settles payments of a ledger channel (none for cash).
pub fn statement_of(channel: Channel) -> Option<StatementChannel> {
    match channel {
        Channel::Wechat => Some(StatementChannel::Wechat),
        Channel::Alipay => Some(StatementChannel::Alipay),
        Channel::UnionpayCard | Channel::UnionpayQr => Some(StatementChannel::Unionpay),
        Channel::Cash => None,
    }
}

/// One of our payments or refunds, as the reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Payment or refund.
    pub kind: LineKind,
    /// The sale's or the refund's `txn_id`.
    pub txn_id: String,
    /// The channel's id of the payment (a refund carries its sale's).
    pub channel_txn_id: Option<String>,
    /// The ledger channel.
    pub channel: Channel,
    /// Amount, positive.
    pub amount: Decimal,
    /// When it happened.
    pub at: DateTime<FixedOffset>,
    /// A sale that was voided or reversed: not to be settled.
    pub cancelled: bool,
}

impl Item {
    /// Its business date (in its own offset).
    pub fn date(&self) -> NaiveDate {
        self.at.date_naive()
    }

    /// Whether it falls in the last [`CUTOFF_MINUTES`] of its business day.
    pub fn near_cutoff(&self) -> bool {
        let t = self.at.time();
        t.hour() * 60 + t.minute() >= 24 * 60 - CUTOFF_MINUTES
    }
}

/// A channel's terms for the date reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Expected fee = amount × rate.
    pub fee_rate: Decimal,
    /// Largest accepted difference between a line's fee and the expected one.
    pub fee_tolerance: Decimal,
    /// Days an item near the cut-off may wait for a later file.
    pub carry_forward_days: u32,
}

/// An outcome of design.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything agrees.
    Matched,
    /// Amounts differ.
    AmountMismatch,
    /// Fee beyond the tolerance.
    FeeMismatch,
    /// Settled by the channel, voided or reversed here.
    StatusMismatch,
    /// Ours only.
    MissingInStatement,
    /// Theirs only.
    MissingInLedger,
    /// A repeated statement line.
    DuplicateInStatement,
    /// Ours only, near the cut-off: may come in a later file.
    CarriedForward,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Matched,
        Outcome::AmountMismatch,
        Outcome::FeeMismatch,
        Outcome::StatusMismatch,
        Outcome::MissingInStatement,
        Outcome::MissingInLedger,
        Outcome::DuplicateInStatement,
        Outcome::CarriedForward,
    ];

    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::AmountMismatch => "amount_mismatch",
            Outcome::FeeMismatch => "fee_mismatch",
            Outcome::StatusMismatch => "status_mismatch",
            Outcome::MissingInStatement => "missing_in_statement",
            Outcome::MissingInLedger => "missing_in_ledger",
            Outcome::DuplicateInStatement => "duplicate_in_statement",
            Outcome::CarriedForward => "carried_forward",
        }
    }

    /// Whether it is a break (something to resolve).
    pub const fn is_break(self) -> bool {
        !matches!(self, Outcome::Matched | Outcome::CarriedForward)
    }
}

/// One classified line or item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classified {
    /// The outcome.
    pub outcome: Outcome,
    /// Line or item kind.
    pub kind: LineKind,
    /// Our order number (the line's, when there is no item).
    pub txn_id: String,
    /// The channel's id.
    pub channel_txn_id: Option<String>,
    /// The statement line, if one is involved.
    pub line: Option<u64>,
    /// Our amount.
    pub our_amount: Option<Decimal>,
    /// The fee we expect (amount × rate).
    pub expected_fee: Option<Decimal>,
    /// The statement's amount.
    pub their_amount: Option<Decimal>,
    /// The statement's fee.
    pub their_fee: Option<Decimal>,
    /// Business date of our item (for carried and missing items, their age).
    pub item_date: Option<NaiveDate>,
}

/// What a reconciliation of one statement and date found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Every line and item, statement lines first (file order), then our unmatched items.
    pub items: Vec<Classified>,
}

impl Classification {
    /// How many got each outcome.
    pub fn counts(&self) -> Vec<(Outcome, u64)> {
        Outcome::ALL.iter().map(|o| (*o, self.items.iter().filter(|c| c.outcome == *o).count() as u64)).collect()
    }
}

/// Classifies the statement `lines` of `date` (a file already read) against our `items`.
///
/// `items` are ours for the statement's channels, of `date` and of the days before it within
/// the longest `carry_forward_days`; `earlier` holds the statement lines of those earlier
/// days, to tell which of their items near the cut-off are still unsettled. `terms` gives each
/// ledger channel's terms for the date.
pub fn classify(
    date: NaiveDate,
    lines: &[StatementLine],
    earlier: &[&[StatementLine]],
    items: &[Item],
    terms: impl Fn(Channel) -> Terms,
) -> Classification {
    // Keys of what earlier files settled.
    let mut settled_before: std::collections::HashSet<(LineKind, &str)> = std::collections::HashSet::new();
    for l in earlier.iter().flat_map(|ls| ls.iter()) {
        settled_before.insert((l.kind, key_of_line(l)));
        settled_before.insert((l.kind, l.txn_id.as_str()));
    }
    // The items this date's file may settle: today's, and earlier ones carried to it.
    let mut candidates: Vec<&Item> = items
        .iter()
        .filter(|i| {
            let d = i.date();
            if d == date {
                return true;
            }
            let days = (date - d).num_days();
            days > 0
                && days <= i64::from(terms(i.channel).carry_forward_days)
                && i.near_cutoff()
                && !i.cancelled
                && !settled_before.contains(&(i.kind, item_key(i)))
                && !settled_before.contains(&(i.kind, i.txn_id.as_str()))
        })
        .collect();
    candidates.sort_by(|a, b| (a.date(), &a.txn_id).cmp(&(b.date(), &b.txn_id)));
    let mut by_key: HashMap<(LineKind, &str), usize> = HashMap::with_capacity(candidates.len() * 2);
    for (i, item) in candidates.iter().enumerate() {
        by_key.entry((item.kind, item_key(item))).or_insert(i);
        by_key.entry((item.kind, item.txn_id.as_str())).or_insert(i);
    }
    let mut taken = vec![false; candidates.len()];
    let mut seen: std::collections::HashSet<(LineKind, &str)> = std::collections::HashSet::with_capacity(lines.len());
    let mut out = Vec::with_capacity(lines.len() + candidates.len() / 8);
    for line in lines {
        let key = key_of_line(line);
        let mut c = Classified {
            outcome: Outcome::Matched,
            kind: line.kind,
            txn_id: line.txn_id.clone(),
            channel_txn_id: Some(line.channel_txn_id.clone()),
            line: Some(line.line),
            our_amount: None,
            expected_fee: None,
            their_amount: Some(line.amount),
            their_fee: Some(line.fee),
            item_date: None,
        };
        if !seen.insert((line.kind, key)) {
            c.outcome = Outcome::DuplicateInStatement;
            out.push(c);
            continue;
        }
        let found = by_key.get(&(line.kind, key)).or_else(|| by_key.get(&(line.kind, line.txn_id.as_str()))).copied();
        let Some(i) = found.filter(|i| !taken[*i]) else {
            c.outcome = Outcome::MissingInLedger;
            out.push(c);
            continue;
        };
        taken[i] = true;
        let item = candidates[i];
        let t = terms(item.channel);
        let expected = item.amount * t.fee_rate;
        c.txn_id = item.txn_id.clone();
        c.our_amount = Some(item.amount);
        c.expected_fee = Some(expected);
        c.item_date = Some(item.date());
        c.outcome = if item.cancelled {
            Outcome::StatusMismatch
        } else if line.amount != item.amount {
            Outcome::AmountMismatch
        } else if (line.fee - expected).abs() > t.fee_tolerance {
            Outcome::FeeMismatch
        } else {
            Outcome::Matched
        };
        out.push(c);
    }
    for (i, item) in candidates.iter().enumerate() {
        if taken[i] || item.cancelled {
            continue;
        }
        let age = (date - item.date()).num_days();
        let carry = i64::from(terms(item.channel).carry_forward_days);
        let outcome =
            if item.near_cutoff() && age < carry { Outcome::CarriedForward } else { Outcome::MissingInStatement };
        out.push(Classified {
            outcome,
            kind: item.kind,
            txn_id: item.txn_id.clone(),
            channel_txn_id: item.channel_txn_id.clone(),
            line: None,
            our_amount: Some(item.amount),
            expected_fee: Some(item.amount * terms(item.channel).fee_rate),
            their_amount: None,
            their_fee: None,
            item_date: Some(item.date()),
        });
    }
    Classification { items: out }
}

/// The key a statement line is matched by: a payment's channel id, a refund's `txn_id`.
fn key_of_line(line: &StatementLine) -> &str {
    match line.kind {
        LineKind::Payment => &line.channel_txn_id,
        LineKind::Refund => &line.txn_id,
    }
}

/// The key an item is matched by (the same as its line's).
fn item_key(item: &Item) -> &str {
    match item.kind {
        LineKind::Payment => item.channel_txn_id.as_deref().unwrap_or(&item.txn_id),
        LineKind::Refund => &item.txn_id,
    }
}

/// Our items for one statement channel, business dates `from..=to`, read from the log; and
/// each ledger channel's terms in force on `to` (the latest `ChannelTermsSet` effective by
/// then).
pub async fn load_items<S: ingest::store::EventStore>(
    store: &S,
    statement: StatementChannel,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(Vec<Item>, HashMap<Channel, Terms>), crate::ReplayError> {
    use ingest::event::Event;
    let mut items: Vec<Item> = Vec::new();
    // Our payments of this statement by txn_id: the channel id a refund carries, and where a
    // void or reversal marks its sale.
    let mut payments: HashMap<String, (Option<String>, Option<usize>)> = HashMap::new();
    let mut terms: HashMap<Channel, (NaiveDate, Terms)> = HashMap::new();
    let mut position = 0;
    let head = store.head();
    while position < head {
        let batch = store.read_all(position, crate::REPLAY_BATCH_EVENTS).await?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            position = e.position + 1;
            let kind = e.data.event_type.as_str();
            if !matches!(
                kind,
                "PaymentCaptured" | "PaymentRefunded" | "PaymentVoided" | "PaymentReversed" | "ChannelTermsSet"
            ) {
                continue;
            }
            let event = Event::decode(kind, e.data.schema_version, &e.data.payload)
                .map_err(|source| crate::ReplayError::Decode { position: e.position, source })?;
            let in_range = |at: &DateTime<FixedOffset>| (from..=to).contains(&at.date_naive());
            match event {
                Event::ChannelTermsSet(t) if t.effective_from <= to => {
                    let new = Terms {
                        fee_rate: t.fee_rate,
                        fee_tolerance: t.fee_tolerance,
                        carry_forward_days: t.carry_forward_days,
                    };
                    let entry = terms.entry(t.channel).or_insert((t.effective_from, new));
                    if t.effective_from >= entry.0 {
                        *entry = (t.effective_from, new);
                    }
                }
                Event::PaymentCaptured(s) if statement_of(s.channel) == Some(statement) => {
                    let index = in_range(&s.at).then(|| {
                        items.push(Item {
                            kind: LineKind::Payment,
                            txn_id: s.txn_id.clone(),
                            channel_txn_id: s.channel_txn_id.clone(),
                            channel: s.channel,
                            amount: s.amount,
                            at: s.at,
                            cancelled: false,
                        });
                        items.len() - 1
                    });
                    payments.insert(s.txn_id, (s.channel_txn_id, index));
                }
                Event::PaymentRefunded(r) if statement_of(r.channel) == Some(statement) && in_range(&r.at) => {
                    let channel_txn_id = payments.get(&r.original_txn_id).and_then(|(c, _)| c.clone());
                    items.push(Item {
                        kind: LineKind::Refund,
                        txn_id: r.txn_id,
                        channel_txn_id,
                        channel: r.channel,
                        amount: r.amount,
                        at: r.at,
                        cancelled: false,
                    });
                }
                Event::PaymentVoided(a) | Event::PaymentReversed(a) => {
                    if let Some((_, Some(i))) = payments.get(&a.original_txn_id) {
                        items[*i].cancelled = true;
                    }
                }
                _ => {}
            }
        }
    }
    Ok((items, terms.into_iter().map(|(c, (_, t))| (c, t)).collect()))
}

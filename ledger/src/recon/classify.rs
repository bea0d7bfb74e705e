//! The matching engine: a channel's statement for a date against our items, every statement
//! line and every item classified into exactly one outcome. Pure and deterministic (no I/O, no
//! clock): the same inputs give the same classification, in the same order (statement lines in
//! file order, then our unmatched items by date and `txn_id`).
//!
//! Keys: a payment line is matched to our payment by the channel's transaction id; a refund
//! line to our refund by the refund's `txn_id`. A line whose key finds nothing is then tried
//! by our order number among the items no line took by its key. Outcomes, the
//! first that applies winning:
//!
//! | outcome | when |
//! |---|---|
//! | `duplicate_in_statement` | a second line with the same key (the first is classified normally) |
//! | `status_mismatch` | the line is a payment we voided or reversed |
//! | `missing_in_ledger` | no item of ours for the line in the line's currency (长款) |
//! | `amount_mismatch` | amounts differ (no tolerance) |
//! | `fee_mismatch` | the line's fee has the wrong sign for its kind of line (see [`ingest::statement::StatementLine::fee`]), or differs from amount × the channel's rate by more than the tolerance |
//! | `matched` | everything agrees |
//! | `carried_forward` | an item of ours the statement does not hold yet, from the last [`CUTOFF_MINUTES`] of its business day (it may be settled in the next day's file), for up to the channel's `carry_forward_days` |
//! | `missing_in_statement` | an item of ours the statement does not hold (短款), or a carried item still missing after `carry_forward_days` |
//!
//! Voided and reversed sales are not items (they never reach a statement); cash is never an
//! item. A line and an item match only in the same currency (a line in another currency than
//! the item its key finds is the channel's money for something we do not hold in that
//! currency; the item stays ours only). Every break carries its currency: its item's, or its
//! line's when it has no item.

use chrono::{DateTime, FixedOffset, NaiveDate, Timelike};
use ingest::event::{Channel, Id};
use ingest::money::Currency;
use ingest::statement::{LineKind, StatementChannel, StatementLine};
use rust_decimal::Decimal;

/// Minutes before midnight from which an unsettled item is carried forward rather than
/// missing: a sale in the last minutes of a day may be settled in the next day's file.
pub const CUTOFF_MINUTES: u32 = 10;

/// Whether a time falls in the last [`CUTOFF_MINUTES`] of its day.
pub(super) fn near_cutoff(at: &DateTime<FixedOffset>) -> bool {
    let t = at.time();
    t.hour() * 60 + t.minute() >= 24 * 60 - CUTOFF_MINUTES
}

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
    pub txn_id: Id,
    /// The channel's id of the payment (a refund carries its sale's).
    pub channel_txn_id: Option<Id>,
    /// The ledger channel.
    pub channel: Channel,
    /// Amount, positive.
    pub amount: Decimal,
    /// The amount's currency.
    pub currency: Currency,
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
        near_cutoff(&self.at)
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

/// An outcome of design.md §5 (the event catalogue's [`ingest::event::ReconOutcome`]).
pub use ingest::event::ReconOutcome as Outcome;

/// One classified line or item that did not match: the event catalogue's
/// [`ingest::event::ReconBreak`], as recorded.
pub type Classified = ingest::event::ReconBreak;

/// What matched lines of one ledger channel add up to (what the channel settled for us).
pub type MatchedSums = ingest::event::ReconMatched;

/// What a reconciliation of one statement and date found: every line and item has one
/// outcome; the matched ones are counted and summed per ledger channel, every other one is
/// listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Every line and item not matched: statement lines first (file order), then our
    /// unmatched items by date and `txn_id`.
    pub items: Vec<Classified>,
    /// Matched lines.
    pub matched: u64,
    /// What the matched lines in CNY add up to, per ledger channel.
    pub matched_sums: std::collections::BTreeMap<Channel, MatchedSums>,
    /// What the matched lines in other currencies add up to, per currency and ledger channel.
    pub matched_by_currency: std::collections::BTreeMap<Currency, std::collections::BTreeMap<Channel, MatchedSums>>,
}

impl Classification {
    /// How many got each outcome.
    pub fn counts(&self) -> Vec<(Outcome, u64)> {
        Outcome::ALL
            .iter()
            .map(|o| {
                let n = if *o == Outcome::Matched {
                    self.matched
                } else {
                    self.items.iter().filter(|c| c.outcome == *o).count() as u64
                };
                (*o, n)
            })
            .collect()
    }
}

type KeyMap<'a, V> = hashbrown::HashMap<(LineKind, &'a str), V>;

/// A line's first verdict: its outcome and the candidate it found (`None`: not decided yet).
type Found = Option<(Outcome, Option<usize>)>;

/// Classifies the statement `lines` of `date` (a file already read) against our `items`.
///
/// `items` are ours for the statement's channels, of `date` and of the days before it within
/// the longest `carry_forward_days`; `earlier` holds the statement lines of those earlier
/// days, to tell which of their items near the cut-off are still unsettled. `terms` gives each
/// ledger channel's terms for the date. Items are taken in the order given (the log's).
pub fn classify(
    date: NaiveDate,
    lines: &[StatementLine],
    earlier: &[&[StatementLine]],
    items: &[Item],
    terms: impl Fn(Channel) -> Terms,
) -> Classification {
    // Keys of what earlier files settled.
    let mut settled_before: hashbrown::HashSet<(LineKind, &str)> = hashbrown::HashSet::new();
    for l in earlier.iter().flat_map(|ls| ls.iter()) {
        settled_before.insert((l.kind, key_of_line(l)));
        settled_before.insert((l.kind, l.txn_id.as_str()));
    }
    // The items this date's file may settle: today's, and earlier ones carried to it (each
    // with its business date, worked out once).
    let candidates: Vec<(&Item, NaiveDate)> = items
        .iter()
        .map(|i| (i, i.date()))
        .filter(|(i, d)| {
            if *d == date {
                return true;
            }
            let days = (date - *d).num_days();
            days > 0
                && days <= i64::from(terms(i.channel).carry_forward_days)
                && i.near_cutoff()
                && !settled_before.contains(&(i.kind, item_key(i)))
                && !settled_before.contains(&(i.kind, i.txn_id.as_str()))
        })
        .collect();
    // Candidates by key: a table of their indexes (4 bytes a slot), hashed by the key.
    let hasher = hashbrown::DefaultHashBuilder::default();
    let hash = |kind: LineKind, key: &str| std::hash::BuildHasher::hash_one(&hasher, (kind, key));
    // Hashes are worked out on every core; the table is filled on one.
    let item_hashes = par_map(&candidates, |(item, _)| hash(item.kind, item_key(item)));
    let mut by_key: hashbrown::HashTable<u32> = hashbrown::HashTable::with_capacity(candidates.len());
    for (i, (item, _)) in candidates.iter().enumerate() {
        let (kind, key) = (item.kind, item_key(item));
        if let hashbrown::hash_table::Entry::Vacant(v) = by_key.entry(
            item_hashes[i],
            |&j| candidates[j as usize].0.kind == kind && item_key(candidates[j as usize].0) == key,
            |&j| item_hashes[j as usize],
        ) {
            v.insert(i as u32);
        }
    }
    // Every line's item by its key (in the line's currency), looked up on every core.
    let looked_up: Vec<Option<u32>> = par_map(lines, |line| {
        let (kind, key) = (line.kind, key_of_line(line));
        by_key
            .find(hash(kind, key), |&j| {
                candidates[j as usize].0.kind == kind && item_key(candidates[j as usize].0) == key
            })
            .copied()
            .filter(|&j| candidates[j as usize].0.currency == line.currency)
    });
    // The terms of each ledger channel among the candidates, looked up once (every
    // candidate's channel is among them).
    let mut known: Vec<(Channel, Terms)> = Vec::new();
    for (item, _) in &candidates {
        if !known.iter().any(|(c, _)| *c == item.channel) {
            known.push((item.channel, terms(item.channel)));
        }
    }
    let terms_of = |c: Channel| known.iter().find(|(x, _)| *x == c).map(|(_, t)| *t);
    let mut taken = vec![false; candidates.len()];
    // Keys of lines that matched no item by their key: repeats among them are duplicates too.
    let mut unmatched_keys: hashbrown::HashSet<(LineKind, &str)> = hashbrown::HashSet::new();
    // Lines whose key found no item: tried by our order number once every key is matched.
    let mut pending: Vec<usize> = Vec::new();
    let mut outcomes: Vec<Found> = vec![None; lines.len()];
    for (n, line) in lines.iter().enumerate() {
        let key = key_of_line(line);
        outcomes[n] = match looked_up[n].map(|i| i as usize) {
            Some(i) if taken[i] => Some((Outcome::DuplicateInStatement, None)),
            Some(i) => {
                taken[i] = true;
                Some((Outcome::Matched, Some(i)))
            }
            None if !unmatched_keys.insert((line.kind, key)) => Some((Outcome::DuplicateInStatement, None)),
            None => {
                pending.push(n);
                None
            }
        };
    }
    if !pending.is_empty() {
        // Our order number, among the items no line took by its key.
        let mut by_txn: KeyMap<'_, usize> = KeyMap::new();
        for (i, (item, _)) in candidates.iter().enumerate() {
            if !taken[i] {
                by_txn.entry((item.kind, item.txn_id.as_str())).or_insert(i);
            }
        }
        for n in pending {
            let line = &lines[n];
            outcomes[n] = Some(match by_txn.get(&(line.kind, line.txn_id.as_str())) {
                Some(&i) if !taken[i] && candidates[i].0.currency == line.currency => {
                    taken[i] = true;
                    (Outcome::Matched, Some(i))
                }
                _ => (Outcome::MissingInLedger, None),
            });
        }
    }
    // The checks of every line that found its item (amount, fee), on every core.
    let paired: Vec<(&StatementLine, Found)> = lines.iter().zip(outcomes).collect();
    let checked = par_map(&paired, |(line, outcome)| {
        let (outcome, found) = outcome.unwrap_or((Outcome::MissingInLedger, None));
        let Some(i) = found else { return (outcome, None, None) };
        let item = candidates[i].0;
        let Some(t) = terms_of(item.channel) else { return (Outcome::MissingInLedger, None, None) };
        let expected = item.amount * t.fee_rate;
        let outcome = if item.cancelled {
            Outcome::StatusMismatch
        } else if line.amount != item.amount {
            Outcome::AmountMismatch
        } else if line.fee < Decimal::ZERO || (line.fee - expected).abs() > t.fee_tolerance {
            // A fee of the wrong sign is wrong whatever its size: the money differs by twice it.
            Outcome::FeeMismatch
        } else {
            Outcome::Matched
        };
        (outcome, Some(i), Some(expected))
    });
    let mut out = Vec::new();
    let mut matched = 0;
    let mut matched_sums: std::collections::BTreeMap<Channel, MatchedSums> = Default::default();
    let mut matched_by_currency: std::collections::BTreeMap<
        Currency,
        std::collections::BTreeMap<Channel, MatchedSums>,
    > = Default::default();
    for ((line, _), (outcome, found, expected)) in paired.iter().zip(checked) {
        let detail = |outcome: Outcome, item: Option<(&Item, NaiveDate)>, expected: Option<Decimal>| Classified {
            outcome,
            kind: line.kind,
            txn_id: item.map_or_else(|| line.txn_id.clone(), |(i, _)| i.txn_id.to_string()),
            channel_txn_id: Some(line.channel_txn_id.clone()),
            ledger_channel: item.map(|(i, _)| i.channel),
            line: Some(line.line),
            our_amount: item.map(|(i, _)| i.amount),
            expected_fee: expected,
            their_amount: Some(line.amount),
            their_fee: Some(line.fee),
            item_date: item.map(|(_, d)| d),
            currency: item.map_or(line.currency, |(i, _)| i.currency),
        };
        let Some(i) = found else {
            out.push(detail(outcome, None, None));
            continue;
        };
        let (item, item_date) = candidates[i];
        if outcome == Outcome::Matched {
            matched += 1;
            let sums = match item.currency {
                Currency::Cny => matched_sums.entry(item.channel).or_default(),
                other => matched_by_currency.entry(other).or_default().entry(item.channel).or_default(),
            };
            match line.kind {
                LineKind::Payment => {
                    sums.payments += 1;
                    sums.payment_amount += line.amount;
                    sums.fees += line.fee;
                }
                LineKind::Refund => {
                    sums.refunds += 1;
                    sums.refund_amount += line.amount;
                    sums.fees -= line.fee;
                }
            }
        } else {
            out.push(detail(outcome, Some((item, item_date)), expected));
        }
    }
    let mut unmatched: Vec<(&Item, NaiveDate)> = candidates
        .iter()
        .zip(&taken)
        .filter(|((item, _), taken)| !**taken && !item.cancelled)
        .map(|(c, _)| *c)
        .collect();
    unmatched.sort_by(|a, b| (a.1, &a.0.txn_id).cmp(&(b.1, &b.0.txn_id)));
    for (item, item_date) in unmatched {
        let age = (date - item_date).num_days();
        let Some(t) = terms_of(item.channel) else { continue };
        let carry = i64::from(t.carry_forward_days);
        let outcome =
            if item.near_cutoff() && age < carry { Outcome::CarriedForward } else { Outcome::MissingInStatement };
        out.push(Classified {
            outcome,
            kind: item.kind,
            txn_id: item.txn_id.to_string(),
            channel_txn_id: item.channel_txn_id.as_ref().map(ToString::to_string),
            ledger_channel: Some(item.channel),
            line: None,
            our_amount: Some(item.amount),
            expected_fee: Some(item.amount * t.fee_rate),
            their_amount: None,
            their_fee: None,
            item_date: Some(item_date),
            currency: item.currency,
        });
    }
    Classification { items: out, matched, matched_sums, matched_by_currency }
}

/// `f` over `items`, the work split between the machine's cores; results in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads < 2 || items.len() < 50_000 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> =
            items.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        // A worker can only fail by panicking, and then this panics too.
        parts.into_iter().flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
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

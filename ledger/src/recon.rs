//! The matching engine: a channel's statement for a date against our items, every statement
//! line and every item classified into exactly one outcome. Pure and deterministic: the same
//! inputs give the same classification, in the same order (statement lines in file order,
//! then our unmatched items by date and `txn_id`).
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
use ingest::admin::CARRY_FORWARD_DAYS_MAX;
use ingest::event::Channel;
use ingest::statement::{LineKind, StatementChannel, StatementLine};
use rust_decimal::Decimal;

/// Minutes before midnight from which an unsettled item is carried forward rather than
/// missing: a sale in the last minutes of a day may be settled in the next day's file.
pub const CUTOFF_MINUTES: u32 = 10;

/// Whether a time falls in the last [`CUTOFF_MINUTES`] of its day.
fn near_cutoff(at: &DateTime<FixedOffset>) -> bool {
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
    /// What the matched lines add up to, per ledger channel.
    pub matched_sums: std::collections::BTreeMap<Channel, MatchedSums>,
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
    // Every line's item by its key, looked up on every core.
    let looked_up: Vec<Option<u32>> = par_map(lines, |line| {
        let (kind, key) = (line.kind, key_of_line(line));
        by_key
            .find(hash(kind, key), |&j| {
                candidates[j as usize].0.kind == kind && item_key(candidates[j as usize].0) == key
            })
            .copied()
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
                Some(&i) if !taken[i] => {
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
        } else if (line.fee - expected).abs() > t.fee_tolerance {
            Outcome::FeeMismatch
        } else {
            Outcome::Matched
        };
        (outcome, Some(i), Some(expected))
    });
    let mut out = Vec::new();
    let mut matched = 0;
    let mut matched_sums: std::collections::BTreeMap<Channel, MatchedSums> = Default::default();
    for ((line, _), (outcome, found, expected)) in paired.iter().zip(checked) {
        let detail = |outcome: Outcome, item: Option<(&Item, NaiveDate)>, expected: Option<Decimal>| Classified {
            outcome,
            kind: line.kind,
            txn_id: item.map_or_else(|| line.txn_id.clone(), |(i, _)| i.txn_id.clone()),
            channel_txn_id: Some(line.channel_txn_id.clone()),
            ledger_channel: item.map(|(i, _)| i.channel),
            line: Some(line.line),
            our_amount: item.map(|(i, _)| i.amount),
            expected_fee: expected,
            their_amount: Some(line.amount),
            their_fee: Some(line.fee),
            item_date: item.map(|(_, d)| d),
        };
        let Some(i) = found else {
            out.push(detail(outcome, None, None));
            continue;
        };
        let (item, item_date) = candidates[i];
        if outcome == Outcome::Matched {
            matched += 1;
            let sums = matched_sums.entry(item.channel).or_default();
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
            txn_id: item.txn_id.clone(),
            channel_txn_id: item.channel_txn_id.clone(),
            ledger_channel: Some(item.channel),
            line: None,
            our_amount: Some(item.amount),
            expected_fee: Some(item.amount * t.fee_rate),
            their_amount: None,
            their_fee: None,
            item_date: Some(item_date),
        });
    }
    Classification { items: out, matched, matched_sums }
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

/// Our items a statement of `date` may settle, read from the log in one pass: every payment
/// and refund of its channels on `date`, and those of the [`CARRY_FORWARD_DAYS_MAX`] days
/// before that fall in the cut-off window (only those can be carried to it); and each ledger
/// channel's terms in force on `date` (the latest `ChannelTermsSet` effective by then).
pub async fn load_items<S: ingest::store::EventStore>(
    store: &S,
    statement: StatementChannel,
    date: NaiveDate,
) -> Result<(Vec<Item>, HashMap<Channel, Terms>), crate::ReplayError> {
    let to = date;
    let from = date - chrono::Duration::days(i64::from(CARRY_FORWARD_DAYS_MAX));
    use ingest::event::Event;
    let mut items: Vec<Item> = Vec::new();
    // Our payments of this statement by txn_id: the channel id a refund carries, and where a
    // void or reversal marks its sale.
    let mut payments: HashMap<String, (Option<String>, Option<usize>)> = HashMap::new();
    let mut terms: HashMap<Channel, (NaiveDate, Terms)> = HashMap::new();
    let in_range = |at: &DateTime<FixedOffset>| {
        let day = at.date_naive();
        day == date || (from..date).contains(&day) && near_cutoff(at)
    };
    for_each_event(
        store,
        &["PaymentCaptured", "PaymentRefunded", "PaymentVoided", "PaymentReversed", "ChannelTermsSet"],
        |event| match event {
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
        },
    )
    .await?;
    Ok((items, terms.into_iter().map(|(c, (_, t))| (c, t)).collect()))
}

/// Lines a statement part holds (a part is one event: at most about 1 MiB of JSON).
pub const STATEMENT_PART_LINES: usize = 2_000;

/// Why a statement could not be imported or reconciled.
#[derive(Debug, thiserror::Error)]
pub enum ReconError {
    /// The file was refused.
    #[error(transparent)]
    Statement(#[from] ingest::statement::StatementError),
    /// The statement's date is not known.
    #[error("{0}: the statement date is not in the file or its name; give it with --date")]
    NoDate(String),
    /// The date given and the date the file states differ.
    #[error("{0} is the statement of {1}, not of {2}")]
    DateConflict(String, NaiveDate, NaiveDate),
    /// Nothing was imported for that channel and date.
    #[error("no {0} statement is imported for {1}; import it with `posledger statement import`")]
    NoStatement(StatementChannel, NaiveDate),
    /// A channel's terms are not known for the date.
    #[error("no channel_terms for {0} in force on {1}: import the channel's terms first")]
    NoTerms(Channel, NaiveDate),
    /// The stored statement is not whole.
    #[error("the stored {0} statement for {1} is damaged: {2}")]
    Damaged(StatementChannel, NaiveDate, String),
    /// Reading the log failed.
    #[error(transparent)]
    Replay(#[from] crate::ReplayError),
    /// Reading a stream failed.
    #[error(transparent)]
    Read(#[from] ingest::store::ReadError),
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Imported {
    /// The import's record (new, or the earlier one of the same file).
    pub statement: ingest::event::StatementImported,
    /// The same file was imported before: nothing was recorded.
    pub again: bool,
}

/// BLAKE3 of a file, hex.
pub fn file_digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// What recording a run or an import takes: its events, in order, for one stream. The last
/// event is the one that makes the others count (a run cut before it is ignored and completed
/// by running again); recorded atomically when the events fit one request
/// ([`ATOMIC_RUN_EVENTS_MAX`], [`ATOMIC_RUN_BYTES_MAX`]), with the stream's revision expected.
#[derive(Debug, Clone)]
pub struct ToRecord {
    /// The stream (`statement-<channel>-<date>`, `recon-<channel>-<date>`).
    pub stream: String,
    /// The events; empty when there is nothing to record.
    pub events: Vec<ingest::event::Event>,
}

/// Parses a statement file (all or nothing) and works out what importing it records: its
/// lines in parts and the [`ingest::event::StatementImported`] that makes them count. The same
/// file again (same digest) records nothing. `date` overrides the date the file or its name
/// gives. Reads the log; records nothing.
pub async fn prepare_import<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    name: &str,
    bytes: &[u8],
    date: Option<NaiveDate>,
) -> Result<(Imported, ToRecord), ReconError> {
    use ingest::event::{Event, StatementImported, StatementLines};
    let date_hint = date.or_else(|| ingest::statement::date_in_name(name));
    let statement = ingest::statement::parse_dated(channel, name, bytes, date_hint)?;
    if let (Some(given), Some(stated)) = (date, statement.stated_date)
        && given != stated
    {
        return Err(ReconError::DateConflict(name.to_owned(), stated, given));
    }
    let date = date.or(statement.stated_date).or(date_hint).ok_or_else(|| ReconError::NoDate(name.to_owned()))?;
    let digest = file_digest(bytes);
    let imports = statement_imports(store, channel, date).await?;
    let stream = ingest::streams::statement(channel, date);
    if let Some(last) = imports.last().filter(|i| i.digest == digest) {
        return Ok((Imported { statement: last.clone(), again: true }, ToRecord { stream, events: Vec::new() }));
    }
    // A file imported before (then replaced by another) has its parts stored already: only
    // a new record is needed to put it back in force.
    let stored_before = imports.iter().any(|i| i.digest == digest);
    let parts: Vec<Event> = statement
        .lines
        .chunks(STATEMENT_PART_LINES)
        .enumerate()
        .map(|(part, lines)| {
            Event::StatementLines(StatementLines {
                channel,
                date,
                digest: digest.clone(),
                part: part as u32,
                lines: lines.to_vec(),
            })
        })
        .collect();
    let imported = StatementImported {
        channel,
        date,
        file_name: name.to_owned(),
        digest: digest.clone(),
        import_no: imports.len() as u32 + 1,
        lines: statement.lines.len() as u64,
        parts: parts.len() as u32,
        totals: statement.totals,
    };
    let mut events = if stored_before { Vec::new() } else { parts };
    events.push(Event::StatementImported(imported.clone()));
    Ok((Imported { statement: imported, again: false }, ToRecord { stream, events }))
}

/// Most events (and payload bytes) a run or import is appended with atomically.
pub const ATOMIC_RUN_EVENTS_MAX: usize = 1_000;
/// See [`ATOMIC_RUN_EVENTS_MAX`].
pub const ATOMIC_RUN_BYTES_MAX: usize = 24 << 20;

/// Every import of a statement's channel and date, in order (the last is in force).
pub async fn statement_imports<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    date: NaiveDate,
) -> Result<Vec<ingest::event::StatementImported>, ReconError> {
    Ok(statement_events(store, channel, date)
        .await?
        .into_iter()
        .filter_map(|e| match e {
            ingest::event::Event::StatementImported(i) => Some(i),
            _ => None,
        })
        .collect())
}

/// Every event of a statement's stream, decoded, in order.
async fn statement_events<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    date: NaiveDate,
) -> Result<Vec<ingest::event::Event>, ReconError> {
    stream_events(store, &ingest::streams::statement(channel, date)).await
}

/// Every event of one stream, decoded.
async fn stream_events<S: ingest::store::EventStore>(
    store: &S,
    stream: &str,
) -> Result<Vec<ingest::event::Event>, ReconError> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = store.read_stream(stream, from, ingest::store::READ_EVENTS_MAX).await?;
        if batch.is_empty() {
            break;
        }
        from += batch.len() as u64;
        for e in batch {
            out.push(
                ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                    .map_err(|source| crate::ReplayError::Decode { position: e.position, source })?,
            );
        }
    }
    Ok(out)
}

/// The statement recorded for a channel and date — the last import, or the one with `digest`
/// — with its lines; `None` when there is none.
pub async fn stored_statement<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    date: NaiveDate,
    digest: Option<&str>,
) -> Result<Option<(ingest::event::StatementImported, Vec<StatementLine>)>, ReconError> {
    use ingest::event::Event;
    let mut parts: Vec<ingest::event::StatementLines> = Vec::new();
    let mut chosen = None;
    for event in statement_events(store, channel, date).await? {
        match event {
            Event::StatementLines(p) => parts.push(p),
            Event::StatementImported(s) if digest.is_none_or(|d| d == s.digest) => chosen = Some(s),
            _ => {}
        }
    }
    let Some(imported) = chosen else { return Ok(None) };
    let mut mine: Vec<_> = parts.into_iter().filter(|p| p.digest == imported.digest).collect();
    mine.sort_by_key(|p| p.part);
    mine.dedup_by_key(|p| p.part);
    let damaged = |why: String| ReconError::Damaged(channel, date, why);
    if mine.len() as u32 != imported.parts || mine.iter().enumerate().any(|(i, p)| p.part != i as u32) {
        return Err(damaged(format!("{} of {} parts", mine.len(), imported.parts)));
    }
    let lines: Vec<StatementLine> = mine.into_iter().flat_map(|p| p.lines).collect();
    if lines.len() as u64 != imported.lines {
        return Err(damaged(format!("{} of {} lines", lines.len(), imported.lines)));
    }
    Ok(Some((imported, lines)))
}

/// A reconciliation of one statement and date.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// The statement's record.
    pub statement: ingest::event::StatementImported,
    /// Every line and item classified.
    pub classification: Classification,
    /// Our items of the date (payments and refunds), for the report's totals.
    pub our_totals: ingest::statement::Totals,
    /// What the run records (the same record when it repeats an earlier one).
    pub record: ingest::event::ReconciliationCompleted,
    /// Its breaks (and carried items), as recorded in its parts.
    pub breaks: Vec<ingest::event::ReconBreak>,
}

/// Breaks recorded in one [`ingest::event::ReconciliationBreaks`] part (about 300 bytes each:
/// a part stays well under the store's payload limit).
pub const RECON_BREAKS_PART: usize = 1_000;

/// Reconciles the statement of `channel` for `date` against the log and works out what the run
/// records (a repeated run with the same inputs finds its events stored already). Reads the
/// log; records nothing.
pub async fn prepare_run<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    date: NaiveDate,
) -> Result<(Reconciled, ToRecord), ReconError> {
    use ingest::event::{Event, ReconciliationBreaks, ReconciliationCompleted};
    let (statement, lines) =
        stored_statement(store, channel, date, None).await?.ok_or(ReconError::NoStatement(channel, date))?;
    let (items, terms) = load_items(store, channel, date).await?;
    // The longest carry-forward of the statement's channels says how far back files count.
    let carry = terms.values().map(|t| t.carry_forward_days).max().unwrap_or(0);
    let first = date - chrono::Duration::days(i64::from(carry));
    let mut earlier = Vec::new();
    let mut day = first;
    while day < date {
        if let Some((_, l)) = stored_statement(store, channel, day, None).await? {
            earlier.push(l);
        }
        day = day.succ_opt().unwrap_or(date);
    }
    for item in &items {
        if !terms.contains_key(&item.channel) {
            return Err(ReconError::NoTerms(item.channel, date));
        }
    }
    let earlier_refs: Vec<&[StatementLine]> = earlier.iter().map(Vec::as_slice).collect();
    let classification = classify(date, &lines, &earlier_refs, &items, |c| {
        terms.get(&c).copied().unwrap_or(Terms {
            fee_rate: Decimal::ZERO,
            fee_tolerance: Decimal::ZERO,
            carry_forward_days: 0,
        })
    });
    let mut our_totals = ingest::statement::Totals::default();
    for i in items.iter().filter(|i| i.date() == date && !i.cancelled) {
        match i.kind {
            LineKind::Payment => {
                our_totals.payments += 1;
                our_totals.payment_amount += i.amount;
            }
            LineKind::Refund => {
                our_totals.refunds += 1;
                our_totals.refund_amount += i.amount;
            }
        }
        our_totals.fees += i.amount * terms.get(&i.channel).map_or(Decimal::ZERO, |t| t.fee_rate);
    }
    // The run's identity: the statement file and everything it was classified into (another
    // file with the same rows is another run).
    let mut digest = blake3::Hasher::new();
    digest.update(statement.digest.as_bytes());
    digest.update(format!("\nmatched {}\n", classification.matched).as_bytes());
    digest.update(serde_json::to_string(&classification.matched_sums).unwrap_or_default().as_bytes());
    for c in &classification.items {
        digest.update(serde_json::to_string(c).unwrap_or_default().as_bytes());
        digest.update(b"\n");
    }
    let breaks = classification.items.clone();
    let classification_digest = digest.finalize().to_hex().to_string();
    // The runs recorded before: the same run again while it is in force records nothing
    // (its events are stored); after another run it is recorded once more, numbered.
    let stream = ingest::streams::recon(channel, date);
    let earlier: Vec<ReconciliationCompleted> = stream_events(store, &stream)
        .await?
        .into_iter()
        .filter_map(|e| match e {
            Event::ReconciliationCompleted(r) => Some(r),
            _ => None,
        })
        .collect();
    let run_no = match earlier.last() {
        Some(last) if last.classification_digest == classification_digest => last.run_no,
        _ => earlier.iter().filter(|r| r.classification_digest == classification_digest).count() as u32,
    };
    let parts: Vec<Event> = breaks
        .chunks(RECON_BREAKS_PART)
        .enumerate()
        .map(|(part, chunk)| {
            Event::ReconciliationBreaks(ReconciliationBreaks {
                channel,
                date,
                classification_digest: classification_digest.clone(),
                part: part as u32,
                breaks: chunk.to_vec(),
                run_no,
            })
        })
        .collect();
    let record = ReconciliationCompleted {
        channel,
        date,
        statement_digest: statement.digest.clone(),
        counts: classification.counts().into_iter().map(|(o, n)| (o.as_str().to_owned(), n)).collect(),
        matched: classification.matched_sums.clone(),
        break_parts: parts.len() as u32,
        breaks: breaks.len() as u64,
        classification_digest,
        run_no,
    };
    // The parts and the record that completes the run, atomically when they fit; a run
    // repeated with the same inputs finds them all stored already.
    let mut events = parts;
    events.push(Event::ReconciliationCompleted(record.clone()));
    Ok((Reconciled { statement, classification, our_totals, record, breaks }, ToRecord { stream, events }))
}

/// The host's verdict on every terminal batch closed on `date`: the terminal's totals against
/// the host's for the same terminal and batch (debits: sales less reversals; credits: voids
/// and refunds; cash left out), read from the log.
pub async fn batch_verdicts<S: ingest::store::EventStore>(
    store: &S,
    date: NaiveDate,
) -> Result<Vec<ingest::event::TerminalBatchReconciled>, crate::ReplayError> {
    use ingest::event::{BatchTotals, Event, TerminalBatchClosed, TerminalBatchReconciled};
    let mut host: HashMap<(String, String), BatchTotals> = HashMap::new();
    let mut sales: HashMap<String, ((String, String), Decimal)> = HashMap::new();
    let mut closes: Vec<TerminalBatchClosed> = Vec::new();
    for_each_event(
        store,
        &["PaymentCaptured", "PaymentVoided", "PaymentRefunded", "PaymentReversed", "TerminalBatchClosed"],
        |event| match event {
            Event::PaymentCaptured(s) if s.channel != Channel::Cash => {
                let key = (s.terminal_id.clone(), s.batch_no.clone());
                let t = host.entry(key.clone()).or_default();
                t.debit_count += 1;
                t.debit_amount += s.amount;
                sales.insert(s.txn_id, (key, s.amount));
            }
            Event::PaymentReversed(a) => {
                if let Some((key, amount)) = sales.get(&a.original_txn_id) {
                    let t = host.entry(key.clone()).or_default();
                    t.debit_count = t.debit_count.saturating_sub(1);
                    t.debit_amount -= *amount;
                }
            }
            Event::PaymentVoided(a) | Event::PaymentRefunded(a) if a.channel != Channel::Cash => {
                let t = host.entry((a.terminal_id, a.batch_no)).or_default();
                t.credit_count += 1;
                t.credit_amount += a.amount;
            }
            Event::TerminalBatchClosed(c) if c.at.date_naive() == date => closes.push(c),
            _ => {}
        },
    )
    .await?;
    let mut verdicts: Vec<TerminalBatchReconciled> = closes
        .into_iter()
        .map(|c| {
            let h = host.get(&(c.terminal_id.clone(), c.batch_no.clone())).copied().unwrap_or_default();
            let terminal = BatchTotals {
                debit_count: c.debit_count,
                debit_amount: c.debit_amount,
                credit_count: c.credit_count,
                credit_amount: c.credit_amount,
            };
            let net = |t: &BatchTotals| t.debit_amount - t.credit_amount;
            let balanced = terminal.debit_count == h.debit_count
                && terminal.debit_amount == h.debit_amount
                && terminal.credit_count == h.credit_count
                && terminal.credit_amount == h.credit_amount;
            let mut difference = net(&terminal) - net(&h);
            difference.rescale(c.currency.scale());
            TerminalBatchReconciled {
                merchant_id: c.merchant_id,
                terminal_id: c.terminal_id,
                batch_no: c.batch_no,
                date,
                terminal,
                host: h,
                balanced,
                difference,
            }
        })
        .collect();
    verdicts.sort_by(|a, b| (&a.terminal_id, &a.batch_no).cmp(&(&b.terminal_id, &b.batch_no)));
    Ok(verdicts)
}

/// What a break parks in its statement's suspense account (debit positive): the amount a
/// resolution moves out again. Refunds the other way.
pub fn parked(b: &ingest::event::ReconBreak) -> Decimal {
    let fen = |d: Decimal| crate::fees::round(d, ingest::money::Currency::Cny);
    let way = if b.kind == LineKind::Refund { Decimal::NEGATIVE_ONE } else { Decimal::ONE };
    let ours = b.our_amount.unwrap_or_default();
    let theirs = b.their_amount.unwrap_or_default();
    match b.outcome {
        Outcome::MissingInLedger | Outcome::StatusMismatch | Outcome::DuplicateInStatement => -way * theirs,
        Outcome::AmountMismatch if b.ledger_channel.is_some() => way * (ours - theirs),
        Outcome::FeeMismatch if b.ledger_channel.is_some() => {
            way * (fen(b.their_fee.unwrap_or_default()) - fen(b.expected_fee.unwrap_or_default()))
        }
        Outcome::MissingInStatement if b.ledger_channel.is_some() => way * ours,
        _ => Decimal::ZERO,
    }
}

/// The ids of a run's breaks, in order: a hash of statement, date, outcome, kind and the ids
/// (not the line number, which moves when a corrected file is imported), with the break's
/// occurrence among identical ones (a line repeated three times is two duplicates).
pub fn break_ids(statement: StatementChannel, date: NaiveDate, breaks: &[ingest::event::ReconBreak]) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    breaks
        .iter()
        .map(|b| {
            let base = format!(
                "{statement}|{date}|{}|{:?}|{}|{}",
                b.outcome,
                b.kind,
                b.txn_id,
                b.channel_txn_id.as_deref().unwrap_or("")
            );
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            blake3::hash(format!("{base}|{n}").as_bytes()).to_hex()[..12].to_owned()
        })
        .collect()
}

/// Breaks parking more than this (either way) need a second person's approval: 1000.00.
pub const APPROVAL_OVER_DEFAULT: Decimal = Decimal::from_parts(100_000, 0, 0, false, 2);

/// A completed reconciliation run and its breaks.
pub type RecordedRun = (ingest::event::ReconciliationCompleted, Vec<ingest::event::ReconBreak>);

/// The latest reconciliation of each statement and date, and every resolution by break id.
pub type RecordedBreaks = (
    std::collections::BTreeMap<(StatementChannel, NaiveDate), RecordedRun>,
    std::collections::BTreeMap<String, ingest::event::BreakResolved>,
);

/// Reads the latest reconciliation of every statement and date, and every resolved break.
pub async fn recorded_breaks<S: ingest::store::EventStore>(store: &S) -> Result<RecordedBreaks, crate::ReplayError> {
    let mut follower = BreaksFollower::default();
    follower.catch_up(store).await?;
    Ok((follower.latest, follower.resolved))
}

/// The latest reconciliations and the resolutions, kept current by reading only what was
/// appended since the last [`BreaksFollower::catch_up`].
#[derive(Debug, Default)]
pub struct BreaksFollower {
    /// The next position to read.
    position: u64,
    latest: std::collections::BTreeMap<(StatementChannel, NaiveDate), RecordedRun>,
    resolved: std::collections::BTreeMap<String, ingest::event::BreakResolved>,
    /// Parts by run (statement, date, digest), until their record completes the run.
    parts: HashMap<(StatementChannel, NaiveDate, String), Vec<ingest::event::ReconciliationBreaks>>,
}

impl BreaksFollower {
    /// Reads the events appended since the last call.
    pub async fn catch_up<S: ingest::store::EventStore>(&mut self, store: &S) -> Result<(), crate::ReplayError> {
        use ingest::event::Event;
        let (latest, resolved, parts) = (&mut self.latest, &mut self.resolved, &mut self.parts);
        // The position moves past each event as it is applied: after an error the next call
        // goes on from the first event not applied, never applying one twice.
        for_each_event_from(
            store,
            &mut self.position,
            &["ReconciliationCompleted", "ReconciliationBreaks", "BreakResolved"],
            |event| match event {
                Event::ReconciliationBreaks(p) => {
                    parts.entry((p.channel, p.date, p.classification_digest.clone())).or_default().push(p);
                }
                Event::ReconciliationCompleted(r) => {
                    let mut mine =
                        parts.remove(&(r.channel, r.date, r.classification_digest.clone())).unwrap_or_default();
                    mine.sort_by_key(|p| p.part);
                    mine.dedup_by_key(|p| p.part);
                    let breaks: Vec<_> = mine.into_iter().flat_map(|p| p.breaks).collect();
                    latest.insert((r.channel, r.date), (r, breaks));
                }
                Event::BreakResolved(b) => {
                    resolved.insert(b.break_id.clone(), b);
                }
                _ => {}
            },
        )
        .await?;
        Ok(())
    }

    /// Breaks of the latest runs that are not resolved.
    pub fn open_breaks(&self) -> usize {
        self.latest
            .iter()
            .map(|((channel, date), (_, breaks))| {
                let breaks: Vec<_> = breaks.iter().filter(|b| b.outcome.is_break()).cloned().collect();
                break_ids(*channel, *date, &breaks).into_iter().filter(|id| !self.resolved.contains_key(id)).count()
            })
            .sum()
    }
}

/// Why a resolution was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No break has that id.
    #[error("no break {0} in the latest reconciliations (see `posledger breaks`)")]
    Unknown(String),
    /// It was resolved before.
    #[error("break {0} was resolved already, by {1}")]
    Resolved(String, String),
    /// A large break needs a second person.
    #[error("break {id} parks {amount}, over {threshold}: it needs --approved-by, a second person other than {by}")]
    NeedsApproval {
        /// The break.
        id: String,
        /// What it parks.
        amount: Decimal,
        /// The threshold.
        threshold: Decimal,
        /// Who resolves.
        by: String,
    },
    /// Who and why must be said.
    #[error("{0}")]
    Incomplete(String),
    /// Reading the log failed.
    #[error(transparent)]
    Replay(#[from] crate::ReplayError),
}

/// Works out a break's resolution: checks it is open, that the action is possible, that a
/// large one carries a second person's approval, and returns the
/// [`ingest::event::BreakResolved`] to record (in its own stream, expected not to exist: a
/// break is resolved once), which the books post: its suspense out. Reads the log; records
/// nothing.
pub async fn prepare_resolution<S: ingest::store::EventStore>(
    store: &S,
    id: &str,
    action: ingest::event::ResolveAction,
    reason: &str,
    by: &str,
    approved_by: Option<&str>,
    threshold: Decimal,
) -> Result<ingest::event::BreakResolved, ResolveError> {
    use ingest::event::BreakResolved;
    if reason.trim().is_empty() || by.trim().is_empty() {
        return Err(ResolveError::Incomplete("a resolution needs --reason and --by".into()));
    }
    let (latest, resolved) = recorded_breaks(store).await?;
    if let Some(r) = resolved.get(id) {
        return Err(ResolveError::Resolved(id.to_owned(), r.by.clone()));
    }
    let found = latest.iter().find_map(|((statement, date), (_, breaks))| {
        break_ids(*statement, *date, breaks)
            .into_iter()
            .zip(breaks)
            .find(|(bid, b)| b.outcome != Outcome::CarriedForward && bid == id)
            .map(|(_, b)| (*statement, *date, b))
    });
    let Some((statement, date, b)) = found else { return Err(ResolveError::Unknown(id.to_owned())) };
    let amount = parked(b);
    // Booking needs a clearing account of a ledger channel; a refund needs money that came.
    let ledger_channel = b.ledger_channel.or(match statement {
        StatementChannel::Wechat => Some(Channel::Wechat),
        StatementChannel::Alipay => Some(Channel::Alipay),
        StatementChannel::Unionpay | StatementChannel::Generic => None,
    });
    match action {
        ingest::event::ResolveAction::Book if ledger_channel.is_none() => {
            return Err(ResolveError::Incomplete(format!(
                "break {id} is not tied to one ledger channel ({statement} covers several): write it off or refund it"
            )));
        }
        ingest::event::ResolveAction::Refund
            if b.outcome == Outcome::MissingInStatement
                || b.outcome == Outcome::AmountMismatch && amount > Decimal::ZERO =>
        {
            return Err(ResolveError::Incomplete(format!(
                "break {id} ({}) received no money to give back: book it or write it off",
                b.outcome
            )));
        }
        _ => {}
    }
    // Checked after the action: a resolution that could never be recorded is not sent for approval.
    let same_person = |a: &str| a.trim().is_empty() || a.trim().to_lowercase() == by.trim().to_lowercase();
    if amount.abs() > threshold && approved_by.is_none_or(same_person) {
        return Err(ResolveError::NeedsApproval { id: id.to_owned(), amount, threshold, by: by.to_owned() });
    }
    let record = BreakResolved {
        break_id: id.to_owned(),
        statement,
        date,
        outcome: b.outcome,
        txn_id: b.txn_id.clone(),
        suspense_amount: amount,
        ledger_channel,
        action,
        reason: reason.to_owned(),
        by: by.trim().to_owned(),
        approved_by: approved_by.map(|a| a.trim().to_owned()),
        approval_over: threshold,
    };
    Ok(record)
}

/// Hands `f` every event of the given types in the log, in order (the others are passed over
/// without being decoded).
async fn for_each_event<S: ingest::store::EventStore>(
    store: &S,
    types: &[&str],
    f: impl FnMut(ingest::event::Event),
) -> Result<(), crate::ReplayError> {
    for_each_event_from(store, &mut 0, types, f).await
}

/// [`for_each_event`] from `*position` on, moving `*position` past each event handed over
/// (or passed over), so that on an error it names the first event not handled.
async fn for_each_event_from<S: ingest::store::EventStore>(
    store: &S,
    position: &mut u64,
    types: &[&str],
    mut f: impl FnMut(ingest::event::Event),
) -> Result<(), crate::ReplayError> {
    let head = store.head();
    while *position < head {
        let batch = store.read_all(*position, crate::REPLAY_BATCH_EVENTS).await?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            if types.contains(&e.data.event_type.as_str()) {
                f(ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                    .map_err(|source| crate::ReplayError::Decode { position: e.position, source })?);
            }
            *position = e.position + 1;
        }
    }
    Ok(())
}

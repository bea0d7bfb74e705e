//! Reconciliation's reads, through the store's read API only: our items of a date, the
//! statements recorded, the runs and resolutions recorded, and each use case's inputs gathered
//! for the pure decisions of [`super::rules`] and [`super::classify`]. Nothing here appends.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDate};
use ingest::admin::CARRY_FORWARD_DAYS_MAX;
use ingest::event::{Channel, Id};
use ingest::statement::{LineKind, StatementChannel, StatementLine};
use rust_decimal::Decimal;

use super::classify::near_cutoff;
use super::{
    BATCH_EVENT_TYPES, BatchHost, Imported, Item, ReconError, Reconciled, RecordedBreaks, RecordedRun, ResolveError,
    Terms, ToRecord, break_ids, classify, file_digest, import_record, resolution, run_record, statement_of,
};

/// Our items a statement of `date` may settle: every payment and refund of its channels on
/// `date`, and those of the days before it within the longest `carry_forward_days` in force
/// that fall in the cut-off window (only those can be carried to it); and each ledger channel's
/// terms in force on `date` (the latest `ChannelTermsSet` effective by then).
///
/// [`load_day`] of one statement.
pub async fn load_items<S: ingest::store::EventStore>(
    store: &S,
    statement: StatementChannel,
    date: NaiveDate,
) -> Result<(Vec<Item>, HashMap<Channel, Terms>), crate::ReplayError> {
    let mut day = load_day(store, &[statement], date).await?;
    Ok((day.items.remove(&statement).unwrap_or_default(), day.terms))
}

/// What a day's reconciliation reads from the log, gathered in one pass: each statement's
/// items ([`load_items`]), the terms in force, and the terminal batches closed on the date
/// ([`batch_closes`]).
#[derive(Debug, Default)]
pub struct DayInputs {
    /// Our items, by statement asked for (each present, possibly empty).
    pub items: HashMap<StatementChannel, Vec<Item>>,
    /// Each ledger channel's terms in force on the date.
    pub terms: HashMap<Channel, Terms>,
    /// Every terminal batch close of the date, in log order.
    pub closes: Vec<ingest::event::TerminalBatchClosed>,
}

/// One statement's share of a [`load_day`] pass.
struct Gathering {
    statement: StatementChannel,
    items: Vec<Item>,
    /// Our payments of this statement read here, by merchant and txn_id (two merchants may use
    /// one txn_id): the channel id a refund carries, and where a void or reversal marks its sale.
    payments: crate::projection::FastMap<(Id, Id), (Option<Id>, Option<usize>)>,
    /// Refunds whose sale came before the part of the log read: (item, merchant, sale's txn_id).
    older: Vec<(usize, Id, Id)>,
}

/// [`load_items`] of every statement in `statements` and [`batch_closes`] of `date`, in one
/// pass over the log: the events are read and decoded once for all of them.
///
/// Reads only the channels' streams and the log from where the window's events can start
/// ([`window_start`]), so its cost follows the days since the window, not the history before
/// it. A void or reversal always follows its sale in the log, so none of the window's sales is
/// cancelled before that position; a refund of an older sale finds the sale by its event id.
pub async fn load_day<S: ingest::store::EventStore>(
    store: &S,
    statements: &[StatementChannel],
    date: NaiveDate,
) -> Result<DayInputs, crate::ReplayError> {
    use ingest::event::Event;
    let terms = terms_in_force(store, date).await?;
    let carry = longest_carry(&terms);
    let from = date - chrono::Duration::days(i64::from(carry));
    let mut unique: Vec<StatementChannel> = Vec::with_capacity(statements.len());
    for &statement in statements {
        if !unique.contains(&statement) {
            unique.push(statement);
        }
    }
    if unique.is_empty() {
        // No statement: only the day's closes, read from the day on.
        return Ok(DayInputs { items: HashMap::new(), terms, closes: batch_closes(store, date).await? });
    }
    let mut gathering: Vec<Gathering> = unique
        .iter()
        .map(|&statement| Gathering { statement, items: Vec::new(), payments: Default::default(), older: Vec::new() })
        .collect();
    // The share of the statement a ledger channel settles with, if it is asked for.
    let slot = |channel: Channel| statement_of(channel).and_then(|s| unique.iter().position(|u| *u == s));
    let mut closes = Vec::new();
    let in_range = |at: &DateTime<FixedOffset>| {
        let day = at.date_naive();
        day == date || (from..date).contains(&day) && near_cutoff(at)
    };
    let mut position = store.position_since(window_start(from));
    for_each_event_from(
        store,
        &mut position,
        &["PaymentCaptured", "PaymentRefunded", "PaymentVoided", "PaymentReversed", "TerminalBatchClosed"],
        |event| match event {
            Event::PaymentCaptured(s) => {
                let Some(g) = slot(s.channel).map(|i| &mut gathering[i]) else { return };
                let index = in_range(&s.at).then(|| {
                    g.items.push(Item {
                        kind: LineKind::Payment,
                        txn_id: s.txn_id.clone(),
                        channel_txn_id: s.channel_txn_id.clone(),
                        channel: s.channel,
                        amount: s.amount,
                        currency: s.currency,
                        at: s.at,
                        cancelled: false,
                    });
                    g.items.len() - 1
                });
                g.payments.insert((s.merchant_id, s.txn_id), (s.channel_txn_id, index));
            }
            Event::PaymentRefunded(r) if in_range(&r.at) => {
                let Some(g) = slot(r.channel).map(|i| &mut gathering[i]) else { return };
                let key = (r.merchant_id, r.original_txn_id);
                let channel_txn_id = match g.payments.get(&key) {
                    Some((c, _)) => c.clone(),
                    None => {
                        g.older.push((g.items.len(), key.0, key.1));
                        None
                    }
                };
                g.items.push(Item {
                    kind: LineKind::Refund,
                    txn_id: r.txn_id,
                    channel_txn_id,
                    channel: r.channel,
                    amount: r.amount,
                    currency: r.currency,
                    at: r.at,
                    cancelled: false,
                });
            }
            Event::PaymentVoided(a) | Event::PaymentReversed(a) => {
                let key = (a.merchant_id, a.original_txn_id);
                for g in &mut gathering {
                    if let Some((_, Some(i))) = g.payments.get(&key) {
                        g.items[*i].cancelled = true;
                    }
                }
            }
            Event::TerminalBatchClosed(c) if c.at.date_naive() == date => closes.push(c),
            _ => {}
        },
    )
    .await?;
    let mut items = HashMap::new();
    for mut g in gathering {
        for (i, merchant_id, txn_id) in std::mem::take(&mut g.older) {
            if let Some(sale) = captured(store, &merchant_id, &txn_id).await?
                && statement_of(sale.channel) == Some(g.statement)
            {
                g.items[i].channel_txn_id = sale.channel_txn_id;
            }
        }
        items.insert(g.statement, g.items);
    }
    Ok(DayInputs { items, terms, closes })
}

/// The longest `carry_forward_days` of the terms in force: how many days before a statement's
/// date its items and earlier files count.
fn longest_carry(terms: &HashMap<Channel, Terms>) -> u32 {
    terms.values().map(|t| t.carry_forward_days).max().unwrap_or(0).min(CARRY_FORWARD_DAYS_MAX)
}

/// A time before every event a reconciliation window opening on `from` can hold, in µs since
/// the epoch: the day before `from` at 00:00 UTC, earlier than `from`'s start at any offset a
/// time may carry (chrono's offsets stay within a day).
pub fn window_start(from: NaiveDate) -> i64 {
    let day_before = from.pred_opt().unwrap_or(from);
    day_before.and_hms_opt(0, 0, 0).map_or(i64::MIN, |t| t.and_utc().timestamp_micros())
}

/// Merchant `merchant_id`'s sale `txn_id`, found by its event id (the txn_id's own, or the one
/// named by merchant too when another merchant used the txn_id first).
async fn captured<S: ingest::store::EventStore>(
    store: &S,
    merchant_id: &str,
    txn_id: &str,
) -> Result<Option<ingest::event::PaymentCaptured>, crate::ReplayError> {
    use ingest::event::{Event, PAYMENT_ID_SPACE, event_id_of, payment_event_id_of};
    for id in [event_id_of(PAYMENT_ID_SPACE, txn_id), payment_event_id_of(merchant_id, txn_id)] {
        let Some(e) = store.event_by_id(id).await? else { continue };
        if let Event::PaymentCaptured(sale) = Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
            .map_err(|source| crate::ReplayError::Decode { position: e.position, source })?
            && sale.merchant_id == merchant_id
            && sale.txn_id == txn_id
        {
            return Ok(Some(sale));
        }
    }
    Ok(None)
}

/// Each ledger channel's terms in force on `date` (the latest `ChannelTermsSet` effective by
/// then; of two effective the same day, the later recorded), read from the channels' streams.
async fn terms_in_force<S: ingest::store::EventStore>(
    store: &S,
    date: NaiveDate,
) -> Result<HashMap<Channel, Terms>, crate::ReplayError> {
    let mut terms = HashMap::new();
    for channel in Channel::ALL {
        let mut latest: Option<(NaiveDate, Terms)> = None;
        for event in stream_events(store, &ingest::streams::channel(channel)).await? {
            if let ingest::event::Event::ChannelTermsSet(t) = event
                && t.channel == channel
                && t.effective_from <= date
                && latest.is_none_or(|(d, _)| t.effective_from >= d)
            {
                let new = Terms {
                    fee_rate: t.fee_rate,
                    fee_tolerance: t.fee_tolerance,
                    carry_forward_days: t.carry_forward_days,
                };
                latest = Some((t.effective_from, new));
            }
        }
        if let Some((_, t)) = latest {
            terms.insert(channel, t);
        }
    }
    Ok(terms)
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
    let date_hint = date.or_else(|| ingest::statement::date_in_name(name));
    let statement = ingest::statement::parse_dated(channel, name, bytes, date_hint)?;
    prepare_import_parsed(store, name, bytes, &statement, date).await
}

/// [`prepare_import`] of a file parsed already (by [`ingest::statement::parse_dated`] with
/// `date`, or the date its name gives, as the hint).
pub async fn prepare_import_parsed<S: ingest::store::EventStore>(
    store: &S,
    name: &str,
    bytes: &[u8],
    statement: &ingest::statement::Statement,
    date: Option<NaiveDate>,
) -> Result<(Imported, ToRecord), ReconError> {
    let channel = statement.channel;
    let date_hint = date.or_else(|| ingest::statement::date_in_name(name));
    if let (Some(given), Some(stated)) = (date, statement.stated_date)
        && given != stated
    {
        return Err(ReconError::DateConflict(name.to_owned(), stated, given));
    }
    let date = date.or(statement.stated_date).or(date_hint).ok_or_else(|| ReconError::NoDate(name.to_owned()))?;
    let digest = file_digest(bytes);
    let imports = statement_imports(store, channel, date).await?;
    Ok(import_record(channel, date, name, digest, statement, &imports))
}

/// Whether a statement of `channel` is imported for `date` (its stream holds an import):
/// reads the stream, decoding its imports only (the parts of lines are passed over).
pub async fn has_statement<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    date: NaiveDate,
) -> Result<bool, ReconError> {
    let stream = ingest::streams::statement(channel, date);
    let mut from = 0;
    loop {
        let batch = store.read_stream(&stream, from, ingest::store::READ_EVENTS_MAX).await?;
        if batch.is_empty() {
            return Ok(false);
        }
        from += batch.len() as u64;
        if let Some(e) = batch.iter().find(|e| e.data.event_type == "StatementImported") {
            // A damaged import is an error, not a statement to pass over.
            ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                .map_err(|source| crate::ReplayError::Decode { position: e.position, source })?;
            return Ok(true);
        }
    }
}

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
    Ok(stream_events(store, &ingest::streams::statement(channel, date)).await?)
}

/// Every event of one stream, decoded.
async fn stream_events<S: ingest::store::EventStore>(
    store: &S,
    stream: &str,
) -> Result<Vec<ingest::event::Event>, crate::ReplayError> {
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

/// Reconciles the statement of `channel` for `date` against the log and works out what the run
/// records (a repeated run with the same inputs finds its events stored already). Reads the
/// log; records nothing.
pub async fn prepare_run<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    date: NaiveDate,
) -> Result<(Reconciled, ToRecord), ReconError> {
    let (items, terms) = load_items(store, channel, date).await?;
    prepare_run_with(store, channel, date, &items, &terms).await
}

/// [`prepare_run`] with the statement's items and the terms in force read already (by
/// [`load_day`], in one pass for every statement of the day).
pub async fn prepare_run_with<S: ingest::store::EventStore>(
    store: &S,
    channel: StatementChannel,
    date: NaiveDate,
    items: &[Item],
    terms: &HashMap<Channel, Terms>,
) -> Result<(Reconciled, ToRecord), ReconError> {
    let (statement, lines) =
        stored_statement(store, channel, date, None).await?.ok_or(ReconError::NoStatement(channel, date))?;
    // The longest carry-forward of the statement's channels says how far back files count.
    let carry = longest_carry(terms);
    let first = date - chrono::Duration::days(i64::from(carry));
    let mut earlier = Vec::new();
    let mut day = first;
    while day < date {
        if let Some((_, l)) = stored_statement(store, channel, day, None).await? {
            earlier.push(l);
        }
        day = day.succ_opt().unwrap_or(date);
    }
    for item in items {
        if !terms.contains_key(&item.channel) {
            return Err(ReconError::NoTerms(item.channel, date));
        }
    }
    let earlier_refs: Vec<&[StatementLine]> = earlier.iter().map(Vec::as_slice).collect();
    let classification = classify(date, &lines, &earlier_refs, items, |c| {
        terms.get(&c).copied().unwrap_or(Terms {
            fee_rate: Decimal::ZERO,
            fee_tolerance: Decimal::ZERO,
            carry_forward_days: 0,
        })
    });
    // The runs recorded before, to number this one.
    let earlier: Vec<ingest::event::ReconciliationCompleted> =
        stream_events(store, &ingest::streams::recon(channel, date))
            .await?
            .into_iter()
            .filter_map(|e| match e {
                ingest::event::Event::ReconciliationCompleted(r) => Some(r),
                _ => None,
            })
            .collect();
    Ok(run_record(date, statement, classification, items, terms, &earlier))
}

/// The host's verdict on every terminal batch closed on `date`: the terminal's totals against
/// the host's for the same terminal and batch (debits: sales less reversals; credits: voids
/// and refunds; cash left out), read from the whole log. The books keep the same totals as
/// they go ([`crate::Projection::batch_totals`]): [`batch_closes`] with those is the way that
/// does not read the history; this one is the reference it is checked against.
pub async fn batch_verdicts<S: ingest::store::EventStore>(
    store: &S,
    date: NaiveDate,
) -> Result<Vec<ingest::event::TerminalBatchReconciled>, crate::ReplayError> {
    let mut host = BatchHost::default();
    for_each_event(store, &BATCH_EVENT_TYPES, |event| host.apply(event, date)).await?;
    Ok(host.verdicts(date))
}

/// Every terminal batch close of `date` (its time's own date), reading the log only from where
/// events of that day can start.
pub async fn batch_closes<S: ingest::store::EventStore>(
    store: &S,
    date: NaiveDate,
) -> Result<Vec<ingest::event::TerminalBatchClosed>, crate::ReplayError> {
    let mut closes = Vec::new();
    let mut position = store.position_since(window_start(date));
    for_each_event_from(store, &mut position, &["TerminalBatchClosed"], |event| {
        if let ingest::event::Event::TerminalBatchClosed(c) = event
            && c.at.date_naive() == date
        {
            closes.push(c);
        }
    })
    .await?;
    Ok(closes)
}

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

    /// The latest run of every statement and date read so far, with its breaks.
    pub fn latest(&self) -> &std::collections::BTreeMap<(StatementChannel, NaiveDate), RecordedRun> {
        &self.latest
    }

    /// Every resolution read so far, by break id.
    pub fn resolved(&self) -> &std::collections::BTreeMap<String, ingest::event::BreakResolved> {
        &self.resolved
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

/// Works out a break's resolution: checks it is open, that the action is possible, that a
/// large one carries a second person's approval, and returns the
/// [`ingest::event::BreakResolved`] to record (in its own stream, expected not to exist: a
/// break is resolved once), which the books post: its suspense out. Reads what the log holds
/// beyond what `breaks` has read; records nothing.
#[allow(clippy::too_many_arguments)] // the resolution's own fields, and where to read
pub async fn prepare_resolution<S: ingest::store::EventStore>(
    store: &S,
    breaks: &mut BreaksFollower,
    id: &str,
    action: ingest::event::ResolveAction,
    reason: &str,
    by: &str,
    approved_by: Option<&str>,
    threshold: Decimal,
) -> Result<ingest::event::BreakResolved, ResolveError> {
    breaks.catch_up(store).await?;
    resolution(&breaks.latest, &breaks.resolved, id, action, reason, by, approved_by, threshold)
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
/// (or passed over), so that on an error it names the first event not handled. The log is read
/// and decoded ahead on a thread of its own when the store allows ([`crate::scan::Scan`]).
async fn for_each_event_from<S: ingest::store::EventStore>(
    store: &S,
    position: &mut u64,
    types: &[&str],
    mut f: impl FnMut(ingest::event::Event),
) -> Result<(), crate::ReplayError> {
    let mut scan = crate::scan::Scan::new(store, *position, store.head(), Some(types));
    loop {
        let batch = scan.next().await;
        if let Ok(Some(events)) = batch {
            events.into_iter().for_each(|(_, event)| f(event));
            *position = scan.position();
            continue;
        }
        *position = scan.position();
        return batch.map(|_| ());
    }
}

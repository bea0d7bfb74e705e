//! What reconciliation records, decided without I/O: an import's events, a run's identity,
//! number and events, each terminal batch's verdict, a break's id, what it parks and how it is
//! resolved. The reads that gather their inputs are in [`super::read`].

use std::collections::HashMap;

use chrono::NaiveDate;
use ingest::event::{Channel, Id};
use ingest::statement::{LineKind, StatementChannel};
use rust_decimal::Decimal;

use super::{Classification, Item, Outcome, Terms};

/// Lines a statement part holds (a part is one event: at most about 1 MiB of JSON).
pub const STATEMENT_PART_LINES: usize = 2_000;

/// Breaks recorded in one [`ingest::event::ReconciliationBreaks`] part (about 300 bytes each:
/// a part stays well under the store's payload limit).
pub const RECON_BREAKS_PART: usize = 1_000;

/// Most events (and payload bytes) a run or import is appended with atomically.
pub const ATOMIC_RUN_EVENTS_MAX: usize = 1_000;
/// See [`ATOMIC_RUN_EVENTS_MAX`].
pub const ATOMIC_RUN_BYTES_MAX: usize = 24 << 20;

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

/// What importing a parsed statement records, given the imports of its channel and date
/// recorded before: its lines in parts and the [`ingest::event::StatementImported`] that makes
/// them count; nothing when the same file (same digest) is the one in force; only a new record
/// when the file was imported before and replaced since (its parts are stored already).
pub fn import_record(
    channel: StatementChannel,
    date: NaiveDate,
    name: &str,
    digest: String,
    statement: &ingest::statement::Statement,
    imports: &[ingest::event::StatementImported],
) -> (Imported, ToRecord) {
    use ingest::event::{Event, StatementImported, StatementLines};
    let stream = ingest::streams::statement(channel, date);
    if let Some(last) = imports.last().filter(|i| i.digest == digest) {
        return (Imported { statement: last.clone(), again: true }, ToRecord { stream, events: Vec::new() });
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
    (Imported { statement: imported, again: false }, ToRecord { stream, events })
}

/// What a run records, given its statement, classification and items and the runs of the same
/// statement and date recorded before: the run's identity (a digest of the file and of
/// everything it was classified into), its number (the same run again while it is in force
/// records nothing; after another run it is recorded once more, numbered), its breaks in parts
/// and the [`ingest::event::ReconciliationCompleted`] that completes it.
pub fn run_record(
    date: NaiveDate,
    statement: ingest::event::StatementImported,
    classification: Classification,
    items: &[Item],
    terms: &HashMap<Channel, Terms>,
    earlier: &[ingest::event::ReconciliationCompleted],
) -> (Reconciled, ToRecord) {
    use ingest::event::{Event, ReconciliationBreaks, ReconciliationCompleted};
    let channel = statement.channel;
    let rate = |c: Channel| terms.get(&c).map_or(Decimal::ZERO, |t| t.fee_rate);
    let mut our_totals = ingest::statement::Totals::default();
    for i in items.iter().filter(|i| i.date() == date && !i.cancelled) {
        match i.kind {
            LineKind::Payment => {
                our_totals.payments += 1;
                our_totals.payment_amount += i.amount;
                our_totals.fees += i.amount * rate(i.channel);
            }
            LineKind::Refund => {
                our_totals.refunds += 1;
                our_totals.refund_amount += i.amount;
                our_totals.fees -= i.amount * rate(i.channel);
            }
        }
    }
    // The run's identity: the statement file and everything it was classified into (another
    // file with the same rows is another run).
    let mut digest = blake3::Hasher::new();
    digest.update(statement.digest.as_bytes());
    digest.update(format!("\nmatched {}\n", classification.matched).as_bytes());
    digest.update(serde_json::to_string(&classification.matched_sums).unwrap_or_default().as_bytes());
    // Other currencies only when there are any: a run of CNY alone keeps the identity it had
    // before currencies were told apart (the same run is not recorded again).
    if !classification.matched_by_currency.is_empty() {
        digest.update(serde_json::to_string(&classification.matched_by_currency).unwrap_or_default().as_bytes());
    }
    for c in &classification.items {
        digest.update(serde_json::to_string(c).unwrap_or_default().as_bytes());
        digest.update(b"\n");
    }
    let breaks = classification.items.clone();
    let classification_digest = digest.finalize().to_hex().to_string();
    let stream = ingest::streams::recon(channel, date);
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
        matched_by_currency: classification.matched_by_currency.clone(),
        break_parts: parts.len() as u32,
        breaks: breaks.len() as u64,
        classification_digest,
        run_no,
    };
    // The parts and the record that completes the run, atomically when they fit; a run
    // repeated with the same inputs finds them all stored already.
    let mut events = parts;
    events.push(Event::ReconciliationCompleted(record.clone()));
    (Reconciled { statement, classification, our_totals, record, breaks }, ToRecord { stream, events })
}

/// The host's own totals of every terminal batch, kept from the payment events in log order
/// (debits: sales less reversals; credits: voids and refunds; cash left out), and the batch
/// closes of one date, to give each its verdict.
#[derive(Debug, Default)]
pub struct BatchHost {
    host: HashMap<(Id, Id), ingest::event::BatchTotals>,
    /// Sales by merchant and txn_id: their terminal batch and amount.
    sales: HashMap<(Id, Id), ((Id, Id), Decimal)>,
    closes: Vec<ingest::event::TerminalBatchClosed>,
}

/// The event types [`BatchHost::apply`] needs.
pub const BATCH_EVENT_TYPES: [&str; 5] =
    ["PaymentCaptured", "PaymentVoided", "PaymentRefunded", "PaymentReversed", "TerminalBatchClosed"];

impl BatchHost {
    /// Takes one event into the totals (and a batch close of `date` into the closes).
    pub fn apply(&mut self, event: ingest::event::Event, date: NaiveDate) {
        use ingest::event::Event;
        let (host, sales) = (&mut self.host, &mut self.sales);
        match event {
            Event::PaymentCaptured(s) if s.channel != Channel::Cash => {
                let key = (s.terminal_id.clone(), s.batch_no.clone());
                let t = host.entry(key.clone()).or_default();
                t.debit_count += 1;
                t.debit_amount += s.amount;
                sales.insert((s.merchant_id, s.txn_id), (key, s.amount));
            }
            Event::PaymentReversed(a) => {
                if let Some((key, amount)) = sales.get(&(a.merchant_id, a.original_txn_id)) {
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
            Event::TerminalBatchClosed(c) if c.at.date_naive() == date => self.closes.push(c),
            _ => {}
        }
    }

    /// The verdict on every batch closed on `date`: the terminal's totals against the host's.
    pub fn verdicts(self, date: NaiveDate) -> Vec<ingest::event::TerminalBatchReconciled> {
        let host = self.host;
        batch_verdicts_of(self.closes, |t, b| host.get(&(Id::from(t), Id::from(b))).copied().unwrap_or_default(), date)
    }
}

/// The verdict on each batch close of `date`: the terminal's totals against the host's own
/// (`host` gives them by terminal and batch), in terminal and batch order.
pub fn batch_verdicts_of(
    closes: Vec<ingest::event::TerminalBatchClosed>,
    host: impl Fn(&str, &str) -> ingest::event::BatchTotals,
    date: NaiveDate,
) -> Vec<ingest::event::TerminalBatchReconciled> {
    use ingest::event::{BatchTotals, TerminalBatchReconciled};
    let mut verdicts: Vec<TerminalBatchReconciled> = closes
        .into_iter()
        .map(|c| {
            let h = host(&c.terminal_id, &c.batch_no);
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
    verdicts
}

/// What a break parks in its statement's suspense account (debit positive), in the break's
/// currency: the amount a resolution moves out again. Refunds the other way.
pub fn parked(b: &ingest::event::ReconBreak) -> Decimal {
    // Fees are posted rounded to the currency's minor unit.
    let minor = |d: Decimal| crate::fees::round(d, b.currency);
    let way = if b.kind == LineKind::Refund { Decimal::NEGATIVE_ONE } else { Decimal::ONE };
    let ours = b.our_amount.unwrap_or_default();
    let theirs = b.their_amount.unwrap_or_default();
    match b.outcome {
        Outcome::MissingInLedger | Outcome::StatusMismatch | Outcome::DuplicateInStatement => -way * theirs,
        Outcome::AmountMismatch if b.ledger_channel.is_some() => way * (ours - theirs),
        Outcome::FeeMismatch if b.ledger_channel.is_some() => {
            way * (minor(b.their_fee.unwrap_or_default()) - minor(b.expected_fee.unwrap_or_default()))
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

/// A break's resolution, decided against the latest runs and the resolutions recorded: it
/// must be open and known, the action possible, and a large one approved by a second person
/// (names compared trimmed and without case).
#[allow(clippy::too_many_arguments)] // the resolution's own fields
pub fn resolution(
    latest: &std::collections::BTreeMap<(StatementChannel, NaiveDate), RecordedRun>,
    resolved: &std::collections::BTreeMap<String, ingest::event::BreakResolved>,
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
        currency: b.currency,
        ledger_channel,
        action,
        reason: reason.to_owned(),
        by: by.trim().to_owned(),
        approved_by: approved_by.map(|a| a.trim().to_owned()),
        approval_over: threshold,
    };
    Ok(record)
}

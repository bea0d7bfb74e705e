//! Statements and reconciliation: import a channel's statement, reconcile the statements of a
//! date against the books (the end-of-day report, with the host's verdict on every terminal
//! batch closed that day), and list the breaks.
//!
//! The matching itself and what a run records are worked out in `ledger::recon`; this module
//! records them and builds the report.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use ingest::event::{BatchTotals, ReconBreak, StatementImported, TerminalBatchReconciled};
use ingest::money::Currency;
use ingest::statement::{LineKind, StatementChannel, StatementError, Totals};
use ingest::store::{EventStore, ExpectedRevision};
use ledger::entry::Account;
use ledger::recon::{Outcome, Reconciled, ToRecord};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{App, Class, Failure};

/// What a statement import did: recorded it, found it recorded before, or refused the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportOutcome {
    /// Recorded now (or put back in force).
    Imported(StatementImported),
    /// The same file was imported before and is in force: nothing was recorded.
    Again(StatementImported),
    /// The file was refused, nothing was recorded: which line and field, and why.
    Refused(StatementError),
}

/// A statement file's identity in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Its name as imported.
    pub name: String,
    /// BLAKE3 of its bytes.
    pub digest: String,
    /// Lines.
    pub lines: u64,
}

/// A break as the end-of-day report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBreak {
    /// Anything but `matched`.
    pub outcome: Outcome,
    /// Payment or refund.
    pub kind: LineKind,
    /// Our order number.
    pub txn_id: String,
    /// The channel's id.
    pub channel_txn_id: Option<String>,
    /// The statement line.
    pub line: Option<u64>,
    /// Our amount.
    pub our_amount: Option<Decimal>,
    /// The fee we expected.
    pub expected_fee: Option<Decimal>,
    /// The statement's amount.
    pub their_amount: Option<Decimal>,
    /// The statement's fee.
    pub their_fee: Option<Decimal>,
    /// The currency of the amounts and fees.
    pub currency: Currency,
    /// Days from our item's business date to the statement's.
    pub age_days: i64,
}

/// A clearing account the statement settles: its balance at the start and the end of the day,
/// in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearing {
    /// The account's path.
    pub account: String,
    /// The currency.
    pub currency: Currency,
    /// At the end of the day before.
    pub opening: Decimal,
    /// At the end of the day: what the channel still owes.
    pub closing: Decimal,
}

/// The report of one statement and date (design.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementReport {
    /// The statement's channel.
    pub statement: StatementChannel,
    /// The statement date.
    pub date: NaiveDate,
    /// The file in force.
    pub file: FileInfo,
    /// The statement's totals.
    pub theirs: Totals,
    /// What the statement settles: payments less refunds less fees.
    pub theirs_net: Decimal,
    /// Our items' totals for the date.
    pub ours: Totals,
    /// How many lines and items got each outcome.
    pub counts: BTreeMap<String, u64>,
    /// Every line and item not matched.
    pub breaks: Vec<ReportBreak>,
    /// The clearing accounts the statement settles.
    pub clearing: Vec<Clearing>,
    /// The run's identity.
    pub classification_digest: String,
}

/// A terminal batch whose totals differ from the host's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbalancedBatch {
    /// The merchant.
    pub merchant_id: String,
    /// The terminal.
    pub terminal_id: String,
    /// The batch.
    pub batch_no: String,
    /// The terminal's net less the host's.
    pub difference: Decimal,
    /// The terminal's totals.
    pub terminal: BatchTotals,
    /// The host's totals.
    pub host: BatchTotals,
}

/// The terminal batches closed on a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batches {
    /// Closed that day.
    pub closed: usize,
    /// Whose totals agree with the host's.
    pub balanced: usize,
    /// Whose totals do not.
    pub unbalanced: Vec<UnbalancedBatch>,
}

/// One merchant's business of a day in one currency (what settlement pays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantDay {
    /// The merchant.
    pub merchant_id: String,
    /// The currency.
    pub currency: Currency,
    /// Sales less voids and reversals.
    pub gross: Decimal,
    /// Refunds.
    pub refunds: Decimal,
    /// The merchant's fees.
    pub fees: Decimal,
    /// What the merchant is owed.
    pub net: Decimal,
}

/// The end-of-day report: each statement's report, the terminal batches, and the merchants'
/// business of the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayReport {
    /// The date.
    pub date: NaiveDate,
    /// One per statement reconciled.
    pub reports: Vec<StatementReport>,
    /// The terminal batches closed that day.
    pub batches: Batches,
    /// The merchants' business of the day.
    pub settlement: Vec<MerchantDay>,
}

impl DayReport {
    /// Whether anything did not match: a break in a statement, or an unbalanced batch.
    pub fn has_breaks(&self) -> bool {
        self.reports.iter().any(|r| !r.breaks.is_empty() && r.breaks.iter().any(|b| b.outcome.is_break()))
            || !self.batches.unbalanced.is_empty()
    }
}

/// A break as `breaks` lists it: the recorded break with its id, what it parks, and its
/// resolution (or the one waiting for approval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedBreak {
    /// The break's id.
    pub id: String,
    /// Its statement.
    pub statement: StatementChannel,
    /// Its date.
    pub date: NaiveDate,
    /// The break as recorded.
    #[serde(flatten)]
    pub found: ReconBreak,
    /// What it parks in suspense (debit positive).
    pub suspense_amount: Decimal,
    /// Its resolution, once resolved.
    pub resolved: Option<ingest::event::BreakResolved>,
    /// A resolution waiting for a second person's approval.
    pub awaiting_approval: Option<crate::approvals::Proposal>,
}

/// Which breaks to list: by status, reconciliation date (one, or up to one), statement and
/// outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakFilter {
    /// Open, resolved or both.
    pub status: BreakStatus,
    /// Only those of this reconciliation date.
    pub date: Option<NaiveDate>,
    /// Only those of this reconciliation date or earlier (a break at least so old).
    pub to: Option<NaiveDate>,
    /// Only those of this statement.
    pub statement: Option<StatementChannel>,
    /// Only those with this outcome.
    pub outcome: Option<Outcome>,
}

/// A break's status as [`BreakFilter`] selects it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakStatus {
    /// Open and resolved.
    #[default]
    All,
    /// Not resolved (a resolution waiting for approval is still open).
    Open,
    /// Resolved.
    Resolved,
}

impl BreakStatus {
    /// The status named `name` (`all`, `open`, `resolved`).
    pub fn parse(name: &str) -> Option<BreakStatus> {
        match name {
            "all" => Some(BreakStatus::All),
            "open" => Some(BreakStatus::Open),
            "resolved" => Some(BreakStatus::Resolved),
            _ => None,
        }
    }
}

/// Most breaks one page of [`App::breaks_page`] holds: 10,000.
pub const BREAKS_PAGE_MAX: usize = 10_000;

/// A page of breaks, in order of reconciliation date, statement and place in the run; `next`
/// is the following page's `after` (none on the last page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakPage {
    /// The breaks.
    pub breaks: Vec<ListedBreak>,
    /// The last break's id when more follow.
    pub next: Option<String>,
}

/// Records a run or an import: one atomic request (the stream's revision expected, so two
/// writers cannot interleave) when it fits, else event by event in order, the last one making
/// the others count (a cut run is ignored and completed by running again).
pub(crate) async fn record<S: EventStore>(store: &S, run: ToRecord) -> Result<(), Failure> {
    let ToRecord { stream, events } = run;
    if events.is_empty() {
        return Ok(());
    }
    let data: Vec<_> = events.iter().map(ingest::event::Event::to_event_data).collect();
    let bytes: usize = data.iter().map(|d| d.payload.len()).sum();
    if data.len() <= ledger::recon::ATOMIC_RUN_EVENTS_MAX && bytes <= ledger::recon::ATOMIC_RUN_BYTES_MAX {
        let expected = match store.stream_revision(&stream).await? {
            Some(r) => ExpectedRevision::Exact(r),
            None => ExpectedRevision::NoStream,
        };
        // A run already recorded whole: nothing to do.
        if let Some(last) = data.last()
            && store.event_by_id(last.event_id).await?.is_some()
        {
            return Ok(());
        }
        store.append(&stream, expected, data).await?;
        return Ok(());
    }
    for event in data {
        store.append(&stream, ExpectedRevision::Any, vec![event]).await?;
    }
    Ok(())
}

/// Most verdicts one durable commit takes when [`record_verdicts`] records a day's: 4,096.
pub const VERDICTS_PER_COMMIT_MAX: usize = 4096;

/// Records the host's verdicts, each in its batch's stream (one stored already, by its id, is
/// not stored twice), [`VERDICTS_PER_COMMIT_MAX`] to a durable commit.
async fn record_verdicts<S: EventStore>(store: &S, verdicts: &[TerminalBatchReconciled]) -> Result<(), Failure> {
    for chunk in verdicts.chunks(VERDICTS_PER_COMMIT_MAX) {
        let requests = chunk
            .iter()
            .map(|v| {
                let e = ingest::event::Event::TerminalBatchReconciled(v.clone());
                ingest::store::AppendRequest {
                    stream: e.stream(),
                    expected: ExpectedRevision::Any,
                    events: vec![e.to_event_data()],
                }
            })
            .collect();
        for result in store.append_many(requests).await {
            result?;
        }
    }
    Ok(())
}

fn recon_failure(e: ledger::recon::ReconError) -> Failure {
    use ledger::recon::ReconError as E;
    match e {
        E::Statement(e) => Failure::new(Class::Refused, "invalid_statement", e.to_string()),
        e @ (E::NoDate(_) | E::DateConflict(..)) => Failure::invalid("statement_refused", e.to_string()),
        e @ (E::NoStatement(..) | E::NoTerms(..)) => Failure::new(Class::Conflict, "cannot_reconcile", e.to_string()),
        e @ E::Damaged(..) => Failure::internal(e.to_string()),
        E::Replay(e) => e.into(),
        E::Read(e) => e.into(),
    }
}

/// [`recon_failure`] of reconciling one statement and date, saying which.
fn run_failure(channel: StatementChannel, date: NaiveDate, e: ledger::recon::ReconError) -> Failure {
    let mut f = recon_failure(e);
    f.message = format!("reconciling {channel} {date}: {}", f.message);
    f
}

/// How a reconciliation runs: whether a date without a statement is refused, and whether the
/// runs and verdicts are recorded or only reported.
#[derive(Clone, Copy)]
struct Run {
    require_statement: bool,
    record: bool,
}

/// The statement channels, in report order.
const STATEMENT_CHANNELS: [StatementChannel; 4] =
    [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay, StatementChannel::Generic];

impl App {
    /// Imports a statement file (`name` as given, `bytes` its content): all of it or nothing;
    /// the same file again changes nothing. `date` when neither the file nor its name says.
    pub async fn import_statement(
        &self,
        channel: StatementChannel,
        name: &str,
        bytes: &[u8],
        date: Option<NaiveDate>,
    ) -> Result<ImportOutcome, Failure> {
        if let Err(e) =
            ingest::statement::check_name(name).and_then(|()| ingest::statement::check_size(name, bytes.len() as u64))
        {
            return Ok(ImportOutcome::Refused(e));
        }
        let _writer = self.writes.lock().await;
        let prepared = ledger::recon::prepare_import(&*self.store, channel, name, bytes, date).await;
        self.record_import(prepared).await
    }

    /// Imports a statement file checked and parsed already ([`ingest::statement::check_name`],
    /// [`ingest::statement::check_size`], then [`ingest::statement::parse_dated`] with `date`
    /// as the hint), as [`App::import_statement`] does.
    pub(crate) async fn import_parsed(
        &self,
        name: &str,
        bytes: &[u8],
        statement: &ingest::statement::Statement,
        date: Option<NaiveDate>,
    ) -> Result<ImportOutcome, Failure> {
        let _writer = self.writes.lock().await;
        let prepared = ledger::recon::prepare_import_parsed(&*self.store, name, bytes, statement, date).await;
        self.record_import(prepared).await
    }

    /// Records what an import prepared (the writer's lock held).
    async fn record_import(
        &self,
        prepared: Result<(ledger::recon::Imported, ToRecord), ledger::recon::ReconError>,
    ) -> Result<ImportOutcome, Failure> {
        let (imported, run) = match prepared {
            Ok(prepared) => prepared,
            // Refused input: nothing was recorded.
            Err(ledger::recon::ReconError::Statement(e)) => return Ok(ImportOutcome::Refused(e)),
            Err(e) => return Err(recon_failure(e)),
        };
        record(&*self.store, run).await?;
        Ok(if imported.again {
            ImportOutcome::Again(imported.statement)
        } else {
            ImportOutcome::Imported(imported.statement)
        })
    }

    /// Reconciles every statement imported for `date` (or one channel's), records each run and
    /// the host's verdict on each terminal batch closed that day, and reports.
    pub async fn reconcile(&self, date: NaiveDate, only: Option<StatementChannel>) -> Result<DayReport, Failure> {
        let (runs, verdicts) = {
            let _writer = self.writes.lock().await;
            self.reconcile_day(date, only, Run { require_statement: true, record: true }).await?
        };
        let books = self.books().await?;
        Ok(day_report(date, &runs, &verdicts, &books))
    }

    /// [`App::reconcile`] of every statement of the day, and the terminal batches' verdicts
    /// also on a day with no statement (cash only, files not arrived yet).
    pub(crate) async fn reconcile_day_end(&self, date: NaiveDate) -> Result<DayReport, Failure> {
        let (runs, verdicts) = {
            let _writer = self.writes.lock().await;
            self.reconcile_day(date, None, Run { require_statement: false, record: true }).await?
        };
        let books = self.books().await?;
        Ok(day_report(date, &runs, &verdicts, &books))
    }

    /// The report [`App::reconcile_day_end`] would give now, recording nothing: every statement
    /// imported for `date` matched against the books as they stand, and the host's verdict on
    /// each terminal batch closed that day.
    pub(crate) async fn day_report_now(&self, date: NaiveDate) -> Result<DayReport, Failure> {
        let (runs, verdicts) = self.reconcile_day(date, None, Run { require_statement: false, record: false }).await?;
        let books = self.books().await?;
        Ok(day_report(date, &runs, &verdicts, &books))
    }

    async fn reconcile_day(
        &self,
        date: NaiveDate,
        only: Option<StatementChannel>,
        Run { require_statement, record: recording }: Run,
    ) -> Result<(Vec<Reconciled>, Vec<TerminalBatchReconciled>), Failure> {
        let store = &*self.store;
        let channels: Vec<StatementChannel> = match only {
            Some(c) => {
                if !ledger::recon::has_statement(store, c, date).await.map_err(recon_failure)? {
                    return Err(run_failure(c, date, ledger::recon::ReconError::NoStatement(c, date)));
                }
                vec![c]
            }
            None => {
                let mut found = Vec::new();
                for c in STATEMENT_CHANNELS {
                    // A statement stored damaged is an error, not a statement to skip.
                    if ledger::recon::has_statement(store, c, date).await.map_err(recon_failure)? {
                        found.push(c);
                    }
                }
                found
            }
        };
        if channels.is_empty() && require_statement {
            return Err(Failure::new(
                Class::Conflict,
                "cannot_reconcile",
                format!("no statement is imported for {date}; import one with `posledger statement import`"),
            ));
        }
        // One pass over the day's part of the log gathers every statement's items and the
        // day's terminal batch closes.
        let mut inputs = ledger::recon::load_day(store, &channels, date).await.map_err(|e| {
            let mut f: Failure = e.into();
            f.message = format!("reconciling {date}: {}", f.message);
            f
        })?;
        let mut runs = Vec::new();
        for c in channels {
            let items = inputs.items.get(&c).map_or(&[][..], Vec::as_slice);
            let (run, to_record) = ledger::recon::prepare_run_with(store, c, date, items, &inputs.terms)
                .await
                .map_err(|e| run_failure(c, date, e))?;
            if recording {
                record(store, to_record).await?;
            }
            runs.push(run);
        }
        // Terminal batches closed that day: the host's verdict, recorded once.
        let verdicts = self.batch_verdicts_of(std::mem::take(&mut inputs.closes), date).await?;
        if recording {
            record_verdicts(store, &verdicts).await?;
        }
        Ok((runs, verdicts))
    }

    /// Every break of the latest reconciliation of every statement and date (carried items
    /// left out), with its id, what it parks, its resolution and any resolution waiting for
    /// approval; only the unresolved ones when `open`.
    pub async fn breaks(&self, open: bool) -> Result<Vec<ListedBreak>, Failure> {
        let status = if open { BreakStatus::Open } else { BreakStatus::All };
        self.breaks_where(&BreakFilter { status, ..BreakFilter::default() }).await
    }

    /// The breaks [`App::breaks`] lists, only those `filter` keeps.
    pub async fn breaks_where(&self, filter: &BreakFilter) -> Result<Vec<ListedBreak>, Failure> {
        Ok(self.breaks_listed(filter, None, usize::MAX).await?.breaks)
    }

    /// A page of the breaks [`App::breaks_where`] lists: at most `limit` (1 to
    /// [`BREAKS_PAGE_MAX`]) after the break `after` (the previous page's `next`).
    pub async fn breaks_page(
        &self,
        filter: &BreakFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BreakPage, Failure> {
        if !(1..=BREAKS_PAGE_MAX).contains(&limit) {
            return Err(Failure::invalid(
                "invalid_limit",
                format!("limit {limit}: a page holds 1 to {BREAKS_PAGE_MAX} breaks"),
            )
            .field("limit"));
        }
        self.breaks_listed(filter, after, limit).await
    }

    async fn breaks_listed(
        &self,
        filter: &BreakFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BreakPage, Failure> {
        let follower = self.breaks_now().await?;
        let (latest, resolved) = (follower.latest(), follower.resolved());
        let waiting = self.approvals.waiting(self)?;
        // Every break in list order with its id; a page starts after `after`'s place.
        let mut all = latest.iter().flat_map(|((statement, date), (_, breaks))| {
            let ids = ledger::recon::break_ids(*statement, *date, breaks);
            ids.into_iter().zip(breaks).map(move |(id, b)| (*statement, *date, id, b))
        });
        if let Some(after) = after
            && !all.any(|(_, _, id, _)| id == after)
        {
            return Err(Failure::invalid(
                "unknown_break",
                format!("no break {after} to list after (a date reconciled again has new breaks): list from the start"),
            )
            .field("after"));
        }
        let mut listed = Vec::new();
        for (statement, date, id, b) in all {
            let is_resolved = resolved.contains_key(&id);
            let kept = b.outcome != Outcome::CarriedForward
                && filter.date.is_none_or(|d| d == date)
                && filter.to.is_none_or(|d| date <= d)
                && filter.statement.is_none_or(|c| c == statement)
                && filter.outcome.is_none_or(|o| o == b.outcome)
                && match filter.status {
                    BreakStatus::All => true,
                    BreakStatus::Open => !is_resolved,
                    BreakStatus::Resolved => is_resolved,
                };
            if !kept {
                continue;
            }
            if listed.len() == limit {
                let next = listed.last().map(|l: &ListedBreak| l.id.clone());
                return Ok(BreakPage { breaks: listed, next });
            }
            listed.push(ListedBreak {
                statement,
                date,
                suspense_amount: ledger::recon::parked(b),
                resolved: resolved.get(&id).cloned(),
                awaiting_approval: waiting.get(&id).cloned(),
                found: b.clone(),
                id,
            });
        }
        Ok(BreakPage { breaks: listed, next: None })
    }

    /// The host's verdict on every terminal batch closed on `date`: the closes read from the
    /// day on, the host's totals from the books (final at each close).
    pub(crate) async fn batch_verdicts(&self, date: NaiveDate) -> Result<Vec<TerminalBatchReconciled>, Failure> {
        // Closes first: the books, caught up after, hold every event before each of them.
        let closes = ledger::recon::batch_closes(&*self.store, date).await?;
        self.batch_verdicts_of(closes, date).await
    }

    /// The host's verdict on each of `closes` (the terminal batches closed on `date`, read
    /// before the books are caught up: they then hold every event before each close).
    async fn batch_verdicts_of(
        &self,
        closes: Vec<ingest::event::TerminalBatchClosed>,
        date: NaiveDate,
    ) -> Result<Vec<TerminalBatchReconciled>, Failure> {
        let books = self.books().await?;
        Ok(ledger::recon::batch_verdicts_of(closes, |t, b| books.batch_totals(t, b), date))
    }

    /// Breaks of the latest runs that are not resolved, following the log from where the last
    /// call stopped (cheap to ask often).
    pub async fn open_breaks(&self) -> Result<usize, Failure> {
        Ok(self.breaks_now().await?.open_breaks())
    }

    /// The breaks recorded, caught up with the log: the follower reads only what was appended
    /// since it last did.
    pub(crate) async fn breaks_now(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, ledger::recon::BreaksFollower>, Failure> {
        let mut follower = self.breaks.lock().await;
        follower.catch_up(&*self.store).await?;
        Ok(follower)
    }
}

/// The end-of-day report of the runs and verdicts of `date`, with the clearing balances and
/// the merchants' business from the books.
fn day_report(
    date: NaiveDate,
    runs: &[Reconciled],
    verdicts: &[TerminalBatchReconciled],
    books: &ledger::Projection,
) -> DayReport {
    let unbalanced: Vec<UnbalancedBatch> = verdicts
        .iter()
        .filter(|v| !v.balanced)
        .map(|v| UnbalancedBatch {
            merchant_id: v.merchant_id.clone(),
            terminal_id: v.terminal_id.clone(),
            batch_no: v.batch_no.clone(),
            difference: v.difference,
            terminal: v.terminal,
            host: v.host,
        })
        .collect();
    let batches = Batches { closed: verdicts.len(), balanced: verdicts.len() - unbalanced.len(), unbalanced };
    let reports = runs.iter().map(|r| statement_report(r, date, books)).collect();
    let settlement = books
        .day_totals(date)
        .into_iter()
        .map(|(merchant_id, currency, gross, refunds, fees, net)| {
            let at_scale = |mut d: Decimal| {
                d.rescale(currency.scale());
                d
            };
            MerchantDay {
                merchant_id,
                currency,
                gross: at_scale(gross),
                refunds: at_scale(refunds),
                fees: at_scale(fees),
                net: at_scale(net),
            }
        })
        .collect();
    DayReport { date, reports, batches, settlement }
}

/// The decimal places the statement writes its fees with: the most any line's fee has, at least
/// the currency's two.
fn statement_fee_places(r: &Reconciled) -> u32 {
    let lines = r.classification.items.iter().filter_map(|c| c.their_fee.map(|f| f.scale()));
    lines.chain([r.statement.totals.fees.scale(), 2]).max().unwrap_or(2)
}

/// The report of one statement and date.
fn statement_report(r: &Reconciled, date: NaiveDate, books: &ledger::Projection) -> StatementReport {
    let counts = r.classification.counts().into_iter().map(|(o, n)| (o.as_str().to_owned(), n)).collect();
    // Our expected fees are shown at the precision the statement writes fees with (WeChat 5
    // places, Alipay and UnionPay 2): what is compared stays exact.
    let places = statement_fee_places(r);
    let shown = |d: Decimal| d.round_dp_with_strategy(places, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    let breaks = r
        .classification
        .items
        .iter()
        .filter(|c| c.outcome != Outcome::Matched)
        .map(|c| ReportBreak {
            outcome: c.outcome,
            kind: c.kind,
            txn_id: c.txn_id.clone(),
            channel_txn_id: c.channel_txn_id.clone(),
            line: c.line,
            our_amount: c.our_amount,
            expected_fee: c.expected_fee.map(shown),
            their_amount: c.their_amount,
            their_fee: c.their_fee,
            currency: c.currency,
            age_days: c.item_date.map_or(0, |d| (date - d).num_days()),
        })
        .collect();
    // The clearing accounts the statement settles: how they moved on the date in the books.
    let day_end = |d: NaiveDate| {
        d.and_hms_opt(23, 59, 59).and_then(|t| t.and_local_timezone(chrono::FixedOffset::east_opt(8 * 3600)?).single())
    };
    let clearing = ingest::event::Channel::ALL
        .iter()
        .filter(|c| ledger::recon::statement_of(**c) == Some(r.statement.channel))
        .flat_map(|c| {
            let account = Account::clearing(*c);
            // Every currency the account was posted in (CNY when it never was).
            let mut currencies: Vec<Currency> =
                Currency::ALL.into_iter().filter(|cur| books.balances().history(&account, *cur).is_some()).collect();
            if currencies.is_empty() {
                currencies.push(Currency::Cny);
            }
            currencies.into_iter().map(move |currency| {
                let at = |d: Option<chrono::DateTime<chrono::FixedOffset>>| {
                    let balance =
                        d.map_or(Decimal::ZERO, |t| books.balance_at_time(&account, currency, t.timestamp_micros()));
                    crate::money(balance, currency)
                };
                // In: the day's captures less refunds. Out: what reconciliations cleared. Left:
                // what the channel still owes at the end of the day (carried items, other days).
                Clearing {
                    account: account.path().to_owned(),
                    currency,
                    opening: at(date.pred_opt().and_then(day_end)),
                    closing: at(day_end(date)),
                }
            })
        })
        .collect();
    let t = &r.statement.totals;
    StatementReport {
        statement: r.statement.channel,
        date,
        file: FileInfo {
            name: r.statement.file_name.clone(),
            digest: r.statement.digest.clone(),
            lines: r.statement.lines,
        },
        theirs: *t,
        theirs_net: (t.payment_amount - t.refund_amount - t.fees).normalize(),
        ours: ingest::statement::Totals { fees: shown(r.our_totals.fees), ..r.our_totals },
        counts,
        breaks,
        clearing,
        classification_digest: r.record.classification_digest.clone(),
    }
}

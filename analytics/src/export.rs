//! `posledger export`: the log as Parquet facts for SQL and dataframe tools, written
//! incrementally.
//!
//! Tables (append-only facts; a file once written is never rewritten), partitioned by the
//! business date of the event (`TABLE/date=YYYY-MM-DD/part-FROM-TO-N.parquet`, zstd):
//!
//! - `payments` — one row per capture: position, txn_id, merchant, terminal, channel, MCC,
//!   amount and the merchant fee (Decimal128(18, 2)), currency, UTC time, business date, local
//!   hour and weekday (1 = Monday), payer token;
//! - `adjustments` — voids, reversals and refunds with the original's `txn_id`;
//! - `postings` — every posting of every entry of the books;
//! - `merchants` — the merchants' lifecycle facts;
//! - `recon_items` — reconciliation runs: one row per break or carried item (outcome, ids,
//!   amounts and fees on each side), and the matched lines summed per ledger channel and kind
//!   (`items` says how many), dated by the reconciliation date; `run` tells runs apart (the
//!   latest run of a statement and date is the one in force).
//!
//! A run exports the events from the checkpoint's position (`_export.json`) to the head of
//! the log as it was when the run began. The run's range is written to the checkpoint before
//! any file, files are written to a temporary name and renamed, and the checkpoint moves on
//! only at the end: a run killed halfway leaves no half file visible, and the next run first
//! finishes the same range (the same files by the same names; those already there are kept).
//! Schemas are pinned by a golden test (`tests/fixtures/export-schemas.txt`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int8Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{Datelike, NaiveDate, Timelike};
use ingest::event::Event;
use ingest::store::EventStore;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Rows of one table and date held before they are written as a part file.
pub const EXPORT_PART_ROWS_MAX: usize = 1_000_000;
/// Scale of every money column (Decimal128(18, 2)): CNY's fen; currencies with fewer places
/// are exact at it too.
pub const MONEY_SCALE: i8 = 2;
const MONEY_PRECISION: u8 = 18;
/// Scale of statement fee columns: channels state fees to 5 places (WeChat) and the expected
/// fee (amount × rate) has up to 6.
pub const FEE_SCALE: i8 = 6;

/// The checkpoint's file name in the export directory.
pub const CHECKPOINT_FILE: &str = "_export.json";

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the log or booking it failed.
    #[error(transparent)]
    Replay(#[from] ledger::ReplayError),
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ingest::store::ReadError),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Building or writing Parquet failed.
    #[error("writing Parquet {path}: {reason}")]
    Parquet {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The checkpoint does not belong to this log (it is ahead of it).
    #[error("{0}")]
    Checkpoint(String),
    /// The books that give the entries could not.
    #[error("the books: {0}")]
    Books(String),
}

/// The books an export takes each event's entry from, when they are kept already (a running
/// application's): the entries of a range of positions, read back from them. Without such
/// books, [`export`] replays the log before its range.
pub trait Books {
    /// The entries of the events at positions `from..to`, in position order (events that
    /// book nothing have none); the books must have applied every one of them.
    fn entries(
        &self,
        from: u64,
        to: u64,
    ) -> impl std::future::Future<Output = Result<Vec<ledger::entry::BalancedEntry>, ExportError>> + Send;
}

/// The export checkpoint: how far the log is exported, and the range of a run in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Events before it are exported.
    pub position: u64,
    /// A run that began and did not finish: its range.
    pub running: Option<(u64, u64)>,
}

/// What a run exported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    /// The range of positions exported.
    pub from: u64,
    /// See `from`.
    pub to: u64,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
    /// Files written (files of an interrupted run already there are not counted).
    pub files: u64,
}

/// The tables, their schemas in order.
pub fn schemas() -> Vec<(&'static str, Arc<Schema>)> {
    let money = || DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE);
    let fee = || DataType::Decimal128(MONEY_PRECISION, FEE_SCALE);
    let time = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let s = |fields: Vec<Field>| Arc::new(Schema::new(fields));
    vec![
        (
            "payments",
            s(vec![
                Field::new("position", DataType::UInt64, false),
                Field::new("txn_id", DataType::Utf8, false),
                Field::new("merchant_id", DataType::Utf8, false),
                Field::new("terminal_id", DataType::Utf8, false),
                Field::new("channel", DataType::Utf8, false),
                Field::new("mcc", DataType::Utf8, false),
                Field::new("amount", money(), false),
                Field::new("merchant_fee", money(), false),
                Field::new("currency", DataType::Utf8, false),
                Field::new("at", time(), false),
                Field::new("business_date", DataType::Date32, false),
                Field::new("local_hour", DataType::Int8, false),
                Field::new("weekday", DataType::Int8, false),
                Field::new("payer", DataType::Utf8, true),
            ]),
        ),
        (
            "adjustments",
            s(vec![
                Field::new("position", DataType::UInt64, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("txn_id", DataType::Utf8, false),
                Field::new("original_txn_id", DataType::Utf8, false),
                Field::new("merchant_id", DataType::Utf8, false),
                Field::new("terminal_id", DataType::Utf8, false),
                Field::new("channel", DataType::Utf8, false),
                Field::new("amount", money(), false),
                Field::new("currency", DataType::Utf8, false),
                Field::new("at", time(), false),
                Field::new("business_date", DataType::Date32, false),
            ]),
        ),
        (
            "postings",
            s(vec![
                Field::new("position", DataType::UInt64, false),
                Field::new("event_type", DataType::Utf8, false),
                Field::new("account", DataType::Utf8, false),
                Field::new("currency", DataType::Utf8, false),
                Field::new("amount", money(), false),
                Field::new("at", time(), false),
                Field::new("business_date", DataType::Date32, false),
            ]),
        ),
        (
            "recon_items",
            s(vec![
                Field::new("position", DataType::UInt64, false),
                Field::new("statement", DataType::Utf8, false),
                Field::new("run", DataType::Utf8, false),
                Field::new("outcome", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("items", DataType::UInt64, false),
                Field::new("txn_id", DataType::Utf8, true),
                Field::new("channel_txn_id", DataType::Utf8, true),
                Field::new("ledger_channel", DataType::Utf8, true),
                Field::new("our_amount", money(), true),
                Field::new("their_amount", money(), true),
                Field::new("their_fee", fee(), true),
                Field::new("expected_fee", fee(), true),
                Field::new("item_date", DataType::Date32, true),
                Field::new("business_date", DataType::Date32, false),
            ]),
        ),
        (
            "merchants",
            s(vec![
                Field::new("position", DataType::UInt64, false),
                Field::new("merchant_id", DataType::Utf8, false),
                Field::new("event_type", DataType::Utf8, false),
                Field::new("terminal_id", DataType::Utf8, true),
                Field::new("at", time(), false),
                Field::new("business_date", DataType::Date32, false),
            ]),
        ),
    ]
}

/// The columns of one table and date being filled: one Arrow builder a column, so a row costs
/// no allocation of its own.
struct Cols {
    cols: Vec<Col>,
    rows: usize,
    /// A value that did not fit its column (a bug, or a money amount beyond two places).
    bad: Option<String>,
}

enum Col {
    U64(UInt64Builder),
    Str(StringBuilder),
    /// A decimal column and its scale.
    Money(Decimal128Builder, i8),
    Time(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    I8(Int8Builder),
}

impl Cols {
    fn new(schema: &Schema) -> Cols {
        let cols = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::UInt64 => Col::U64(UInt64Builder::new()),
                DataType::Decimal128(_, scale) => Col::Money(Decimal128Builder::new(), *scale),
                DataType::Timestamp(..) => Col::Time(TimestampMicrosecondBuilder::new()),
                DataType::Date32 => Col::Date(Date32Builder::new()),
                DataType::Int8 => Col::I8(Int8Builder::new()),
                _ => Col::Str(StringBuilder::new()),
            })
            .collect();
        Cols { cols, rows: 0, bad: None }
    }

    fn row(&mut self) -> Row<'_> {
        self.rows += 1;
        Row { cols: self, i: 0 }
    }

    fn finish(&mut self, schema: Arc<Schema>) -> Result<RecordBatch, String> {
        if let Some(bad) = self.bad.take() {
            return Err(bad);
        }
        let columns: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .zip(schema.fields().iter())
            .map(|(c, f)| -> Result<ArrayRef, String> {
                Ok(match (c, f.data_type()) {
                    (Col::U64(b), _) => Arc::new(b.finish()),
                    (Col::Str(b), _) => Arc::new(b.finish()),
                    (Col::Money(b, scale), _) => Arc::new(
                        b.finish().with_precision_and_scale(MONEY_PRECISION, *scale).map_err(|e| e.to_string())?,
                    ),
                    (Col::Time(b), DataType::Timestamp(_, tz)) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
                    (Col::Time(b), _) => Arc::new(b.finish()),
                    (Col::Date(b), _) => Arc::new(b.finish()),
                    (Col::I8(b), _) => Arc::new(b.finish()),
                })
            })
            .collect::<Result<_, _>>()?;
        self.rows = 0;
        RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
    }
}

/// One row being appended, column by column in schema order.
struct Row<'a> {
    cols: &'a mut Cols,
    i: usize,
}

impl Row<'_> {
    fn next(&mut self) -> Option<&mut Col> {
        self.i += 1;
        self.cols.cols.get_mut(self.i - 1)
    }
    fn mismatch(&mut self, what: &str) {
        let i = self.i;
        self.cols.bad.get_or_insert_with(|| format!("column {i} does not take {what}"));
    }
    fn u64(mut self, v: u64) -> Self {
        match self.next() {
            Some(Col::U64(b)) => b.append_value(v),
            _ => self.mismatch("an integer"),
        }
        self
    }
    fn str(mut self, v: &str) -> Self {
        match self.next() {
            Some(Col::Str(b)) => b.append_value(v),
            _ => self.mismatch("text"),
        }
        self
    }
    fn opt_str(mut self, v: Option<&str>) -> Self {
        match self.next() {
            Some(Col::Str(b)) => b.append_option(v),
            _ => self.mismatch("text"),
        }
        self
    }
    fn money(self, v: Decimal) -> Self {
        self.opt_money(Some(v))
    }
    fn opt_money(mut self, v: Option<Decimal>) -> Self {
        match (self.next(), v) {
            (Some(Col::Money(b, _)), None) => b.append_null(),
            (Some(Col::Money(b, scale)), Some(v)) => {
                let scale = *scale as u32;
                let mut d = v;
                d.rescale(scale);
                if d.scale() == scale {
                    b.append_value(d.mantissa());
                } else {
                    b.append_null();
                    self.mismatch(&format!("{v}, which has more than {scale} decimal places"));
                }
            }
            _ => self.mismatch("money"),
        }
        self
    }
    fn opt_date(mut self, d: Option<NaiveDate>) -> Self {
        match self.next() {
            Some(Col::Date(b)) => b.append_option(d.map(|d| d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)),
            _ => self.mismatch("a date"),
        }
        self
    }
    fn time(mut self, micros: i64) -> Self {
        match self.next() {
            Some(Col::Time(b)) => b.append_value(micros),
            _ => self.mismatch("a time"),
        }
        self
    }
    fn date(mut self, d: NaiveDate) -> Self {
        match self.next() {
            Some(Col::Date(b)) => b.append_value(d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE),
            _ => self.mismatch("a date"),
        }
        self
    }
    fn i8(mut self, v: i8) -> Self {
        match self.next() {
            Some(Col::I8(b)) => b.append_value(v),
            _ => self.mismatch("a small integer"),
        }
        self
    }
}

/// Days from the Common Era to 1970-01-01 (Date32 counts from the latter).
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Rows waiting to be written, per table and business date.
#[derive(Default)]
struct Pending {
    rows: BTreeMap<(&'static str, NaiveDate), Cols>,
    parts: BTreeMap<(&'static str, NaiveDate), u32>,
    schemas: BTreeMap<&'static str, Arc<Schema>>,
}

impl Pending {
    fn table(&mut self, table: &'static str, date: NaiveDate) -> &mut Cols {
        if self.schemas.is_empty() {
            self.schemas = schemas().into_iter().collect();
        }
        let schema = self.schemas.get(table).cloned().unwrap_or_else(|| Arc::new(Schema::empty()));
        self.rows.entry((table, date)).or_insert_with(|| Cols::new(&schema))
    }
}

fn read_checkpoint(out: &Path) -> Result<Checkpoint, ExportError> {
    match std::fs::read(out.join(CHECKPOINT_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ExportError::Checkpoint(format!("{} is damaged: {e}", out.join(CHECKPOINT_FILE).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
        Err(source) => Err(ExportError::Io { path: out.join(CHECKPOINT_FILE).display().to_string(), source }),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let err = |source| ExportError::Io { path: path.display().to_string(), source };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Exports what the log holds beyond the checkpoint in `out` (see the module doc), replaying
/// the books up to its range.
pub async fn export<S: EventStore>(store: &S, out: &Path) -> Result<ExportSummary, ExportError> {
    let mut run = Run::begin(store, out)?;
    // The books as of `from`, to book what comes after.
    let mut books = ledger::replay(store, run.from).await?;
    // The events of the range, read and decoded ahead on another thread, booked here.
    let to = run.to;
    ledger::catch_up_events(store, &mut books, to, |position, event, entry| run.take(position, event, entry)).await?;
    run.finish()
}

/// [`export`] with each event's entry taken from `books`, which have applied the log at least
/// as far as its head: nothing before the range is read.
pub async fn export_with_books<S: EventStore, B: Books + Sync>(
    store: &S,
    out: &Path,
    books: &B,
) -> Result<ExportSummary, ExportError> {
    let mut run = Run::begin(store, out)?;
    // The events are read and decoded ahead on another thread while this one writes.
    let mut scan = ledger::scan::Scan::new(store, run.from, run.to, None);
    loop {
        let position = scan.position();
        let Some(batch) = scan.next().await? else { break };
        let end = scan.position();
        let entries = books.entries(position, end).await?;
        let mut entries = entries.iter().peekable();
        for (at, event) in &batch {
            run.take(*at, event, entries.next_if(|x| x.position() == *at))?;
        }
        if let Some(stray) = entries.next() {
            return Err(ExportError::Books(format!("an entry at {} for no event read", stray.position())));
        }
    }
    run.finish()
}

/// One export run under way: its range, the rows waiting to be written, what it wrote.
struct Run<'a> {
    out: &'a Path,
    from: u64,
    to: u64,
    pending: Pending,
    summary: ExportSummary,
}

impl<'a> Run<'a> {
    /// Takes the range from the checkpoint (a run that did not finish is finished first) and
    /// records it as running.
    fn begin<S: EventStore>(store: &S, out: &'a Path) -> Result<Run<'a>, ExportError> {
        std::fs::create_dir_all(out).map_err(|source| ExportError::Io { path: out.display().to_string(), source })?;
        let checkpoint = read_checkpoint(out)?;
        let (from, to) = checkpoint.running.unwrap_or((checkpoint.position, store.head()));
        if to > store.head() || from > to {
            return Err(ExportError::Checkpoint(format!(
                "the export is at position {to} but the log ends at {}: it is another log's export",
                store.head()
            )));
        }
        let running = Checkpoint { position: from, running: Some((from, to)) };
        write_atomically(&out.join(CHECKPOINT_FILE), &serde_json::to_vec(&running).unwrap_or_default())?;
        let summary = ExportSummary { from, to, ..ExportSummary::default() };
        Ok(Run { out, from, to, pending: Pending::default(), summary })
    }

    /// Takes one event's rows (and its entry's), writing the parts that are full.
    fn take(
        &mut self,
        position: u64,
        event: &Event,
        entry: Option<&ledger::entry::BalancedEntry>,
    ) -> Result<(), ExportError> {
        rows_of(position, event, entry, &mut self.pending);
        if self.pending.rows.values().any(|r| r.rows >= EXPORT_PART_ROWS_MAX) {
            flush(self.out, self.from, self.to, &mut self.pending, &mut self.summary, true)?;
        }
        Ok(())
    }

    /// Writes what is left and moves the checkpoint past the range.
    fn finish(mut self) -> Result<ExportSummary, ExportError> {
        flush(self.out, self.from, self.to, &mut self.pending, &mut self.summary, false)?;
        let done = Checkpoint { position: self.to, running: None };
        write_atomically(&self.out.join(CHECKPOINT_FILE), &serde_json::to_vec(&done).unwrap_or_default())?;
        Ok(self.summary)
    }
}

fn rows_of(position: u64, event: &Event, entry: Option<&ledger::entry::BalancedEntry>, pending: &mut Pending) {
    let at = event.occurred_at();
    let date = at.date_naive();
    let time = at.timestamp_micros();
    match event {
        Event::PaymentCaptured(s) => {
            // The merchant's fee is what the books credited to fee income.
            let fee = entry
                .map(|e| {
                    e.postings()
                        .iter()
                        .filter(|p| p.account.path().starts_with("income:mdr:"))
                        .map(|p| -p.amount)
                        .sum::<Decimal>()
                })
                .unwrap_or_default();
            pending
                .table("payments", date)
                .row()
                .u64(position)
                .str(&s.txn_id)
                .str(&s.merchant_id)
                .str(&s.terminal_id)
                .str(s.channel.as_str())
                .str(&s.mcc)
                .money(s.amount)
                .money(fee)
                .str(s.currency.code())
                .time(time)
                .date(date)
                .i8(at.hour() as i8)
                .i8(at.weekday().number_from_monday() as i8)
                .opt_str(s.payer.as_deref());
        }
        Event::PaymentVoided(a) | Event::PaymentRefunded(a) | Event::PaymentReversed(a) => {
            let kind = match event {
                Event::PaymentVoided(_) => "void",
                Event::PaymentRefunded(_) => "refund",
                _ => "reversal",
            };
            pending
                .table("adjustments", date)
                .row()
                .u64(position)
                .str(kind)
                .str(&a.txn_id)
                .str(&a.original_txn_id)
                .str(&a.merchant_id)
                .str(&a.terminal_id)
                .str(a.channel.as_str())
                .money(a.amount)
                .str(a.currency.code())
                .time(time)
                .date(date);
        }
        Event::MerchantApplied(ingest::event::MerchantApplied { merchant_id, .. })
        | Event::MerchantApproved(ingest::event::MerchantApproved { merchant_id, .. })
        | Event::MerchantRejected(ingest::event::MerchantRejected { merchant_id, .. })
        | Event::ContractSigned(ingest::event::ContractSigned { merchant_id, .. })
        | Event::MerchantClosed(ingest::event::MerchantClosed { merchant_id, .. }) => {
            pending
                .table("merchants", date)
                .row()
                .u64(position)
                .str(merchant_id)
                .str(event.event_type())
                .opt_str(None)
                .time(time)
                .date(date);
        }
        Event::ReconciliationBreaks(p) => {
            let cols = pending.table("recon_items", p.date);
            for b in &p.breaks {
                let kind = if b.kind == ingest::statement::LineKind::Refund { "refund" } else { "payment" };
                cols.row()
                    .u64(position)
                    .str(p.channel.as_str())
                    .str(&p.classification_digest)
                    .str(b.outcome.as_str())
                    .str(kind)
                    .u64(1)
                    .opt_str(Some(&b.txn_id))
                    .opt_str(b.channel_txn_id.as_deref())
                    .opt_str(b.ledger_channel.map(|c| c.as_str()))
                    .opt_money(b.our_amount)
                    .opt_money(b.their_amount)
                    .opt_money(b.their_fee)
                    .opt_money(b.expected_fee)
                    .opt_date(b.item_date)
                    .date(p.date);
            }
        }
        Event::ReconciliationCompleted(r) => {
            let cols = pending.table("recon_items", r.date);
            // One row per ledger channel, kind and currency (the table has no currency column:
            // a run's lines in another currency are rows of their own).
            for (channel, m) in r.matched.iter().chain(r.matched_by_currency.values().flatten()) {
                let sides = [("payment", m.payments, m.payment_amount), ("refund", m.refunds, m.refund_amount)];
                for (kind, items, amount) in sides.into_iter().filter(|(_, n, _)| *n > 0) {
                    cols.row()
                        .u64(position)
                        .str(r.channel.as_str())
                        .str(&r.classification_digest)
                        .str("matched")
                        .str(kind)
                        .u64(items)
                        .opt_str(None)
                        .opt_str(None)
                        .opt_str(Some(channel.as_str()))
                        .opt_money(Some(amount))
                        .opt_money(Some(amount))
                        .opt_money(None)
                        .opt_money(None)
                        .opt_date(None)
                        .date(r.date);
                }
            }
        }
        Event::TerminalBound(t) => {
            pending
                .table("merchants", date)
                .row()
                .u64(position)
                .str(&t.merchant_id)
                .str(event.event_type())
                .opt_str(Some(&t.terminal_id))
                .time(time)
                .date(date);
        }
        _ => {}
    }
    if let Some(entry) = entry {
        let cols = pending.table("postings", date);
        for p in entry.postings() {
            cols.row()
                .u64(position)
                .str(event.event_type())
                .str(p.account.path())
                .str(p.currency.code())
                .money(p.amount)
                .time(time)
                .date(date);
        }
    }
}

/// Writes the waiting rows (all of them, or with `full_only` only the tables and dates that
/// reached [`EXPORT_PART_ROWS_MAX`]) as part files.
fn flush(
    out: &Path,
    from: u64,
    to: u64,
    pending: &mut Pending,
    summary: &mut ExportSummary,
    full_only: bool,
) -> Result<(), ExportError> {
    let keys: Vec<_> = pending
        .rows
        .iter()
        .filter(|(_, cols)| cols.rows > 0 && (!full_only || cols.rows >= EXPORT_PART_ROWS_MAX))
        .map(|(k, _)| *k)
        .collect();
    for key in keys {
        let (table, date) = key;
        let schema = pending.schemas.get(table).cloned().unwrap_or_else(|| Arc::new(Schema::empty()));
        let Some(mut cols) = pending.rows.remove(&key) else { continue };
        let n = pending.parts.entry(key).or_default();
        let path: PathBuf =
            out.join(table).join(format!("date={date}")).join(format!("part-{from:012}-{to:012}-{n:04}.parquet"));
        *n += 1;
        let rows = cols.rows as u64;
        *summary.rows.entry(table.to_owned()).or_default() += rows;
        let batch = cols
            .finish(schema.clone())
            .map_err(|reason| ExportError::Parquet { path: path.display().to_string(), reason })?;
        if path.exists() {
            // Written by the same range's interrupted run: the same rows, kept as they are.
            continue;
        }
        write_part(&path, schema, &batch)?;
        summary.files += 1;
    }
    Ok(())
}

fn write_part(path: &Path, schema: Arc<Schema>, batch: &RecordBatch) -> Result<(), ExportError> {
    let io = |source| ExportError::Io { path: path.display().to_string(), source };
    let pq =
        |e: &dyn std::fmt::Display| ExportError::Parquet { path: path.display().to_string(), reason: e.to_string() };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| pq(&e))?;
    writer.write(batch).map_err(|e| pq(&e))?;
    let file = writer.into_inner().map_err(|e| pq(&e))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

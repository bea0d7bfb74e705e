//! The `posledger` command line: argument parsing and wiring, nothing more.
//!
//! Exit codes: 0 success; 1 the command ran but some input was rejected (or verify found
//! damage); 2 the command could not run (bad arguments, unreadable files, store errors).

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ingest::pipeline::{IngestSummary, Ingestor, InputKind};
use ingest::store::{EmbeddedStore, verify_dir};

use crate::bench;

/// posledger: the back office of a POS acquirer.
#[derive(Parser)]
#[command(name = "posledger", version, about)]
struct Cli {
    /// Where posledger keeps its data.
    #[arg(long, global = true, default_value = "./posledger-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest a terminal feed (NDJSON; `-` reads standard input). Idempotent.
    Ingest {
        /// The feed file, or `-`.
        file: PathBuf,
        /// How to print the summary.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Resolve a break: book it, write it off or refund it. Breaks parking more than
    /// POSLEDGER_APPROVAL_OVER (default 1000.00) need a second person (--approved-by).
    Resolve {
        /// The break's id (`posledger breaks`).
        break_id: String,
        /// How.
        #[arg(long, value_enum)]
        action: ResolveArg,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who resolves it.
        #[arg(long)]
        by: String,
        /// A second person who approves it.
        #[arg(long)]
        approved_by: Option<String>,
    },
    /// Merchant and terminal onboarding records.
    Merchants {
        #[command(subcommand)]
        command: MerchantsCommand,
    },
    /// Channel statements (WeChat Pay, Alipay, UnionPay, generic CSV).
    Statement {
        #[command(subcommand)]
        command: StatementCommand,
    },
    /// Reconcile the imported statements of a date against the books: the end-of-day report.
    Reconcile {
        /// The statement date, YYYY-MM-DD.
        #[arg(long)]
        date: chrono::NaiveDate,
        /// Only this statement channel (default: every channel with a statement for the date).
        #[arg(long, value_enum)]
        channel: Option<StatementChannelArg>,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// The breaks of the latest reconciliation of every statement and date, with their ids.
    Breaks {
        /// Only breaks not resolved yet.
        #[arg(long)]
        open: bool,
        /// How to print them.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// The balance of one account, now or as of a position of the log or a business time.
    Balance {
        /// Account path, e.g. `liabilities:merchant:M000001:payable`.
        account: String,
        /// A global position (the events before it) or an RFC 3339 business time (the entries
        /// of events that happened at or before it), e.g. 2026-11-25T23:59:59+08:00.
        #[arg(long)]
        as_of: Option<String>,
        /// How to print it.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Every account's balance, now or as of a position or business time; they sum to zero.
    TrialBalance {
        /// A global position or an RFC 3339 business time (see `balance --as-of`).
        #[arg(long)]
        as_of: Option<String>,
        /// How to print it.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// One account's postings, a page at a time: position, event, amount and balance after.
    History {
        /// Account path.
        account: String,
        /// Currency of the history.
        #[arg(long, default_value = "CNY")]
        currency: ingest::money::Currency,
        /// First position to show (the `next` of the previous page).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Postings per page (at most HISTORY_PAGE_MAX).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// How to print it.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Pay merchants for a date: per merchant gross, refunds, fees and net of the business day
    /// the date settles (T+1: the day before; D0: the date), recorded once and booked as a
    /// payout. Running it again for the same date settles nothing twice.
    Settle {
        /// Settlement date, YYYY-MM-DD.
        #[arg(long)]
        date: chrono::NaiveDate,
        /// How to print the settlements.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Rebuild the books in memory up to a point and print the trial balance and a digest of
    /// every balance (two replays with the same digest hold the same books).
    Replay {
        /// A global position (events before it), or an RFC 3339 business time (events that
        /// happened at or before it).
        #[arg(long)]
        until: String,
        /// How to print it.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// The books as a journal that ledger-cli or beancount read unchanged (to standard output).
    Journal {
        /// ledger (ledger-cli, hledger) or beancount.
        #[arg(long, value_enum, default_value_t = JournalKind::Ledger)]
        format: JournalKind,
        /// Only the events before this global position, or the entries of events that happened
        /// at or before this RFC 3339 business time.
        #[arg(long)]
        until: Option<String>,
    },
    /// Export the log as Parquet (zstd) for SQL and dataframe tools, incrementally: a second run
    /// writes only what is new.
    Export {
        /// Where the tables go (default: DATA_DIR/export).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How to print the summary.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Serve the HTTP API until SIGINT or SIGTERM (requests in flight finish first).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
    },
    /// Manage the HTTP API's keys (stored hashed in DATA_DIR/keys.json).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run a named SQL query (see --list) or your own read-only SQL over the export.
    Query {
        /// The named query (`queries/sql/NAME.sql`).
        #[arg(required_unless_present_any = ["sql", "list"], conflicts_with_all = ["sql", "list"])]
        name: Option<String>,
        /// Your own SQL: one SELECT or WITH query (limits: see README).
        #[arg(long, conflicts_with = "list")]
        sql: Option<String>,
        /// List the named queries with their parameters.
        #[arg(long)]
        list: bool,
        /// A parameter of the named query, NAME=VALUE (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        #[command(flatten)]
        out: AnalyticsOut,
    },
    /// Spending habits with polars over the export: RFM segments, weekly trends with anomaly
    /// flags, basket sizes, cohort retention.
    Analyze {
        /// Which analysis.
        #[arg(value_enum)]
        analysis: AnalysisArg,
        /// rfm: one row per payer instead of per segment.
        #[arg(long)]
        payers: bool,
        /// rfm: the date recency is counted to (default: the last day with a capture).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// trend: one merchant only.
        #[arg(long)]
        merchant: Option<String>,
        #[command(flatten)]
        out: AnalyticsOut,
    },
    /// Check every checksum and the hash chain of the whole event log, then rebuild the books
    /// from position 0 (checking every invariant) and compare them with the ledger checkpoint.
    Verify {
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run benchmarks and print one JSON object per line.
    Bench {
        /// Benchmarks to run (all when none is named): see `bench --list`.
        names: Vec<String>,
        /// List the benchmarks and exit.
        #[arg(long)]
        list: bool,
        /// Multiply every benchmark's size by this (e.g. 0.01 for a quick run).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Timed runs per benchmark; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Scratch directory (default: a temporary directory, removed afterwards).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StatementCommand {
    /// Import a statement file: all of it or nothing; the same file again changes nothing.
    Import {
        /// Which channel's statement.
        #[arg(long, value_enum)]
        channel: StatementChannelArg,
        /// The file (an Alipay statement may be its zip).
        file: PathBuf,
        /// The statement date when neither the file nor its name says (YYYY-MM-DD).
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        /// How to print the summary.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Where `query` and `analyze` read from and how they answer.
#[derive(clap::Args)]
struct AnalyticsOut {
    /// The export to read (default: DATA_DIR/export).
    #[arg(long)]
    export: Option<PathBuf>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
    /// Also draw the chart (the query's line, bars or heat map) into this SVG file.
    #[arg(long)]
    chart: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (shown once).
    Create {
        /// What it may do.
        #[arg(long, value_enum)]
        role: crate::keys::Role,
        /// The merchant a terminal key posts for.
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (the part after `plk_`).
        id: String,
    },
    /// List the keys (never their secrets).
    List,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AnalysisArg {
    /// Recency, frequency, monetary scores and segments of payers.
    Rfm,
    /// Week-over-week net sales per merchant with anomaly flags.
    Trend,
    /// Basket-size distribution.
    Basket,
    /// Retention by first-purchase week.
    Cohort,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ResolveArg {
    /// Book the item where it belongs (its suspense goes to clearing).
    Book,
    /// Write the difference off.
    WriteOff,
    /// Give the money back.
    Refund,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatementChannelArg {
    /// WeChat Pay trade bill.
    Wechat,
    /// Alipay 业务明细 (CSV or zip).
    Alipay,
    /// UnionPay 全渠道 ZM file.
    Unionpay,
    /// Generic CSV: reference, amount, fee, date, status.
    Generic,
}

impl StatementChannelArg {
    fn channel(self) -> ingest::statement::StatementChannel {
        use ingest::statement::StatementChannel as C;
        match self {
            StatementChannelArg::Wechat => C::Wechat,
            StatementChannelArg::Alipay => C::Alipay,
            StatementChannelArg::Unionpay => C::Unionpay,
            StatementChannelArg::Generic => C::Generic,
        }
    }
}

#[derive(Subcommand)]
enum MerchantsCommand {
    /// Import admin records (NDJSON; `-` reads standard input). Idempotent.
    Import {
        /// The records file, or `-`.
        file: PathBuf,
        /// How to print the summary.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// For people.
    Table,
    /// For programs; stable.
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum JournalKind {
    /// ledger-cli and hledger.
    Ledger,
    /// beancount.
    Beancount,
}

impl From<ReportFormat> for analytics::table::Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Table => analytics::table::Format::Table,
            ReportFormat::Json => analytics::table::Format::Json,
            ReportFormat::Csv => analytics::table::Format::Csv,
        }
    }
}

impl From<ReportFormat> for crate::recon::Output {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Table => crate::recon::Output::Table,
            ReportFormat::Json => crate::recon::Output::Json,
            ReportFormat::Csv => crate::recon::Output::Csv,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// For people.
    Table,
    /// For programs; stable.
    Json,
    /// For spreadsheets.
    Csv,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ingest { file, format } => import(&cli.data_dir, &file, InputKind::Feed, format),
        Command::Merchants { command: MerchantsCommand::Import { file, format } } => {
            import(&cli.data_dir, &file, InputKind::Admin, format)
        }
        Command::Verify { format } => verify(&cli.data_dir, format),
        Command::Export { out, format } => export(&cli.data_dir, out, format),
        Command::Serve { addr } => crate::http::serve(&cli.data_dir, addr),
        Command::Keys { command } => keys(&cli.data_dir, command),
        Command::Query { name, sql, list, params, out } => {
            use crate::analyze::QueryTarget;
            let target = match (name, sql) {
                _ if list => QueryTarget::List,
                (Some(name), _) => QueryTarget::Named(name),
                (None, Some(sql)) => QueryTarget::Sql(sql),
                (None, None) => anyhow::bail!("name a query, or give --sql or --list"),
            };
            crate::analyze::query(&cli.data_dir, out.export, target, &params, out.format.into(), out.chart)
        }
        Command::Analyze { analysis, payers, as_of, merchant, out } => {
            use crate::analyze::Analysis;
            let analysis = match analysis {
                AnalysisArg::Rfm => Analysis::Rfm { payers },
                AnalysisArg::Trend => Analysis::Trend,
                AnalysisArg::Basket => Analysis::Basket,
                AnalysisArg::Cohort => Analysis::Cohort,
            };
            let format = out.format.into();
            crate::analyze::analyze(&cli.data_dir, out.export, analysis, merchant.as_deref(), as_of, format, out.chart)
        }
        Command::Statement { command: StatementCommand::Import { channel, file, date, format } } => {
            crate::recon::import(&cli.data_dir, channel.channel(), &file, date, format == Format::Json)
        }
        Command::Reconcile { date, channel, format } => {
            crate::recon::reconcile(&cli.data_dir, date, channel.map(StatementChannelArg::channel), format.into())
        }
        Command::Breaks { open, format } => crate::recon::breaks(&cli.data_dir, open, format.into()),
        Command::Resolve { break_id, action, reason, by, approved_by } => {
            let action = match action {
                ResolveArg::Book => ingest::event::ResolveAction::Book,
                ResolveArg::WriteOff => ingest::event::ResolveAction::WriteOff,
                ResolveArg::Refund => ingest::event::ResolveAction::Refund,
            };
            crate::recon::resolve(&cli.data_dir, &break_id, action, &reason, &by, approved_by.as_deref())
        }
        Command::Balance { account, as_of, format } => {
            balances(&cli.data_dir, Some(&account), as_of.as_deref(), format)
        }
        Command::TrialBalance { as_of, format } => balances(&cli.data_dir, None, as_of.as_deref(), format),
        Command::History { account, currency, from, limit, format } => {
            history(&cli.data_dir, &account, currency, from, limit, format)
        }
        Command::Journal { format, until } => journal(&cli.data_dir, format, until.as_deref()),
        Command::Replay { until, format } => replay(&cli.data_dir, &until, format),
        Command::Settle { date, format } => settle(&cli.data_dir, date, format),
        Command::Bench { names, list, scale, repeat, work_dir } => {
            if list {
                for b in bench::BENCHMARKS {
                    println!("{:<28} {}", b.name, b.about);
                }
                return Ok(ExitCode::SUCCESS);
            }
            bench::run(&names, scale, repeat, work_dir.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The event log's directory inside the data directory.
pub fn events_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

/// The ledger's checkpoint file inside the data directory.
pub fn ledger_checkpoint(data_dir: &Path) -> PathBuf {
    data_dir.join("ledger.ckpt")
}

/// Most postings one page of `posledger history` shows.
pub const HISTORY_PAGE_MAX: usize = 10_000;

/// The books as a command opened them, and the position of the checkpoint they came from.
pub(crate) struct Books {
    pub(crate) books: ledger::Projection,
    saved_at: Option<u64>,
}

/// Opens the books from the ledger checkpoint (or the log, when there is none or it is
/// refused), caught up to the head.
pub(crate) async fn open_books(store: &EmbeddedStore, data_dir: &Path) -> Result<Books> {
    let path = ledger_checkpoint(data_dir);
    let (books, opened) = ledger::open_books(store, Some(&path)).await.context("booking the event log")?;
    let saved_at = match opened {
        ledger::Opened::Resumed(at) => Some(at),
        ledger::Opened::Refused(why) => {
            eprintln!("warning: {why}; the books were rebuilt from position 0");
            None
        }
        ledger::Opened::Rebuilt => None,
    };
    Ok(Books { books, saved_at })
}

/// Saves a new checkpoint when the books moved on since theirs (after the command answered:
/// the answer does not wait for the file). The checkpoint only saves the next run from
/// replaying, so failing to write it loses nothing and is a warning.
pub(crate) async fn keep_books(store: &EmbeddedStore, data_dir: &Path, books: &Books) {
    if books.saved_at != Some(books.books.position())
        && let Err(e) = ledger::save_books(store, &books.books, &ledger_checkpoint(data_dir)).await
    {
        eprintln!("warning: {e} (the next run replays the log instead)");
    }
}

/// A point of the books: a global position, or an RFC 3339 business time.
enum AsOf {
    Position(u64),
    Time(chrono::DateTime<chrono::FixedOffset>),
}

fn parse_as_of(text: &str, flag: &str) -> Result<AsOf> {
    if let Ok(p) = text.parse::<u64>() {
        return Ok(AsOf::Position(p));
    }
    chrono::DateTime::parse_from_rfc3339(text).map(AsOf::Time).with_context(|| {
        format!("{flag} {text:?} is neither a position nor an RFC 3339 time like 2026-11-25T23:59:59+08:00")
    })
}

/// The write model's checkpoint file inside the data directory.
pub fn writemodel_checkpoint(data_dir: &Path) -> PathBuf {
    data_dir.join("writemodel.json")
}

pub(crate) fn open_store(data_dir: &Path) -> Result<EmbeddedStore> {
    let store = EmbeddedStore::open(events_dir(data_dir))
        .with_context(|| format!("opening the event store in {}", data_dir.display()))?;
    let report = store.open_report();
    if report.truncated_bytes > 0 {
        eprintln!("recovered: cut {} bytes of an unfinished last commit (never acknowledged)", report.truncated_bytes);
    }
    Ok(store)
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn import(data_dir: &Path, file: &Path, kind: InputKind, format: Format) -> Result<ExitCode> {
    let (input, total): (Box<dyn BufRead>, Option<u64>) = if file == Path::new("-") {
        (Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())), None)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().map(|m| m.len()).ok();
        (Box::new(BufReader::with_capacity(1 << 20, f)), len)
    };
    let rt = runtime()?;
    let result = rt.block_on(async {
        let store = Arc::new(open_store(data_dir)?);
        let checkpoint = writemodel_checkpoint(data_dir);
        let mut ingestor = Ingestor::open(store.clone(), Some(&checkpoint)).await?;
        if kind == InputKind::Admin {
            // A merchant closes only with a zero payable: the books say whose is not.
            let opened = open_books(&store, data_dir).await?;
            ingestor.set_owed_merchants(opened.books.merchants_with_payable());
            keep_books(&store, data_dir, &opened).await;
        }
        let bar = progress_bar(total);
        let result = ingestor
            .ingest_reader(input, kind, |bytes, s| {
                bar.set_position(bytes);
                bar.set_message(format!(
                    "{} accepted, {} duplicate, {} rejected",
                    s.accepted, s.duplicates, s.rejected
                ));
            })
            .await;
        bar.finish_and_clear();
        // The checkpoint only saves the next run from reading the log again: failing to write
        // it loses nothing, so it is a warning, and it is tried after a failure too.
        if let Err(e) = ingestor.save_checkpoint(&checkpoint).await {
            eprintln!("warning: {e} (the next run rebuilds it from the event log)");
        }
        anyhow::Ok(result)
    })?;
    match result {
        Ok(summary) => {
            print_summary(&summary, format)?;
            Ok(if summary.rejected > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Err(failure) => {
            // What was settled before the failure is stored for good: say so, with its totals.
            print_summary(&failure.summary, format)?;
            eprintln!(
                "error: ingesting {} stopped: {}\nthe records counted above are settled; running the same input \
                 again stores nothing twice",
                file.display(),
                failure.error
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn print_summary(s: &IngestSummary, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(s)?)?,
        Format::Table => {
            writeln!(out, "records    {}", s.records)?;
            writeln!(out, "accepted   {}", s.accepted)?;
            writeln!(out, "duplicates {}", s.duplicates)?;
            writeln!(out, "rejected   {}", s.rejected)?;
            if !s.first_rejections.is_empty() {
                let more = s.rejected - s.first_rejections.len() as u64;
                writeln!(out, "first rejections:")?;
                for r in &s.first_rejections {
                    let field = r.field.as_deref().map(|f| format!(" field `{f}`")).unwrap_or_default();
                    let reference = r.reference.as_deref().map(|f| format!(" {f}")).unwrap_or_default();
                    writeln!(out, "  line {}{reference}{field}: {} [{}]", r.line, r.message, r.code)?;
                }
                if more > 0 {
                    writeln!(out, "  ... and {more} more")?;
                }
            }
        }
    }
    Ok(())
}

/// Books the log and prints one account's balance (`account`) or the trial balance.
fn balances(data_dir: &Path, account: Option<&str>, as_of: Option<&str>, format: ReportFormat) -> Result<ExitCode> {
    let account = account.map(ledger::entry::Account::parse).transpose().map_err(anyhow::Error::msg)?;
    let as_of = as_of.map(|t| parse_as_of(t, "--as-of")).transpose()?;
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    let opened = rt.block_on(open_books(&store, data_dir))?;
    let books = &opened.books;
    let (all, meta, footer) = match as_of {
        None | Some(AsOf::Position(_)) => {
            let until = match as_of {
                Some(AsOf::Position(p)) => p,
                _ => u64::MAX,
            };
            let position = until.min(books.position());
            (
                books.balances().trial_balance(until),
                serde_json::json!({"as_of_position": position}),
                format!("(as of position {position}; debits positive, credits negative)"),
            )
        }
        Some(AsOf::Time(t)) => (
            books.trial_balance_at_time(t.timestamp_micros()),
            serde_json::json!({"as_of_time": t.to_rfc3339(), "events": books.position()}),
            format!("(entries of events at or before {}; debits positive, credits negative)", t.to_rfc3339()),
        ),
    };
    let rows: Vec<_> = all.into_iter().filter(|(a, _, _)| account.as_ref().is_none_or(|wanted| a == wanted)).collect();
    // An account never used has a zero balance, not no balance.
    let rows = match (&account, rows.is_empty()) {
        (Some(account), true) => {
            vec![(account.clone(), ingest::money::Currency::Cny, rust_decimal::Decimal::new(0, 2))]
        }
        _ => rows,
    };
    print_balances(&rows, format, meta, &footer)?;
    rt.block_on(keep_books(&store, data_dir, &opened));
    Ok(ExitCode::SUCCESS)
}

fn history(
    data_dir: &Path,
    account: &str,
    currency: ingest::money::Currency,
    from: u64,
    limit: usize,
    format: ReportFormat,
) -> Result<ExitCode> {
    use ingest::store::EventStore;
    let account = ledger::entry::Account::parse(account).map_err(anyhow::Error::msg)?;
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        anyhow::bail!("--limit {limit} is out of range: 1 to {HISTORY_PAGE_MAX} postings a page");
    }
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    let opened = rt.block_on(open_books(&store, data_dir))?;
    let (rows, next) = rt.block_on(async {
        let mut points: Vec<_> = opened
            .books
            .balances()
            .history(&account, currency)
            .map(|h| h.points_from(from).take(limit + 1).collect())
            .unwrap_or_default();
        let next = (points.len() > limit).then(|| points.pop().map(|p| p.position)).flatten();
        let mut rows = Vec::with_capacity(points.len());
        for p in points {
            let stored = store.read_all(p.position, 1).await?;
            let e = stored.first().context("a posting's event is missing from the log")?;
            let event = ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)?;
            rows.push((p, event.event_type(), event.reference(), event.occurred_at()));
        }
        anyhow::Ok((rows, next))
    })?;
    let mut out = std::io::stdout().lock();
    match format {
        ReportFormat::Json => {
            let postings: Vec<_> = rows
                .iter()
                .map(|(p, kind, reference, at)| {
                    serde_json::json!({
                        "position": p.position, "event_type": kind, "reference": reference,
                        "occurred_at": at.to_rfc3339(), "amount": p.amount.to_string(), "balance": p.balance.to_string(),
                    })
                })
                .collect();
            let page = serde_json::json!({
                "account": account.path(), "currency": currency.code(), "postings": postings, "next": next,
            });
            writeln!(out, "{page}")?;
        }
        ReportFormat::Csv => {
            writeln!(out, "position,event_type,reference,occurred_at,amount,balance")?;
            for (p, kind, reference, at) in &rows {
                writeln!(out, "{},{kind},{reference},{},{},{}", p.position, at.to_rfc3339(), p.amount, p.balance)?;
            }
        }
        ReportFormat::Table => {
            for (p, kind, reference, at) in &rows {
                writeln!(
                    out,
                    "{:>10}  {}  {kind:<18} {reference:<36} {:>14} {:>16}",
                    p.position,
                    at.to_rfc3339(),
                    p.amount,
                    p.balance
                )?;
            }
            match next {
                Some(n) => writeln!(out, "(more: --from {n})")?,
                None => writeln!(out, "(end of history)")?,
            }
        }
    }
    drop(out);
    rt.block_on(keep_books(&store, data_dir, &opened));
    Ok(ExitCode::SUCCESS)
}

/// Prints balances as a table (with `footer` under it), CSV, or a JSON object holding `meta`'s
/// fields and the rows under `balances`.
fn print_balances(
    rows: &[(ledger::entry::Account, ingest::money::Currency, rust_decimal::Decimal)],
    format: ReportFormat,
    mut meta: serde_json::Value,
    footer: &str,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        ReportFormat::Json => {
            let balances: Vec<_> = rows
                .iter()
                .map(|(a, c, b)| serde_json::json!({"account": a.path(), "currency": c.code(), "balance": b.to_string()}))
                .collect();
            meta["balances"] = serde_json::Value::Array(balances);
            writeln!(out, "{meta}")?;
        }
        ReportFormat::Csv => {
            writeln!(out, "account,currency,balance")?;
            for (a, c, b) in rows {
                writeln!(out, "{a},{c},{b}")?;
            }
        }
        ReportFormat::Table => {
            let width = rows.iter().map(|(a, _, _)| a.path().len()).max().unwrap_or(7);
            for (a, c, b) in rows {
                writeln!(out, "{:<width$}  {b:>16} {c}", a.path())?;
            }
            writeln!(out, "{footer}")?;
        }
    }
    Ok(())
}

fn settle(data_dir: &Path, date: chrono::NaiveDate, format: ReportFormat) -> Result<ExitCode> {
    use ingest::store::{EventStore, ExpectedRevision};
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    let opened = rt.block_on(open_books(&store, data_dir))?;
    let settled = rt.block_on(async {
        let mut settled = Vec::new();
        for s in opened.books.settlements_due(date) {
            let event = ingest::event::Event::MerchantSettled(s.clone());
            let appended = store
                .append(&event.stream(), ExpectedRevision::Any, vec![event.to_event_data()])
                .await
                .with_context(|| format!("recording the settlement of {}", s.merchant_id))?;
            settled.push((s, appended.first_position));
        }
        anyhow::Ok(settled)
    })?;
    let mut out = std::io::stdout().lock();
    match format {
        ReportFormat::Json => {
            let rows: Vec<_> = settled
                .iter()
                .map(|(s, position)| {
                    serde_json::json!({
                        "merchant_id": s.merchant_id, "business_date": s.business_date.to_string(),
                        "gross": s.gross.to_string(), "refunds": s.refunds.to_string(), "fees": s.fees.to_string(),
                        "net": s.net.to_string(), "currency": s.currency.code(), "position": position,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::json!({"settlement_date": date.to_string(), "settled": rows}))?;
        }
        ReportFormat::Csv => {
            writeln!(out, "merchant_id,business_date,gross,refunds,fees,net,currency")?;
            for (s, _) in &settled {
                let (m, d, c) = (&s.merchant_id, s.business_date, s.currency);
                writeln!(out, "{m},{d},{},{},{},{},{c}", s.gross, s.refunds, s.fees, s.net)?;
            }
        }
        ReportFormat::Table => {
            writeln!(out, "{:<10} {:>12} {:>12} {:>10} {:>12}", "merchant", "gross", "refunds", "fees", "net")?;
            for (s, _) in &settled {
                let (m, c) = (&s.merchant_id, s.currency);
                writeln!(out, "{m:<10} {:>12} {:>12} {:>10} {:>12} {c}", s.gross, s.refunds, s.fees, s.net)?;
            }
            if settled.is_empty() {
                writeln!(out, "nothing to settle for {date} (no business that day, or already settled)")?;
            }
        }
    }
    drop(out);
    rt.block_on(keep_books(&store, data_dir, &opened));
    Ok(ExitCode::SUCCESS)
}

fn replay(data_dir: &Path, until: &str, format: ReportFormat) -> Result<ExitCode> {
    let until_point = parse_as_of(until, "--until")?;
    let rt = runtime()?;
    let (rows, events_read, entries, digest) = rt.block_on(async {
        let store = open_store(data_dir)?;
        anyhow::Ok(match until_point {
            AsOf::Position(position) => {
                let books = ledger::replay(&store, position).await.context("replaying the event log")?;
                (books.balances().trial_balance(u64::MAX), books.position(), books.entries(), books.digest())
            }
            AsOf::Time(time) => {
                let r = ledger::replay_until_time(&store, time).await.context("replaying the event log")?;
                (r.rows, r.events_read, r.entries, r.digest)
            }
        })
    })?;
    let meta = serde_json::json!({"until": until, "events_read": events_read, "entries": entries, "digest": digest});
    let footer = format!("events read {events_read}, entries {entries}, digest {digest}");
    print_balances(&rows, format, meta, &footer)?;
    Ok(ExitCode::SUCCESS)
}

fn journal(data_dir: &Path, kind: JournalKind, until: Option<&str>) -> Result<ExitCode> {
    let until = until.map(|u| parse_as_of(u, "--until")).transpose()?;
    let format = match kind {
        JournalKind::Ledger => ledger::journal::JournalFormat::Ledger,
        JournalKind::Beancount => ledger::journal::JournalFormat::Beancount,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(data_dir)?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let written = match until {
            Some(AsOf::Time(t)) => {
                ledger::journal::write_journal_to_time(&store, t.timestamp_micros(), format, &mut out).await
            }
            Some(AsOf::Position(p)) => ledger::journal::write_journal(&store, p, format, &mut out).await,
            None => ledger::journal::write_journal(&store, u64::MAX, format, &mut out).await,
        };
        match written.map_err(anyhow::Error::from).and_then(|_| Ok(out.flush()?)) {
            // A reader that stopped early (`| head`) is not an error.
            Err(e)
                if e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                        || c.to_string().contains("Broken pipe")
                }) =>
            {
                Ok(())
            }
            other => other,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn keys(data_dir: &Path, command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create { role, merchant } => {
            let (record, token) = crate::keys::create(data_dir, role, merchant)?;
            eprintln!("key {} ({}) created; keep it now, it is not shown again:", record.id, record.role.as_str());
            println!("{token}");
        }
        KeysCommand::Revoke { id } => {
            let record = crate::keys::revoke(data_dir, &id)?;
            println!("key {} ({}) revoked", record.id, record.role.as_str());
        }
        KeysCommand::List => {
            for k in crate::keys::list(data_dir)? {
                let state = if k.revoked { "revoked" } else { "active" };
                println!(
                    "{}  {:<8}  {:<10}  {}  {state}",
                    k.id,
                    k.role.as_str(),
                    k.merchant.as_deref().unwrap_or("-"),
                    k.created_at
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export(data_dir: &Path, out: Option<PathBuf>, format: Format) -> Result<ExitCode> {
    let out = out.unwrap_or_else(|| data_dir.join("export"));
    let rt = runtime()?;
    let store = open_store(data_dir)?;
    let summary = rt.block_on(analytics::export::export(&store, &out)).context("exporting")?;
    match format {
        Format::Json => println!("{}", serde_json::to_string(&summary)?),
        Format::Table => {
            println!(
                "exported positions {}..{} to {}: {} file(s)",
                summary.from,
                summary.to,
                out.display(),
                summary.files
            );
            for (table, rows) in &summary.rows {
                println!("  {table:<12} {rows:>10} rows");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(data_dir: &Path, format: Format) -> Result<ExitCode> {
    let dir = events_dir(data_dir);
    if !dir.exists() {
        anyhow::bail!("{} holds no event log", data_dir.display());
    }
    let report = match verify_dir(&dir) {
        Ok(report) => report,
        Err(ingest::store::VerifyError::Io(e)) => anyhow::bail!(e),
        Err(e) => {
            match format {
                Format::Json => println!("{}", serde_json::json!({"ok": false, "error": e.to_string()})),
                Format::Table => println!("FAILED: {e}"),
            }
            return Ok(ExitCode::from(1));
        }
    };
    let rt = runtime()?;
    let books = rt.block_on(async {
        let store = open_store(data_dir)?;
        anyhow::Ok(ledger::verify_books(&store, Some(&ledger_checkpoint(data_dir))).await)
    })?;
    let books = match books {
        Ok(b) => b,
        Err(e) => {
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"ok": false, "events": report.events, "head_hash": report.head_hash,
                                       "error": format!("books: {e}")})
                ),
                Format::Table => {
                    println!("log ok: {} events, head hash {}", report.events, report.head_hash);
                    println!("FAILED: books: {e}");
                }
            }
            return Ok(ExitCode::from(1));
        }
    };
    let checkpoint = books.checkpoint.as_ref().map(|c| {
        serde_json::json!({
            "position": c.position, "refused": c.refused, "matches_rebuild": c.matches_rebuild,
            "resumed_matches_rebuild": c.resumed_matches_rebuild,
        })
    });
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "ok": books.ok(), "events": report.events, "frames": report.frames,
                "segments": report.segments, "head_hash": report.head_hash,
                "books": {"entries": books.entries, "postings": books.postings, "digest": books.digest,
                          "state_digest": books.state_digest, "checkpoint": checkpoint},
            })
        ),
        Format::Table => {
            println!("ok: {} events in {} commits, {} segment(s)", report.events, report.frames, report.segments);
            println!("head hash {}", report.head_hash);
            println!(
                "books rebuilt from position 0: {} entries, {} postings, trial balance zero, every balance the sum \
                 of its postings",
                books.entries, books.postings
            );
            println!("balances digest {}", books.digest);
            match &books.checkpoint {
                None => println!("no ledger checkpoint to compare"),
                Some(c) => match &c.refused {
                    Some(why) => println!("FAILED: ledger checkpoint: {why}"),
                    None => {
                        let word = |ok: bool| if ok { "equal" } else { "DIFFERENT" };
                        println!(
                            "ledger checkpoint at position {}: {} to a rebuild to that position; caught up, {} to \
                             the rebuild",
                            c.position,
                            word(c.matches_rebuild),
                            word(c.resumed_matches_rebuild)
                        );
                    }
                },
            }
        }
    }
    Ok(if books.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

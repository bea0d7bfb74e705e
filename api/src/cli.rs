//! The `posledger` command line: an adapter over [`app::App`]. It parses arguments into a
//! use case's arguments, runs the use case, and renders its typed result ([`crate::render`]).
//!
//! When `posledger serve` holds the data directory, the use case runs in the server, reached
//! through its local socket ([`crate::local`]); otherwise the command opens the data
//! directory itself. Either way the command prints the same output and exits with the same
//! code.
//!
//! Exit codes: 0 success; 1 the command ran but some input was rejected, a break was found,
//! or verify found damage; 2 the command could not run (bad arguments, unreadable files,
//! store errors).

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use app::request::{Reply, Request};
use app::{AsOf, DataDir, Failure};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ingest::pipeline::InputKind;

use crate::render;

use analytics::sql::cluster::ClusterUrl;

/// posledger: the back office of a POS acquirer.
#[derive(Parser)]
#[command(name = "posledger", version, about)]
struct Cli {
    /// Where posledger keeps its data [default: ./posledger-data; for `demo`, ./posledger-demo].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Keep the events in a KurrentDB server instead of the data directory's own log:
    /// kurrentdb://[user:password@]host:port[?tls=false][&namespace=NS] (default namespace
    /// `posledger`), or `embedded` [default: POSLEDGER_STORE, else embedded]. Needs a build with
    /// `--features kurrentdb`; the data directory still holds keys, checkpoints and exports.
    #[arg(long, global = true)]
    store: Option<String>,
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
    /// Resolve a break: book it, write it off or refund it. A break parking more than
    /// POSLEDGER_APPROVAL_OVER (default 1000.00) is only proposed: it waits for another
    /// person's `posledger approve`.
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
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Approve the resolution proposed for a break (`posledger breaks` shows it), as a second
    /// person: name the action and reason you read.
    Approve {
        /// The break's id.
        break_id: String,
        /// The proposed action.
        #[arg(long, value_enum)]
        action: ResolveArg,
        /// The proposed reason.
        #[arg(long)]
        reason: String,
        /// Who approves it (not who proposed it).
        #[arg(long)]
        by: String,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
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
    /// The whole end of a business day in one command: import the day's statement files,
    /// reconcile every statement (and the terminal batches, also with none), settle what is due
    /// with holds, export, and verify what the day added. Run again, it records nothing twice
    /// and prints the same report. Exit 0 clean, 1 breaks, unbalanced batches or holds, 2 failure.
    DayEnd {
        /// The business date, YYYY-MM-DD.
        #[arg(long, value_parser = app::dates::date_arg)]
        date: chrono::NaiveDate,
        /// A directory of the day's statement files (channel from each file's name or content);
        /// without it, the statements imported for the date already.
        #[arg(long)]
        statements: Option<PathBuf>,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Reconcile the imported statements of a date against the books: the end-of-day report.
    Reconcile {
        /// The statement date, YYYY-MM-DD.
        #[arg(long, value_parser = app::dates::date_arg)]
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
        /// Only the breaks of this reconciliation date.
        #[arg(long, value_parser = app::dates::date_arg)]
        date: Option<chrono::NaiveDate>,
        /// Only the breaks of this statement channel.
        #[arg(long, value_enum)]
        channel: Option<StatementChannelArg>,
        /// How to print them.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// The balance of one account, now or as of a position of the log or a business time.
    Balance {
        /// Account path, e.g. `liabilities:merchant:M000001:payable`.
        account: String,
        /// One currency only (default: every currency the account was posted in).
        #[arg(long)]
        currency: Option<ingest::money::Currency>,
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
    /// payout; a merchant with an unbalanced batch closed that day or an open break over the
    /// approval threshold is held instead (暂缓结算) and paid by a later settlement once the
    /// causes are gone. Running it again for the same date pays nothing twice.
    Settle {
        /// Settlement date, YYYY-MM-DD.
        #[arg(long, value_parser = app::dates::date_arg)]
        date: chrono::NaiveDate,
        /// How to print the settlements.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// The settlements recorded for a date: every merchant paid, and every one held with the
    /// causes (暂缓结算).
    Settlements {
        /// Settlement date, YYYY-MM-DD.
        #[arg(long, value_parser = app::dates::date_arg)]
        date: chrono::NaiveDate,
        /// How to print them.
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
    /// Generate a realistic acquirer into a fresh data directory and run every day's day-end on
    /// it: onboarding, days of card, QR and cash takings, the channels' statements with breaks
    /// planted in them. Prints what was planted against what posledger found, the books, the
    /// named queries' top rows and charts, and the commands to try next. Exit 0 when everything
    /// agrees, 1 when it does not.
    Demo {
        /// Merchants.
        #[arg(long, default_value_t = demo::Options::default().merchants)]
        merchants: u32,
        /// Sales a day, all merchants together.
        #[arg(long, default_value_t = demo::Options::default().payments_per_day)]
        payments_per_day: u64,
        /// Business days.
        #[arg(long, default_value_t = demo::Options::default().days)]
        days: u32,
        /// The seed: the same seed and sizes give the same data.
        #[arg(long, default_value_t = demo::Options::default().seed)]
        seed: u64,
        /// Then serve the HTTP API on the demo's data, with a key for every role.
        #[arg(long)]
        serve: bool,
        /// Where to serve it.
        #[arg(long, default_value = "127.0.0.1:8080", requires = "serve")]
        addr: std::net::SocketAddr,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Serve the HTTP API until SIGINT or SIGTERM (requests in flight finish first).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Run the SQL query routes' queries on this Ballista cluster (df://HOST:PORT): planned
        /// and checked in the server's worker processes, run by the cluster's executors.
        #[arg(long)]
        cluster: Option<ClusterUrl>,
    },
    /// Be a node of a Ballista cluster that runs `query --cluster` and `serve --cluster`.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
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
        /// Run it on the Ballista cluster whose scheduler is at df://HOST:PORT (every node
        /// must read the export at the same path).
        #[arg(long, conflicts_with = "list")]
        cluster: Option<ClusterUrl>,
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
        #[arg(long, value_parser = app::dates::date_arg)]
        as_of: Option<chrono::NaiveDate>,
        /// trend: one merchant only.
        #[arg(long)]
        merchant: Option<String>,
        #[command(flatten)]
        out: AnalyticsOut,
    },
    /// Back the data directory up into DIR while it may serve (数据备份): the log up to its
    /// durable head and the state files that are not derived from it. Into the same DIR again,
    /// only what is new is copied; every manifest stays restorable.
    Backup {
        /// The backup directory (new, empty, or one posledger backed up into before).
        #[arg(long)]
        to: PathBuf,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Copy the whole event history between this data directory and a KurrentDB server:
    /// `--to ADDRESS` copies the data directory's log into an empty namespace, `--from
    /// ADDRESS` a namespace into a new data directory. Both chains are verified and every
    /// event compared. ADDRESS: kurrentdb://[user:password@]host:port[?tls=false][&namespace=NS]
    /// (namespace default `posledger`). Needs a build with `--features kurrentdb`, and the data
    /// directory free (no server running on it).
    #[command(group(clap::ArgGroup::new("direction").required(true).args(["to", "from"])))]
    Migrate {
        /// Copy this data directory's log to the KurrentDB namespace at this address.
        #[arg(long)]
        to: Option<String>,
        /// Copy the KurrentDB namespace at this address into this (new) data directory.
        #[arg(long)]
        from: Option<String>,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Restore a backup into a new data directory (--data-dir), whole or cut at a commit, then
    /// rebuild the books and the write model from the restored log.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// Which manifest (its file name or number; default: the latest).
        #[arg(long)]
        manifest: Option<String>,
        /// Keep the events before this global position, or those up to the first that happened
        /// after this RFC 3339 business time; cut at the commit boundary at or before it.
        #[arg(long)]
        until: Option<String>,
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The event log as committed, for an auditor's own check of the hash chain (NDJSON: a
    /// line per commit, a line per event with its stored bytes, an end line).
    Events {
        /// The first position (the commit holding it is listed whole).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// The events before this global position, or up to the first that happened after this
        /// RFC 3339 business time (whole commits).
        #[arg(long)]
        until: Option<String>,
        /// The output format.
        #[arg(long, value_enum, default_value_t = EventsFormat::Ndjson)]
        format: EventsFormat,
    },
    /// Check every checksum and the hash chain of the whole event log, then rebuild the books
    /// from position 0 (checking every invariant) and compare them with the ledger checkpoint.
    Verify {
        /// How to print the report.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also check that the log still extends this anchor (`posledger anchor` printed it).
        #[arg(long, value_name = "HASH@POSITION")]
        anchor: Option<String>,
    },
    /// Record the log's head as it is now (a `LogAnchored` event) and print it as
    /// HASH@POSITION, to publish outside posledger; `verify --anchor` checks the log extends it.
    Anchor {
        /// How to print it.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// How `events` prints.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventsFormat {
    /// One JSON object per line.
    Ndjson,
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
        #[arg(long, value_parser = app::dates::date_arg)]
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
enum ClusterCommand {
    /// Run Ballista's scheduler: it plans each query's stages and hands their tasks to the
    /// executors. Prints `scheduler listening on df://HOST:PORT`.
    Scheduler {
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = cluster::SCHEDULER_BIND_DEFAULT)]
        bind: std::net::SocketAddr,
        /// Seconds without an executor's heartbeat before its tasks run elsewhere.
        #[arg(long, default_value_t = cluster::EXECUTOR_TIMEOUT_DEFAULT.as_secs())]
        executor_timeout: u64,
    },
    /// Run Ballista's executor for a scheduler: it runs query tasks over the export.
    Executor {
        /// The scheduler, df://HOST:PORT.
        #[arg(long)]
        scheduler: ClusterUrl,
        /// Tasks it runs at once [default: the machine's cores].
        #[arg(long)]
        slots: Option<usize>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind_host: String,
        /// The host name other nodes reach it by [default: --bind-host].
        #[arg(long)]
        external_host: Option<String>,
        /// Its Arrow Flight port (shuffle data); its gRPC port is the next one.
        #[arg(long, default_value_t = cluster::EXECUTOR_PORT_DEFAULT)]
        port: u16,
        /// Where it keeps shuffle files between a query's stages, in a directory of its own,
        /// executor-PORT [default: DATA_DIR/cluster-work].
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (shown once).
    Create {
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The merchant a terminal key posts for.
        #[arg(long)]
        merchant: Option<String>,
        /// When the key stops authenticating: an RFC 3339 time to come, like
        /// 2027-01-01T00:00:00+08:00 (default: never; `keys revoke` ends it earlier).
        #[arg(long)]
        expires: Option<chrono::DateTime<chrono::FixedOffset>>,
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

impl From<ReportFormat> for render::Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Table => render::Format::Table,
            ReportFormat::Json => render::Format::Json,
            ReportFormat::Csv => render::Format::Csv,
        }
    }
}

impl From<Format> for render::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Table => render::Format::Table,
            Format::Json => render::Format::Json,
        }
    }
}

/// The roles of API keys.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoleArg {
    /// Posts its merchant's terminal records.
    Terminal,
    /// Balances, reconciliation, settlement.
    Finance,
    /// Queries and analytics, without payer identities.
    Analyst,
    /// Reads everything.
    Auditor,
    /// Everything.
    Admin,
}

impl RoleArg {
    fn role(self) -> app::keys::Role {
        use app::keys::Role;
        match self {
            RoleArg::Terminal => Role::Terminal,
            RoleArg::Finance => Role::Finance,
            RoleArg::Analyst => Role::Analyst,
            RoleArg::Auditor => Role::Auditor,
            RoleArg::Admin => Role::Admin,
        }
    }
}

impl ResolveArg {
    fn action(self) -> ingest::event::ResolveAction {
        match self {
            ResolveArg::Book => ingest::event::ResolveAction::Book,
            ResolveArg::WriteOff => ingest::event::ResolveAction::WriteOff,
            ResolveArg::Refund => ingest::event::ResolveAction::Refund,
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
    main_from(std::env::args_os())
}

/// Runs the command line with these arguments (the first is the program's name).
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    // Not a command of people's: the process a server or a command runs analytics in.
    if args.len() == 2 && args[1] == app::worker::WORKER_ARG {
        return app::worker::serve_one();
    }
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(code) => code,
        // A reader that stopped reading (`| head`) is not an error of the command.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The app with its analytics run in worker processes of this executable, when this is the
/// `posledger` binary (a program embedding the command line runs them in its own process).
pub fn with_worker(app: app::App) -> app::App {
    match std::env::current_exe() {
        Ok(exe) if exe.file_stem().is_some_and(|s| s == "posledger") => app.with_analytics_worker(exe),
        _ => app,
    }
}

/// `posledger cluster scheduler|executor`: runs until SIGINT or SIGTERM.
fn cluster_node(dir: &DataDir, command: ClusterCommand) -> Result<ExitCode> {
    cluster::init_logger()?;
    let rt = runtime()?;
    rt.block_on(async {
        let stop = stop_signal();
        let node = async {
            match command {
                ClusterCommand::Scheduler { bind, executor_timeout } => {
                    let options =
                        cluster::SchedulerOptions { bind, executor_timeout: Duration::from_secs(executor_timeout) };
                    cluster::run_scheduler(options, |addr| {
                        // One line on standard output: scripts read the address from it.
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "scheduler listening on df://{addr}").and_then(|()| out.flush());
                    })
                    .await
                }
                ClusterCommand::Executor { scheduler, slots, bind_host, external_host, port, work_dir } => {
                    let slots = slots.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                    let work_dir = work_dir.unwrap_or_else(|| dir.root().join("cluster-work"));
                    let options = cluster::ExecutorOptions {
                        scheduler,
                        bind_host,
                        external_host,
                        port,
                        slots,
                        work_dir,
                        memory_bytes_max: analytics::sql::QUERY_MEMORY_BYTES_MAX,
                    };
                    cluster::run_executor(options).await
                }
            }
        };
        tokio::select! {
            done = node => done?,
            () = stop => eprintln!("stopped"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves at the first SIGINT or SIGTERM: when a server or a cluster node stops.
pub(crate) async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// A multi-threaded runtime for a command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Warnings go to standard error.
fn warn() -> app::Warn {
    Box::new(|w| eprintln!("warning: {w}"))
}

/// A use case's failure as the command line reports it (exit code 2).
fn failed(f: Failure) -> anyhow::Error {
    anyhow::Error::msg(f.message)
}

/// Where a command's use case runs: in this process, or in the server that holds the data
/// directory.
enum Backend {
    /// This process holds the data directory.
    Local(Box<app::App>, tokio::runtime::Runtime),
    /// A running server does.
    Remote(crate::local::client::Client),
}

impl Backend {
    /// The server of `dir` if one runs, else the data directory opened here; one that does
    /// not exist is refused (a misspelt `--data-dir` reads nothing, and creates nothing).
    fn open(dir: &DataDir) -> Result<Backend> {
        Backend::open_with(dir, false)
    }

    /// [`Backend::open`], creating the data directory if there is none: for the commands
    /// that record something new.
    fn start(dir: &DataDir) -> Result<Backend> {
        Backend::open_with(dir, true)
    }

    fn open_with(dir: &DataDir, start: bool) -> Result<Backend> {
        if let Some(client) = crate::local::client::connect(dir).map_err(failed)? {
            return Ok(Backend::Remote(client));
        }
        if !start && !dir.root().exists() {
            anyhow::bail!(
                "no data directory at {}: nothing is recorded there yet (`posledger ingest` or `merchants import` starts one; \
                 --data-dir names another)",
                dir.root().display()
            );
        }
        let rt = runtime()?;
        match rt.block_on(app::App::open_dir(dir.clone(), warn())) {
            Ok(app) => Ok(Backend::Local(Box::new(with_worker(app)), rt)),
            // A server may have started since we looked.
            Err(f) if f.code == "store_locked" => match crate::local::client::connect(dir).map_err(failed)? {
                Some(client) => Ok(Backend::Remote(client)),
                None => Err(failed(f)),
            },
            Err(f) => Err(failed(f)),
        }
    }

    /// Runs one use case.
    fn call(self, request: Request, input: Option<&[u8]>) -> Result<Reply, Failure> {
        match self {
            Backend::Local(app, rt) => {
                let reply = rt.block_on(app.execute(request, input.unwrap_or_default()));
                rt.block_on(app.close());
                reply
            }
            Backend::Remote(client) => client.call(request, input),
        }
    }
}

/// Runs `request` and hands its reply to `show`, which returns the exit code.
fn call(
    dir: &DataDir,
    request: Request,
    input: Option<&[u8]>,
    show: impl FnOnce(Reply) -> Result<ExitCode>,
) -> Result<ExitCode> {
    let backend = if request.records_new() { Backend::start(dir)? } else { Backend::open(dir)? };
    let reply = backend.call(request, input).map_err(failed)?;
    show(reply)
}

fn unexpected(reply: &Reply) -> anyhow::Error {
    anyhow::anyhow!("the server answered with another kind of result: {reply:?}")
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = cli.data_dir.clone().unwrap_or_else(|| {
        PathBuf::from(if matches!(cli.command, Command::Demo { .. }) { "./posledger-demo" } else { "./posledger-data" })
    });
    let store = cli.store.clone().or_else(|| std::env::var(app::store::STORE_ENV).ok());
    let dir = DataDir::new(&root).with_store(store.filter(|s| !s.is_empty() && s != "embedded"));
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Ingest { file, format } => ingest(&dir, &file, InputKind::Feed, format),
        Command::Merchants { command: MerchantsCommand::Import { file, format } } => {
            ingest(&dir, &file, InputKind::Admin, format)
        }
        Command::Verify { format, anchor } => verify(&dir, format, anchor.as_deref()),
        Command::Anchor { format } => call(&dir, Request::Anchor, None, |reply| {
            let Reply::Anchored { anchored } = reply else { return Err(unexpected(&reply)) };
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string(&anchored)?)?,
                Format::Table => writeln!(
                    out,
                    "{}\nthe head of {} events, recorded at position {}: publish it where posledger cannot change it; \
                     `posledger verify --anchor {}` checks the log still extends it",
                    anchored.anchor, anchored.anchor.head, anchored.recorded_at, anchored.anchor
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Serve { addr, cluster } => crate::serve::serve(&dir, addr, cluster),
        Command::Cluster { command } => cluster_node(&dir, command),
        Command::Demo { merchants, payments_per_day, days, seed, serve, addr, format } => {
            let options = demo::Options { merchants, payments_per_day, days, seed };
            crate::demo::demo(&root, options, format == Format::Json, serve.then_some(addr))
        }
        Command::Journal { format, until } => journal(&dir, format, until.as_deref()),
        Command::Backup { to, format } => backup(&dir, &to, format),
        Command::Migrate { to, from, format } => migrate(&dir, to, from, format),
        Command::Restore { from, manifest, until, format } => {
            restore(&dir, &from, manifest.as_deref(), until.as_deref(), format)
        }
        Command::Events { from, until, format: EventsFormat::Ndjson } => events(&dir, from, until.as_deref()),
        Command::Export { out: to, format } => {
            // A relative path is the caller's, not the server's.
            let to = to.map(|p| std::path::absolute(&p).unwrap_or(p));
            call(&dir, Request::Export { out: to.clone() }, None, |reply| {
                let Reply::Exported { summary } = reply else { return Err(unexpected(&reply)) };
                let to = to.unwrap_or_else(|| dir.export());
                match format {
                    Format::Json => writeln!(out, "{}", serde_json::to_string(&summary)?)?,
                    Format::Table => {
                        writeln!(
                            out,
                            "exported positions {}..{} to {}: {} file(s)",
                            summary.from,
                            summary.to,
                            to.display(),
                            summary.files
                        )?;
                        for (table, rows) in &summary.rows {
                            writeln!(out, "  {table:<12} {rows:>10} rows")?;
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Keys { command } => {
            let request = match command {
                KeysCommand::Create { role, merchant, expires } => {
                    Request::CreateKey { role: role.role(), merchant, expires: expires.map(|t| t.to_utc()) }
                }
                KeysCommand::Revoke { id } => Request::RevokeKey { id },
                KeysCommand::List => Request::ListKeys,
            };
            call(&dir, request, None, |reply| {
                match reply {
                    Reply::Key { key } => {
                        eprintln!(
                            "key {} ({}) created; keep it now, it is not shown again:",
                            key.record.id,
                            key.record.role.as_str()
                        );
                        writeln!(out, "{}", key.token)?;
                    }
                    Reply::Revoked { key } => writeln!(out, "key {} ({}) revoked", key.id, key.role.as_str())?,
                    Reply::Keys { keys } => {
                        let now = chrono::Utc::now();
                        for k in keys {
                            let state = match (k.revoked, k.active_at(now)) {
                                (true, _) => "revoked",
                                (false, true) => "active",
                                (false, false) => "expired",
                            };
                            let expires = k
                                .expires_at
                                .map(|t| format!("  expires {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                                .unwrap_or_default();
                            writeln!(
                                out,
                                "{}  {:<8}  {:<10}  {}  {state}{expires}",
                                k.id,
                                k.role.as_str(),
                                k.merchant.as_deref().unwrap_or("-"),
                                k.created_at
                            )?;
                        }
                    }
                    other => return Err(unexpected(&other)),
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Query { name, sql, list, params, cluster, out: how } => {
            if list {
                return call(&dir, Request::ListQueries, None, |reply| {
                    let Reply::Queries { queries } = reply else { return Err(unexpected(&reply)) };
                    let mut table = analytics::table::Table::new(["name", "parameters", "chart", "description"]);
                    for q in queries {
                        let params: Vec<String> = q
                            .parameters
                            .iter()
                            .map(|p| match &p.default {
                                Some(d) => format!("{} {} = {d}", p.name, p.ty),
                                None => format!("{} {} (required)", p.name, p.ty),
                            })
                            .collect();
                        table.rows.push(
                            [q.name, params.join("; "), q.chart.unwrap_or_default(), q.description]
                                .map(analytics::table::Cell::Text)
                                .to_vec(),
                        );
                    }
                    write!(out, "{}", table.render(how.format.into()))?;
                    Ok(ExitCode::SUCCESS)
                });
            }
            let target = match (name, sql) {
                (Some(name), _) => app::analysis::QueryTarget::Named { name, params },
                (None, Some(sql)) => {
                    if !params.is_empty() {
                        anyhow::bail!("--param applies to named queries only");
                    }
                    app::analysis::QueryTarget::Sql(sql)
                }
                (None, None) => anyhow::bail!("name a query, or give --sql or --list"),
            };
            let export = how.export.map(|p| std::path::absolute(&p).unwrap_or(p));
            let request = Request::Query { export, target, chart: how.chart.is_some(), cluster };
            call(&dir, request, None, |reply| answer(&mut out, reply, how.format, how.chart.as_deref()))
        }
        Command::Analyze { analysis, payers, as_of, merchant, out: how } => {
            use app::analysis::Analysis;
            let analysis = match analysis {
                AnalysisArg::Rfm => Analysis::Rfm { payers, as_of },
                AnalysisArg::Trend => Analysis::Trend { merchant },
                AnalysisArg::Basket => Analysis::Basket,
                AnalysisArg::Cohort => Analysis::Cohort,
            };
            let export = how.export.map(|p| std::path::absolute(&p).unwrap_or(p));
            let request = Request::Analyze { export, analysis, chart: how.chart.is_some() };
            call(&dir, request, None, |reply| answer(&mut out, reply, how.format, how.chart.as_deref()))
        }
        Command::Statement { command: StatementCommand::Import { channel, file, date, format } } => {
            let name = file.display().to_string();
            let len = std::fs::metadata(&file).with_context(|| format!("opening {name}"))?.len();
            if let Err(e) = ingest::statement::check_size(&name, len) {
                return show_import(&mut out, &app::recon::ImportOutcome::Refused(e), format);
            }
            let bytes = std::fs::read(&file).with_context(|| format!("reading {name}"))?;
            let request = Request::ImportStatement { channel: channel.channel(), name, date };
            call(&dir, request, Some(&bytes), |reply| {
                let Reply::Statement { outcome } = reply else { return Err(unexpected(&reply)) };
                show_import(&mut out, &outcome, format)
            })
        }
        Command::DayEnd { date, statements, format } => {
            let files = match statements {
                Some(dir) => statement_files(&dir)?,
                None => Vec::new(),
            };
            let input = app::dayend::StatementFile::encode_all(&files);
            call(&dir, Request::DayEnd { date }, Some(&input), |reply| {
                let Reply::DayEnd { day_end } = reply else { return Err(unexpected(&reply)) };
                render::day_end(&mut out, &day_end, format.into())?;
                Ok(if !day_end.verified() {
                    ExitCode::from(2)
                } else if day_end.findings() > 0 {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                })
            })
        }
        Command::Reconcile { date, channel, format } => {
            let request = Request::Reconcile { date, channel: channel.map(StatementChannelArg::channel) };
            call(&dir, request, None, |reply| {
                let Reply::Day { report } = reply else { return Err(unexpected(&reply)) };
                render::day_report(&mut out, &report, format.into())?;
                Ok(if report.has_breaks() { ExitCode::from(1) } else { ExitCode::SUCCESS })
            })
        }
        Command::Breaks { open, date, channel, format } => {
            let filter = app::recon::BreakFilter {
                status: if open { app::recon::BreakStatus::Open } else { app::recon::BreakStatus::All },
                date,
                statement: channel.map(StatementChannelArg::channel),
                ..app::recon::BreakFilter::default()
            };
            call(&dir, Request::Breaks { filter }, None, |reply| {
                let Reply::Breaks { breaks } = reply else { return Err(unexpected(&reply)) };
                render::breaks(&mut out, &breaks, format.into())?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Resolve { break_id, action, reason, by, format } => {
            let request = Request::Resolve { id: break_id, action: action.action(), reason, by };
            resolution(&dir, request, format)
        }
        Command::Approve { break_id, action, reason, by, format } => {
            let request = Request::Approve { id: break_id, action: action.action(), reason, by };
            resolution(&dir, request, format)
        }
        Command::Balance { account, currency, as_of, format } => {
            let as_of = AsOf::parse_optional(as_of.as_deref(), "--as-of").map_err(failed)?;
            balances(&dir, Request::Balance { account, currency, as_of }, format)
        }
        Command::TrialBalance { as_of, format } => {
            let as_of = AsOf::parse_optional(as_of.as_deref(), "--as-of").map_err(failed)?;
            balances(&dir, Request::TrialBalance { as_of }, format)
        }
        Command::History { account, currency, from, limit, format } => {
            call(&dir, Request::History { account, currency, from, limit }, None, |reply| {
                let Reply::History { page } = reply else { return Err(unexpected(&reply)) };
                render::history(&mut out, &page, format.into())?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Replay { until, format } => {
            let until_point = AsOf::parse(&until, "--until").map_err(failed)?;
            call(&dir, Request::Replay { until: until_point }, None, |reply| {
                let Reply::Replayed { replayed } = reply else { return Err(unexpected(&reply)) };
                render::replayed(&mut out, &replayed, &until, format.into())?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Settle { date, format } => call(&dir, Request::Settle { date }, None, |reply| {
            let Reply::Settlement { settlement } = reply else { return Err(unexpected(&reply)) };
            render::settlement(&mut out, &settlement, format.into())?;
            Ok(if settlement.held.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }),
        Command::Settlements { date, format } => call(&dir, Request::Settlements { date }, None, |reply| {
            let Reply::Settlement { settlement } = reply else { return Err(unexpected(&reply)) };
            render::settlement(&mut out, &settlement, format.into())?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// The statement files of a directory: its regular files not hidden, by name, each within the
/// statement size limit.
fn statement_files(dir: &Path) -> Result<Vec<app::dayend::StatementFile>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if entry.file_type()?.is_file() && !hidden {
            paths.push(entry.path());
        }
    }
    paths.sort();
    if paths.len() > app::dayend::DAY_END_FILES_MAX {
        anyhow::bail!(
            "{} holds {} files; a day-end takes at most {}",
            dir.display(),
            paths.len(),
            app::dayend::DAY_END_FILES_MAX
        );
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let len = std::fs::metadata(&path).with_context(|| format!("opening {}", path.display()))?.len();
        ingest::statement::check_size(&name, len)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push(app::dayend::StatementFile { name, bytes });
    }
    Ok(files)
}

fn show_import(out: &mut impl Write, outcome: &app::recon::ImportOutcome, format: Format) -> Result<ExitCode> {
    match format {
        Format::Json => writeln!(out, "{}", render::imported_json(outcome))?,
        Format::Table => render::imported(out, outcome)?,
    }
    Ok(if matches!(outcome, app::recon::ImportOutcome::Refused(_)) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn balances(dir: &DataDir, request: Request, format: ReportFormat) -> Result<ExitCode> {
    call(dir, request, None, |reply| {
        let Reply::Balances { balances } = reply else { return Err(unexpected(&reply)) };
        render::balances(&mut std::io::stdout().lock(), &balances, format.into())?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `resolve` and `approve`: a refusal (unknown break, resolved already, not possible, the
/// same person approving) is exit 1 with its reason; a store failure exit 2.
fn resolution(dir: &DataDir, request: Request, format: Format) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let reply = match Backend::open(dir)?.call(request, None) {
        Ok(reply) => reply,
        Err(f) if !f.is_refusal() => return Err(failed(f)),
        Err(f) => {
            match format {
                Format::Json => writeln!(out, "{}", serde_json::json!({"refused": f.code, "reason": f.message}))?,
                Format::Table => writeln!(out, "refused: {}", f.message)?,
            }
            return Ok(ExitCode::from(1));
        }
    };
    let record = match reply {
        Reply::Approved { record } | Reply::Resolution { resolution: app::approvals::Resolution::Recorded(record) } => {
            record
        }
        Reply::Resolution { resolution: proposed @ app::approvals::Resolution::Proposed { .. } } => {
            let app::approvals::Resolution::Proposed { break_id, proposal, suspense_amount, approval_over } = &proposed
            else {
                return Err(unexpected(&Reply::Resolution { resolution: proposed }));
            };
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string(&proposed)?)?,
                Format::Table => writeln!(
                    out,
                    "proposed: break {break_id} parks {suspense_amount}, over {approval_over}; it waits for another \
                     person: posledger approve {break_id} --action {} --reason {:?} --by NAME",
                    render::action_name(proposal.action),
                    proposal.reason
                )?,
            }
            return Ok(ExitCode::SUCCESS);
        }
        other => return Err(unexpected(&other)),
    };
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(&record)?)?,
        Format::Table => writeln!(
            out,
            "resolved {} ({} {} on {} {}): {} moved out of suspense",
            record.break_id, record.outcome, record.txn_id, record.statement, record.date, record.suspense_amount
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A query's or an analysis's result, with its chart written to `chart`.
fn answer(out: &mut impl Write, reply: Reply, format: ReportFormat, chart: Option<&Path>) -> Result<ExitCode> {
    let Reply::Answer { answer } = reply else { return Err(unexpected(&reply)) };
    if let (Some(path), Some(svg)) = (chart, &answer.chart) {
        std::fs::write(path, svg).with_context(|| format!("writing the chart {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    write!(out, "{}", answer.table.render(format.into()))?;
    Ok(ExitCode::SUCCESS)
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

/// `ingest` and `merchants import`.
fn ingest(dir: &DataDir, file: &Path, kind: InputKind, format: Format) -> Result<ExitCode> {
    let (input, total): (Box<dyn BufRead + Send>, Option<u64>) = if file == Path::new("-") {
        (Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())), None)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().map(|m| m.len()).ok();
        (Box::new(BufReader::with_capacity(1 << 20, f)), len)
    };
    let bar = progress_bar(total);
    let progress = |bytes, s: &ingest::pipeline::IngestSummary| {
        bar.set_position(bytes);
        bar.set_message(format!("{} accepted, {} duplicate, {} rejected", s.accepted, s.duplicates, s.rejected));
    };
    let result = match Backend::start(dir)? {
        Backend::Local(app, rt) => {
            let result = rt.block_on(app.ingest_reader(input, kind, progress)).map_err(Box::new);
            rt.block_on(app.close());
            result
        }
        Backend::Remote(client) => client.ingest(input, kind == InputKind::Admin, progress),
    };
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    match result {
        Ok(summary) => {
            render::ingest_summary(&mut out, &summary, format.into())?;
            Ok(if summary.rejected > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Err(stopped) => {
            // What was settled before the failure is stored for good: say so, with its totals.
            render::ingest_summary(&mut out, &stopped.summary, format.into())?;
            eprintln!(
                "error: ingesting {} stopped: {}\nthe records counted above are settled; running the same input \
                 again stores nothing twice",
                file.display(),
                stopped.failure
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn journal(dir: &DataDir, kind: JournalKind, until: Option<&str>) -> Result<ExitCode> {
    let until = AsOf::parse_optional(until, "--until").map_err(failed)?;
    let kind = match kind {
        JournalKind::Ledger => app::books::JournalKind::Ledger,
        JournalKind::Beancount => app::books::JournalKind::Beancount,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match Backend::open(dir)? {
        Backend::Local(app, rt) => {
            let written = rt.block_on(app.journal(kind, until, &mut out));
            rt.block_on(app.close());
            written
        }
        Backend::Remote(client) => client.journal(kind, until, &mut out),
    };
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A reader that stopped early (`| head`) is not an error.
        Err(app::books::OutputFailure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

/// `backup`: by the server when one runs (it holds the log), else here.
fn backup(dir: &DataDir, to: &Path, format: Format) -> Result<ExitCode> {
    // A relative path is the caller's, not the server's.
    let to = std::path::absolute(to).unwrap_or_else(|_| to.to_path_buf());
    let bar = progress_bar(Some(0));
    let mut progress = job_progress(&bar);
    let report = match Backend::open(dir)? {
        Backend::Local(app, rt) => {
            let report = rt.block_on(app.backup(&to, &mut progress));
            rt.block_on(app.close());
            report
        }
        Backend::Remote(client) => client.backup(to, &mut progress),
    };
    bar.finish_and_clear();
    show(&report.map_err(failed)?, format, render::backed_up)
}

/// `migrate`: always in this process, on a data directory no server holds.
fn migrate(dir: &DataDir, to: Option<String>, from: Option<String>, format: Format) -> Result<ExitCode> {
    let rt = runtime()?;
    let bar = progress_bar(Some(0));
    let mut progress = job_progress(&bar);
    let options = kurrent::KurrentOptions::default();
    let report = rt.block_on(async {
        let remote = |address: &str| {
            let (wire, url) = app::store::connect_kurrent(address)?;
            Ok::<_, Failure>(app::migrate::Remote { wire, address: url.redacted(), namespace: url.namespace, options })
        };
        match (to, from) {
            (Some(to), None) => app::migrate::to_kurrent(dir, remote(&to)?, &mut progress).await,
            (None, Some(from)) => app::migrate::from_kurrent(dir, remote(&from)?, &mut progress).await,
            _ => Err(Failure::invalid("invalid_arguments", "give one of --to and --from")),
        }
    });
    bar.finish_and_clear();
    show(&report.map_err(failed)?, format, render::migrated)
}

/// A long job's progress on the bar: bytes done of the total, and the step it is at.
fn job_progress(bar: &ProgressBar) -> impl FnMut(&app::backup::Progress) + Send + '_ {
    |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(p.step.clone());
    }
}

/// A report as JSON or as the table `table` draws.
fn show<T: serde::Serialize>(
    report: &T,
    format: Format,
    table: fn(&mut std::io::StdoutLock<'static>, &T) -> std::io::Result<()>,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(report)?)?,
        Format::Table => table(&mut out, report)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `restore`: always in this process, into a directory no server holds.
fn restore(
    dir: &DataDir,
    from: &Path,
    manifest: Option<&str>,
    until: Option<&str>,
    format: Format,
) -> Result<ExitCode> {
    let until = AsOf::parse_optional(until, "--until").map_err(failed)?;
    let bar = progress_bar(Some(0));
    let mut progress = job_progress(&bar);
    let rt = runtime()?;
    let report = rt.block_on(app::backup::restore(from, manifest, until, dir, &mut progress));
    bar.finish_and_clear();
    show(&report.map_err(failed)?, format, render::restored)
}

/// `events`: the listing, from the server when one runs.
fn events(dir: &DataDir, from: u64, until: Option<&str>) -> Result<ExitCode> {
    let until = AsOf::parse_optional(until, "--until").map_err(failed)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match Backend::open(dir)? {
        Backend::Local(app, rt) => {
            let written = rt.block_on(app.events(from, until, None, &mut out));
            rt.block_on(app.close());
            written
        }
        Backend::Remote(client) => client.events(from, until, &mut out),
    };
    match written {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(app::failure::OutputFailure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

/// `verify`: by the server when one runs (up to its head as of the request), else offline.
fn verify(dir: &DataDir, format: Format, anchor: Option<&str>) -> Result<ExitCode> {
    let anchor = anchor.map(|a| app::audit::Anchor::parse(a, "--anchor")).transpose().map_err(failed)?;
    let verified = match crate::local::client::connect(dir).map_err(failed)? {
        Some(client) => match client.call(Request::Verify, None).map_err(failed)? {
            Reply::Verified { verified } => verified,
            other => return Err(unexpected(&other)),
        },
        None => {
            let rt = runtime()?;
            rt.block_on(app::verify::verify_offline(dir, warn())).map_err(failed)?
        }
    };
    let check = match anchor {
        Some(anchor) if verified.log.is_some() => {
            match Backend::open(dir)?.call(Request::CheckAnchor { anchor }, None).map_err(failed)? {
                Reply::AnchorChecked { check } => Some(check),
                other => return Err(unexpected(&other)),
            }
        }
        _ => None,
    };
    render::verified(&mut std::io::stdout().lock(), &verified, check.as_ref(), format == Format::Json)?;
    let holds = check.as_ref().is_none_or(|c| c.holds);
    Ok(if verified.ok() && holds { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

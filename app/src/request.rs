//! Every use case as one serialisable [`Request`] and its [`Reply`]: what a client of a
//! running server sends over the server's local socket, and what the command line runs in
//! its own process when no server runs. [`App::execute`] is the one dispatcher both go
//! through, so a command answers alike either way.
//!
//! Two use cases stream and are not here: ingesting records (chunks of lines in, the running
//! totals out: [`App::ingest_lines`], [`App::ingest_reader`]) and the journal (text out:
//! [`App::journal`]).

use std::path::PathBuf;

use chrono::NaiveDate;
use ingest::event::ResolveAction;
use ingest::money::Currency;
use ingest::statement::StatementChannel;
use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Answer, Audience, QueryInfo, QueryTarget};
use crate::approvals::{Actor, Resolution};
use crate::books::{Balances, HistoryPage, Replayed};
use crate::keys::{CreatedKey, KeyRecord, Role};
use crate::recon::{DayReport, ImportOutcome, ListedBreak};
use crate::settle::Settlement;
use crate::verify::Verified;
use crate::{App, AsOf, Failure};

/// A use case and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "use_case", rename_all = "snake_case")]
pub enum Request {
    /// [`App::import_statement`]; the file's bytes come as the request's input.
    ImportStatement {
        /// The statement's channel.
        channel: StatementChannel,
        /// The file's name as given.
        name: String,
        /// The statement date, when neither the file nor its name says.
        date: Option<NaiveDate>,
    },
    /// [`App::reconcile`].
    Reconcile {
        /// The statement date.
        date: NaiveDate,
        /// One statement channel only.
        channel: Option<StatementChannel>,
    },
    /// [`App::day_end`]; the statement files come as the request's input
    /// ([`crate::dayend::StatementFile::encode_all`]).
    DayEnd {
        /// The business date.
        date: NaiveDate,
    },
    /// [`App::breaks_where`].
    Breaks {
        /// Which.
        filter: crate::recon::BreakFilter,
    },
    /// [`App::resolve`].
    Resolve {
        /// The break.
        id: String,
        /// How.
        action: ResolveAction,
        /// Why.
        reason: String,
        /// Who: a person's name.
        by: String,
    },
    /// [`App::approve`].
    Approve {
        /// The break.
        id: String,
        /// How, as proposed.
        action: ResolveAction,
        /// Why, as proposed.
        reason: String,
        /// Who approves: a person's name.
        by: String,
    },
    /// [`App::balance`].
    Balance {
        /// The account's path.
        account: String,
        /// One currency only.
        currency: Option<Currency>,
        /// As of when.
        as_of: AsOf,
    },
    /// [`App::trial_balance`].
    TrialBalance {
        /// As of when.
        as_of: AsOf,
    },
    /// [`App::history`].
    History {
        /// The account's path.
        account: String,
        /// The currency.
        currency: Currency,
        /// The first position.
        from: u64,
        /// Postings on the page.
        limit: usize,
    },
    /// [`App::settle`].
    Settle {
        /// The settlement date.
        date: NaiveDate,
    },
    /// [`App::settlements`].
    Settlements {
        /// The settlement date.
        date: NaiveDate,
    },
    /// [`App::replay`].
    Replay {
        /// Up to when.
        until: AsOf,
    },
    /// [`App::export`].
    Export {
        /// Where (default `DATA_DIR/export`).
        out: Option<PathBuf>,
    },
    /// [`App::list_queries`].
    ListQueries,
    /// [`App::query`].
    Query {
        /// The export to read.
        export: Option<PathBuf>,
        /// What to run.
        target: QueryTarget,
        /// Draw its chart too.
        chart: bool,
        /// Run it on this Ballista cluster (default: the server's own, if it has one).
        #[serde(default)]
        cluster: Option<analytics::sql::cluster::ClusterUrl>,
    },
    /// [`App::analyze`].
    Analyze {
        /// The export to read.
        export: Option<PathBuf>,
        /// Which analysis.
        analysis: Analysis,
        /// Draw its chart too.
        chart: bool,
    },
    /// [`App::verify`].
    Verify,
    /// [`App::anchor`].
    Anchor,
    /// [`App::check_anchor`].
    CheckAnchor {
        /// The anchor.
        anchor: crate::audit::Anchor,
    },
    /// [`App::create_key_until`].
    CreateKey {
        /// Its role.
        role: Role,
        /// A terminal key's merchant.
        merchant: Option<String>,
        /// When it stops authenticating, if ever.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// [`App::revoke_key`].
    RevokeKey {
        /// The key's id.
        id: String,
    },
    /// [`App::list_keys`].
    ListKeys,
}

/// A use case's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Of [`Request::ImportStatement`].
    Statement {
        /// What the import did.
        outcome: ImportOutcome,
    },
    /// Of [`Request::Reconcile`].
    Day {
        /// The end-of-day report.
        report: DayReport,
    },
    /// Of [`Request::DayEnd`].
    DayEnd {
        /// The day-end's report.
        day_end: Box<crate::dayend::DayEnd>,
    },
    /// Of [`Request::Breaks`].
    Breaks {
        /// The breaks.
        breaks: Vec<ListedBreak>,
    },
    /// Of [`Request::Resolve`].
    Resolution {
        /// Recorded or proposed.
        resolution: Resolution,
    },
    /// Of [`Request::Approve`].
    Approved {
        /// The recorded resolution.
        record: ingest::event::BreakResolved,
    },
    /// Of [`Request::Balance`] and [`Request::TrialBalance`].
    Balances {
        /// The balances.
        balances: Balances,
    },
    /// Of [`Request::History`].
    History {
        /// The page.
        page: HistoryPage,
    },
    /// Of [`Request::Settle`] and [`Request::Settlements`].
    Settlement {
        /// Who was paid and who is held.
        settlement: Settlement,
    },
    /// Of [`Request::Replay`].
    Replayed {
        /// The replayed books.
        replayed: Replayed,
    },
    /// Of [`Request::Export`].
    Exported {
        /// What was exported.
        summary: analytics::export::ExportSummary,
    },
    /// Of [`Request::ListQueries`].
    Queries {
        /// The named queries.
        queries: Vec<QueryInfo>,
    },
    /// Of [`Request::Query`] and [`Request::Analyze`].
    Answer {
        /// The result.
        answer: Answer,
    },
    /// Of [`Request::Anchor`].
    Anchored {
        /// What was recorded.
        anchored: crate::audit::Anchored,
    },
    /// Of [`Request::CheckAnchor`].
    AnchorChecked {
        /// What was found.
        check: crate::audit::AnchorCheck,
    },
    /// Of [`Request::Verify`].
    Verified {
        /// What verify found.
        verified: Verified,
    },
    /// Of [`Request::CreateKey`].
    Key {
        /// The key, shown once.
        key: CreatedKey,
    },
    /// Of [`Request::RevokeKey`].
    Revoked {
        /// The revoked key.
        key: KeyRecord,
    },
    /// Of [`Request::ListKeys`].
    Keys {
        /// Every key.
        keys: Vec<KeyRecord>,
    },
}

impl Request {
    /// Whether it records something that can start a data directory of its own: a statement
    /// imported or a key created before anything else (every other use case reads or acts on
    /// what is recorded already).
    pub fn records_new(&self) -> bool {
        matches!(self, Request::ImportStatement { .. } | Request::CreateKey { .. })
    }
}

impl App {
    /// Runs one use case; `input` is the request's input (a statement's bytes), empty for the
    /// others. The local socket's caller is the data directory's owner: it sees everything.
    pub async fn execute(&self, request: Request, input: &[u8]) -> Result<Reply, Failure> {
        Ok(match request {
            Request::ImportStatement { channel, name, date } => {
                Reply::Statement { outcome: self.import_statement(channel, &name, input, date).await? }
            }
            Request::Reconcile { date, channel } => Reply::Day { report: self.reconcile(date, channel).await? },
            Request::DayEnd { date } => {
                let files = crate::dayend::StatementFile::decode_all(input)?;
                Reply::DayEnd { day_end: Box::new(self.day_end(date, &files).await?) }
            }
            Request::Breaks { filter } => Reply::Breaks { breaks: self.breaks_where(&filter).await? },
            Request::Resolve { id, action, reason, by } => {
                Reply::Resolution { resolution: self.resolve(&id, action, &reason, &Actor::Person(by)).await? }
            }
            Request::Approve { id, action, reason, by } => {
                Reply::Approved { record: self.approve(&id, action, &reason, &Actor::Person(by)).await? }
            }
            Request::Balance { account, currency, as_of } => {
                Reply::Balances { balances: self.balance(&account, currency, as_of).await? }
            }
            Request::TrialBalance { as_of } => Reply::Balances { balances: self.trial_balance(as_of).await? },
            Request::History { account, currency, from, limit } => {
                Reply::History { page: self.history(&account, currency, from, limit).await? }
            }
            Request::Settle { date } => Reply::Settlement { settlement: self.settle(date).await? },
            Request::Settlements { date } => Reply::Settlement { settlement: self.settlements(date).await? },
            Request::Replay { until } => Reply::Replayed { replayed: self.replay(until).await? },
            Request::Export { out } => Reply::Exported { summary: self.export(out).await? },
            Request::ListQueries => Reply::Queries { queries: self.list_queries()? },
            Request::Query { export, target, chart, cluster } => {
                Reply::Answer { answer: self.query_on(export, target, Audience::Everyone, chart, cluster).await? }
            }
            Request::Analyze { export, analysis, chart } => {
                Reply::Answer { answer: self.analyze(export, analysis, Audience::Everyone, chart).await? }
            }
            Request::Verify => Reply::Verified { verified: self.verify().await? },
            Request::Anchor => Reply::Anchored { anchored: self.anchor().await? },
            Request::CheckAnchor { anchor } => Reply::AnchorChecked { check: self.check_anchor(anchor).await? },
            Request::CreateKey { role, merchant, expires } => {
                Reply::Key { key: self.create_key_until(role, merchant, expires)? }
            }
            Request::RevokeKey { id } => Reply::Revoked { key: self.revoke_key(&id)? },
            Request::ListKeys => Reply::Keys { keys: self.list_keys()? },
        })
    }
}

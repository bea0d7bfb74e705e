//! Analytics: the incremental Parquet export, named and ad-hoc SQL over it (DataFusion), the
//! polars analyses of spending habits, and their charts. Analysts never see payer
//! identities: a caller that may not ([`Audience::NoPayers`]) gets a session without the
//! `payer` column and no per-payer RFM.

use std::path::{Path, PathBuf};

use analytics::export::ExportError;
use analytics::sql::cluster::ClusterUrl;
use analytics::sql::{Engine, SqlError};
use analytics::table::Table;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::{App, Class, Failure};

/// Queries and analyses running at once in one process (each may hold up to the SQL memory
/// limit); more are refused as busy.
pub const QUERIES_RUNNING_MAX: usize = 2;
/// Longest a polars analysis may run.
pub const ANALYSIS_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The column holding a payer's identity, never in an answer to [`Audience::NoPayers`].
const PAYER_COLUMN: &str = "payer";

/// Who reads a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Everything, payer identities too.
    Everyone,
    /// No payer identities (analysts).
    NoPayers,
}

/// A named query's parameter, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its default, when it has one (else it is required).
    pub default: Option<String>,
    /// What it means.
    pub about: String,
}

/// A named query, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryInfo {
    /// Its name.
    pub name: String,
    /// What people call its answer: its chart's title.
    pub title: String,
    /// What it answers.
    pub description: String,
    /// Its parameters.
    pub parameters: Vec<ParamInfo>,
    /// The chart its result draws (`line`, `bars`, `heatmap`), if any.
    pub chart: Option<String>,
}

/// What to run over the export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryTarget {
    /// A named query with `NAME=VALUE` parameters.
    Named {
        /// The query's name.
        name: String,
        /// Its parameters.
        params: Vec<String>,
    },
    /// An analyst's own read-only SQL.
    Sql(String),
}

/// A polars analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Analysis {
    /// RFM segments (or one row per payer), counting what happened by the end of `as_of`.
    Rfm {
        /// One row per payer instead of per segment.
        payers: bool,
        /// The date recency is counted to (default: the last day with a capture).
        as_of: Option<NaiveDate>,
    },
    /// Week-over-week net sales per merchant (or one), with anomaly flags.
    Trend {
        /// One merchant only.
        merchant: Option<String>,
    },
    /// Basket-size bands.
    Basket,
    /// Retention by first-purchase week.
    Cohort,
}

/// A result, and its chart when one was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The rows.
    pub table: Table,
    /// The chart, as SVG.
    pub chart: Option<String>,
}

/// An export failure as a use case's failure.
fn export_failure(e: analytics::export::ExportError) -> Failure {
    Failure::unavailable(format!("exporting: {e}"))
}

/// The failure for a SQL error: whose fault, with a stable code.
pub fn sql_failure(e: SqlError) -> Failure {
    use SqlError as E;
    let text = e.to_string();
    match e {
        E::NotReadOnly(_) => Failure::invalid("sql_not_read_only", text),
        E::TooLong { .. } => Failure::new(Class::TooLarge, "sql_too_long", text),
        E::Invalid(_) => Failure::invalid("sql_invalid", text),
        E::Param(queries::ParamError::UnknownQuery(_)) => Failure::not_found("unknown_query", text),
        E::Param(p) => {
            let field = match p {
                queries::ParamError::Unknown { param, .. }
                | queries::ParamError::Invalid { param, .. }
                | queries::ParamError::Missing { param, .. }
                | queries::ParamError::Repeated(param) => Some(param),
                _ => None,
            };
            let failure = Failure::invalid("invalid_parameter", text);
            match field {
                Some(f) => failure.field(f),
                None => failure,
            }
        }
        E::RowLimit { .. } => Failure::new(Class::Refused, "query_row_limit", text),
        E::ResultBytesLimit { .. } => Failure::new(Class::Refused, "query_result_limit", text),
        E::MemoryLimit { .. } => Failure::new(Class::Unavailable, "query_memory_limit", text),
        E::TimeLimit { .. } => Failure::new(Class::Unavailable, "query_time_limit", text),
        E::Cluster(_) => Failure::new(Class::Unavailable, "cluster_unavailable", text),
        E::Export(_) | E::Internal(_) => Failure::internal(text),
    }
}

fn chart_failure(e: analytics::chart::ChartError) -> Failure {
    Failure::internal(format!("drawing the chart: {e}"))
}

impl App {
    /// Exports the events recorded since the last export to Parquet under `out` (default
    /// `DATA_DIR/export`).
    pub async fn export(&self, out: Option<PathBuf>) -> Result<analytics::export::ExportSummary, Failure> {
        let out = out.unwrap_or_else(|| self.dir.export());
        let _writer = self.writes.lock().await;
        analytics::export::export_with_books(&*self.store, &out, &AppBooks(self)).await.map_err(export_failure)
    }

    /// A place among the queries and analyses running.
    fn query_place(&self) -> Result<crate::admission::Admitted, Failure> {
        self.queries.try_enter().ok_or_else(|| {
            Failure::new(
                Class::Busy,
                "too_many_requests",
                format!("{QUERIES_RUNNING_MAX} queries or analyses are running already; retry shortly"),
            )
        })
    }

    /// The export directory to read, which must exist. A directory the caller named is named
    /// back; the data directory's own is not (over HTTP its path is nobody's business).
    fn export_dir(&self, export: Option<PathBuf>) -> Result<PathBuf, Failure> {
        let missing = match export {
            Some(dir) if dir.is_dir() => return Ok(dir),
            Some(dir) => format!("no export at {}: run `posledger export` first", dir.display()),
            None if self.dir.export().is_dir() => return Ok(self.dir.export()),
            None => "the data directory has no export yet: run `posledger export` (or POST /v1/export) first".into(),
        };
        Err(Failure::new(Class::Conflict, "no_export", missing))
    }

    /// The named queries with their parameters and charts.
    pub fn list_queries(&self) -> Result<Vec<QueryInfo>, Failure> {
        let all = queries::all().map_err(|e| Failure::internal(format!("loading the named queries: {e}")))?;
        Ok(all
            .into_iter()
            .map(|q| QueryInfo {
                title: q.title.clone(),
                parameters: q
                    .params
                    .iter()
                    .map(|p| ParamInfo {
                        name: p.name.clone(),
                        ty: p.ty.to_string(),
                        default: p.default.as_ref().map(ToString::to_string),
                        about: p.about.clone(),
                    })
                    .collect(),
                chart: q.chart.as_ref().map(|c| {
                    match c {
                        queries::ChartSpec::Line { .. } => "line",
                        queries::ChartSpec::Bars { .. } => "bars",
                        queries::ChartSpec::Heatmap { .. } => "heatmap",
                    }
                    .to_owned()
                }),
                name: q.name,
                description: q.description,
            })
            .collect())
    }

    /// Runs a named query or an analyst's SQL over the export (`export`, default
    /// `DATA_DIR/export`), and draws the query's chart when `chart` is asked for.
    pub async fn query(
        &self,
        export: Option<PathBuf>,
        target: QueryTarget,
        audience: Audience,
        chart: bool,
    ) -> Result<Answer, Failure> {
        self.query_on(export, target, audience, chart, None).await
    }

    /// [`App::query`] on the Ballista cluster at `cluster`, or (when `None`) on the app's own
    /// cluster if it has one ([`App::with_cluster`]), else in this process.
    pub async fn query_on(
        &self,
        export: Option<PathBuf>,
        target: QueryTarget,
        audience: Audience,
        chart: bool,
        cluster: Option<ClusterUrl>,
    ) -> Result<Answer, Failure> {
        // The query's name and parameters first: an unknown query is unknown, export or not.
        if let QueryTarget::Named { name, params } = &target {
            let query = queries::get(name).map_err(|e| sql_failure(e.into()))?;
            query.bind(params).map_err(|e| sql_failure(e.into()))?;
        }
        let dir = self.export_dir(export)?;
        let running = self.query_place()?;
        let cluster = cluster.or_else(|| self.cluster.clone());
        self.run_job(Job::Query { export: dir, target, audience, chart, cluster }, running).await
    }

    /// Runs a polars analysis over the export, and draws its chart when asked. Off the async
    /// workers: polars works on threads of its own.
    pub async fn analyze(
        &self,
        export: Option<PathBuf>,
        analysis: Analysis,
        audience: Audience,
        chart: bool,
    ) -> Result<Answer, Failure> {
        if matches!(analysis, Analysis::Rfm { payers: true, .. }) && audience == Audience::NoPayers {
            return Err(Failure::new(Class::Forbidden, "forbidden", "analysts see no payer identities: segments only")
                .field("payers"));
        }
        let dir = self.export_dir(export)?;
        let running = self.query_place()?;
        self.run_job(Job::Analyze { export: dir, analysis, audience, chart }, running).await
    }

    /// Runs `job` in a worker process when the app has one ([`App::with_analytics_worker`]),
    /// else in this process. `running` is held until the work has really stopped: a caller
    /// that goes away stops a worker at once, and leaves work in this process holding its place
    /// until it ends.
    async fn run_job(&self, job: Job, running: crate::admission::Admitted) -> Result<Answer, Failure> {
        match self.analytics_worker() {
            Some(exe) => crate::worker::run(exe, &job, running).await,
            None => job.run(Some(running)).await,
        }
    }
}

/// One piece of analytics work over an export: what a worker process is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// A named query or an analyst's SQL.
    Query {
        /// The export directory.
        export: PathBuf,
        /// What to run.
        target: QueryTarget,
        /// Who reads it.
        audience: Audience,
        /// Whether to draw the chart.
        chart: bool,
        /// The Ballista cluster that runs it, if not this process.
        #[serde(default)]
        cluster: Option<ClusterUrl>,
    },
    /// A polars analysis.
    Analyze {
        /// The export directory.
        export: PathBuf,
        /// Which.
        analysis: Analysis,
        /// Who reads it.
        audience: Audience,
        /// Whether to draw the chart.
        chart: bool,
    },
}

impl Job {
    /// Longest the job may run: a query [`analytics::sql::QUERY_TIME_MAX`], an analysis
    /// [`ANALYSIS_TIME_MAX`].
    pub fn time_max(&self) -> std::time::Duration {
        match self {
            Job::Query { .. } => analytics::sql::QUERY_TIME_MAX,
            Job::Analyze { .. } => ANALYSIS_TIME_MAX,
        }
    }

    /// The failure of a job that ran past [`Job::time_max`].
    pub fn time_failure(&self) -> Failure {
        match self {
            Job::Query { .. } => sql_failure(SqlError::TimeLimit { max: analytics::sql::QUERY_TIME_MAX }),
            Job::Analyze { .. } => Failure::new(
                Class::Unavailable,
                "query_time_limit",
                format!("the analysis ran longer than its time limit of {ANALYSIS_TIME_MAX:?}"),
            ),
        }
    }

    /// Runs the job on the calling runtime, holding `running` (when this process holds the
    /// job's admission place) until the work has really stopped. A query is async and stops
    /// when dropped; an analysis runs on a blocking thread (polars has threads of its own) that
    /// keeps `running` until it ends, and is answered [`ANALYSIS_TIME_MAX`] at the latest.
    pub async fn run(self, running: Option<crate::admission::Admitted>) -> Result<Answer, Failure> {
        let time_failure = self.time_failure();
        match self {
            Job::Query { export, target, audience, chart, cluster } => {
                let answer = run_query(&export, target, audience, chart, cluster).await;
                drop(running);
                answer
            }
            Job::Analyze { export, analysis, chart, .. } => {
                let work = tokio::task::spawn_blocking(move || {
                    let _running = running;
                    run_analysis(&export, &analysis, chart)
                });
                match tokio::time::timeout(ANALYSIS_TIME_MAX, work).await {
                    Ok(done) => done.map_err(|e| Failure::internal(format!("the analysis stopped: {e}")))?,
                    Err(_) => Err(time_failure),
                }
            }
        }
    }
}

/// Runs a named query or an analyst's SQL over the export at `dir`.
async fn run_query(
    dir: &Path,
    target: QueryTarget,
    audience: Audience,
    chart: bool,
    cluster: Option<ClusterUrl>,
) -> Result<Answer, Failure> {
    let limits = analytics::sql::Limits::default();
    // A named query is posledger's own SQL, built into the binary: it may count payers (repeat
    // payers) for anyone, as long as no payer identity is in its answer. Anyone else's SQL sees
    // the payer column only when its audience may.
    let payers = matches!((&target, audience), (QueryTarget::Named { .. }, _) | (_, Audience::Everyone));
    let engine = cluster.map_or(Engine::Local, Engine::Cluster);
    let session = analytics::sql::Session::open_on(dir, limits, payers, &engine).await.map_err(sql_failure)?;
    match target {
        QueryTarget::Named { name, params } => {
            let query = queries::get(&name).map_err(|e| sql_failure(e.into()))?;
            let values = query.bind(&params).map_err(|e| sql_failure(e.into()))?;
            let table = session.named(&query, &values).await.map_err(sql_failure)?;
            if audience == Audience::NoPayers && table.columns.iter().any(|c| c == PAYER_COLUMN) {
                return Err(Failure::new(
                    Class::Forbidden,
                    "forbidden",
                    format!("query {name} answers with payer identities, which this caller may not see"),
                ));
            }
            let chart = match (chart, &query.chart) {
                (false, _) => None,
                (true, Some(spec)) => {
                    Some(analytics::chart::from_table(spec, &table, &query.title).map_err(chart_failure)?)
                }
                (true, None) => {
                    return Err(Failure::invalid(
                        "no_chart",
                        format!("query {name} has no chart (its header declares none)"),
                    )
                    .field("chart"));
                }
            };
            Ok(Answer { table, chart })
        }
        QueryTarget::Sql(sql) => {
            if chart {
                return Err(Failure::invalid("no_chart", "your own SQL has no chart").field("chart"));
            }
            Ok(Answer { table: session.query(&sql).await.map_err(sql_failure)?, chart: None })
        }
    }
}

fn run_analysis(dir: &Path, analysis: &Analysis, chart: bool) -> Result<Answer, Failure> {
    use analytics::habits;
    let read = |e: habits::HabitsError| Failure::internal(e.to_string());
    let draw = |svg: Result<String, analytics::chart::ChartError>| svg.map_err(chart_failure);
    let answer = match analysis {
        Analysis::Rfm { payers, as_of } => {
            let rfm = habits::rfm(dir, *as_of).map_err(read)?;
            let chart = if chart { Some(draw(habits::rfm_chart(&rfm))?) } else { None };
            Answer { table: if *payers { rfm.payers_table() } else { rfm.segments_table() }, chart }
        }
        Analysis::Trend { merchant } => {
            let weeks = habits::trend(dir, merchant.as_deref()).map_err(read)?;
            let chart = if chart { Some(draw(habits::trend_chart(&weeks))?) } else { None };
            Answer { table: habits::trend_table(&weeks), chart }
        }
        Analysis::Basket => {
            let table = habits::basket(dir).map_err(read)?;
            let chart = if chart { Some(draw(habits::basket_chart(&table))?) } else { None };
            Answer { table, chart }
        }
        Analysis::Cohort => {
            let table = habits::cohort(dir).map_err(read)?;
            // A long history is drawn by month; the table keeps its weeks.
            let chart = match chart {
                false => None,
                true if habits::cohorts(&table) > habits::COHORT_WEEKS_DRAWN_MAX => {
                    Some(draw(habits::cohort_chart(&habits::cohort_monthly(dir).map_err(read)?))?)
                }
                true => Some(draw(habits::cohort_chart(&table))?),
            };
            Answer { table, chart }
        }
    };
    // A chart is drawn from rows the chart bounds itself; the rows themselves are bounded.
    if answer.chart.is_none() && answer.table.rows.len() > analytics::sql::QUERY_ROWS_MAX {
        return Err(Failure::new(
            Class::Refused,
            "query_row_limit",
            format!(
                "the result has {} rows, more than {}; ask a narrower question",
                answer.table.rows.len(),
                analytics::sql::QUERY_ROWS_MAX
            ),
        ));
    }
    Ok(answer)
}

/// The application's books, which an export takes its entries from (they follow the log, so
/// the export reads only its own range).
struct AppBooks<'a>(&'a App);

impl analytics::export::Books for AppBooks<'_> {
    async fn entries(&self, from: u64, to: u64) -> Result<Vec<ledger::entry::BalancedEntry>, ExportError> {
        let books = self.0.books().await.map_err(|f| ExportError::Books(f.message))?;
        if books.position() < to {
            return Err(ExportError::Books(format!("they stand at {}, the export needs {to}", books.position())));
        }
        books.entries_between(from, to).map_err(|e| ExportError::Books(e.to_string()))
    }
}

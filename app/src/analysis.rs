//! Analytics: the incremental Parquet export, named and ad-hoc SQL over it (DataFusion), the
//! polars analyses of spending habits, and their charts. Analysts never see payer
//! identities: a caller that may not ([`Audience::NoPayers`]) gets a session without the
//! `payer` column and no per-payer RFM.

use std::path::{Path, PathBuf};

use analytics::sql::SqlError;
use analytics::table::Table;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::{App, Class, Failure};

/// Queries and analyses running at once in one process (each may hold up to the SQL memory
/// limit); more are refused as busy.
pub const QUERIES_RUNNING_MAX: usize = 2;

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
        analytics::export::export(&*self.store, &out).await.map_err(export_failure)
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

    /// The export directory to read, which must exist.
    fn export_dir(&self, export: Option<PathBuf>) -> Result<PathBuf, Failure> {
        let dir = export.unwrap_or_else(|| self.dir.export());
        if !dir.is_dir() {
            return Err(Failure::new(
                Class::Conflict,
                "no_export",
                format!("no export at {}: run `posledger export` first", dir.display()),
            ));
        }
        Ok(dir)
    }

    /// The named queries with their parameters and charts.
    pub fn list_queries(&self) -> Result<Vec<QueryInfo>, Failure> {
        let all = queries::all().map_err(|e| Failure::internal(format!("loading the named queries: {e}")))?;
        Ok(all
            .into_iter()
            .map(|q| QueryInfo {
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
        // The query's name and parameters first: an unknown query is unknown, export or not.
        let named = match &target {
            QueryTarget::Named { name, params } => {
                let query = queries::get(name).map_err(|e| sql_failure(e.into()))?;
                let values = query.bind(params).map_err(|e| sql_failure(e.into()))?;
                Some((query, values))
            }
            QueryTarget::Sql(_) => None,
        };
        let dir = self.export_dir(export)?;
        let _running = self.query_place()?;
        let limits = analytics::sql::Limits::default();
        let session = match audience {
            Audience::Everyone => analytics::sql::Session::open(&dir, limits).await,
            Audience::NoPayers => analytics::sql::Session::open_without_payers(&dir, limits).await,
        }
        .map_err(sql_failure)?;
        match (target, named) {
            (QueryTarget::Named { name, .. }, Some((query, values))) => {
                let table = session.named(&query, &values).await.map_err(sql_failure)?;
                let chart = match (chart, &query.chart) {
                    (false, _) => None,
                    (true, Some(spec)) => {
                        Some(analytics::chart::from_table(spec, &table, &query.name).map_err(chart_failure)?)
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
            (QueryTarget::Named { .. }, None) => Err(Failure::internal("a named query without its binding")),
            (QueryTarget::Sql(sql), _) => {
                if chart {
                    return Err(Failure::invalid("no_chart", "your own SQL has no chart").field("chart"));
                }
                Ok(Answer { table: session.query(&sql).await.map_err(sql_failure)?, chart: None })
            }
        }
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
        let _running = self.query_place()?;
        let answer = tokio::task::spawn_blocking(move || run_analysis(&dir, &analysis, chart))
            .await
            .map_err(|e| Failure::internal(format!("the analysis stopped: {e}")))??;
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
}

fn run_analysis(dir: &Path, analysis: &Analysis, chart: bool) -> Result<Answer, Failure> {
    use analytics::habits;
    let read = |e: habits::HabitsError| Failure::internal(e.to_string());
    let draw = |svg: Result<String, analytics::chart::ChartError>| svg.map_err(chart_failure);
    Ok(match analysis {
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
            let chart = if chart { Some(draw(habits::cohort_chart(&table))?) } else { None };
            Answer { table, chart }
        }
    })
}

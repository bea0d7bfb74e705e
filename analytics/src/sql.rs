//! SQL over the export: a DataFusion session ([`Session`]) that registers each exported table
//! as a listing table over its partitions (`TABLE/date=YYYY-MM-DD/*.parquet`, with `date`
//! as a Date32 partition column next to the file's own columns), and runs the named queries
//! of the `queries` crate with typed parameters, or an analyst's own SQL.
//!
//! An analyst's SQL is read-only and bounded, every bound named here and documented:
//!
//! - one statement, a `SELECT` or `WITH` query; DDL (`CREATE EXTERNAL TABLE` ...), DML,
//!   `COPY`, `SET`, `EXPLAIN` and every other statement are refused ([`SqlError::NotReadOnly`]);
//! - no file access beyond the export: the session knows only the export's tables, and
//!   reading a path as a table (`SELECT * FROM 'file.csv'`) is not enabled, so a path or a
//!   file-reading function is an unknown table or function ([`SqlError::Invalid`]);
//! - at most [`SQL_BYTES_MAX`] bytes of SQL;
//! - [`Limits`]: memory ([`QUERY_MEMORY_BYTES_MAX`]: operators that would hold more fail with
//!   [`SqlError::MemoryLimit`]), time ([`QUERY_TIME_MAX`]: [`SqlError::TimeLimit`]) and result
//!   rows ([`QUERY_ROWS_MAX`]: [`SqlError::RowLimit`]; aggregate or add a `LIMIT`) and result
//!   bytes ([`QUERY_RESULT_BYTES_MAX`]: [`SqlError::ResultBytesLimit`]; wide text columns).
//!
//! - functions: only those whose results are bounded by their arguments, and `repeat`,
//!   `lpad`, `rpad` under a budget of text per query ([`functions`]);
//! - results measured as Arrow holds them, each batch before it is converted.
//!
//! Named queries run under the same limits.
//!
//! A session runs its queries in this process ([`Engine::Local`]) or on a Ballista cluster
//! ([`Engine::Cluster`], [`cluster`]), with the same rules.

pub mod cluster;
pub mod functions;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;
use queries::{Query, Value};
use rust_decimal::Decimal;

use crate::export;
use crate::table::Table;

/// Longest SQL text accepted, in bytes.
pub const SQL_BYTES_MAX: usize = 64 * 1024;
/// Memory a query's operators may hold (hash tables, sorts), in bytes.
pub const QUERY_MEMORY_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Longest a query may run, planning included.
pub const QUERY_TIME_MAX: Duration = Duration::from_secs(30);
/// Most rows a result may have.
pub const QUERY_ROWS_MAX: usize = 100_000;
/// Most bytes a result may hold, as Arrow holds its batches (values, offsets and validity of
/// the rows returned), each batch measured before it is converted.
pub const QUERY_RESULT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The bounds a session enforces; [`Limits::default`] is the documented one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`QUERY_MEMORY_BYTES_MAX`].
    pub memory_bytes_max: usize,
    /// See [`QUERY_TIME_MAX`].
    pub time_max: Duration,
    /// See [`QUERY_ROWS_MAX`].
    pub rows_max: usize,
    /// See [`QUERY_RESULT_BYTES_MAX`].
    pub result_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes_max: QUERY_MEMORY_BYTES_MAX,
            time_max: QUERY_TIME_MAX,
            rows_max: QUERY_ROWS_MAX,
            result_bytes_max: QUERY_RESULT_BYTES_MAX,
        }
    }
}

/// Why a query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Bad input: the SQL is not one read-only query.
    #[error("only a single SELECT or WITH query is allowed: {0}")]
    NotReadOnly(String),
    /// Bad input: the SQL is longer than [`SQL_BYTES_MAX`].
    #[error("the SQL is {bytes} bytes; at most {max} are accepted")]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Bad input: the SQL does not parse, names an unknown table, column or function, or
    /// fails on the data (a division by zero, an overflow).
    #[error("{0}")]
    Invalid(String),
    /// Bad input: a named query's parameter.
    #[error(transparent)]
    Param(#[from] queries::ParamError),
    /// Resource: the query needed more than its memory limit.
    #[error("the query needs more than its memory limit of {max} bytes; filter or aggregate more")]
    MemoryLimit {
        /// The limit.
        max: usize,
    },
    /// Resource: the query ran longer than its time limit.
    #[error("the query ran longer than its time limit of {max:?}")]
    TimeLimit {
        /// The limit.
        max: Duration,
    },
    /// Bad input: the result has more rows than the row limit.
    #[error("the result has more than {max} rows; aggregate or add a LIMIT")]
    RowLimit {
        /// The limit.
        max: usize,
    },
    /// Bad input: the result holds more bytes than the result limit.
    #[error("the result holds more than {max} bytes; select fewer or narrower columns, or aggregate")]
    ResultBytesLimit {
        /// The limit.
        max: usize,
    },
    /// Resource: the cluster could not run the query (its scheduler cannot be reached, or it
    /// failed the job, for example after losing an executor beyond Ballista's retries).
    #[error("{0}")]
    Cluster(String),
    /// I/O: the export cannot be read.
    #[error("reading the export: {0}")]
    Export(String),
    /// A defect of posledger or of the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// The same error with the export directory's own path taken out of its text: files are
    /// named relative to the export, and the server's layout is nobody's business.
    fn without_path(self, dir: &Path) -> SqlError {
        let dir = dir.display().to_string();
        let scrub = |text: String| text.replace(&format!("{dir}/"), "").replace(&dir, "the export");
        match self {
            SqlError::Invalid(t) => SqlError::Invalid(scrub(t)),
            SqlError::NotReadOnly(t) => SqlError::NotReadOnly(scrub(t)),
            SqlError::Export(t) => SqlError::Export(scrub(t)),
            SqlError::Internal(t) => SqlError::Internal(scrub(t)),
            SqlError::Cluster(t) => SqlError::Cluster(scrub(t)),
            other => other,
        }
    }

    fn from_engine(e: DataFusionError, limits: &Limits) -> SqlError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => SqlError::MemoryLimit { max: limits.memory_bytes_max },
            DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) | DataFusionError::ParquetError(_) => {
                SqlError::Export(e.to_string())
            }
            DataFusionError::Internal(_) => SqlError::Internal(e.to_string()),
            _ => SqlError::Invalid(e.to_string()),
        }
    }

    /// An error of a query's run on the cluster: the plan was accepted here, so what went
    /// wrong happened there. Ballista reports a task's failure as text, so the errors a local
    /// run tells apart (memory, the data) are recognised by DataFusion's and Arrow's wording.
    fn from_cluster(e: DataFusionError, limits: &Limits) -> SqlError {
        if let DataFusionError::ResourcesExhausted(_) = e.find_root() {
            return SqlError::MemoryLimit { max: limits.memory_bytes_max };
        }
        let text = e.to_string();
        if text.contains("Resources exhausted") {
            return SqlError::MemoryLimit { max: limits.memory_bytes_max };
        }
        // Each as DataFusion and Arrow write it, and as Ballista's task failure shows it
        // (Arrow's error in its debug form).
        const DATA_ERRORS: &[(&str, &str)] = &[
            ("Divide by zero", "division by zero"),
            ("DivideByZero", "division by zero"),
            ("Cast error", "a value that cannot be cast"),
            ("CastError", "a value that cannot be cast"),
            ("Arithmetic overflow", "an arithmetic overflow"),
            ("ArithmeticOverflow", "an arithmetic overflow"),
            ("Overflow happened", "an arithmetic overflow"),
            ("Compute error", "a computation on the data failed"),
            ("ComputeError", "a computation on the data failed"),
        ];
        match DATA_ERRORS.iter().find(|(wording, _)| text.contains(wording)) {
            Some((_, what)) => SqlError::Invalid(format!("the query failed on the data, on the cluster: {what}")),
            None => SqlError::Cluster(format!("the cluster did not run the query: {text}")),
        }
    }
}

/// Where a session's queries run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// In this process.
    #[default]
    Local,
    /// On the Ballista cluster whose scheduler is at this address ([`cluster`]).
    Cluster(cluster::ClusterUrl),
}

/// A DataFusion session over one export directory.
#[derive(Clone)]
pub struct Session {
    ctx: SessionContext,
    limits: Limits,
    dir: PathBuf,
    /// The cluster queries run on, if not this process.
    cluster: Option<cluster::ClusterUrl>,
    /// Text built by `repeat`, `lpad` and `rpad` in the query running
    /// ([`functions::GENERATED_TEXT_BYTES_MAX`]).
    generated: Arc<AtomicUsize>,
}

impl Session {
    /// Registers the tables of the export at `dir` (a table not exported yet is empty).
    pub async fn open(dir: &Path, limits: Limits) -> Result<Session, SqlError> {
        Session::open_on(dir, limits, true, &Engine::Local).await
    }

    /// Like [`Session::open`], but `payments` has no `payer` column: for analysts, who see no
    /// payer identities (the column is not there to select, filter or join on).
    pub async fn open_without_payers(dir: &Path, limits: Limits) -> Result<Session, SqlError> {
        Session::open_on(dir, limits, false, &Engine::Local).await
    }

    /// A session over the export at `dir` whose queries run on `engine`; without `payers`,
    /// `payments` has no `payer` column. A cluster's scheduler that cannot be reached is
    /// [`SqlError::Cluster`] within [`cluster::CLUSTER_CONNECT_TIMEOUT`].
    pub async fn open_on(dir: &Path, limits: Limits, payers: bool, engine: &Engine) -> Result<Session, SqlError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| SqlError::Export(format!("{}: {e}", dir.display())))?;
        let cluster = match engine {
            Engine::Local => None,
            Engine::Cluster(url) => {
                cluster::reachable(url).await?;
                Some(url)
            }
        };
        // No spilling: a query that needs more memory than its limit fails clearly instead of
        // writing temporary files outside the export.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes_max, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let config = match cluster {
            None => SessionConfig::new(),
            Some(_) => cluster::config(),
        };
        let config = config.with_target_partitions(cores).with_information_schema(false);
        let mut builder =
            SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features();
        let generated = Arc::new(AtomicUsize::new(0));
        functions::sandbox(&mut builder, &generated);
        let state = match cluster {
            None => builder.build(),
            Some(url) => cluster::upgrade(builder.build(), url)?,
        };
        let ctx = SessionContext::new_with_state(state);
        for (name, schema) in export::schemas() {
            let schema = scanned(&schema, payers || name != "payments");
            let table_dir = dir.join(name);
            // A cluster's plan carries listing tables only: a table not exported yet is one
            // over a directory that holds no files, which reads as no rows.
            if table_dir.is_dir() || cluster.is_some() {
                let url = ListingTableUrl::parse(format!("{}/", table_dir.display()))
                    .map_err(|e| SqlError::Export(e.to_string()))?;
                let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet")
                    .with_table_partition_cols(vec![("date".to_owned(), DataType::Date32)]);
                let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
                let table = ListingTable::try_new(config).map_err(|e| SqlError::from_engine(e, &limits))?;
                ctx.register_table(name, Arc::new(table)).map_err(|e| SqlError::from_engine(e, &limits))?;
            } else {
                let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new("date", DataType::Date32, false));
                let table = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])
                    .map_err(|e| SqlError::from_engine(e, &limits))?;
                ctx.register_table(name, Arc::new(table)).map_err(|e| SqlError::from_engine(e, &limits))?;
            }
        }
        let cluster = cluster.cloned();
        Ok(Session { ctx, limits, dir, cluster, generated })
    }

    /// The export directory this session reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The session's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs an analyst's SQL: checked read-only, then run within the limits.
    pub async fn query(&self, sql: &str) -> Result<Table, SqlError> {
        read_only(sql)?;
        self.run(sql, HashMap::new()).await.map_err(|e| e.without_path(&self.dir))
    }

    /// Runs a named query with its bound parameter values ([`Query::bind`]).
    pub async fn named(&self, query: &Query, values: &[(String, Value)]) -> Result<Table, SqlError> {
        let params = values.iter().map(|(name, value)| (name.clone(), scalar(value))).collect();
        self.run(&query.sql, params).await.map_err(|e| e.without_path(&self.dir))
    }

    /// A named query's result stream, for callers that consume batches themselves (the
    /// benchmark). No row or time limit.
    pub async fn named_stream(
        &self,
        query: &Query,
        values: &[(String, Value)],
    ) -> Result<SendableRecordBatchStream, SqlError> {
        let params = values.iter().map(|(name, value)| (name.clone(), scalar(value))).collect();
        Ok(self.stream(&query.sql, params).await?.0)
    }

    /// Plans and runs `sql`, collecting at most `rows_max` rows and `result_bytes_max` bytes
    /// within `time_max`.
    async fn run(&self, sql: &str, params: HashMap<String, ScalarValue>) -> Result<Table, SqlError> {
        let limits = self.limits;
        let mut job = None;
        let work = async {
            let (mut stream, on_cluster) = self.stream(sql, params).await?;
            job = on_cluster;
            let mut table = Table::new(stream.schema().fields().iter().map(|f| f.name().clone()));
            let mut bytes = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| self.run_error(e))?;
                if table.rows.len() + batch.num_rows() > limits.rows_max {
                    return Err(SqlError::RowLimit { max: limits.rows_max });
                }
                bytes = bytes.saturating_add(arrow_bytes(&batch));
                if bytes > limits.result_bytes_max {
                    return Err(SqlError::ResultBytesLimit { max: limits.result_bytes_max });
                }
                table.push_batch(&batch);
            }
            Ok(table)
        };
        let answer = tokio::time::timeout(limits.time_max, work).await;
        // A query stopped here is stopped on the cluster too, before the answer goes out.
        if let Some(job) = &job
            && !matches!(answer, Ok(Ok(_)))
        {
            job.cancel().await;
        }
        answer.map_err(|_| SqlError::TimeLimit { max: limits.time_max })?
    }

    /// Plans `sql` with the session's statement rules and returns its result stream, and the
    /// job it started on the cluster, if it runs there.
    async fn stream(
        &self,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<(SendableRecordBatchStream, Option<cluster::Job>), SqlError> {
        if sql.len() > SQL_BYTES_MAX {
            return Err(SqlError::TooLong { bytes: sql.len(), max: SQL_BYTES_MAX });
        }
        let limits = self.limits;
        self.generated.store(0, Ordering::Relaxed);
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let mut frame = self.ctx.sql_with_options(sql, options).await.map_err(|e| SqlError::from_engine(e, &limits))?;
        if !params.is_empty() {
            frame = frame.with_param_values(params).map_err(|e| SqlError::from_engine(e, &limits))?;
        }
        let Some(url) = &self.cluster else {
            return Ok((frame.execute_stream().await.map_err(|e| self.run_error(e))?, None));
        };
        let schema = frame.schema().as_arrow().clone();
        let mut plan = frame.create_physical_plan().await.map_err(|e| SqlError::from_engine(e, &limits))?;
        let job = cluster::Job::of(&plan, url);
        if job.is_none() && plan.schema().fields().is_empty() && !schema.fields().is_empty() {
            // A query the optimiser found empty is answered here, by Ballista's planner, with
            // no columns; the local answer has the query's columns and no rows.
            plan = Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(schema)));
        }
        let stream =
            datafusion::physical_plan::execute_stream(plan, self.ctx.task_ctx()).map_err(|e| self.run_error(e))?;
        Ok((Box::pin(cluster::JobStream::new(stream, job.clone())), job))
    }

    /// An error met while the query ran (after it was planned here).
    fn run_error(&self, e: DataFusionError) -> SqlError {
        if self.cluster.is_some() {
            SqlError::from_cluster(e, &self.limits)
        } else {
            SqlError::from_engine(e, &self.limits)
        }
    }
}

/// The bytes a batch's rows take as Arrow holds them: only the rows of a slice, counted
/// from the buffers' own lengths.
fn arrow_bytes(batch: &arrow::record_batch::RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()))
        .fold(0usize, usize::saturating_add)
}

/// Refuses anything but one `SELECT`/`WITH` query.
fn read_only(sql: &str) -> Result<(), SqlError> {
    if sql.len() > SQL_BYTES_MAX {
        return Err(SqlError::TooLong { bytes: sql.len(), max: SQL_BYTES_MAX });
    }
    let statements = DFParser::parse_sql(sql).map_err(|e| SqlError::Invalid(e.to_string()))?;
    match statements.len() {
        0 => return Err(SqlError::NotReadOnly("the SQL holds no statement".into())),
        1 => {}
        n => return Err(SqlError::NotReadOnly(format!("the SQL holds {n} statements"))),
    }
    match &statements[0] {
        DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)) => Ok(()),
        DfStatement::Statement(s) => {
            let text = s.to_string();
            let verb = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Err(SqlError::NotReadOnly(format!("{verb} ... is not a query")))
        }
        DfStatement::CreateExternalTable(_) => {
            Err(SqlError::NotReadOnly("CREATE EXTERNAL TABLE is not a query".into()))
        }
        DfStatement::CopyTo(_) => Err(SqlError::NotReadOnly("COPY is not a query".into())),
        DfStatement::Explain(_) => Err(SqlError::NotReadOnly("EXPLAIN is not a query".into())),
        DfStatement::Reset(_) => Err(SqlError::NotReadOnly("RESET is not a query".into())),
    }
}

/// A parameter value as DataFusion's scalar of the matching type.
fn scalar(value: &Value) -> ScalarValue {
    match value {
        Value::Date(d) => {
            // Days since 1970-01-01 fit an i32 for every date chrono can hold.
            let days = d.signed_duration_since(chrono::NaiveDate::default()).num_days();
            ScalarValue::Date32(Some(days as i32))
        }
        Value::Int(i) => ScalarValue::Int64(Some(*i)),
        Value::Decimal(d) => decimal_scalar(*d),
        Value::Text(t) => ScalarValue::Utf8(Some(t.clone())),
    }
}

fn decimal_scalar(d: Decimal) -> ScalarValue {
    ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8)
}

/// The schema a query sees of an exported table: text columns are read as string views (the
/// files keep plain `string` columns, so every Parquet reader reads them as before). A view
/// keeps a short value inline, so grouping and comparing merchant ids, channels and currencies
/// neither copies nor follows a pointer per row. Without `payers`, the `payer` column is left out.
fn scanned(schema: &Schema, payers: bool) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| payers || f.name() != "payer")
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

//! `posledger query` and `posledger analyze`: wiring to `analytics` over the export.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use analytics::table::{Format, Table};
use anyhow::{Context, Result, bail};

/// What `query` runs.
pub enum QueryTarget {
    /// A named query from `queries/sql`.
    Named(String),
    /// An analyst's own SQL.
    Sql(String),
    /// List the named queries.
    List,
}

/// Which analysis `analyze` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Analysis {
    /// RFM per segment (or per payer).
    Rfm {
        /// One row per payer instead of per segment.
        payers: bool,
    },
    /// Week-over-week trend per merchant.
    Trend,
    /// Basket-size bands.
    Basket,
    /// Cohort retention.
    Cohort,
}

fn export_dir(data_dir: &Path, export: Option<PathBuf>) -> Result<PathBuf> {
    let dir = export.unwrap_or_else(|| data_dir.join("export"));
    if !dir.is_dir() {
        bail!("no export at {}: run `posledger export` first", dir.display());
    }
    Ok(dir)
}

fn emit(table: &Table, format: Format, chart: Option<(&Path, String)>) -> Result<ExitCode> {
    if let Some((path, svg)) = chart {
        std::fs::write(path, svg).with_context(|| format!("writing the chart {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    print!("{}", table.render(format));
    Ok(ExitCode::SUCCESS)
}

/// `posledger query NAME|--sql SQL|--list [--param k=v] [--chart FILE.svg]`.
pub fn query(
    data_dir: &Path,
    export: Option<PathBuf>,
    target: QueryTarget,
    params: &[String],
    format: Format,
    chart: Option<PathBuf>,
) -> Result<ExitCode> {
    if let QueryTarget::List = target {
        let mut table = Table::new(["name", "parameters", "chart", "description"]);
        for q in queries::all().context("loading the named queries")? {
            let params: Vec<String> = q
                .params
                .iter()
                .map(|p| match &p.default {
                    Some(d) => format!("{} {} = {d}", p.name, p.ty),
                    None => format!("{} {} (required)", p.name, p.ty),
                })
                .collect();
            let chart = q.chart.as_ref().map_or("", |c| match c {
                queries::ChartSpec::Line { .. } => "line",
                queries::ChartSpec::Bars { .. } => "bars",
                queries::ChartSpec::Heatmap { .. } => "heatmap",
            });
            table.rows.push(
                [q.name, params.join("; "), chart.to_owned(), q.description].map(analytics::table::Cell::Text).to_vec(),
            );
        }
        return emit(&table, format, None);
    }
    let dir = export_dir(data_dir, export)?;
    let rt = crate::cli::runtime()?;
    let session = rt.block_on(analytics::sql::Session::open(&dir, analytics::sql::Limits::default()))?;
    let (table, spec, title) = match target {
        QueryTarget::Named(name) => {
            let query = queries::get(&name)?;
            let values = query.bind(params)?;
            let table = rt.block_on(session.named(&query, &values))?;
            (table, query.chart.clone(), query.name)
        }
        QueryTarget::Sql(sql) => {
            if !params.is_empty() {
                bail!("--param applies to named queries only");
            }
            (rt.block_on(session.query(&sql))?, None, String::new())
        }
        QueryTarget::List => unreachable!("answered above"),
    };
    let chart = match (chart, spec) {
        (Some(path), Some(spec)) => Some((path, analytics::chart::from_table(&spec, &table, &title)?)),
        (Some(_), None) => bail!("this query has no chart (its header declares none)"),
        (None, _) => None,
    };
    emit(&table, format, chart.as_ref().map(|(p, s)| (p.as_path(), s.clone())))
}

/// `posledger analyze rfm|trend|basket|cohort [--chart FILE.svg]`.
pub fn analyze(
    data_dir: &Path,
    export: Option<PathBuf>,
    analysis: Analysis,
    merchant: Option<&str>,
    as_of: Option<chrono::NaiveDate>,
    format: Format,
    chart: Option<PathBuf>,
) -> Result<ExitCode> {
    let dir = export_dir(data_dir, export)?;
    let (table, svg) = match analysis {
        Analysis::Rfm { payers } => {
            let rfm = analytics::habits::rfm(&dir, as_of)?;
            let svg = chart.is_some().then(|| analytics::habits::rfm_chart(&rfm)).transpose()?;
            (if payers { rfm.payers_table() } else { rfm.segments_table() }, svg)
        }
        Analysis::Trend => {
            let weeks = analytics::habits::trend(&dir, merchant)?;
            let svg = chart.is_some().then(|| analytics::habits::trend_chart(&weeks)).transpose()?;
            (analytics::habits::trend_table(&weeks), svg)
        }
        Analysis::Basket => {
            let table = analytics::habits::basket(&dir)?;
            let svg = chart.is_some().then(|| analytics::habits::basket_chart(&table)).transpose()?;
            (table, svg)
        }
        Analysis::Cohort => {
            let table = analytics::habits::cohort(&dir)?;
            let svg = chart.is_some().then(|| analytics::habits::cohort_chart(&table)).transpose()?;
            (table, svg)
        }
    };
    if table.rows.len() > analytics::sql::QUERY_ROWS_MAX {
        bail!(
            "the result has {} rows, more than {}; use --format csv into a file with a narrower question",
            table.rows.len(),
            analytics::sql::QUERY_ROWS_MAX
        );
    }
    emit(&table, format, chart.as_deref().zip(svg))
}

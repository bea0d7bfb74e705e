//! `queries` owns posledger's named SQL queries: the `.sql` files in `queries/sql/`, built
//! into the binary, and the code that reads their headers ([`Query`], [`Param`],
//! [`ChartSpec`]) and turns `name=value` arguments into typed values ([`Value`]). It runs
//! nothing: `analytics::sql` runs a query on DataFusion over the export.
//!
//! A query file opens with a header of `--` comment lines, then the SQL:
//!
//! ```sql
//! -- name: daily_sales
//! -- title: Daily net sales
//! -- description: Net sales per business day, merchant and channel ...
//! --   (an indented line continues the description)
//! -- param: from date = 1970-01-01 first business day included
//! -- param: merchant text = * one merchant id, or * for every merchant
//! -- chart: bars x=channel y=gross_sales
//! SELECT ... WHERE date BETWEEN $from AND $to AND ($merchant = '*' OR merchant_id = $merchant)
//! ```
//!
//! A parameter is `-- param: NAME TYPE [= DEFAULT] ABOUT`, with TYPE one of `date`
//! (YYYY-MM-DD), `int` (i64), `decimal` (exact) and `text`; the SQL names it `$NAME`. A
//! parameter without a default must be given. `title` (optional; the name when absent) is what
//! people call the answer, the title of its chart and of its view. `chart` (optional) says how `posledger query
//! NAME --chart FILE.svg` draws the result: `line x=COL y=COL`, `bars x=COL y=COL` or
//! `heatmap x=COL y=COL value=COL`.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// The query files, in the order `posledger query --list` shows them.
const FILES: &[(&str, &str)] = &[
    ("daily_sales.sql", include_str!("../sql/daily_sales.sql")),
    ("channel_mix.sql", include_str!("../sql/channel_mix.sql")),
    ("hour_weekday.sql", include_str!("../sql/hour_weekday.sql")),
    ("average_ticket.sql", include_str!("../sql/average_ticket.sql")),
    ("refund_rate.sql", include_str!("../sql/refund_rate.sql")),
    ("top_merchants.sql", include_str!("../sql/top_merchants.sql")),
    ("repeat_payers.sql", include_str!("../sql/repeat_payers.sql")),
    ("fee_income.sql", include_str!("../sql/fee_income.sql")),
    ("breaks_by_day.sql", include_str!("../sql/breaks_by_day.sql")),
];

/// The earliest year a date parameter may name (the years posledger accepts business times in).
pub const PARAM_DATE_YEAR_MIN: i32 = 2000;
/// The first year a date parameter may no longer name.
pub const PARAM_DATE_YEAR_END: i32 = 2100;

/// Longest text parameter value, in bytes.
pub const PARAM_TEXT_BYTES_MAX: usize = 256;

/// A named query: its header and its SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name `posledger query NAME` takes (the file's name without `.sql`).
    pub name: String,
    /// What people call its answer (its chart's title); the name when the header gives none.
    pub title: String,
    /// What the query answers.
    pub description: String,
    /// Its parameters, in header order.
    pub params: Vec<Param>,
    /// How to draw its result, when it has a natural chart.
    pub chart: Option<ChartSpec>,
    /// The SQL after the header; parameters appear as `$NAME`.
    pub sql: String,
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name (`$NAME` in the SQL, `--param NAME=VALUE` on the command line).
    pub name: String,
    /// The type values are checked against.
    pub ty: ParamType,
    /// The value used when none is given; `None` makes the parameter required.
    pub default: Option<Value>,
    /// What it means.
    pub about: String,
}

/// The types a parameter can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A signed 64-bit integer.
    Int,
    /// An exact decimal number.
    Decimal,
    /// Text of at most [`PARAM_TEXT_BYTES_MAX`] bytes.
    Text,
}

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A date.
    Date(NaiveDate),
    /// An integer.
    Int(i64),
    /// A decimal.
    Decimal(Decimal),
    /// Text.
    Text(String),
}

/// How a query's result is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartSpec {
    /// One line of `y` over `x`.
    Line {
        /// Column along the horizontal axis.
        x: String,
        /// Column plotted.
        y: String,
    },
    /// One bar of `y` per `x`.
    Bars {
        /// Column naming the bars.
        x: String,
        /// Column giving their heights.
        y: String,
    },
    /// A grid of `x` by `y` cells shaded by `value`.
    Heatmap {
        /// Column along the horizontal axis.
        x: String,
        /// Column along the vertical axis.
        y: String,
        /// Column shading the cells.
        value: String,
    },
}

/// A query file whose header is wrong: a defect of the file, found by the test that loads
/// them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {message}")]
pub struct HeaderError {
    /// The file.
    pub file: String,
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A parameter the caller got wrong (bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// No query has that name.
    #[error("no query is named {0:?} (posledger query --list shows them)")]
    UnknownQuery(String),
    /// The query has no such parameter.
    #[error("query {query} has no parameter {param:?} (it takes: {expected})")]
    Unknown {
        /// The query.
        query: String,
        /// The name given.
        param: String,
        /// The parameters it takes.
        expected: String,
    },
    /// The same parameter was given twice.
    #[error("parameter {0} is given twice")]
    Repeated(String),
    /// A required parameter is missing.
    #[error("query {query} needs parameter {param} ({ty})")]
    Missing {
        /// The query.
        query: String,
        /// The parameter.
        param: String,
        /// Its type.
        ty: ParamType,
    },
    /// A value does not parse as the parameter's type.
    #[error("parameter {param}: {value:?} is not a {ty}{hint}")]
    Invalid {
        /// The parameter.
        param: String,
        /// The value given.
        value: String,
        /// The type expected.
        ty: ParamType,
        /// More detail, when there is any.
        hint: String,
    },
    /// An argument is not `name=value`.
    #[error("{0:?} is not NAME=VALUE")]
    Malformed(String),
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Date => "date",
            ParamType::Int => "int",
            ParamType::Decimal => "decimal",
            ParamType::Text => "text",
        })
    }
}

impl FromStr for ParamType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "date" => Ok(ParamType::Date),
            "int" => Ok(ParamType::Int),
            "decimal" => Ok(ParamType::Decimal),
            "text" => Ok(ParamType::Text),
            other => Err(format!("unknown parameter type {other:?} (date, int, decimal or text)")),
        }
    }
}

impl ParamType {
    /// Parses `raw` as a value of this type; `param` names it in the error.
    pub fn parse(self, param: &str, raw: &str) -> Result<Value, ParamError> {
        let invalid =
            |hint: String| ParamError::Invalid { param: param.to_owned(), value: raw.to_owned(), ty: self, hint };
        match self {
            ParamType::Date => {
                use chrono::Datelike;
                NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                    .ok()
                    .filter(|d| (PARAM_DATE_YEAR_MIN..PARAM_DATE_YEAR_END).contains(&d.year()))
                    .map(Value::Date)
                    .ok_or_else(|| {
                        invalid(format!(" (YYYY-MM-DD, {PARAM_DATE_YEAR_MIN} to {})", PARAM_DATE_YEAR_END - 1))
                    })
            }
            ParamType::Int => raw.parse().map(Value::Int).map_err(|_| invalid(String::new())),
            ParamType::Decimal => Decimal::from_str_exact(raw).map(Value::Decimal).map_err(|_| invalid(String::new())),
            ParamType::Text if raw.len() > PARAM_TEXT_BYTES_MAX => {
                Err(invalid(format!(" (at most {PARAM_TEXT_BYTES_MAX} bytes)")))
            }
            ParamType::Text => Ok(Value::Text(raw.to_owned())),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Date(d) => write!(f, "{d}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

impl Value {
    /// The value as a SQL literal of its type, for engines that take no bound parameters
    /// (the benchmark's DuckDB peer): dates as `DATE 'YYYY-MM-DD'`, text quoted with `'`
    /// doubled.
    pub fn sql_literal(&self) -> String {
        match self {
            Value::Date(d) => format!("DATE '{d}'"),
            Value::Int(i) => i.to_string(),
            Value::Decimal(d) => d.to_string(),
            Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
        }
    }
}

/// Every named query, parsed from the files built into the binary.
pub fn all() -> Result<Vec<Query>, HeaderError> {
    FILES.iter().map(|(file, text)| Query::parse(file, text)).collect()
}

/// The query named `name`.
pub fn get(name: &str) -> Result<Query, ParamError> {
    let file = format!("{name}.sql");
    let (file, text) =
        FILES.iter().find(|(f, _)| *f == file).ok_or_else(|| ParamError::UnknownQuery(name.to_owned()))?;
    // The files are part of the build and `every_query_file_parses` loads them all, so a
    // header error here is a defect of the build, reported as an unknown query with why.
    Query::parse(file, text).map_err(|e| ParamError::UnknownQuery(format!("{name} ({e})")))
}

impl Query {
    /// Parses a query file: the header, then the SQL.
    pub fn parse(file: &str, text: &str) -> Result<Query, HeaderError> {
        let error = |line: usize, message: String| HeaderError { file: file.to_owned(), line, message };
        let (mut name, mut description, mut title) = (None::<String>, None::<String>, None::<String>);
        let (mut params, mut chart) = (Vec::<Param>::new(), None);
        let mut sql_from = text.len();
        let mut offset = 0;
        let mut last_key = "";
        for (index, line) in text.split_inclusive('\n').enumerate() {
            let number = index + 1;
            let Some(comment) = line.trim_end().strip_prefix("--") else {
                sql_from = offset;
                break;
            };
            offset += line.len();
            if let Some(more) = comment.strip_prefix("   ") {
                // A continuation line: only the description takes them.
                match (&mut description, last_key) {
                    (Some(d), "description") => {
                        d.push(' ');
                        d.push_str(more.trim());
                    }
                    _ => return Err(error(number, "a continuation line must follow description".into())),
                }
                continue;
            }
            let Some((key, rest)) = comment.trim().split_once(':') else {
                return Err(error(number, "header lines are `-- KEY: VALUE`".into()));
            };
            let rest = rest.trim();
            last_key = match key {
                "name" => {
                    name = Some(rest.to_owned());
                    "name"
                }
                "description" => {
                    description = Some(rest.to_owned());
                    "description"
                }
                "title" => {
                    title = Some(rest.to_owned());
                    "title"
                }
                "param" => {
                    let param = Param::parse(rest).map_err(|m| error(number, m))?;
                    if params.iter().any(|p| p.name == param.name) {
                        return Err(error(number, format!("parameter {} is declared twice", param.name)));
                    }
                    params.push(param);
                    "param"
                }
                "chart" => {
                    chart = Some(ChartSpec::parse(rest).map_err(|m| error(number, m))?);
                    "chart"
                }
                other => return Err(error(number, format!("unknown header key {other:?}"))),
            };
        }
        let name = name.ok_or_else(|| error(1, "the header has no name".into()))?;
        if file.strip_suffix(".sql") != Some(name.as_str()) {
            return Err(error(1, format!("name {name:?} does not match the file name")));
        }
        let description = description.ok_or_else(|| error(1, "the header has no description".into()))?;
        let sql = text[sql_from..].trim().to_owned();
        if sql.is_empty() {
            return Err(error(1, "no SQL after the header".into()));
        }
        for p in &params {
            if !mentions(&sql, &p.name) {
                return Err(error(1, format!("parameter {} is declared but the SQL never uses ${}", p.name, p.name)));
            }
        }
        let title = title.unwrap_or_else(|| name.clone());
        Ok(Query { name, title, description, params, chart, sql })
    }

    /// Checks `args` (`name=value` each) against the declared parameters and returns every
    /// parameter's value, defaults filled in, in header order.
    pub fn bind(&self, args: &[String]) -> Result<Vec<(String, Value)>, ParamError> {
        let mut given: Vec<(&str, &str)> = Vec::with_capacity(args.len());
        for arg in args {
            let (k, v) = arg.split_once('=').ok_or_else(|| ParamError::Malformed(arg.clone()))?;
            let k = k.trim();
            if !self.params.iter().any(|p| p.name == k) {
                let expected = self.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(ParamError::Unknown { query: self.name.clone(), param: k.to_owned(), expected });
            }
            if given.iter().any(|(g, _)| *g == k) {
                return Err(ParamError::Repeated(k.to_owned()));
            }
            given.push((k, v));
        }
        self.params
            .iter()
            .map(|p| {
                let value = match given.iter().find(|(k, _)| *k == p.name) {
                    Some((_, raw)) => p.ty.parse(&p.name, raw)?,
                    None => p.default.clone().ok_or_else(|| ParamError::Missing {
                        query: self.name.clone(),
                        param: p.name.clone(),
                        ty: p.ty,
                    })?,
                };
                Ok((p.name.clone(), value))
            })
            .collect()
    }

    /// The SQL with every `$NAME` replaced by its value as a literal ([`Value::sql_literal`]).
    pub fn sql_with_literals(&self, values: &[(String, Value)]) -> String {
        // Longest names first, so `$to` never eats the start of `$top`.
        let mut ordered: Vec<&(String, Value)> = values.iter().collect();
        ordered.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
        let mut sql = self.sql.clone();
        for (name, value) in ordered {
            sql = sql.replace(&format!("${name}"), &value.sql_literal());
        }
        sql
    }
}

/// Whether `sql` uses `$name` as a whole placeholder.
fn mentions(sql: &str, name: &str) -> bool {
    let needle = format!("${name}");
    sql.match_indices(&needle).any(|(at, _)| {
        let after = sql[at + needle.len()..].chars().next();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

impl Param {
    /// Parses `NAME TYPE [= DEFAULT] ABOUT`.
    fn parse(text: &str) -> Result<Param, String> {
        let mut words = text.splitn(3, ' ');
        let name = words.next().unwrap_or_default().to_owned();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(format!("parameter name {name:?} must be lower-case letters, digits and _"));
        }
        let ty: ParamType = words.next().unwrap_or_default().parse()?;
        let rest = words.next().unwrap_or_default().trim();
        let (default, about) = match rest.strip_prefix('=') {
            Some(after) => {
                let after = after.trim_start();
                let (raw, about) = after.split_once(' ').unwrap_or((after, ""));
                let value = ty.parse(&name, raw).map_err(|e| format!("default: {e}"))?;
                (Some(value), about.trim().to_owned())
            }
            None => (None, rest.to_owned()),
        };
        Ok(Param { name, ty, default, about })
    }
}

impl ChartSpec {
    /// Parses `KIND key=COL ...`.
    fn parse(text: &str) -> Result<ChartSpec, String> {
        let mut words = text.split_whitespace();
        let kind = words.next().unwrap_or_default();
        let mut pairs = Vec::new();
        for w in words {
            let (k, v) = w.split_once('=').ok_or_else(|| format!("chart option {w:?} is not key=column"))?;
            pairs.push((k, v.to_owned()));
        }
        let mut take = |key: &str| {
            let at = pairs.iter().position(|(k, _)| *k == key).ok_or_else(|| format!("chart {kind} needs {key}="))?;
            Ok::<String, String>(pairs.remove(at).1)
        };
        let spec = match kind {
            "line" => ChartSpec::Line { x: take("x")?, y: take("y")? },
            "bars" => ChartSpec::Bars { x: take("x")?, y: take("y")? },
            "heatmap" => ChartSpec::Heatmap { x: take("x")?, y: take("y")?, value: take("value")? },
            other => return Err(format!("unknown chart kind {other:?} (line, bars or heatmap)")),
        };
        match pairs.first() {
            Some((k, _)) => Err(format!("chart {kind} takes no {k}=")),
            None => Ok(spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_file_parses_and_names_itself() {
        // The files are built in; a broken header must fail the build's tests, not a user.
        let queries = all().expect("every header parses");
        assert_eq!(queries.len(), FILES.len());
        for q in &queries {
            assert!(!q.description.is_empty(), "{}", q.name);
            assert_eq!(get(&q.name).expect("found by name"), *q);
        }
    }

    #[test]
    fn a_header_with_params_defaults_and_a_chart() {
        // Every part of the header format, continuation lines included.
        let text = "-- name: q\n-- description: First part\n--   and the rest.\n\
                    -- param: from date = 2026-01-01 first day\n-- param: who text everyone\n\
                    -- chart: heatmap x=h y=w value=n\nSELECT $from, $who\n";
        let q = Query::parse("q.sql", text).expect("parses");
        assert_eq!(q.description, "First part and the rest.");
        assert_eq!(q.params[0].default, Some(Value::Date(NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"))));
        assert_eq!(q.params[0].about, "first day");
        assert_eq!(q.params[1].default, None);
        assert_eq!(q.params[1].about, "everyone");
        assert_eq!(q.chart, Some(ChartSpec::Heatmap { x: "h".into(), y: "w".into(), value: "n".into() }));
        assert_eq!(q.sql, "SELECT $from, $who");
    }

    #[test]
    fn header_mistakes_are_refused_with_the_line() {
        // Each defect names the file and the line.
        let cases = [
            ("-- name: other\n-- description: d\nSELECT 1", "does not match"),
            ("-- name: q\nSELECT 1", "no description"),
            ("-- name: q\n-- description: d\n-- param: x float\nSELECT $x", "unknown parameter type"),
            ("-- name: q\n-- description: d\n-- param: x int = nope\nSELECT $x", "default"),
            ("-- name: q\n-- description: d\n-- param: x int\nSELECT $xy", "never uses $x"),
            ("-- name: q\n-- description: d\n-- chart: pie x=a\nSELECT 1", "unknown chart kind"),
            ("-- name: q\n-- description: d\n-- chart: line x=a\nSELECT 1", "needs y="),
            ("-- name: q\n-- colour: red\n-- description: d\nSELECT 1", "unknown header key"),
        ];
        for (text, expected) in cases {
            let e = Query::parse("q.sql", text).expect_err(text);
            assert!(e.to_string().contains(expected), "{text}: {e}");
            assert!(e.to_string().starts_with("q.sql: line "), "{e}");
        }
    }

    #[test]
    fn binding_checks_names_types_and_fills_defaults() {
        // Typed values in header order; every wrong argument is a clear error.
        let q = get("daily_sales").expect("exists");
        let bound = q.bind(&["to=2026-11-24".into()]).expect("binds");
        let names: Vec<&str> = bound.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["from", "to", "merchant"]);
        assert_eq!(bound[1].1, Value::Date(NaiveDate::from_ymd_opt(2026, 11, 24).expect("date")));
        assert_eq!(bound[2].1, Value::Text("*".into()));
        let err = |args: &[&str]| q.bind(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect_err("refused");
        assert!(matches!(err(&["since=2026-01-01"]), ParamError::Unknown { .. }));
        assert!(matches!(err(&["to=24/11/2026"]), ParamError::Invalid { ty: ParamType::Date, .. }));
        assert!(matches!(err(&["to"]), ParamError::Malformed(_)));
        assert!(matches!(err(&["to=2026-01-01", "to=2026-01-02"]), ParamError::Repeated(_)));
        let long = format!("merchant={}", "M".repeat(PARAM_TEXT_BYTES_MAX + 1));
        assert!(matches!(err(&[long.as_str()]), ParamError::Invalid { ty: ParamType::Text, .. }));
        assert!(matches!(get("nope"), Err(ParamError::UnknownQuery(_))));
        let required = Query::parse("q.sql", "-- name: q\n-- description: d\n-- param: n int\nSELECT $n").expect("ok");
        assert!(matches!(required.bind(&[]), Err(ParamError::Missing { .. })));
    }

    #[test]
    fn literals_are_quoted_and_longest_names_replaced_first() {
        // The DuckDB peer gets the same values as literals; quotes cannot escape the string.
        let q = Query::parse(
            "q.sql",
            "-- name: q\n-- description: d\n-- param: to date\n-- param: top text\nSELECT $top, $to",
        )
        .expect("ok");
        let values = q.bind(&["to=2026-11-24".into(), "top=it's".into()]).expect("binds");
        assert_eq!(q.sql_with_literals(&values), "SELECT 'it''s', DATE '2026-11-24'");
    }
}

//! [`Table`]: a small result (named columns, typed cells) as SQL and the polars analytics
//! return it, rendered as an aligned text table, JSON or CSV.
//!
//! JSON: an object `{"columns": [...], "rows": [{column: value}]}`; integers are numbers,
//! decimals are strings (exact, as everywhere in posledger), dates `YYYY-MM-DD`, timestamps
//! RFC 3339, null is null.

use std::fmt::Write as _;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate};
use rust_decimal::Decimal;
use serde_json::{Map, Value as Json};

/// One value of a result.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Cell {
    /// No value.
    Null,
    /// A whole number (as text in the serialised form: JSON numbers do not hold every i128).
    Int(#[serde(with = "i128_text")] i128),
    /// An exact decimal (money, rates, shares).
    Decimal(Decimal),
    /// A calendar date.
    Date(NaiveDate),
    /// A truth value.
    Bool(bool),
    /// Text, or a value of a type shown as text (timestamps, floats).
    Text(String),
}

/// An `i128` serialised as its decimal text.
mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A result: column names and rows of cells, each row as long as `columns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Cell>>,
}

/// The output formats of `posledger query` and `posledger analyze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a person.
    Table,
    /// One JSON object.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => Ok(()),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Decimal(d) => write!(f, "{d}"),
            Cell::Date(d) => write!(f, "{d}"),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Text(t) => f.write_str(t),
        }
    }
}

impl Cell {
    fn json(&self) -> Json {
        match self {
            Cell::Null => Json::Null,
            Cell::Int(i) => i64::try_from(*i).map_or_else(|_| Json::String(i.to_string()), Json::from),
            Cell::Bool(b) => Json::Bool(*b),
            other => Json::String(other.to_string()),
        }
    }
}

impl Table {
    /// A table with these columns and no rows.
    pub fn new(columns: impl IntoIterator<Item = impl Into<String>>) -> Table {
        Table { columns: columns.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Appends the rows of an Arrow batch whose columns are this table's.
    pub fn push_batch(&mut self, batch: &RecordBatch) {
        let columns: Vec<Vec<Cell>> = batch.columns().iter().map(|c| cells(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            self.rows.push(columns.iter().map(|c| c[row].clone()).collect());
        }
    }

    /// Renders the table in `format`; text output ends with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let rows: Vec<Json> = self
                    .rows
                    .iter()
                    .map(|row| {
                        let object: Map<String, Json> =
                            self.columns.iter().cloned().zip(row.iter().map(Cell::json)).collect();
                        Json::Object(object)
                    })
                    .collect();
                let mut text = serde_json::json!({ "columns": self.columns, "rows": rows }).to_string();
                text.push('\n');
                text
            }
            Format::Csv => {
                let mut text = String::new();
                let line = |cells: Vec<String>, text: &mut String| {
                    let quoted: Vec<String> = cells.into_iter().map(|c| csv_field(&c)).collect();
                    text.push_str(&quoted.join(","));
                    text.push_str("\r\n");
                };
                line(self.columns.clone(), &mut text);
                for row in &self.rows {
                    line(row.iter().map(Cell::to_string).collect(), &mut text);
                }
                text
            }
            Format::Table => {
                let shown: Vec<Vec<String>> =
                    self.rows.iter().map(|r| r.iter().map(Cell::to_string).collect()).collect();
                let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
                for row in &shown {
                    for (w, cell) in widths.iter_mut().zip(row) {
                        *w = (*w).max(cell.chars().count());
                    }
                }
                let numeric: Vec<bool> = (0..self.columns.len())
                    .map(|i| self.rows.iter().all(|r| matches!(r[i], Cell::Int(_) | Cell::Decimal(_) | Cell::Null)))
                    .collect();
                let mut text = String::new();
                let line = |cells: &[String], text: &mut String| {
                    let mut out = String::new();
                    for (i, cell) in cells.iter().enumerate() {
                        let pad = widths[i] - cell.chars().count();
                        if i > 0 {
                            out.push_str("  ");
                        }
                        if numeric[i] {
                            let _ = write!(out, "{}{cell}", " ".repeat(pad));
                        } else {
                            let _ = write!(out, "{cell}{}", " ".repeat(pad));
                        }
                    }
                    text.push_str(out.trim_end());
                    text.push('\n');
                };
                line(&self.columns, &mut text);
                for row in &shown {
                    line(row, &mut text);
                }
                let _ = writeln!(text, "({} rows)", self.rows.len());
                text
            }
        }
    }
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The cells of an Arrow column.
fn cells(array: &dyn Array) -> Vec<Cell> {
    macro_rules! ints {
        ($t:ty) => {
            array.as_primitive::<$t>().iter().map(|v| v.map_or(Cell::Null, |v| Cell::Int(i128::from(v)))).collect()
        };
    }
    match array.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Decimal128(_, scale) if (0..=28).contains(scale) => {
            let scale = *scale as u32;
            array
                .as_primitive::<Decimal128Type>()
                .iter()
                .map(|v| match v.map(|v| Decimal::try_from_i128_with_scale(v, scale)) {
                    Some(Ok(d)) => Cell::Decimal(d),
                    Some(Err(_)) => Cell::Text(v.map(|v| v.to_string()).unwrap_or_default()),
                    None => Cell::Null,
                })
                .collect()
        }
        DataType::Date32 => array
            .as_primitive::<Date32Type>()
            .iter()
            .map(|v| match v.and_then(NaiveDate::from_epoch_days) {
                Some(d) => Cell::Date(d),
                None => Cell::Null,
            })
            .collect(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => array
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|v| match v.and_then(DateTime::from_timestamp_micros) {
                Some(t) => Cell::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                None => Cell::Null,
            })
            .collect(),
        DataType::Boolean => array.as_boolean().iter().map(|v| v.map_or(Cell::Null, Cell::Bool)).collect(),
        _ => {
            // Strings of every layout, floats and anything else: Arrow's own display.
            let options = FormatOptions::default();
            match ArrayFormatter::try_new(array, &options) {
                Ok(f) => (0..array.len())
                    .map(|i| if array.is_null(i) { Cell::Null } else { Cell::Text(f.value(i).to_string()) })
                    .collect(),
                Err(e) => vec![Cell::Text(format!("<{e}>")); array.len()],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(["merchant", "payments", "net"]);
        t.rows.push(vec![Cell::Text("M1".into()), Cell::Int(3), Cell::Decimal(Decimal::new(12_345, 2))]);
        t.rows.push(vec![Cell::Text("a,\"b\"".into()), Cell::Int(10), Cell::Null]);
        t
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        // RFC 4180: commas and quotes inside a field are quoted, quotes doubled.
        assert_eq!(sample().render(Format::Csv), "merchant,payments,net\r\nM1,3,123.45\r\n\"a,\"\"b\"\"\",10,\r\n");
    }

    #[test]
    fn json_keeps_decimals_exact_and_integers_numbers() {
        // Money as strings, counts as numbers, null as null.
        let v: Json = serde_json::from_str(&sample().render(Format::Json)).expect("json");
        assert_eq!(v["rows"][0]["net"], "123.45");
        assert_eq!(v["rows"][0]["payments"], 3);
        assert!(v["rows"][1]["net"].is_null());
        assert_eq!(v["columns"][2], "net");
    }

    #[test]
    fn text_table_aligns_numbers_right() {
        // Numbers line up on the right, text on the left, and the row count closes it.
        let text = sample().render(Format::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "merchant  payments     net");
        assert_eq!(lines[1], "M1               3  123.45");
        assert_eq!(lines[3], "(2 rows)");
    }
}

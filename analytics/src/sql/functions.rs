//! The functions an analyst's SQL may call. DataFusion's memory pool counts what its operators
//! hold (hash tables, sorts, aggregate states) but not the values a scalar function builds,
//! so the session keeps only functions whose results are no larger than their arguments
//! ([`SCALAR_FUNCTIONS_ALLOWED`]), every aggregate and window function (their state is
//! counted), the streaming table functions `generate_series` and `range`, and three functions
//! that build text from a number (`repeat`, `lpad`, `rpad`) under one budget per query
//! ([`GENERATED_TEXT_BYTES_MAX`]). Anything else (array and map builders, `replace`, lambdas,
//! every other table function) is an unknown function.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// Text that `repeat`, `lpad` and `rpad` may build in one query, all calls and rows together,
/// in bytes (a padded character counted as four): beyond it the query fails, naming the
/// function, before the text is built.
pub const GENERATED_TEXT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The scalar functions kept, by name or alias: each one's result is bounded by its
/// arguments (a fixed size, or at most the size of its text arguments together).
pub const SCALAR_FUNCTIONS_ALLOWED: &[&str] = &[
    // conditionals and types
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "greatest",
    "least",
    "arrow_typeof",
    "arrow_cast",
    "get_field",
    // numbers
    "abs",
    "acos",
    "asin",
    "atan",
    "atan2",
    "cbrt",
    "ceil",
    "cos",
    "degrees",
    "exp",
    "factorial",
    "floor",
    "gcd",
    "isnan",
    "iszero",
    "lcm",
    "ln",
    "log",
    "log10",
    "log2",
    "nanvl",
    "pi",
    "power",
    "radians",
    "random",
    "round",
    "signum",
    "sin",
    "sqrt",
    "tan",
    "trunc",
    // text
    "ascii",
    "bit_length",
    "btrim",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "contains",
    "ends_with",
    "find_in_set",
    "initcap",
    "left",
    "levenshtein",
    "lower",
    "ltrim",
    "octet_length",
    "reverse",
    "right",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substr_index",
    "to_hex",
    "translate",
    "upper",
    "uuid",
    "regexp_like",
    "regexp_match",
    "regexp_count",
    "encode",
    "decode",
    // dates and times
    "current_date",
    "current_time",
    "now",
    "date_bin",
    "date_part",
    "date_trunc",
    "from_unixtime",
    "make_date",
    "to_char",
    "to_date",
    "to_local_time",
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_timestamp_nanos",
    "to_unixtime",
];

/// The table functions kept: they stream their rows batch by batch, under the row, time and
/// memory limits of any other input.
pub const TABLE_FUNCTIONS_ALLOWED: &[&str] = &["generate_series", "range"];

/// How a text-building function's output is sized from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Builds {
    /// `repeat(text, n)`: the text's bytes times `n`.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: `n` characters of up to four bytes.
    Pad,
}

/// Keeps in `builder` only the functions above; `budget` counts the bytes the text-building
/// functions have been asked for since it was last set to zero.
pub(crate) fn sandbox(builder: &mut SessionStateBuilder, budget: &Arc<AtomicUsize>) {
    let allowed = |udf: &ScalarUDF| {
        std::iter::once(udf.name())
            .chain(udf.aliases().iter().map(String::as_str))
            .any(|n| SCALAR_FUNCTIONS_ALLOWED.contains(&n))
    };
    if let Some(functions) = builder.scalar_functions() {
        let kept = functions
            .iter()
            .filter_map(|udf| {
                let builds = match udf.name() {
                    "repeat" => Builds::Repeat,
                    "lpad" | "rpad" => Builds::Pad,
                    _ => return allowed(udf).then(|| udf.clone()),
                };
                let bounded = Bounded { inner: udf.clone(), builds, budget: budget.clone() };
                Some(Arc::new(ScalarUDF::new_from_impl(bounded)))
            })
            .collect();
        *functions = kept;
    }
    if let Some(functions) = builder.higher_order_functions() {
        functions.clear();
    }
    if let Some(tables) = builder.table_functions() {
        tables.retain(|name, _| TABLE_FUNCTIONS_ALLOWED.contains(&name.as_str()));
    }
    without_nested_planners(builder);
}

/// Leaves out the planners that build arrays and maps from SQL syntax (`[a, b]`, `MAP {...}`,
/// `a || b` on arrays, `a[1]`) without going through a function: the array and map builders
/// are not on the allow-list, whatever the syntax.
fn without_nested_planners(builder: &mut SessionStateBuilder) {
    if let Some(planners) = builder.expr_planners() {
        planners.retain(|p| {
            let name = format!("{p:?}");
            !name.starts_with("NestedFunctionPlanner") && !name.starts_with("FieldAccessPlanner")
        });
    }
}

/// Keeps in `builder` only the functions a query may call on a cluster
/// ([`super::cluster`]): the allow-list without the text-building functions, whose budget
/// lives in the planning process, and without table functions, whose tables a plan cannot
/// carry to the executors.
pub(crate) fn sandbox_for_cluster(builder: &mut SessionStateBuilder) {
    if let Some(functions) = builder.scalar_functions() {
        functions.retain(|udf| {
            std::iter::once(udf.name())
                .chain(udf.aliases().iter().map(String::as_str))
                .any(|n| SCALAR_FUNCTIONS_ALLOWED.contains(&n) && !TEXT_BUILDING.contains(&n))
        });
    }
    if let Some(functions) = builder.higher_order_functions() {
        functions.clear();
    }
    if let Some(tables) = builder.table_functions() {
        tables.clear();
    }
    without_nested_planners(builder);
}

/// The text-building functions, counted against [`GENERATED_TEXT_BYTES_MAX`].
const TEXT_BUILDING: &[&str] = &["repeat", "lpad", "rpad"];

/// A text-building function that first charges what it will build to the query's budget.
#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    builds: Builds,
    budget: Arc<AtomicUsize>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.builds == other.builds && Arc::ptr_eq(&self.budget, &other.budget)
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.builds.hash(state);
    }
}

/// Each row's value of an integer argument (0 for null or negative).
fn counts(arg: &ColumnarValue, rows: usize) -> Result<Vec<usize>> {
    let as_count = |n: Option<i64>| n.map_or(0, |n| usize::try_from(n).unwrap_or(0));
    match arg {
        ColumnarValue::Scalar(s) => {
            let n = match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(n) => n,
                _ => None,
            };
            Ok(vec![as_count(n); rows])
        }
        ColumnarValue::Array(a) => {
            let a = arrow::compute::cast(a, &DataType::Int64)?;
            Ok(a.as_primitive::<Int64Type>().iter().map(as_count).collect())
        }
    }
}

/// Each row's length in bytes of a text argument (0 for null).
fn lengths(arg: &ColumnarValue, rows: usize) -> Vec<usize> {
    match arg {
        ColumnarValue::Scalar(ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s)) => {
            vec![s.as_deref().map_or(0, str::len); rows]
        }
        ColumnarValue::Scalar(_) => vec![0; rows],
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().iter().map(|s| s.map_or(0, str::len)).collect(),
            DataType::LargeUtf8 => a.as_string::<i64>().iter().map(|s| s.map_or(0, str::len)).collect(),
            DataType::Utf8View => a.as_string_view().iter().map(|s| s.map_or(0, str::len)).collect(),
            _ => vec![0; a.len()],
        },
    }
}

impl Bounded {
    /// The bytes this call would build, charged to the budget; an error once over it.
    fn charge(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows;
        let count = args.args.get(1).map(|a| counts(a, rows)).transpose()?.unwrap_or_default();
        let bytes = match self.builds {
            Builds::Repeat => {
                let text = args.args.first().map(|a| lengths(a, rows)).unwrap_or_default();
                text.iter().zip(&count).fold(0usize, |sum, (t, n)| sum.saturating_add(t.saturating_mul(*n)))
            }
            Builds::Pad => count.iter().fold(0usize, |sum, n| sum.saturating_add(n.saturating_mul(4))),
        };
        let before = self.budget.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > GENERATED_TEXT_BYTES_MAX {
            return Err(DataFusionError::Execution(format!(
                "{} would build {bytes} bytes of text; a query may build at most {GENERATED_TEXT_BYTES_MAX} bytes \
                 with repeat, lpad and rpad together",
                self.inner.name()
            )));
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.charge(&args)?;
        self.inner.invoke_with_args(args)
    }
}

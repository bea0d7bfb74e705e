//! SQL over the export: every named query checked by the sqllogictest files in `tests/slt/`
//! on small exports whose answers are worked out by hand, and the ad-hoc SQL sandbox.
//!
//! `tests/slt/small/` runs on `tests/fixtures/small` (two merchants, ten payments over two
//! weeks, a void and two refunds; the expected rows are derived in the comments of each file);
//! `tests/slt/currencies/` runs on that fixture with Hong Kong dollar records added
//! (`tests/fixtures/currencies`), so every sum must keep the currencies apart;
//! `tests/slt/day/` runs on the fixture day (`tests/fixtures/day`) with both days' statements
//! reconciled, checked against its answer key. A record `named NAME k=v ...` runs a named
//! query with those parameters; any other record is ad-hoc SQL as an analyst sends it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use analytics::sql::{Limits, Session, SqlError};
use analytics::table::Cell;
use ingest::pipeline::InputKind;
use ingest::store::EmbeddedStore;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

mod common;
use common::{ingest, manifest, small_export};

/// The small fixture with its WeChat statement of the 23rd reconciled three times: the
/// channel's first file (P04 stated as 199.00), the corrected file, then the first file again
/// (so it is in force again). Checks on the way that the books after the third run equal the
/// books after the first.
async fn reconciled_export(dir: &Path) -> PathBuf {
    use ingest::statement::StatementChannel;
    let store = Arc::new(EmbeddedStore::open(dir.join("events")).expect("open"));
    let small = manifest("tests/fixtures/small");
    ingest(&store, &[(small.join("admin.ndjson"), InputKind::Admin), (small.join("feed.ndjson"), InputKind::Feed)])
        .await;
    drop(store);
    // Statements are imported and runs recorded by the application layer.
    let app = app::App::open(app::DataDir::new(dir), Box::new(|w| panic!("{w}"))).expect("app");
    let store = app.store().clone();
    let date = "2026-11-23".parse().expect("date");
    let mut books = Vec::new();
    for name in ["wechat-2026-11-23.csv", "wechat-2026-11-23-corrected.csv", "wechat-2026-11-23.csv"] {
        let bytes = std::fs::read(small.join("statements").join(name)).expect("statement");
        app.import_statement(StatementChannel::Wechat, name, &bytes, Some(date)).await.expect("import");
        app.reconcile(date, Some(StatementChannel::Wechat)).await.expect("reconcile");
        let replayed = ledger::replay(&*store, u64::MAX).await.expect("books");
        let mut balances = replayed.balances().trial_balance(u64::MAX);
        balances.retain(|(_, _, amount)| !amount.is_zero());
        books.push(balances);
    }
    assert_ne!(books[0], books[1], "the corrected file books otherwise");
    assert_eq!(books[2], books[0], "the first file in force again books as it did");
    let (latest, _) = ledger::recon::recorded_breaks(&*store).await.expect("breaks");
    assert_eq!(latest[&(StatementChannel::Wechat, date)].1.len(), 2, "the first file's two breaks are in force");
    let out = dir.join("export");
    analytics::export::export(&*store, &out).await.expect("export");
    out
}

/// What the engine recorded: breaks and their amount (the statement's, else ours) per
/// reconciliation date, statement and outcome.
type BreakTotals = std::collections::BTreeMap<(String, String, String), (i128, rust_decimal::Decimal)>;

/// The fixture day with both days' statements imported and reconciled, exported; and the
/// breaks the engine returned.
async fn day_export(dir: &Path) -> (PathBuf, BreakTotals) {
    use ingest::statement::StatementChannel;
    let store = Arc::new(EmbeddedStore::open(dir.join("events")).expect("open"));
    let day = manifest("../tests/fixtures/day");
    ingest(
        &store,
        &[
            (day.join("admin.ndjson"), InputKind::Admin),
            (day.join("feed-2026-11-24.ndjson"), InputKind::Feed),
            (day.join("feed-2026-11-25.ndjson"), InputKind::Feed),
        ],
    )
    .await;
    drop(store);
    let app = app::App::open(app::DataDir::new(dir), Box::new(|w| panic!("{w}"))).expect("app");
    let store = app.store().clone();
    let mut engine = BreakTotals::new();
    for date in ["2026-11-24", "2026-11-25"] {
        for (channel, ext) in
            [(StatementChannel::Wechat, "csv"), (StatementChannel::Alipay, "csv"), (StatementChannel::Unionpay, "txt")]
        {
            let name = format!("statements/{channel}-{date}.{ext}");
            let bytes = std::fs::read(day.join(&name)).expect("statement");
            app.import_statement(channel, &name, &bytes, None).await.expect("import");
            let run = app.reconcile(date.parse().expect("date"), Some(channel)).await.expect("reconcile");
            for b in run.reports[0].breaks.iter().filter(|b| b.outcome.is_break()) {
                let key = (date.to_owned(), channel.to_string(), b.outcome.to_string());
                let total = engine.entry(key).or_default();
                total.0 += 1;
                total.1 += b.their_amount.or(b.our_amount).expect("an amount");
            }
        }
    }
    let out = dir.join("export");
    analytics::export::export(&*store, &out).await.expect("export");
    (out, engine)
}

/// The session as sqllogictest sees it.
struct Slt(Session);

#[async_trait::async_trait]
impl AsyncDB for Slt {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let table = match sql.trim().strip_prefix("named ") {
            Some(call) => {
                let mut words = call.split_whitespace();
                let query = queries::get(words.next().unwrap_or_default())?;
                let args: Vec<String> = words.map(str::to_owned).collect();
                let values = query.bind(&args)?;
                self.0.named(&query, &values).await?
            }
            None => self.0.query(sql).await?,
        };
        let types = vec![DefaultColumnType::Any; table.columns.len()];
        let rows = table
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|c| match c {
                        Cell::Null => "NULL".to_owned(),
                        Cell::Text(t) if t.is_empty() => "(empty)".to_owned(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}
}

async fn run_slt_dir(export: &Path, dir: &str) {
    let session = Session::open(export, Limits::default()).await.expect("session");
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest(dir))
        .expect("slt dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {dir}");
    for file in files {
        let session = session.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let session = session.clone();
            async move { Ok(Slt(session)) }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn named_queries_on_the_small_export() {
    // Every file in tests/slt/small: the hand-worked answers of each named query.
    let dir = tempfile::tempdir().expect("tmp");
    let export = small_export(dir.path()).await;
    run_slt_dir(&export, "tests/slt/small").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_named_query_draws_its_chart() {
    // Each of the named queries declares a chart, and draws it from its result on the small
    // export (with the reconciled one for breaks_by_day): well-formed SVG with at least one mark.
    let dir = tempfile::tempdir().expect("tmp");
    let small = small_export(&dir.path().join("small")).await;
    let reconciled = reconciled_export(&dir.path().join("reconciled")).await;
    let all = queries::all().expect("queries");
    assert_eq!(all.len(), 9);
    for q in all {
        let spec = q.chart.clone().unwrap_or_else(|| panic!("{} declares no chart", q.name));
        let export = if q.name == "breaks_by_day" { &reconciled } else { &small };
        let session = Session::open(export, Limits::default()).await.expect("session");
        let values = q.bind(&[]).expect("defaults");
        let table = session.named(&q, &values).await.expect("runs");
        assert!(!table.rows.is_empty(), "{}: rows to draw", q.name);
        let svg = analytics::chart::from_table(&spec, &table, &q.name).unwrap_or_else(|e| panic!("{}: {e}", q.name));
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{}: {e}", q.name));
        let marks =
            doc.descendants().filter(|n| ["polyline", "rect", "circle"].iter().any(|t| n.has_tag_name(*t))).count();
        assert!(marks > 1, "{}: something drawn", q.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn named_queries_sum_each_currency_apart() {
    // tests/slt/currencies: the small fixture with Hong Kong dollar sales and a refund beside.
    let dir = tempfile::tempdir().expect("tmp");
    let export = common::currencies_export(dir.path()).await;
    run_slt_dir(&export, "tests/slt/currencies").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn named_queries_on_a_reconciled_export() {
    // breaks_by_day takes each statement's run in force, also when an older run comes back.
    let dir = tempfile::tempdir().expect("tmp");
    let export = reconciled_export(dir.path()).await;
    run_slt_dir(&export, "tests/slt/reconciled").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn breaks_by_day_equals_the_fixture_days_answer_key() {
    // Every break of the answer key, counted per day, statement and outcome; the amounts are
    // the ones the reconciliation engine recorded for those breaks.
    let dir = tempfile::tempdir().expect("tmp");
    let (export, engine) = day_export(dir.path()).await;
    let session = Session::open(&export, Limits::default()).await.expect("session");
    let query = queries::get("breaks_by_day").expect("query");
    let table = session.named(&query, &query.bind(&[]).expect("bind")).await.expect("run");
    let answer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest("../tests/fixtures/day/answer.json")).expect("answer"))
            .expect("json");
    let text = |v: &serde_json::Value| v.as_str().expect("text").to_owned();
    let mut want = std::collections::BTreeMap::<(String, String, String), i128>::new();
    for b in answer["breaks"].as_array().expect("breaks") {
        *want.entry((text(&b["date"]), text(&b["statement"]), text(&b["outcome"]))).or_default() += 1;
    }
    let got: BreakTotals = table
        .rows
        .iter()
        .map(|r| match (&r[3], &r[4]) {
            (Cell::Int(n), Cell::Decimal(d)) => ((r[0].to_string(), r[1].to_string(), r[2].to_string()), (*n, *d)),
            other => panic!("row {other:?}"),
        })
        .collect();
    let counts: std::collections::BTreeMap<_, _> = got.iter().map(|(k, (n, _))| (k.clone(), *n)).collect();
    assert_eq!(counts, want, "the answer key's breaks");
    assert_eq!(got, engine, "the engine's amounts");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_limit_queries_are_refused_with_the_documented_error() {
    // Each limit of the sandbox, lowered so a small query crosses it, gives its own error.
    let dir = tempfile::tempdir().expect("tmp");
    let export = small_export(dir.path()).await;
    let limits = Limits { rows_max: 9, ..Limits::default() };
    let session = Session::open(&export, limits).await.expect("session");
    let all = session.query("SELECT * FROM payments").await;
    assert!(matches!(all, Err(SqlError::RowLimit { max: 9 })), "{all:?}");
    let nine = session.query("SELECT * FROM payments LIMIT 9").await.expect("at the limit");
    assert_eq!(nine.rows.len(), 9);

    // Bytes: ten rows of a 1000-byte text are over 8 KiB, nine rows of narrow columns are not.
    let limits = Limits { result_bytes_max: 8 << 10, ..Limits::default() };
    let session = Session::open(&export, limits).await.expect("session");
    let wide = session.query("SELECT repeat('x', 1000) AS wide FROM payments").await;
    assert!(matches!(wide, Err(SqlError::ResultBytesLimit { max: 8192 })), "{wide:?}");
    let narrow = session.query("SELECT txn_id FROM payments").await.expect("under the limit");
    assert_eq!(narrow.rows.len(), 10);

    let limits = Limits { memory_bytes_max: 1 << 20, ..Limits::default() };
    let session = Session::open(&export, limits).await.expect("session");
    let sort = session.query("SELECT value FROM generate_series(1, 3000000) ORDER BY value DESC LIMIT 99999").await;
    assert!(matches!(sort, Err(SqlError::MemoryLimit { max: 1048576 })), "{sort:?}");

    let limits = Limits { time_max: Duration::from_millis(200), ..Limits::default() };
    let session = Session::open(&export, limits).await.expect("session");
    let started = std::time::Instant::now();
    let long = session.query("SELECT COUNT(*) FROM generate_series(1, 100000000000)").await;
    assert!(matches!(long, Err(SqlError::TimeLimit { .. })), "{long:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "cancelled at the limit, not run to the end");

    let session = Session::open(&export, Limits::default()).await.expect("session");
    let long_sql = format!("SELECT 1 {}", " ".repeat(analytics::sql::SQL_BYTES_MAX));
    assert!(matches!(session.query(&long_sql).await, Err(SqlError::TooLong { .. })));
    let err = session.query("SELECT nope FROM payments").await.expect_err("unknown column");
    assert!(matches!(err, SqlError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_analysts_session_has_no_payer_identities() {
    // The payer column is not there to select, filter on or count by; the rest is.
    let dir = tempfile::tempdir().expect("tmp");
    let export = small_export(dir.path()).await;
    let session = Session::open_without_payers(&export, Limits::default()).await.expect("session");
    for sql in [
        "SELECT payer FROM payments",
        "SELECT COUNT(*) FROM payments WHERE payer = 'oPayerA'",
        "SELECT COUNT(DISTINCT payer) FROM payments",
    ] {
        let err = session.query(sql).await.expect_err(sql);
        assert!(err.to_string().contains("payer"), "{sql}: {err}");
    }
    let all = session.query("SELECT * FROM payments").await.expect("the rest");
    assert!(!all.columns.iter().any(|c| c == "payer"));
    assert_eq!(all.rows.len(), 10);
    let q = queries::get("repeat_payers").expect("query");
    assert!(session.named(&q, &q.bind(&[]).expect("bind")).await.is_err(), "a query on payers cannot run for analysts");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_do_not_tell_where_the_server_keeps_its_files() {
    // A damaged part file: the error says the export cannot be read, and names the file
    // relative to the export, never by the server's own path.
    let dir = tempfile::tempdir().expect("tmp");
    let export = small_export(dir.path()).await;
    let part = std::fs::read_dir(export.join("payments"))
        .expect("payments")
        .flat_map(|d| std::fs::read_dir(d.expect("date").path()).expect("parts"))
        .map(|p| p.expect("part").path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a part file");
    // The same length, the magic kept at both ends, the footer's metadata zeroed.
    let mut bytes = std::fs::read(&part).expect("part");
    let n = bytes.len();
    bytes[n / 2..n - 8].fill(0);
    std::fs::write(&part, &bytes).expect("damage");
    let session = Session::open(&export, Limits::default()).await.expect("session");
    let root = std::fs::canonicalize(dir.path()).expect("canonical").display().to_string();
    let err = session.query("SELECT COUNT(*) FROM payments").await.expect_err("damaged");
    assert!(matches!(err, SqlError::Export(_)), "{err:?}");
    assert!(!err.to_string().contains(&root), "{err}");
    // A part file that went away between listing and reading (here: a directory in its place).
    std::fs::remove_file(&part).expect("remove");
    std::fs::create_dir(&part).expect("a directory in its place");
    let err = session.query("SELECT COUNT(*) FROM payments").await.expect_err("unreadable");
    assert!(matches!(err, SqlError::Export(_)), "{err:?}");
    assert!(!err.to_string().contains(&root), "{err}");
    assert!(err.to_string().contains("payments/date=2026-11-24/part-"), "named in the export: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_functions_with_bounded_results_are_there_to_call() {
    // The functions that build values DataFusion's memory pool does not count are unknown
    // (`range` as an array, array and map builders, `replace`) or charged to the query's text
    // budget before they build anything (`repeat`, `lpad`, `rpad`); the allowed list names
    // functions DataFusion has, and the named queries' own functions are on it.
    let dir = tempfile::tempdir().expect("tmp");
    let export = small_export(dir.path()).await;
    let session = Session::open_without_payers(&export, Limits::default()).await.expect("session");
    for sql in [
        "SELECT range(1, 4000000000)",
        "SELECT generate_series(1, 4000000000)",
        "SELECT array_repeat('a', 2147483647)",
        "SELECT make_array(txn_id, txn_id) FROM payments",
        // The same builders by syntax rather than by name.
        "SELECT [txn_id, txn_id] FROM payments",
        "SELECT MAP {'a': 1}",
        "SELECT [1, 2][1]",
        "SELECT replace('aaaa', 'a', 'bbbbbbbbbbbb')",
        "SELECT regexp_replace('aaaa', 'a', 'bbbbbbbbbbbb')",
        "SELECT * FROM parquet_metadata('payments')",
    ] {
        let err = session.query(sql).await.expect_err(sql);
        assert!(matches!(err, SqlError::Invalid(_)), "{sql}: {err:?}");
    }
    let budget = analytics::sql::functions::GENERATED_TEXT_BYTES_MAX;
    for (sql, function) in [
        ("SELECT repeat('a', 2147483647) AS c1".to_owned(), "repeat"),
        ("SELECT lpad('a', 2147483647) AS c1".to_owned(), "lpad"),
        ("SELECT rpad(txn_id, 2147483647, 'x') FROM payments".to_owned(), "rpad"),
        // Two calls, each under the budget, are over it together.
        (format!("SELECT repeat('a', {0}) AS a, repeat('b', {0}) AS b", budget / 2 + 1), "repeat"),
        // Per row: ten payments' ids padded to a tenth of the budget's characters each.
        (format!("SELECT lpad(txn_id, {}) FROM payments", budget / 4 / 10 + 1), "lpad"),
    ] {
        let err = session.query(&sql).await.expect_err(&sql);
        assert!(matches!(err, SqlError::Invalid(_)), "{sql}: {err:?}");
        assert!(err.to_string().contains(&format!("{function} would build")), "{sql}: {err}");
    }
    // Within the budget, and a new query starts from none spent.
    let padded = session.query("SELECT lpad(txn_id, 12, '0') AS id, repeat('*', 3) AS s FROM payments").await;
    let padded = padded.expect("within the budget");
    assert_eq!(padded.rows.len(), 10);
    assert!(matches!(&padded.rows[0][0], Cell::Text(t) if t.len() == 12), "{:?}", padded.rows[0]);
    assert_eq!(padded.rows[0][1], Cell::Text("***".into()));
    let calendar = session.query("SELECT COUNT(*) AS days FROM generate_series(1, 31)").await.expect("a series");
    assert_eq!(calendar.rows, vec![vec![Cell::Int(31)]]);

    let defaults = datafusion::prelude::SessionContext::new();
    let state = defaults.state();
    let names: std::collections::BTreeSet<&str> = state
        .scalar_functions()
        .values()
        .flat_map(|f| std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)))
        .collect();
    let unknown: Vec<&&str> =
        analytics::sql::functions::SCALAR_FUNCTIONS_ALLOWED.iter().filter(|n| !names.contains(**n)).collect();
    assert!(unknown.is_empty(), "not DataFusion functions: {unknown:?}");
    for name in analytics::sql::functions::TABLE_FUNCTIONS_ALLOWED {
        assert!(state.table_functions().contains_key(*name), "{name} is not a DataFusion table function");
    }
}

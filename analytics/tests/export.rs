//! The Parquet export of the fixture day: pinned schemas, rows and sums equal to the books,
//! incremental runs equal to one full run, and an interrupted run finished cleanly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use analytics::export::{self, CHECKPOINT_FILE, Checkpoint};
use arrow::array::{Array, Decimal128Array, RecordBatch, StringArray, UInt64Array};
use ingest::pipeline::{Ingestor, InputKind};
use ingest::store::{EmbeddedStore, EventStore};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rust_decimal::Decimal;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day").join(name)
}

async fn ingest(store: &Arc<EmbeddedStore>, files: &[(&str, InputKind)]) {
    let mut ingestor = Ingestor::open(store.clone(), None).await.expect("ingestor");
    for (name, kind) in files {
        let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
        let s = ingestor.ingest_reader(file, *kind, |_, _| {}).await.expect("ingest");
        assert_eq!(s.rejected, 0, "{name}");
    }
}

/// A store in `dir` holding the admin records and both feed days.
async fn both_days(dir: &Path) -> Arc<EmbeddedStore> {
    let store = Arc::new(EmbeddedStore::open(dir.join("events")).expect("open"));
    ingest(
        &store,
        &[
            ("admin.ndjson", InputKind::Admin),
            ("feed-2026-11-24.ndjson", InputKind::Feed),
            ("feed-2026-11-25.ndjson", InputKind::Feed),
        ],
    )
    .await;
    store
}

/// Every part file under `dir`, relative, sorted.
fn parts(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.strip_prefix(dir).expect("inside").display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Every record batch of a table (`None`: every table), with its table and day.
fn batches(dir: &Path, table: Option<&str>) -> Vec<(String, String, RecordBatch)> {
    let mut out = Vec::new();
    for part in parts(dir) {
        let mut bits = part.split('/');
        let (t, day) = (bits.next().expect("table"), bits.next().expect("day").trim_start_matches("date="));
        if table.is_some_and(|want| want != t) {
            continue;
        }
        let file = std::fs::File::open(dir.join(&part)).expect("open");
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet").build().expect("reader") {
            out.push((t.to_owned(), day.to_owned(), batch.expect("batch")));
        }
    }
    out
}

/// A money column's values.
fn money(batch: &RecordBatch, name: &str) -> Vec<Decimal> {
    let a = batch.column_by_name(name).expect("column").as_any().downcast_ref::<Decimal128Array>().expect("decimal");
    (0..a.len()).map(|i| Decimal::from_i128_with_scale(a.value(i), 2)).collect()
}

/// A text column's values.
fn strings<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
    batch.column_by_name(name).expect("column").as_any().downcast_ref::<StringArray>().expect("text")
}

/// An integer column's values.
fn integers<'a>(batch: &'a RecordBatch, name: &str) -> &'a UInt64Array {
    batch.column_by_name(name).expect("column").as_any().downcast_ref::<UInt64Array>().expect("integers")
}

/// Per table and day: rows, and the sum of its money column (`amount`).
fn totals_by_day(dir: &Path) -> BTreeMap<(String, String), (u64, Decimal)> {
    let mut out: BTreeMap<(String, String), (u64, Decimal)> = BTreeMap::new();
    for (table, day, batch) in batches(dir, None) {
        let sum = batch.column_by_name("amount").map(|_| money(&batch, "amount").into_iter().sum::<Decimal>());
        let e = out.entry((table, day)).or_default();
        e.0 += batch.num_rows() as u64;
        e.1 += sum.unwrap_or_default();
    }
    out
}

/// Per table: rows, and the sum of its money column (`amount`).
fn totals(dir: &Path) -> BTreeMap<String, (u64, Decimal)> {
    let mut out: BTreeMap<String, (u64, Decimal)> = BTreeMap::new();
    for ((table, _), (rows, sum)) in totals_by_day(dir) {
        let e = out.entry(table).or_default();
        e.0 += rows;
        e.1 += sum;
    }
    out
}

#[test]
fn the_schemas_are_pinned() {
    let text: String = export::schemas()
        .iter()
        .map(|(name, schema)| {
            let fields: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("  {} {}{}", f.name(), f.data_type(), if f.is_nullable() { " null" } else { "" }))
                .collect();
            format!("{name}\n{}\n", fields.join("\n"))
        })
        .collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export-schemas.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden");
    }
    assert_eq!(
        text,
        std::fs::read_to_string(&path).expect("golden"),
        "a schema change is a change of the export's contract"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_equals_the_books_and_runs_incrementally() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(EmbeddedStore::open(dir.path().join("events")).expect("open"));
    ingest(&store, &[("admin.ndjson", InputKind::Admin), ("feed-2026-11-24.ndjson", InputKind::Feed)]).await;
    let incremental = dir.path().join("incremental");
    let first = export::export(&*store, &incremental).await.expect("first run");
    assert_eq!((first.from, first.to), (0, 62 + 429));
    ingest(&store, &[("feed-2026-11-25.ndjson", InputKind::Feed)]).await;
    let second = export::export(&*store, &incremental).await.expect("second run");
    assert_eq!((second.from, second.to), (491, 491 + 444), "only what is new");
    let nothing = export::export(&*store, &incremental).await.expect("third run");
    assert_eq!((nothing.files, nothing.rows.values().sum::<u64>()), (0, 0));

    let full = dir.path().join("full");
    export::export(&*store, &full).await.expect("full run");
    let (a, b) = (totals(&incremental), totals(&full));
    assert_eq!(a, b, "incremental runs give the rows of one full run");

    // Against the books and the feeds.
    let books = ledger::replay(&*store, u64::MAX).await.expect("books");
    assert_eq!(a["postings"], (books.postings(), Decimal::ZERO), "every posting; they sum to zero");
    let mut sales = (0u64, Decimal::ZERO);
    for day in ["feed-2026-11-24.ndjson", "feed-2026-11-25.ndjson"] {
        for line in std::fs::read_to_string(fixture(day)).expect("feed").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            if v["kind"] == "sale" {
                sales.0 += 1;
                sales.1 += v["amount"].as_str().expect("amount").parse::<Decimal>().expect("decimal");
            }
        }
    }
    assert_eq!(a["payments"], sales);
    assert!(parts(&full).iter().all(|p| p.contains("/date=2026-11-")), "{:?}", parts(&full));

    // The fee column equals the books' fee income.
    let fee_income: Decimal = books
        .balances()
        .trial_balance(u64::MAX)
        .iter()
        .filter(|(a, _, _)| a.path().starts_with("income:mdr:"))
        .map(|(_, _, b)| -*b)
        .sum();
    let mut fees = Decimal::ZERO;
    let mut refunded_fees = Decimal::ZERO;
    for (_, _, batch) in batches(&full, Some("payments")) {
        fees += money(&batch, "merchant_fee").into_iter().sum::<Decimal>();
        let (ids, pos) = (strings(&batch, "txn_id"), integers(&batch, "position"));
        assert!(ids.len() == pos.len() && !ids.is_empty());
    }
    for (_, _, batch) in batches(&full, Some("postings")) {
        let (acc, kind, amt) = (strings(&batch, "account"), strings(&batch, "event_type"), money(&batch, "amount"));
        for (i, amount) in amt.into_iter().enumerate() {
            if acc.value(i).starts_with("income:mdr:") && kind.value(i) != "PaymentCaptured" {
                refunded_fees += amount;
            }
        }
    }
    assert_eq!(fees - refunded_fees, fee_income, "captured fees less what refunds and cancels gave back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_is_finished_without_duplicates() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = both_days(dir.path()).await;
    let clean = dir.path().join("clean");
    export::export(&*store, &clean).await.expect("clean run");
    // A run killed halfway: its range recorded, some of its files renamed into place, one
    // still under its temporary name.
    let killed = dir.path().join("killed");
    let all = parts(&clean);
    for (i, part) in all.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let to = killed.join(part);
        std::fs::create_dir_all(to.parent().expect("dir")).expect("mkdir");
        if i == 0 {
            std::fs::write(to.with_extension("parquet.tmp"), b"half a file").expect("tmp");
        } else {
            std::fs::copy(clean.join(part), &to).expect("copy");
        }
    }
    let running = Checkpoint { position: 0, running: Some((0, store.head())) };
    std::fs::write(killed.join(CHECKPOINT_FILE), serde_json::to_vec(&running).expect("json")).expect("checkpoint");
    let resumed = export::export(&*store, &killed).await.expect("resumed");
    assert_eq!((resumed.from, resumed.to), (0, store.head()));
    assert_eq!(parts(&killed), all, "the same files, none twice");
    assert_eq!(totals(&killed), totals(&clean));
    let checkpoint: Checkpoint =
        serde_json::from_slice(&std::fs::read(killed.join(CHECKPOINT_FILE)).expect("read")).expect("json");
    assert_eq!(checkpoint, Checkpoint { position: store.head(), running: None });
}

/// DuckDB (PyPI), an independent Parquet reader, opens the export unchanged and finds the
/// same rows and totals per table and day as we wrote. On CI (`CI` set, `.ci/run` installs
/// duckdb) the comparison must run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_same_rows_and_totals() {
    let probe = std::process::Command::new("python3").args(["-c", "import duckdb"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "duckdb is not installed on CI");
        eprintln!("skipped: duckdb is not installed (pip install duckdb)");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let store = both_days(dir.path()).await;
    let out = dir.path().join("export");
    export::export(&*store, &out).await.expect("export");
    // Ours, per table and day, from the files we wrote.
    let ours = totals_by_day(&out);
    let script = r#"
import sys, duckdb
root = sys.argv[1]
for table in ["payments", "adjustments", "postings", "merchants"]:
    amount = "sum(amount)" if table != "merchants" else "0"
    rows = duckdb.sql(f"SELECT date, count(*), {amount} FROM read_parquet('{root}/{table}/*/*.parquet', hive_partitioning = true) GROUP BY date ORDER BY date").fetchall()
    for day, n, total in rows:
        print(table, day, n, "%.2f" % total if table != "merchants" else "0.00")
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, out.to_str().expect("utf8")])
        .output()
        .expect("run duckdb");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let theirs: BTreeMap<(String, String), (u64, Decimal)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ((f[0].to_owned(), f[1].to_owned()), (f[2].parse().expect("count"), f[3].parse().expect("sum")))
        })
        .collect();
    let ours: BTreeMap<_, _> = ours.into_iter().map(|(k, (n, s))| (k, (n, s.round_dp(2)))).collect();
    assert!(theirs.len() >= 8, "{theirs:?}");
    assert_eq!(theirs, ours, "DuckDB's rows and totals per table and day against ours");
}

/// Imports the fixture's three statements of `date` and reconciles each (runs recorded by the
/// application layer); the breaks found.
async fn reconcile_fixture_day(app: &app::App, date: &str) -> u64 {
    use ingest::statement::StatementChannel;
    let mut breaks = 0;
    for (channel, ext) in
        [(StatementChannel::Wechat, "csv"), (StatementChannel::Alipay, "csv"), (StatementChannel::Unionpay, "txt")]
    {
        let name = format!("statements/{channel}-{date}.{ext}");
        let bytes = std::fs::read(fixture(&name)).expect("statement");
        app.import_statement(channel, &name, &bytes, None).await.expect("import");
        let day = app.reconcile(date.parse().expect("date"), Some(channel)).await.expect("reconcile");
        breaks += day.reports[0].breaks.len() as u64;
    }
    breaks
}

/// Reconciliation runs are exported as `recon_items`: every break one row, the matched lines
/// summed per ledger channel and kind; the matched counts are the answer key's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_runs_are_exported() {
    let dir = tempfile::tempdir().expect("tmp");
    drop(both_days(dir.path()).await);
    // Statements are imported and runs recorded by the application layer.
    let app = app::App::open(app::DataDir::new(dir.path()), Box::new(|w| panic!("{w}"))).expect("app");
    let store = app.store().clone();
    let mut breaks = 0;
    for date in ["2026-11-24", "2026-11-25"] {
        breaks += reconcile_fixture_day(&app, date).await;
    }
    let out = dir.path().join("export");
    export::export(&*store, &out).await.expect("export");
    let answer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("answer.json")).expect("answer")).expect("json");
    let mut matched: BTreeMap<String, u64> = BTreeMap::new();
    let mut broken = 0;
    for (_, day, batch) in batches(&out, Some("recon_items")) {
        let (statement, outcome, items) =
            (strings(&batch, "statement"), strings(&batch, "outcome"), integers(&batch, "items"));
        for i in 0..batch.num_rows() {
            if outcome.value(i) == "matched" {
                *matched.entry(format!("{}:{day}", statement.value(i))).or_default() += items.value(i);
            } else {
                broken += items.value(i);
            }
        }
    }
    assert_eq!(broken, breaks, "every break and carried item one row");
    let want: BTreeMap<String, u64> = answer["matched"]
        .as_object()
        .expect("matched")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect();
    assert_eq!(matched, want);
}

/// Every row of every table, as text, sorted: what an export holds whatever its part files.
fn all_rows(dir: &Path) -> BTreeMap<String, Vec<String>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, _, batch) in batches(dir, None) {
        let options = FormatOptions::default();
        let columns: Vec<ArrayFormatter> =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("format")).collect();
        let rows = out.entry(table).or_default();
        for i in 0..batch.num_rows() {
            rows.push(columns.iter().map(|c| c.value(i).to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    for rows in out.values_mut() {
        rows.sort();
    }
    out
}

/// The application's export takes each entry from its books, which follow the log, instead of
/// replaying the history before the range: run a day at a time, it holds row for row what one
/// replaying export of the whole log holds, reconciliation runs (entries of many postings)
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_from_the_books_equals_one_that_replays() {
    let dir = tempfile::tempdir().expect("tmp");
    drop(both_days(dir.path()).await);
    let app = app::App::open(app::DataDir::new(dir.path()), Box::new(|w| panic!("{w}"))).expect("app");
    let from_books = dir.path().join("from-books");
    let mut runs = Vec::new();
    for date in ["2026-11-24", "2026-11-25"] {
        reconcile_fixture_day(&app, date).await;
        runs.push(app.export(Some(from_books.clone())).await.expect("export from the books"));
    }
    assert!(runs[0].to > 0 && runs[1].from == runs[0].to && runs[1].to > runs[1].from, "{runs:?}");
    let replayed = dir.path().join("replayed");
    export::export(&**app.store(), &replayed).await.expect("replaying export");
    let (ours, theirs) = (all_rows(&from_books), all_rows(&replayed));
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (table, rows) in &theirs {
        assert!(!rows.is_empty(), "{table} has rows");
        assert_eq!(&ours[table], rows, "{table}");
    }
}

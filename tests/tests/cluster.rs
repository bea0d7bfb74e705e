//! A real Ballista cluster on loopback: one `posledger cluster scheduler` and two `posledger
//! cluster executor` processes. Every named query and a set of ad-hoc queries over the demo's
//! export give the local result; the sandbox's refusals hold on the cluster, through the
//! command line and through `serve --cluster` with an analyst's key; an executor killed during
//! a query; an unreachable scheduler.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");
const DEMO: [&str; 6] = ["--merchants", "6", "--payments-per-day", "400", "--days", "4"];
/// The scheduler's executor timeout in these tests: a killed executor is noticed quickly.
const EXECUTOR_TIMEOUT_S: &str = "3";

/// The tests here run one at a time: each starts a cluster whose timing (a query long enough
/// to lose an executor in) should not depend on the others sharing the cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A node process, killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port `p` such that `p` and `p + 1` were both free a moment ago.
fn port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn scheduler() -> (Node, String) {
    let mut child = Command::new(POSLEDGER)
        .args(["cluster", "scheduler", "--bind", "127.0.0.1:0", "--executor-timeout", EXECUTOR_TIMEOUT_S])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the scheduler");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the scheduler's line");
    let url = line.trim().strip_prefix("scheduler listening on ").expect("the scheduler's address").to_owned();
    (Node(child), url)
}

fn executor(url: &str, work: &Path) -> Node {
    let port = port_pair().to_string();
    let child = Command::new(POSLEDGER)
        .args(["cluster", "executor", "--scheduler", url, "--slots", "2", "--port", &port])
        .arg("--work-dir")
        .arg(work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn an executor");
    Node(child)
}

fn posledger(data: &Path, args: &[&str]) -> Output {
    Command::new(POSLEDGER).arg("--data-dir").arg(data).args(args).stdin(Stdio::null()).output().expect("run posledger")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The demo's data directory, with its export.
fn demo(tmp: &Path) -> std::path::PathBuf {
    let data = tmp.join("demo");
    let out = Command::new(POSLEDGER).arg("--data-dir").arg(&data).arg("demo").args(DEMO).output().expect("demo");
    ok(&out);
    assert!(data.join("export/payments").is_dir());
    data
}

/// Waits until the cluster answers a query (its executors have registered).
fn wait_for_executors(data: &Path, url: &str) {
    let started = Instant::now();
    loop {
        let out = posledger(data, &["query", "--sql", "SELECT count(*) AS n FROM payments", "--cluster", url]);
        if out.status.success() {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the cluster never answered: {}", stderr(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Ad-hoc queries that exercise what a plan carries to executors: scans with partition
/// pruning, filters, joins, aggregates, windows, sorts, set operations, decimals and dates.
const AD_HOC: &[&str] = &[
    "SELECT count(*) AS n, sum(amount) AS total FROM payments",
    "SELECT channel, currency, count(*) AS n, sum(amount) AS total, min(amount) AS low, max(amount) AS high \
     FROM payments GROUP BY channel, currency ORDER BY channel, currency",
    "SELECT date, count(*) AS n FROM payments WHERE date >= DATE '2026-11-03' GROUP BY date ORDER BY date",
    "SELECT p.merchant_id, count(*) AS n, sum(a.amount) AS adjusted FROM payments p \
     JOIN adjustments a ON a.original_txn_id = p.txn_id GROUP BY p.merchant_id ORDER BY p.merchant_id",
    "SELECT merchant_id, amount, rank() OVER (PARTITION BY merchant_id ORDER BY amount DESC, txn_id) AS place \
     FROM payments ORDER BY merchant_id, place LIMIT 40",
    "SELECT count(DISTINCT payer) AS payers, count(DISTINCT terminal_id) AS terminals FROM payments",
    "SELECT merchant_id FROM payments UNION SELECT merchant_id FROM adjustments ORDER BY merchant_id",
    "WITH big AS (SELECT * FROM payments WHERE amount > 100) \
     SELECT currency, avg(amount) AS mean FROM big GROUP BY currency ORDER BY currency",
    // Found empty by the optimiser: no rows, the query's columns.
    "SELECT txn_id, amount FROM payments LIMIT 0",
    "SELECT txn_id FROM payments WHERE false",
    // With Ballista's adaptive planner this came back with no rows (see `analytics::sql::cluster`).
    SLOW_JOIN,
];

/// A join a few seconds long on the cluster in a debug build: long enough to lose an
/// executor in the middle of it.
const SLOW_JOIN: &str = "SELECT count(*) AS n FROM payments a JOIN payments b ON a.merchant_id = b.merchant_id \
     JOIN (SELECT * FROM payments ORDER BY txn_id LIMIT 200) c ON b.merchant_id = c.merchant_id";

#[test]
fn queries_on_a_loopback_cluster_equal_the_local_run() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = demo(tmp.path());
    let (_scheduler, url) = scheduler();
    let _a = executor(&url, &tmp.path().join("work-a"));
    let _b = executor(&url, &tmp.path().join("work-b"));
    wait_for_executors(&data, &url);
    // Give the second executor time to register too.
    std::thread::sleep(Duration::from_secs(2));

    // Every named query, as the local run gives it.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&posledger(&data, &["query", "--list", "--format", "json"]))).expect("list");
    let names: Vec<String> =
        list["rows"].as_array().expect("rows").iter().map(|r| r["name"].as_str().expect("name").to_owned()).collect();
    assert!(names.len() >= 9, "{names:?}");
    for name in &names {
        let local = ok(&posledger(&data, &["query", name, "--format", "json"]));
        let cluster = ok(&posledger(&data, &["query", name, "--format", "json", "--cluster", &url]));
        assert_eq!(cluster, local, "named query {name}");
        let rows = serde_json::from_str::<serde_json::Value>(&local).expect("json")["rows"].as_array().map(Vec::len);
        assert!(rows.unwrap_or(0) > 0 || name == "breaks_by_day", "{name} has rows: {local}");
    }
    // With parameters.
    let args = ["query", "top_merchants", "--param", "limit=3", "--param", "from=2026-11-03", "--format", "csv"];
    let local = ok(&posledger(&data, &args));
    assert_eq!(ok(&posledger(&data, &[&args[..], &["--cluster", &url]].concat())), local);

    for sql in AD_HOC {
        let local = ok(&posledger(&data, &["query", "--sql", sql, "--format", "json"]));
        let cluster = ok(&posledger(&data, &["query", "--sql", sql, "--format", "json", "--cluster", &url]));
        assert_eq!(cluster, local, "{sql}");
    }
    // A table not exported yet reads as no rows there too, with its columns.
    let partial = tmp.path().join("partial-export");
    copy_dir(&data.join("export"), &partial);
    std::fs::remove_dir_all(partial.join("recon_items")).expect("remove a table");
    let sql = "SELECT count(*) AS n, sum(our_amount) AS total FROM recon_items";
    let export = partial.display().to_string();
    let local = ok(&posledger(&data, &["query", "--sql", sql, "--export", &export, "--format", "json"]));
    let cluster =
        ok(&posledger(&data, &["query", "--sql", sql, "--export", &export, "--format", "json", "--cluster", &url]));
    assert_eq!(cluster, local);
    assert!(local.contains(r#""n":0"#), "{local}");
    // Both executors ran tasks: each holds a job's shuffle files.
    for work in ["work-a", "work-b"] {
        assert!(!jobs_in(&[tmp.path().join(work)]).is_empty(), "{work} ran no task");
    }
    let jobs = || jobs_in(&[tmp.path().join("work-a"), tmp.path().join("work-b")]).len();
    let jobs_before = jobs();

    // The sandbox holds on the cluster: checked where the query is planned.
    for (sql, expected) in [
        ("DROP TABLE payments", "is not a query"),
        ("SELECT 1; SELECT 2", "2 statements"),
        ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'", "CREATE EXTERNAL TABLE is not a query"),
        ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
        ("SELECT repeat('x', 5)", "repeat"),
        ("SELECT * FROM generate_series(1, 3)", "generate_series"),
        ("SELECT a.txn_id FROM payments a, payments b", "more than 100000 rows"),
    ] {
        let out = posledger(&data, &["query", "--sql", sql, "--cluster", &url]);
        assert_eq!(out.status.code(), Some(2), "{sql}: {}", ok_text(&out));
        assert!(stderr(&out).contains(expected), "{sql}: {}", stderr(&out));
    }
    // Refused where they were asked: none reached an executor. (The row limit's query did: it
    // is refused on its result, and its job's files may already be gone with its cancel.)
    assert!(jobs() <= jobs_before + 1, "jobs run for the refused queries: {} after {jobs_before}", jobs());

    // The server's query routes on the cluster, with an analyst's key: no payer column, the
    // named queries as locally.
    let key = ok(&posledger(&data, &["keys", "create", "--role", "analyst"])).trim().to_owned();
    let mut server = Command::new(POSLEDGER)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--addr", "127.0.0.1:0", "--cluster", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let server = Node(server);
    let addr = line.trim().strip_prefix("listening on http://").expect("address").parse().expect("addr");
    let (status, body) = tests::http(addr, "POST", "/v1/sql", &key, b"SELECT payer FROM payments").expect("http");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("payer"));
    let jobs_before = jobs();
    let (status, body) =
        tests::http(addr, "POST", "/v1/sql", &key, b"SELECT count(*) AS n FROM payments").expect("http");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(jobs() > jobs_before, "the server's query ran on the cluster");
    // The data's fault, found on an executor, is the caller's error as it is locally.
    let (status, body) =
        tests::http(addr, "POST", "/v1/sql", &key, b"SELECT 1 / (count(*) - count(*)) AS x FROM payments")
            .expect("http");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("division by zero"), "{}", String::from_utf8_lossy(&body));
    let (status, body) = tests::http(addr, "GET", "/v1/queries/daily_sales", &key, b"").expect("http");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    drop(server);
    let local = ok(&posledger(&data, &["query", "daily_sales", "--format", "json"]));
    let served: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(served, serde_json::from_str::<serde_json::Value>(&local).expect("json"));
}

#[test]
fn an_executor_killed_during_a_query_is_retried_on_the_other() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = demo(tmp.path());
    let local = ok(&posledger(&data, &["query", "--sql", SLOW_JOIN, "--format", "json"]));
    let (_scheduler, url) = scheduler();
    let _a = executor(&url, &tmp.path().join("work-a"));
    let mut b = executor(&url, &tmp.path().join("work-b"));
    wait_for_executors(&data, &url);
    std::thread::sleep(Duration::from_secs(2));
    let mut query = Command::new(POSLEDGER)
        .arg("--data-dir")
        .arg(&data)
        .args(["query", "--sql", SLOW_JOIN, "--format", "json", "--cluster", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("query");
    std::thread::sleep(Duration::from_secs(1));
    assert!(query.try_wait().expect("wait").is_none(), "the query ended before the executor was killed");
    b.0.kill().expect("kill the executor");
    b.0.wait().expect("reap the executor");
    // Ballista notices the executor's heartbeats have stopped (the scheduler's executor
    // timeout), puts its tasks back, runs again the stages whose output it held, and finishes
    // the job on the executor left: the answer is the local one.
    let status = tests::wait_with_limit(&mut query, Duration::from_secs(120), "the query after the kill");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut query.stdout.take().expect("stdout"), &mut stdout).expect("read");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut query.stderr.take().expect("stderr"), &mut err).expect("read");
    assert!(status.success(), "{err}");
    assert_eq!(stdout, local);
}

/// The jobs whose shuffle files the executors working in `works` hold (`WORK/executor-PORT/JOB`).
fn jobs_in(works: &[std::path::PathBuf]) -> std::collections::BTreeSet<std::ffi::OsString> {
    let executors = works.iter().filter_map(|w| std::fs::read_dir(w).ok()).flatten().flatten();
    executors.filter_map(|e| std::fs::read_dir(e.path()).ok()).flatten().flatten().map(|j| j.file_name()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn ok_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

#[test]
fn an_unreachable_scheduler_is_a_clear_error_within_its_time() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = demo(tmp.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("df://127.0.0.1:{port}");
    let started = Instant::now();
    let out = posledger(&data, &["query", "daily_sales", "--cluster", &url]);
    assert!(started.elapsed() < Duration::from_secs(10), "answered in {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("the cluster's scheduler at {url} cannot be reached")), "{}", stderr(&out));
    // A malformed address is refused before anything runs.
    let out = posledger(&data, &["query", "daily_sales", "--cluster", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not start with df://"), "{}", stderr(&out));
    // An executor whose scheduler is not there says so and stops.
    let started = Instant::now();
    let out = Command::new(POSLEDGER)
        .args(["cluster", "executor", "--scheduler", &url, "--slots", "1", "--work-dir"])
        .arg(tmp.path().join("work"))
        .output()
        .expect("executor");
    assert!(started.elapsed() < Duration::from_secs(20), "gave up after {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot be reached"), "{}", stderr(&out));
}

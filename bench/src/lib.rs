//! posledger's benchmarks (`posledger-bench`): measured figures, one JSON object per line:
//! `{"name": ..., "value": ..., "unit": ..., "params": {...}}`.
//!
//! Each benchmark builds its own data in a scratch directory, times only the operation it
//! names, and reports the parameters it ran with. Sizes scale with `--scale`.

// Timings and rates are measurements, not money: floating point is the right tool here.
#![allow(clippy::float_arithmetic)]

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ingest::event::{Channel, Event, PaymentCaptured};
use ingest::generate::{self, Shape};
use ingest::money::Currency;
use ingest::pipeline::{Ingestor, InputKind};
use ingest::store::{AppendRequest, EmbeddedStore, EventStore, ExpectedRevision};
use serde_json::{Value, json};

/// A benchmark the command knows.
pub struct Benchmark {
    /// Name as given on the command line; also the name of its first figure.
    pub name: &'static str,
    /// What it measures.
    pub about: &'static str,
}

/// Every benchmark, in the order `bench` runs them.
pub const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "append_durable_events_per_s",
        about: "1M PaymentCaptured events (~200 bytes on disk) appended by 4 concurrent writers, fdatasync on; \
                after each run the disk on its own with the same bytes in the same commits \
                (disk_commit_pattern_mb_per_s, append_vs_disk_ratio)",
    },
    Benchmark {
        name: "ingest_feed_records_per_s",
        about: "a generated 1M-record terminal feed through parsing, the write model and durable append; \
                then its parsing alone against serde alone (feed_parse_records_per_s, feed_parse_vs_serde_ratio)",
    },
    Benchmark {
        name: "open_recover_s",
        about: "reopening a 10M-event store after a clean close (index snapshot); also after a crash \
                (open_recover_after_crash_s: the snapshot 2M events behind) and with no snapshot \
                (open_recover_no_snapshot_s: scan, check and index the whole log)",
    },
    Benchmark {
        name: "reconcile_1m_items_s",
        about: "classifying 1M statement lines against 1M ledger items (the full outcome set, a few \
                hundred planted breaks); DuckDB's and polars' bare full outer join of the same keys \
                when they are installed (pip install duckdb polars)",
    },
    Benchmark {
        name: "parse_statements_lines_per_s",
        about: "parsing generated 1M-line statements: parse_wechat_lines_per_s (UTF-8 CSV), \
                parse_alipay_lines_per_s (GBK CSV), parse_unionpay_lines_per_s (fixed-width GBK)",
    },
    Benchmark {
        name: "export_rows_per_s",
        about: "exporting a stored log of 1M captures (and their refunds) to Parquet from nothing: \
                payments, adjustments, postings and merchants rows per second",
    },
    Benchmark {
        name: "groupby_10m_payments_s",
        about: "the named query daily_sales (net sales, merchant fee and count per business day, \
                merchant and channel) on DataFusion over the export of 10M captures (and 1M refunds) \
                of 1000 merchants; DuckDB running the same SQL on the same files in the same minute \
                when it is installed (groupby_10m_vs_duckdb_ratio)",
    },
    Benchmark {
        name: "cluster_groupby_10m_s",
        about: "groupby_10m_payments_s's query and export on a Ballista cluster on loopback: a `posledger \
                cluster scheduler` and one `posledger cluster executor` (2 slots) as child processes, then \
                with a second executor (cluster_groupby_10m_2_executors_s); beside them the local run in the \
                same minute (cluster_local_groupby_10m_s) and the ratios to it",
    },
    Benchmark {
        name: "http_balance_reads_per_s",
        about: "posledger serve on 127.0.0.1 (in this process): GET /v1/balances/{account} under wrk \
                (2 threads, 64 connections, 5 s, after one read has caught the books up: also http_balance_p99_ms \
                and http_first_read_after_ingest_ms; then http_balance_p99_under_sql_attack_ms, the same reads \
                while an analyst key sends HOSTILE_SQL in a loop to analytics workers, and \
                http_balance_p99_during_backup_ms, while backups of the whole directory run back to back) when wrk is installed, and \
                http_ingest_records_per_s: a generated feed of 200k records POSTed as NDJSON batches of \
                1000 by 2 clients",
    },
    Benchmark {
        name: "http_sustained_ingest_rss_spread_pct",
        about: "posledger serve in a child process taking a generated feed POSTed as NDJSON batches of \
                1000 at a steady 10k records/s for 10 minutes (--scale shortens it, never below two \
                minutes): the spread (max - min) / min of the server's resident memory, sampled every \
                5 s after a warm-up of the first tenth of the run (at least a minute); also its \
                resident memory then and at the end",
    },
    Benchmark {
        name: "cli_balance_while_serving_ms",
        about: "a `posledger balance` process, start to exit, on a data directory that `posledger serve` \
                (a child process) holds while it takes a generated feed POSTed at a steady 10k records/s \
                (the command goes through the server's local socket); beside it the same command with the \
                server idle (cli_balance_idle_server_ms) and with no server (cli_balance_no_server_ms, the \
                command opening the directory itself)",
    },
    Benchmark {
        name: "backup_10m_events_s",
        about: "posledger backup of a data directory holding 10M events (9.1M captures of 1000 merchants, \
                a refund for one in ten) into an empty directory, and restore_10m_events_s: restoring it \
                into a new data directory (every piece checked, the chain walked, then the books and the \
                write model rebuilt; restore_10m_log_s is the part up to the rebuild); each with MB/s \
                beside `cp` of the same segment files and `sync` in the same run",
    },
    Benchmark {
        name: "replay_10m_events_s",
        about: "rebuilding the books from a stored log of 10M events (9.1M captures of 1000 merchants, \
                a refund for one in ten) without a checkpoint: read, decode, project; also its peak \
                memory (replay_peak_rss_mib), as-of balances by position (as_of_balance_ms) and business \
                time (as_of_time_balance_ms) over its 30M postings, resuming from a checkpoint \
                of it (checkpoint_resume_s); then a day more (a thirtieth of the history) appended and \
                the checkpoint saved again (checkpoint_save_after_day_s), and a `posledger balance` \
                process, start to exit, on the directory with no server (cli_balance_10m_events_ms)",
    },
    Benchmark {
        name: "projection_postings_per_s",
        about: "the ledger projection over 1M captures and refunds in memory (~3M postings); also \
                balances_1m_postings_s, and ledger-cli's `bal` on the same journal when it is installed",
    },
    Benchmark {
        name: "demo_default_s",
        about: "`posledger demo` at its defaults (40 merchants, 20k sales a day, 7 days) into a fresh \
                directory: onboarding, every day ingested and closed by its day-end, verify, the named \
                queries and their charts; it must find what it planted; also its peak memory \
                (demo_default_peak_rss_mib)",
    },
    Benchmark {
        name: "day_end_1m_payments_s",
        about: "one day-end (3 statements imported, reconciled, settled with holds, exported, the day \
                verified) of a demo day of 1M sales at 1000 merchants, on a store holding that day and \
                the day before (closed by its own day-end); beside it the separate use cases of the \
                commands finance would run on a copy of the same store \
                (day_end_1m_separate_commands_s: 3 x statement import, reconcile, settle, export, verify)",
    },
    Benchmark {
        name: "day_end_after_history_ratio",
        about: "the day-end of a demo day of 1M sales at 1000 merchants on a store holding the 30 days \
                before it (each closed by its own day-end), divided by the same day-end on a store \
                holding only the day before it; both alternated on fresh copies",
    },
];

fn emit(name: &str, value: f64, unit: &str, params: Value) {
    let line = json!({"name": name, "value": (value * 1e6).round() / 1e6, "unit": unit, "params": params});
    println!("{line}");
}

fn scaled(n: u64, scale: f64) -> u64 {
    ((n as f64 * scale).round() as u64).max(1)
}

/// Peak resident memory of this process since the last [`reset_peak_rss`], in MiB.
fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// Resident memory of this process now, in MiB.
fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets the peak (Linux 4.0+); without it the figure is an
    // upper bound that includes earlier benchmarks.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The median of some timings (seconds).
fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// Runs the named benchmarks (all when `names` is empty), each timed `repeat` times; the
/// figure is the median, every run is in the params.
pub fn run(names: &[String], scale: f64, repeat: usize, work_dir: Option<&Path>) -> Result<()> {
    let repeat = repeat.max(1);
    for n in names {
        if !BENCHMARKS.iter().any(|b| b.name == n) {
            anyhow::bail!("unknown benchmark {n:?}; `posledger-bench --list` names them");
        }
    }
    let scratch = match work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for b in BENCHMARKS {
        if !names.is_empty() && !names.iter().any(|n| n == b.name) {
            continue;
        }
        let dir = scratch.path().join(b.name);
        match b.name {
            "append_durable_events_per_s" => rt.block_on(append_durable(&dir, scaled(1_000_000, scale), repeat))?,
            "ingest_feed_records_per_s" => rt.block_on(ingest_feed(&dir, scaled(1_000_000, scale), repeat))?,
            "open_recover_s" => rt.block_on(open_recover(&dir, scaled(10_000_000, scale), repeat))?,
            "projection_postings_per_s" => projection(&dir, scaled(1_000_000, scale), repeat)?,
            "replay_10m_events_s" => rt.block_on(replay(&dir, scaled(9_090_909, scale), repeat))?,
            "backup_10m_events_s" => rt.block_on(backup_restore(&dir, scaled(9_090_909, scale), repeat))?,
            "export_rows_per_s" => rt.block_on(export(&dir, scaled(1_000_000, scale), repeat))?,
            "groupby_10m_payments_s" => rt.block_on(groupby(&dir, scaled(10_000_000, scale), repeat))?,
            "cluster_groupby_10m_s" => rt.block_on(cluster_groupby(&dir, scaled(10_000_000, scale), repeat))?,
            "http_balance_reads_per_s" => rt.block_on(http(&dir, scaled(200_000, scale), repeat))?,
            "http_sustained_ingest_rss_spread_pct" => {
                rt.block_on(http_sustained(&dir, scaled(600, scale).max(120), SUSTAINED_RECORDS_PER_S))?
            }
            "cli_balance_while_serving_ms" => {
                rt.block_on(cli_balance_while_serving(&dir, (30.0 * repeat as f64 * scale.max(0.34)) as usize))?
            }
            "reconcile_1m_items_s" => reconcile(&dir, scaled(1_000_000, scale), repeat)?,
            "parse_statements_lines_per_s" => parse_statements(scaled(1_000_000, scale), repeat)?,
            "demo_default_s" => rt.block_on(demo_default(&dir, scale, repeat))?,
            "day_end_1m_payments_s" => {
                rt.block_on(day_end(&dir, scaled(1_000_000, scale), scaled(1000, scale) as u32, repeat))?
            }
            "day_end_after_history_ratio" => rt.block_on(day_end_after_history(
                &dir,
                scaled(1_000_000, scale),
                scaled(1000, scale) as u32,
                HISTORY_DAYS,
                repeat,
            ))?,
            _ => unreachable!("names were checked above"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// A capture like the ones terminals send, as the store takes it.
fn capture(i: u64) -> AppendRequest {
    let txn_id = format!("M{:06}-20261126-{i:09}", i % 1000);
    let event = Event::PaymentCaptured(PaymentCaptured {
        txn_id: txn_id.clone().into(),
        merchant_id: format!("M{:06}", i % 1000).into(),
        terminal_id: format!("T{:08}", i % 2000).into(),
        batch_no: "000001".into(),
        stan: format!("{:06}", i % 1_000_000).into(),
        rrn: None,
        channel: Channel::Wechat,
        channel_txn_id: None,
        amount: rust_decimal::Decimal::new(100 + (i % 50_000) as i64, 2),
        currency: Currency::Cny,
        at: chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00+08:00").unwrap_or_default(),
        payer: None,
        mcc: "5812".into(),
    });
    AppendRequest { stream: event.stream(), expected: ExpectedRevision::NoStream, events: vec![event.to_event_data()] }
}

/// Each writer's share of the captures numbered `first..first + events`, in `append_many`
/// calls of `batch` requests.
fn prepare(first: u64, events: u64, writers: u64, batch: u64) -> Vec<Vec<Vec<AppendRequest>>> {
    (0..writers)
        .map(|w| {
            let mine: Vec<u64> = (first..first + events).filter(|i| i % writers == w).collect();
            mine.chunks(batch as usize).map(|c| c.iter().map(|&i| capture(i)).collect()).collect()
        })
        .collect()
}

/// Runs one task per writer, each appending its share in order; returns when all are durable.
async fn run_writers(store: &Arc<EmbeddedStore>, prepared: Vec<Vec<Vec<AppendRequest>>>) -> Result<()> {
    let mut tasks = Vec::new();
    for requests in prepared {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in requests {
                for r in store.append_many(chunk).await {
                    r.context("append")?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn append_durable(dir: &Path, events: u64, repeat: usize) -> Result<()> {
    let (writers, batch) = (4u64, 1000u64);
    let (mut runs, mut disk_runs) = (Vec::new(), Vec::new());
    let (mut bytes, mut frames) = (0, 0);
    for run in 0..repeat {
        let dir = dir.join(run.to_string());
        let store = Arc::new(EmbeddedStore::open(&dir)?);
        let prepared = prepare(0, events, writers, batch);
        let start = Instant::now();
        run_writers(&store, prepared).await?;
        runs.push(start.elapsed().as_secs_f64());
        drop(store);
        let report = ingest::store::verify_dir(&dir)?;
        (bytes, frames) = (logical_bytes(&dir), report.frames);
        let _ = std::fs::remove_dir_all(&dir);
        // The disk on its own, right after: the same bytes in the same commits.
        disk_runs.push(disk_commits(&dir, bytes, frames)?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let secs = median(runs.clone());
    let disk = median(disk_runs.clone());
    emit(
        "disk_commit_pattern_mb_per_s",
        bytes as f64 / disk / 1e6,
        "MB/s",
        json!({
            "bytes": bytes, "commits": frames, "bytes_per_commit": bytes / frames.max(1),
            "runs_seconds": disk_runs, "pattern": "one file, each commit's bytes at the next offset, fdatasync after each",
        }),
    );
    emit(
        "append_vs_disk_ratio",
        disk / secs,
        "x",
        json!({"append_mb_per_s": bytes as f64 / secs / 1e6, "disk_mb_per_s": bytes as f64 / disk / 1e6}),
    );
    emit(
        "append_durable_events_per_s",
        events as f64 / secs,
        "events/s",
        json!({
            "events": events, "writers": writers, "requests_per_append_many": batch,
            "bytes_per_event_on_disk": (bytes as f64 / events as f64).round(), "group_commits": frames,
            "median_seconds": secs, "runs_seconds": runs, "fdatasync": true,
        }),
    );
    // The peer, on the same events, in the same minute: PostgreSQL COPY in 1000-row
    // transactions with fsync and synchronous_commit on, when a server is installed.
    match postgres_copy(&prepare(0, events, 1, 1000), repeat) {
        Ok(Some(pg_runs)) => {
            let pg = median(pg_runs.clone());
            emit(
                "peer_postgres_copy_events_per_s",
                events as f64 / pg,
                "events/s",
                json!({"events": events, "rows_per_transaction": 1000, "runs_seconds": pg_runs}),
            );
            emit("append_durable_vs_postgres_ratio", pg / secs, "x", json!({"events": events}));
        }
        Ok(None) => eprintln!("peer skipped: PostgreSQL (initdb, pg_ctl, psql) is not installed"),
        Err(e) => eprintln!("peer skipped: PostgreSQL run failed: {e:#}"),
    }
    Ok(())
}

/// Seconds the disk takes for the store's commit pattern on its own: `bytes` written as
/// `commits` equal chunks at growing offsets of one new file in `dir`, an fdatasync after each
/// (what the writer does, without building frames or indexing them).
fn disk_commits(dir: &Path, bytes: u64, commits: u64) -> Result<f64> {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("disk-commit-pattern");
    let file = std::fs::File::create(&path)?;
    let commits = commits.max(1);
    let chunk = vec![0x5a_u8; (bytes / commits).max(1) as usize];
    let start = Instant::now();
    let mut offset = 0;
    for _ in 0..commits {
        file.write_all_at(&chunk, offset)?;
        file.sync_data()?;
        offset += chunk.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(secs)
}

/// Times loading the same events into a throwaway PostgreSQL cluster with `psql` and COPY,
/// 1000 rows a transaction. `None` when PostgreSQL is not installed.
fn postgres_copy(requests: &[Vec<Vec<AppendRequest>>], repeat: usize) -> Result<Option<Vec<f64>>> {
    use std::process::{Command, Stdio};
    let found =
        |tool: &str| Command::new(tool).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !["initdb", "pg_ctl", "psql"].iter().all(|t| found(t)) {
        return Ok(None);
    }
    // PostgreSQL refuses to run as root: run the server as `postgres` then.
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let as_server_user = |args: &[&str]| {
        let mut cmd = if root { Command::new("runuser") } else { Command::new(args[0]) };
        if root {
            cmd.args(["-u", "postgres", "--"]).args(args);
        } else {
            cmd.args(&args[1..]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    };
    let dir = tempfile::Builder::new().prefix("posledger-pg-").tempdir()?;
    let data = dir.path().join("data");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    }
    anyhow::ensure!(
        as_server_user(&["initdb", "-D", &path(&data), "-A", "trust", "-U", "postgres"]).status()?.success(),
        "initdb"
    );
    let options = format!("-k {} -c listen_addresses='' -c fsync=on -c synchronous_commit=on", path(dir.path()));
    let log = path(&dir.path().join("log"));
    anyhow::ensure!(
        as_server_user(&["pg_ctl", "-D", &path(&data), "-o", &options, "-l", &log, "-w", "start"]).status()?.success(),
        "pg_ctl start"
    );
    let psql = |args: &[&str]| {
        let mut cmd = Command::new("psql");
        cmd.args(["-h", &path(dir.path()), "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]).args(args);
        cmd.stdout(Stdio::null());
        cmd
    };
    let result = (|| -> Result<Vec<f64>> {
        // The same rows the store writes: position, stream, revision, id, type, times, payload.
        let script = dir.path().join("copy.sql");
        {
            let mut out = BufWriter::new(std::fs::File::create(&script)?);
            let mut position = 0u64;
            for chunk in requests.iter().flatten() {
                writeln!(out, "COPY events FROM STDIN;")?;
                for r in chunk {
                    let e = &r.events[0];
                    let payload = String::from_utf8_lossy(&e.payload).replace('\\', "\\\\");
                    writeln!(
                        out,
                        "{position}\t{}\t0\t{}\t{}\t{}\t{}\t{payload}",
                        r.stream, e.event_id, e.event_type, e.occurred_at_us, e.occurred_at_us
                    )?;
                    position += 1;
                }
                writeln!(out, "\\.")?;
            }
            out.flush()?;
        }
        let mut runs = Vec::new();
        for _ in 0..repeat {
            let table = "SET client_min_messages = warning; DROP TABLE IF EXISTS events; CREATE TABLE events (position bigint PRIMARY KEY, \
                         stream text, revision bigint, event_id uuid UNIQUE, event_type text, \
                         occurred_at_us bigint, recorded_at_us bigint, payload text)";
            anyhow::ensure!(psql(&["-c", table]).status()?.success(), "create table");
            let start = Instant::now();
            anyhow::ensure!(psql(&["-f", &path(&script)]).status()?.success(), "psql COPY");
            runs.push(start.elapsed().as_secs_f64());
        }
        Ok(runs)
    })();
    let _ = as_server_user(&["pg_ctl", "-D", &path(&data), "-m", "immediate", "stop"]).status();
    result.map(Some)
}

/// Bytes of log in `dir` up to the end of the last commit of each segment (the zero-filled
/// space ahead of it is not counted).
fn logical_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| last_nonzero_end(&e.path()).ok())
        .sum()
}

/// The offset just past a file's last non-zero byte, read a chunk at a time.
fn last_nonzero_end(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 8 << 20];
    let (mut at, mut end) = (0u64, 0u64);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(end);
        }
        if let Some(i) = buf[..n].iter().rposition(|&x| x != 0) {
            end = at + i as u64 + 1;
        }
        at += n as u64;
    }
}

async fn ingest_feed(dir: &Path, records: u64, repeat: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let shape = Shape { merchants: 1000, terminals_per_merchant: 2, seed: 42 };
    let admin_path = dir.join("admin.ndjson");
    let feed_path = dir.join("feed.ndjson");
    {
        let mut admin = BufWriter::new(std::fs::File::create(&admin_path)?);
        generate::write_admin(&mut admin, shape)?;
        admin.flush()?;
        let mut feed = BufWriter::new(std::fs::File::create(&feed_path)?);
        generate::write_feed(&mut feed, shape, records)?;
        feed.flush()?;
    }
    let feed_bytes = std::fs::metadata(&feed_path)?.len();
    let mut runs = Vec::new();
    let mut peak = Vec::new();
    let mut accepted = 0;
    for run in 0..repeat {
        let events = dir.join(format!("events-{run}"));
        let store = Arc::new(EmbeddedStore::open(&events)?);
        let mut ingestor = Ingestor::open(store.clone(), None).await?;
        let admin = BufReader::new(std::fs::File::open(&admin_path)?);
        ingestor.ingest_reader(admin, InputKind::Admin, |_, _| {}).await?;
        reset_peak_rss();
        let feed = BufReader::with_capacity(1 << 20, std::fs::File::open(&feed_path)?);
        let start = Instant::now();
        let summary = ingestor.ingest_reader(feed, InputKind::Feed, |_, _| {}).await?;
        runs.push(start.elapsed().as_secs_f64());
        peak.extend(peak_rss_mib());
        if summary.rejected > 0 {
            anyhow::bail!("generated feed had rejections: {:?}", summary.first_rejections);
        }
        accepted = summary.accepted;
        drop(ingestor);
        drop(store);
        let _ = std::fs::remove_dir_all(&events);
    }
    let secs = median(runs.clone());
    emit(
        "ingest_feed_records_per_s",
        records as f64 / secs,
        "records/s",
        json!({
            "records": records, "accepted": accepted, "feed_bytes": feed_bytes,
            "merchants": shape.merchants, "terminals": shape.merchants * shape.terminals_per_merchant,
            "median_seconds": secs, "runs_seconds": runs,
        }),
    );
    if !peak.is_empty() {
        emit("ingest_feed_peak_rss_mib", median(peak.clone()), "MiB", json!({"records": records, "runs_mib": peak}));
    }
    feed_parse(&feed_path, repeat)
}

/// The parse stage alone over the same feed, in memory: each line through `parse_feed_line`
/// (the scanner, serde for any other shape) and through serde alone, alternated.
fn feed_parse(feed_path: &Path, repeat: usize) -> Result<()> {
    use ingest::feed::{parse_feed_line, parse_feed_line_with_serde};
    let text = std::fs::read(feed_path)?;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let time = |parse: fn(u64, &[u8]) -> Result<ingest::feed::FeedCommand, ingest::feed::LineError>| {
        let start = Instant::now();
        for (i, line) in lines.iter().enumerate() {
            std::hint::black_box(parse(i as u64 + 1, line)).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        anyhow::Ok(start.elapsed().as_secs_f64())
    };
    let (mut ours, mut serde) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        ours.push(time(parse_feed_line)?);
        serde.push(time(parse_feed_line_with_serde)?);
    }
    let (ours_s, serde_s) = (median(ours.clone()), median(serde.clone()));
    let n = lines.len() as f64;
    emit(
        "feed_parse_records_per_s",
        n / ours_s,
        "records/s",
        json!({"records": lines.len(), "runs_seconds": ours, "serde_records_per_s": n / serde_s, "serde_runs_seconds": serde}),
    );
    emit("feed_parse_vs_serde_ratio", ours_s / serde_s, "x", json!({"records": lines.len()}));
    Ok(())
}

/// Copies directory `from` with everything under it into `to`, made if missing.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    if let Ok(entries) = std::fs::read_dir(from) {
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()))?;
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
    }
    Ok(())
}

async fn open_recover(dir: &Path, events: u64, repeat: usize) -> Result<()> {
    // The last snapshot interval is appended after a copy of the snapshot was put aside:
    // putting it back later gives the open after a crash at the worst moment.
    let interval = ingest::store::SNAPSHOT_EVERY_EVENTS_DEFAULT.min(events / 2);
    let (snapshot, aside) = (dir.join("index.snap"), dir.join("index.snap.aside"));
    let mut done = 0;
    for target in [events - interval, events] {
        let store = Arc::new(EmbeddedStore::open(dir)?);
        // Built in slices so the prepared requests never hold more than a million events.
        while done < target {
            let n = 1_000_000u64.min(target - done);
            run_writers(&store, prepare(done, n, 2, 5000)).await?;
            done += n;
        }
        drop(store);
        if target < events {
            // The snapshot names index runs in `keys/`: they are put aside with it.
            std::fs::copy(&snapshot, &aside)?;
            copy_dir(&dir.join("keys"), &dir.join("keys.aside"))?;
        }
    }
    let bytes = logical_bytes(dir);
    let reopen = |expect_snapshot: Option<u64>| -> Result<f64> {
        let start = Instant::now();
        let store = EmbeddedStore::open(dir)?;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(store.head() == events, "reopened store holds every event");
        anyhow::ensure!(store.open_report().from_snapshot == expect_snapshot, "snapshot use as expected");
        Ok(secs)
    };
    // After a clean close: the closing snapshot, nothing to scan.
    let runs = (0..repeat).map(|_| reopen(Some(events))).collect::<Result<Vec<_>>>()?;
    emit(
        "open_recover_s",
        median(runs.clone()),
        "s",
        json!({"events": events, "log_bytes": bytes, "runs_seconds": runs}),
    );
    // After a crash just before the next running snapshot: scan the last interval.
    let mut runs = Vec::new();
    for _ in 0..repeat {
        std::fs::copy(&aside, &snapshot)?;
        let _ = std::fs::remove_dir_all(dir.join("keys"));
        copy_dir(&dir.join("keys.aside"), &dir.join("keys"))?;
        runs.push(reopen(Some(events - interval))?);
    }
    emit(
        "open_recover_after_crash_s",
        median(runs.clone()),
        "s",
        json!({"events": events, "events_after_snapshot": interval, "runs_seconds": runs}),
    );
    // With no snapshot at all: scan, check and index the whole log.
    let mut runs = Vec::new();
    for _ in 0..repeat.min(2) {
        std::fs::remove_file(&snapshot)?;
        runs.push(reopen(None)?);
    }
    emit(
        "open_recover_no_snapshot_s",
        median(runs.clone()),
        "s",
        json!({"events": events, "log_bytes": bytes, "runs_seconds": runs}),
    );
    Ok(())
}

/// Captures of 100 merchants with one refund in ten, as events in memory.
fn ledger_events(payments: u64) -> Vec<Event> {
    let mut events = contracts(100);
    events.extend(payment_events(0, payments, 100));
    events
}

/// The contracts of merchants `M000000..` (WeChat at 0.38 %, T+1).
fn contracts(merchants: u64) -> Vec<Event> {
    use ingest::event::{ContractSigned, FeeTerms, SettlementCycle};
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T08:00:00+08:00").unwrap_or_default();
    (0..merchants)
        .map(|m| {
            let mut fees = std::collections::BTreeMap::new();
            fees.insert(Channel::Wechat, FeeTerms { rate: rust_decimal::Decimal::new(38, 4), min: None, cap: None });
            Event::ContractSigned(ContractSigned {
                merchant_id: format!("M{m:06}"),
                fees,
                settlement_cycle: SettlementCycle::T1,
                at,
            })
        })
        .collect()
}

/// Captures numbered `first..first + payments` spread over `merchants`, each tenth followed by
/// a refund of half its amount.
fn payment_events(first: u64, payments: u64, merchants: u64) -> Vec<Event> {
    use ingest::event::PaymentAdjustment;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00+08:00").unwrap_or_default();
    let mut events = Vec::with_capacity(payments as usize * 11 / 10 + 1);
    for i in first..first + payments {
        let AppendRequest { events: data, .. } = capture(i);
        let Ok(Event::PaymentCaptured(mut sale)) =
            Event::decode(&data[0].event_type, data[0].schema_version, &data[0].payload)
        else {
            continue;
        };
        sale.merchant_id = format!("M{:06}", i % merchants).into();
        // A payment every 10 ms, terminals' clocks a few seconds apart: the log is nearly,
        // not exactly, in time order. A refund follows its sale at the till.
        let jitter = chrono::Duration::seconds((i % 7) as i64);
        sale.at = at + chrono::Duration::milliseconds(i as i64 * 10) - jitter;
        let refund_at = sale.at + chrono::Duration::seconds(2);
        let refund = (i % 10 == 0).then(|| PaymentAdjustment {
            txn_id: format!("{}-R1", sale.txn_id).into(),
            original_txn_id: sale.txn_id.clone(),
            merchant_id: sale.merchant_id.clone(),
            terminal_id: sale.terminal_id.clone(),
            batch_no: sale.batch_no.clone(),
            stan: sale.stan.clone(),
            channel: sale.channel,
            amount: (sale.amount / rust_decimal::Decimal::TWO).round_dp(2),
            currency: sale.currency,
            at: refund_at,
        });
        events.push(Event::PaymentCaptured(sale));
        if let Some(r) = refund {
            events.push(Event::PaymentRefunded(r));
        }
    }
    events
}

/// A store of `payments` captures (and a refund for one in ten) of 1000 merchants.
async fn payments_store(dir: &Path, payments: u64) -> Result<()> {
    let merchants = 1000;
    let store = EmbeddedStore::open(dir)?;
    append_events(&store, contracts(merchants)).await?;
    append_payments(&store, 0, payments).await
}

/// Appends captures `first..first + payments` (and their refunds) of 1000 merchants.
async fn append_payments(store: &EmbeddedStore, first: u64, payments: u64) -> Result<()> {
    let mut done = 0;
    while done < payments {
        let n = 500_000u64.min(payments - done);
        append_events(store, payment_events(first + done, n, 1000)).await?;
        done += n;
    }
    Ok(())
}

/// Appends `events`, each to its own stream, in group commits of 5000.
async fn append_events(store: &EmbeddedStore, events: Vec<Event>) -> Result<()> {
    let requests: Vec<AppendRequest> = events
        .iter()
        .map(|e| AppendRequest { stream: e.stream(), expected: ExpectedRevision::Any, events: vec![e.to_event_data()] })
        .collect();
    for chunk in requests.chunks(5000) {
        for r in store.append_many(chunk.to_vec()).await {
            r.context("append")?;
        }
    }
    Ok(())
}

/// Exporting a stored log of `payments` captures to Parquet from nothing: rows of every table
/// per second.
async fn export(dir: &Path, payments: u64, repeat: usize) -> Result<()> {
    let events_dir = dir.join("events");
    payments_store(&events_dir, payments).await?;
    let store = EmbeddedStore::open(&events_dir)?;
    let mut runs = Vec::new();
    let mut rows = 0;
    let mut files = 0;
    for run in 0..repeat {
        let out = dir.join(format!("export-{run}"));
        let start = Instant::now();
        let summary = analytics::export::export(&store, &out).await?;
        runs.push(start.elapsed().as_secs_f64());
        rows = summary.rows.values().sum::<u64>();
        files = summary.files;
        let _ = std::fs::remove_dir_all(&out);
    }
    emit(
        "export_rows_per_s",
        rows as f64 / median(runs.clone()),
        "rows/s",
        json!({"events": store.head(), "rows": rows, "files": files, "runs_seconds": runs}),
    );
    Ok(())
}

/// The named query `daily_sales` over an export of `payments` captures: DataFusion in this
/// process, then DuckDB (Python) on the same files with the same SQL, parameters as literals.
async fn groupby(dir: &Path, payments: u64, repeat: usize) -> Result<()> {
    let out = groupby_export(dir, payments).await?;
    let query = queries::get("daily_sales")?;
    let values = query.bind(&[])?;
    let (runs, groups) = time_daily_sales(&out, &analytics::sql::Engine::Local, repeat).await?;
    let ours = median(runs.clone());
    emit(
        "groupby_10m_payments_s",
        ours,
        "s",
        json!({"payments": payments, "groups": groups, "engine": "datafusion 55", "runs_seconds": runs}),
    );
    let script = format!(
        r#"
import sys, time, statistics
try:
    import duckdb
except ImportError:
    raise SystemExit(0)
con = duckdb.connect()
for table in ("payments", "adjustments"):
    con.execute("CREATE VIEW %s AS SELECT * FROM read_parquet('%s/%s/*/*.parquet', hive_partitioning = true, hive_types = {{'date': DATE}})" % (table, sys.argv[2], table))
sql = sys.argv[1]
runs = []
for _ in range({repeat}):
    t = time.perf_counter()
    rows = con.execute(sql).fetchall()
    runs.append(time.perf_counter() - t)
print("duckdb=%f groups=%d" % (statistics.median(runs), len(rows)))
"#
    );
    let sql = query.sql_with_literals(&values);
    let root = out.display().to_string();
    match std::process::Command::new("python3").args(["-c", &script, &sql, &root]).output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let field = |key: &str| {
                text.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<f64>().ok())
            };
            match (field("duckdb"), field("groups")) {
                (Some(secs), Some(peer_groups)) => {
                    emit("peer_duckdb_groupby_10m_payments_s", secs, "s", json!({"groups": peer_groups}));
                    emit("groupby_10m_vs_duckdb_ratio", ours / secs, "x", json!({"payments": payments}));
                    if peer_groups as usize != groups {
                        anyhow::bail!("DuckDB found {peer_groups} groups, DataFusion {groups}");
                    }
                }
                _ => eprintln!("peer skipped: duckdb is not installed for python3"),
            }
        }
        Ok(o) => eprintln!("peer failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => eprintln!("peer skipped: python3 is not available"),
    }
    Ok(())
}

/// The export of `payments` captures (and their refunds) that the group-by benchmarks query.
async fn groupby_export(dir: &Path, payments: u64) -> Result<std::path::PathBuf> {
    let events_dir = dir.join("events");
    payments_store(&events_dir, payments).await?;
    let out = dir.join("export");
    {
        let store = EmbeddedStore::open(&events_dir)?;
        analytics::export::export(&store, &out).await?;
    }
    let _ = std::fs::remove_dir_all(&events_dir);
    Ok(out)
}

/// Seconds each of `repeat` runs of the named query `daily_sales` over `export` on `engine`
/// took, and the groups it found.
async fn time_daily_sales(export: &Path, engine: &analytics::sql::Engine, repeat: usize) -> Result<(Vec<f64>, usize)> {
    use futures::StreamExt;
    let query = queries::get("daily_sales")?;
    let values = query.bind(&[])?;
    let session = analytics::sql::Session::open_on(export, analytics::sql::Limits::default(), true, engine).await?;
    let mut runs = Vec::new();
    let mut groups = 0;
    for _ in 0..repeat {
        let start = Instant::now();
        let mut stream = session.named_stream(&query, &values).await?;
        groups = 0;
        while let Some(batch) = stream.next().await {
            groups += batch?.num_rows();
        }
        runs.push(start.elapsed().as_secs_f64());
    }
    Ok((runs, groups))
}

/// A `posledger cluster` node (this executable, in a child process), killed when dropped.
struct ClusterNode(std::process::Child);

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ClusterNode {
    /// A scheduler on a free loopback port, and its address.
    fn scheduler() -> Result<(ClusterNode, analytics::sql::cluster::ClusterUrl)> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["posledger", "cluster", "scheduler", "--bind", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting posledger cluster scheduler")?;
        let stdout = child.stdout.take().context("the scheduler's output")?;
        let node = ClusterNode(child);
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let url = line.trim().strip_prefix("scheduler listening on ").context("the scheduler's address")?.parse()?;
        Ok((node, url))
    }

    /// An executor of two slots for the scheduler at `url`, its shuffle files under `work`.
    fn executor(url: &analytics::sql::cluster::ClusterUrl, work: &Path) -> Result<ClusterNode> {
        let port = loop {
            let first = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = first.local_addr()?.port();
            if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["posledger", "cluster", "executor", "--slots", "2", "--scheduler", &url.to_string()])
            .args(["--port", &port.to_string()])
            .arg("--work-dir")
            .arg(work)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting posledger cluster executor")?;
        Ok(ClusterNode(child))
    }
}

/// `daily_sales` over the group-by export on a loopback cluster of one, then two executors,
/// beside the local run in the same minute. The first run on a cluster waits for its executors
/// to register and is not timed.
async fn cluster_groupby(dir: &Path, payments: u64, repeat: usize) -> Result<()> {
    let out = groupby_export(dir, payments).await?;
    let (local_runs, local_groups) = time_daily_sales(&out, &analytics::sql::Engine::Local, repeat).await?;
    let local = median(local_runs.clone());
    emit("cluster_local_groupby_10m_s", local, "s", json!({"payments": payments, "runs_seconds": local_runs}));
    let (_scheduler, url) = ClusterNode::scheduler()?;
    let engine = analytics::sql::Engine::Cluster(url.clone());
    let mut executors = Vec::new();
    for (n, name) in [(1, "cluster_groupby_10m_s"), (2, "cluster_groupby_10m_2_executors_s")] {
        executors.push(ClusterNode::executor(&url, &dir.join(format!("work-{n}")))?);
        // Registered when a query answers; with a second executor, once both have beaten.
        let ready = Instant::now();
        let answered = || async {
            let once = time_daily_sales(&out, &engine, 1);
            matches!(tokio::time::timeout(std::time::Duration::from_secs(30), once).await, Ok(Ok(_)))
        };
        while !answered().await {
            anyhow::ensure!(ready.elapsed() < std::time::Duration::from_secs(60), "the cluster never answered");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let (runs, groups) = time_daily_sales(&out, &engine, repeat).await?;
        anyhow::ensure!(groups == local_groups, "the cluster found {groups} groups, the local run {local_groups}");
        let secs = median(runs.clone());
        emit(
            name,
            secs,
            "s",
            json!({"payments": payments, "executors": n, "slots_each": 2, "groups": groups, "runs_seconds": runs}),
        );
        emit(&format!("{name}_vs_local_ratio"), secs / local, "x", json!({"executors": n}));
    }
    Ok(())
}

/// One POST on its own connection; the answer's body.
fn http_post(addr: std::net::SocketAddr, path: &str, token: &str, body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    anyhow::ensure!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw[..raw.len().min(300)]));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no head")?;
    Ok(raw[split + 4..].to_vec())
}

/// An admin key for the data directory at `data` (no process holds it).
async fn admin_key(data: &Path) -> Result<String> {
    let app = app::App::open(app::DataDir::new(data), Box::new(|w| eprintln!("warning: {w}")))
        .map_err(|f| anyhow::anyhow!(f.message))?;
    let token = app.create_key(app::keys::Role::Admin, None).map_err(|f| anyhow::anyhow!(f.message))?.token;
    app.close().await;
    Ok(token)
}

/// A data directory for a server: the store holding `admin`'s merchants and terminals.
async fn server_data(data: &Path, admin: &[u8]) -> Result<()> {
    let store = Arc::new(EmbeddedStore::open(data.join("events"))?);
    let mut ingestor = Ingestor::open(store, None).await?;
    ingestor.ingest_reader(admin, InputKind::Admin, |_, _| {}).await?;
    Ok(())
}

/// The worst SQL an analyst key may send (each bounded by the sandbox or its worker): text
/// over the per-query budget, a list of four billion numbers, a cross join of wide strings,
/// padding to 2 GiB, and columns of sixty times a 32 MiB string that only the worker's memory
/// limit stops.
const HOSTILE_SQL: &[&str] = &[
    "SELECT repeat('a', 2147483647) AS c1, repeat('b', 2147483647) AS c2, repeat('c', 2147483647) AS c3",
    "SELECT range(1, 4000000000) AS r",
    "SELECT max(length(a.v || b.v)) AS n FROM (SELECT repeat('x', 100000000) AS v FROM payments) a \
     CROSS JOIN (SELECT repeat('y', 100000000) AS v FROM payments) b",
    "SELECT lpad('x', 2147483647, 'y') AS a, rpad('x', 2147483647, 'y') AS b",
    "SELECT concat(s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, \
     s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, '1') AS c1, \
     concat(s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, \
     s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, '2') AS c2, \
     concat(s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, \
     s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, '3') AS c3 \
     FROM (SELECT repeat('x', 33554432) AS s) t",
];

/// `wrk -t2 -c64 -d5s` on `url` with `token`: requests per second and the 99th percentile
/// latency in ms; `None` when wrk is not installed.
fn wrk_balance(url: &str, token: &str) -> Result<Option<(f64, f64)>> {
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c64", "-d5s", "--latency", "-H", &format!("Authorization: Bearer {token}"), url])
        .output();
    let Ok(o) = out.as_ref().map_err(drop).and_then(|o| if o.status.success() { Ok(o) } else { Err(()) }) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in {text}"))?;
    let p99 = text.lines().find_map(|l| l.trim().strip_prefix("99%")).map(|v| v.trim().to_owned());
    let value = |v: &str, suffix: &str, scale: f64| {
        v.strip_suffix(suffix).and_then(|n| n.parse::<f64>().ok()).map(|n| n * scale)
    };
    let ms = p99
        .and_then(|v| value(&v, "us", 0.001).or_else(|| value(&v, "ms", 1.0)).or_else(|| value(&v, "s", 1000.0)))
        .with_context(|| format!("no 99% latency in {text}"))?;
    Ok(Some((rps, ms)))
}

/// One POST on its own connection; the answer's status.
fn http_status(addr: std::net::SocketAddr, path: &str, token: &str, body: &[u8]) -> Result<u16> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let status = String::from_utf8_lossy(&raw[..raw.len().min(16)]).split_whitespace().nth(1).map(str::to_owned);
    status.and_then(|s| s.parse().ok()).context("no status line")
}

/// The HTTP API: balance reads under wrk, and batched ingest over HTTP.
async fn http(dir: &Path, records: u64, repeat: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let shape = Shape { merchants: 1000, terminals_per_merchant: 2, seed: 7 };
    let mut admin = Vec::new();
    generate::write_admin(&mut admin, shape)?;
    let mut feed = Vec::new();
    generate::write_feed(&mut feed, shape, records)?;
    let mut runs = Vec::new();
    let mut reads = Vec::new();
    let mut p99 = Vec::new();
    let mut catch_up = Vec::new();
    let mut p99_attacked = Vec::new();
    let mut attacks = Vec::new();
    let mut p99_backup = Vec::new();
    let mut backups_taken = Vec::new();
    let mut accepted = 0;
    // Analytics run in worker processes of the posledger binary beside this one, as `serve`
    // runs them; without it the attack is not run (a query would run in this process).
    let worker = std::env::current_exe()?.parent().map(|d| d.join("posledger")).filter(|p| p.is_file());
    if worker.is_none() {
        eprintln!("no posledger binary beside this one: http_balance_p99_under_sql_attack_ms skipped");
    }
    for run in 0..repeat {
        let data = dir.join(format!("data-{run}"));
        server_data(&data, &admin).await?;
        let mut app = app::App::open(app::DataDir::new(&data), Box::new(|w| eprintln!("warning: {w}")))
            .map_err(|f| anyhow::anyhow!(f.message))?;
        if let Some(exe) = &worker {
            app = app.with_analytics_worker(exe.clone());
        }
        app.open_all().await.map_err(|f| anyhow::anyhow!(f.message))?;
        let key = |role| app.create_key(role, None).map_err(|f| anyhow::anyhow!(f.message)).map(|k| k.token);
        let admin_key = key(app::keys::Role::Admin)?;
        let finance_key = key(app::keys::Role::Finance)?;
        let analyst_key = key(app::keys::Role::Analyst)?;
        let app = Arc::new(app);
        let state = api::http::State::new(app.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::http::listen::serve(state, listener, async {
            let _ = stopped.await;
        }));
        // The books follow the log beside the requests, as `posledger serve` runs them.
        let follower = tokio::spawn({
            let app = app.clone();
            async move { app.follow_books().await }
        });
        // Ingest: batches of 1000 lines, alternately by two clients, in the feed's order.
        let lines: Vec<&[u8]> = feed.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let batches: Vec<Vec<u8>> = lines.chunks(1000).map(|c| c.join(&b'\n')).collect();
        let start = Instant::now();
        let counted = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|w| {
                    let (batches, token) = (&batches, &admin_key);
                    scope.spawn(move || -> Result<u64> {
                        let mut accepted = 0;
                        for body in batches.iter().skip(w).step_by(2) {
                            let answer: Value =
                                serde_json::from_slice(&http_post(addr, "/v1/transactions", token, body)?)?;
                            accepted += answer["accepted"].as_u64().unwrap_or(0);
                        }
                        Ok(accepted)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().map_err(|_| anyhow::anyhow!("client panicked"))?).sum::<Result<u64>>()
        })?;
        runs.push(start.elapsed().as_secs_f64());
        accepted = counted;
        // Balance reads under wrk, once the books have caught up with the ingest above (the
        // first read waits for whatever of the 200k records' events the books' follower has
        // not applied yet; that is timed on its own, so the read figures are the steady state).
        let url = format!("http://{addr}/v1/balances/liabilities:merchant:M000001:payable");
        let warm = Instant::now();
        {
            use std::io::Read;
            let mut stream = std::net::TcpStream::connect(addr)?;
            let head = format!(
                "GET /v1/balances/liabilities:merchant:M000001:payable HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {finance_key}\r\n\r\n"
            );
            stream.write_all(head.as_bytes())?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw)?;
            anyhow::ensure!(raw.starts_with(b"HTTP/1.1 200"), "the first balance read failed");
        }
        catch_up.push(warm.elapsed().as_secs_f64() * 1000.0);
        match wrk_balance(&url, &finance_key)? {
            Some((rps, ms)) => {
                reads.push(rps);
                p99.push(ms);
                // The same reads while an analyst key sends the worst SQL in a loop.
                if worker.is_some() {
                    http_post(addr, "/v1/export", &admin_key, b"")?;
                    let stop_attack = std::sync::atomic::AtomicBool::new(false);
                    let (attacked, answers) = std::thread::scope(|scope| -> Result<_> {
                        let attacker = scope.spawn(|| {
                            let mut answers = std::collections::BTreeMap::<u16, u64>::new();
                            while !stop_attack.load(std::sync::atomic::Ordering::Relaxed) {
                                for sql in HOSTILE_SQL {
                                    let status = http_status(addr, "/v1/sql", &analyst_key, sql.as_bytes());
                                    *answers.entry(status.unwrap_or(0)).or_default() += 1;
                                }
                            }
                            answers
                        });
                        let attacked = wrk_balance(&url, &finance_key);
                        stop_attack.store(true, std::sync::atomic::Ordering::Relaxed);
                        let answers = attacker.join().map_err(|_| anyhow::anyhow!("attacker panicked"))?;
                        Ok((attacked?, answers))
                    })?;
                    if let Some((_, ms)) = attacked {
                        p99_attacked.push(ms);
                    }
                    attacks.push(json!(answers));
                }
                // The same reads while backups of the whole directory run back to back.
                let stop_backups = std::sync::atomic::AtomicBool::new(false);
                let runtime = tokio::runtime::Handle::current();
                let (during, taken) = std::thread::scope(|scope| -> Result<_> {
                    let backups = scope.spawn(|| -> Result<u64> {
                        let mut taken = 0;
                        while !stop_backups.load(std::sync::atomic::Ordering::Relaxed) {
                            let to = dir.join(format!("backup-{run}-{taken}"));
                            runtime.block_on(app.backup(&to, &mut |_| {})).map_err(|f| anyhow::anyhow!(f.message))?;
                            std::fs::remove_dir_all(&to)?;
                            taken += 1;
                        }
                        Ok(taken)
                    });
                    let during = wrk_balance(&url, &finance_key);
                    stop_backups.store(true, std::sync::atomic::Ordering::Relaxed);
                    let taken = backups.join().map_err(|_| anyhow::anyhow!("backups panicked"))??;
                    Ok((during?, taken))
                })?;
                if let Some((_, ms)) = during {
                    p99_backup.push(ms);
                }
                backups_taken.push(taken);
            }
            None => eprintln!("wrk is not installed: balance reads skipped (apt-get install wrk)"),
        }
        let _ = stop.send(());
        let _ = server.await;
        follower.abort();
        let _ = std::fs::remove_dir_all(&data);
    }
    emit(
        "http_ingest_records_per_s",
        records as f64 / median(runs.clone()),
        "records/s",
        json!({"records": records, "accepted": accepted, "batch": 1000, "clients": 2, "runs_seconds": runs}),
    );
    if !reads.is_empty() {
        emit(
            "http_balance_reads_per_s",
            median(reads.clone()),
            "requests/s",
            json!({"tool": "wrk -t2 -c64 -d5s", "runs": reads, "note": "wrk shares the 2 cores with the server"}),
        );
        emit("http_balance_p99_ms", median(p99.clone()), "ms", json!({"runs": p99}));
    }
    if !p99_attacked.is_empty() {
        emit(
            "http_balance_p99_under_sql_attack_ms",
            median(p99_attacked.clone()),
            "ms",
            json!({"runs": p99_attacked, "quiet_p99_ms": p99, "sql_answers_by_status": attacks,
                "attack": "one analyst connection sending HOSTILE_SQL in a loop, analytics in posledger analytics-worker"}),
        );
    }
    if !p99_backup.is_empty() {
        emit(
            "http_balance_p99_during_backup_ms",
            median(p99_backup.clone()),
            "ms",
            json!({"runs": p99_backup, "quiet_p99_ms": p99, "backups_during_each_run": backups_taken,
                "backups": "posledger backup of the whole directory into a new one, back to back"}),
        );
    }
    emit(
        "http_first_read_after_ingest_ms",
        median(catch_up.clone()),
        "ms",
        json!({"records": records, "runs": catch_up, "note": "the books applying what their follower had not yet"}),
    );
    Ok(())
}

/// The paced rate of `http_sustained_ingest_rss_spread_pct`.
const SUSTAINED_RECORDS_PER_S: u64 = 10_000;
/// How often the server's resident memory is sampled.
const SUSTAINED_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A `Write` that hands on whole batches of 1000 feed lines; it fails once the receiver is
/// gone, which stops the generator.
struct FeedBatches {
    to: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    scanned: usize,
    lines: usize,
}

impl Write for FeedBatches {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            self.scanned += i + 1;
            self.lines += 1;
            if self.lines == 1000 {
                let rest = self.buf.split_off(self.scanned);
                let batch = std::mem::replace(&mut self.buf, rest);
                self.to.send(batch).map_err(|_| std::io::Error::other("nobody takes batches any more"))?;
                (self.scanned, self.lines) = (0, 0);
            }
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Milliseconds a `posledger balance` process takes from start to exit, `runs` times.
fn time_balance_commands(data: &Path, runs: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = std::process::Command::new(std::env::current_exe()?)
            .arg("posledger")
            .arg("--data-dir")
            .arg(data)
            .args(["balance", "liabilities:merchant:M000001:payable", "--format", "json"])
            .output()?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(out.status.success(), "balance failed: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(times)
}

/// `posledger balance` while `posledger serve` takes 10k records/s, beside the same command with
/// the server idle and with no server at all.
/// `posledger serve` (this executable, in a child process) on a data directory holding a
/// generated shape's merchants and terminals, listening on a free port; and an admin key.
struct ChildServer {
    child: std::process::Child,
    data: std::path::PathBuf,
    addr: std::net::SocketAddr,
    token: String,
}

impl ChildServer {
    async fn start(dir: &Path, shape: Shape) -> Result<ChildServer> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join("data");
        let mut admin = Vec::new();
        generate::write_admin(&mut admin, shape)?;
        server_data(&data, &admin).await?;
        let token = admin_key(&data).await?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("posledger")
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--addr", &addr.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting posledger serve")?;
        let server = ChildServer { child, data, addr, token };
        let ready = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() || !server.data.join("posledger.sock").exists() {
            anyhow::ensure!(ready.elapsed() < std::time::Duration::from_secs(60), "the server did not start listening");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(server)
    }

    /// SIGTERM: the server finishes what is in flight and exits; it must exit cleanly.
    fn stop(mut self) -> Result<()> {
        let signalled = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        if !signalled.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "posledger serve exited with {status}");
        Ok(())
    }
}

async fn cli_balance_while_serving(dir: &Path, runs: usize) -> Result<()> {
    use std::time::Duration;
    let shape = Shape { merchants: 1000, terminals_per_merchant: 2, seed: 13 };
    let server = ChildServer::start(dir, shape).await?;
    let (data, addr, token) = (server.data.clone(), server.addr, server.token.clone());
    let result = tokio::task::block_in_place(|| -> Result<(Vec<f64>, Vec<f64>, u64)> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feeder = {
            let (stop, token) = (stop.clone(), token.clone());
            std::thread::spawn(move || -> Result<u64> {
                let (to, batches) = std::sync::mpsc::sync_channel(8);
                let generator = std::thread::spawn(move || {
                    let mut out = FeedBatches { to, buf: Vec::new(), scanned: 0, lines: 0 };
                    let _ = generate::write_feed(&mut out, shape, u64::MAX);
                });
                let interval = Duration::from_secs_f64(1000.0 / SUSTAINED_RECORDS_PER_S as f64);
                let (start, mut sent, mut accepted) = (Instant::now(), 0u32, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    if let Some(wait) = (interval * sent).checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let body = batches.recv().context("the feed generator stopped")?;
                    let answer: Value = serde_json::from_slice(&http_post(addr, "/v1/transactions", &token, &body)?)?;
                    accepted += answer["accepted"].as_u64().unwrap_or(0);
                    sent += 1;
                }
                drop(batches);
                let _ = generator.join();
                Ok(accepted)
            })
        };
        // Let the ingest settle into its pace first.
        std::thread::sleep(Duration::from_secs(3));
        let busy = time_balance_commands(&data, runs)?;
        stop.store(true, std::sync::atomic::Ordering::Release);
        let accepted = feeder.join().map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
        let idle = time_balance_commands(&data, runs.div_ceil(3))?;
        Ok((busy, idle, accepted))
    });
    let stopped = server.stop();
    let (busy, idle, accepted) = result?;
    stopped?;
    let alone = time_balance_commands(&data, runs.div_ceil(3))?;
    let _ = std::fs::remove_dir_all(&data);
    let max = |v: &[f64]| v.iter().copied().fold(0f64, f64::max);
    let (busy_max, idle_ms, alone_ms) = (max(&busy), median(idle), median(alone));
    emit(
        "cli_balance_while_serving_ms",
        median(busy),
        "ms",
        json!({"runs": runs, "ingest_records_per_s": SUSTAINED_RECORDS_PER_S, "records_accepted": accepted,
               "max_ms": busy_max}),
    );
    emit("cli_balance_idle_server_ms", idle_ms, "ms", json!({}));
    emit("cli_balance_no_server_ms", alone_ms, "ms", json!({"records_in_log": accepted}));
    Ok(())
}

/// Resident memory of process `pid`, in MiB.
fn process_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// `posledger serve` (this executable, in a child process) under a steady ingest of `rate`
/// records/s for `seconds`: how much its resident memory moves once warmed up.
async fn http_sustained(dir: &Path, seconds: u64, rate: u64) -> Result<()> {
    use std::time::Duration;
    let shape = Shape { merchants: 1000, terminals_per_merchant: 2, seed: 11 };
    let server = ChildServer::start(dir, shape).await?;
    let (data, addr, token, pid) = (server.data.clone(), server.addr, server.token.clone(), server.child.id());
    let result = tokio::task::block_in_place(|| -> Result<Value> {
        let (to, batches) = std::sync::mpsc::sync_channel(8);
        let generator = std::thread::spawn(move || {
            let mut out = FeedBatches { to, buf: Vec::new(), scanned: 0, lines: 0 };
            let _ = generate::write_feed(&mut out, shape, u64::MAX);
        });
        let start = Instant::now();
        let run = Duration::from_secs(seconds);
        let interval = Duration::from_secs_f64(1000.0 / rate as f64);
        let (mut posted, mut accepted, mut sent) = (0u64, 0u64, 0u32);
        let mut samples: Vec<(f64, f64)> = Vec::new();
        let mut next_sample = Duration::ZERO;
        while start.elapsed() < run {
            let due = interval * sent;
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let body = batches.recv().context("the feed generator stopped")?;
            let answer: Value = serde_json::from_slice(&http_post(addr, "/v1/transactions", &token, &body)?)?;
            accepted += answer["accepted"].as_u64().unwrap_or(0);
            posted += 1000;
            sent += 1;
            if start.elapsed() >= next_sample {
                let mib = process_rss_mib(pid).context("reading the server's memory")?;
                samples.push((start.elapsed().as_secs_f64(), mib));
                next_sample += SUSTAINED_SAMPLE_EVERY;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        drop(batches);
        let _ = generator.join();
        // Warm-up: the index tables fill to their fixed size (about 46 s at 10k records/s).
        let warm = (run.as_secs_f64() / 10.0).max(60.0);
        let steady: Vec<f64> = samples.iter().filter(|(t, _)| *t >= warm).map(|(_, m)| *m).collect();
        anyhow::ensure!(steady.len() >= 2, "too few memory samples");
        let (min, max) = steady.iter().fold((f64::MAX, 0f64), |(lo, hi), &m| (lo.min(m), hi.max(m)));
        let mean = steady.iter().sum::<f64>() / steady.len() as f64;
        Ok(json!({
            "spread_pct": (max - min) / min * 100.0,
            "mean_mib": mean,
            "farthest_from_mean_pct": (max - mean).max(mean - min) / mean * 100.0,
            "rss_after_warmup_mib": steady[0],
            "rss_end_mib": steady[steady.len() - 1],
            "rss_min_mib": min,
            "rss_max_mib": max,
            "records_posted": posted,
            "records_accepted": accepted,
            "records_per_s": posted as f64 / elapsed,
            "seconds": seconds,
            "samples_every_30s_mib": samples.iter().step_by(6).map(|(_, m)| (m * 10.0).round() / 10.0).collect::<Vec<_>>(),
        }))
    });
    let stopped = server.stop();
    let figures = result?;
    stopped?;
    let _ = std::fs::remove_dir_all(&data);
    emit(
        "http_sustained_ingest_rss_spread_pct",
        figures["spread_pct"].as_f64().unwrap_or(f64::NAN),
        "%",
        json!({"rate_records_per_s": rate, "batch": 1000, "sample_every_s": SUSTAINED_SAMPLE_EVERY.as_secs(), "figures": figures}),
    );
    Ok(())
}

async fn backup_restore(dir: &Path, payments: u64, repeat: usize) -> Result<()> {
    let data = app::DataDir::new(dir.join("data"));
    payments_store(&data.events(), payments).await?;
    let app = app::App::open(data.clone(), Box::new(|w| eprintln!("warning: {w}")))
        .map_err(|f| anyhow::anyhow!(f.message))?;
    let events = app.head();
    let segments: Vec<std::path::PathBuf> = {
        let mut s: Vec<_> = std::fs::read_dir(data.events())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        s.sort();
        s
    };
    let (mut backups, mut restores, mut logs, mut copies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for run in 0..repeat {
        let to = dir.join(format!("backup-{run}"));
        let start = Instant::now();
        let report = app.backup(&to, &mut |_| {}).await.map_err(|f| anyhow::anyhow!(f.message))?;
        backups.push(start.elapsed().as_secs_f64());
        bytes = report.bytes_copied;
        anyhow::ensure!(report.events == events, "the backup holds every event");
        // The same segment files copied by cp and made durable by sync, in the same run.
        let cp_to = dir.join(format!("cp-{run}"));
        std::fs::create_dir_all(&cp_to)?;
        let start = Instant::now();
        let copied = std::process::Command::new("cp").args(&segments).arg(&cp_to).status()?;
        let synced = std::process::Command::new("sync").arg("-f").arg(&cp_to).status()?;
        anyhow::ensure!(copied.success() && synced.success(), "cp and sync ran");
        copies.push(start.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&cp_to)?;
        let target = app::DataDir::new(dir.join(format!("restored-{run}")));
        let start = Instant::now();
        let mut log_done = None;
        let restored = app::backup::restore(&to, None, app::AsOf::Now, &target, &mut |p| {
            if p.step == "books" && log_done.is_none() {
                log_done = Some(start.elapsed().as_secs_f64());
            }
        })
        .await
        .map_err(|f| anyhow::anyhow!(f.message))?;
        restores.push(start.elapsed().as_secs_f64());
        logs.extend(log_done);
        anyhow::ensure!(restored.head_hash == report.head_hash, "the restored log ends in the backup's head");
        std::fs::remove_dir_all(&to)?;
        std::fs::remove_dir_all(target.root())?;
    }
    app.close().await;
    let mb = bytes as f64 / 1e6;
    let cp = median(copies.clone());
    emit(
        "backup_10m_events_s",
        median(backups.clone()),
        "s",
        json!({"events": events, "log_bytes": bytes, "mb_per_s": mb / median(backups.clone()),
               "cp_sync_seconds": cp, "cp_sync_mb_per_s": mb / cp, "runs_seconds": backups, "cp_runs_seconds": copies}),
    );
    emit(
        "restore_10m_events_s",
        median(restores.clone()),
        "s",
        json!({"events": events, "log_bytes": bytes, "cp_sync_mb_per_s": mb / cp, "runs_seconds": restores,
               "note": "checks every piece, walks the chain, then rebuilds the books and the write model"}),
    );
    if !logs.is_empty() {
        emit(
            "restore_10m_log_s",
            median(logs.clone()),
            "s",
            json!({"events": events, "mb_per_s": mb / median(logs.clone()), "cp_sync_mb_per_s": mb / cp, "runs_seconds": logs}),
        );
    }
    Ok(())
}

async fn replay(dir: &Path, payments: u64, repeat: usize) -> Result<()> {
    let merchants = 1000;
    let data = app::DataDir::new(dir);
    payments_store(&data.events(), payments).await?;
    let store = EmbeddedStore::open(data.events())?;
    let events = store.head();
    let mut runs = Vec::new();
    let mut rss = Vec::new();
    let mut postings = 0;
    let mut parts = json!({});
    let before = rss_mib().unwrap_or(f64::NAN);
    let mut last = None;
    for _ in 0..repeat {
        // The previous run's books go before the next run's peak is measured.
        drop(last.take());
        reset_peak_rss();
        let start = Instant::now();
        let books = ledger::replay(&store, u64::MAX).await?;
        runs.push(start.elapsed().as_secs_f64());
        rss.push(peak_rss_mib().unwrap_or(f64::NAN));
        postings = books.postings();
        for (part, bytes) in books.memory() {
            parts[part] = json!((bytes as f64 / 1048576.0).round());
        }
        last = Some(books);
    }
    emit(
        "replay_10m_events_s",
        median(runs.clone()),
        "s",
        json!({"events": events, "payments": payments, "merchants": merchants, "postings": postings,
               "runs_seconds": runs}),
    );
    emit(
        "replay_peak_rss_mib",
        median(rss.clone()),
        "MiB",
        json!({"payments": payments, "runs_mib": rss, "rss_before_replay_mib": before.round(),
               "books_mib_by_part": parts}),
    );
    let books = last.context("at least one replay ran")?;
    as_of_queries(&books)?;
    // The checkpoint of these books: written, then read back and checked against the log.
    let path = data.ledger_checkpoint();
    let start = Instant::now();
    ledger::save_books(&store, &books, &path, None).await?;
    let save = start.elapsed().as_secs_f64();
    let bytes = checkpoint_bytes(&data)?;
    let mut runs = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        let (resumed, opened, _) = ledger::open_books(&store, Some(&path)).await?;
        runs.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(opened == ledger::Opened::Resumed(events), "resumed from the checkpoint: {opened:?}");
        anyhow::ensure!(resumed.position() == events);
    }
    emit(
        "checkpoint_resume_s",
        median(runs.clone()),
        "s",
        json!({"events": events, "checkpoint_bytes": bytes, "save_seconds": save, "runs_seconds": runs}),
    );
    drop(books);
    // A day more (a thirtieth of the history): resumed, caught up and saved again.
    let day = (payments / 30).max(1);
    append_payments(&store, payments, day).await?;
    let (books, _, mark) = ledger::open_books(&store, Some(&path)).await?;
    let start = Instant::now();
    ledger::save_books(&store, &books, &path, mark.as_ref()).await?;
    let day_save = start.elapsed().as_secs_f64();
    let (events_after, day_bytes) = (store.head(), checkpoint_bytes(&data)?);
    drop((books, store));
    // `posledger balance` in its own process, start to exit, on the directory (no server).
    let cli = time_balance_commands(dir, (repeat * 3).max(5))?;
    emit(
        "checkpoint_save_after_day_s",
        day_save,
        "s",
        json!({"events_added": events_after - events, "whole_save_seconds": save, "checkpoint_bytes": day_bytes}),
    );
    emit("cli_balance_10m_events_ms", median(cli.clone()), "ms", json!({"events": events_after, "runs_ms": cli}));
    Ok(())
}

/// Bytes of the books' checkpoint files in a data directory.
fn checkpoint_bytes(data: &app::DataDir) -> Result<u64> {
    let name = data.ledger_checkpoint();
    let prefix = name.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let mut bytes = 0;
    for entry in std::fs::read_dir(data.root())? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            bytes += entry.metadata()?.len();
        }
    }
    Ok(bytes)
}

/// As-of balances over the replayed books: by position (a merchant's payable and the busiest
/// account, clearing) and by business time.
fn as_of_queries(books: &ledger::Projection) -> Result<()> {
    let events = books.position();
    let accounts = [ledger::entry::Account::payable("M000007"), ledger::entry::Account::clearing(Channel::Wechat)];
    let n = 10_000u64;
    let start = Instant::now();
    let mut check = rust_decimal::Decimal::ZERO;
    for k in 0..n {
        check += books.balances().balance(&accounts[(k % 2) as usize], Currency::Cny, (k * 7919) % events);
    }
    let per_query_ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    emit(
        "as_of_balance_ms",
        per_query_ms,
        "ms",
        json!({"queries": n, "events": events, "postings": books.postings(), "checksum": check.to_string()}),
    );
    let times = books.timeline().times();
    let (first, last) = (times.iter().min().copied().unwrap_or(0), times.iter().max().copied().unwrap_or(0));
    let n = 1_000i64;
    let start = Instant::now();
    let mut check = rust_decimal::Decimal::ZERO;
    for k in 0..n {
        let t = first + (last - first) / n * k;
        check += books.balance_at_time(&accounts[(k % 2) as usize], Currency::Cny, t);
    }
    let per_query_ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    emit(
        "as_of_time_balance_ms",
        per_query_ms,
        "ms",
        json!({"queries": n, "events": events, "checksum": check.to_string()}),
    );
    Ok(())
}

fn projection(dir: &Path, payments: u64, repeat: usize) -> Result<()> {
    let events = ledger_events(payments);
    let mut runs = Vec::new();
    let mut postings = 0usize;
    for _ in 0..repeat {
        let mut p = ledger::Projection::default();
        postings = 0;
        let start = Instant::now();
        for (i, e) in events.iter().enumerate() {
            if let Some(entry) = p.apply(i as u64, e)? {
                postings += entry.postings().len();
            }
        }
        runs.push(start.elapsed().as_secs_f64());
        p.check_trial_balance()?;
    }
    let secs = median(runs.clone());
    emit(
        "projection_postings_per_s",
        postings as f64 / secs,
        "postings/s",
        json!({"events": events.len(), "postings": postings, "runs_seconds": runs}),
    );
    // Balances of every account over the first million postings, from nothing.
    let million = events.len().min(340_000);
    let mut runs = Vec::new();
    for _ in 0..repeat {
        let mut p = ledger::Projection::default();
        let start = Instant::now();
        for (i, e) in events[..million].iter().enumerate() {
            p.apply(i as u64, e)?;
        }
        let _ = p.balances().trial_balance(u64::MAX);
        runs.push(start.elapsed().as_secs_f64());
    }
    let ours = median(runs.clone());
    emit("balances_1m_postings_s", ours, "s", json!({"events": million, "runs_seconds": runs}));
    // The peer on the same postings: ledger-cli's `bal` over our journal of the first million.
    if std::process::Command::new("ledger").arg("--version").output().is_ok() {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("books.ledger");
        {
            let mut out = BufWriter::new(std::fs::File::create(&path)?);
            let mut journal = ledger::journal::JournalWriter::new(ledger::journal::JournalFormat::Ledger);
            let mut p = ledger::Projection::default();
            for (i, e) in events[..million].iter().enumerate() {
                if let Some(entry) = p.apply(i as u64, e)? {
                    journal.write(&mut out, e, &entry)?;
                }
            }
            out.flush()?;
        }
        let start = Instant::now();
        let status = std::process::Command::new("ledger")
            .args(["-f", &path.to_string_lossy(), "bal", "--flat"])
            .stdout(std::process::Stdio::null())
            .status()?;
        let theirs = start.elapsed().as_secs_f64();
        if status.success() {
            emit("peer_ledger_cli_bal_1m_postings_s", theirs, "s", json!({"events": million}));
            emit("balances_1m_postings_vs_ledger_cli_ratio", theirs / ours, "x", json!({"events": million}));
        }
    } else {
        eprintln!("peer skipped: ledger-cli is not installed");
    }
    Ok(())
}

/// `n` of our payments and the statement lines for them: every 1000th line's amount is off,
/// every 1000th payment (another) is missing from the statement, every 1000th line repeats,
/// and every 2000th line is unknown to us.
fn recon_inputs(n: u64) -> (Vec<ledger::recon::Item>, Vec<ingest::statement::StatementLine>) {
    use ingest::statement::{LineKind, StatementLine};
    let day = chrono::DateTime::parse_from_rfc3339("2026-11-24T00:00:00+08:00").unwrap_or_default();
    let mut items = Vec::with_capacity(n as usize);
    let mut lines = Vec::with_capacity(n as usize + n as usize / 500);
    for i in 0..n {
        let amount = rust_decimal::Decimal::new(100 + (i % 50_000) as i64, 2);
        let item = ledger::recon::Item {
            kind: LineKind::Payment,
            txn_id: format!("M{:06}-20261124-{i:09}", i % 1000).into(),
            channel_txn_id: Some(format!("42000{i:023}").into()),
            channel: Channel::Wechat,
            amount,
            currency: ingest::money::Currency::Cny,
            // Spread over the day, none near the cut-off.
            at: day + chrono::Duration::milliseconds((i * 80_000_000 / n.max(1)) as i64),
            cancelled: false,
        };
        if i % 1000 != 7 {
            let mut line = StatementLine {
                line: lines.len() as u64 + 2,
                kind: LineKind::Payment,
                txn_id: item.txn_id.to_string(),
                original_txn_id: None,
                channel_txn_id: item.channel_txn_id.as_deref().unwrap_or_default().to_owned(),
                amount,
                fee: amount * rust_decimal::Decimal::new(25, 4),
                at: None,
                currency: ingest::money::Currency::Cny,
            };
            if i % 1000 == 3 {
                line.amount += rust_decimal::Decimal::new(1, 2);
            }
            if i % 1000 == 5 {
                lines.push(line.clone());
            }
            if i % 2000 == 11 {
                let mut stranger = line.clone();
                stranger.channel_txn_id = format!("99999{i:023}");
                stranger.txn_id = format!("X-{i}");
                lines.push(stranger);
            }
            lines.push(line);
        }
        items.push(item);
    }
    (items, lines)
}

fn reconcile(dir: &Path, n: u64, repeat: usize) -> Result<()> {
    let (items, lines) = recon_inputs(n);
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).context("date")?;
    let terms = ledger::recon::Terms {
        fee_rate: rust_decimal::Decimal::new(25, 4),
        fee_tolerance: rust_decimal::Decimal::new(1, 2),
        carry_forward_days: 1,
    };
    let mut runs = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        let c = ledger::recon::classify(date, &lines, &[], &items, |_| terms);
        runs.push(start.elapsed().as_secs_f64());
        counts = c.counts();
    }
    let ours = median(runs.clone());
    let counts: serde_json::Map<String, Value> =
        counts.into_iter().map(|(o, k)| (o.as_str().to_owned(), json!(k))).collect();
    emit(
        "reconcile_1m_items_s",
        ours,
        "s",
        json!({"lines": lines.len(), "items": items.len(), "counts": counts, "runs_seconds": runs}),
    );
    // The peers: a bare full outer join of the same keys, in the same minute.
    std::fs::create_dir_all(dir)?;
    let script = format!(
        r#"
import sys, time, statistics
n = {n}
repeat = {repeat}
def keys(tag):
    return ["42000%023d" % i for i in range(n) if not (tag == "b" and i % 1000 == 7)]
a, b = keys("a"), keys("b")
out = {{}}
try:
    import duckdb
    con = duckdb.connect()
    con.execute("CREATE TABLE a AS SELECT k, 1.00::DECIMAL(18,2) AS amount FROM (SELECT unnest($1) AS k)", [a])
    con.execute("CREATE TABLE b AS SELECT k, 1.00::DECIMAL(18,2) AS amount FROM (SELECT unnest($1) AS k)", [b])
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        con.execute("CREATE OR REPLACE TABLE j AS SELECT * FROM a FULL OUTER JOIN b USING (k)")
        runs.append(time.perf_counter() - t)
    out["duckdb"] = statistics.median(runs)
except ImportError:
    pass
try:
    import polars as pl
    pa, pb = pl.DataFrame({{"k": a, "x": [1] * len(a)}}), pl.DataFrame({{"k": b, "y": [1] * len(b)}})
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        pa.join(pb, on="k", how="full")
        runs.append(time.perf_counter() - t)
    out["polars"] = statistics.median(runs)
except ImportError:
    pass
print(" ".join("%s=%f" % kv for kv in out.items()))
"#
    );
    match std::process::Command::new("python3").args(["-c", &script]).output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            for pair in text.split_whitespace() {
                let Some((peer, secs)) = pair.split_once('=') else { continue };
                let Ok(secs) = secs.parse::<f64>() else { continue };
                emit(&format!("peer_{peer}_full_outer_join_1m_s"), secs, "s", json!({"keys": n}));
                emit(&format!("reconcile_1m_vs_{peer}_join_ratio"), ours / secs, "x", json!({"keys": n}));
            }
            if text.trim().is_empty() {
                eprintln!("peers skipped: neither duckdb nor polars is installed for python3");
            }
        }
        _ => eprintln!("peers skipped: python3 is not available"),
    }
    Ok(())
}

/// Generated statements of `n` payment lines in each format.
fn statement_files(n: u64) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    use ingest::statement::{LineKind, write};
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).context("date")?;
    let ids: Vec<(String, String)> =
        (0..n).map(|i| (format!("M000006-20261124-{i:09}"), format!("42000{i:023}"))).collect();
    let rows: Vec<write::Row<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, (txn, ctid))| {
            let i = i as u64;
            let cents = 100 + (i % 50_000) as i64;
            let at = day.and_hms_opt(((i / 3600) % 24) as u32, ((i / 60) % 60) as u32, (i % 60) as u32);
            write::Row {
                merchant_id: "M000006",
                terminal_id: "T0000601",
                kind: LineKind::Payment,
                txn_id: txn,
                original_txn_id: None,
                channel_txn_id: ctid,
                amount: rust_decimal::Decimal::new(cents, 2),
                fee: rust_decimal::Decimal::new(cents * 25, 5),
                at: at.unwrap_or_default(),
            }
        })
        .collect();
    Ok((write::wechat(&rows)?, write::alipay(day, &rows)?, write::unionpay(&rows)?))
}

fn parse_statements(n: u64, repeat: usize) -> Result<()> {
    use ingest::statement::{alipay, unionpay, wechat};
    let (w, a, u) = statement_files(n)?;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 24);
    type Parser<'a> = Box<dyn Fn() -> Result<ingest::statement::Statement, ingest::statement::StatementError> + 'a>;
    let runs: [(&str, &[u8], Parser<'_>); 3] = [
        ("parse_wechat_lines_per_s", &w, Box::new(|| wechat::parse("bench-wechat.csv", &w))),
        ("parse_alipay_lines_per_s", &a, Box::new(|| alipay::parse("bench-alipay.csv", &a))),
        ("parse_unionpay_lines_per_s", &u, Box::new(|| unionpay::parse_dated("bench-unionpay.txt", &u, date))),
    ];
    for (name, bytes, parse) in runs {
        let mut times = Vec::new();
        for _ in 0..repeat {
            let start = Instant::now();
            let s = parse()?;
            times.push(start.elapsed().as_secs_f64());
            anyhow::ensure!(s.lines.len() as u64 == n, "{name}: every line read");
        }
        emit(
            name,
            n as f64 / median(times.clone()),
            "lines/s",
            json!({"lines": n, "bytes": bytes.len(), "runs_seconds": times}),
        );
    }
    Ok(())
}

/// A failed use case, as an error naming what was being done.
fn failed(what: &str) -> impl FnOnce(app::Failure) -> anyhow::Error + '_ {
    move |f| anyhow::anyhow!("{what}: {}", f.message)
}

/// `posledger demo` at its defaults (sales a day scaled), each run into a fresh directory.
async fn demo_default(dir: &Path, scale: f64, repeat: usize) -> Result<()> {
    let defaults = demo::Options::default();
    let options = demo::Options {
        payments_per_day: scaled(defaults.payments_per_day, scale).max(demo::run::PAYMENTS_PER_DAY_MIN),
        ..defaults
    };
    let mut runs = Vec::new();
    let mut peak = Vec::new();
    let mut events = 0;
    for run in 0..repeat {
        let out = dir.join(format!("demo-{run}"));
        reset_peak_rss();
        let start = Instant::now();
        let report = demo::run(&out, options, &|_| {}).await?;
        runs.push(start.elapsed().as_secs_f64());
        peak.extend(peak_rss_mib());
        anyhow::ensure!(
            report.agrees(),
            "the demo found other than it planted, or did not verify: {:?}",
            report.disagreements
        );
        events = report.verified_events;
        let _ = std::fs::remove_dir_all(&out);
    }
    let params = json!({
        "merchants": options.merchants, "payments_per_day": options.payments_per_day, "days": options.days,
        "seed": options.seed, "events": events,
    });
    let mut timed = params.clone();
    timed["runs_seconds"] = json!(runs);
    emit("demo_default_s", median(runs), "s", timed);
    if !peak.is_empty() {
        let mut memory = params;
        memory["runs_mib"] = json!(peak);
        emit("demo_default_peak_rss_mib", median(peak), "MiB", memory);
    }
    Ok(())
}

/// The seed of the day-end benchmark's acquirer.
const DAY_END_SEED: u64 = 7;

/// The application over data directory `dir`, at the default approval threshold whatever the
/// environment says (the holds are part of what is measured).
fn open_app(dir: &Path) -> Result<app::App> {
    let app = app::App::open(app::DataDir::new(dir), Box::new(|w| eprintln!("warning: {w}")))
        .map_err(failed("opening the data directory"))?;
    Ok(app.with_approval_over(ledger::recon::APPROVAL_OVER_DEFAULT))
}

/// Ingests NDJSON records through the application, as `posledger ingest` does; a record
/// refused is a fault of the generated data.
async fn ingest_records<'a>(
    app: &app::App,
    lines: impl IntoIterator<Item = &'a String>,
    kind: InputKind,
    what: &str,
) -> Result<()> {
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    let summary = app
        .ingest_reader(bytes.as_slice(), kind, |_, _| {})
        .await
        .map_err(|s| anyhow::anyhow!("ingesting {what}: {}", s.failure.message))?;
    if let Some(r) = summary.first_rejections.first() {
        anyhow::bail!("{what}: {} records refused; line {}: {} ({})", summary.rejected, r.line, r.message, r.code);
    }
    Ok(())
}

/// Ingests a generated day as `posledger demo` does: the feed up to each of the day's admin
/// records, then the record.
async fn ingest_day(app: &app::App, world: &demo::world::World, n: u32, day: &demo::day::Day) -> Result<()> {
    let mut rest = day.feed.as_slice();
    for (second, record) in world.admin_of(n) {
        let (before, after) = rest.split_at(rest.partition_point(|(s, _)| *s < second));
        ingest_records(app, before.iter().map(|(_, l)| l), InputKind::Feed, "the feed").await?;
        ingest_records(app, [&record], InputKind::Admin, "the admin records").await?;
        rest = after;
    }
    ingest_records(app, rest.iter().map(|(_, l)| l), InputKind::Feed, "the feed").await
}

/// The day's statement files as a day-end takes them.
fn statement_files_of(day: &demo::day::Day) -> Vec<app::dayend::StatementFile> {
    day.statements
        .iter()
        .map(|(name, bytes)| app::dayend::StatementFile { name: name.clone(), bytes: bytes.clone() })
        .collect()
}

/// The day the day-end benchmark closes, and what went into the store.
struct PreparedDay {
    date: chrono::NaiveDate,
    files: Vec<app::dayend::StatementFile>,
    payments: u64,
    adjustments: u64,
    feed_records: usize,
    events: u64,
}

/// A data directory in `data` holding the demo's acquirer of `merchants` merchants: onboarded,
/// its first `closed` days of `payments` sales each ingested and closed by their day-ends (so
/// the T+1 merchants are due on the next), and the day after them ingested, not closed.
async fn day_end_data(data: &Path, merchants: u32, payments: u64, closed: u32) -> Result<PreparedDay> {
    let closed = closed.max(1);
    // The story's smallest length is three days: the merchant that closes does so on the last,
    // after every day measured here.
    let days = (closed + 2).max(demo::run::DAYS_MIN);
    let world = demo::world::World::new(DAY_END_SEED, merchants, days, demo::run::first_day());
    let app = open_app(data)?;
    ingest_records(&app, &world.onboarding(), InputKind::Admin, "the onboarding records").await?;
    let mut generator = demo::day::Generator::new(&world, DAY_END_SEED, payments);
    for n in 0..closed {
        let before = generator.day(n)?;
        ingest_day(&app, &world, n, &before).await?;
        let end = app.day_end(before.date, &statement_files_of(&before)).await.map_err(failed("an earlier day-end"))?;
        anyhow::ensure!(end.verified(), "the day-end of {} verified: {:?}", before.date, end.verify);
    }
    let day = generator.day(closed)?;
    ingest_day(&app, &world, closed, &day).await?;
    let prepared = PreparedDay {
        date: day.date,
        files: statement_files_of(&day),
        payments: day.payments,
        adjustments: day.adjustments,
        feed_records: day.feed.len(),
        events: app.head(),
    };
    app.close().await;
    Ok(prepared)
}

/// What a day's closing found, to check that both ways did the same work.
fn day_found(report: &app::recon::DayReport, settlement: &app::settle::Settlement) -> (usize, usize, usize, usize) {
    let breaks = report.reports.iter().map(|r| r.breaks.len()).sum();
    (report.reports.len(), breaks, settlement.paid.len(), settlement.held.len())
}

/// A day-end timed on a fresh copy of a prepared data directory: opening the application
/// (its write model and books, as a server has them before the clock starts), the day-end
/// itself, closing; checked to have verified and reconciled every statement.
struct TimedDayEnd {
    open_s: f64,
    day_end_s: f64,
    close_s: f64,
    end: app::dayend::DayEnd,
}

/// Runs `day`'s day-end on a copy of `prepared` made at `copy` (removed after).
async fn timed_day_end(prepared: &Path, copy: &Path, day: &PreparedDay) -> Result<TimedDayEnd> {
    copy_dir(prepared, copy)?;
    let start = Instant::now();
    let app = open_app(copy)?;
    app.open_all().await.map_err(failed("opening the write model and the books"))?;
    let open_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let end = app.day_end(day.date, &day.files).await.map_err(failed("the day-end"))?;
    let day_end_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    app.close().await;
    let close_s = start.elapsed().as_secs_f64();
    anyhow::ensure!(end.verified(), "the day-end verified: {:?}", end.verify);
    anyhow::ensure!(end.report.reports.len() == day.files.len(), "every statement reconciled");
    std::fs::remove_dir_all(copy)?;
    Ok(TimedDayEnd { open_s, day_end_s, close_s, end })
}

/// One day-end of a day of `payments` sales on a store that holds it, beside the separate use
/// cases that `posledger statement import` (once per file), `reconcile`, `settle`, `export` and
/// `verify` run, each way on its own copy of the same data directory. Each copy's application
/// has its write model and books open before the clock starts (as a server's has) and is
/// closed after it stops.
async fn day_end(dir: &Path, payments: u64, merchants: u32, repeat: usize) -> Result<()> {
    let merchants = merchants.clamp(demo::run::MERCHANTS_MIN, demo::run::MERCHANTS_MAX);
    let payments = payments.clamp(demo::run::PAYMENTS_PER_DAY_MIN, demo::run::PAYMENTS_PER_DAY_MAX);
    let prepared_dir = dir.join("prepared");
    let start = Instant::now();
    let day = day_end_data(&prepared_dir, merchants, payments, 1).await?;
    let prepare_s = start.elapsed().as_secs_f64();
    let date = day.date;
    let copy = dir.join("run");
    let steps = ["statement_import_s", "reconcile_s", "settle_s", "export_s", "verify_s"];
    let (mut together, mut separate) = (Vec::new(), Vec::new());
    let mut step_runs: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    let (mut open_runs, mut close_runs) = (Vec::new(), Vec::new());
    let mut found = (0, 0, 0, 0);
    let mut exported = 0;
    for _ in 0..repeat {
        // The day-end.
        let timed = timed_day_end(&prepared_dir, &copy, &day).await?;
        open_runs.push(timed.open_s);
        together.push(timed.day_end_s);
        close_runs.push(timed.close_s);
        anyhow::ensure!(!timed.end.settlement.paid.is_empty(), "the day-end paid the day before's business");
        found = day_found(&timed.end.report, &timed.end.settlement);
        exported = timed.end.export.through;

        // The same day, one use case after another.
        copy_dir(&prepared_dir, &copy)?;
        let app = open_app(&copy)?;
        app.open_all().await.map_err(failed("opening the write model and the books"))?;
        let mut times = Vec::with_capacity(steps.len());
        let start = Instant::now();
        for f in &day.files {
            let channel = ingest::statement::detect(&f.name, &f.bytes).context("a statement of a known channel")?;
            let outcome = app
                .import_statement(channel, &f.name, &f.bytes, Some(date))
                .await
                .map_err(failed("statement import"))?;
            anyhow::ensure!(
                matches!(outcome, app::recon::ImportOutcome::Imported(_)),
                "{} imported: {outcome:?}",
                f.name
            );
        }
        times.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let report = app.reconcile(date, None).await.map_err(failed("reconcile"))?;
        times.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let settlement = app.settle(date).await.map_err(failed("settle"))?;
        times.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        app.export(None).await.map_err(failed("export"))?;
        times.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let verified = app.verify().await.map_err(failed("verify"))?;
        times.push(start.elapsed().as_secs_f64());
        app.close().await;
        anyhow::ensure!(verified.ok(), "verify after the separate use cases: {:?}", verified.error);
        anyhow::ensure!(day_found(&report, &settlement) == found, "the separate use cases found what the day-end did");
        std::fs::remove_dir_all(&copy)?;
        separate.push(times.iter().sum());
        for (runs, t) in step_runs.iter_mut().zip(times) {
            runs.push(t);
        }
    }
    let _ = std::fs::remove_dir_all(&prepared_dir);
    let (ours, theirs) = (median(together.clone()), median(separate.clone()));
    let (statements, breaks, paid, held) = found;
    emit(
        "day_end_1m_payments_s",
        ours,
        "s",
        json!({
            "payments": day.payments, "adjustments": day.adjustments, "feed_records": day.feed_records,
            "merchants": merchants, "events_before": day.events, "exported_through": exported,
            "statements": statements, "statement_bytes": day.files.iter().map(|f| f.bytes.len()).sum::<usize>(),
            "breaks": breaks, "paid": paid, "held": held,
            "separate_s": theirs, "vs_separate_ratio": ours / theirs,
            "open_s": median(open_runs), "close_s": median(close_runs), "prepare_s": prepare_s,
            "runs_seconds": together,
        }),
    );
    let mut params = json!({
        "use_cases": "3 x import_statement, reconcile (every channel), settle, export, verify (the whole log)",
        "runs_seconds": separate,
    });
    for (step, runs) in steps.iter().zip(step_runs) {
        params[*step] = json!(median(runs.clone()));
    }
    emit("day_end_1m_separate_commands_s", theirs, "s", params);
    Ok(())
}

/// The days closed before the day of `day_end_after_history_ratio`.
const HISTORY_DAYS: u32 = 30;

/// The day-end of a day after `history` closed days beside the same size of day after one
/// closed day, alternated, each on a fresh copy of its prepared data directory with the write
/// model and books open before the clock starts.
async fn day_end_after_history(dir: &Path, payments: u64, merchants: u32, history: u32, repeat: usize) -> Result<()> {
    let merchants = merchants.clamp(demo::run::MERCHANTS_MIN, demo::run::MERCHANTS_MAX);
    let payments = payments.clamp(demo::run::PAYMENTS_PER_DAY_MIN, demo::run::PAYMENTS_PER_DAY_MAX);
    let (short_dir, long_dir) = (dir.join("one-day"), dir.join("history"));
    let start = Instant::now();
    let short = day_end_data(&short_dir, merchants, payments, 1).await?;
    let long = day_end_data(&long_dir, merchants, payments, history).await?;
    let prepare_s = start.elapsed().as_secs_f64();
    let copy = dir.join("run");
    let (mut short_runs, mut long_runs) = (Vec::new(), Vec::new());
    let mut found = Vec::new();
    for _ in 0..repeat {
        for (prepared, from, runs) in [(&short, &short_dir, &mut short_runs), (&long, &long_dir, &mut long_runs)] {
            let timed = timed_day_end(from, &copy, prepared).await?;
            runs.push(timed.day_end_s);
            found.push(day_found(&timed.end.report, &timed.end.settlement));
        }
    }
    let _ = std::fs::remove_dir_all(&short_dir);
    let _ = std::fs::remove_dir_all(&long_dir);
    let (alone, after) = (median(short_runs.clone()), median(long_runs.clone()));
    emit(
        "day_end_after_history_ratio",
        after / alone,
        "x",
        json!({
            "payments": long.payments, "merchants": merchants, "history_days": history,
            "events_before": long.events, "events_before_alone": short.events,
            "after_history_s": after, "alone_s": alone, "prepare_s": prepare_s,
            "after_history_runs_seconds": long_runs, "alone_runs_seconds": short_runs,
            "found_statements_breaks_paid_held": found,
        }),
    );
    emit("day_end_after_history_s", after, "s", json!({"history_days": history, "events_before": long.events}));
    Ok(())
}

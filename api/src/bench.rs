//! `posledger bench`: measured figures, one JSON object per line:
//! `{"name": ..., "value": ..., "unit": ..., "params": {...}}`.
//!
//! Each benchmark builds its own data in a scratch directory, times only the operation it
//! names, and reports the parameters it ran with. Sizes scale with `--scale`.

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
        about: "1M PaymentCaptured events (~200 bytes on disk) appended by 4 concurrent writers, fdatasync on",
    },
    Benchmark {
        name: "ingest_feed_records_per_s",
        about: "a generated 1M-record terminal feed through parsing, the write model and durable append",
    },
    Benchmark { name: "open_recover_s", about: "reopening a 10M-event store: scan, check and index the whole log" },
];

fn emit(name: &str, value: f64, unit: &str, params: Value) {
    let line = json!({"name": name, "value": (value * 1000.0).round() / 1000.0, "unit": unit, "params": params});
    println!("{line}");
}

fn scaled(n: u64, scale: f64) -> u64 {
    ((n as f64 * scale).round() as u64).max(1)
}

/// Peak resident memory of this process since the last [`reset_peak_rss`], in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets the peak (Linux 4.0+); without it the figure is an
    // upper bound that includes earlier benchmarks.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Runs the named benchmarks (all when `names` is empty).
pub fn run(names: &[String], scale: f64, work_dir: Option<&Path>) -> Result<()> {
    for n in names {
        if !BENCHMARKS.iter().any(|b| b.name == n) {
            anyhow::bail!("unknown benchmark {n:?}; `posledger bench --list` names them");
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
            "append_durable_events_per_s" => rt.block_on(append_durable(&dir, scaled(1_000_000, scale)))?,
            "ingest_feed_records_per_s" => rt.block_on(ingest_feed(&dir, scaled(1_000_000, scale)))?,
            "open_recover_s" => rt.block_on(open_recover(&dir, scaled(10_000_000, scale)))?,
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
        txn_id: txn_id.clone(),
        merchant_id: format!("M{:06}", i % 1000),
        terminal_id: format!("T{:08}", i % 2000),
        batch_no: "000001".into(),
        stan: format!("{:06}", i % 1_000_000),
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

async fn append_durable(dir: &Path, events: u64) -> Result<()> {
    let (writers, batch) = (4u64, 1000u64);
    let store = Arc::new(EmbeddedStore::open(dir)?);
    let prepared = prepare(0, events, writers, batch);
    let start = Instant::now();
    run_writers(&store, prepared).await?;
    let secs = start.elapsed().as_secs_f64();
    drop(store);
    let bytes = dir_bytes(dir);
    let frames = ingest::store::verify_dir(dir).map(|r| r.frames).unwrap_or(0);
    emit(
        "append_durable_events_per_s",
        events as f64 / secs,
        "events/s",
        json!({
            "events": events, "writers": writers, "requests_per_append_many": batch,
            "bytes_per_event_on_disk": (bytes as f64 / events as f64).round(), "group_commits": frames,
            "seconds": secs, "fdatasync": true,
        }),
    );
    Ok(())
}

async fn ingest_feed(dir: &Path, records: u64) -> Result<()> {
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
    let store = Arc::new(EmbeddedStore::open(dir.join("events"))?);
    let mut ingestor = Ingestor::open(store.clone(), None).await?;
    let admin = BufReader::new(std::fs::File::open(&admin_path)?);
    ingestor.ingest_reader(admin, InputKind::Admin, |_, _| {}).await?;
    reset_peak_rss();
    let feed = BufReader::with_capacity(1 << 20, std::fs::File::open(&feed_path)?);
    let start = Instant::now();
    let summary = ingestor.ingest_reader(feed, InputKind::Feed, |_, _| {}).await?;
    let secs = start.elapsed().as_secs_f64();
    if summary.rejected > 0 {
        anyhow::bail!("generated feed had rejections: {:?}", summary.first_rejections);
    }
    emit(
        "ingest_feed_records_per_s",
        records as f64 / secs,
        "records/s",
        json!({
            "records": records, "accepted": summary.accepted, "feed_bytes": feed_bytes,
            "merchants": shape.merchants, "terminals": shape.merchants * shape.terminals_per_merchant,
            "seconds": secs,
        }),
    );
    if let Some(mib) = peak_rss_mib() {
        emit("ingest_feed_peak_rss_mib", mib, "MiB", json!({"records": records}));
    }
    Ok(())
}

async fn open_recover(dir: &Path, events: u64) -> Result<()> {
    {
        let store = Arc::new(EmbeddedStore::open(dir)?);
        // Built in slices so the prepared requests never hold more than a million events.
        let slice = 1_000_000u64;
        let mut done = 0;
        while done < events {
            let n = slice.min(events - done);
            run_writers(&store, prepare(done, n, 2, 5000)).await?;
            done += n;
        }
    }
    let bytes = dir_bytes(dir);
    reset_peak_rss();
    let start = Instant::now();
    let store = EmbeddedStore::open(dir)?;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(store.head(), events, "reopened store holds every event");
    emit("open_recover_s", secs, "s", json!({"events": events, "log_bytes": bytes, "peak_rss_mib": peak_rss_mib()}));
    Ok(())
}

//! Real `kill -9` of a writing process at different moments: every acknowledged event
//! survives, nothing torn is read, the chain verifies, and re-running an interrupted import
//! stores every record exactly once.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest::generate::{self, Shape};
use ingest::store::conformance::event;
use ingest::store::{EmbeddedStore, EventStore, verify_dir};

const APPENDER: &str = env!("CARGO_BIN_EXE_store-appender");
const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

/// Kills the appender after it has acknowledged some commits, with a varying extra delay so
/// that the kill lands in different phases of a commit.
#[test]
fn killed_appender_keeps_every_acknowledged_event() {
    let total = 200_000u64;
    for round in 0..6u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut acked = 0u64;
        // Several kills on the same store: each restart continues where the log ends.
        for kill in 0..3u64 {
            let mut child = Command::new(APPENDER)
                .args([dir.path().to_str().expect("utf8 path"), &total.to_string(), "500"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn appender");
            let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let wanted_commits = 3 + (round * 7 + kill * 5) % 17;
            let mut seen = 0;
            while seen < wanted_commits {
                match lines.next() {
                    Some(Ok(line)) => {
                        acked = line.trim_start_matches("acked ").parse().expect("acked N");
                        seen += 1;
                    }
                    _ => break,
                }
            }
            std::thread::sleep(Duration::from_micros(((round * 3 + kill) % 5) * 700));
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            // Whatever the child printed before dying was acknowledged as well.
            for line in lines.map_while(Result::ok) {
                acked = line.trim_start_matches("acked ").parse().expect("acked N");
            }
            let report = verify_dir(dir.path()).err();
            // A kill may leave a torn last frame; verify reports it until a writer reopens.
            let rt = runtime();
            rt.block_on(async {
                let store = EmbeddedStore::open(dir.path()).expect("recover");
                let head = store.head();
                assert!(head >= acked, "round {round} kill {kill}: {acked} acknowledged, {head} recovered");
                let log = store.read_all(0, usize::MAX).await.expect("read");
                for (i, e) in log.iter().enumerate() {
                    assert_eq!(e.position, i as u64);
                    assert_eq!(e.data, event(&format!("k{i}"), i as u64), "event {i} intact");
                }
                let _ = report;
            });
            verify_dir(dir.path()).expect("chain verifies after recovery");
        }
    }
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read_to_string(path).expect("read").lines().count() as u64
}

/// `posledger ingest` killed at several moments and run again ends with every record stored
/// exactly once.
#[test]
fn killed_ingest_rerun_stores_every_record_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let shape = Shape { merchants: 50, terminals_per_merchant: 2, seed: 9 };
    let admin = work.path().join("admin.ndjson");
    let feed = work.path().join("feed.ndjson");
    {
        let mut a = std::fs::File::create(&admin).expect("admin");
        generate::write_admin(&mut a, shape).expect("write admin");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&feed).expect("feed"));
        generate::write_feed(&mut f, shape, 60_000).expect("write feed");
        f.flush().expect("flush");
    }
    let (admin_n, feed_n) = (count_lines(&admin), count_lines(&feed));
    let mut interrupted_midway = 0;
    // Kill at fractions of how long a whole run takes on this machine now, so the kills land
    // at the start, in the middle and near the end however fast or loaded the machine is.
    let full_run = {
        let data = work.path().join("timing");
        let run = |args: &[&str]| {
            let mut all = vec!["--data-dir", data.to_str().expect("utf8")];
            all.extend_from_slice(args);
            Command::new(POSLEDGER).args(&all).stdout(Stdio::null()).status().expect("run")
        };
        assert!(run(&["merchants", "import", admin.to_str().expect("utf8")]).success());
        let start = Instant::now();
        assert!(run(&["ingest", feed.to_str().expect("utf8")]).success());
        start.elapsed()
    };
    for (round, percent) in [2u32, 15, 35, 55, 75, 95].into_iter().enumerate() {
        let delay = full_run * percent / 100;
        let delay_ms = delay.as_millis();
        let data = work.path().join(format!("data{round}"));
        let status = Command::new(POSLEDGER)
            .args(["--data-dir", data.to_str().expect("utf8"), "merchants", "import", admin.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .status()
            .expect("import admin");
        assert!(status.success());
        let ingest = || {
            Command::new(POSLEDGER)
                .args([
                    "--data-dir",
                    data.to_str().expect("utf8"),
                    "ingest",
                    feed.to_str().expect("utf8"),
                    "--format",
                    "json",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn ingest")
        };
        let mut child = ingest();
        let start = Instant::now();
        while start.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let head = runtime().block_on(async { EmbeddedStore::open(data.join("events")).expect("recover").head() });
        if head > admin_n && head < admin_n + feed_n {
            interrupted_midway += 1;
        }
        // Run again to completion.
        let out = ingest().wait_with_output().expect("rerun");
        assert!(out.status.success(), "rerun after kill at {delay_ms} ms: {}", String::from_utf8_lossy(&out.stdout));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
        assert_eq!(summary["records"], feed_n);
        assert_eq!(summary["rejected"], 0);
        let rt = runtime();
        rt.block_on(async {
            let store = EmbeddedStore::open(data.join("events")).expect("open");
            assert_eq!(store.head(), admin_n + feed_n, "every record exactly once (kill at {delay_ms} ms)");
        });
        verify_dir(&data.join("events")).expect("verify");
    }
    assert!(interrupted_midway > 0, "at least one kill must land in the middle of the feed");
}

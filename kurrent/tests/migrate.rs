//! A whole history copied from the embedded log to KurrentDB (the in-memory model of the
//! server) and back into a new embedded log: every event equal, each chain verified.

use std::sync::Arc;
use std::time::Duration;

use ingest::store::conformance::event;
use ingest::store::{EmbeddedStore, EventStore, ExpectedRevision, StoreOptions, verify_dir, verify_open};
use kurrent::migrate::{self, MigrateError, Stamp};
use kurrent::wire::MemoryWire;
use kurrent::{KurrentOptions, KurrentStore, mapping::Namespace};

fn options(stamp: Option<&Stamp>) -> KurrentOptions {
    KurrentOptions {
        call_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(20),
        clock: stamp.map(Stamp::clock),
        ..KurrentOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_goes_to_kurrentdb_and_back_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Arc::new(EmbeddedStore::open(dir.path().join("a")).expect("open"));
    // Concurrent appenders, so the embedded log has group commits of several requests and
    // interleaved streams.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = source.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..300u64 {
                let events = (0..(i % 3 + 1)).map(|k| event(&format!("t{t}i{i}k{k}"), i)).collect();
                store.append(&format!("stream-{}", (t + i) % 5), ExpectedRevision::Any, events).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("appender");
    }
    let total = source.head();
    assert!(total > 2000, "{total}");
    verify_open(&source).expect("the source verifies");

    let stamp = Stamp::new();
    let ns = Namespace::new("moved").expect("ns");
    let target = KurrentStore::open(MemoryWire::new(), ns, options(Some(&stamp))).await.expect("target");
    let mut seen = Vec::new();
    let copied = migrate::copy(&*source, &target, &stamp, |done, all| seen.push((done, all))).await.expect("copy");
    assert_eq!(copied, total);
    assert_eq!(seen.last(), Some(&(total, total)), "progress reaches the end");
    assert_eq!(migrate::compare(&*source, &target, |_, _| {}).await.expect("equal"), total);

    // Into a target that is not empty: refused before anything is written.
    let err = migrate::copy(&*source, &target, &stamp, |_, _| {}).await.expect_err("not empty");
    assert!(matches!(err, MigrateError::TargetNotEmpty(n) if n == total), "{err}");

    // And back into a new embedded log, with the original commit times.
    let back_stamp = Stamp::new();
    let back_options = StoreOptions { clock: Some(back_stamp.clock()), ..StoreOptions::default() };
    let back = EmbeddedStore::open_with(dir.path().join("b"), back_options).expect("open back");
    migrate::copy(&target, &back, &back_stamp, |_, _| {}).await.expect("copy back");
    assert_eq!(migrate::compare(&*source, &back, |_, _| {}).await.expect("equal"), total);
    back.close();
    let report = verify_dir(&dir.path().join("b")).expect("the copy back verifies");
    assert_eq!(report.events, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_differs_is_named() {
    let wire = Arc::new(MemoryWire::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let source = EmbeddedStore::open(dir.path()).expect("open");
    for i in 0..10 {
        source.append("s", ExpectedRevision::Any, vec![event(&format!("e{i}"), i)]).await.expect("append");
    }
    let stamp = Stamp::new();
    let ns = Namespace::new("diff").expect("ns");
    let target = KurrentStore::open(wire.clone(), ns, options(Some(&stamp))).await.expect("target");
    migrate::copy(&source, &target, &stamp, |_, _| {}).await.expect("copy");
    wire.tamper(6, |e| e.data.push(b' '));
    let err = migrate::compare(&source, &target, |_, _| {}).await.expect_err("differs");
    assert!(matches!(&err, MigrateError::Differs { position: 6, .. }), "{err}");
    assert!(err.to_string().contains("payload"), "{err}");
}

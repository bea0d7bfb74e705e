//! posledger on KurrentDB through the application layer, on the in-memory model of the
//! server: `migrate` takes a data directory's history to a namespace and back into a new data
//! directory whose books and journal are the original's; and a data directory runs on a
//! namespace (`--store`) with the same books as on its own log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use app::books::JournalKind;
use app::migrate::{Remote, from_kurrent, to_kurrent};
use app::{App, AsOf, Class, DataDir};
use ingest::pipeline::InputKind;
use kurrent::KurrentOptions;
use kurrent::mapping::Namespace;
use kurrent::wire::{AnyWire, MemoryWire};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day").join(name)
}

fn remote(wire: Arc<MemoryWire>, namespace: Namespace) -> Remote<Arc<MemoryWire>> {
    Remote { wire, namespace, address: "memory".into(), options: KurrentOptions::default() }
}

fn open(dir: &Path) -> App {
    App::open(DataDir::new(dir), Box::new(|w| panic!("warning: {w}"))).expect("open")
}

async fn journal(app: &App) -> String {
    let mut out = Vec::new();
    app.journal(JournalKind::Ledger, AsOf::Now, &mut out).await.expect("journal");
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_goes_to_kurrentdb_and_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let app = open(&a);
    for (name, kind) in [("admin.ndjson", InputKind::Admin), ("feed-2026-11-24.ndjson", InputKind::Feed)] {
        let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
        let s = app.ingest_reader(file, kind, |_, _| {}).await.expect("ingest");
        assert_eq!(s.rejected, 0);
    }
    let original = journal(&app).await;
    assert!(original.len() > 1000);

    // While the data directory is open, it cannot be migrated.
    let wire = Arc::new(MemoryWire::new());
    let ns = Namespace::new("shop").expect("ns");
    let mut progress = |_: &app::backup::Progress| {};
    let busy = to_kurrent(&DataDir::new(&a), remote(wire.clone(), ns.clone()), &mut progress).await.expect_err("held");
    assert_eq!((busy.class, busy.code.as_str()), (Class::Busy, "store_locked"));
    app.close().await;

    let mut steps = Vec::new();
    let mut progress = |p: &app::backup::Progress| steps.push(p.step.clone());
    let there =
        to_kurrent(&DataDir::new(&a), remote(wire.clone(), ns.clone()), &mut progress).await.expect("to KurrentDB");
    assert!(there.events > 100);
    assert!(steps.contains(&"copying".to_owned()) && steps.contains(&"re-reading".to_owned()), "{steps:?}");

    // A second copy into the same namespace is refused: it is not empty.
    let mut progress = |_: &app::backup::Progress| {};
    let again =
        to_kurrent(&DataDir::new(&a), remote(wire.clone(), ns.clone()), &mut progress).await.expect_err("not empty");
    assert_eq!(again.class, Class::Conflict, "{}", again.message);

    let back = from_kurrent(&DataDir::new(&b), remote(wire.clone(), ns.clone()), &mut progress).await.expect("back");
    assert_eq!(back.events, there.events);
    assert_eq!(back.source_head_hash, there.target_head_hash);
    // Into a data directory that holds events: refused.
    let refused = from_kurrent(&DataDir::new(&a), remote(wire, ns), &mut progress).await.expect_err("holds events");
    assert_eq!(refused.class, Class::Conflict, "{}", refused.message);

    // The new data directory's books are rebuilt from the copied events: the same journal, and
    // verify passes.
    let app = open(&b);
    assert_eq!(journal(&app).await, original);
    let verified = app.verify().await.expect("verify");
    assert!(verified.ok(), "{:?}", verified.error);
    assert_eq!(verified.log.expect("log").events, there.events);
    app.close().await;
}

async fn on_kurrent(dir: &Path, wire: &Arc<MemoryWire>) -> Result<App, app::Failure> {
    let ns = Namespace::new("shop").expect("ns");
    let store = kurrent::KurrentStore::open(AnyWire::Memory(wire.clone()), ns, KurrentOptions::default())
        .await
        .expect("namespace");
    App::open_on_kurrent(DataDir::new(dir), store, "memory", Box::new(|w| panic!("warning: {w}")))
}

async fn ingest_day(app: &App) {
    for (name, kind) in [("admin.ndjson", InputKind::Admin), ("feed-2026-11-24.ndjson", InputKind::Feed)] {
        let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
        let s = app.ingest_reader(file, kind, |_, _| {}).await.expect("ingest");
        assert_eq!(s.rejected, 0);
    }
}

/// A data directory whose events are in a KurrentDB namespace (the in-memory model) keeps the
/// same books as one on the embedded log, verifies, refuses what reads the embedded log's
/// files, and is held by one process at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_runs_on_a_kurrentdb_namespace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (k, e) = (tmp.path().join("k"), tmp.path().join("e"));
    let embedded = open(&e);
    ingest_day(&embedded).await;
    let want = journal(&embedded).await;
    embedded.close().await;

    let wire = Arc::new(MemoryWire::new());
    let app = on_kurrent(&k, &wire).await.expect("open on KurrentDB");
    ingest_day(&app).await;
    assert_eq!(journal(&app).await, want, "the same books on either store");
    let verified = app.verify().await.expect("verify");
    assert!(verified.ok(), "{:?}", verified.error);
    assert_eq!(verified.log.as_ref().map(|l| l.events), Some(app.head()));

    let mut progress = |_: &app::backup::Progress| {};
    let refused = app.backup(&tmp.path().join("b"), &mut progress).await.expect_err("no files to copy");
    assert_eq!(refused.code, "not_on_kurrentdb", "{}", refused.message);
    let second = on_kurrent(&k, &wire).await.err().expect("held");
    assert_eq!(second.code, "store_locked");
    app.close().await;

    // The directory goes with the namespace: not opened on its own (empty) log.
    let alone = App::open(DataDir::new(&k), Box::new(|_| {})).err().expect("refused");
    assert_eq!(alone.code, "store_elsewhere", "{}", alone.message);
    // And a directory with an embedded log is not put on a namespace.
    let mixed = on_kurrent(&e, &wire).await.err().expect("refused");
    assert_eq!(mixed.code, "store_elsewhere", "{}", mixed.message);

    // Nor migrated as if its events were in its own log.
    let mut progress = |_: &app::backup::Progress| {};
    let ns = Namespace::new("other").expect("ns");
    let moved = to_kurrent(&DataDir::new(&k), remote(wire.clone(), ns), &mut progress).await.expect_err("refused");
    assert_eq!(moved.code, "store_elsewhere", "{}", moved.message);
    assert!(!k.join("events").join("seg-000000.log").exists(), "no embedded log was started");

    // Reopened, the books come from the checkpoint and the namespace.
    let again = on_kurrent(&k, &wire).await.expect("reopen");
    assert_eq!(journal(&again).await, want);
    // An event altered on the server: verify names it.
    wire.tamper(5, |e| e.data.push(b' '));
    let damaged = again.verify().await.expect("verify runs");
    assert!(!damaged.ok());
    let error = damaged.error.expect("an error");
    assert!(error.contains("hash-chain link"), "{error}");
    again.close().await;
}

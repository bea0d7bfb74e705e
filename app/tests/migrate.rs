//! `posledger migrate` through the application layer, on the in-memory model of a KurrentDB
//! server: a data directory's history goes to a namespace and comes back into a new data
//! directory whose books and journal are the original's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use app::books::JournalKind;
use app::migrate::{from_kurrent, to_kurrent};
use app::{App, AsOf, Class, DataDir};
use ingest::pipeline::InputKind;
use kurrent::KurrentOptions;
use kurrent::mapping::Namespace;
use kurrent::wire::MemoryWire;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day").join(name)
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
    let busy =
        to_kurrent(&DataDir::new(&a), wire.clone(), ns.clone(), "memory", KurrentOptions::default(), &mut progress)
            .await
            .expect_err("held");
    assert_eq!((busy.class, busy.code.as_str()), (Class::Busy, "store_locked"));
    app.close().await;

    let mut steps = Vec::new();
    let mut progress = |p: &app::backup::Progress| steps.push(p.step.clone());
    let there =
        to_kurrent(&DataDir::new(&a), wire.clone(), ns.clone(), "memory", KurrentOptions::default(), &mut progress)
            .await
            .expect("to KurrentDB");
    assert!(there.events > 100);
    assert!(steps.contains(&"copying".to_owned()) && steps.contains(&"re-reading".to_owned()), "{steps:?}");

    // A second copy into the same namespace is refused: it is not empty.
    let mut progress = |_: &app::backup::Progress| {};
    let again =
        to_kurrent(&DataDir::new(&a), wire.clone(), ns.clone(), "memory", KurrentOptions::default(), &mut progress)
            .await
            .expect_err("not empty");
    assert_eq!(again.class, Class::Conflict, "{}", again.message);

    let back =
        from_kurrent(&DataDir::new(&b), wire.clone(), ns.clone(), "memory", KurrentOptions::default(), &mut progress)
            .await
            .expect("back");
    assert_eq!(back.events, there.events);
    assert_eq!(back.source_head_hash, there.target_head_hash);
    // Into a data directory that holds events: refused.
    let refused = from_kurrent(&DataDir::new(&a), wire, ns, "memory", KurrentOptions::default(), &mut progress)
        .await
        .expect_err("holds events");
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

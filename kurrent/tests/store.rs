//! The KurrentDB store's logic against the in-memory model of the server: the whole
//! conformance suite the embedded store passes, and what only this backend has to handle
//! (lost answers, another writer, altered events, an unreachable server). And the same
//! conformance suite against a real server when `POSLEDGER_TEST_KURRENTDB` names one.

use std::sync::Arc;
use std::time::Duration;

use ingest::store::conformance::{self, event};
use ingest::store::{AppendError, EventStore, ExpectedRevision, Subscription};
use kurrent::mapping::{self, Namespace};
use kurrent::wire::MemoryWire;
use kurrent::{KurrentOptions, KurrentStore, OpenError};

fn ns(name: &str) -> Namespace {
    Namespace::new(name).expect("namespace")
}

fn quick() -> KurrentOptions {
    // The conformance suite appends two 1 MiB events at once: a server started with
    // `--max-append-size 16777216` (its largest) takes them.
    KurrentOptions {
        call_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(20),
        append_bytes_max: 16 << 20,
        ..KurrentOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_the_server_model() {
    // Namespaces share one server (and its $all), and their names are prefixes of each
    // other's: each store must see only its own.
    let server = Arc::new(MemoryWire::new());
    let mut stores = Vec::new();
    for i in 0..12 {
        stores.push(KurrentStore::open(server.clone(), ns(&format!("c{i}")), quick()).await.expect("open"));
    }
    stores.reverse();
    conformance::run_all(|| stores.pop().expect("enough stores")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_has_the_same_history_and_recognises_old_retries() {
    let wire = Arc::new(MemoryWire::new());
    let store = KurrentStore::open(wire.clone(), ns("books"), quick()).await.expect("open");
    // More than one checkpoint interval and one read page, in several streams.
    let mut n = 0u64;
    for round in 0..30 {
        for s in 0..3 {
            let events = (0..50).map(|k| event(&format!("r{round}s{s}k{k}"), n + k)).collect();
            store.append(&format!("stream-{s}"), ExpectedRevision::Any, events).await.expect("append");
            n += 50;
        }
    }
    assert_eq!(store.head(), 4500);
    let hash = store.head_hash();
    let all = store.read_all(0, usize::MAX).await.expect("read");
    drop(store);

    let again = KurrentStore::open(wire.clone(), ns("books"), quick()).await.expect("reopen");
    assert_eq!(again.head(), 4500);
    assert_eq!(again.head_hash(), hash, "the chain is recomputed to the same head");
    assert_eq!(again.read_all(0, usize::MAX).await.expect("read"), all);
    for from in [0, 1, 255, 256, 257, 1000, 4095, 4096, 4499] {
        let got = again.read_all(from, 7).await.expect("read from");
        assert_eq!(got, all[from as usize..(from as usize + 7).min(4500)].to_vec(), "from {from}");
    }
    // The very first append, retried after 4500 others: recognised, not written again.
    let first: Vec<_> = (0..50).map(|k| event(&format!("r0s0k{k}"), k)).collect();
    let retried = again.append("stream-0", ExpectedRevision::NoStream, first).await.expect("retry");
    assert!(retried.duplicate);
    assert_eq!((retried.first_position, retried.last_revision), (0, 49));
    assert_eq!(again.head(), 4500);
    let by_id = again.event_by_id(event("r12s1k3", 0).event_id).await.expect("by id").expect("found");
    assert_eq!(by_id.stream, "stream-1");
    assert_eq!(by_id.revision, 12 * 50 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_answer_is_lost_is_found_or_stops_the_store() {
    let wire = Arc::new(MemoryWire::new());
    let store = KurrentStore::open(wire.clone(), ns("lost"), quick()).await.expect("open");
    store.append("a", ExpectedRevision::NoStream, vec![event("a0", 0)]).await.expect("first");
    // The server wrote it but the answer was lost: the store finds it and says it succeeded.
    wire.lose_answers(1);
    let found = store.append("a", ExpectedRevision::Exact(0), vec![event("a1", 1)]).await.expect("found in $all");
    assert_eq!((found.first_position, found.last_revision, found.duplicate), (1, 1, false));
    assert_eq!(store.head(), 2);

    // No answer and not in $all: it may still land, so the store stops taking appends
    // rather than risk a position twice.
    wire.lose_appends(1);
    let err = store.append("a", ExpectedRevision::Exact(1), vec![event("a2", 2)]).await.expect_err("unknown");
    assert!(matches!(&err, AppendError::Io(m) if m.contains("outcome") && m.contains("unknown")), "{err}");
    let after = store.append("b", ExpectedRevision::Any, vec![event("b0", 3)]).await.expect_err("stopped");
    assert!(matches!(&after, AppendError::Io(m) if m.contains("reopen")), "{after}");
    // Reads go on.
    assert_eq!(store.read_all(0, 10).await.expect("read").len(), 2);
    drop(store);
    let reopened = KurrentStore::open(wire, ns("lost"), quick()).await.expect("reopen");
    reopened.append("a", ExpectedRevision::Exact(1), vec![event("a2", 2)]).await.expect("after reopening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_or_an_altered_event_is_named() {
    // Two processes that take turns on one namespace: each append first takes in what the
    // other appended, so the chain goes on whole.
    let wire = Arc::new(MemoryWire::new());
    let store = KurrentStore::open(wire.clone(), ns("two"), quick()).await.expect("open");
    store.append("a", ExpectedRevision::NoStream, vec![event("a0", 0)]).await.expect("first");
    let other = KurrentStore::open(wire.clone(), ns("two"), quick()).await.expect("second process");
    other.append("b", ExpectedRevision::NoStream, vec![event("b0", 1)]).await.expect("its turn");
    let third = store.append("c", ExpectedRevision::NoStream, vec![event("c0", 2)]).await.expect("after it");
    assert_eq!(third.first_position, 2);
    assert_eq!(KurrentStore::open(wire.clone(), ns("two"), quick()).await.expect("whole").head(), 3);

    // Two writers racing: the other's event was decided at position 3 too, and lands after
    // this store's. The store names it and takes no more appends.
    let link = hex::decode(store.head_hash()).expect("hex");
    let (racing, _) = mapping::to_wire("d", &event("d0", 3), 3, 0, 5, &link.try_into().expect("32 bytes"));
    store.append("e", ExpectedRevision::NoStream, vec![event("e0", 4)]).await.expect("at 3");
    wire.append_raw("two:d", vec![racing]);
    let err = store.append("f", ExpectedRevision::NoStream, vec![event("f0", 5)]).await.expect_err("refused");
    assert!(matches!(&err, AppendError::Io(m) if m.contains("another writer is appending to namespace two")), "{err}");
    assert!(err.to_string().contains("\"two:d\""), "the racing event's stream is named: {err}");
    let later = store.append("g", ExpectedRevision::Any, vec![event("g0", 6)]).await.expect_err("stopped");
    assert!(later.to_string().contains("another writer"), "{later}");

    // An event changed on the server: opening finds it, naming the stream and $all place.
    let wire = Arc::new(MemoryWire::new());
    let store = KurrentStore::open(wire.clone(), ns("alt"), quick()).await.expect("open");
    for i in 0..5 {
        store.append("s", ExpectedRevision::Any, vec![event(&format!("e{i}"), i)]).await.expect("append");
    }
    wire.tamper(3, |e| e.data[2] ^= 1);
    let err = KurrentStore::open(wire.clone(), ns("alt"), quick()).await.err().expect("damaged");
    assert!(matches!(err, OpenError::Damaged(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("\"alt:s\"") && text.contains("hash-chain link"), "{text}");

    // A foreign event without posledger's metadata.
    let wire = Arc::new(MemoryWire::new());
    wire.append_raw(
        "mixed:x",
        vec![mapping::WireEvent {
            id: event("f", 0).event_id,
            event_type: "Foreign".into(),
            data: b"{}".to_vec(),
            metadata: Vec::new(),
        }],
    );
    let err = KurrentStore::open(wire, ns("mixed"), quick()).await.err().expect("foreign");
    assert!(err.to_string().contains("metadata is not posledger's"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_in_bounded_time() {
    let wire = MemoryWire::new();
    wire.set_down(true);
    let started = std::time::Instant::now();
    let err = KurrentStore::open(wire, ns("down"), quick()).await.err().expect("unreachable");
    assert!(matches!(err, OpenError::Server(_)), "{err}");
    assert!(err.to_string().contains("did not answer"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let wire = Arc::new(MemoryWire::new());
    let store = KurrentStore::open(wire.clone(), ns("down"), quick()).await.expect("open");
    wire.set_down(true);
    let err = store.read_all(0, 10).await.expect_err("read fails");
    assert!(err.to_string().contains("did not answer"), "{err}");
    let err = store.append("s", ExpectedRevision::Any, vec![event("s0", 0)]).await.expect_err("append fails");
    assert!(err.to_string().contains("did not answer"), "{err}");
    wire.set_down(false);
    // Nothing was sent, so nothing is unknown: the store goes on.
    store.append("s", ExpectedRevision::Any, vec![event("s0", 0)]).await.expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_process_follows_what_a_writer_appends() {
    let wire = Arc::new(MemoryWire::new());
    let writer = KurrentStore::open(wire.clone(), ns("follow"), quick()).await.expect("writer");
    writer.append("s", ExpectedRevision::Any, vec![event("s0", 0)]).await.expect("append");
    let reader = Arc::new(KurrentStore::open(wire.clone(), ns("follow"), quick()).await.expect("reader"));
    let follower = reader.clone();
    let seen = tokio::spawn(async move {
        // A catch-up subscription resumed from a stored position (1): it sees only what follows.
        let mut sub = Subscription::new(&*follower, 1);
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(sub.next_batch(10).await.expect("next"));
        }
        got.into_iter().map(|e| e.data.event_id).collect::<Vec<_>>()
    });
    for i in 1..4 {
        writer.append("s", ExpectedRevision::Any, vec![event(&format!("s{i}"), i)]).await.expect("append");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let seen = tokio::time::timeout(Duration::from_secs(5), seen).await.expect("in time").expect("task");
    let want: Vec<_> = (1..4).map(|i| event(&format!("s{i}"), i).event_id).collect();
    assert_eq!(seen, want);
    assert_eq!(reader.head_hash(), writer.head_hash());
}

/// The suite against a real server. It needs one, so it is ignored unless asked for: cargo
/// lists it as ignored with the reason, never as passed. Run it with
/// `POSLEDGER_TEST_KURRENTDB=kurrentdb://HOST:2113?tls=false cargo test -p kurrent --features
/// kurrentdb -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a KurrentDB server: set POSLEDGER_TEST_KURRENTDB and run with --features kurrentdb -- --ignored"]
async fn the_conformance_suite_on_a_kurrentdb_server() {
    let url = std::env::var("POSLEDGER_TEST_KURRENTDB")
        .expect("POSLEDGER_TEST_KURRENTDB names the server, e.g. kurrentdb://localhost:2113?tls=false");
    real_server(&url).await;
}

#[cfg(feature = "kurrentdb")]
async fn real_server(url: &str) {
    let url = mapping::StoreUrl::parse(url).expect("POSLEDGER_TEST_KURRENTDB is a store address");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    let run = format!("{}-{}", std::process::id(), now.as_micros());
    let mut stores = Vec::new();
    for i in 0..12 {
        let wire = kurrent::client::KurrentWire::connect(&url).expect("client");
        let ns = ns(&format!("t{run}-{i}"));
        // The server must take 16 MiB appends (`--max-append-size 16777216`).
        let options = KurrentOptions { append_bytes_max: 16 << 20, ..KurrentOptions::default() };
        stores.push(KurrentStore::open(wire, ns, options).await.expect("open on the server"));
    }
    stores.reverse();
    conformance::run_all(|| stores.pop().expect("enough stores")).await;
}

#[cfg(not(feature = "kurrentdb"))]
async fn real_server(_url: &str) {
    panic!(
        "POSLEDGER_TEST_KURRENTDB is set but this build has no KurrentDB client: run with `--features kurrent/kurrentdb`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_over_the_servers_largest_is_refused_and_named() {
    let store = KurrentStore::open(MemoryWire::new(), ns("big"), KurrentOptions::default()).await.expect("open");
    let mut big = event("big", 0);
    big.payload = vec![b'7'; kurrent::APPEND_BYTES_MAX_DEFAULT];
    let err = store.append("s", ExpectedRevision::Any, vec![big]).await.expect_err("too large");
    assert!(matches!(&err, AppendError::Invalid(m) if m.contains("--max-append-size")), "{err}");
    assert_eq!(store.head(), 0);
    // Nothing was sent, so the store goes on.
    store.append("s", ExpectedRevision::Any, vec![event("small", 1)]).await.expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_a_read_page_is_read_whole() {
    let store = KurrentStore::open(MemoryWire::new(), ns("long"), quick()).await.expect("open");
    let chunks = kurrent::READ_PAGE_EVENTS as u64 / 100 + 2;
    let n = chunks * 100;
    for chunk in 0..chunks {
        let events = (0..100).map(|k| event(&format!("l{chunk}-{k}"), chunk * 100 + k)).collect();
        store.append("long", ExpectedRevision::Any, events).await.expect("append");
    }
    let stream = store.read_stream("long", 0, usize::MAX).await.expect("stream");
    assert_eq!(stream.len() as u64, n);
    assert!(stream.iter().enumerate().all(|(i, e)| e.revision == i as u64 && e.position == i as u64));
    let tail = store.read_stream("long", n - 10, 100).await.expect("tail");
    assert_eq!(tail.iter().map(|e| e.revision).collect::<Vec<_>>(), (n - 10..n).collect::<Vec<_>>());
    let some = store.read_stream("long", 5, 4100).await.expect("a page and a bit");
    assert_eq!((some.len(), some[0].revision, some[4099].revision), (4100, 5, 4104));
}

/// A reader that keeps refreshing while the writer appends more than a read page at once:
/// the append is still found in `$all`, and both see the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_append_beside_a_refreshing_reader() {
    let wire = Arc::new(MemoryWire::new());
    let writer = Arc::new(KurrentStore::open(wire.clone(), ns("busy"), quick()).await.expect("writer"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (reader_store, reader_stop) = (writer.clone(), stop.clone());
    let reader = tokio::spawn(async move {
        let mut reads = 0u64;
        while !reader_stop.load(std::sync::atomic::Ordering::SeqCst) {
            let head = reader_store.head();
            reader_store.read_all(head, 10).await.expect("a refreshing read");
            reads += 1;
            tokio::task::yield_now().await;
        }
        reads
    });
    let n = kurrent::READ_PAGE_EVENTS as u64 + 500;
    for round in 0..3u64 {
        let events = (0..n).map(|k| event(&format!("b{round}-{k}"), k)).collect();
        let appended = writer.append("bulk", ExpectedRevision::Any, events).await.expect("append");
        assert_eq!(appended.first_position, round * n);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.await.expect("reader") > 0);
    assert_eq!(writer.head(), 3 * n);
    let fresh = KurrentStore::open(wire, ns("busy"), quick()).await.expect("reopen");
    assert_eq!((fresh.head(), fresh.head_hash()), (writer.head(), writer.head_hash()));
}

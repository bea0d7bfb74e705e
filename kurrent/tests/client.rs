//! The real KurrentDB client (feature `kurrentdb`) where no server is needed: a wrong
//! connection string is refused with the reason, and an address where no server listens is
//! an error within the call timeout, never a hang.
#![cfg(feature = "kurrentdb")]

use std::time::{Duration, Instant};

use kurrent::client::KurrentWire;
use kurrent::mapping::StoreUrl;
use kurrent::{KurrentOptions, KurrentStore, OpenError};

#[test]
fn a_wrong_connection_string_is_refused_with_the_reason() {
    for bad in ["kurrentdb://localhost:notaport", "kurrentdb://localhost:2113?tls=maybe"] {
        let url = StoreUrl::parse(bad).expect("posledger's part parses");
        let err = KurrentWire::connect(&url).err().expect("the client refuses it");
        assert!(err.contains("not a KurrentDB connection string"), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_where_no_server_listens_fails_in_bounded_time() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = StoreUrl::parse(&format!("kurrentdb://127.0.0.1:{port}?tls=false&namespace=t")).expect("url");
    let wire = KurrentWire::connect(&url).expect("a client connects lazily");
    let options = KurrentOptions { call_timeout: Duration::from_secs(3), ..KurrentOptions::default() };
    let started = Instant::now();
    let err = KurrentStore::open(wire, url.namespace.clone(), options).await.err().expect("no server");
    assert!(matches!(err, OpenError::Server(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    eprintln!("after {:?}: {err}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_never_answers_fails_in_bounded_time() {
    // The kernel completes the connection; nothing ever speaks on it.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = stalled.local_addr().expect("addr").port();
    let url = StoreUrl::parse(&format!("kurrentdb://127.0.0.1:{port}?tls=false&namespace=t")).expect("url");
    let wire = KurrentWire::connect(&url).expect("client");
    let options = KurrentOptions { call_timeout: Duration::from_secs(2), ..KurrentOptions::default() };
    let started = Instant::now();
    let err = KurrentStore::open(wire, url.namespace.clone(), options).await.err().expect("no answer");
    assert!(matches!(err, OpenError::Server(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    eprintln!("after {:?}: {err}", started.elapsed());
    drop(stalled);
}

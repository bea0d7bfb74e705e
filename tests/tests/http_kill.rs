//! Ingest over HTTP survives `kill -9`: batches are posted to `posledger serve` (a child
//! process) from two clients until the server is killed mid-stream; after a restart every
//! record the server acknowledged is in the log exactly once, and posting every batch again
//! answers duplicates for those.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../analytics/tests/fixtures/small").join(name)
}

/// Starts the server on an ephemeral port and returns it with its address.
fn serve(data: &Path) -> (Child, SocketAddr) {
    tests::serve(POSLEDGER, data)
}

/// Posts a body; `None` when the connection broke before a whole answer came.
fn post(addr: SocketAddr, token: &str, body: &[u8]) -> Option<serde_json::Value> {
    match tests::http(addr, "POST", "/v1/transactions", token, body) {
        Ok((200, body)) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

/// The sales of M000001 the two clients post.
const SALES: tests::Sales<'static> = tests::Sales {
    tag: "K",
    terminal: "T0001001",
    batch_no: "000002",
    rrn: "7",
    channel_txn: "4200000001",
    amount: "12.34",
    at: "2026-11-25T10:00:00+08:00",
    payer: "oKill",
};

/// Batch `b` of `n` sales of M000001, each with its own ids.
fn batch(b: usize, n: usize) -> Vec<u8> {
    SALES.ndjson(b * n, n)
}

#[test]
fn every_acknowledged_record_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let status = Command::new(POSLEDGER)
        .args([
            "--data-dir",
            &data.display().to_string(),
            "merchants",
            "import",
            &fixture("admin.ndjson").display().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("admin");
    assert!(status.success());
    let key = Command::new(POSLEDGER)
        .args(["--data-dir", &data.display().to_string(), "keys", "create", "--role", "admin"])
        .stderr(Stdio::null())
        .output()
        .expect("key");
    let token = String::from_utf8(key.stdout).expect("utf8").trim().to_owned();

    let (mut server, addr) = serve(&data);
    let (batches, per_batch) = (400, 50);
    // Two clients post alternate batches; the server is killed once 60 batches are answered.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (acked, answered, token) = (acked.clone(), answered.clone(), token.clone());
            std::thread::spawn(move || {
                for b in (c..batches).step_by(2) {
                    let Some(answer) = post(addr, &token, &batch(b, per_batch)) else { return };
                    let mut acked = acked.lock().expect("lock");
                    for (i, r) in answer["results"].as_array().expect("results").iter().enumerate() {
                        assert_eq!(r["result"], "accepted", "{r}");
                        acked.insert(format!("K{:07}", b * per_batch + i), r["position"].as_u64().expect("position"));
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 60 {
        std::thread::yield_now();
    }
    server.kill().expect("kill -9");
    server.wait().expect("reaped");
    for c in clients {
        c.join().expect("client");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 60 * per_batch, "{}", acked.len());

    // Restart: every batch again. What was acknowledged is a duplicate at the same position;
    // the rest is accepted now.
    let (mut server, addr) = serve(&data);
    let mut seen = BTreeSet::new();
    for b in 0..batches {
        let answer = post(addr, &token, &batch(b, per_batch)).expect("answer after restart");
        for (i, r) in answer["results"].as_array().expect("results").iter().enumerate() {
            let txn = format!("K{:07}", b * per_batch + i);
            if let Some(position) = acked.get(&txn) {
                assert_eq!(r["result"], "duplicate", "{txn} was acknowledged");
                assert_eq!(r["position"].as_u64(), Some(*position), "{txn}");
            }
            seen.insert(txn);
        }
    }
    // The log holds each sale exactly once.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("\"PaymentCaptured\"")) {
        let start = line.find("\"txn_id\":\"").expect("txn_id") + 10;
        let txn = &line[start..start + 8];
        *counts.entry(txn.to_owned()).or_default() += 1;
    }
    server.kill().expect("stop");
    let _ = server.wait();
    assert_eq!(counts.len(), batches * per_batch, "every sale stored");
    assert!(counts.values().all(|n| *n == 1), "none twice");
    assert_eq!(seen.len(), batches * per_batch);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    // The server is asked to stop (SIGTERM) right after a large batch was sent: the batch is
    // answered in full, the server exits cleanly, and after a restart it is all there.
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.display().to_string();
    let admin = fixture("admin.ndjson").display().to_string();
    assert!(
        Command::new(POSLEDGER)
            .args(["--data-dir", &d, "merchants", "import", &admin])
            .stdout(Stdio::null())
            .status()
            .expect("admin")
            .success()
    );
    let key = Command::new(POSLEDGER)
        .args(["--data-dir", &d, "keys", "create", "--role", "admin"])
        .stderr(Stdio::null())
        .output()
        .expect("key");
    let token = String::from_utf8(key.stdout).expect("utf8").trim().to_owned();
    let (mut server, addr) = serve(&data);
    let body = batch(0, 20_000);
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /v1/transactions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&body).expect("body");
    let term = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().expect("kill -TERM");
    assert!(term.success());
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("the answer");
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw[..raw.len().min(200)]));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let answer: serde_json::Value = serde_json::from_slice(&raw[split + 4..]).expect("json");
    assert_eq!(answer["accepted"], 20_000);
    assert!(server.wait().expect("exit").success(), "a clean exit");
    let (mut server, addr) = serve(&data);
    let again = post(addr, &token, &body).expect("answer");
    assert_eq!(again["duplicates"], 20_000, "all of it is there");
    server.kill().expect("stop");
    let _ = server.wait();
}

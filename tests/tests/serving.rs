//! Every command works while `posledger serve` holds the data directory: the command line goes
//! through the server's local socket and prints what it prints without a server. A server
//! killed with `kill -9` leaves a socket nobody answers on, which the next command and the
//! next server see through; a second server on one directory is refused; a server that does
//! not answer is reported, not waited for.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::time::{Duration, Instant};
use tests::Server;

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/day").join(name).display().to_string()
}

fn posledger(data: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(POSLEDGER);
    cmd.arg("--data-dir").arg(data).args(args).stdin(Stdio::null());
    cmd.output().expect("run posledger")
}

/// Posts records over HTTP; the answer's `accepted` count, or what went wrong.
fn post(addr: SocketAddr, token: &str, body: &[u8]) -> Result<u64, String> {
    match tests::http(addr, "POST", "/v1/transactions", token, body) {
        Ok((200, body)) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            answer["accepted"].as_u64().ok_or_else(|| answer.to_string())
        }
        Ok((status, body)) => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
        Err(e) => Err(e.to_string()),
    }
}

/// The live sales of M000001 on T0000100 (batch 739946, open on the 26th).
const LIVE: tests::Sales<'static> = tests::Sales {
    tag: "LIVE",
    terminal: "T0000100",
    batch_no: "739946",
    rrn: "8",
    channel_txn: "4200000009",
    amount: "8.80",
    at: "2026-11-26T10:00:00+08:00",
    payer: "oLive",
};

/// A GET's body, `None` unless 200.
fn get(addr: SocketAddr, path: &str, token: &str) -> Option<String> {
    match tests::http(addr, "GET", path, token, b"") {
        Ok((200, body)) => Some(String::from_utf8_lossy(&body).into_owned()),
        _ => None,
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Onboards the fixture's merchants in `data` and serves it: the server and an admin's key.
fn serve_fixture_merchants(data: &Path) -> (Server, String) {
    assert_eq!(posledger(data, &["merchants", "import", &fixture("admin.ndjson")]).status.code(), Some(0));
    let token = text(&posledger(data, &["keys", "create", "--role", "admin"])).trim().to_owned();
    (Server::start(POSLEDGER, data), token)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The same commands on two data directories, one with a server running on it and one
/// without: the same output (the directory's own path aside) and the same exit code.
#[test]
fn every_command_answers_alike_with_and_without_a_server() {
    let root = tempfile::tempdir().expect("tempdir");
    let (served, alone) = (root.path().join("served"), root.path().join("alone"));
    let statements = [
        ("wechat", fixture("statements/wechat-2026-11-24.csv")),
        ("alipay", fixture("statements/alipay-2026-11-24.csv")),
        ("unionpay", fixture("statements/unionpay-2026-11-24.txt")),
    ];
    let admin = fixture("admin.ndjson");
    let feed = fixture("feed-2026-11-24.ndjson");
    let mut commands: Vec<Vec<String>> = vec![
        vec!["merchants".into(), "import".into(), admin.clone(), "--format".into(), "json".into()],
        vec!["ingest".into(), feed.clone(), "--format".into(), "json".into()],
        vec!["ingest".into(), feed.clone()],
    ];
    for (channel, file) in &statements {
        commands.push(vec!["statement".into(), "import".into(), "--channel".into(), (*channel).into(), file.clone()]);
    }
    commands.push(vec!["statement".into(), "import".into(), "--channel".into(), "wechat".into(), admin.clone()]);
    let reports = ["table", "json", "csv"];
    for f in reports {
        commands.push(vec!["reconcile".into(), "--date".into(), "2026-11-24".into(), "--format".into(), f.into()]);
    }
    commands.push(vec!["merchants".into(), "import".into(), admin.clone(), "--format".into(), "json".into()]);
    for args in [
        "keys list",
        "breaks --format json",
        "breaks --open",
        "settle --date 2026-11-25 --format json",
        "settle --date 2026-11-25",
        "balance liabilities:merchant:M000001:payable",
        "balance assets:clearing:wechat --as-of 2026-11-24T12:00:00+08:00 --format json",
        "balance assets:clearing:wechat --as-of 100",
        "trial-balance --format csv",
        "trial-balance --as-of 2026-11-24T23:59:59+08:00",
        "history assets:bank:settlement --limit 5 --format json",
        "replay --until 300 --format json",
        "replay --until yesterday",
        "journal --until 200",
        "export --format json",
        "query --list",
        "query channel_mix --format csv",
        "query --sql SELECT_1",
        "query --format csv --sql SELECT_WIDE",
        "analyze basket --format json",
        "balance not-an-account",
        "settle --date not-a-date",
    ] {
        let mut words: Vec<String> = args.split(' ').map(str::to_owned).collect();
        if let Some(w) = words.iter_mut().find(|w| *w == "SELECT_1") {
            *w = "SELECT COUNT(*) AS n FROM payments".into();
        }
        if let Some(w) = words.iter_mut().find(|w| *w == "SELECT_WIDE") {
            // A reply of several frames (over 8 MiB) through the socket.
            *w = "SELECT p.*, repeat('x', 600) AS pad FROM postings p CROSS JOIN (VALUES (1), (2), (3), (4), (5), \
                  (6), (7), (8), (9), (10)) AS t(n) ORDER BY p.position, p.account, p.currency, t.n"
                .into();
        }
        commands.push(words);
    }
    let mut server = None;
    for (i, command) in commands.iter().enumerate() {
        if i == 1 {
            // The server starts once the merchants are in: the commands after go through it.
            server = Some(Server::start(POSLEDGER, &served));
        }
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let (a, b) = (posledger(&served, &args), posledger(&alone, &args));
        let normalise = |out: &Output, dir: &Path| text(out).replace(&dir.display().to_string(), "DIR");
        if command.iter().any(|w| w.contains("repeat(")) {
            assert!(a.stdout.len() > 8 << 20, "a reply of several frames: {} bytes", a.stdout.len());
        }
        assert_eq!(
            (a.status.code(), normalise(&a, &served)),
            (b.status.code(), normalise(&b, &alone)),
            "{command:?}\nwith a server, stderr: {}\nwithout, stderr: {}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
    }
    // verify: the same books; the log's commits differ (the server made them), not its events.
    let (a, b) =
        (posledger(&served, &["verify", "--format", "json"]), posledger(&alone, &["verify", "--format", "json"]));
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)), "{}\n{}", text(&a), text(&b));
    let (a, b) = (json(&a), json(&b));
    assert_eq!((&a["events"], &a["books"]["digest"]), (&b["events"], &b["books"]["digest"]));
    let server = server.expect("started");
    server.stop();
    assert!(!served.join("posledger.sock").exists(), "a clean stop removes the socket");
    // Without the server the same directory answers alike again (its checkpoints saved).
    let after = posledger(&served, &["verify", "--format", "json"]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
}

/// While terminals post to the server, the command line's ingest, reads and verify run beside
/// them; every record either side was told is stored is there exactly once.
#[test]
fn commands_run_while_terminals_post() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path();
    let (server, token) = serve_fixture_merchants(data);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let terminal = {
        let (stop, token) = (stop.clone(), token.clone());
        std::thread::spawn(move || {
            let (mut accepted, mut batch) = (0u64, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                accepted += post(addr, &token, &LIVE.ndjson(batch * 200, 200)).unwrap_or_else(|e| panic!("{e}"));
                batch += 1;
            }
            (accepted, batch * 200)
        })
    };
    let ingested = posledger(data, &["ingest", &fixture("feed-2026-11-24.ndjson"), "--format", "json"]);
    assert_eq!(ingested.status.code(), Some(0), "{}", String::from_utf8_lossy(&ingested.stderr));
    assert_eq!(json(&ingested)["accepted"], 429);
    for _ in 0..3 {
        let tb = posledger(data, &["trial-balance", "--format", "json"]);
        assert_eq!(tb.status.code(), Some(0));
        let sum: rust_decimal::Decimal = json(&tb)["balances"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["balance"].as_str().expect("balance").parse::<rust_decimal::Decimal>().expect("decimal"))
            .sum();
        assert!(sum.is_zero(), "the trial balance is zero while ingest goes on: {sum}");
        let verify = posledger(data, &["verify", "--format", "json"]);
        assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (accepted, posted) = terminal.join().expect("terminal");
    assert_eq!(accepted as usize, posted, "every live sale was new");
    server.stop();
    // Everything once: the admin records, the feed, the live sales.
    let verify = json(&posledger(data, &["verify", "--format", "json"]));
    assert_eq!(verify["events"].as_u64(), Some(62 + 429 + accepted));
    let again = json(&posledger(data, &["ingest", &fixture("feed-2026-11-24.ndjson"), "--format", "json"]));
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(429)));
}

/// `kill -9` of the server during a command-line ingest through it: every record the command
/// reported accepted is in the log exactly once after a restart; the socket left behind is
/// seen through by the next command and removed by the next server.
#[test]
fn a_server_killed_during_a_cli_ingest_loses_and_doubles_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let records = 300_000;
    let shape = ingest::generate::Shape { merchants: 50, terminals_per_merchant: 2, seed: 5 };
    let (admin, feed) = tests::generated_feed(root.path(), shape, records);
    let admin_out = posledger(&data, &["merchants", "import", &admin.display().to_string(), "--format", "json"]);
    let admin_events = json(&admin_out)["accepted"].as_u64().expect("accepted");
    let auditor = text(&posledger(&data, &["keys", "create", "--role", "auditor"])).trim().to_owned();
    let mut server = Server::start(POSLEDGER, &data);
    let client = Command::new(POSLEDGER)
        .arg("--data-dir")
        .arg(&data)
        .args(["ingest", &feed.display().to_string(), "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ingest");
    // Kill the server once part of the feed is in the log (the server's own head says).
    let started = Instant::now();
    loop {
        let head = get(server.addr, "/metrics", &auditor)
            .and_then(|m| m.lines().find_map(|l| l.strip_prefix("posledger_log_head ")?.parse::<u64>().ok()));
        if head.is_some_and(|h| h >= admin_events + 20_000) || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill_9();
    let out = client.wait_with_output().expect("ingest ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reported = json(&out);
    let accepted = reported["accepted"].as_u64().expect("accepted");
    if out.status.code() == Some(0) {
        // The whole feed went in before the kill: nothing to check about a cut.
        assert_eq!(accepted, records);
    } else {
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("went away") && stderr.contains("stores nothing twice"), "{stderr}");
        assert!(accepted > 0 && accepted < records, "part of the feed was acknowledged: {accepted}");
    }
    // The socket is left behind; a command sees nobody answers and opens the directory itself.
    assert!(data.join("posledger.sock").exists());
    let started = Instant::now();
    let again = posledger(&data, &["ingest", &feed.display().to_string(), "--format", "json"]);
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    let again = json(&again);
    assert_eq!(again["accepted"].as_u64().expect("n") + again["duplicates"].as_u64().expect("n"), records);
    assert!(again["duplicates"].as_u64().expect("n") >= accepted, "every acknowledged record was there");
    // A new server removes the stale socket and serves; the log holds every record once.
    let server = Server::start(POSLEDGER, &data);
    let verify = posledger(&data, &["verify", "--format", "json"]);
    assert_eq!(json(&verify)["events"].as_u64(), Some(admin_events + records), "{}", text(&verify));
    let third = json(&posledger(&data, &["ingest", &feed.display().to_string(), "--format", "json"]));
    assert_eq!((third["accepted"].as_u64(), third["duplicates"].as_u64()), (Some(0), Some(records)));
    server.stop();
}

/// A second server on the same directory is refused with a message naming the first; a
/// server that stops answering (SIGSTOP) is reported by a command within seconds.
#[test]
fn two_servers_are_refused_and_a_silent_server_is_reported() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path();
    assert_eq!(posledger(data, &["merchants", "import", &fixture("admin.ndjson")]).status.code(), Some(0));
    let server = Server::start(POSLEDGER, data);
    let second = Command::new(POSLEDGER)
        .args(["--data-dir", &data.display().to_string(), "serve", "--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("second server");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("already serving") && stderr.contains(&server.child.id().to_string()),
        "names the running server: {stderr}"
    );
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().is_ok_and(|s| s.success()));
    let started = Instant::now();
    let out = posledger(data, &["balance", "assets:bank:settlement"]);
    let waited = started.elapsed();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().is_ok_and(|s| s.success()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not answer"), "{stderr}");
    assert!(waited < Duration::from_secs(15), "reported within seconds, not a hang: {waited:?}");
    // Awake again, it answers.
    assert_eq!(posledger(data, &["balance", "assets:bank:settlement"]).status.code(), Some(0));
    server.stop();
}

/// A data directory too deep for a socket address: the socket lives under the temporary
/// directory and the data directory names it; commands find it; a clean stop removes both.
#[test]
fn a_deep_data_directory_is_served_too() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("a-rather-long-directory-name-for-the-data".repeat(3));
    assert!(data.join("posledger.sock").as_os_str().len() > 108);
    assert_eq!(posledger(&data, &["merchants", "import", &fixture("admin.ndjson")]).status.code(), Some(0));
    let alone = posledger(&data, &["trial-balance", "--format", "json"]);
    assert_eq!(alone.status.code(), Some(0), "no server: the long path is no obstacle");
    let server = Server::start(POSLEDGER, &data);
    let pointer = std::fs::read_to_string(data.join("posledger.sock")).expect("a file naming the socket");
    assert!(Path::new(&pointer).exists(), "{pointer}");
    let served = posledger(&data, &["trial-balance", "--format", "json"]);
    assert_eq!((served.status.code(), text(&served)), (Some(0), text(&alone)));
    let ingest = posledger(&data, &["ingest", &fixture("feed-2026-11-24.ndjson"), "--format", "json"]);
    assert_eq!(json(&ingest)["accepted"], 429, "{}", String::from_utf8_lossy(&ingest.stderr));
    server.stop();
    assert!(!data.join("posledger.sock").exists() && !Path::new(&pointer).exists());
}

/// More commands than the server serves at once: the next one is told it is busy (exit 2),
/// in so many words.
#[test]
fn a_busy_server_says_so() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path();
    assert_eq!(posledger(data, &["merchants", "import", &fixture("admin.ndjson")]).status.code(), Some(0));
    let server = Server::start(POSLEDGER, data);
    let idle: Vec<_> = (0..16)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(data.join("posledger.sock")).expect("connect");
            let mut len = [0u8; 4];
            s.read_exact(&mut len).expect("hello");
            s
        })
        .collect();
    let out = posledger(data, &["balance", "assets:bank:settlement"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("serving 16 commands already"), "{stderr}");
    drop(idle);
    // Once they leave, the next command is served.
    let started = Instant::now();
    loop {
        let out = posledger(data, &["balance", "assets:bank:settlement"]);
        if out.status.code() == Some(0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
}

/// A command that stops reading what the server sends (a journal piped into a reader that
/// does not read) does not keep a stopping server alive past its grace.
#[test]
fn a_stalled_command_does_not_hold_a_stopping_server() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let shape = ingest::generate::Shape { merchants: 20, terminals_per_merchant: 2, seed: 9 };
    let (admin, feed) = tests::generated_feed(root.path(), shape, 40_000);
    assert_eq!(posledger(&data, &["merchants", "import", &admin.display().to_string()]).status.code(), Some(0));
    assert_eq!(posledger(&data, &["ingest", &feed.display().to_string()]).status.code(), Some(0));
    let mut server = Server::start(POSLEDGER, &data);
    // The journal's reader never reads: the command blocks writing, the server writing to it.
    let mut stalled = Command::new(POSLEDGER)
        .arg("--data-dir")
        .arg(&data)
        .arg("journal")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("journal");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().is_ok_and(|s| s.success()));
    let status = server.child.wait().expect("wait");
    let waited = started.elapsed();
    let _ = stalled.kill();
    let _ = stalled.wait();
    assert!(status.success(), "{status}");
    assert!(waited < Duration::from_secs(50), "stopped within its grace: {waited:?}");
    assert!(!data.join("posledger.sock").exists());
}

/// While a server runs, the books follow the log on their own: after terminals post, the
/// books' lag falls to zero with no read asking for them (`/metrics` only looks).
#[test]
fn the_books_follow_the_log_without_a_read() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path();
    let (server, token) = serve_fixture_merchants(data);
    let lag = || {
        get(server.addr, "/metrics", &token).and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("posledger_projection_lag_events ")?.parse::<u64>().ok())
        })
    };
    assert_eq!(lag(), Some(0), "the server opened its books");
    assert_eq!(post(server.addr, &token, &LIVE.ndjson(0, 500)), Ok(500));
    let started = Instant::now();
    while lag() != Some(0) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lag(), Some(0), "the books caught up on their own");
    server.stop();
}

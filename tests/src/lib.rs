//! End-to-end tests of posledger across crates; the tests live in `tests/tests/`, the
//! fixtures in `tests/fixtures/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Waits for `child` to exit, at most `limit`: past it the child is killed and the test fails,
/// naming `what` took too long.
pub fn wait_with_limit(child: &mut Child, limit: std::time::Duration, what: &str) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took longer than {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), with a bearer key: the
/// status and the body (a chunked body decoded). An error when the connection broke
/// before a whole answer came.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let broken = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no whole answer");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(broken)?;
    let status = std::str::from_utf8(&raw[..split])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(broken)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked")) {
        return Ok((status, chunks(body).ok_or_else(broken)?));
    }
    Ok((status, body.to_vec()))
}

/// The data of a chunked body, `None` when it is cut short.
fn chunks(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).ok()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(end + 2..end + 2 + size)?);
        data = data.get(end + 4 + size..)?;
    }
}

/// Starts `exe serve` on `data` on an ephemeral port: the process and its HTTP address.
pub fn serve(exe: &str, data: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(exe)
        .args(["--data-dir", &data.display().to_string(), "serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let addr = line.trim().strip_prefix("listening on http://").expect("address").parse().expect("addr");
    (child, addr)
}

/// A generated admin file and terminal feed of `records` records in `dir`: their paths.
pub fn generated_feed(dir: &Path, shape: ingest::generate::Shape, records: u64) -> (PathBuf, PathBuf) {
    let (admin, feed) = (dir.join("admin.ndjson"), dir.join("feed.ndjson"));
    ingest::generate::write_admin(&mut std::fs::File::create(&admin).expect("admin"), shape).expect("write");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&feed).expect("feed"));
    ingest::generate::write_feed(&mut out, shape, records).expect("write");
    out.flush().expect("write");
    (admin, feed)
}

/// A server on the data directory, on an ephemeral port; it is killed when dropped.
pub struct Server {
    /// The server process.
    pub child: Child,
    /// Its HTTP address.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `exe serve` on `data`.
    pub fn start(exe: &str, data: &Path) -> Server {
        let (child, addr) = serve(exe, data);
        // The socket listens before the address is printed.
        assert!(data.join("posledger.sock").exists());
        Server { child, addr }
    }

    /// Kills it with SIGKILL.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM and checks it stopped cleanly.
    pub fn stop(mut self) {
        let signalled = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(signalled.is_ok_and(|s| s.success()));
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "the server stopped cleanly: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sales a test's terminal posts: `n` sales from number `first` on, each with its own ids
/// (`txn_id` the tag and the number, `rrn` and `channel_txn_id` led by the digits given).
pub struct Sales<'a> {
    /// Leads every `txn_id`.
    pub tag: &'a str,
    /// The terminal (of merchant M000001).
    pub terminal: &'a str,
    /// Its open batch.
    pub batch_no: &'a str,
    /// Leads every `rrn` (one digit).
    pub rrn: &'a str,
    /// Leads every WeChat order number (ten digits).
    pub channel_txn: &'a str,
    /// Each sale's amount.
    pub amount: &'a str,
    /// When they happened.
    pub at: &'a str,
    /// The payer.
    pub payer: &'a str,
}

impl Sales<'_> {
    /// Sales `first..first + n` as NDJSON.
    pub fn ndjson(&self, first: usize, n: usize) -> Vec<u8> {
        let mut out = String::new();
        for k in first..first + n {
            out.push_str(
                &serde_json::json!({
                    "kind": "sale", "txn_id": format!("{}{k:07}", self.tag), "merchant_id": "M000001",
                    "terminal_id": self.terminal, "batch_no": self.batch_no, "stan": format!("{:06}", k % 1_000_000),
                    "rrn": format!("{}{k:011}", self.rrn), "channel": "wechat",
                    "channel_txn_id": format!("{}{k:018}", self.channel_txn), "amount": self.amount,
                    "currency": "CNY", "at": self.at, "mcc": "5812", "payer": self.payer
                })
                .to_string(),
            );
            out.push('\n');
        }
        out.into_bytes()
    }
}

/// `exe demo --serve` on `data` on an ephemeral port, with the key it printed for every role;
/// killed when dropped.
pub struct Demo {
    /// The server, its address and process.
    pub server: Server,
    /// The keys by role (`admin`, `analyst`, `auditor`, `finance`, `terminal`).
    pub keys: std::collections::BTreeMap<String, String>,
    reading: Vec<std::thread::JoinHandle<()>>,
}

impl Demo {
    /// Generates the demo with `args` (its sizes) and serves it, with `env` set for the server.
    pub fn start(exe: &str, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Demo {
        let mut child = Command::new(exe)
            .arg("--data-dir")
            .arg(data)
            .arg("demo")
            .args(args)
            .args(["--serve", "--addr", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, received) = std::sync::mpsc::channel();
        let keys_read = std::thread::spawn(move || {
            let mut keys = std::collections::BTreeMap::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let [role, token, ..] = words.as_slice()
                    && token.starts_with("plk_")
                {
                    keys.insert(role.to_string(), token.to_string());
                }
                if line.starts_with("commands on") {
                    let _ = sender.send(std::mem::take(&mut keys));
                }
            }
            // Read on until the server exits, so that nothing it writes meets a closed pipe.
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut addr = None;
        for line in stdout.by_ref().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening on http://") {
                addr = Some(a.parse::<SocketAddr>().expect("address"));
                break;
            }
        }
        let server = Server { child, addr: addr.expect("the server's address") };
        let stdout_read = std::thread::spawn(move || stdout.map_while(Result::ok).for_each(drop));
        let keys = received.recv_timeout(std::time::Duration::from_secs(120)).expect("keys");
        Demo { server, keys, reading: vec![keys_read, stdout_read] }
    }

    /// Stops the server with SIGTERM and checks it stopped cleanly.
    pub fn stop(self) {
        self.server.stop();
        for r in self.reading {
            r.join().expect("output read");
        }
    }
}

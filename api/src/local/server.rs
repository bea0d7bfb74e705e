//! The server side of the local socket: accepts the data directory owner's command-line
//! clients while `posledger serve` runs, and answers each on a thread of its own with the
//! server's [`App`].
//!
//! The socket is `DATA_DIR/posledger.sock` when that path fits a socket address
//! ([`SOCKET_PATH_BYTES_MAX`]); a data directory deeper than that gets its socket in a private
//! directory under the system's temporary directory, and `DATA_DIR/posledger.sock` is then a
//! small file naming it.

use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use app::records::Stopped;
use app::{App, Class, Failure};
use ingest::pipeline::{IngestSummary, InputKind};

use super::wire::{self, Hello, Opening};

/// Clients served at once; more are told the server is busy.
pub const CONNECTIONS_MAX: usize = 16;
/// How long a new client may take to say what it wants, and how long a client may leave what
/// the server writes unread, before the server drops it.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of input one request may send (a statement file).
pub const INPUT_BYTES_MAX: u64 = ingest::statement::STATEMENT_BYTES_MAX;
/// Requests with input (statement files) read at once; more are told the server is busy, so
/// the memory they hold stays bounded.
pub const INPUTS_RUNNING_MAX: usize = 2;
/// How long a stopping server lets its clients finish before it cuts their connections.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// Longest path a Unix socket address holds here (108 bytes with its terminating zero).
pub const SOCKET_PATH_BYTES_MAX: usize = 107;

/// The clients being served, and their connections (to cut when stopping takes too long).
#[derive(Default)]
struct Clients {
    count: usize,
    inputs: usize,
    next: u64,
    streams: Vec<(u64, UnixStream)>,
}

/// What the accepting task and the client threads share.
struct Shared {
    app: Arc<App>,
    runtime: tokio::runtime::Handle,
    hello: Hello,
    stopping: AtomicBool,
    clients: Mutex<Clients>,
    left: Condvar,
}

/// The socket server; [`LocalServer::stop`] ends it.
pub struct LocalServer {
    /// Where the socket is.
    pub socket: PathBuf,
    /// The pointer file in the data directory, for a socket kept elsewhere.
    pointer: Option<PathBuf>,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
    stop_accepting: Arc<tokio::sync::Notify>,
}

/// Where a data directory's socket goes: its own path when short enough, else a private
/// directory under the temporary directory named by a hash of the data directory.
fn socket_place(data_socket: &Path) -> PathBuf {
    if data_socket.as_os_str().len() <= SOCKET_PATH_BYTES_MAX {
        return data_socket.to_owned();
    }
    let absolute = std::path::absolute(data_socket).unwrap_or_else(|_| data_socket.to_owned());
    let hash = blake3::hash(absolute.as_os_str().as_encoded_bytes()).to_hex();
    std::env::temp_dir().join(format!("posledger-{}", &hash[..16])).join("sock")
}

impl LocalServer {
    /// Listens on the data directory's socket. The caller holds the store, so a socket file
    /// found there was left by a server that was killed: it is removed first.
    pub fn start(app: Arc<App>, runtime: tokio::runtime::Handle, http: Option<String>) -> io::Result<LocalServer> {
        let data_socket = app.dir().socket();
        match std::fs::remove_file(&data_socket) {
            Ok(()) => eprintln!("removed the socket {} a stopped server left behind", data_socket.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let socket = socket_place(&data_socket);
        let pointer = (socket != data_socket).then(|| data_socket.clone());
        // Bound inside a directory only the owner can enter, made owner-only, then moved into
        // place: no other user can connect, not even in the moment before the mode is set.
        let parent = socket.parent().unwrap_or(Path::new("."));
        if pointer.is_some() {
            let _ = std::fs::remove_dir_all(parent);
            std::fs::DirBuilder::new().mode(0o700).create(parent)?;
        }
        let private = parent.join(format!(".s{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new().mode(0o700).create(&private)?;
        let bound = private.join("sock");
        let listener = (|| {
            let listener = std::os::unix::net::UnixListener::bind(&bound)?;
            std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&bound, &socket)?;
            listener.set_nonblocking(true)?;
            Ok::<_, io::Error>(listener)
        })();
        let _ = std::fs::remove_dir_all(&private);
        let listener = listener?;
        if let Some(pointer) = &pointer {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode_owner_only().open(pointer)?;
            file.write_all(socket.as_os_str().as_encoded_bytes())?;
            file.sync_all()?;
        }
        let hello = Hello {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: wire::PROTOCOL_VERSION,
            http,
            refused: None,
        };
        let shared = Arc::new(Shared {
            app,
            runtime: runtime.clone(),
            hello,
            stopping: AtomicBool::new(false),
            clients: Mutex::new(Clients::default()),
            left: Condvar::new(),
        });
        let stop_accepting = Arc::new(tokio::sync::Notify::new());
        let accept = {
            let _entered = runtime.enter();
            let listener = tokio::net::UnixListener::from_std(listener)?;
            let (shared, stop) = (shared.clone(), stop_accepting.clone());
            runtime.spawn(async move {
                loop {
                    let conn = tokio::select! {
                        _ = stop.notified() => break,
                        conn = listener.accept() => conn,
                    };
                    match conn.and_then(|(s, _)| s.into_std()) {
                        Ok(stream) => take(&shared, stream),
                        // Out of file descriptors and the like: a moment's pause, not a spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        };
        Ok(LocalServer { socket, pointer, shared, accept, stop_accepting })
    }

    /// Stops accepting, lets the clients being served finish (for at most [`STOP_GRACE`],
    /// then cuts their connections; an ingest stops between chunks), and removes the socket.
    pub fn stop(self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.stop_accepting.notify_one();
        let _ = self.shared.runtime.block_on(self.accept);
        let mut clients = self.shared.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while clients.count > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                for (_, stream) in &clients.streams {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
                clients = self.shared.left.wait(clients).unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            clients = self.shared.left.wait_timeout(clients, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        drop(clients);
        let _ = std::fs::remove_file(&self.socket);
        if let Some(pointer) = &self.pointer {
            let _ = std::fs::remove_file(pointer);
            if let Some(dir) = self.socket.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_owner_only(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// A client's place among those served; leaving frees it (a panic too).
struct Place<'a> {
    shared: &'a Shared,
    id: u64,
    input: bool,
}

impl Place<'_> {
    /// Takes one of the [`INPUTS_RUNNING_MAX`] places for a request with input.
    fn with_input(&mut self) -> Result<(), Failure> {
        let mut clients = self.shared.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if clients.inputs >= INPUTS_RUNNING_MAX {
            return Err(Failure::new(
                Class::Busy,
                "too_many_inputs",
                format!("the server is reading {INPUTS_RUNNING_MAX} statement files already; try again shortly"),
            ));
        }
        clients.inputs += 1;
        self.input = true;
        Ok(())
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut clients = self.shared.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients.count -= 1;
        if self.input {
            clients.inputs -= 1;
        }
        clients.streams.retain(|(id, _)| *id != self.id);
        self.shared.left.notify_all();
    }
}

/// Takes a new client: served on a thread of its own, or told the server is busy.
fn take(shared: &Arc<Shared>, stream: UnixStream) {
    if let Err(e) = stream.set_nonblocking(false) {
        eprintln!("a local client: {e}");
        return;
    }
    let id = {
        let mut clients = shared.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if clients.count >= CONNECTIONS_MAX {
            drop(clients);
            let failure = Failure::new(
                Class::Busy,
                "too_many_clients",
                format!("the server is serving {CONNECTIONS_MAX} commands already; try again shortly"),
            );
            refuse(stream, &shared.hello, failure);
            return;
        }
        clients.count += 1;
        clients.next += 1;
        let id = clients.next;
        if let Ok(clone) = stream.try_clone() {
            clients.streams.push((id, clone));
        }
        id
    };
    let served = shared.clone();
    let spawned = std::thread::Builder::new().name("posledger-client".into()).spawn(move || {
        let mut place = Place { shared: &served, id, input: false };
        if let Err(e) = serve_client(&served, &mut place, stream) {
            eprintln!("a local client: {e}");
        }
    });
    if let Err(e) = spawned {
        eprintln!("a local client: {e}");
        let mut clients = shared.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients.count -= 1;
        clients.streams.retain(|(i, _)| *i != id);
    }
}

/// Tells a client the server will not take it, in the hello.
fn refuse(stream: UnixStream, hello: &Hello, failure: Failure) {
    let _ = stream.set_write_timeout(Some(CLIENT_IDLE_TIMEOUT));
    let mut out = BufWriter::new(stream);
    let _ = wire::write_json(&mut out, wire::HELLO, &Hello { refused: Some(failure), ..hello.clone() });
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {what}"))
}

/// Serves one client: hello, its opening, then the conversation its opening names.
fn serve_client(shared: &Shared, place: &mut Place<'_>, stream: UnixStream) -> io::Result<()> {
    let (app, runtime) = (&shared.app, &shared.runtime);
    stream.set_read_timeout(Some(CLIENT_IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_IDLE_TIMEOUT))?;
    let mut input = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream.try_clone()?);
    wire::write_json(&mut out, wire::HELLO, &shared.hello)?;
    let Some((wire::OPENING, payload)) = wire::read_message(&mut input, wire::FRAME_BYTES_MAX)? else {
        return Err(protocol("first frame"));
    };
    // Once the client has said what it wants, it may take its time to send its input (a
    // feed from a slow pipe): only a stopping server cuts it.
    stream.set_read_timeout(None)?;
    match wire::from_json::<Opening>(&payload)? {
        Opening::Call { request, input: with_input } => {
            let result = match with_input {
                false => runtime.block_on(app.execute(request, &[])),
                true => match place.with_input() {
                    Err(failure) => Err(failure),
                    Ok(()) => {
                        let bytes = read_input(&mut input)?;
                        runtime.block_on(app.execute(request, &bytes))
                    }
                },
            };
            wire::write_json(&mut out, wire::RESULT, &result)
        }
        Opening::Ingest { admin } => {
            let kind = if admin { InputKind::Admin } else { InputKind::Feed };
            let mut summary = IngestSummary::default();
            loop {
                let frame = wire::read_frame(&mut input)?;
                if shared.stopping.load(Ordering::Acquire) && frame.as_ref().is_some_and(|f| f.0 == wire::LINES) {
                    // Stopping: what was acknowledged is stored, the rest is not taken.
                    let failure = Failure::new(Class::Unavailable, "server_stopping", "the server is stopping");
                    let stopped = Stopped { summary, failure };
                    return wire::write_json(&mut out, wire::RESULT, &Err::<IngestSummary, _>(stopped));
                }
                match frame {
                    Some((wire::LINES, payload)) => {
                        let lines = wire::decode_lines(&payload)?;
                        match runtime.block_on(app.ingest_lines(&lines, kind)) {
                            Ok(outcomes) => outcomes.into_iter().for_each(|o| summary.count(o)),
                            Err(failure) => {
                                let stopped = Stopped { summary, failure };
                                return wire::write_json(&mut out, wire::RESULT, &Err::<IngestSummary, _>(stopped));
                            }
                        }
                        // The chunk is durable: the client may count it as settled.
                        wire::write_json(&mut out, wire::PROGRESS, &summary)?;
                    }
                    Some((wire::END, _)) => break,
                    // The client went away: what it sent so far is settled.
                    None => return Ok(()),
                    Some(_) => return Err(protocol("frame in an ingest")),
                }
            }
            wire::write_json(&mut out, wire::RESULT, &Ok::<_, Stopped>(summary))
        }
        Opening::Journal { kind, until } => {
            let mut frames = OutputFrames { out: &mut out, buf: Vec::with_capacity(OUTPUT_FRAME_BYTES) };
            let written = runtime.block_on(app.journal(kind, until, &mut frames));
            output_result(&mut out, written)
        }
        Opening::Events { from, until } => {
            let mut frames = OutputFrames { out: &mut out, buf: Vec::with_capacity(OUTPUT_FRAME_BYTES) };
            let written = runtime.block_on(app.events(from, until, None, &mut frames));
            output_result(&mut out, written)
        }
        Opening::Backup { to } => {
            let mut sent: io::Result<()> = Ok(());
            let done = {
                let out = &mut out;
                let sent = &mut sent;
                let mut progress = |p: &app::backup::Progress| {
                    if sent.is_ok() {
                        *sent = wire::write_json(out, wire::PROGRESS, p);
                    }
                };
                runtime.block_on(app.backup(&to, &mut progress))
            };
            // A client that went away during the copy: the backup is complete anyway.
            sent?;
            wire::write_json(&mut out, wire::RESULT, &done)
        }
    }
}

/// The result of a use case that streamed `OUTPUT`: after the output, its result; nothing when
/// the client stopped reading (`| head`).
fn output_result<T: serde::Serialize>(
    out: &mut impl Write,
    written: Result<T, app::failure::OutputFailure>,
) -> io::Result<()> {
    match written {
        Ok(end) => wire::write_json(out, wire::RESULT, &Ok::<T, Failure>(end)),
        Err(app::failure::OutputFailure::Output(_)) => Ok(()),
        Err(app::failure::OutputFailure::Failed(f)) => wire::write_json(out, wire::RESULT, &Err::<T, _>(f)),
    }
}

/// Reads `INPUT` frames up to `END`, at most [`INPUT_BYTES_MAX`] bytes.
fn read_input(input: &mut impl io::Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    loop {
        match wire::read_frame(input)? {
            Some((wire::INPUT, payload)) => {
                if (bytes.len() + payload.len()) as u64 > INPUT_BYTES_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("input over {INPUT_BYTES_MAX} bytes"),
                    ));
                }
                bytes.extend_from_slice(&payload);
            }
            Some((wire::END, _)) => return Ok(bytes),
            _ => return Err(protocol("frame in the input")),
        }
    }
}

/// Bytes of output sent in one `OUTPUT` frame.
const OUTPUT_FRAME_BYTES: usize = 256 * 1024;

/// Output written as `OUTPUT` frames.
struct OutputFrames<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
}

impl<W: Write> Write for OutputFrames<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUTPUT_FRAME_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            wire::write_frame(self.out, wire::OUTPUT, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

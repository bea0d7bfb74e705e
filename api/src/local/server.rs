//! The server side of the local socket: accepts the data directory owner's command-line
//! clients while `posledger serve` runs, and answers each on a thread of its own with the
//! server's [`App`].

use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use app::records::Stopped;
use app::{App, Failure};
use ingest::pipeline::{IngestSummary, InputKind};

use super::wire::{self, Hello, Opening};

/// Clients served at once; more are told the server is busy.
pub const CONNECTIONS_MAX: usize = 16;
/// How long a client may keep the server waiting for its next frame.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of input one request may send (a statement file).
pub const INPUT_BYTES_MAX: u64 = ingest::statement::STATEMENT_BYTES_MAX;

/// The socket server; [`LocalServer::stop`] ends it.
pub struct LocalServer {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    active: Arc<(Mutex<usize>, Condvar)>,
}

impl LocalServer {
    /// Listens on the data directory's socket. The caller holds the store, so a socket file
    /// found there was left by a server that was killed: it is removed first.
    pub fn start(app: Arc<App>, runtime: tokio::runtime::Handle, http: Option<String>) -> io::Result<LocalServer> {
        let path = app.dir().socket();
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!("removed the socket {} a stopped server left behind", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Bound inside a directory only the owner can enter, made owner-only, then moved into
        // place: no other user can connect, not even in the moment before the mode is set.
        let private = app.dir().root().join(format!(".posledger-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::create_dir(&private)?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let bound = private.join("sock");
        let listener = UnixListener::bind(&bound)?;
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&bound, &path)?;
        std::fs::remove_dir(&private)?;
        let hello = Hello { pid: std::process::id(), version: env!("CARGO_PKG_VERSION").to_owned(), http };
        let stopping = Arc::new(AtomicBool::new(false));
        let active = Arc::new((Mutex::new(0usize), Condvar::new()));
        let accept = {
            let (stopping, active) = (stopping.clone(), active.clone());
            std::thread::Builder::new().name("posledger-local".into()).spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let mut count = active.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *count >= CONNECTIONS_MAX {
                        drop(count);
                        busy(stream, &hello);
                        continue;
                    }
                    *count += 1;
                    drop(count);
                    let (app, runtime, hello, done) = (app.clone(), runtime.clone(), hello.clone(), active.clone());
                    let spawned = std::thread::Builder::new().name("posledger-client".into()).spawn(move || {
                        if let Err(e) = serve_client(&app, &runtime, &hello, stream) {
                            eprintln!("a local client: {e}");
                        }
                        let mut count = done.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        *count -= 1;
                        done.1.notify_all();
                    });
                    if spawned.is_err() {
                        let mut count = active.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        *count -= 1;
                    }
                }
            })?
        };
        Ok(LocalServer { path, stopping, accept: Some(accept), active })
    }

    /// Stops accepting, lets the clients being served finish, and removes the socket.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wakes the accepting thread, which then sees it is stopping.
        let _ = UnixStream::connect(&self.path);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let mut count = self.active.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *count > 0 {
            count = self.active.1.wait(count).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Tells a client over [`CONNECTIONS_MAX`] to come back.
fn busy(stream: UnixStream, hello: &Hello) {
    let _ = stream.set_write_timeout(Some(CLIENT_IDLE_TIMEOUT));
    let mut out = BufWriter::new(stream);
    let failure = Failure::new(
        app::Class::Busy,
        "too_many_clients",
        format!("the server is serving {CONNECTIONS_MAX} commands already; try again shortly"),
    );
    let _ = wire::write_json(&mut out, wire::HELLO, hello);
    let _ = wire::write_json(&mut out, wire::RESULT, &Err::<(), _>(failure));
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {what}"))
}

/// Serves one client: hello, its opening, then the conversation its opening names.
fn serve_client(app: &App, runtime: &tokio::runtime::Handle, hello: &Hello, stream: UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_IDLE_TIMEOUT))?;
    let mut input = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream);
    wire::write_json(&mut out, wire::HELLO, hello)?;
    let Some((wire::OPENING, payload)) = wire::read_frame(&mut input)? else {
        return Err(protocol("first frame"));
    };
    match wire::from_json::<Opening>(&payload)? {
        Opening::Call { request, input: with_input } => {
            let bytes = if with_input { read_input(&mut input)? } else { Vec::new() };
            let result = runtime.block_on(app.execute(request, &bytes));
            wire::write_json(&mut out, wire::RESULT, &result)
        }
        Opening::Ingest { admin } => {
            let kind = if admin { InputKind::Admin } else { InputKind::Feed };
            let mut summary = IngestSummary::default();
            loop {
                match wire::read_frame(&mut input)? {
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
            match written {
                Ok(()) => wire::write_json(&mut out, wire::RESULT, &Ok::<(), Failure>(())),
                // The client stopped reading (`| head`): nothing more to say.
                Err(app::books::JournalFailure::Output(_)) => Ok(()),
                Err(app::books::JournalFailure::Books(f)) => wire::write_json(&mut out, wire::RESULT, &Err::<(), _>(f)),
            }
        }
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

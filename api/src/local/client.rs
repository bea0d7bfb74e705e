//! The client side of the local socket: what the command line uses when a server holds the
//! data directory.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use app::failure::OutputFailure;
use app::records::Stopped;
use app::request::{Reply, Request};
use app::{Class, DataDir, Failure};
use ingest::pipeline::{ChunkReader, IngestSummary, Lines};

use super::wire::{self, Hello, Opening};

/// How long a server may take to greet a client; past it the server is reported as not
/// answering (it may be stopped, or stuck), never waited for.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a statement sent in one `INPUT` frame.
const INPUT_FRAME_BYTES: usize = 1024 * 1024;

/// A connection to the server that holds a data directory.
pub struct Client {
    input: BufReader<UnixStream>,
    out: BufWriter<UnixStream>,
    /// What the server said of itself.
    pub hello: Hello,
    dir: DataDir,
}

/// The socket of `dir`'s server, if there is a socket file: the file itself, or the socket a
/// pointer file names (a data directory too deep for a socket address).
fn socket_of(dir: &DataDir) -> Result<Option<std::path::PathBuf>, Failure> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let path = dir.socket();
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Failure::unavailable(format!("{}: {e}", path.display()))),
    };
    // Only the owner's socket is spoken to: commands carry keys and records.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).map_err(|e| Failure::unavailable(e.to_string()))?;
    let owned = |m: &std::fs::Metadata, p: &std::path::Path| {
        if m.uid() == me {
            Ok(())
        } else {
            Err(Failure::new(
                Class::Forbidden,
                "socket_not_yours",
                format!("{} belongs to another user; commands are not sent to it", p.display()),
            ))
        }
    };
    owned(&meta, &path)?;
    if meta.file_type().is_socket() {
        return Ok(Some(path));
    }
    if !meta.is_file() || meta.len() > 4096 {
        return Err(Failure::unavailable(format!("{} is neither a socket nor the name of one", path.display())));
    }
    let named = std::fs::read(&path).map_err(|e| Failure::unavailable(format!("{}: {e}", path.display())))?;
    let socket = std::path::PathBuf::from(String::from_utf8_lossy(&named).into_owned());
    match std::fs::symlink_metadata(&socket) {
        Ok(m) if m.file_type().is_socket() => owned(&m, &socket).map(|()| Some(socket)),
        _ => Ok(None),
    }
}

/// Connects to the server of `dir`, if one listens: `None` when there is no socket, or only
/// the socket a killed server left (nobody accepts on it). A server that accepts but does not
/// greet within [`HELLO_TIMEOUT`], one of another version, and one too busy to take the
/// command are errors.
pub fn connect(dir: &DataDir) -> Result<Option<Client>, Failure> {
    let Some(path) = socket_of(dir)? else { return Ok(None) };
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused | io::ErrorKind::InvalidInput
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Failure::unavailable(format!("connecting to {}: {e}", path.display()))),
    };
    let silent = || {
        Failure::unavailable(format!(
            "the posledger server on {} does not answer (waited {HELLO_TIMEOUT:?}); is it stopped?",
            dir.root().display()
        ))
    };
    stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(|e| Failure::unavailable(e.to_string()))?;
    let mut input = BufReader::new(stream.try_clone().map_err(|e| Failure::unavailable(e.to_string()))?);
    let hello = match wire::read_frame(&mut input) {
        Ok(Some((wire::HELLO, payload))) => wire::from_json::<Hello>(&payload).map_err(|_| silent())?,
        Ok(None) => return Ok(None),
        Ok(Some(_)) | Err(_) => return Err(silent()),
    };
    if let Some(refused) = hello.refused {
        return Err(refused);
    }
    if hello.protocol != wire::PROTOCOL_VERSION {
        return Err(Failure::unavailable(format!(
            "the server on {} runs posledger {} (protocol {}), this is {} (protocol {}): use the same version",
            dir.root().display(),
            hello.version,
            hello.protocol,
            env!("CARGO_PKG_VERSION"),
            wire::PROTOCOL_VERSION
        )));
    }
    // The answer to a request may take as long as the request (a verify of a long log).
    stream.set_read_timeout(None).map_err(|e| Failure::unavailable(e.to_string()))?;
    Ok(Some(Client { input, out: BufWriter::new(stream), hello, dir: dir.clone() }))
}

impl Client {
    fn gone(&self, e: &io::Error) -> Failure {
        Failure::new(
            Class::Unavailable,
            "server_gone",
            format!("the posledger server on {} went away: {e}", self.dir.root().display()),
        )
    }

    fn send(&mut self, kind: u8, message: &impl serde::Serialize) -> Result<(), Failure> {
        wire::write_json(&mut self.out, kind, message).map_err(|e| self.gone(&e))
    }

    /// The next message; the end of the connection is the server going away.
    fn next(&mut self) -> Result<(u8, Vec<u8>), Failure> {
        match wire::read_message(&mut self.input, wire::MESSAGE_BYTES_MAX) {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(self.gone(&io::Error::from(io::ErrorKind::UnexpectedEof))),
            Err(e) => Err(self.gone(&e)),
        }
    }

    /// Reads frames up to the result; `on_frame` sees the others.
    fn result<T: for<'de> serde::Deserialize<'de>>(
        &mut self,
        mut on_frame: impl FnMut(u8, Vec<u8>) -> Result<(), Failure>,
    ) -> Result<T, Failure> {
        loop {
            let (kind, payload) = self.next()?;
            if kind == wire::RESULT {
                return wire::from_json(&payload).map_err(|e| self.gone(&e));
            }
            on_frame(kind, payload)?;
        }
    }

    /// Runs one use case on the server; `input` is sent as the request's input.
    pub fn call(mut self, request: Request, input: Option<&[u8]>) -> Result<Reply, Failure> {
        self.send(wire::OPENING, &Opening::Call { request, input: input.is_some() })?;
        if let Some(bytes) = input {
            for piece in bytes.chunks(INPUT_FRAME_BYTES) {
                wire::write_frame(&mut self.out, wire::INPUT, piece).map_err(|e| self.gone(&e))?;
            }
            wire::write_frame(&mut self.out, wire::END, &[]).map_err(|e| self.gone(&e))?;
        }
        let result: Result<Reply, Failure> = self.result(|_, _| Ok(()))?;
        result
    }

    /// Ingests NDJSON from `input` through the server, a chunk at a time: each chunk is
    /// counted once the server has made it durable. If the server goes away, the records
    /// counted so far are stored and the rest are not; running the input again stores nothing
    /// twice.
    pub fn ingest(
        mut self,
        input: impl BufRead,
        admin: bool,
        mut progress: impl FnMut(u64, &IngestSummary),
    ) -> Result<IngestSummary, Box<Stopped>> {
        let mut summary = IngestSummary::default();
        let stopped = |summary: &IngestSummary, failure| Box::new(Stopped { summary: summary.clone(), failure });
        if let Err(f) = self.send(wire::OPENING, &Opening::Ingest { admin }) {
            return Err(stopped(&summary, f));
        }
        let mut reader = ChunkReader::new(input);
        let mut lines = Lines::default();
        loop {
            if let Err(e) = reader.next_chunk(&mut lines) {
                return Err(stopped(&summary, Failure::unavailable(format!("reading input: {e}"))));
            }
            if lines.is_empty() {
                break;
            }
            // A chunk goes in frames of at most LINES_FRAME_BYTES, each answered once durable.
            let mut next = 0;
            while next < lines.len() {
                let mut bytes = 0;
                let take = lines
                    .iter()
                    .skip(next)
                    .take_while(|(_, l)| {
                        bytes += l.len() + 12;
                        bytes <= wire::LINES_FRAME_BYTES
                    })
                    .count()
                    .max(1);
                let piece = wire::encode_lines(lines.iter().skip(next).take(take));
                next += take;
                let sent = wire::write_frame(&mut self.out, wire::LINES, &piece);
                if let Err(e) = sent {
                    return Err(stopped(&summary, self.gone(&e)));
                }
                match self.next() {
                    Ok((wire::PROGRESS, payload)) => match wire::from_json(&payload) {
                        Ok(s) => summary = s,
                        Err(e) => return Err(stopped(&summary, self.gone(&e))),
                    },
                    Ok((wire::RESULT, payload)) => {
                        return match wire::from_json::<Result<IngestSummary, Stopped>>(&payload) {
                            Ok(Err(s)) => Err(Box::new(s)),
                            Ok(Ok(s)) => Ok(s),
                            Err(e) => Err(stopped(&summary, self.gone(&e))),
                        };
                    }
                    Ok(_) => return Err(stopped(&summary, self.gone(&io::Error::other("an unexpected frame")))),
                    Err(f) => return Err(stopped(&summary, f)),
                }
            }
            progress(reader.bytes_read(), &summary);
        }
        if let Err(e) = wire::write_frame(&mut self.out, wire::END, &[]) {
            return Err(stopped(&summary, self.gone(&e)));
        }
        match self.result::<Result<IngestSummary, Stopped>>(|_, _| Ok(())) {
            Ok(result) => result.map_err(Box::new),
            Err(f) => Err(stopped(&summary, f)),
        }
    }

    /// Writes the server's journal to `out`.
    pub fn journal(
        self,
        kind: app::books::JournalKind,
        until: app::AsOf,
        out: &mut impl Write,
    ) -> Result<(), OutputFailure> {
        self.output(&Opening::Journal { kind, until }, out)
    }

    /// Writes the server's event listing to `out`.
    pub fn events(
        self,
        from: u64,
        until: app::AsOf,
        out: &mut impl Write,
    ) -> Result<app::audit::EventsEnd, OutputFailure> {
        self.output(&Opening::Events { from, until }, out)
    }

    /// Runs a use case that streams text to `out`, and returns its result.
    fn output<T: for<'de> serde::Deserialize<'de>>(
        mut self,
        opening: &Opening,
        out: &mut impl Write,
    ) -> Result<T, OutputFailure> {
        self.send(wire::OPENING, opening).map_err(OutputFailure::Failed)?;
        let mut written: io::Result<()> = Ok(());
        let result: Result<Result<T, Failure>, Failure> = self.result(|kind, payload| {
            if kind == wire::OUTPUT {
                written = out.write_all(&payload);
                // A reader that stopped (`| head`) ends the conversation.
                if let Err(e) = &written {
                    return Err(Failure::unavailable(e.to_string()));
                }
            }
            Ok(())
        });
        written.map_err(OutputFailure::Output)?;
        let end = result.and_then(|r| r).map_err(OutputFailure::Failed)?;
        out.flush().map_err(OutputFailure::Output)?;
        Ok(end)
    }

    /// Backs the server's data directory up into `to` (absolute), reporting its progress.
    pub fn backup(
        mut self,
        to: std::path::PathBuf,
        progress: &mut dyn FnMut(&app::backup::Progress),
    ) -> Result<app::backup::BackupReport, Failure> {
        self.send(wire::OPENING, &Opening::Backup { to })?;
        let result: Result<app::backup::BackupReport, Failure> = self.result(|kind, payload| {
            if kind == wire::PROGRESS
                && let Ok(p) = wire::from_json::<app::backup::Progress>(&payload)
            {
                progress(&p);
            }
            Ok(())
        })?;
        result
    }
}

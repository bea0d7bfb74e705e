//! The few calls posledger makes of a KurrentDB server, as a trait: the real client
//! (`client`, behind the `kurrentdb` feature) and [`MemoryWire`], an in-process model of the
//! server's semantics that the store's logic is tested against without a server.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::mapping::{AllPosition, WireEvent, WireExpected, WireRecorded};

/// Why a call to the server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The append's expected revision did not hold; nothing was written.
    #[error("the stream is at revision {actual:?}")]
    WrongExpectedVersion {
        /// Where the stream is (`None`: it does not exist).
        actual: Option<u64>,
    },
    /// No answer: the server is unreachable, or the call timed out. For an append the
    /// outcome is unknown.
    #[error("the KurrentDB server did not answer: {0}")]
    Unreachable(String),
    /// The server answered with an error (access denied, not the leader, …).
    #[error("the KurrentDB server refused: {0}")]
    Refused(String),
}

/// The calls a store makes.
pub trait Wire: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if it is at `expected`.
    fn append(
        &self,
        stream: &str,
        expected: WireExpected,
        events: Vec<WireEvent>,
    ) -> impl Future<Output = Result<(), WireError>> + Send;

    /// Up to `max` events of `$all` at or after `from` whose stream starts with `prefix`, in
    /// `$all` order.
    fn read_all(
        &self,
        from: AllPosition,
        prefix: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<WireRecorded>, WireError>> + Send;

    /// Up to `max` events of `stream` from revision `from` on; none if it does not exist.
    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<WireRecorded>, WireError>> + Send;

    /// The revision of the stream's last event, `None` if it does not exist.
    fn stream_revision(&self, stream: &str) -> impl Future<Output = Result<Option<u64>, WireError>> + Send;
}

/// An in-memory server with KurrentDB's semantics as posledger relies on them: per-stream
/// revisions and expected-revision checks, one `$all` order with sparse positions (an
/// append's events share a commit position and have increasing prepare positions), reads
/// from a position inclusive, and stream-name prefix filters. It can also be told to fail.
#[derive(Debug, Default)]
pub struct MemoryWire {
    log: Mutex<Log>,
    down: AtomicBool,
    /// Appends that will commit and then report no answer, as a timeout after the server
    /// wrote would.
    lose_answers: AtomicUsize,
    /// Appends that will be lost on the way and report no answer.
    lose_appends: AtomicUsize,
}

#[derive(Debug, Default)]
struct Log {
    all: Vec<WireRecorded>,
    streams: HashMap<String, Vec<usize>>,
    next_prepare: u64,
}

impl MemoryWire {
    /// An empty server.
    pub fn new() -> MemoryWire {
        MemoryWire::default()
    }

    /// Makes every call fail as unreachable (or work again).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` appends commit but their callers hear nothing back.
    pub fn lose_answers(&self, n: usize) {
        self.lose_answers.store(n, Ordering::SeqCst);
    }

    /// The next `n` appends never reach the log, and their callers hear nothing back.
    pub fn lose_appends(&self, n: usize) {
        self.lose_appends.store(n, Ordering::SeqCst);
    }

    /// Appends as another writer would, with no checks: for tests of what a store does when
    /// it meets events it did not write.
    pub fn append_raw(&self, stream: &str, events: Vec<WireEvent>) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.commit(stream, events);
    }

    /// Changes a stored event in place, as someone with access to the server's files could.
    pub fn tamper(&self, index: usize, change: impl FnOnce(&mut WireRecorded)) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = log.all.get_mut(index) {
            change(e);
        }
    }

    fn check_up(&self) -> Result<(), WireError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(WireError::Unreachable("connection refused (the in-memory server is down)".into()));
        }
        Ok(())
    }
}

impl Log {
    fn commit(&mut self, stream: &str, events: Vec<WireEvent>) {
        // Sparse positions, as in a real log: an append's events share its commit position.
        let size: u64 = events.iter().map(|e| 100 + e.data.len() as u64 + e.metadata.len() as u64).sum();
        let commit = self.next_prepare + size;
        let first_revision = self.streams.get(stream).map_or(0, |s| s.len() as u64);
        for (k, e) in events.into_iter().enumerate() {
            let prepare = self.next_prepare;
            self.next_prepare += 100 + e.data.len() as u64 + e.metadata.len() as u64;
            let index = self.all.len();
            self.all.push(WireRecorded {
                stream: stream.to_owned(),
                revision: first_revision + k as u64,
                all: AllPosition { commit, prepare },
                id: e.id,
                event_type: e.event_type,
                data: e.data,
                metadata: e.metadata,
            });
            self.streams.entry(stream.to_owned()).or_default().push(index);
        }
        self.next_prepare = commit + 1;
    }
}

impl Wire for MemoryWire {
    async fn append(&self, stream: &str, expected: WireExpected, events: Vec<WireEvent>) -> Result<(), WireError> {
        self.check_up()?;
        if self.lose_appends.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(WireError::Unreachable("deadline exceeded (the append was lost)".into()));
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let actual = log.streams.get(stream).map(|s| s.len() as u64 - 1);
        let ok = match expected {
            WireExpected::NoStream => actual.is_none(),
            WireExpected::Exact(r) => actual == Some(r),
        };
        if !ok {
            return Err(WireError::WrongExpectedVersion { actual });
        }
        log.commit(stream, events);
        let lost = self.lose_answers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if lost {
            return Err(WireError::Unreachable("deadline exceeded (the answer was lost)".into()));
        }
        Ok(())
    }

    async fn read_all(&self, from: AllPosition, prefix: &str, max: usize) -> Result<Vec<WireRecorded>, WireError> {
        self.check_up()?;
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let start = log.all.partition_point(|e| e.all < from);
        Ok(log.all[start..].iter().filter(|e| e.stream.starts_with(prefix)).take(max).cloned().collect())
    }

    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<WireRecorded>, WireError> {
        self.check_up()?;
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let Some(indexes) = log.streams.get(stream) else { return Ok(Vec::new()) };
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(indexes.iter().skip(from).take(max).map(|&i| log.all[i].clone()).collect())
    }

    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, WireError> {
        self.check_up()?;
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        Ok(log.streams.get(stream).map(|s| s.len() as u64 - 1))
    }
}

/// A shared connection is a connection: several stores (or a store and a test that looks at
/// the server) can use one.
impl<W: Wire> Wire for std::sync::Arc<W> {
    fn append(
        &self,
        stream: &str,
        expected: WireExpected,
        events: Vec<WireEvent>,
    ) -> impl Future<Output = Result<(), WireError>> + Send {
        (**self).append(stream, expected, events)
    }

    fn read_all(
        &self,
        from: AllPosition,
        prefix: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<WireRecorded>, WireError>> + Send {
        (**self).read_all(from, prefix, max)
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<WireRecorded>, WireError>> + Send {
        (**self).read_stream(stream, from, max)
    }

    fn stream_revision(&self, stream: &str) -> impl Future<Output = Result<Option<u64>, WireError>> + Send {
        (**self).stream_revision(stream)
    }
}

/// The connection a posledger process uses: the real client, or the in-memory model (tests,
/// and trying the backend without a server).
#[derive(Clone)]
pub enum AnyWire {
    /// The in-memory model.
    Memory(std::sync::Arc<MemoryWire>),
    /// The `kurrentdb` client.
    #[cfg(feature = "kurrentdb")]
    Client(std::sync::Arc<crate::client::KurrentWire>),
}

impl Wire for AnyWire {
    async fn append(&self, stream: &str, expected: WireExpected, events: Vec<WireEvent>) -> Result<(), WireError> {
        match self {
            AnyWire::Memory(w) => w.append(stream, expected, events).await,
            #[cfg(feature = "kurrentdb")]
            AnyWire::Client(w) => w.append(stream, expected, events).await,
        }
    }

    async fn read_all(&self, from: AllPosition, prefix: &str, max: usize) -> Result<Vec<WireRecorded>, WireError> {
        match self {
            AnyWire::Memory(w) => w.read_all(from, prefix, max).await,
            #[cfg(feature = "kurrentdb")]
            AnyWire::Client(w) => w.read_all(from, prefix, max).await,
        }
    }

    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<WireRecorded>, WireError> {
        match self {
            AnyWire::Memory(w) => w.read_stream(stream, from, max).await,
            #[cfg(feature = "kurrentdb")]
            AnyWire::Client(w) => w.read_stream(stream, from, max).await,
        }
    }

    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, WireError> {
        match self {
            AnyWire::Memory(w) => w.stream_revision(stream).await,
            #[cfg(feature = "kurrentdb")]
            AnyWire::Client(w) => w.stream_revision(stream).await,
        }
    }
}

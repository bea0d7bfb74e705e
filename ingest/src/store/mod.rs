//! The event store: one trait, [`EventStore`], and its embedded backend, [`EmbeddedStore`].
//!
//! Every fact is appended to a named stream and gets a gap-free global position. Appends say
//! what revision they expect the stream to be at (optimistic concurrency) and carry
//! deterministic event ids, so a retried append is recognised and answered with the original
//! result. Readers read a stream, read the whole log from a position, or follow it with a
//! [`Subscription`] that neither skips nor repeats an event.

use std::future::Future;

use uuid::Uuid;

mod embedded;
pub mod fault;
pub mod format;
pub mod frames;
mod index;
mod keymap;
mod scan;
mod verify;
mod writer;

pub mod conformance;

pub use embedded::{
    APPEND_MANY_BYTES_MAX, APPEND_MANY_EVENTS_MAX, BATCH_BYTES_MAX_DEFAULT, BATCH_EVENTS_MAX_DEFAULT, EmbeddedStore,
    OpenError, OpenReport, SEGMENT_BYTES_MAX_DEFAULT, SNAPSHOT_EVERY_EVENTS_DEFAULT, StoreOptions,
};
pub(crate) use index::HashKeyMap;
pub use keymap::{INDEX_FILTER_BYTES_DEFAULT, INDEX_RECENT_ENTRIES_MAX_DEFAULT};
pub use verify::{VerifiedHead, VerifyError, VerifyReport, verify_dir, verify_dir_head, verify_open, verify_open_from};
pub use writer::duplicate_result;

/// Longest stream name accepted, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 255;
/// Longest event type name accepted, in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 128;
/// Largest payload accepted, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// Most events one append request may carry.
pub const REQUEST_EVENTS_MAX: usize = 10_000;
/// Most events one `read_*` call returns.
pub const READ_EVENTS_MAX: usize = 100_000;

/// An event as it is handed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// Deterministic id; appending the same id again is recognised.
    pub event_id: Uuid,
    /// Type name, e.g. `PaymentCaptured` (kept inline: every type name fits).
    pub event_type: crate::event::Id,
    /// Schema version of the payload.
    pub schema_version: u16,
    /// When it happened at the source, microseconds since the Unix epoch (UTC).
    pub occurred_at_us: i64,
    /// The payload, JSON.
    pub payload: Vec<u8>,
}

/// An event as the store returns it, with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position, gap-free from 0.
    pub position: u64,
    /// The stream it was appended to.
    pub stream: String,
    /// Revision within the stream, gap-free from 0.
    pub revision: u64,
    /// When the store committed it, microseconds since the Unix epoch.
    pub recorded_at_us: i64,
    /// The event itself.
    pub data: EventData,
}

/// What an append expects of the stream it appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this revision.
    Exact(u64),
}

/// One append: events for one stream, with the revision the caller expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// Target stream.
    pub stream: String,
    /// Concurrency check.
    pub expected: ExpectedRevision,
    /// Events, appended in order and atomically.
    pub events: Vec<EventData>,
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Position of the request's first event.
    pub first_position: u64,
    /// Revision of the request's last event in its stream.
    pub last_revision: u64,
    /// True when every event was already stored with the same content: nothing was written
    /// and the positions are the original ones.
    pub duplicate: bool,
}

/// Why one append request was refused. Nothing of a refused request is written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Conflict: the stream is not at the expected revision (`None`: the stream does not exist).
    #[error("stream {stream:?} is at revision {actual:?}, the append expected {expected:?}")]
    WrongExpectedRevision {
        /// Stream.
        stream: String,
        /// What the request expected.
        expected: ExpectedRevision,
        /// Where the stream is.
        actual: Option<u64>,
    },
    /// Conflict: an event with this id exists with different content (or in another place).
    #[error("event id {event_id} is already stored at position {position} with different content")]
    IdConflict {
        /// The id.
        event_id: Uuid,
        /// Where the stored event is.
        position: u64,
    },
    /// Bad input: the request breaks a documented limit.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// I/O: the log could not be written or synced. The store stops accepting writes after
    /// this, because the state of the file is unknown; reopening recovers.
    #[error("event log write failed: {0}")]
    Io(String),
    /// The store has been closed or its writer stopped after an earlier I/O failure.
    #[error("event store is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// I/O error reading a segment.
    #[error("reading the event log: {0}")]
    Io(#[from] std::io::Error),
    /// A record on disk failed its check; the log needs `verify` and attention.
    #[error("corrupt record in segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        /// Segment index.
        segment: u32,
        /// Byte offset.
        offset: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// The contract every backend fulfils; `conformance` holds the tests that prove it.
pub trait EventStore: Send + Sync + 'static {
    /// Appends several requests in one durable commit. Each request succeeds or fails on its
    /// own; a later request sees the effect of an earlier successful one. Once a request to a
    /// stream is refused, later requests to that stream with an expected revision are refused
    /// too (`WrongExpectedRevision`): they were presumably decided on the refused one's
    /// effect, and its revision number could be matched by someone else's event. Returns once
    /// every successful request is durable.
    fn append_many(
        &self,
        requests: Vec<AppendRequest>,
    ) -> impl Future<Output = Vec<Result<Appended, AppendError>>> + Send;

    /// Appends one request.
    fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> impl Future<Output = Result<Appended, AppendError>> + Send {
        let request = AppendRequest { stream: stream.to_owned(), expected, events };
        async move {
            let mut results = self.append_many(vec![request]).await;
            results.pop().unwrap_or(Err(AppendError::Closed))
        }
    }

    /// Reads up to `max` events of `stream` from revision `from` on, in revision order.
    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, ReadError>> + Send;

    /// Reads up to `max` events of the whole log from global position `from` on.
    fn read_all(&self, from: u64, max: usize) -> impl Future<Output = Result<Vec<RecordedEvent>, ReadError>> + Send;

    /// The stored event with this id, if any.
    fn event_by_id(&self, id: Uuid) -> impl Future<Output = Result<Option<RecordedEvent>, ReadError>> + Send;

    /// The stored events with these ids, in their order (`None` for an id not stored): one
    /// call for many, which a store answers with one look at its index.
    fn events_by_ids(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<Option<RecordedEvent>>, ReadError>> + Send {
        async move {
            let mut found = Vec::with_capacity(ids.len());
            for &id in ids {
                found.push(self.event_by_id(id).await?);
            }
            Ok(found)
        }
    }

    /// The revision of the stream's last event, or `None` if the stream does not exist.
    fn stream_revision(&self, stream: &str) -> impl Future<Output = Result<Option<u64>, ReadError>> + Send;

    /// The position the next appended event will get: the number of events stored.
    fn head(&self) -> u64;

    /// A position before which every stored event occurred before `occurred_at_us` (µs since
    /// the epoch), so that reading on from it finds every event that occurred at or after that
    /// time. Always true of 0, the default; a backend that keeps a zone map over occurred-at
    /// answers nearer the head. Events that arrive late or with a wrong clock only move the
    /// answer back, never past one of them.
    fn position_since(&self, occurred_at_us: i64) -> u64 {
        let _ = occurred_at_us;
        0
    }

    /// Resolves once an event at `position` exists (`head() > position`).
    fn wait_for(&self, position: u64) -> impl Future<Output = ()> + Send;

    /// A reader of the global order for another thread (a replay reads and decodes the log
    /// on its own thread while the books are kept on the caller's), when the backend can
    /// read without the async runtime. `None` by default: callers then use [`EventStore::read_all`].
    fn blocking_reader(&self) -> Option<BlockingReader> {
        None
    }
}

/// Reads up to `max` events from a global position, like [`EventStore::read_all`], blocking.
pub type BlockingReader = Box<dyn FnMut(u64, usize) -> Result<Vec<RecordedEvent>, ReadError> + Send>;

/// A catch-up subscription: the history from a position, then live events as they commit,
/// each exactly once and in order.
pub struct Subscription<'a, S: EventStore> {
    store: &'a S,
    next: u64,
}

impl<'a, S: EventStore> Subscription<'a, S> {
    /// Starts at global position `from`.
    pub fn new(store: &'a S, from: u64) -> Self {
        Subscription { store, next: from }
    }

    /// The position of the next event this subscription will deliver.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next events, at most `max`, waiting for new ones when caught up.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        loop {
            let events = self.store.read_all(self.next, max).await?;
            if let Some(last) = events.last() {
                // The store delivers consecutive positions; a gap or repeat here is a bug.
                assert_eq!(events[0].position, self.next, "subscription must not skip or repeat");
                self.next = last.position + 1;
                return Ok(events);
            }
            self.store.wait_for(self.next).await;
        }
    }
}

/// The 128-bit hash that stands for a stream name in the in-memory indexes. At 10^9 streams
/// the chance of any two colliding is about 10^-21, the same footing as the version-5 UUIDs
/// that identify events.
pub fn stream_hash(stream: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(stream.as_bytes())
}

/// Checks a request against the documented limits.
pub fn check_request(request: &AppendRequest) -> Result<(), AppendError> {
    let invalid = |m: String| Err(AppendError::Invalid(m));
    if request.stream.is_empty() || request.stream.len() > STREAM_NAME_BYTES_MAX {
        return invalid(format!("stream name must be 1 to {STREAM_NAME_BYTES_MAX} bytes"));
    }
    if request.events.is_empty() {
        return invalid("an append needs at least one event".into());
    }
    if request.events.len() > REQUEST_EVENTS_MAX {
        return invalid(format!("an append may carry at most {REQUEST_EVENTS_MAX} events"));
    }
    for e in &request.events {
        if e.event_type.is_empty() || e.event_type.len() > EVENT_TYPE_BYTES_MAX {
            return invalid(format!("event type must be 1 to {EVENT_TYPE_BYTES_MAX} bytes"));
        }
        if e.payload.len() > PAYLOAD_BYTES_MAX {
            return invalid(format!("payload of {} bytes exceeds {PAYLOAD_BYTES_MAX}", e.payload.len()));
        }
    }
    Ok(())
}

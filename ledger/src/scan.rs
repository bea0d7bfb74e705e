//! A read of a range of the log, decoded ahead: when the store can read without the async
//! runtime ([`EventStore::blocking_reader`]), a thread of its own reads and decodes the next
//! batches while the caller works on the current one; otherwise the caller's task reads.
//! Reconciliation's day pass and the export read the log this way.

use ingest::event::Event;
use ingest::store::EventStore;

use crate::{REPLAY_BATCH_EVENTS, ReplayError};

/// Batches (of up to [`REPLAY_BATCH_EVENTS`] events each) a scan's thread may have waiting for
/// the caller: 4. With the one it is decoding and the one the caller holds, a scan has at most
/// 6 batches of decoded events at a time.
pub const SCAN_BATCHES_AHEAD: usize = 4;

/// A range shorter than this is read on the caller's task, without a thread: one batch,
/// [`REPLAY_BATCH_EVENTS`] (a follower that reads what was appended since it last did).
pub const SCAN_THREAD_EVENTS_MIN: u64 = REPLAY_BATCH_EVENTS as u64;

/// A batch from the thread: the events of the wanted types with their positions, and the
/// position after the last event read.
type Ahead = Result<(Vec<(u64, Event)>, u64), ReplayError>;

/// The events of `[from, end)` of the log, in order, in batches (see the module doc).
pub struct Scan<'a, S: EventStore> {
    store: &'a S,
    position: u64,
    end: u64,
    /// Only events of these types are decoded and handed over (`None`: every event).
    types: Option<Vec<String>>,
    /// The thread reading ahead, and what it hands over.
    ahead: Option<(tokio::sync::mpsc::Receiver<Ahead>, std::thread::JoinHandle<()>)>,
    /// An error met after events that were handed over first, for the next call.
    failed: Option<ReplayError>,
}

impl<'a, S: EventStore> Scan<'a, S> {
    /// A scan of `[from, end)` (`end` at most the head of the log), handing over only the
    /// events of `types` when given (the others are passed over without being decoded); read
    /// ahead on a thread when the range holds at least [`SCAN_THREAD_EVENTS_MIN`] events.
    pub fn new(store: &'a S, from: u64, end: u64, types: Option<&[&str]>) -> Self {
        let end = end.min(store.head());
        Self::with_thread(store, from, end, types, end.saturating_sub(from) >= SCAN_THREAD_EVENTS_MIN)
    }

    /// [`Scan::new`], read ahead on a thread whatever the range's length when `thread` (and the
    /// store can read without the runtime). Without a thread (or when one cannot be started),
    /// the caller's task reads.
    pub fn with_thread(store: &'a S, from: u64, end: u64, types: Option<&[&str]>, thread: bool) -> Self {
        let end = end.min(store.head());
        let types: Option<Vec<String>> = types.map(|t| t.iter().map(|t| (*t).to_owned()).collect());
        let ahead = match store.blocking_reader() {
            Some(read) if thread && from < end => {
                let (tx, rx) = tokio::sync::mpsc::channel(SCAN_BATCHES_AHEAD);
                let wanted = types.clone();
                std::thread::Builder::new()
                    .name("posledger-scan".into())
                    .spawn(move || read_ahead(read, from, end, wanted.as_deref(), &tx))
                    .ok()
                    .map(|thread| (rx, thread))
            }
            _ => None,
        };
        Scan { store, position: from, end, types, ahead, failed: None }
    }

    /// The position after the last event handed over or passed over: on an error, the first
    /// event not handled.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next batch of events with their positions (possibly empty when none of a batch's
    /// is of the wanted types), or `None` at the end of the range.
    pub async fn next(&mut self) -> Result<Option<Vec<(u64, Event)>>, ReplayError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.position >= self.end {
            return Ok(None);
        }
        let Some((rx, _)) = &mut self.ahead else {
            return self.read_here().await;
        };
        match rx.recv().await {
            Some(Ok((events, after))) => {
                self.position = after;
                Ok(Some(events))
            }
            Some(Err(e)) => Err(e),
            None => {
                // The thread hung up before the end of the range: it failed, whatever it said.
                let why = crate::why_stopped(self.ahead.take().map_or(Ok(()), |(_, thread)| thread.join()));
                Err(ReplayError::Decoder(format!(
                    "{why}; the read stopped at position {} of {}",
                    self.position, self.end
                )))
            }
        }
    }

    /// [`Scan::next`] without a thread: one batch read and decoded on the caller's task.
    async fn read_here(&mut self) -> Result<Option<Vec<(u64, Event)>>, ReplayError> {
        let want = REPLAY_BATCH_EVENTS.min((self.end - self.position) as usize);
        let stored = self.store.read_all(self.position, want).await?;
        if stored.is_empty() {
            return Err(ReplayError::Decoder(format!(
                "the log read nothing at position {} of {}",
                self.position, self.end
            )));
        }
        let decoded = decode_batch(stored, self.types.as_deref());
        self.position = decoded.next;
        match decoded.failed {
            // The events before the one that failed are handed over first.
            Some(failed) if decoded.events.is_empty() => Err(failed),
            failed => {
                self.failed = failed;
                Ok(Some(decoded.events))
            }
        }
    }
}

/// A batch of stored events decoded: those of the wanted types with their positions, the
/// position after the last one taken (the failed one's on a failure), and the failure.
struct Decoded {
    events: Vec<(u64, Event)>,
    next: u64,
    failed: Option<ReplayError>,
}

/// Decodes the events of `types` (all when `None`) of a batch, in order, up to the first that
/// fails.
fn decode_batch(stored: Vec<ingest::store::RecordedEvent>, types: Option<&[String]>) -> Decoded {
    let mut decoded = Decoded { events: Vec::new(), next: stored.first().map_or(0, |e| e.position), failed: None };
    for e in stored {
        if types.is_none_or(|t| t.iter().any(|t| *t == e.data.event_type)) {
            match Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload) {
                Ok(event) => decoded.events.push((e.position, event)),
                Err(source) => {
                    decoded.failed = Some(ReplayError::Decode { position: e.position, source });
                    return decoded;
                }
            }
        }
        decoded.next = e.position + 1;
    }
    decoded
}

/// The scan's thread: reads and decodes `[next, end)` batch by batch into `out`, until the end,
/// the first error (passed on after the events before it), or a caller that stopped listening.
fn read_ahead(
    mut read: ingest::store::BlockingReader,
    mut next: u64,
    end: u64,
    types: Option<&[String]>,
    out: &tokio::sync::mpsc::Sender<Ahead>,
) {
    while next < end {
        let stored = match read(next, REPLAY_BATCH_EVENTS.min((end - next) as usize)) {
            Ok(stored) if stored.is_empty() => return,
            Ok(stored) => stored,
            Err(e) => {
                let _ = out.blocking_send(Err(e.into()));
                return;
            }
        };
        let decoded = decode_batch(stored, types);
        next = decoded.next;
        if let Some(failed) = decoded.failed {
            let _ = out.blocking_send(Ok((decoded.events, next)));
            let _ = out.blocking_send(Err(failed));
            return;
        }
        if out.blocking_send(Ok((decoded.events, next))).is_err() {
            return;
        }
    }
}

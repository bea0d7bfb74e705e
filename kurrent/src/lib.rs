//! posledger's event store on a KurrentDB server: [`KurrentStore`], a backend of
//! `ingest::store::EventStore` that passes the same conformance suite as the embedded log.
//!
//! The layout (streams, ids, metadata, positions, the hash chain) is in [`mapping`]. The
//! calls to the server go through [`wire::Wire`]: the official `kurrentdb` client behind
//! the `kurrentdb` cargo feature ([`client`]), or [`wire::MemoryWire`], a model of the
//! server's semantics, which is what the tests here run on. **This backend has not been run
//! against a KurrentDB server**: none can be installed where it was built. Its conformance
//! suite runs against one when `POSLEDGER_TEST_KURRENTDB` names it.
//!
//! # What posledger adds to KurrentDB
//! - **Exactly once, at any distance.** KurrentDB recognises a repeated event id only within
//!   a window (its idempotency cache, or when the expected revision matches the retry's
//!   position). The store keeps every id of its namespace in memory, read at open, and
//!   answers a retried append with the original result however old it is, by the same rule
//!   as the embedded store (`ingest::store::duplicate_result`). About 48 bytes per event.
//! - **Exact revisions.** Every append is sent with an exact expected revision (`Any` is
//!   resolved to the stream's revision first), because the revision is in the metadata and
//!   the chain.
//! - **Dense positions and one writer.** Positions are assigned by the namespace's one
//!   writer. An event in the namespace that the chain does not expect (another writer, an
//!   event changed on the server) stops the store: appends are refused and reads report it,
//!   naming the event's stream and `$all` position.
//! - **An append whose answer is lost** (a timeout after the server may have written it) is
//!   looked for in `$all`; found, it succeeds; not found, the store refuses further appends
//!   until it is reopened, because the write may still land.

use std::collections::HashMap;
use std::collections::HashSet;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ingest::store::{
    AppendError, AppendRequest, Appended, EventStore, READ_EVENTS_MAX, ReadError, RecordedEvent, check_request,
    duplicate_result,
};
use uuid::Uuid;

#[cfg(feature = "kurrentdb")]
pub mod client;
pub mod mapping;
pub mod migrate;
pub mod wire;

use mapping::{AllPosition, Checkpoints, MappingError, Namespace, WireRecorded};
use wire::{Wire, WireError};

/// Most events one read of `$all` asks the server for.
pub const READ_PAGE_EVENTS: usize = 4096;
/// How long one call to the server may take before it counts as unanswered.
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How often a caught-up reader asks the server for events another process appended.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(200);

/// The largest append, in bytes, a KurrentDB server takes by default (its `MaxAppendSize`).
pub const APPEND_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// What an event adds to an append beyond its payload, metadata, type and id (an estimate on
/// the safe side of the server's own accounting).
pub const APPEND_EVENT_OVERHEAD_BYTES: usize = 128;

/// Settings of a [`KurrentStore`].
#[derive(Clone)]
pub struct KurrentOptions {
    /// See [`CALL_TIMEOUT_DEFAULT`].
    pub call_timeout: Duration,
    /// See [`POLL_INTERVAL_DEFAULT`].
    pub poll_interval: Duration,
    /// The commit clock when not the system's ([`migrate::Stamp`]).
    pub clock: Option<migrate::Clock>,
    /// The largest append sent, in bytes: the server's `MaxAppendSize` (default
    /// [`APPEND_BYTES_MAX_DEFAULT`]; a server started with a larger `--max-append-size`, at
    /// most 16 MiB, takes larger appends). A larger request is refused as invalid, naming it.
    pub append_bytes_max: usize,
}

impl Default for KurrentOptions {
    fn default() -> Self {
        KurrentOptions {
            call_timeout: CALL_TIMEOUT_DEFAULT,
            poll_interval: POLL_INTERVAL_DEFAULT,
            clock: None,
            append_bytes_max: APPEND_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The server did not answer or refused.
    #[error("{0}")]
    Server(#[from] WireError),
    /// What the namespace holds is not a whole, unaltered posledger history.
    #[error("the history in KurrentDB is damaged or altered: {0}")]
    Damaged(String),
}

/// An event store on a KurrentDB server (or anything speaking [`Wire`]).
pub struct KurrentStore<W: Wire> {
    wire: W,
    ns: Namespace,
    prefix: String,
    options: KurrentOptions,
    state: Mutex<State>,
    head: AtomicU64,
    writer: tokio::sync::Mutex<()>,
    /// One refresh at a time, so that a full page is never taken for the end of `$all`
    /// because another refresh took its events in first.
    refreshing: tokio::sync::Mutex<()>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    link: [u8; 32],
    last_all: Option<AllPosition>,
    checkpoints: Checkpoints,
    ids: HashMap<Uuid, u64>,
    /// Why the history read so far cannot be trusted: reads and appends report it.
    damaged: Option<String>,
    /// Why the store stopped accepting appends (an append's unknown outcome).
    failed: Option<String>,
}

impl<W: Wire> KurrentStore<W> {
    /// Opens the namespace's history: reads all of it, checking every position, revision,
    /// id and link of the chain, and keeps its ids.
    pub async fn open(wire: W, ns: Namespace, options: KurrentOptions) -> Result<Self, OpenError> {
        let store = KurrentStore {
            prefix: ns.prefix(),
            wire,
            ns,
            options,
            state: Mutex::new(State::default()),
            head: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(()),
            refreshing: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
        };
        store.refresh().await?;
        Ok(store)
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The chain link after the last event (all zero for an empty store), hex: it commits to
    /// the whole history.
    pub fn head_hash(&self) -> String {
        hex::encode(self.lock().link)
    }

    /// The server connection, the store closed.
    pub fn into_wire(self) -> W {
        self.wire
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn call<T>(&self, f: impl Future<Output = Result<T, WireError>>) -> Result<T, WireError> {
        match tokio::time::timeout(self.options.call_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Unreachable(format!("no answer within {:?}", self.options.call_timeout))),
        }
    }

    /// Reads what the server holds past the last known event and takes it in.
    async fn refresh(&self) -> Result<(), OpenError> {
        let _one = self.refreshing.lock().await;
        loop {
            let from = self.lock().last_all.unwrap_or(AllPosition::START);
            let page = self.call(self.wire.read_all(from, &self.prefix, READ_PAGE_EVENTS)).await?;
            let full = page.len() == READ_PAGE_EVENTS;
            let took = self.take_in(&page)?;
            if !full || took == 0 {
                return Ok(());
            }
        }
    }

    /// Checks and applies events read from `$all` (skipping those already known). Returns
    /// how many were new.
    fn take_in(&self, page: &[WireRecorded]) -> Result<usize, OpenError> {
        let mut state = self.lock();
        if let Some(reason) = &state.damaged {
            return Err(OpenError::Damaged(reason.clone()));
        }
        let mut took = 0;
        for w in page {
            if state.last_all.is_some_and(|last| w.all <= last) {
                continue;
            }
            let head = self.head.load(Ordering::SeqCst);
            let checked = mapping::from_wire(&self.ns, w).and_then(|(e, link)| {
                let fail = |reason: String| MappingError { stream: w.stream.clone(), all: w.all, id: w.id, reason };
                if e.position != head {
                    return Err(fail(format!(
                        "it says position {} where {head} comes next: another writer is appending to namespace {}, \
                         or events were removed",
                        e.position, self.ns
                    )));
                }
                if !mapping::check_link(&state.link, &e, &link) {
                    return Err(fail("its hash-chain link does not follow from the events before it".into()));
                }
                if let Some(p) = state.ids.get(&w.id) {
                    return Err(fail(format!("its id is stored already at position {p}")));
                }
                Ok(link)
            });
            let link = match checked {
                Ok(link) => link,
                Err(e) => {
                    let reason = format!("damaged: {e}");
                    state.damaged = Some(reason.clone());
                    return Err(OpenError::Damaged(reason));
                }
            };
            state.link = link;
            state.last_all = Some(w.all);
            state.checkpoints.note(head, w.all);
            state.ids.insert(w.id, head);
            self.head.store(head + 1, Ordering::SeqCst);
            took += 1;
        }
        drop(state);
        if took > 0 {
            self.changed.notify_waiters();
        }
        Ok(took)
    }

    /// Reads up to `want` events from dense position `from` (below the head).
    async fn read_from(&self, from: u64, want: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let Some((mut at, mut next)) = self.lock().checkpoints.start_for(from) else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(want.min(READ_PAGE_EVENTS));
        let mut skip_first = false;
        while out.len() < want {
            let before = usize::try_from(from.saturating_sub(next)).unwrap_or(usize::MAX);
            let ask = before.saturating_add(want - out.len()).saturating_add(usize::from(skip_first));
            let page =
                self.call(self.wire.read_all(at, &self.prefix, ask.min(READ_PAGE_EVENTS))).await.map_err(io_error)?;
            let mut took = 0;
            for w in page.iter().skip(usize::from(skip_first)) {
                let (e, _) = mapping::from_wire(&self.ns, w).map_err(|e| damaged(e.to_string()))?;
                if e.position != next {
                    return Err(damaged(format!(
                        "event {} in stream {:?} at $all {} says position {} where {next} was expected",
                        w.id, w.stream, w.all, e.position
                    )));
                }
                next += 1;
                took += 1;
                if e.position >= from && out.len() < want {
                    out.push(e);
                }
            }
            match page.last() {
                Some(last) if took > 0 => at = last.all,
                _ => break,
            }
            skip_first = true;
        }
        Ok(out)
    }

    async fn append_one(&self, req: AppendRequest, refused: &HashSet<String>) -> Result<Appended, AppendError> {
        check_request(&req)?;
        // What another process appended since (a writer that took its turn before this one)
        // comes first: a retry of its events is then recognised, and this append follows it on
        // the chain.
        self.refresh().await.map_err(|e| AppendError::Io(e.to_string()))?;
        let mut found = Vec::new();
        for (i, e) in req.events.iter().enumerate() {
            if req.events[..i].iter().any(|p| p.event_id == e.event_id) {
                return Err(AppendError::Invalid(format!("event id {} appears twice in one append", e.event_id)));
            }
            let stored = self.lock().ids.get(&e.event_id).copied();
            if let Some(position) = stored {
                let event = self.read_from(position, 1).await.map_err(|e| AppendError::Io(e.to_string()))?;
                match event.into_iter().next() {
                    Some(stored) => found.push((i, stored)),
                    None => {
                        return Err(AppendError::Io(format!("event {} at position {position} is gone", e.event_id)));
                    }
                }
            }
        }
        if !found.is_empty() {
            return duplicate_result(&req, &found);
        }
        let wrong =
            |actual| AppendError::WrongExpectedRevision { stream: req.stream.clone(), expected: req.expected, actual };
        if refused.contains(&req.stream) && req.expected != ingest::store::ExpectedRevision::Any {
            return Err(wrong(None));
        }
        let wire_stream = self.ns.stream(&req.stream);
        let current =
            self.call(self.wire.stream_revision(&wire_stream)).await.map_err(|e| AppendError::Io(e.to_string()))?;
        let expected = mapping::expectation(req.expected, current).map_err(wrong)?;
        let first_position = self.head.load(Ordering::SeqCst);
        let mut link = self.lock().link;
        let recorded_at_us = self.options.clock.as_ref().map_or_else(now_us, |clock| clock());
        let mut revision = current.map_or(0, |r| r + 1);
        let mut events = Vec::with_capacity(req.events.len());
        for (k, e) in req.events.iter().enumerate() {
            let (w, next) =
                mapping::to_wire(&req.stream, e, first_position + k as u64, revision, recorded_at_us, &link);
            events.push(w);
            link = next;
            revision += 1;
        }
        let bytes: usize = events
            .iter()
            .map(|e| e.data.len() + e.metadata.len() + e.event_type.len() + APPEND_EVENT_OVERHEAD_BYTES)
            .sum();
        if bytes > self.options.append_bytes_max {
            return Err(AppendError::Invalid(format!(
                "an append to {:?} of about {bytes} bytes exceeds the KurrentDB server's largest append, {} bytes \
                 (the server's --max-append-size, at most 16 MiB, and the store's append_bytes_max)",
                req.stream, self.options.append_bytes_max
            )));
        }
        let last_revision = revision - 1;
        let written = Appended { first_position, last_revision, duplicate: false };
        let last_id = req.events[req.events.len() - 1].event_id;
        match self.call(self.wire.append(&wire_stream, expected, events)).await {
            Ok(()) => match self.refresh().await {
                Ok(()) if self.lock().ids.get(&last_id) == Some(&(first_position + req.events.len() as u64 - 1)) => {
                    Ok(written)
                }
                Ok(()) => Err(self.fail(format!("an append to {:?} was acknowledged but is not in $all", req.stream))),
                Err(e) => Err(self.fail(format!("reading back an append to {:?}: {e}", req.stream))),
            },
            Err(WireError::WrongExpectedVersion { actual }) => Err(wrong(actual)),
            Err(WireError::Refused(m)) => Err(AppendError::Io(format!("the KurrentDB server refused: {m}"))),
            Err(WireError::Unreachable(m)) => {
                // The server may have written it: look before answering.
                match self.refresh().await {
                    Ok(()) if self.lock().ids.contains_key(&last_id) => Ok(written),
                    _ => Err(self.fail(format!(
                        "the outcome of an append to {:?} is unknown ({m}); reopen the store, and retry the append \
                         (a retry is recognised if it landed)",
                        req.stream
                    ))),
                }
            }
        }
    }

    /// Stops appends with `reason` (unless stopped already) and returns the error to answer.
    fn fail(&self, reason: String) -> AppendError {
        let mut state = self.lock();
        match &state.damaged {
            Some(damaged) => AppendError::Io(damaged.clone()),
            None => AppendError::Io(state.failed.get_or_insert(reason).clone()),
        }
    }
}

impl<W: Wire + Clone> KurrentStore<W> {
    /// The backend's verify: reads the namespace's whole history again from the server as a
    /// newly opened store does, checking every position, revision, id and chain link, and
    /// returns the events read and the head hash. Holds a second id index meanwhile.
    pub async fn verify(&self) -> Result<(u64, String), OpenError> {
        let options = KurrentOptions { clock: None, ..self.options.clone() };
        let fresh = KurrentStore::open(self.wire.clone(), self.ns.clone(), options).await?;
        Ok((fresh.head(), fresh.head_hash()))
    }
}

fn io_error(e: WireError) -> ReadError {
    ReadError::Io(io::Error::other(e.to_string()))
}

fn damaged(reason: String) -> ReadError {
    ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("the history in KurrentDB: {reason}")))
}

fn refresh_error(e: OpenError) -> ReadError {
    match e {
        OpenError::Server(w) => io_error(w),
        OpenError::Damaged(d) => damaged(d),
    }
}

fn now_us() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

impl<W: Wire> EventStore for KurrentStore<W> {
    async fn append_many(&self, requests: Vec<AppendRequest>) -> Vec<Result<Appended, AppendError>> {
        let _writer = self.writer.lock().await;
        let mut refused = HashSet::new();
        let mut results = Vec::with_capacity(requests.len());
        for req in requests {
            let stream = req.stream.clone();
            let failed = {
                let state = self.lock();
                state.damaged.clone().or_else(|| state.failed.clone())
            };
            let result = match failed {
                Some(reason) => Err(AppendError::Io(reason)),
                None => self.append_one(req, &refused).await,
            };
            if result.is_err() {
                refused.insert(stream);
            }
            results.push(result);
        }
        results
    }

    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let max = max.min(READ_EVENTS_MAX);
        let wire_stream = self.ns.stream(stream);
        let head = self.head();
        let mut out = Vec::new();
        // In pages, so that each call stays well inside the call timeout.
        while out.len() < max {
            let next = from + out.len() as u64;
            let ask = (max - out.len()).min(READ_PAGE_EVENTS);
            let page = self.call(self.wire.read_stream(&wire_stream, next, ask)).await.map_err(io_error)?;
            for w in &page {
                let (e, _) = mapping::from_wire(&self.ns, w).map_err(|e| damaged(e.to_string()))?;
                if e.position >= head {
                    // Appended after this store's view of the log: not shown until it is read in order.
                    return Ok(out);
                }
                out.push(e);
            }
            if page.len() < ask {
                break;
            }
        }
        Ok(out)
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        if from >= self.head() {
            self.refresh().await.map_err(refresh_error)?;
        }
        let head = self.head();
        if from >= head || max == 0 {
            return Ok(Vec::new());
        }
        let want = usize::try_from(head - from).unwrap_or(usize::MAX).min(max).min(READ_EVENTS_MAX);
        self.read_from(from, want).await
    }

    async fn event_by_id(&self, id: Uuid) -> Result<Option<RecordedEvent>, ReadError> {
        let Some(position) = self.lock().ids.get(&id).copied() else { return Ok(None) };
        let event = self.read_from(position, 1).await?.into_iter().next();
        match event {
            Some(e) if e.data.event_id == id => Ok(Some(e)),
            _ => Err(damaged(format!("event {id} is not at position {position} where it was read at open"))),
        }
    }

    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, ReadError> {
        self.call(self.wire.stream_revision(&self.ns.stream(stream))).await.map_err(io_error)
    }

    fn head(&self) -> u64 {
        self.head.load(Ordering::SeqCst)
    }

    async fn wait_for(&self, position: u64) {
        loop {
            let changed = self.changed.notified();
            if self.head() > position {
                return;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(self.options.poll_interval) => {
                    // Events another process appended; an error is tried again next time.
                    let _ = self.refresh().await;
                }
            }
        }
    }
}

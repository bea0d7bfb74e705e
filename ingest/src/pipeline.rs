//! Streaming ingest of NDJSON (terminal feed or admin records) into the store.
//!
//! Lines are read with a bounded buffer, parsed, decided against the write model in chunks of
//! [`CHUNK_RECORDS_MAX`], and each chunk's accepted events go to the store in one
//! `append_many` (one group commit). Decisions inside a chunk see the effect of earlier
//! records of the same chunk through an overlay; every append carries the expected revision
//! it was decided on, so a decision made on a stale view is refused by the store and decided
//! again. After each chunk the registry catches up from the store itself.
//!
//! Re-running an import is safe at any point: every record maps to a deterministic event id,
//! so what was stored before is answered as a duplicate and nothing is stored twice.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admin::parse_admin_line;
use crate::event::Event;
use crate::feed::{FEED_LINE_BYTES_MAX, LineError, parse_feed_line};
use crate::store::{AppendError, AppendRequest, EventStore, ExpectedRevision, HashKeyMap, READ_EVENTS_MAX, ReadError};
use crate::streams::payment as payment_stream;
use crate::writemodel::{PaymentState, REGISTRY_EVENT_TYPES, Registry, Rejection, View};

/// Records decided and appended together.
pub const CHUNK_RECORDS_MAX: usize = 4096;
/// Rejections kept word for word in a summary; the rest are counted.
pub const REJECTIONS_LISTED_MAX: usize = 20;
/// Times a record decided on a stale view is decided again before it is reported.
const CONFLICT_RETRIES_MAX: u32 = 3;
/// How far a record's business time (`at`) may be ahead of the clock of the process that
/// decides it, in seconds: terminal and host clocks drift by minutes, never by days. A record
/// from further ahead is refused (`time_in_future`): accepted, it would make every later event
/// "late" and send as-of-time reads through wide windows.
pub const AT_AHEAD_OF_CLOCK_SECONDS_MAX: i64 = 15 * 60;

/// Which parser a file goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Terminal feed records.
    Feed,
    /// Admin records.
    Admin,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RecordOutcome {
    /// Stored now at this position.
    Accepted {
        /// Global position.
        position: u64,
    },
    /// Stored before with the same content; nothing was written.
    Duplicate {
        /// Where the original is.
        position: u64,
    },
    /// Refused; nothing was stored.
    Rejected(RejectedRecord),
}

/// A refused record: where it was, what it was, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    /// 1-based line in the input.
    pub line: u64,
    /// Its txn_id (or terminal/batch, merchant id ...), if it got far enough to have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The field at fault, for a record that failed parsing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Stable code: `invalid_record` for parse errors, the rule's code otherwise.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

impl RejectedRecord {
    fn parse(e: LineError) -> Self {
        RejectedRecord {
            line: e.line,
            reference: None,
            field: e.field,
            code: "invalid_record".into(),
            message: e.reason,
        }
    }

    fn rule(line: u64, reference: String, r: Rejection) -> Self {
        RejectedRecord { line, reference: Some(reference), field: None, code: r.code.into(), message: r.message }
    }
}

/// Totals of an ingest run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestSummary {
    /// Records read (blank lines are not records).
    pub records: u64,
    /// Stored now.
    pub accepted: u64,
    /// Stored before.
    pub duplicates: u64,
    /// Refused.
    pub rejected: u64,
    /// The first [`REJECTIONS_LISTED_MAX`] rejections.
    pub first_rejections: Vec<RejectedRecord>,
}

impl IngestSummary {
    /// Counts one record's outcome (listing it among the first rejections if it was refused).
    pub fn count(&mut self, outcome: RecordOutcome) {
        self.records += 1;
        match outcome {
            RecordOutcome::Accepted { .. } => self.accepted += 1,
            RecordOutcome::Duplicate { .. } => self.duplicates += 1,
            RecordOutcome::Rejected(r) => {
                self.rejected += 1;
                if self.first_rejections.len() < REJECTIONS_LISTED_MAX {
                    self.first_rejections.push(r);
                }
            }
        }
    }
}

/// Why an ingest stopped before the end of its input. Records counted in the summary so far
/// are settled; re-running the same input is safe.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Input(#[from] io::Error),
    /// The store failed to read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The store failed to write: nothing after this point was stored.
    #[error("storing records failed: {0}")]
    Store(AppendError),
    /// A stored event could not be decoded: a newer writer or damage.
    #[error("decoding stored event at position {position}: {source}")]
    Decode {
        /// Position of the event.
        position: u64,
        /// Why.
        source: crate::event::DecodeError,
    },
    /// The checkpoint file could not be written.
    #[error("writing checkpoint {path}: {source}")]
    Checkpoint {
        /// File.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// An ingest that stopped early, with the totals of what was settled before it stopped.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct IngestFailure {
    /// Records settled (stored, duplicate or refused) before the failure.
    pub summary: IngestSummary,
    /// What stopped it.
    pub error: IngestError,
}

/// The write model's checkpoint: the registry as of a position, and the id of the event just
/// before that position so that a checkpoint from another log is recognised and ignored.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    position: u64,
    last_event_id: Option<Uuid>,
    registry: Registry,
}

/// Decides and stores records against one store.
pub struct Ingestor<S: EventStore> {
    store: Arc<S>,
    /// Merchants the books still owe (or that owe): a close is refused for them.
    owed: Option<std::collections::HashSet<String>>,
    registry: Registry,
    position: u64,
    tentative: Tentative,
    seq: u64,
    /// The clock the business times of records are held against, once one is given.
    clock: Option<fn() -> chrono::DateTime<chrono::Utc>>,
    /// The latest business time the current chunk accepts (the clock's now plus the skew).
    not_after: Option<chrono::DateTime<chrono::Utc>>,
}

/// One record of a chunk, parsed and decided, waiting for the store's answer.
struct Pending {
    slot: usize,
    line: u64,
}

impl<S: EventStore> Ingestor<S> {
    /// A write model over `store`, caught up from `checkpoint` if that file holds a checkpoint
    /// of this log, else from position 0.
    pub async fn open(store: Arc<S>, checkpoint: Option<&Path>) -> Result<Self, IngestError> {
        let mut ingestor = Ingestor {
            store,
            owed: None,
            registry: Registry::default(),
            position: 0,
            tentative: Tentative::default(),
            seq: 0,
            clock: None,
            not_after: None,
        };
        if let Some(path) = checkpoint
            && let Ok(bytes) = std::fs::read(path)
            && let Ok(cp) = serde_json::from_slice::<Checkpoint>(&bytes)
            && ingestor.checkpoint_matches(&cp).await?
        {
            ingestor.registry = cp.registry;
            ingestor.position = cp.position;
        }
        ingestor.catch_up().await?;
        Ok(ingestor)
    }

    async fn checkpoint_matches(&self, cp: &Checkpoint) -> Result<bool, IngestError> {
        if cp.position > self.store.head() {
            return Ok(false);
        }
        let last = match cp.position {
            0 => None,
            p => self.store.read_all(p - 1, 1).await?.first().map(|e| e.data.event_id),
        };
        Ok(last == cp.last_event_id)
    }

    /// Writes the checkpoint atomically (temporary file, fsync, rename).
    pub async fn save_checkpoint(&self, path: &Path) -> Result<(), IngestError> {
        let last_event_id = match self.position {
            0 => None,
            p => self.store.read_all(p - 1, 1).await?.first().map(|e| e.data.event_id),
        };
        let cp = Checkpoint { position: self.position, last_event_id, registry: self.registry.clone() };
        let err = |source| IngestError::Checkpoint { path: path.to_owned(), source };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(&cp).map_err(|e| err(io::Error::other(e)))?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Tells the write model which merchants have a payable that is not zero (from the books):
    /// closing one of them is refused (`merchant_payable_not_zero`). Without it, closes are
    /// refused for every merchant (`merchant_payable_unknown`): the write model cannot know.
    pub fn set_owed_merchants(&mut self, owed: std::collections::HashSet<String>) {
        self.owed = Some(owed);
    }

    /// Refuses records whose business time is more than [`AT_AHEAD_OF_CLOCK_SECONDS_MAX`] ahead
    /// of `clock` (read once a chunk). Without a clock, any time in the accepted years passes:
    /// tools that load history into a store of their own.
    pub fn refuse_times_ahead_of(&mut self, clock: fn() -> chrono::DateTime<chrono::Utc>) {
        self.clock = Some(clock);
    }

    /// A merchant may close only with a zero payable (design: `MerchantClosed` only with zero
    /// payable); the payables come from the books through [`Ingestor::set_owed_merchants`].
    fn decide_close(&self, event: &Event) -> Result<(), crate::writemodel::Rejection> {
        let Event::MerchantClosed(e) = event else { return Ok(()) };
        match &self.owed {
            None => Err(crate::writemodel::Rejection {
                code: "merchant_payable_unknown",
                message: format!("merchant {} cannot be closed here: its payable is not known", e.merchant_id),
            }),
            Some(owed) if owed.contains(&e.merchant_id) => Err(crate::writemodel::Rejection {
                code: "merchant_payable_not_zero",
                message: format!(
                    "merchant {} still has a payable that is not zero; settle it before closing",
                    e.merchant_id
                ),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The registry as of [`Ingestor::position`].
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The log position the registry is caught up to.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Applies every registry event stored since the last catch-up.
    pub async fn catch_up(&mut self) -> Result<(), IngestError> {
        loop {
            let events = self.store.read_all(self.position, READ_EVENTS_MAX).await?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            let next = last.position + 1;
            for e in &events {
                if REGISTRY_EVENT_TYPES.contains(&e.data.event_type.as_str()) {
                    let event = Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                        .map_err(|source| IngestError::Decode { position: e.position, source })?;
                    self.registry.apply(&event);
                }
            }
            self.position = next;
        }
    }

    /// Reads NDJSON from `input` to its end, storing what is accepted. `progress` is called
    /// after every chunk with the bytes read so far and the running totals.
    ///
    /// Chunks are pipelined: the next chunk is parsed and decided while the previous one is
    /// being made durable, its decisions seeing the previous chunk's through the tentative
    /// state. If the previous chunk comes back with anything but the expected answers (a
    /// stale decision) or changed the registry, the tentative state is dropped and the next
    /// chunk decided again from the log.
    ///
    /// On failure the summary of everything settled before it comes with the error: those
    /// records are stored (or were refused) for good, and re-running the input is safe.
    pub async fn ingest_reader(
        &mut self,
        input: impl BufRead,
        kind: InputKind,
        progress: impl FnMut(u64, &IngestSummary),
    ) -> Result<IngestSummary, IngestFailure> {
        let mut summary = IngestSummary::default();
        match self.ingest_into(input, kind, progress, &mut summary).await {
            Ok(()) => Ok(summary),
            Err(error) => Err(IngestFailure { summary, error }),
        }
    }

    async fn ingest_into(
        &mut self,
        mut input: impl BufRead,
        kind: InputKind,
        mut progress: impl FnMut(u64, &IngestSummary),
        summary: &mut IngestSummary,
    ) -> Result<(), IngestError> {
        self.catch_up().await?;
        let mut reader = ChunkReader::new(&mut input);
        let mut in_flight: Option<InFlight> = None;
        let mut parsing: Option<Parsing> = None;
        let mut spare: Vec<Lines> = Vec::new();
        loop {
            // Stage 1: read a chunk and parse it on another thread.
            let mut lines = spare.pop().unwrap_or_default();
            reader.next_chunk(&mut lines)?;
            let bytes_read = reader.bytes_read();
            let parsing_next = (!lines.is_empty()).then(|| {
                tokio::task::spawn_blocking(move || {
                    let parsed = parse_chunk(&lines, kind);
                    (parsed, lines)
                })
            });
            // Stage 2: decide the chunk parsed before, while stage 3 stores the one before it.
            let mut next = match parsing.take() {
                Some(p) => {
                    let (parsed, lines) = p.await.map_err(|e| IngestError::Input(io::Error::other(e)))?;
                    Some(self.decide_chunk(parsed, lines, kind).await?)
                }
                None => None,
            };
            parsing = parsing_next;
            if let Some(previous) = in_flight.take() {
                let clean = self.settle_in_flight(previous, summary, &mut spare).await?;
                if !clean && let Some(chunk) = next.take() {
                    // Decided on a view that turned out wrong: parse and decide again from the log.
                    self.tentative = Tentative::default();
                    next = Some(self.decide_chunk(parse_chunk(&chunk.raw, kind), chunk.raw, kind).await?);
                }
                progress(bytes_read, summary);
            }
            let Some(chunk) = next else {
                if parsing.is_none() {
                    break;
                }
                continue;
            };
            let registry_changed = chunk.registry_changed;
            let flight = self.send(chunk);
            if registry_changed {
                // The registry must be caught up before anything is decided on it.
                self.settle_in_flight(flight, summary, &mut spare).await?;
                progress(bytes_read, summary);
            } else {
                in_flight = Some(flight);
            }
        }
        Ok(())
    }

    /// Decides and stores one chunk of lines, returning one outcome per line, in order.
    pub async fn process_chunk(
        &mut self,
        lines: &[(u64, Vec<u8>)],
        kind: InputKind,
    ) -> Result<Vec<RecordOutcome>, IngestError> {
        let lines = Lines::from_numbered(lines);
        self.decide_and_store(parse_chunk(&lines, kind), lines, kind).await
    }

    /// Decides and stores a chunk whose every line was found valid by [`validate_chunk`]
    /// (parsed once, there): one outcome per line, in order.
    pub async fn process_valid(&mut self, chunk: ValidChunk) -> Result<Vec<RecordOutcome>, IngestError> {
        self.decide_and_store(chunk.lines, chunk.raw, chunk.kind).await
    }

    async fn decide_and_store(
        &mut self,
        parsed: Vec<ParsedLine>,
        raw: Lines,
        kind: InputKind,
    ) -> Result<Vec<RecordOutcome>, IngestError> {
        // Another writer may have changed the registry since the last chunk.
        self.catch_up().await?;
        let chunk = self.decide_chunk(parsed, raw, kind).await?;
        let flight = self.send(chunk);
        let chunk = self.settle(flight).await?;
        Ok(chunk.outcomes.into_iter().map(|o| o.unwrap_or_else(unreachable_outcome)).collect())
    }

    /// Decides every parsed line of a chunk against the registry and the tentative state.
    async fn decide_chunk(
        &mut self,
        lines: Vec<ParsedLine>,
        raw: Lines,
        kind: InputKind,
    ) -> Result<Chunk, IngestError> {
        self.seq += 1;
        self.not_after = self.clock.map(|now| now() + chrono::Duration::seconds(AT_AHEAD_OF_CLOCK_SECONDS_MAX));
        // The chunk's ids are looked up in the store together; an id an earlier record of
        // this chunk stages is answered by the tentative state instead, as one staged by a
        // chunk not yet settled already is.
        let (mut slots, mut ids) = (Vec::new(), Vec::new());
        for (slot, line) in lines.iter().enumerate() {
            if let Ok(Parsed { data: Some(data), .. }) = &line.parsed
                && !self.tentative.staged.contains_key(&data.event_id.as_u128())
            {
                slots.push(slot);
                ids.push(data.event_id);
            }
        }
        let mut found = vec![None; lines.len()];
        for (slot, stored) in slots.into_iter().zip(self.store.events_by_ids(&ids).await?) {
            found[slot] = Some(stored);
        }
        let mut chunk = Chunk {
            seq: self.seq,
            outcomes: vec![None; lines.len()],
            lines,
            raw,
            kind,
            found,
            requests: Vec::new(),
            pending: Vec::new(),
            registry_changed: false,
            deferred: Vec::new(),
        };
        for slot in 0..chunk.lines.len() {
            self.decide_one(&mut chunk, slot).await?;
        }
        Ok(chunk)
    }

    async fn decide_one(&mut self, chunk: &mut Chunk, slot: usize) -> Result<(), IngestError> {
        let Chunk { seq, lines, outcomes, found, requests, pending, registry_changed, deferred, .. } = chunk;
        let line = lines[slot].line;
        let p = match &mut lines[slot].parsed {
            Ok(p) => p,
            Err(e) => {
                outcomes[slot] = Some(RecordOutcome::Rejected(RejectedRecord::parse(e.clone())));
                return Ok(());
            }
        };
        // Taken, not cloned: a record decided again after a stale decision is parsed anew.
        let Some(event) = p.event.take() else {
            outcomes[slot] = Some(unreachable_outcome());
            return Ok(());
        };
        let mut data = p.data.take().unwrap_or_else(|| event.to_event_data());
        let mut stream = p.stream.take().unwrap_or_else(|| event.stream());
        let names = payment_names(&event);
        let merchant = names.map_or(0, |(m, _)| merchant_key(m));
        // Whose the id is: staged by a chunk not yet settled, or stored.
        let mut stored = None;
        let owner = match self.tentative.staged.get(&data.event_id.as_u128()) {
            Some(&(_, owner)) => Some(owner),
            None => {
                stored = match found.get_mut(slot).and_then(Option::take) {
                    Some(looked_up) => looked_up,
                    None => self.store.event_by_id(data.event_id).await?,
                };
                // The same record again (a re-sent file) is its own merchant's: decoded only
                // when it differs.
                stored.as_ref().map(|found| match found.data == data {
                    true => merchant,
                    false => stored_merchant(found).as_deref().map_or(0, merchant_key),
                })
            }
        };
        if let Some((merchant_id, own_txn)) = names
            && owner.is_some_and(|owner| owner != merchant)
        {
            // The txn_id names another merchant's record: this merchant's is named by both,
            // and the other's is never looked at again (nor told about).
            data.event_id = crate::event::payment_event_id_of(merchant_id, own_txn);
            if let Event::PaymentCaptured(c) = &event {
                stream = crate::streams::payment_of(&c.merchant_id, &c.txn_id);
            }
            stored = None;
            if !self.tentative.staged.contains_key(&data.event_id.as_u128()) {
                stored = self.store.event_by_id(data.event_id).await?;
            }
        }
        if self.tentative.staged.contains_key(&data.event_id.as_u128()) {
            // The same record again while the first is not yet settled: it is decided once the
            // first one is (a duplicate then, or decided on its own if the first was refused).
            // Deciding it now would count it twice in the tentative state.
            deferred.push(slot);
            return Ok(());
        }
        if let Some(stored) = stored {
            outcomes[slot] = Some(if stored.stream == stream && stored.data == data {
                RecordOutcome::Duplicate { position: stored.position }
            } else if stored.data.event_type != data.event_type {
                // Payment events share one id space: the txn_id already names another record.
                let r = Rejection {
                    code: "txn_id_in_use",
                    message: format!("txn_id {} already names a {} record", event.reference(), stored.data.event_type),
                };
                RecordOutcome::Rejected(RejectedRecord::rule(line, event.reference(), r))
            } else {
                let r = conflict_rejection(&event, stored.position);
                RecordOutcome::Rejected(RejectedRecord::rule(line, event.reference(), r))
            });
            return Ok(());
        }
        // Channel terms take effect on a date that may lie ahead; every other record happened.
        if let Some(limit) = self.not_after
            && !matches!(event, Event::ChannelTermsSet(_))
            && event.occurred_at() > limit
        {
            outcomes[slot] = Some(RecordOutcome::Rejected(RejectedRecord {
                line,
                reference: Some(event.reference()),
                field: Some("at".into()),
                code: "time_in_future".into(),
                message: format!(
                    "at {} is more than {} minutes after this host's clock ({})",
                    event.occurred_at().to_rfc3339(),
                    AT_AHEAD_OF_CLOCK_SECONDS_MAX / 60,
                    (limit - chrono::Duration::seconds(AT_AHEAD_OF_CLOCK_SECONDS_MAX))
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            }));
            return Ok(());
        }
        let expected = {
            let decided = if p.is_feed {
                self.decide_feed(&event, &mut stream).await?
            } else {
                View::new(&self.registry, &self.tentative.overlay)
                    .decide_admin(&event)
                    .and_then(|()| self.decide_close(&event))
                    .map(|()| ExpectedRevision::Any)
            };
            match decided {
                Ok(expected) => expected,
                Err(r) => {
                    outcomes[slot] = Some(RecordOutcome::Rejected(RejectedRecord::rule(line, event.reference(), r)));
                    return Ok(());
                }
            }
        };
        if REGISTRY_EVENT_TYPES.contains(&event.event_type()) {
            self.tentative.overlay.apply_over(&event, Some(&self.registry));
            *registry_changed = true;
        }
        self.tentative.staged.insert(data.event_id.as_u128(), (*seq, merchant));
        let stream_of_payment = stream_key(&stream);
        requests.push(AppendRequest { stream, expected, events: vec![data] });
        pending.push(Pending { slot, line });
        self.tentative.apply_payment(event, &stream_of_payment, *seq);
        Ok(())
    }

    /// Hands a decided chunk to the store; its answer is awaited by [`Ingestor::settle`].
    fn send(&mut self, mut chunk: Chunk) -> InFlight {
        let requests = std::mem::take(&mut chunk.requests);
        let head_before = self.store.head();
        let store = self.store.clone();
        let answer = tokio::spawn(async move { store.append_many(requests).await });
        InFlight { chunk, head_before, answer }
    }

    /// Settles a chunk and counts its outcomes; true if everything came back as decided.
    async fn settle_in_flight(
        &mut self,
        flight: InFlight,
        summary: &mut IngestSummary,
        spare: &mut Vec<Lines>,
    ) -> Result<bool, IngestError> {
        let registry_changed = flight.chunk.registry_changed;
        let chunk = self.settle(flight).await?;
        let clean = !chunk.retried && !registry_changed;
        for outcome in chunk.outcomes {
            summary.count(outcome.unwrap_or_else(unreachable_outcome));
        }
        spare.push(chunk.raw);
        Ok(clean)
    }

    /// Waits for the store's answer to a chunk, turns it into outcomes, decides again (alone)
    /// the records decided on a stale view, and brings the registry up to date.
    async fn settle(&mut self, flight: InFlight) -> Result<Settled, IngestError> {
        let InFlight { mut chunk, head_before, answer } = flight;
        let results = answer.await.map_err(|e| IngestError::Store(AppendError::Io(format!("append task: {e}"))))?;
        let mut retry = Vec::new();
        let (written, as_decided) = self.record_results(&mut chunk, results, &mut retry)?;
        retry.append(&mut chunk.deferred);
        let seq = chunk.seq;
        if retry.is_empty() && !chunk.registry_changed && as_decided {
            // Only our own events were added and none changes the registry: nothing to read
            // back. The tentative entries of this chunk are in the store now.
            if self.position == head_before && self.store.head() == head_before + written {
                self.position = head_before + written;
            } else {
                self.catch_up().await?;
            }
            self.tentative.forget_up_to(seq);
            return Ok(Settled { outcomes: chunk.outcomes, raw: chunk.raw, retried: false });
        }
        self.tentative = Tentative::default();
        self.catch_up().await?;
        for attempt in 0..=CONFLICT_RETRIES_MAX {
            if retry.is_empty() {
                break;
            }
            let again = std::mem::take(&mut retry);
            for slot in again {
                if attempt == CONFLICT_RETRIES_MAX {
                    chunk.outcomes[slot] = Some(RecordOutcome::Rejected(RejectedRecord {
                        line: chunk.lines[slot].line,
                        reference: None,
                        field: None,
                        code: "concurrent_update".into(),
                        message: "the record's payment kept changing under it; send it again".into(),
                    }));
                    continue;
                }
                let raw = chunk.raw.one(slot);
                let mut single = Chunk {
                    seq,
                    outcomes: vec![None],
                    lines: parse_chunk(&raw, chunk.kind),
                    raw,
                    kind: chunk.kind,
                    found: Vec::new(),
                    requests: Vec::new(),
                    pending: Vec::new(),
                    registry_changed: false,
                    deferred: Vec::new(),
                };
                self.decide_one(&mut single, 0).await?;
                let requests = std::mem::take(&mut single.requests);
                let results = self.store.append_many(requests).await;
                let mut again_retry = Vec::new();
                self.record_results(&mut single, results, &mut again_retry)?;
                again_retry.append(&mut single.deferred);
                if again_retry.is_empty() {
                    chunk.outcomes[slot] = single.outcomes.pop().flatten();
                } else {
                    retry.push(slot);
                }
                self.tentative = Tentative::default();
                self.catch_up().await?;
            }
        }
        Ok(Settled { outcomes: chunk.outcomes, raw: chunk.raw, retried: true })
    }

    /// Turns the store's answers into outcomes; stale decisions go to `retry`. Returns how
    /// many events were written and whether every answer was the append that was decided (if
    /// not, decisions taken on top of this chunk's may be wrong).
    fn record_results(
        &self,
        chunk: &mut Chunk,
        results: Vec<Result<crate::store::Appended, AppendError>>,
        retry: &mut Vec<usize>,
    ) -> Result<(u64, bool), IngestError> {
        let mut written = 0u64;
        let as_decided = results.iter().all(|r| r.as_ref().is_ok_and(|a| !a.duplicate));
        for (p, result) in std::mem::take(&mut chunk.pending).into_iter().zip(results) {
            // The event has moved on; the rare refusal that names it parses its line again.
            let reference = || {
                parse_chunk(&chunk.raw.one(p.slot), chunk.kind)
                    .pop()
                    .and_then(|l| l.parsed.ok())
                    .and_then(|parsed| parsed.event)
                    .map(|e| e.reference())
            };
            chunk.outcomes[p.slot] = Some(match result {
                Ok(a) if a.duplicate => RecordOutcome::Duplicate { position: a.first_position },
                Ok(a) => {
                    written += 1;
                    RecordOutcome::Accepted { position: a.first_position }
                }
                Err(AppendError::WrongExpectedRevision { .. }) => {
                    retry.push(p.slot);
                    continue;
                }
                Err(AppendError::IdConflict { position, .. }) => RecordOutcome::Rejected(RejectedRecord {
                    line: p.line,
                    reference: reference(),
                    field: None,
                    code: "conflicting_duplicate".into(),
                    message: format!(
                        "a different record with the same id (the same txn_id, for a payment record) is \
                         stored at position {position}"
                    ),
                }),
                Err(AppendError::Invalid(m)) => RecordOutcome::Rejected(RejectedRecord {
                    line: p.line,
                    reference: reference(),
                    field: None,
                    code: "invalid_record".into(),
                    message: m,
                }),
                Err(e) => return Err(IngestError::Store(e)),
            });
        }
        Ok((written, as_decided))
    }

    /// Loads what a terminal record needs and decides it; returns the expected revision to
    /// append with. A sale comes here only when its id is new, so its payment is too. A void,
    /// refund or reversal applies to its merchant's sale `original_txn_id` (found under the
    /// sale's own name, or under its merchant's when another merchant used the txn_id first),
    /// and `stream` becomes that payment's stream; another merchant's sale is as unknown as
    /// one never recorded.
    async fn decide_feed(
        &mut self,
        event: &Event,
        stream: &mut String,
    ) -> Result<Result<ExpectedRevision, Rejection>, IngestError> {
        let a = match event {
            Event::PaymentVoided(a) | Event::PaymentRefunded(a) | Event::PaymentReversed(a) => a,
            _ => {
                let view = View::new(&self.registry, &self.tentative.overlay);
                return Ok(view.decide_feed(event, None).map(|()| ExpectedRevision::NoStream));
            }
        };
        let first = payment_stream(&a.original_txn_id);
        let found = match self.payment_state(&first).await? {
            Some(state) if state.capture.merchant_id == a.merchant_id => Some(first),
            _ => {
                let own = crate::streams::payment_of(&a.merchant_id, &a.original_txn_id);
                self.payment_state(&own).await?.is_some().then_some(own)
            }
        };
        let state = match found {
            Some(name) => {
                let state = self.tentative.payments.get(&stream_key(&name)).and_then(|(s, _)| s.as_ref());
                *stream = name;
                state
            }
            None => None,
        };
        let view = View::new(&self.registry, &self.tentative.overlay);
        Ok(view.decide_feed(event, state).map(|()| ExpectedRevision::Exact(state.map_or(0, |s| s.revision))))
    }

    /// The payment in `stream` as decided so far (loaded from the log the first time).
    async fn payment_state(&mut self, stream: &str) -> Result<Option<&PaymentState>, IngestError> {
        let key = stream_key(stream);
        if !self.tentative.payments.contains_key(&key) {
            let events = self.store.read_stream(stream, 0, READ_EVENTS_MAX).await?;
            let state = PaymentState::from_events(&events)
                .map_err(|source| IngestError::Decode { position: events.first().map_or(0, |e| e.position), source })?;
            // Loaded from the log, not staged by any chunk: sequence 0 is forgotten first.
            self.tentative.payments.insert(key, (state, 0));
        }
        Ok(self.tentative.payments.get(&key).and_then(|(s, _)| s.as_ref()))
    }
}

/// The key of a payment in the tentative state: a 128-bit hash of its stream's name (the same
/// footing as the store's stream hashes).
fn stream_key(stream: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(stream.as_bytes())
}

/// A merchant's id as a key of the tentative state: never 0, which stands for no merchant.
fn merchant_key(merchant_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(merchant_id.as_bytes()).max(1)
}

/// A payment record's merchant and its own txn_id; `None` for any other record.
fn payment_names(event: &Event) -> Option<(&str, &str)> {
    match event {
        Event::PaymentCaptured(c) => Some((&c.merchant_id, &c.txn_id)),
        Event::PaymentVoided(a) | Event::PaymentRefunded(a) | Event::PaymentReversed(a) => {
            Some((&a.merchant_id, &a.txn_id))
        }
        _ => None,
    }
}

/// The merchant of a stored payment event (`None` if it is not one or does not decode).
fn stored_merchant(stored: &crate::store::RecordedEvent) -> Option<crate::event::Id> {
    let data = &stored.data;
    match Event::decode(&data.event_type, data.schema_version, &data.payload).ok()? {
        Event::PaymentCaptured(c) => Some(c.merchant_id),
        Event::PaymentVoided(a) | Event::PaymentRefunded(a) | Event::PaymentReversed(a) => Some(a.merchant_id),
        _ => None,
    }
}

/// Decisions made but not yet confirmed by the store, which later decisions must see. Each
/// entry remembers the chunk that last touched it, so a settled chunk's entries can go.
#[derive(Default)]
struct Tentative {
    overlay: Registry,
    /// Payment states by the 128-bit hash of their stream's name.
    payments: HashKeyMap<u128, (Option<PaymentState>, u64)>,
    /// Event ids (as u128) staged by chunks not yet settled, with the chunk and the
    /// [`merchant_key`] of a payment record's merchant (0 for any other record).
    staged: HashKeyMap<u128, (u64, u64)>,
}

impl Tentative {
    /// Keeps the payment states in step with what a chunk has staged into the payment whose
    /// stream's key is `stream`.
    fn apply_payment(&mut self, event: Event, stream: &u128, seq: u64) {
        match &event {
            Event::PaymentCaptured(_) => {
                let Event::PaymentCaptured(c) = event else { return };
                self.payments.insert(*stream, (Some(PaymentState::captured(c, 0)), seq));
            }
            Event::PaymentVoided(_) | Event::PaymentRefunded(_) | Event::PaymentReversed(_) => {
                if let Some((Some(state), touched)) = self.payments.get_mut(stream) {
                    state.apply(&event);
                    state.revision += 1;
                    *touched = seq;
                }
            }
            _ => {}
        }
    }

    /// Drops what chunks up to `seq` staged: the store holds it now.
    fn forget_up_to(&mut self, seq: u64) {
        self.payments.retain(|_, (_, touched)| *touched > seq);
        self.staged.retain(|_, (touched, _)| *touched > seq);
    }
}

/// A chunk of lines and what was decided about them.
struct Chunk {
    seq: u64,
    lines: Vec<ParsedLine>,
    /// The lines as read, kept until the chunk is settled: a record decided again is parsed
    /// again from them.
    raw: Lines,
    kind: InputKind,
    outcomes: Vec<Option<RecordOutcome>>,
    /// Each record's id as looked up in the store before the chunk was decided (the stored
    /// event or `None`); `None` outside where it was not looked up.
    found: Vec<Option<Option<crate::store::RecordedEvent>>>,
    requests: Vec<AppendRequest>,
    pending: Vec<Pending>,
    registry_changed: bool,
    /// Records whose id an unsettled record already staged: decided after it settles.
    deferred: Vec<usize>,
}

/// A chunk whose appends the store is working on.
struct InFlight {
    chunk: Chunk,
    head_before: u64,
    answer: tokio::task::JoinHandle<Vec<Result<crate::store::Appended, AppendError>>>,
}

/// A chunk with every outcome known.
struct Settled {
    outcomes: Vec<Option<RecordOutcome>>,
    raw: Lines,
    retried: bool,
}

/// A chunk being parsed on a blocking thread; the raw lines come back for reuse.
type Parsing = tokio::task::JoinHandle<(Vec<ParsedLine>, Lines)>;

/// A line as the parser left it.
struct ParsedLine {
    line: u64,
    parsed: Result<Parsed, LineError>,
}

/// A valid record turned into the event it would record, with everything derived from it
/// that the decision and the store need.
struct Parsed {
    /// Taken when the record is staged (a sale's capture moves into the tentative state).
    event: Option<Event>,
    data: Option<crate::store::EventData>,
    stream: Option<String>,
    is_feed: bool,
}

/// A chunk of records all of which parsed: what [`Ingestor::process_valid`] decides. Made
/// by [`validate_chunk`], so a caller can refuse a whole request for one bad record before
/// any of it is decided, without parsing anything twice.
pub struct ValidChunk {
    lines: Vec<ParsedLine>,
    raw: Lines,
    kind: InputKind,
}

/// Parses a chunk of lines: all valid gives a [`ValidChunk`], else every line's error.
pub fn validate_chunk(lines: &[(u64, Vec<u8>)], kind: InputKind) -> Result<ValidChunk, Vec<LineError>> {
    let lines = Lines::from_numbered(lines);
    let parsed = parse_chunk(&lines, kind);
    let errors: Vec<LineError> = parsed
        .iter()
        .filter_map(|p| match &p.parsed {
            Err(e) => Some(e.clone()),
            Ok(_) => None,
        })
        .collect();
    if errors.is_empty() { Ok(ValidChunk { lines: parsed, raw: lines, kind }) } else { Err(errors) }
}

/// Parses a chunk of lines. Pure, so it runs on any thread.
fn parse_chunk(lines: &Lines, kind: InputKind) -> Vec<ParsedLine> {
    lines
        .iter()
        .map(|(line, text)| {
            let parsed = match kind {
                InputKind::Feed => parse_feed_line(line, text).map(|cmd| (cmd.into_event(), true)),
                InputKind::Admin => parse_admin_line(line, text).map(|e| (e, false)),
            };
            let parsed = parsed.map(|(event, is_feed)| Parsed {
                data: Some(event.to_event_data()),
                stream: Some(event.stream()),
                event: Some(event),
                is_feed,
            });
            ParsedLine { line, parsed }
        })
        .collect()
}

fn conflict_rejection(event: &Event, position: u64) -> Rejection {
    Rejection {
        code: "conflicting_duplicate",
        message: format!(
            "{} {} is already recorded at position {position} with different content",
            event.event_type(),
            event.idempotency_key()
        ),
    }
}

fn unreachable_outcome() -> RecordOutcome {
    // Every slot is given an outcome by decide_and_store or the retry loop; reaching this is a
    // bug, reported rather than hidden.
    RecordOutcome::Rejected(RejectedRecord {
        line: 0,
        reference: None,
        field: None,
        code: "internal_error".into(),
        message: "record was not decided".into(),
    })
}

/// A chunk of input lines held in one buffer: each line's number and where its bytes lie.
#[derive(Debug, Default, Clone)]
pub struct Lines {
    text: Vec<u8>,
    spans: Vec<(u64, usize, usize)>,
}

impl Lines {
    /// Lines copied from numbered buffers.
    pub fn from_numbered(lines: &[(u64, Vec<u8>)]) -> Self {
        let mut out = Lines::default();
        for (line, bytes) in lines {
            out.push(*line, bytes);
        }
        out
    }

    fn push(&mut self, line: u64, bytes: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        self.spans.push((line, start, self.text.len()));
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Line `i`: its 1-based number in the input and its bytes.
    pub fn get(&self, i: usize) -> (u64, &[u8]) {
        let (line, start, end) = self.spans[i];
        (line, &self.text[start..end])
    }

    /// Every line, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, &[u8])> + '_ {
        self.spans.iter().map(|&(line, start, end)| (line, &self.text[start..end]))
    }

    /// Line `i` alone.
    fn one(&self, i: usize) -> Lines {
        let (line, bytes) = self.get(i);
        let mut out = Lines::default();
        out.push(line, bytes);
        out
    }

    fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }
}

/// Reads NDJSON input a chunk of up to [`CHUNK_RECORDS_MAX`] records at a time into one
/// buffer, each with its 1-based line number: a byte-order mark before the first line is
/// dropped, blank lines are not records, and a line over [`FEED_LINE_BYTES_MAX`] is kept cut
/// (the parser refuses it).
pub struct ChunkReader<R> {
    input: R,
    line_no: u64,
    bytes_read: u64,
    /// Bytes of the line being read so far (it may span reads), kept or not.
    line_len: usize,
}

impl<R: BufRead> ChunkReader<R> {
    /// Reads `input` from its start.
    pub fn new(input: R) -> Self {
        ChunkReader { input, line_no: 0, bytes_read: 0, line_len: 0 }
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Reads the next chunk into `lines` (left empty at the end of input), reusing its buffers.
    pub fn next_chunk(&mut self, lines: &mut Lines) -> io::Result<()> {
        lines.clear();
        let ChunkReader { input, line_no, bytes_read, line_len } = self;
        let mut start = 0;
        while lines.len() < CHUNK_RECORDS_MAX {
            let available = match input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if *line_len > 0 {
                    end_line(lines, start, line_no, line_len);
                }
                break;
            }
            let mut used = 0;
            while lines.len() < CHUNK_RECORDS_MAX {
                let rest = &available[used..];
                let (part, done) = match memchr::memchr(b'\n', rest) {
                    Some(i) => (&rest[..i], Some(i + 1)),
                    None => (rest, None),
                };
                let room = (FEED_LINE_BYTES_MAX + 1).saturating_sub(lines.text.len() - start);
                lines.text.extend_from_slice(&part[..part.len().min(room)]);
                *line_len += part.len();
                used += done.unwrap_or(rest.len());
                if done.is_none() {
                    break;
                }
                end_line(lines, start, line_no, line_len);
                start = lines.text.len();
            }
            input.consume(used);
            *bytes_read += used as u64;
        }
        Ok(())
    }
}

/// Ends the line whose kept bytes start at `start` of the chunk's text: numbered, and a record
/// unless blank. `line_len` is the bytes it had in the input before its newline.
fn end_line(lines: &mut Lines, mut start: usize, line_no: &mut u64, line_len: &mut usize) {
    *line_no += 1;
    let kept = lines.text.len() - start;
    // A cut line keeps its `max + 1` bytes whatever they end with, so the parser refuses it.
    let truncated = std::mem::take(line_len) > kept;
    if !truncated && kept > 0 && lines.text.last() == Some(&b'\r') {
        lines.text.pop();
    }
    if *line_no == 1 && lines.text[start..].starts_with(b"\xEF\xBB\xBF") {
        start += 3;
    }
    if lines.text[start..].iter().all(u8::is_ascii_whitespace) {
        lines.text.truncate(start);
        return;
    }
    lines.spans.push((*line_no, start, lines.text.len()));
}
#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use proptest::strategy::Strategy as _;

    use super::{CHUNK_RECORDS_MAX, ChunkReader, FEED_LINE_BYTES_MAX, Lines};

    /// What the reader must give, line by line: numbered from 1, a byte-order mark dropped
    /// before the first line, a `\r` before the newline dropped unless the line was cut,
    /// blank lines left out, and a line longer than the limit cut to one byte past it.
    /// Lines with their numbers, each in its own buffer.
    type Numbered = Vec<(u64, Vec<u8>)>;

    fn expected(input: &[u8]) -> Numbered {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if input.ends_with(b"\n") || input.is_empty() {
            parts.pop();
        }
        for (i, part) in parts.into_iter().enumerate() {
            let mut line = part[..part.len().min(FEED_LINE_BYTES_MAX + 1)].to_vec();
            if line.len() == part.len() && line.last() == Some(&b'\r') {
                line.pop();
            }
            if i == 0 && line.starts_with(b"\xEF\xBB\xBF") {
                line.drain(..3);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push((i as u64 + 1, line));
            }
        }
        out
    }

    /// Every line read through a buffer of `buffer` bytes, each chunk's size, and the bytes read.
    fn read_all(input: &[u8], buffer: usize) -> (Numbered, Vec<usize>, u64) {
        let mut reader = ChunkReader::new(BufReader::with_capacity(buffer, input));
        let (mut all, mut sizes, mut lines) = (Vec::new(), Vec::new(), Lines::default());
        loop {
            reader.next_chunk(&mut lines).expect("read");
            if lines.is_empty() {
                break;
            }
            sizes.push(lines.len());
            all.extend(lines.iter().map(|(n, l)| (n, l.to_vec())));
        }
        (all, sizes, reader.bytes_read())
    }

    proptest::proptest! {
        /// Any input, read through any buffer size: every line as the rules say, in chunks
        /// of at most the chunk size, every byte counted.
        #[test]
        fn chunks_hold_every_line_as_read(
            pieces in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b"\n".to_vec()),
                proptest::strategy::Just(b"\r\n".to_vec()),
                proptest::strategy::Just(b"\r".to_vec()),
                proptest::strategy::Just(b"\xEF\xBB\xBF".to_vec()),
                proptest::strategy::Just(b"  \t".to_vec()),
                proptest::strategy::Just(vec![b'x'; FEED_LINE_BYTES_MAX - 1]),
                proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                "[a-z{}\":,]{1,30}".prop_map(String::into_bytes),
            ], 0..60),
            buffer in 1usize..300,
        ) {
            let input = pieces.concat();
            let (lines, sizes, bytes) = read_all(&input, buffer);
            proptest::prop_assert_eq!(lines, expected(&input));
            proptest::prop_assert!(sizes.iter().all(|&n| n <= CHUNK_RECORDS_MAX));
            proptest::prop_assert_eq!(bytes, input.len() as u64);
        }
    }

    #[test]
    fn a_long_input_comes_in_full_chunks() {
        let mut input = b"\xEF\xBB\xBF{\"first\":1}\r\n\n".to_vec();
        for i in 0..CHUNK_RECORDS_MAX * 2 + 5 {
            input.extend_from_slice(format!("{{\"n\":{i}}}\n").as_bytes());
        }
        input.extend_from_slice(&vec![b'y'; FEED_LINE_BYTES_MAX * 2]);
        let (lines, sizes, bytes) = read_all(&input, 1 << 16);
        assert_eq!(sizes, vec![CHUNK_RECORDS_MAX, CHUNK_RECORDS_MAX, 7]);
        assert_eq!(lines[0], (1, b"{\"first\":1}".to_vec()));
        assert_eq!(lines[1], (3, b"{\"n\":0}".to_vec()));
        let last = lines.last().expect("last");
        assert_eq!((last.0, last.1.len()), (CHUNK_RECORDS_MAX as u64 * 2 + 8, FEED_LINE_BYTES_MAX + 1));
        assert_eq!(lines, expected(&input));
        assert_eq!(bytes, input.len() as u64);
    }
}

//! `ledger` owns the double-entry books: the projection of events into balanced journal
//! entries ([`projection::Projection`], [`entry::BalancedEntry`]), the fee arithmetic
//! ([`fees`]), and balances now and as of any position ([`projection::Balances`]). Later:
//! merchant settlement and the reconciliation engine.
//!
//! The projection is a deterministic state machine: it reads no clock and does no I/O; events
//! arrive through the store's read API ([`replay`]).

pub mod checkpoint;
mod chunked;
pub mod entry;
pub mod fees;
pub mod history;
pub mod holds;
pub mod journal;
pub mod projection;
pub mod recon;
pub mod scan;
pub mod timeline;

use std::path::Path;

use ingest::event::Event;
use ingest::money::Currency;
use ingest::store::{EventStore, READ_EVENTS_MAX, ReadError, RecordedEvent};
use rust_decimal::Decimal;

pub use checkpoint::{Mark, Summary};
pub use projection::{LedgerError, Projection};

use crate::entry::{Account, BalancedEntry};

/// Events read from the log per batch while replaying (also the decoder's unit of work).
pub const REPLAY_BATCH_EVENTS: usize = 8192;
/// Batches read ahead of the projection while it books the current one.
pub const REPLAY_BATCHES_AHEAD: usize = 3;
const _: () = assert!(REPLAY_BATCH_EVENTS <= READ_EVENTS_MAX);

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A stored event could not be decoded.
    #[error("decoding the event at position {position}: {source}")]
    Decode {
        /// Position.
        position: u64,
        /// Why.
        source: ingest::event::DecodeError,
    },
    /// The books broke an invariant.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Saving a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// The decoding thread stopped unexpectedly.
    #[error("the event decoder stopped: {0}")]
    Decoder(String),
}

/// Builds the books from the log: every event before position `until` (`u64::MAX`: all),
/// then checks them (trial balance zero, every balance the sum of its postings).
pub async fn replay<S: EventStore>(store: &S, until: u64) -> Result<Projection, ReplayError> {
    let mut books = Projection::default();
    catch_up(store, &mut books, until).await?;
    books.check()?;
    Ok(books)
}

/// What a replay to a business time gives: the balances of the entries of every event that
/// happened at or before that time, as the log booked them.
#[derive(Debug, Clone)]
pub struct AsOfTime {
    /// Every account used by those entries, in path order, with its balance.
    pub rows: Vec<(Account, Currency, Decimal)>,
    /// Events read (the whole log).
    pub events_read: u64,
    /// Entries counted.
    pub entries: u64,
    /// [`projection::digest_rows`] of the rows.
    pub digest: String,
}

/// Replays the whole log and sums, on their own, the entries of the events that happened at
/// or before `time` — the independent counterpart of [`Projection::trial_balance_at_time`].
/// Business time, not log order: an event recorded late still counts on the day it happened.
pub async fn replay_until_time<S: EventStore>(
    store: &S,
    time: chrono::DateTime<chrono::FixedOffset>,
) -> Result<AsOfTime, ReplayError> {
    let t = time.timestamp_micros();
    let mut sums: std::collections::BTreeMap<(Account, Currency), Decimal> = Default::default();
    let mut entries = 0;
    let mut books = Projection::default();
    catch_up_with(store, &mut books, u64::MAX, |event, entry| {
        if event.occurred_at().timestamp_micros() <= t {
            entries += 1;
            for p in entry.postings() {
                *sums.entry((p.account.clone(), p.currency)).or_default() += p.amount;
            }
        }
        Ok::<(), ReplayError>(())
    })
    .await?;
    books.check()?;
    let rows: Vec<_> = sums.into_iter().map(|((a, c), b)| (a, c, b)).collect();
    let digest = projection::digest_rows(&rows);
    Ok(AsOfTime { rows, events_read: books.position(), entries, digest })
}

/// Applies every event from the books' position up to `until` (exclusive; `u64::MAX`: the
/// head of the log).
pub async fn catch_up<S: EventStore>(store: &S, books: &mut Projection, until: u64) -> Result<(), ReplayError> {
    catch_up_inner(store, books, until, Want::Nothing, |_, _, _| Ok::<(), ReplayError>(())).await
}

type Decoded = Result<Vec<(u64, Event)>, ReplayError>;

/// The one replay loop: books every event from the books' position up to `until`, handing
/// each entry to `on_entry`. Reading, decoding and booking overlap: a decoder thread turns
/// batches of stored events into events while the projection books the previous batch.
pub(crate) async fn catch_up_with<S: EventStore, E: From<ReplayError>>(
    store: &S,
    books: &mut Projection,
    until: u64,
    on_entry: impl FnMut(&Event, &BalancedEntry) -> Result<(), E>,
) -> Result<(), E> {
    let mut on_entry = on_entry;
    catch_up_inner(store, books, until, Want::Entries, |_, event, entry| match entry {
        Some(entry) => on_entry(event, entry),
        None => Ok(()),
    })
    .await
}

/// Like [`catch_up`], handing `on_event` every event applied — its position, the event, and
/// the entry it booked if any — in order (the export reads the log this way).
pub async fn catch_up_events<S: EventStore, E: From<ReplayError>>(
    store: &S,
    books: &mut Projection,
    until: u64,
    on_event: impl FnMut(u64, &Event, Option<&BalancedEntry>) -> Result<(), E>,
) -> Result<(), E> {
    catch_up_inner(store, books, until, Want::Events, on_event).await
}

/// What the replay loop hands out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Nothing: only the books.
    Nothing,
    /// The entries booked.
    Entries,
    /// Every event, with its entry if any.
    Events,
}

async fn catch_up_inner<S: EventStore, E: From<ReplayError>>(
    store: &S,
    books: &mut Projection,
    until: u64,
    want: Want,
    mut on_event: impl FnMut(u64, &Event, Option<&BalancedEntry>) -> Result<(), E>,
) -> Result<(), E> {
    let end = until.min(store.head());
    if books.position() >= end {
        return Ok(());
    }
    books.reserve(end - books.position());
    let (decoded_tx, mut decoded_rx) = tokio::sync::mpsc::channel::<Decoded>(REPLAY_BATCHES_AHEAD);
    // Booked batches go back to the decoder thread to be freed where they were allocated.
    let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Vec<(u64, Event)>>();
    let start = books.position();
    // With a blocking reader, the decoder thread reads too; otherwise this task reads and
    // hands the batches over.
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<RecordedEvent>>(REPLAY_BATCHES_AHEAD);
    let (source, handing) = match store.blocking_reader() {
        Some(reader) => (Source::Reader(reader), false),
        None => (Source::Handed(raw_rx), true),
    };
    let decoder = std::thread::Builder::new()
        .name("posledger-decode".into())
        .spawn(move || decode_loop(source, start, end, &decoded_tx, &spent_rx))
        .map_err(|e| ReplayError::Decoder(e.to_string()))?;
    let mut next_read = start;
    let mut in_flight = 0;
    loop {
        while handing && in_flight < REPLAY_BATCHES_AHEAD && next_read < end {
            let want = REPLAY_BATCH_EVENTS.min((end - next_read) as usize);
            let events = store.read_all(next_read, want).await.map_err(ReplayError::from)?;
            if events.is_empty() {
                break;
            }
            next_read += events.len() as u64;
            in_flight += 1;
            raw_tx.send(events).map_err(|_| ReplayError::Decoder("it hung up".into()))?;
        }
        if handing && in_flight == 0 {
            break;
        }
        let Some(batch) = decoded_rx.recv().await else {
            // The decoder stopped: done, or it died (checked below).
            break;
        };
        in_flight = in_flight.saturating_sub(1);
        let batch = batch?;
        for (position, event) in &batch {
            match want {
                Want::Nothing => books.apply_unrecorded(*position, event).map_err(ReplayError::from)?,
                Want::Entries => {
                    if let Some(entry) = books.apply(*position, event).map_err(ReplayError::from)? {
                        on_event(*position, event, Some(&entry))?;
                    }
                }
                Want::Events => {
                    let entry = books.apply(*position, event).map_err(ReplayError::from)?;
                    on_event(*position, event, entry.as_ref())?;
                }
            }
        }
        let _ = spent_tx.send(batch);
    }
    drop(raw_tx);
    drop(spent_tx);
    if books.position() < end {
        // The log holds events up to `end` (its head when the replay began): a decoder that
        // stopped before handing them all over failed, whatever it said.
        let why = why_stopped(decoder.join());
        return Err(ReplayError::Decoder(format!(
            "{why}; the books stopped at position {} of {end}",
            books.position()
        ))
        .into());
    }
    Ok(())
}

/// Why a reading thread that hung up early stopped, from its join: its panic's message, or
/// that it stopped early.
pub(crate) fn why_stopped(joined: std::thread::Result<()>) -> String {
    match joined {
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "it panicked".into()),
        Ok(()) => "it stopped early".into(),
    }
}

/// Where the decoder thread gets stored events.
enum Source {
    /// It reads them itself.
    Reader(ingest::store::BlockingReader),
    /// The replaying task reads them and hands them over.
    Handed(std::sync::mpsc::Receiver<Vec<RecordedEvent>>),
}

/// The decoder thread: batches of stored events in, batches of events out, in order, until
/// `end` (or the first error, which is passed on and ends it).
fn decode_loop(
    mut source: Source,
    mut next: u64,
    end: u64,
    out: &tokio::sync::mpsc::Sender<Decoded>,
    spent: &std::sync::mpsc::Receiver<Vec<(u64, Event)>>,
) {
    loop {
        while let Ok(batch) = spent.try_recv() {
            drop(batch);
        }
        let stored = match &mut source {
            Source::Reader(read) => {
                if next >= end {
                    return;
                }
                match read(next, REPLAY_BATCH_EVENTS.min((end - next) as usize)) {
                    Ok(events) if events.is_empty() => return,
                    Ok(events) => events,
                    Err(e) => {
                        let _ = out.blocking_send(Err(e.into()));
                        return;
                    }
                }
            }
            Source::Handed(rx) => match rx.recv() {
                Ok(events) => events,
                Err(_) => return,
            },
        };
        next += stored.len() as u64;
        let decoded = stored
            .into_iter()
            .map(|e| {
                Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                    .map(|event| (e.position, event))
                    .map_err(|source| ReplayError::Decode { position: e.position, source })
            })
            .collect();
        if out.blocking_send(decoded).is_err() {
            return;
        }
    }
}

/// How the books were opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// No checkpoint: built from position 0.
    Rebuilt,
    /// Resumed from a checkpoint at this position.
    Resumed(u64),
    /// A checkpoint was there but refused (why); built from position 0.
    Refused(String),
}

/// Opens the books: from the checkpoint at `checkpoint` when it is one of this log, else from
/// position 0, then caught up to the head of the log. With them, the checkpoint's [`Mark`]
/// when they were resumed from one (for [`save_books`] to append to).
pub async fn open_books<S: EventStore>(
    store: &S,
    checkpoint: Option<&Path>,
) -> Result<(Projection, Opened, Option<Mark>), ReplayError> {
    let (mut books, opened, mark) = match checkpoint.filter(|p| p.exists()) {
        None => (Projection::default(), Opened::Rebuilt, None),
        Some(path) => match checkpoint::load(path) {
            Err(e) => (Projection::default(), Opened::Refused(e.to_string()), None),
            Ok(loaded) => match mismatch(store, loaded.books.position(), &loaded.anchor).await? {
                None => {
                    let at = loaded.books.position();
                    (loaded.books, Opened::Resumed(at), Some(loaded.mark))
                }
                Some(reason) => (Projection::default(), Opened::Refused(reason), None),
            },
        },
    };
    catch_up(store, &mut books, u64::MAX).await?;
    books.check_trial_balance()?;
    Ok((books, opened, mark))
}

/// The checkpoint's [`Summary`] when it is one of this log and at its head: every balance as
/// it is now, without loading the books. `None` when it is missing, refused, or behind the log
/// (then [`open_books`] says why and catches up).
pub async fn summary_at_head<S: EventStore>(store: &S, checkpoint: &Path) -> Result<Option<Summary>, ReplayError> {
    let Ok(summary) = checkpoint::summary(checkpoint) else { return Ok(None) };
    if summary.position != store.head() || mismatch(store, summary.position, &summary.anchor).await?.is_some() {
        return Ok(None);
    }
    Ok(Some(summary))
}

/// Why a checkpoint at `position` ending with `anchor` is not one of this log, if it is not.
async fn mismatch<S: EventStore>(store: &S, position: u64, anchor: &[u8; 32]) -> Result<Option<String>, ReplayError> {
    if position > store.head() {
        return Ok(Some(format!("it is at position {position} but the log ends at {}", store.head())));
    }
    if *anchor != log_anchor(store, position).await? {
        return Ok(Some(format!("its last event is not the log's event at position {}", position.saturating_sub(1))));
    }
    Ok(None)
}

/// The [`checkpoint::anchor`] of the log's event just before `position` (zeros at 0).
async fn log_anchor<S: EventStore>(store: &S, position: u64) -> Result<[u8; 32], ReplayError> {
    if position == 0 {
        return Ok([0; 32]);
    }
    let events = store.read_all(position - 1, 1).await?;
    Ok(events.first().map(checkpoint::anchor).unwrap_or_default())
}

/// Saves the books as a checkpoint of `store`'s log. With the [`Mark`] of these books' last
/// save or load, only what changed since is written; the mark of this save is returned.
/// Books that an event broke are never saved (the error that broke them is returned).
pub async fn save_books<S: EventStore>(
    store: &S,
    books: &Projection,
    path: &Path,
    mark: Option<&Mark>,
) -> Result<Mark, ReplayError> {
    // Broken books are past an event they could not apply: saved, the next start would
    // resume after it as if it had been booked.
    if let Some(e) = books.broken() {
        return Err(e.clone().into());
    }
    let anchor = log_anchor(store, books.position()).await?;
    Ok(checkpoint::save(path, books, &anchor, mark)?)
}

/// What `verify` found about the books.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BooksReport {
    /// Events in the log.
    pub events: u64,
    /// Entries and postings the rebuild booked.
    pub entries: u64,
    /// Postings.
    pub postings: u64,
    /// Digest of every balance ([`Projection::digest`]).
    pub digest: String,
    /// Digest of the whole state ([`checkpoint::state_digest`]), hex.
    pub state_digest: String,
    /// The checkpoint's comparison, when there is one.
    pub checkpoint: Option<CheckpointCheck>,
}

/// A checkpoint compared with rebuilds from position 0.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointCheck {
    /// Its position.
    pub position: u64,
    /// Refused before any comparison (damaged, or not of this log): why.
    pub refused: Option<String>,
    /// The books rebuilt from 0 up to its position equal it.
    pub matches_rebuild: bool,
    /// The books resumed from it and caught up equal the books rebuilt from 0.
    pub resumed_matches_rebuild: bool,
}

impl BooksReport {
    /// Whether everything compared equal (or there was no checkpoint to compare).
    pub fn ok(&self) -> bool {
        self.checkpoint.as_ref().is_none_or(|c| c.refused.is_none() && c.matches_rebuild && c.resumed_matches_rebuild)
    }
}

/// Rebuilds the books from position 0 (checking every invariant) up to `until` (exclusive;
/// `u64::MAX`: the head) and compares them with the checkpoint at `checkpoint`, if there is
/// one: the checkpoint must equal a rebuild to its position, and the checkpoint caught up must
/// equal the rebuild. A checkpoint past `until` moves `until` to it. Fixing `until` lets the
/// log be appended to meanwhile: both sides stop at the same event. One set of books is held
/// at a time.
pub async fn verify_books<S: EventStore>(
    store: &S,
    checkpoint: Option<&Path>,
    until: u64,
) -> Result<BooksReport, ReplayError> {
    let mut until = until.min(store.head());
    let mut check = None;
    let mut resumed_digest = None;
    if let Some(path) = checkpoint.filter(|p| p.exists()) {
        match checkpoint::load(path) {
            Err(e) => {
                check = Some(CheckpointCheck {
                    position: 0,
                    refused: Some(e.to_string()),
                    matches_rebuild: false,
                    resumed_matches_rebuild: false,
                })
            }
            Ok(loaded) => {
                let position = loaded.books.position();
                until = until.max(position);
                let refused = mismatch(store, position, &loaded.anchor).await?;
                let mut c =
                    CheckpointCheck { position, refused, matches_rebuild: false, resumed_matches_rebuild: false };
                if c.refused.is_none() {
                    let saved = checkpoint::state_digest(&loaded.books);
                    let mut resumed = loaded.books;
                    catch_up(store, &mut resumed, until).await?;
                    resumed.check()?;
                    resumed_digest = Some(checkpoint::state_digest(&resumed));
                    drop(resumed);
                    let rebuilt = replay(store, position).await?;
                    c.matches_rebuild = checkpoint::state_digest(&rebuilt) == saved;
                }
                check = Some(c);
            }
        }
    }
    let full = replay(store, until).await?;
    let state = checkpoint::state_digest(&full);
    if let (Some(c), Some(resumed)) = (check.as_mut(), resumed_digest) {
        c.resumed_matches_rebuild = resumed == state;
    }
    Ok(BooksReport {
        events: full.position(),
        entries: full.entries(),
        postings: full.postings(),
        digest: full.digest(),
        state_digest: hex_of(&state),
        checkpoint: check,
    })
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

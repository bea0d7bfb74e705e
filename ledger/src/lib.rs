//! `ledger` owns the double-entry books: the projection of events into balanced journal
//! entries ([`projection::Projection`], [`entry::BalancedEntry`]), the fee arithmetic
//! ([`fees`]), and balances now and as of any position ([`projection::Balances`]). Later:
//! merchant settlement and the reconciliation engine.
//!
//! The projection is a deterministic state machine: it reads no clock and does no I/O; events
//! arrive through the store's read API ([`replay`]).

pub mod entry;
pub mod fees;
pub mod journal;
pub mod projection;

use ingest::event::Event;
use ingest::store::{EventStore, READ_EVENTS_MAX, ReadError};

pub use projection::{LedgerError, Projection};

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
}

/// Builds the books from the log: every event before position `until` (`u64::MAX`: all),
/// then checks that the trial balance is zero.
pub async fn replay<S: EventStore>(store: &S, until: u64) -> Result<Projection, ReplayError> {
    replay_filtered(store, until, |_| true).await
}

/// Builds the books from the events that happened at or before business time `time` (in log
/// order; later ones are passed over). Consistent because nothing that happened before `time`
/// depends on something after it: contracts precede sales, sales precede their adjustments.
pub async fn replay_until_time<S: EventStore>(
    store: &S,
    time: chrono::DateTime<chrono::FixedOffset>,
) -> Result<Projection, ReplayError> {
    replay_filtered(store, u64::MAX, |e| e.occurred_at() <= time).await
}

async fn replay_filtered<S: EventStore>(
    store: &S,
    until: u64,
    keep: impl Fn(&Event) -> bool,
) -> Result<Projection, ReplayError> {
    replay_with(store, until, keep, |_, _| Ok::<(), ReplayError>(())).await
}

/// The one replay loop: books every event before `until` that `keep` keeps, handing each
/// entry to `on_entry`, then checks the trial balance.
pub(crate) async fn replay_with<S: EventStore, E: From<ReplayError>>(
    store: &S,
    until: u64,
    keep: impl Fn(&Event) -> bool,
    mut on_entry: impl FnMut(&Event, &entry::BalancedEntry) -> Result<(), E>,
) -> Result<Projection, E> {
    let mut projection = Projection::default();
    let end = until.min(store.head());
    while projection.position() < end {
        let max = READ_EVENTS_MAX.min((end - projection.position()) as usize);
        let events = store.read_all(projection.position(), max).await.map_err(ReplayError::from)?;
        if events.is_empty() {
            break;
        }
        for e in events {
            let event = Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                .map_err(|source| ReplayError::Decode { position: e.position, source })?;
            if keep(&event) {
                if let Some(entry) = projection.apply(e.position, &event).map_err(ReplayError::from)? {
                    on_entry(&event, &entry)?;
                }
            } else {
                projection.skip(e.position).map_err(ReplayError::from)?;
            }
        }
    }
    projection.check_trial_balance().map_err(ReplayError::from)?;
    Ok(projection)
}

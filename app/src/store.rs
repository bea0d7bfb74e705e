//! The event store an [`crate::App`] runs on: the embedded log in the data directory (the
//! default), or a KurrentDB namespace (`posledger --store kurrentdb://…`, or
//! `POSLEDGER_STORE`), which keeps the data directory for everything else (keys,
//! checkpoints, exports).

use ingest::store::{
    AppendError, AppendRequest, Appended, BlockingReader, EmbeddedStore, EventStore, ReadError, RecordedEvent,
};
use kurrent::KurrentStore;
use kurrent::mapping::StoreUrl;
use kurrent::wire::AnyWire;
use uuid::Uuid;

use crate::{Class, Failure};

/// The environment variable that selects the store when `--store` is not given.
pub const STORE_ENV: &str = "POSLEDGER_STORE";

/// The connection to the KurrentDB store at `address`
/// (`kurrentdb://[user:password@]host:port[,…][?settings][&namespace=NS]`), when this build
/// has the client (cargo feature `kurrentdb`). The client connects at its first call.
pub fn connect_kurrent(address: &str) -> Result<(AnyWire, StoreUrl), Failure> {
    let url = StoreUrl::parse(address).map_err(|e| Failure::invalid("invalid_store", e).field("store"))?;
    #[cfg(feature = "kurrentdb")]
    {
        let wire = kurrent::client::KurrentWire::connect(&url)
            .map_err(|e| Failure::invalid("invalid_store", e).field("store"))?;
        Ok((AnyWire::Client(std::sync::Arc::new(wire)), url))
    }
    #[cfg(not(feature = "kurrentdb"))]
    {
        let _ = url;
        Err(Failure::new(
            Class::Unavailable,
            "kurrentdb_not_built",
            "this posledger was built without the KurrentDB client: build it with `--features kurrentdb`",
        ))
    }
}

/// What opening a KurrentDB store's failure is, for a caller.
pub fn open_failure(address: &str) -> impl Fn(kurrent::OpenError) -> Failure + '_ {
    move |e| match e {
        kurrent::OpenError::Server(w) => Failure::unavailable(format!("KurrentDB at {address}: {w}")),
        kurrent::OpenError::Damaged(d) => Failure::new(Class::Internal, "store_damaged", format!("{address}: {d}")),
    }
}

/// One of posledger's event store backends.
pub enum Store {
    /// The embedded log (`DATA_DIR/events`).
    Embedded(EmbeddedStore),
    /// A KurrentDB namespace.
    Kurrent(Box<KurrentStore<AnyWire>>),
}

impl Store {
    /// The embedded log, when that is the backend.
    pub fn embedded(&self) -> Option<&EmbeddedStore> {
        match self {
            Store::Embedded(s) => Some(s),
            Store::Kurrent(_) => None,
        }
    }
}

impl EventStore for Store {
    async fn append_many(&self, requests: Vec<AppendRequest>) -> Vec<Result<Appended, AppendError>> {
        match self {
            Store::Embedded(s) => s.append_many(requests).await,
            Store::Kurrent(s) => s.append_many(requests).await,
        }
    }

    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        match self {
            Store::Embedded(s) => s.read_stream(stream, from, max).await,
            Store::Kurrent(s) => s.read_stream(stream, from, max).await,
        }
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        match self {
            Store::Embedded(s) => s.read_all(from, max).await,
            Store::Kurrent(s) => s.read_all(from, max).await,
        }
    }

    async fn event_by_id(&self, id: Uuid) -> Result<Option<RecordedEvent>, ReadError> {
        match self {
            Store::Embedded(s) => s.event_by_id(id).await,
            Store::Kurrent(s) => s.event_by_id(id).await,
        }
    }

    async fn events_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Option<RecordedEvent>>, ReadError> {
        match self {
            Store::Embedded(s) => s.events_by_ids(ids).await,
            Store::Kurrent(s) => s.events_by_ids(ids).await,
        }
    }

    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, ReadError> {
        match self {
            Store::Embedded(s) => s.stream_revision(stream).await,
            Store::Kurrent(s) => s.stream_revision(stream).await,
        }
    }

    fn head(&self) -> u64 {
        match self {
            Store::Embedded(s) => s.head(),
            Store::Kurrent(s) => s.head(),
        }
    }

    fn position_since(&self, occurred_at_us: i64) -> u64 {
        match self {
            Store::Embedded(s) => s.position_since(occurred_at_us),
            Store::Kurrent(s) => s.position_since(occurred_at_us),
        }
    }

    async fn wait_for(&self, position: u64) {
        match self {
            Store::Embedded(s) => s.wait_for(position).await,
            Store::Kurrent(s) => s.wait_for(position).await,
        }
    }

    fn blocking_reader(&self) -> Option<BlockingReader> {
        match self {
            Store::Embedded(s) => s.blocking_reader(),
            Store::Kurrent(s) => s.blocking_reader(),
        }
    }
}

//! [`Wire`] on the official `kurrentdb` client (the `kurrentdb` cargo feature).
//!
//! Not run against a server where it was built: none could be installed there. What it
//! relies on of the client is small: append with an exact expected revision, read `$all`
//! forwards from a position with a stream-name prefix filter, and read a stream.

use bytes::Bytes;
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, Error, EventData, Position, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscriptionFilter,
};

use crate::mapping::{AllPosition, StoreUrl, WireEvent, WireExpected, WireRecorded};
use crate::wire::{Wire, WireError};

/// A connection to a KurrentDB server (or cluster).
pub struct KurrentWire {
    client: Client,
}

impl KurrentWire {
    /// A client for the address. Connects lazily: an unreachable server is found at the
    /// first call, which the store bounds by its call timeout.
    pub fn connect(url: &StoreUrl) -> Result<KurrentWire, String> {
        let settings: ClientSettings = url
            .connection
            .parse()
            .map_err(|e| format!("{}: not a KurrentDB connection string: {e}", url.redacted()))?;
        let client = Client::new(settings).map_err(|e| format!("{}: {e}", url.redacted()))?;
        Ok(KurrentWire { client })
    }
}

/// Only the answers that say nothing was written are refusals; every other error (a
/// timeout, a transport failure, a server's "operation timed out", an unmapped status) leaves
/// an append's outcome unknown, which the store resolves by looking in `$all`.
fn wire_error(e: Error) -> WireError {
    match e {
        Error::WrongExpectedVersion { current, .. } => WireError::WrongExpectedVersion {
            actual: match current {
                CurrentRevision::Current(r) => Some(r),
                CurrentRevision::NoStream => None,
            },
        },
        e @ (Error::AccessDenied | Error::ResourceDeleted | Error::ResourceNotFound | Error::UnsupportedFeature) => {
            WireError::Refused(e.to_string())
        }
        // The server refuses an append over its size limit as an invalid argument (the status
        // code's type is the client's tonic, named here by its name).
        Error::Grpc { code, message } if format!("{code:?}") == "InvalidArgument" => {
            WireError::Refused(format!("invalid argument: {message}"))
        }
        e => WireError::Unreachable(e.to_string()),
    }
}

fn recorded(e: &kurrentdb::RecordedEvent) -> WireRecorded {
    WireRecorded {
        stream: e.stream_id().to_owned(),
        revision: e.revision,
        all: AllPosition { commit: e.position.commit, prepare: e.position.prepare },
        id: e.id,
        event_type: e.event_type.clone(),
        data: e.data.to_vec(),
        metadata: e.custom_metadata.to_vec(),
    }
}

impl Wire for KurrentWire {
    async fn append(&self, stream: &str, expected: WireExpected, events: Vec<WireEvent>) -> Result<(), WireError> {
        let state = match expected {
            WireExpected::NoStream => StreamState::NoStream,
            WireExpected::Exact(r) => StreamState::StreamRevision(r),
        };
        let options = AppendToStreamOptions::default().stream_state(state);
        let events: Vec<EventData> = events
            .into_iter()
            .map(|e| EventData::binary(&e.event_type, Bytes::from(e.data)).id(e.id).metadata(Bytes::from(e.metadata)))
            .collect();
        self.client.append_to_stream(stream, &options, events).await.map(|_| ()).map_err(wire_error)
    }

    async fn read_all(&self, from: AllPosition, prefix: &str, max: usize) -> Result<Vec<WireRecorded>, WireError> {
        // From the leader: a follower may not have the append this store just made.
        let options = ReadAllOptions::default()
            .requires_leader(true)
            .forwards()
            .position(StreamPosition::Position(Position { commit: from.commit, prepare: from.prepare }))
            .filter(SubscriptionFilter::on_stream_name().add_prefix(prefix))
            .max_count(max);
        let mut stream = self.client.read_all(&options).await.map_err(wire_error)?;
        let mut out = Vec::new();
        while let Some(e) = stream.next().await.map_err(wire_error)? {
            let e = e.get_original_event();
            if e.stream_id().starts_with(prefix) {
                out.push(recorded(e));
            }
        }
        Ok(out)
    }

    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<WireRecorded>, WireError> {
        let options = ReadStreamOptions::default()
            .requires_leader(true)
            .forwards()
            .position(StreamPosition::Position(from))
            .max_count(max);
        let mut read = match self.client.read_stream(stream, &options).await {
            Ok(read) => read,
            Err(Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(wire_error(e)),
        };
        let mut out = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(e)) => out.push(recorded(e.get_original_event())),
                Ok(None) | Err(Error::ResourceNotFound) => return Ok(out),
                Err(e) => return Err(wire_error(e)),
            }
        }
    }

    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, WireError> {
        let options =
            ReadStreamOptions::default().requires_leader(true).backwards().position(StreamPosition::End).max_count(1);
        let mut read = match self.client.read_stream(stream, &options).await {
            Ok(read) => read,
            Err(Error::ResourceNotFound) => return Ok(None),
            Err(e) => return Err(wire_error(e)),
        };
        match read.next().await {
            Ok(Some(e)) => Ok(Some(e.get_original_event().revision)),
            Ok(None) | Err(Error::ResourceNotFound) => Ok(None),
            Err(e) => Err(wire_error(e)),
        }
    }
}

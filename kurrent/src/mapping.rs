//! How posledger's events are laid out in KurrentDB, with no server needed.
//!
//! - **Streams** map one to one: posledger's stream `S` is KurrentDB's stream `NS:S`, where
//!   `NS` is the store's namespace (so one server can hold several posledger stores, and a
//!   test a fresh one each time).
//! - **Events** keep their id, their type, and their payload byte for byte (a binary event).
//! - **Metadata** (the event's custom metadata, JSON) carries what KurrentDB does not keep
//!   in posledger's terms: the dense global position, the stream revision, the schema
//!   version, both times, and the hash-chain link. See [`Metadata`].
//! - **Global positions.** KurrentDB's `$all` positions are byte offsets in its log: ordered
//!   but sparse. posledger's positions are gap-free from 0, so the writer assigns them (it is
//!   the namespace's one writer) and keeps every [`CHECKPOINT_EVERY`]th event's `$all`
//!   position to start a read near any position ([`Checkpoints`]).
//! - **The hash chain** is the embedded store's, one event per frame:
//!   `link = BLAKE3(previous link ‖ frame header fields ‖ record)` with the embedded record
//!   encoding (`ingest::store::format`), whose location field is "none" here. So `verify`
//!   recomputes it from what the server returns, and an altered, dropped or reordered event
//!   breaks it. The head hash differs from the embedded store's for the same history (the
//!   embedded store chains whole group commits), which is why `migrate` compares events,
//!   not head hashes.

use std::fmt;

use ingest::store::format::{self, NO_LOCATION, RecordMeta};
use ingest::store::{EventData, ExpectedRevision, RecordedEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every this many events, the `$all` position is kept in memory to start reads from.
pub const CHECKPOINT_EVERY: u64 = 256;
/// Longest namespace, in bytes.
pub const NAMESPACE_BYTES_MAX: usize = 64;
/// The version of the metadata layout, written as `"v"`.
pub const METADATA_VERSION: u32 = 1;
/// Largest metadata accepted when reading, in bytes (ours is about 250).
pub const METADATA_BYTES_MAX: usize = 4096;

/// A place in KurrentDB's `$all`: ordered by commit, then prepare position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllPosition {
    /// Commit position.
    pub commit: u64,
    /// Prepare position.
    pub prepare: u64,
}

impl AllPosition {
    /// The start of `$all`.
    pub const START: AllPosition = AllPosition { commit: 0, prepare: 0 };
}

impl fmt::Display for AllPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "C:{}/P:{}", self.commit, self.prepare)
    }
}

/// What posledger keeps in each event's custom metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Layout version ([`METADATA_VERSION`]).
    pub v: u32,
    /// Dense global position, gap-free from 0 within the namespace.
    pub position: u64,
    /// Revision within the stream; equals KurrentDB's own stream revision.
    pub revision: u64,
    /// Schema version of the payload.
    pub schema_version: u16,
    /// When it happened at the source, µs since the epoch.
    pub occurred_at_us: i64,
    /// When posledger's writer committed it, µs since the epoch.
    pub recorded_at_us: i64,
    /// Hash-chain link after this event, hex.
    pub link: String,
}

/// An event as it is sent to KurrentDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEvent {
    /// Event id, posledger's.
    pub id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Payload, as posledger stored it.
    pub data: Vec<u8>,
    /// [`Metadata`], JSON.
    pub metadata: Vec<u8>,
}

/// An event as KurrentDB returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecorded {
    /// KurrentDB's stream name (with the namespace).
    pub stream: String,
    /// KurrentDB's stream revision.
    pub revision: u64,
    /// Its place in `$all`.
    pub all: AllPosition,
    /// Event id.
    pub id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Payload.
    pub data: Vec<u8>,
    /// Custom metadata.
    pub metadata: Vec<u8>,
}

/// Why a stored event cannot be read back as posledger's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {id} in stream {stream:?} at $all {all}: {reason}")]
pub struct MappingError {
    /// KurrentDB's stream name.
    pub stream: String,
    /// Its `$all` position.
    pub all: AllPosition,
    /// Its id.
    pub id: Uuid,
    /// What is wrong.
    pub reason: String,
}

/// A namespace: 1 to [`NAMESPACE_BYTES_MAX`] bytes of ASCII letters, digits, `_` and `-`,
/// starting with a letter or digit (so never a KurrentDB system stream, which starts `$`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// Checks and wraps a namespace.
    pub fn new(ns: &str) -> Result<Namespace, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if ns.is_empty() || ns.len() > NAMESPACE_BYTES_MAX {
            return Err(format!("a namespace is 1 to {NAMESPACE_BYTES_MAX} bytes, not {}", ns.len()));
        }
        if !ns.starts_with(|c: char| c.is_ascii_alphanumeric()) || !ns.chars().all(ok_char) {
            return Err(format!(
                "namespace {ns:?}: only ASCII letters, digits, '_' and '-', starting with a letter or digit"
            ));
        }
        Ok(Namespace(ns.to_owned()))
    }

    /// The prefix of every KurrentDB stream in this namespace.
    pub fn prefix(&self) -> String {
        format!("{}:", self.0)
    }

    /// KurrentDB's name for posledger's stream.
    pub fn stream(&self, stream: &str) -> String {
        format!("{}:{stream}", self.0)
    }

    /// posledger's name for KurrentDB's stream, if it is in this namespace.
    pub fn local<'a>(&self, wire_stream: &'a str) -> Option<&'a str> {
        wire_stream.strip_prefix(self.0.as_str())?.strip_prefix(':')
    }

    /// The namespace itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The chain link after one event: the embedded store's frame link over a frame of that one
/// record.
pub fn link_after(prev: &[u8; 32], stream: &str, meta: RecordMeta, data: &EventData) -> [u8; 32] {
    let mut body = Vec::with_capacity(format::record_len(stream, data));
    format::encode_record(&mut body, RecordMeta { prev_loc: NO_LOCATION, ..meta }, stream, data);
    let header = format::encode_frame_header(prev, 1, meta.position, &body);
    let mut link = [0u8; 32];
    link.copy_from_slice(&header[32..64]);
    link
}

/// The event to send for posledger's `data` at `position`/`revision`, and the link after it.
pub fn to_wire(
    stream: &str,
    data: &EventData,
    position: u64,
    revision: u64,
    recorded_at_us: i64,
    prev: &[u8; 32],
) -> (WireEvent, [u8; 32]) {
    let meta = RecordMeta { position, revision, prev_loc: NO_LOCATION, recorded_at_us };
    let link = link_after(prev, stream, meta, data);
    let metadata = Metadata {
        v: METADATA_VERSION,
        position,
        revision,
        schema_version: data.schema_version,
        occurred_at_us: data.occurred_at_us,
        recorded_at_us,
        link: hex::encode(link),
    };
    let metadata = serde_json::to_vec(&metadata).unwrap_or_default();
    let event =
        WireEvent { id: data.event_id, event_type: data.event_type.to_string(), data: data.payload.clone(), metadata };
    (event, link)
}

/// posledger's event from KurrentDB's, with its stored link (not checked here: see
/// [`check_link`]).
pub fn from_wire(ns: &Namespace, w: &WireRecorded) -> Result<(RecordedEvent, [u8; 32]), MappingError> {
    let fail = |reason: String| MappingError { stream: w.stream.clone(), all: w.all, id: w.id, reason };
    let Some(stream) = ns.local(&w.stream) else {
        return Err(fail(format!("the stream is not in namespace {ns}")));
    };
    if w.metadata.len() > METADATA_BYTES_MAX {
        return Err(fail(format!("metadata of {} bytes exceeds {METADATA_BYTES_MAX}", w.metadata.len())));
    }
    let meta: Metadata =
        serde_json::from_slice(&w.metadata).map_err(|e| fail(format!("metadata is not posledger's: {e}")))?;
    if meta.v != METADATA_VERSION {
        return Err(fail(format!("metadata version {} is not {METADATA_VERSION}", meta.v)));
    }
    if meta.revision != w.revision {
        return Err(fail(format!("metadata says revision {} but the stream has it at {}", meta.revision, w.revision)));
    }
    let mut link = [0u8; 32];
    hex::decode_to_slice(&meta.link, &mut link).map_err(|e| fail(format!("metadata link: {e}")))?;
    if w.event_type.is_empty() || w.event_type.len() > ingest::store::EVENT_TYPE_BYTES_MAX {
        return Err(fail(format!("event type of {} bytes", w.event_type.len())));
    }
    let event = RecordedEvent {
        position: meta.position,
        stream: stream.to_owned(),
        revision: meta.revision,
        recorded_at_us: meta.recorded_at_us,
        data: EventData {
            event_id: w.id,
            event_type: w.event_type.as_str().into(),
            schema_version: meta.schema_version,
            occurred_at_us: meta.occurred_at_us,
            payload: w.data.clone(),
        },
    };
    Ok((event, link))
}

/// Whether `stored` is the link after `e`, coming after `prev`.
pub fn check_link(prev: &[u8; 32], e: &RecordedEvent, stored: &[u8; 32]) -> bool {
    let meta = RecordMeta {
        position: e.position,
        revision: e.revision,
        prev_loc: NO_LOCATION,
        recorded_at_us: e.recorded_at_us,
    };
    link_after(prev, &e.stream, meta, &e.data) == *stored
}

/// The expected revision of an append as KurrentDB takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireExpected {
    /// The stream must not exist.
    NoStream,
    /// The stream's last event has this revision.
    Exact(u64),
}

/// The expectation to send for a request, given the stream's revision now (`current`).
/// posledger always sends an exact one, even for `Any`, because the revisions are in the
/// metadata and the chain: an `Any` append that raced another writer must fail, not land at
/// a revision its metadata does not say. `Err` when the request's own expectation fails.
pub fn expectation(expected: ExpectedRevision, current: Option<u64>) -> Result<WireExpected, Option<u64>> {
    match (expected, current) {
        (ExpectedRevision::Any, None) | (ExpectedRevision::NoStream, None) => Ok(WireExpected::NoStream),
        (ExpectedRevision::Any, Some(r)) => Ok(WireExpected::Exact(r)),
        (ExpectedRevision::Exact(n), Some(r)) if n == r => Ok(WireExpected::Exact(r)),
        (_, current) => Err(current),
    }
}

/// Every [`CHECKPOINT_EVERY`]th event's `$all` position, so that a read from any dense
/// position starts at most that many events before it. 16 bytes per 256 events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoints {
    at: Vec<AllPosition>,
}

impl Checkpoints {
    /// Records that the event at dense `position` is at `all` (kept if it is a checkpoint).
    pub fn note(&mut self, position: u64, all: AllPosition) {
        if position.is_multiple_of(CHECKPOINT_EVERY) && position / CHECKPOINT_EVERY == self.at.len() as u64 {
            self.at.push(all);
        }
    }

    /// Where to start reading `$all` to find dense `position`, and the dense position of the
    /// first event read from there. `None` when no event at or before `position` is known.
    pub fn start_for(&self, position: u64) -> Option<(AllPosition, u64)> {
        let k = usize::try_from(position / CHECKPOINT_EVERY).ok()?;
        let at = *self.at.get(k).or_else(|| self.at.last())?;
        let k = if k < self.at.len() { k } else { self.at.len() - 1 };
        Some((at, k as u64 * CHECKPOINT_EVERY))
    }
}

/// A KurrentDB store address as posledger takes it: the client's own connection string
/// (`kurrentdb://` or `kurrentdb+discover://`, with its settings) plus posledger's
/// `namespace=` setting, which is taken out before the rest goes to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The connection string for the client, without `namespace=`.
    pub connection: String,
    /// The namespace (`posledger` when not given).
    pub namespace: Namespace,
}

/// Longest store address accepted, in bytes.
pub const STORE_URL_BYTES_MAX: usize = 2048;
/// The namespace when the address names none.
pub const NAMESPACE_DEFAULT: &str = "posledger";

impl StoreUrl {
    /// Parses `kurrentdb://[user:pass@]host:port[,host:port...][?settings]`, taking out
    /// `namespace=NS`. The rest is checked by the client when it is used.
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        if url.len() > STORE_URL_BYTES_MAX {
            return Err(format!("a store address is at most {STORE_URL_BYTES_MAX} bytes"));
        }
        let rest = url
            .strip_prefix("kurrentdb://")
            .or_else(|| url.strip_prefix("kurrentdb+discover://"))
            .or_else(|| url.strip_prefix("esdb://"))
            .or_else(|| url.strip_prefix("esdb+discover://"))
            .ok_or_else(|| "a KurrentDB store address starts with kurrentdb:// or kurrentdb+discover://".to_owned())?;
        let scheme = &url[..url.len() - rest.len()];
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        let authority = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
        if authority.is_empty() || authority.contains('/') || authority.chars().any(char::is_whitespace) {
            return Err(format!("{url:?}: the address needs host:port (several, comma-separated, for a cluster)"));
        }
        let mut namespace = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("namespace") => {
                    if namespace.replace(Namespace::new(v)?).is_some() {
                        return Err("namespace= is given twice".into());
                    }
                }
                _ => kept.push(pair),
            }
        }
        let namespace = match namespace {
            Some(ns) => ns,
            None => Namespace::new(NAMESPACE_DEFAULT)?,
        };
        let mut connection = format!("{scheme}{hosts}");
        if !kept.is_empty() {
            connection.push('?');
            connection.push_str(&kept.join("&"));
        }
        Ok(StoreUrl { connection, namespace })
    }

    /// The address with any password replaced, for messages.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.connection.split_once("://") else { return self.connection.clone() };
        let (authority, query) = rest.split_once('?').map_or((rest, None), |(a, q)| (a, Some(q)));
        // The hosts follow the last '@': a password may hold '@' itself.
        let authority = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => {
                let user = credentials.split_once(':').map_or(credentials, |(u, _)| u);
                format!("{user}:***@{hosts}")
            }
            None => authority.to_owned(),
        };
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{scheme}://{authority}{query} (namespace {})", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::store::conformance::event;

    fn ns() -> Namespace {
        Namespace::new("books-1").expect("namespace")
    }

    #[test]
    fn an_event_round_trips_through_its_wire_form() {
        let data = event("k", 7);
        let (wire, link) = to_wire("payments-9", &data, 41, 3, 1_700_000_000_123_456, &[0; 32]);
        assert_eq!(wire.id, data.event_id);
        assert_eq!(wire.data, data.payload, "the payload is kept byte for byte");
        let recorded = WireRecorded {
            stream: ns().stream("payments-9"),
            revision: 3,
            all: AllPosition { commit: 9000, prepare: 8800 },
            id: wire.id,
            event_type: wire.event_type.clone(),
            data: wire.data.clone(),
            metadata: wire.metadata.clone(),
        };
        let (back, stored) = from_wire(&ns(), &recorded).expect("maps back");
        assert_eq!(stored, link);
        assert_eq!(back.position, 41);
        assert_eq!(back.revision, 3);
        assert_eq!(back.stream, "payments-9");
        assert_eq!(back.recorded_at_us, 1_700_000_000_123_456);
        assert_eq!(back.data, data);
        assert!(check_link(&[0; 32], &back, &link));
    }

    #[test]
    fn the_chain_breaks_on_any_change() {
        let data = event("k", 1);
        let (wire, link) = to_wire("s", &data, 0, 0, 5, &[0; 32]);
        let recorded = WireRecorded {
            stream: ns().stream("s"),
            revision: 0,
            all: AllPosition::START,
            id: wire.id,
            event_type: wire.event_type,
            data: wire.data,
            metadata: wire.metadata,
        };
        let (e, stored) = from_wire(&ns(), &recorded).expect("maps");
        assert!(check_link(&[0; 32], &e, &stored));
        assert!(!check_link(&[1; 32], &e, &stored), "another previous link");
        let mut altered = e.clone();
        altered.data.payload.push(b' ');
        assert!(!check_link(&[0; 32], &altered, &stored), "a payload byte");
        let mut moved = e.clone();
        moved.position = 1;
        assert!(!check_link(&[0; 32], &moved, &stored), "the position");
        let mut renamed = e;
        renamed.stream = "t".into();
        assert!(!check_link(&[0; 32], &renamed, &stored), "the stream");
        // The link is the embedded store's frame link over one record.
        let mut body = Vec::new();
        let meta = RecordMeta { position: 0, revision: 0, prev_loc: NO_LOCATION, recorded_at_us: 5 };
        format::encode_record(&mut body, meta, "s", &data);
        let header = format::encode_frame_header(&[0; 32], 1, 0, &body);
        assert_eq!(&header[32..64], &link[..]);
    }

    #[test]
    fn foreign_or_damaged_events_are_named() {
        let (wire, _) = to_wire("s", &event("k", 1), 0, 0, 5, &[0; 32]);
        let base = WireRecorded {
            stream: ns().stream("s"),
            revision: 0,
            all: AllPosition { commit: 77, prepare: 70 },
            id: wire.id,
            event_type: wire.event_type,
            data: wire.data,
            metadata: wire.metadata,
        };
        let err = |w: &WireRecorded| from_wire(&ns(), w).expect_err("refused").to_string();
        let mut other_ns = base.clone();
        other_ns.stream = "books-10:s".into();
        assert!(err(&other_ns).contains("not in namespace books-1"), "{}", err(&other_ns));
        let mut no_meta = base.clone();
        no_meta.metadata = b"{}".to_vec();
        assert!(err(&no_meta).contains("metadata is not posledger's"));
        assert!(err(&no_meta).contains("C:77/P:70"), "the place is named: {}", err(&no_meta));
        let mut moved = base.clone();
        moved.revision = 4;
        assert!(err(&moved).contains("revision 0 but the stream has it at 4"));
        let mut huge = base;
        huge.metadata = vec![b' '; METADATA_BYTES_MAX + 1];
        assert!(err(&huge).contains("exceeds"));
    }

    #[test]
    fn namespaces_and_stream_names() {
        let ns = ns();
        assert_eq!(ns.stream("a-1"), "books-1:a-1");
        assert_eq!(ns.local("books-1:a-1"), Some("a-1"));
        assert_eq!(ns.local("books-10:a-1"), None);
        assert_eq!(ns.local("books-1"), None);
        for bad in ["", "$all", "-x", "a:b", "a b", "名", &"n".repeat(NAMESPACE_BYTES_MAX + 1)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} refused");
        }
        assert!(Namespace::new(&"n".repeat(NAMESPACE_BYTES_MAX)).is_ok());
    }

    #[test]
    fn an_append_always_sends_an_exact_expectation() {
        use ExpectedRevision::*;
        assert_eq!(expectation(Any, None), Ok(WireExpected::NoStream));
        assert_eq!(expectation(Any, Some(4)), Ok(WireExpected::Exact(4)));
        assert_eq!(expectation(NoStream, None), Ok(WireExpected::NoStream));
        assert_eq!(expectation(NoStream, Some(0)), Err(Some(0)));
        assert_eq!(expectation(Exact(2), Some(2)), Ok(WireExpected::Exact(2)));
        assert_eq!(expectation(Exact(2), Some(3)), Err(Some(3)));
        assert_eq!(expectation(Exact(0), None), Err(None));
    }

    #[test]
    fn checkpoints_start_reads_at_most_one_interval_early() {
        let mut c = Checkpoints::default();
        assert_eq!(c.start_for(0), None);
        let all = |p: u64| AllPosition { commit: 1000 + p * 90, prepare: 1000 + p * 90 };
        for p in 0..(3 * CHECKPOINT_EVERY + 5) {
            c.note(p, all(p));
            c.note(p, all(p)); // seen twice (the writer and a refresh): kept once
        }
        assert_eq!(c.at.len(), 4);
        assert_eq!(c.start_for(0), Some((all(0), 0)));
        assert_eq!(c.start_for(CHECKPOINT_EVERY - 1), Some((all(0), 0)));
        assert_eq!(c.start_for(CHECKPOINT_EVERY), Some((all(CHECKPOINT_EVERY), CHECKPOINT_EVERY)));
        let last = 3 * CHECKPOINT_EVERY;
        assert_eq!(c.start_for(last + 4), Some((all(last), last)));
        assert_eq!(c.start_for(u64::MAX), Some((all(last), last)), "past the head: from the last one");
    }

    #[test]
    fn store_addresses() {
        let u = StoreUrl::parse("kurrentdb://admin:changeit@localhost:2113?tls=false&namespace=shop-2").expect("ok");
        assert_eq!(u.connection, "kurrentdb://admin:changeit@localhost:2113?tls=false");
        assert_eq!(u.namespace.as_str(), "shop-2");
        assert_eq!(u.redacted(), "kurrentdb://admin:***@localhost:2113?tls=false (namespace shop-2)");
        let at = StoreUrl::parse("kurrentdb://ops:p@ss@w0rd@db1:2113,db2:2113?tls=true").expect("ok");
        assert_eq!(at.redacted(), "kurrentdb://ops:***@db1:2113,db2:2113?tls=true (namespace posledger)");
        let d = StoreUrl::parse("kurrentdb+discover://a:2113,b:2113").expect("ok");
        assert_eq!(d.connection, "kurrentdb+discover://a:2113,b:2113");
        assert_eq!(d.namespace.as_str(), NAMESPACE_DEFAULT);
        for bad in [
            "http://localhost:2113",
            "kurrentdb://",
            "kurrentdb://?tls=false",
            "kurrentdb://h:1/path",
            "kurrentdb://h:1?namespace=$all",
            "kurrentdb://h:1?namespace=a&namespace=b",
            "kurrentdb://h 1:2",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad:?} refused");
        }
        assert!(StoreUrl::parse(&format!("kurrentdb://h:1?x={}", "a".repeat(STORE_URL_BYTES_MAX))).is_err());
    }
}

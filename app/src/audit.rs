//! The auditor's trail: the log as it was committed, for a program that does not trust
//! posledger to recompute the hash chain up to the head hash (ARCHITECTURE.md, "Checking the
//! chain without posledger", says how).
//!
//! The listing is NDJSON: for each commit a `frame` line, then one line per event with its
//! fields and its `stored` bytes (hex), then one `end` line. Only whole commits are listed: a
//! range that starts or stops inside one widens to hold all of it.

use std::io::Write;
use std::ops::ControlFlow;

use ingest::store::frames::{self, Frame};
use serde::{Deserialize, Serialize};

use crate::backup::{Limit, time_text};
use crate::failure::OutputFailure;
use crate::{App, AsOf, Failure};

/// Most events one page of the listing over HTTP holds ([`App::events`]'s `max_events`).
pub const EVENTS_PAGE_MAX: u64 = 10_000;
/// Event listings that may run at once in a process, over HTTP and the socket alike: each
/// walks the log from its first commit, so more are refused as busy.
pub const LISTINGS_RUNNING_MAX: usize = 2;
/// Bytes of listing handed from the walk to the writer at a time.
const OUTPUT_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks the walk may be ahead of the writer (bounds the memory of a slow reader).
const OUTPUT_CHUNKS_AHEAD: usize = 4;

/// A commit of the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameLine {
    /// Its segment.
    pub segment: u32,
    /// The offset of its header in the segment.
    pub offset: u64,
    /// The position of its first event.
    pub first_position: u64,
    /// Its events.
    pub records: u32,
    /// The link of the commit before it, hex (64 zeros before the first).
    pub prev_link: String,
    /// Its link, hex.
    pub link: String,
}

/// The end of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsEnd {
    /// The position after the last event listed: where the next page starts.
    pub events: u64,
    /// The link of the last commit listed, hex (none when none was).
    pub link: Option<String>,
    /// Whether the listing stopped before the head or the limit asked for (a page was full).
    pub more: bool,
    /// The log's head as of the listing.
    pub head: u64,
    /// Its hash.
    pub head_hash: String,
}

fn frame_line(f: &Frame<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    #[derive(Serialize)]
    struct Line {
        frame: FrameLine,
    }
    let frame = FrameLine {
        segment: f.segment,
        offset: f.offset,
        first_position: f.first_position,
        records: f.record_count,
        prev_link: hex::encode(f.prev_link),
        link: hex::encode(f.link),
    };
    serde_json::to_writer(&mut *out, &Line { frame })?;
    out.push(b'\n');
    Ok(())
}

fn event_lines(f: &Frame<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        position: u64,
        stream: &'a str,
        revision: u64,
        #[serde(rename = "type")]
        event_type: &'a str,
        event_id: String,
        schema_version: u16,
        occurred_at: String,
        recorded_at: String,
        payload: serde_json::Value,
        stored: String,
    }
    for (view, bytes) in f.records() {
        let payload = serde_json::from_slice(view.payload)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(view.payload).into_owned()));
        let line = Line {
            position: view.meta.position,
            stream: view.stream,
            revision: view.meta.revision,
            event_type: view.event_type,
            event_id: view.event_id.to_string(),
            schema_version: view.schema_version,
            occurred_at: time_text(view.occurred_at_us),
            recorded_at: time_text(view.meta.recorded_at_us),
            payload,
            stored: hex::encode(bytes),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.push(b'\n');
    }
    Ok(())
}

/// What the walk behind a listing ends with: the position and link after the last commit
/// listed, and whether a page was full.
type WalkResult = Result<(Option<(u64, [u8; 32])>, bool), Failure>;

/// A listing being produced: its text, a chunk at a time, the end line last.
pub struct EventsListing {
    chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    walk: Option<tokio::task::JoinHandle<WalkResult>>,
    from: u64,
    head: u64,
    head_hash: String,
    end: Option<EventsEnd>,
}

impl EventsListing {
    /// The next piece of the listing's text; after the end line, `None`. Dropping the listing
    /// stops the walk.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, Failure>> {
        if let Some(chunk) = self.chunks.recv().await {
            return Some(Ok(chunk));
        }
        let walk = self.walk.take()?;
        let walked = match walk.await {
            Ok(w) => w,
            Err(e) => Err(Failure::internal(format!("the listing stopped: {e}"))),
        };
        let (last, more) = match walked {
            Ok(w) => w,
            Err(f) => return Some(Err(f)),
        };
        let (events, link) = last.map_or((self.from.min(self.head), None), |(e, l)| (e, Some(l)));
        let end =
            EventsEnd { events, link: link.map(hex::encode), more, head: self.head, head_hash: self.head_hash.clone() };
        #[derive(Serialize)]
        struct Line<'a> {
            end: &'a EventsEnd,
        }
        let line = serde_json::to_vec(&Line { end: &end }).map(|mut l| {
            l.push(b'\n');
            l
        });
        self.end = Some(end);
        Some(line.map_err(|e| Failure::internal(e.to_string())))
    }
}

impl App {
    /// Lists the commits holding events from position `from` up to `until` (the events before a
    /// position, or up to the first that happened after a business time; `Now`: the head as of
    /// the call), at most about `max_events` events (whole commits; at least one), checking
    /// each commit's link as it goes. Writes NDJSON to `out` and returns the end line.
    pub async fn events(
        &self,
        from: u64,
        until: AsOf,
        max_events: Option<u64>,
        out: &mut impl Write,
    ) -> Result<EventsEnd, OutputFailure> {
        let mut listing = self.events_listing(from, until, max_events).map_err(OutputFailure::Failed)?;
        while let Some(chunk) = listing.next().await {
            out.write_all(&chunk.map_err(OutputFailure::Failed)?).map_err(OutputFailure::Output)?;
        }
        out.flush().map_err(OutputFailure::Output)?;
        listing.end.take().ok_or_else(|| OutputFailure::Failed(Failure::internal("the listing has no end")))
    }

    /// [`App::events`] as chunks of text, for a caller that sends them on as they come. At most
    /// [`LISTINGS_RUNNING_MAX`] at once; another meanwhile is refused as busy.
    pub fn events_listing(&self, from: u64, until: AsOf, max_events: Option<u64>) -> Result<EventsListing, Failure> {
        let place = self.listings.try_enter().ok_or_else(|| {
            Failure::new(
                crate::Class::Busy,
                "too_many_requests",
                format!("{LISTINGS_RUNNING_MAX} event listings are running already; retry when one has finished"),
            )
        })?;
        let extent = self.embedded_log("the event listing")?.extent();
        let paths = frames::segment_paths(&self.dir.events(), extent.segment_lens.len());
        let limit = Limit::of(until);
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(OUTPUT_CHUNKS_AHEAD);
        let head = extent.events;
        let head_hash = hex::encode(extent.link);
        let walk = tokio::task::spawn_blocking(move || {
            // The place is held until the walk has stopped.
            let _place = place;
            let mut chunk = Vec::with_capacity(OUTPUT_CHUNK_BYTES);
            let mut listed = 0u64;
            let mut last: Option<(u64, [u8; 32])> = None;
            let mut more = false;
            let mut failed: Option<Failure> = None;
            let walked = frames::walk_frames(&paths, &extent.segment_lens, &mut |f| {
                if f.end_position() <= from {
                    return ControlFlow::Continue(());
                }
                if limit.is_some_and(|l| l.first_left_out(f).is_some()) {
                    return ControlFlow::Break(());
                }
                if max_events.is_some_and(|m| listed > 0 && listed + u64::from(f.record_count) > m) {
                    more = true;
                    return ControlFlow::Break(());
                }
                if let Err(e) = frame_line(f, &mut chunk).and_then(|()| event_lines(f, &mut chunk)) {
                    failed = Some(Failure::internal(format!("writing the listing: {e}")));
                    return ControlFlow::Break(());
                }
                listed += u64::from(f.record_count);
                last = Some((f.end_position(), f.link));
                if chunk.len() >= OUTPUT_CHUNK_BYTES {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(OUTPUT_CHUNK_BYTES));
                    // The reader went away: nothing more to list.
                    if tx.blocking_send(full).is_err() {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            if !chunk.is_empty() {
                let _ = tx.blocking_send(chunk);
            }
            let walked = walked.map_err(|fault| {
                Failure::new(
                    crate::Class::Internal,
                    "log_damaged",
                    format!("the event log is damaged: {fault}; run posledger verify"),
                )
            });
            match (walked, failed) {
                (Err(f), _) | (Ok(_), Some(f)) => Err(f),
                (Ok(_), None) => Ok((last, more)),
            }
        });
        Ok(EventsListing { chunks: rx, walk: Some(walk), from, head, head_hash, end: None })
    }
}

/// A head of the log, as an anchor names it: `HASH@POSITION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Events before it.
    pub head: u64,
    /// The link of the commit ending there, hex.
    pub head_hash: String,
}

impl Anchor {
    /// `HASH@POSITION`; `field` names the parameter in errors.
    pub fn parse(text: &str, field: &str) -> Result<Anchor, Failure> {
        let invalid = || {
            Failure::invalid(
                "invalid_anchor",
                format!("{field} {text:?} is not HASH@POSITION (64 hex digits @ a number)"),
            )
            .field(field)
        };
        let (hash, head) = text.split_once('@').ok_or_else(invalid)?;
        let head = head.parse().map_err(|_| invalid())?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        Ok(Anchor { head, head_hash: hash.to_ascii_lowercase() })
    }
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.head_hash, self.head)
    }
}

/// What `anchor` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchored {
    /// The head anchored.
    pub anchor: Anchor,
    /// The position of the `LogAnchored` event that records it.
    pub recorded_at: u64,
}

/// Whether the log still extends an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorCheck {
    /// The anchor checked.
    pub anchor: Anchor,
    /// Whether a commit of the log ends at its position with its hash, every commit up to it
    /// checked.
    pub holds: bool,
    /// What the log has there instead, when it does not hold.
    pub found: Option<String>,
}

impl App {
    /// Records the log's head as of now in a `LogAnchored` event and returns it, to be
    /// published outside posledger.
    pub async fn anchor(&self) -> Result<Anchored, Failure> {
        use ingest::event::{Event, LogAnchored};
        use ingest::store::{EventStore, ExpectedRevision};
        let _writes = self.writes.lock().await;
        let extent = self.embedded_log("an anchor")?.extent();
        let anchor = Anchor { head: extent.events, head_hash: hex::encode(extent.link) };
        let zone = chrono::FixedOffset::east_opt(crate::dates::BUSINESS_UTC_OFFSET_SECONDS)
            .ok_or_else(|| Failure::internal("the business time zone"))?;
        let event = Event::LogAnchored(LogAnchored {
            head: anchor.head,
            head_hash: anchor.head_hash.clone(),
            at: chrono::Utc::now().with_timezone(&zone),
        });
        let appended = self.store.append(&event.stream(), ExpectedRevision::Any, vec![event.to_event_data()]).await?;
        Ok(Anchored { anchor, recorded_at: appended.first_position })
    }

    /// Checks that the log extends `anchor`: walks every commit up to its position (checking
    /// each link) and compares the link of the commit ending there.
    pub async fn check_anchor(&self, anchor: Anchor) -> Result<AnchorCheck, Failure> {
        let extent = self.embedded_log("an anchor's check")?.extent();
        let paths = frames::segment_paths(&self.dir.events(), extent.segment_lens.len());
        let want = anchor.clone();
        let found = tokio::task::spawn_blocking(move || {
            if want.head == 0 {
                return Ok(Some(hex::encode([0u8; 32])));
            }
            let mut found = None;
            frames::walk_frames(&paths, &extent.segment_lens, &mut |f| {
                if f.end_position() >= want.head {
                    if f.end_position() == want.head {
                        found = Some(hex::encode(f.link));
                    }
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .map(|_| found)
        })
        .await
        .map_err(|e| Failure::internal(format!("the check stopped: {e}")))?;
        let found = match found {
            Ok(Some(link)) => link,
            Ok(None) if anchor.head > extent.events => format!("a log of {} events", extent.events),
            Ok(None) => format!("no commit ending at position {}", anchor.head),
            Err(fault) => format!("damage before it: {fault}"),
        };
        let holds = found == anchor.head_hash;
        Ok(AnchorCheck { anchor, holds, found: (!holds).then_some(found) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataDir;

    /// Past LISTINGS_RUNNING_MAX listings a new one is refused as busy; once one ends, the next
    /// one runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::open(DataDir::new(dir.path()), Box::new(|_| {})).expect("app");
        let running: Vec<_> = (0..LISTINGS_RUNNING_MAX).map(|_| app.listings.try_enter().expect("a place")).collect();
        let busy = app.events_listing(0, AsOf::Now, None).map(|_| ()).expect_err("busy");
        assert_eq!((busy.class, busy.code.as_str()), (crate::Class::Busy, "too_many_requests"));
        drop(running);
        let mut out = Vec::new();
        let end = app.events(0, AsOf::Now, None, &mut out).await.expect("listed");
        assert_eq!((end.events, end.head), (0, 0));
    }
}

//! Copying a whole history from one event store to another, either way between the
//! embedded log and KurrentDB, and proving the copy equal.
//!
//! The copy keeps every event's position, stream, revision, id, type, schema version, both
//! times and payload: the target must be empty, events are appended in global order with
//! exact expected revisions, and each append's commit time is set to the source's
//! (`Stamp`). Afterwards [`compare`] reads both stores through and requires every event to be
//! equal field by field. The hash chains are each backend's own (the embedded store links
//! group commits, this one events), so they are verified on each side, not compared.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ingest::store::{EventStore, ExpectedRevision, REQUEST_EVENTS_MAX, RecordedEvent};

/// Events read from the source per step.
pub const COPY_PAGE_EVENTS: usize = 4096;

/// The commit clock of a target store during a copy: the copy sets it to each source
/// commit's time before appending, and the target's writer reads it.
#[derive(Debug, Clone, Default)]
pub struct Stamp(Arc<AtomicI64>);

impl Stamp {
    /// A stamp at time 0.
    pub fn new() -> Stamp {
        Stamp::default()
    }

    /// Sets the time the next commit gets.
    pub fn set(&self, recorded_at_us: i64) {
        self.0.store(recorded_at_us, Ordering::SeqCst);
    }

    /// A clock for the target store that reads this stamp.
    pub fn clock(&self) -> Clock {
        let at = self.0.clone();
        Arc::new(move || at.load(Ordering::SeqCst))
    }
}

/// A store's commit clock, µs since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target is not empty.
    #[error("the target store already holds {0} events: a migration copies into an empty store")]
    TargetNotEmpty(u64),
    /// Reading the source or the target failed.
    #[error("reading the {side}: {message}")]
    Read {
        /// "source" or "target".
        side: &'static str,
        /// What failed.
        message: String,
    },
    /// The target refused or misplaced an event.
    #[error("copying the event at position {position} (stream {stream:?}): {message}")]
    Write {
        /// Its position in the source.
        position: u64,
        /// Its stream.
        stream: String,
        /// What went wrong.
        message: String,
    },
    /// The copy differs from the source.
    #[error("the copy differs from the source at position {position}: {message}")]
    Differs {
        /// The first position that differs.
        position: u64,
        /// How.
        message: String,
    },
}

/// Copies every event of `from` (up to its head when the copy starts) into the empty `to`,
/// whose commit clock reads `stamp`. `progress(done, total)` is called after each page.
/// Returns the number of events copied.
pub async fn copy<S: EventStore, T: EventStore>(
    from: &S,
    to: &T,
    stamp: &Stamp,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, MigrateError> {
    if to.head() != 0 {
        return Err(MigrateError::TargetNotEmpty(to.head()));
    }
    let end = from.head();
    let mut next = 0;
    while next < end {
        let want = usize::try_from(end - next).unwrap_or(usize::MAX).min(COPY_PAGE_EVENTS);
        let page = from
            .read_all(next, want)
            .await
            .map_err(|e| MigrateError::Read { side: "source", message: e.to_string() })?;
        if page.is_empty() {
            return Err(MigrateError::Read { side: "source", message: format!("no event at position {next}") });
        }
        for run in runs(&page) {
            append_run(to, stamp, run).await?;
        }
        next += page.len() as u64;
        progress(next, end);
    }
    Ok(end)
}

/// Consecutive events of one stream committed at the same time, at most
/// [`REQUEST_EVENTS_MAX`]: what goes into one append.
fn runs(page: &[RecordedEvent]) -> Vec<&[RecordedEvent]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for i in 1..=page.len() {
        bytes += event_bytes(&page[i - 1]);
        let ends = i == page.len() || {
            let (a, b) = (&page[i - 1], &page[i]);
            b.stream != a.stream
                || b.recorded_at_us != a.recorded_at_us
                || b.revision != a.revision + 1
                || i - start == REQUEST_EVENTS_MAX
                || bytes + event_bytes(b) > RUN_BYTES_MAX
        };
        if ends {
            out.push(&page[start..i]);
            start = i;
            bytes = 0;
        }
    }
    out
}

/// Most bytes of events in one append of a copy, well inside a KurrentDB server's default
/// largest append (1 MiB); an event larger alone goes alone.
pub const RUN_BYTES_MAX: usize = 512 << 10;

fn event_bytes(e: &RecordedEvent) -> usize {
    e.data.payload.len() + e.data.event_type.len() + e.stream.len() + 256
}

async fn append_run<T: EventStore>(to: &T, stamp: &Stamp, run: &[RecordedEvent]) -> Result<(), MigrateError> {
    let first = &run[0];
    let last = &run[run.len() - 1];
    let fail =
        |message: String| MigrateError::Write { position: first.position, stream: first.stream.clone(), message };
    let expected = match first.revision {
        0 => ExpectedRevision::NoStream,
        r => ExpectedRevision::Exact(r - 1),
    };
    stamp.set(first.recorded_at_us);
    let events = run.iter().map(|e| e.data.clone()).collect();
    let appended = to.append(&first.stream, expected, events).await.map_err(|e| fail(e.to_string()))?;
    if appended.duplicate || appended.first_position != first.position || appended.last_revision != last.revision {
        return Err(fail(format!(
            "the target put it at position {} revision {} (duplicate: {})",
            appended.first_position, appended.last_revision, appended.duplicate
        )));
    }
    Ok(())
}

/// Reads both stores through and requires them to hold the same events, field by field.
/// Returns the number of events compared.
pub async fn compare<S: EventStore, T: EventStore>(
    from: &S,
    to: &T,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, MigrateError> {
    let end = from.head();
    if to.head() != end {
        return Err(MigrateError::Differs {
            position: end.min(to.head()),
            message: format!("the source holds {end} events, the copy {}", to.head()),
        });
    }
    let mut next = 0;
    while next < end {
        let want = usize::try_from(end - next).unwrap_or(usize::MAX).min(COPY_PAGE_EVENTS);
        let read =
            |side: &'static str| move |e: ingest::store::ReadError| MigrateError::Read { side, message: e.to_string() };
        let a = from.read_all(next, want).await.map_err(read("source"))?;
        let b = to.read_all(next, want).await.map_err(read("target"))?;
        for (x, y) in a.iter().zip(&b) {
            if x != y {
                return Err(MigrateError::Differs { position: x.position, message: difference(x, y) });
            }
        }
        if a.len() != b.len() || a.is_empty() {
            return Err(MigrateError::Differs {
                position: next + a.len().min(b.len()) as u64,
                message: "one side ended early".into(),
            });
        }
        next += a.len() as u64;
        progress(next, end);
    }
    Ok(end)
}

fn difference(x: &RecordedEvent, y: &RecordedEvent) -> String {
    let field = if x.position != y.position {
        "position"
    } else if x.stream != y.stream {
        "stream"
    } else if x.revision != y.revision {
        "revision"
    } else if x.recorded_at_us != y.recorded_at_us {
        "recorded_at"
    } else if x.data.event_id != y.data.event_id {
        "event id"
    } else if x.data.payload != y.data.payload {
        "payload"
    } else {
        "type, schema version or occurred_at"
    };
    format!("event {} in stream {:?}: its {field} differs", x.data.event_id, x.stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::store::conformance::event;

    fn rec(position: u64, stream: &str, revision: u64, at: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: stream.into(),
            revision,
            recorded_at_us: at,
            data: event(&format!("{stream}{revision}"), position),
        }
    }

    #[test]
    fn runs_split_on_stream_commit_time_and_gaps() {
        let page = vec![
            rec(0, "a", 0, 1),
            rec(1, "a", 1, 1),
            rec(2, "b", 0, 1),
            rec(3, "a", 2, 1),
            rec(4, "a", 3, 2),
            rec(5, "a", 4, 2),
        ];
        let lens: Vec<_> = runs(&page).iter().map(|r| (r[0].position, r.len())).collect();
        assert_eq!(lens, vec![(0, 2), (2, 1), (3, 1), (4, 2)]);
        let long: Vec<_> = (0..REQUEST_EVENTS_MAX as u64 + 3).map(|i| rec(i, "s", i, 9)).collect();
        let long_runs = runs(&long);
        assert!(long_runs.len() > 1, "split");
        assert_eq!(long_runs.iter().map(|r| r.len()).sum::<usize>(), long.len(), "every event once");
        for r in &long_runs {
            assert!(r.len() <= REQUEST_EVENTS_MAX);
            assert!(r.iter().map(event_bytes).sum::<usize>() <= RUN_BYTES_MAX);
        }
        // Large events: split by bytes, one larger than the cap alone.
        let mut big: Vec<_> = (0..5).map(|i| rec(i, "s", i, 9)).collect();
        for e in &mut big[..3] {
            e.data.payload = vec![b'x'; RUN_BYTES_MAX / 2];
        }
        big[3].data.payload = vec![b'x'; RUN_BYTES_MAX * 2];
        let lens: Vec<_> = runs(&big).iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![1, 1, 1, 1, 1], "each half-cap event with its overhead fills a run");
        assert!(runs(&[]).is_empty());
    }
}

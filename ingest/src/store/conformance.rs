//! The conformance suite every [`EventStore`] backend must pass.
//!
//! Each check takes a fresh, empty store from the caller's factory, so a second backend runs
//! the same suite unchanged: `conformance::run_all(|| make_store()).await`.
//! Failures panic with a message saying which promise was broken.

use std::sync::Arc;

use uuid::Uuid;

use super::{AppendError, AppendRequest, EventData, EventStore, ExpectedRevision, RecordedEvent, Subscription};

/// An event with an id derived from `key` and a small JSON payload holding `n`.
pub fn event(key: &str, n: u64) -> EventData {
    EventData {
        event_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()),
        event_type: "TestHappened".into(),
        schema_version: 1,
        occurred_at_us: 1_700_000_000_000_000 + n as i64,
        payload: format!(r#"{{"key":"{key}","n":{n}}}"#).into_bytes(),
    }
}

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<S: EventStore>(mut make: impl FnMut() -> S) {
    append_and_read_back(&make()).await;
    the_largest_events_round_trip(&make()).await;
    expected_revision_is_enforced(&make()).await;
    retried_appends_are_recognised(&make()).await;
    refused_requests_write_nothing(&make()).await;
    batched_requests_see_each_other(&make()).await;
    read_all_from_every_position(&make()).await;
    concurrent_appends_get_gap_free_positions(Arc::new(make())).await;
    subscriptions_neither_skip_nor_repeat(Arc::new(make())).await;
}

async fn all(store: &impl EventStore) -> Vec<RecordedEvent> {
    store.read_all(0, usize::MAX).await.expect("read_all")
}

/// Appended events come back from both reads with gap-free positions and revisions.
pub async fn append_and_read_back(store: &impl EventStore) {
    assert_eq!(store.head(), 0, "a new store is empty");
    let a = store
        .append("a", ExpectedRevision::NoStream, vec![event("a0", 0), event("a1", 1)])
        .await
        .expect("first append");
    assert_eq!((a.first_position, a.last_revision, a.duplicate), (0, 1, false));
    let b = store.append("b", ExpectedRevision::Any, vec![event("b0", 2)]).await.expect("second stream");
    assert_eq!((b.first_position, b.last_revision), (2, 0));
    let a2 = store.append("a", ExpectedRevision::Exact(1), vec![event("a2", 3)]).await.expect("third");
    assert_eq!((a2.first_position, a2.last_revision), (3, 2));
    assert_eq!(store.head(), 4);

    let stream = store.read_stream("a", 0, 100).await.expect("read_stream");
    let keys: Vec<_> = stream.iter().map(|e| (e.position, e.revision, e.data.clone())).collect();
    assert_eq!(keys, vec![(0, 0, event("a0", 0)), (1, 1, event("a1", 1)), (3, 2, event("a2", 3))]);
    assert!(stream.iter().all(|e| e.stream == "a"));
    let tail = store.read_stream("a", 1, 1).await.expect("read_stream from 1");
    assert_eq!(tail.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1], "from and max are honoured");
    assert!(store.read_stream("nope", 0, 10).await.expect("missing stream").is_empty());

    let log = all(store).await;
    assert_eq!(log.iter().map(|e| e.position).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(log[2].stream, "b");
    assert_eq!(store.stream_revision("a").await.expect("revision"), Some(2));
    assert_eq!(store.stream_revision("nope").await.expect("revision"), None);
    let by_id = store.event_by_id(event("b0", 2).event_id).await.expect("by id").expect("found");
    assert_eq!(by_id.position, 2);
    assert!(store.event_by_id(Uuid::nil()).await.expect("by id").is_none());
    let ids = [event("a2", 3).event_id, Uuid::nil(), event("a0", 0).event_id, event("a2", 3).event_id];
    let found = store.events_by_ids(&ids).await.expect("by ids");
    assert_eq!(
        found.iter().map(|e| e.as_ref().map(|e| e.position)).collect::<Vec<_>>(),
        vec![Some(3), None, Some(0), Some(3)]
    );
    assert!(store.events_by_ids(&[]).await.expect("no ids").is_empty());
}

/// Events at the payload limit, between small ones, read back whole by every read.
pub async fn the_largest_events_round_trip(store: &impl EventStore) {
    let mut big = event("big", 1);
    big.payload = vec![b'x'; super::PAYLOAD_BYTES_MAX];
    let mut events = vec![event("small-0", 0)];
    store.append("l", ExpectedRevision::NoStream, events.clone()).await.expect("small");
    store.append("l", ExpectedRevision::Exact(0), vec![big.clone(), big_variant(&big)]).await.expect("big ones");
    store.append("l", ExpectedRevision::Exact(2), vec![event("small-3", 3)]).await.expect("small after");
    events.extend([big.clone(), big_variant(&big), event("small-3", 3)]);
    let log = all(store).await;
    assert_eq!(log.iter().map(|e| e.data.clone()).collect::<Vec<_>>(), events, "read_all");
    for from in 0..4 {
        let one = store.read_all(from, 1).await.expect("read_all one");
        assert_eq!(one[0].data, events[from as usize], "read_all from {from}");
    }
    let stream = store.read_stream("l", 0, 10).await.expect("read_stream");
    assert_eq!(stream.iter().map(|e| e.data.clone()).collect::<Vec<_>>(), events, "read_stream");
    let by_id = store.event_by_id(big.event_id).await.expect("by id").expect("found");
    assert_eq!(by_id.data, big);
}

fn big_variant(big: &EventData) -> EventData {
    let mut other = event("big-2", 2);
    other.payload = big.payload.iter().map(|_| b'y').collect();
    other
}

/// NoStream, Exact and Any mean what they say.
pub async fn expected_revision_is_enforced(store: &impl EventStore) {
    store.append("s", ExpectedRevision::NoStream, vec![event("s0", 0)]).await.expect("create");
    let again = store.append("s", ExpectedRevision::NoStream, vec![event("s1", 1)]).await;
    assert!(
        matches!(again, Err(AppendError::WrongExpectedRevision { actual: Some(0), .. })),
        "NoStream on an existing stream must conflict: {again:?}"
    );
    let stale = store.append("s", ExpectedRevision::Exact(5), vec![event("s1", 1)]).await;
    assert!(matches!(stale, Err(AppendError::WrongExpectedRevision { actual: Some(0), .. })), "{stale:?}");
    let missing = store.append("t", ExpectedRevision::Exact(0), vec![event("t0", 1)]).await;
    assert!(matches!(missing, Err(AppendError::WrongExpectedRevision { actual: None, .. })), "{missing:?}");
    store.append("s", ExpectedRevision::Exact(0), vec![event("s1", 1)]).await.expect("exact");
    store.append("s", ExpectedRevision::Any, vec![event("s2", 2)]).await.expect("any");
    assert_eq!(store.stream_revision("s").await.expect("revision"), Some(2));
    assert_eq!(store.head(), 3, "refused appends take no position");
}

/// The same events again give the original result; the same id with other content is a
/// conflict.
pub async fn retried_appends_are_recognised(store: &impl EventStore) {
    let events = vec![event("r0", 0), event("r1", 1)];
    let first = store.append("r", ExpectedRevision::NoStream, events.clone()).await.expect("first");
    store.append("other", ExpectedRevision::Any, vec![event("o0", 2)]).await.expect("other");
    // The retry's expected revision no longer holds, but a retry is still a retry.
    let retry = store.append("r", ExpectedRevision::NoStream, events.clone()).await.expect("retry");
    assert!(retry.duplicate, "a retried append must be recognised");
    assert_eq!((retry.first_position, retry.last_revision), (first.first_position, first.last_revision));
    assert_eq!(store.head(), 3, "a retry writes nothing");

    let mut changed = event("r0", 0);
    changed.payload = br#"{"key":"r0","n":999}"#.to_vec();
    let conflict = store.append("r", ExpectedRevision::Any, vec![changed]).await;
    assert!(matches!(conflict, Err(AppendError::IdConflict { position: 0, .. })), "{conflict:?}");
    let elsewhere = store.append("z", ExpectedRevision::Any, vec![event("r0", 0)]).await;
    assert!(matches!(elsewhere, Err(AppendError::IdConflict { .. })), "same id, other stream: {elsewhere:?}");
    let partial = store.append("r", ExpectedRevision::Any, vec![event("r1", 1), event("r-new", 5)]).await;
    assert!(matches!(partial, Err(AppendError::IdConflict { .. })), "partly stored: {partial:?}");
    let reordered = store.append("r", ExpectedRevision::Any, vec![event("r1", 1), event("r0", 0)]).await;
    assert!(matches!(reordered, Err(AppendError::IdConflict { .. })), "other order: {reordered:?}");
    assert_eq!(store.head(), 3, "conflicts write nothing");
}

/// A refused request, and the limits, leave the log untouched.
pub async fn refused_requests_write_nothing(store: &impl EventStore) {
    let empty = store.append("e", ExpectedRevision::Any, vec![]).await;
    assert!(matches!(empty, Err(AppendError::Invalid(_))), "{empty:?}");
    let long = "x".repeat(super::STREAM_NAME_BYTES_MAX + 1);
    assert!(matches!(
        store.append(&long, ExpectedRevision::Any, vec![event("l", 0)]).await,
        Err(AppendError::Invalid(_))
    ));
    let mut big = event("big", 0);
    big.payload = vec![b' '; super::PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(store.append("e", ExpectedRevision::Any, vec![big]).await, Err(AppendError::Invalid(_))));
    let twice = store.append("e", ExpectedRevision::Any, vec![event("d", 0), event("d", 0)]).await;
    assert!(matches!(twice, Err(AppendError::Invalid(_))), "same id twice in one append: {twice:?}");
    assert_eq!(store.head(), 0);
    assert!(all(store).await.is_empty());
}

/// Requests in one `append_many` succeed or fail on their own and see earlier ones.
pub async fn batched_requests_see_each_other(store: &impl EventStore) {
    let req = |stream: &str, expected, key: &str, n| AppendRequest {
        stream: stream.into(),
        expected,
        events: vec![event(key, n)],
    };
    let results = store
        .append_many(vec![
            req("p", ExpectedRevision::NoStream, "p0", 0),
            req("p", ExpectedRevision::Exact(0), "p1", 1),
            req("p", ExpectedRevision::NoStream, "p-bad", 2),
            req("q", ExpectedRevision::NoStream, "q0", 3),
            req("p", ExpectedRevision::Any, "p0", 0),
        ])
        .await;
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().map(|a| a.first_position).ok(), Some(0));
    assert_eq!(results[1].as_ref().map(|a| (a.first_position, a.last_revision)).ok(), Some((1, 1)));
    assert!(matches!(results[2], Err(AppendError::WrongExpectedRevision { .. })), "{:?}", results[2]);
    assert_eq!(results[3].as_ref().map(|a| a.first_position).ok(), Some(2), "a refusal takes no position");
    assert!(results[4].as_ref().is_ok_and(|a| a.duplicate && a.first_position == 0), "{:?}", results[4]);
    assert_eq!(store.head(), 3);

    // A request after a refused one to the same stream is refused even though its expected
    // revision would match what is stored; `Any` is not affected.
    let results = store
        .append_many(vec![
            req("p", ExpectedRevision::Exact(7), "p-stale", 4),
            req("p", ExpectedRevision::Exact(1), "p-dependent", 5),
            req("p", ExpectedRevision::Any, "p-any", 6),
        ])
        .await;
    assert!(matches!(results[0], Err(AppendError::WrongExpectedRevision { .. })), "{:?}", results[0]);
    assert!(matches!(results[1], Err(AppendError::WrongExpectedRevision { .. })), "{:?}", results[1]);
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert_eq!(store.head(), 4);
}

/// `read_all` from any position returns exactly the suffix, in order, within `max`.
pub async fn read_all_from_every_position(store: &impl EventStore) {
    let n = 300u64;
    for chunk in 0..10 {
        let requests = (0..30)
            .map(|i| {
                let k = chunk * 30 + i;
                AppendRequest {
                    stream: format!("s{}", k % 7),
                    expected: ExpectedRevision::Any,
                    events: vec![event(&format!("e{k}"), k)],
                }
            })
            .collect();
        assert!(store.append_many(requests).await.iter().all(Result::is_ok));
    }
    let everything = all(store).await;
    assert_eq!(everything.len() as u64, n);
    for from in 0..=n {
        let got = store.read_all(from, usize::MAX).await.expect("read_all");
        assert_eq!(got.as_slice(), &everything[from as usize..], "read_all from {from}");
        let few = store.read_all(from, 3).await.expect("read_all max");
        assert_eq!(few.as_slice(), &everything[from as usize..(from + 3).min(n) as usize]);
    }
    for s in 0..7 {
        let stream = store.read_stream(&format!("s{s}"), 0, usize::MAX).await.expect("stream");
        let expected: Vec<_> = everything.iter().filter(|e| e.stream == format!("s{s}")).cloned().collect();
        assert_eq!(stream, expected, "stream s{s} in revision order");
        assert!(stream.iter().enumerate().all(|(i, e)| e.revision == i as u64));
    }
}

/// Concurrent appenders get unique, gap-free positions and per-stream revisions; optimistic
/// concurrency on a shared stream lets exactly one writer win each revision.
pub async fn concurrent_appends_get_gap_free_positions<S: EventStore>(store: Arc<S>) {
    let tasks = 8u64;
    let per_task = 50u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let key = format!("t{t}-{i}");
                store.append(&format!("own-{t}"), ExpectedRevision::Any, vec![event(&key, i)]).await.expect("own");
                // Read-decide-append on the shared stream, retrying on conflict.
                loop {
                    let expected = match store.stream_revision("shared").await.expect("revision") {
                        None => ExpectedRevision::NoStream,
                        Some(r) => ExpectedRevision::Exact(r),
                    };
                    match store.append("shared", expected, vec![event(&format!("shared-{key}"), i)]).await {
                        Ok(_) => break,
                        Err(AppendError::WrongExpectedRevision { .. }) => continue,
                        Err(e) => panic!("shared append failed: {e}"),
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let log = all(&*store).await;
    assert_eq!(log.len() as u64, tasks * per_task * 2);
    assert!(log.iter().enumerate().all(|(i, e)| e.position == i as u64), "positions gap-free");
    let shared = store.read_stream("shared", 0, usize::MAX).await.expect("shared");
    assert_eq!(shared.len() as u64, tasks * per_task);
    assert!(shared.iter().enumerate().all(|(i, e)| e.revision == i as u64), "revisions gap-free");
}

/// Subscriptions started at every position, while appends go on, see each later event once.
pub async fn subscriptions_neither_skip_nor_repeat<S: EventStore>(store: Arc<S>) {
    let total = 120u64;
    for i in 0..40 {
        store.append("pre", ExpectedRevision::Any, vec![event(&format!("pre{i}"), i)]).await.expect("pre");
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 40..total {
                store.append("live", ExpectedRevision::Any, vec![event(&format!("live{i}"), i)]).await.expect("live");
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut readers = Vec::new();
    for from in (0..=total).step_by(7) {
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            let mut sub = Subscription::new(&*store, from);
            let mut seen = Vec::new();
            while (seen.len() as u64) < total - from {
                let batch = sub.next_batch(5).await.expect("subscription");
                assert!(!batch.is_empty(), "next_batch returns events or waits");
                seen.extend(batch.into_iter().map(|e| e.position));
            }
            assert_eq!(seen, (from..total).collect::<Vec<_>>(), "subscription from {from}");
        }));
    }
    writer.await.expect("writer");
    for r in readers {
        r.await.expect("reader");
    }
}

//! Property test: random appends (and reopenings) against a plain in-memory model of what an
//! event store must do. Every result and the final log must agree. A failing case prints the
//! seed and operations that reproduce it.

use std::collections::HashMap;

use ingest::store::conformance::event;
use ingest::store::{AppendError, EmbeddedStore, EventData, EventStore, ExpectedRevision, StoreOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { stream: u8, expected: ExpectedRevision, keys: Vec<u8>, variant: u8 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let expected = prop_oneof![
        Just(ExpectedRevision::Any),
        Just(ExpectedRevision::NoStream),
        (0u64..4).prop_map(ExpectedRevision::Exact),
    ];
    prop_oneof![
        10 => (0u8..4, expected, prop::collection::vec(0u8..24, 1..4), 0u8..2)
            .prop_map(|(stream, expected, keys, variant)| Op::Append { stream, expected, keys, variant }),
        1 => Just(Op::Reopen),
    ]
}

fn data(key: u8, variant: u8) -> EventData {
    // The same key with another variant is the same id with other content.
    let mut e = event(&format!("key{key}"), u64::from(key));
    if variant == 1 {
        e.payload.extend_from_slice(b" ");
    }
    e
}

/// What the model says an append gives.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Written(u64, u64),
    Duplicate(u64, u64),
    WrongRevision,
    IdConflict,
    Invalid,
}

#[derive(Default)]
struct Model {
    log: Vec<(String, u64, EventData)>,
    revisions: HashMap<String, u64>,
}

impl Model {
    fn append(&mut self, stream: &str, expected: ExpectedRevision, events: &[EventData]) -> Expect {
        for (i, e) in events.iter().enumerate() {
            if events[..i].iter().any(|p| p.event_id == e.event_id) {
                return Expect::Invalid;
            }
        }
        let found: Vec<_> =
            events.iter().filter_map(|e| self.log.iter().position(|(_, _, d)| d.event_id == e.event_id)).collect();
        if !found.is_empty() {
            let all_same = found.len() == events.len()
                && found.iter().zip(events).all(|(&p, e)| self.log[p].0 == stream && self.log[p].2 == *e)
                && found.windows(2).all(|w| w[1] == w[0] + 1);
            return if all_same {
                Expect::Duplicate(found[0] as u64, self.log[found[found.len() - 1]].1)
            } else {
                Expect::IdConflict
            };
        }
        let current = self.revisions.get(stream).copied();
        let ok = match (expected, current) {
            (ExpectedRevision::Any, _) | (ExpectedRevision::NoStream, None) => true,
            (ExpectedRevision::Exact(n), Some(r)) => n == r,
            _ => false,
        };
        if !ok {
            return Expect::WrongRevision;
        }
        let first = self.log.len() as u64;
        let mut rev = current.map_or(0, |r| r + 1);
        for e in events {
            self.log.push((stream.to_owned(), rev, e.clone()));
            rev += 1;
        }
        self.revisions.insert(stream.to_owned(), rev - 1);
        Expect::Written(first, rev - 1)
    }
}

fn classify(r: Result<ingest::store::Appended, AppendError>) -> Expect {
    match r {
        Ok(a) if a.duplicate => Expect::Duplicate(a.first_position, a.last_revision),
        Ok(a) => Expect::Written(a.first_position, a.last_revision),
        Err(AppendError::WrongExpectedRevision { .. }) => Expect::WrongRevision,
        Err(AppendError::IdConflict { .. }) => Expect::IdConflict,
        Err(AppendError::Invalid(_)) => Expect::Invalid,
        Err(e) => panic!("unexpected store error {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            // Tiny segments and an index that keeps 3 entries in memory: rollover, runs on
            // disk and their merging are all exercised.
            let options = StoreOptions {
                segment_bytes_max: 1024,
                index_recent_entries_max: 3,
                index_filter_bytes: 64,
                ..StoreOptions::default()
            };
            let mut store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("open");
            let mut model = Model::default();
            for op in &ops {
                match op {
                    Op::Reopen => {
                        drop(store);
                        store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("reopen");
                    }
                    Op::Append { stream, expected, keys, variant } => {
                        let stream = format!("s{stream}");
                        let events: Vec<_> = keys.iter().map(|&k| data(k, *variant)).collect();
                        let want = model.append(&stream, *expected, &events);
                        let got = classify(store.append(&stream, *expected, events).await);
                        assert_eq!(got, want, "{op:?}");
                    }
                }
            }
            let log = store.read_all(0, usize::MAX).await.expect("read");
            let got: Vec<_> = log.iter().map(|e| (e.stream.clone(), e.revision, e.data.clone())).collect();
            assert_eq!(got, model.log);
            for s in 0..4 {
                let stream = format!("s{s}");
                let events = store.read_stream(&stream, 0, usize::MAX).await.expect("stream");
                let want: Vec<_> = model.log.iter().filter(|(n, _, _)| *n == stream).map(|(_, r, d)| (*r, d.clone())).collect();
                let got: Vec<_> = events.iter().map(|e| (e.revision, e.data.clone())).collect();
                assert_eq!(got, want, "stream {stream}");
            }
        });
    }
}

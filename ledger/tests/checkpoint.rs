//! Checkpoints: the books saved with their position resume equal to a replay; a checkpoint
//! that is damaged, ahead of the log or from another log is refused and the books rebuilt.

mod common;

use std::path::Path;

use common::store_fixture;
use ingest::store::EventStore;
use ledger::checkpoint::{self, state_digest};
use ledger::{Opened, open_books, replay, save_books, verify_books};

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_resumes_to_the_same_books_as_a_replay() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let path = dir.path().join("ledger.ckpt");
    let (books, opened) = open_books(&*store, Some(&path)).await.expect("books");
    assert_eq!(opened, Opened::Rebuilt);
    save_books(&*store, &books, &path).await.expect("saved");
    let day_one = books.position();

    // Resuming at the head: nothing to catch up, the same state.
    let (again, opened) = open_books(&*store, Some(&path)).await.expect("books");
    assert_eq!(opened, Opened::Resumed(day_one));
    assert_eq!(state_digest(&again), state_digest(&books));

    // Day two arrives: resumed and caught up equals a replay from position 0.
    let mut ingestor = ingest::pipeline::Ingestor::open(store.clone(), None).await.expect("ingestor");
    let feed = std::fs::File::open(common::fixture("feed-2026-11-25.ndjson")).expect("feed");
    ingestor
        .ingest_reader(std::io::BufReader::new(feed), ingest::pipeline::InputKind::Feed, |_, _| {})
        .await
        .map_err(|f| f.error)
        .expect("day two");
    let (resumed, opened) = open_books(&*store, Some(&path)).await.expect("books");
    assert_eq!(opened, Opened::Resumed(day_one));
    assert!(resumed.position() > day_one);
    let rebuilt = replay(&*store, u64::MAX).await.expect("replay");
    assert_eq!(state_digest(&resumed), state_digest(&rebuilt));
    assert_eq!(resumed.digest(), rebuilt.digest());

    let report = verify_books(&*store, Some(&path), u64::MAX).await.expect("verify");
    let c = report.checkpoint.as_ref().expect("checkpoint compared");
    assert_eq!(c.position, day_one);
    assert!(report.ok() && c.matches_rebuild && c.resumed_matches_rebuild, "{report:?}");
}

fn refused(opened: &Opened, why: &str) {
    match opened {
        Opened::Refused(reason) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_that_do_not_match_the_log_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(&dir.path().join("a"), &["2026-11-24"]).await;
    let path = dir.path().join("ledger.ckpt");
    let books = replay(&*store, u64::MAX).await.expect("books");
    save_books(&*store, &books, &path).await.expect("saved");
    let good = std::fs::read(&path).expect("read");
    let want = state_digest(&books);

    // Damaged: one byte of the body flipped.
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let (rebuilt, opened) = open_books(&*store, Some(&path)).await.expect("books");
    refused(&opened, "refused");
    assert_eq!(state_digest(&rebuilt), want, "rebuilt from the log");
    let report = verify_books(&*store, Some(&path), u64::MAX).await.expect("verify");
    assert!(!report.ok(), "verify reports the damaged checkpoint");

    // Truncated.
    std::fs::write(&path, &good[..good.len() - 7]).expect("write");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "header says");

    // Ahead of the log: a checkpoint of a longer log.
    let longer = store_fixture(&dir.path().join("b"), &["2026-11-24", "2026-11-25"]).await;
    let ahead = replay(&*longer, u64::MAX).await.expect("books");
    save_books(&*longer, &ahead, &path).await.expect("saved");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "log ends at");

    // Same position, another log: the anchor differs.
    let other = store_fixture(&dir.path().join("c"), &["2026-11-25"]).await;
    let cut = replay(&*other, store.head()).await.expect("books");
    assert_eq!(cut.position(), store.head());
    save_books(&*other, &cut, &path).await.expect("saved");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "is not the log's event");

    // Not a checkpoint at all.
    std::fs::write(&path, b"hello").expect("write");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "header");
    assert!(checkpoint::load(Path::new("/nonexistent/ledger.ckpt")).is_err());
}

/// How a [`TestStore`] reads for a replay's decoder thread.
#[derive(Clone, Copy)]
enum Reader {
    /// No blocking reader: the replay reads on its own task and hands the batches over.
    None,
    /// Its first batch (100 events), then an error.
    FailsAfterFirst,
    /// Its first batch (100 events), then "the log ends here".
    EndsAfterFirst,
}

/// The embedded store with another way of reading for replays.
struct TestStore(std::sync::Arc<ingest::store::EmbeddedStore>, Reader);

impl EventStore for TestStore {
    async fn append_many(
        &self,
        requests: Vec<ingest::store::AppendRequest>,
    ) -> Vec<Result<ingest::store::Appended, ingest::store::AppendError>> {
        self.0.append_many(requests).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<ingest::store::RecordedEvent>, ingest::store::ReadError> {
        self.0.read_stream(stream, from, max).await
    }
    async fn read_all(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<ingest::store::RecordedEvent>, ingest::store::ReadError> {
        self.0.read_all(from, max).await
    }
    async fn event_by_id(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<ingest::store::RecordedEvent>, ingest::store::ReadError> {
        self.0.event_by_id(id).await
    }
    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, ingest::store::ReadError> {
        self.0.stream_revision(stream).await
    }
    fn head(&self) -> u64 {
        self.0.head()
    }
    async fn wait_for(&self, position: u64) {
        self.0.wait_for(position).await
    }
    fn blocking_reader(&self) -> Option<ingest::store::BlockingReader> {
        let mode = self.1;
        if matches!(mode, Reader::None) {
            return None;
        }
        let mut inner = self.0.blocking_reader()?;
        let mut calls = 0;
        Some(Box::new(move |from, max| {
            calls += 1;
            match (calls, mode) {
                (1, _) => inner(from, max.min(100)),
                (_, Reader::FailsAfterFirst) => {
                    Err(ingest::store::ReadError::Io(std::io::Error::other("disk on fire")))
                }
                _ => Ok(Vec::new()),
            }
        }))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_without_a_blocking_reader_give_the_same_books() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(dir.path(), &["2026-11-24", "2026-11-25"]).await;
    let async_only = TestStore(store.clone(), Reader::None);
    assert!(async_only.blocking_reader().is_none());
    let a = replay(&async_only, u64::MAX).await.expect("books");
    let b = replay(&*store, u64::MAX).await.expect("books");
    assert_eq!(a.position(), store.head());
    assert_eq!(state_digest(&a), state_digest(&b));
    let part = replay(&async_only, 300).await.expect("books to 300");
    assert_eq!(state_digest(&part), state_digest(&replay(&*store, 300).await.expect("books")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_whose_reader_fails_fails() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let err = replay(&TestStore(store.clone(), Reader::FailsAfterFirst), u64::MAX).await.expect_err("the read error");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let err = replay(&TestStore(store.clone(), Reader::EndsAfterFirst), u64::MAX).await.expect_err("stopped short");
    assert!(err.to_string().contains("stopped at position 100"), "{err}");
    let err = open_books(&TestStore(store, Reader::EndsAfterFirst), None).await.map(|_| ()).expect_err("stopped short");
    assert!(err.to_string().contains("stopped"), "{err}");
}

/// Counts in a damaged file are checked against what is left of it before anything is
/// allocated for them, and a header length near `u64::MAX` is refused.
#[test]
fn hostile_checkpoints_are_refused_without_large_allocations() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.ckpt");
    let mut body = Vec::new();
    body.extend_from_slice(&checkpoint::RULES_VERSION.to_le_bytes());
    body.extend_from_slice(&[0; 24]); // position, entries, postings
    body.extend_from_slice(&[0; 32]); // anchor
    body.extend_from_slice(&0u64.to_le_bytes()); // timeline
    body.extend_from_slice(&0u32.to_le_bytes()); // accounts
    body.extend_from_slice(&0u32.to_le_bytes()); // merchants
    body.extend_from_slice(&(u64::MAX / 2).to_le_bytes()); // chunks of payment ids
    body.extend_from_slice(&[0; 64]);
    let file = |len: u64, body: &[u8]| {
        let mut f = b"PLLEDGR3".to_vec();
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&[0; 32]);
        f.extend_from_slice(body);
        f
    };
    std::fs::write(&path, file(body.len() as u64, &body)).expect("write");
    let err = checkpoint::load(&path).err().expect("refused");
    assert!(err.to_string().contains("refused"), "{err}");
    std::fs::write(&path, file(u64::MAX - 10, &body)).expect("write");
    let err = checkpoint::load(&path).err().expect("refused");
    assert!(err.to_string().contains("header says"), "{err}");
    // An older layout is refused by its magic.
    let mut old = file(body.len() as u64, &body);
    old[7] = b'2';
    std::fs::write(&path, old).expect("write");
    assert!(checkpoint::load(&path).err().expect("refused").to_string().contains("bad magic"));
}

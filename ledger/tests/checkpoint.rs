//! Checkpoints: the books saved with their position resume equal to a replay; a checkpoint
//! that is damaged, ahead of the log or from another log is refused and the books rebuilt.

mod common;

use std::path::Path;

use common::store_fixture;
use ingest::store::EventStore;
use ledger::checkpoint::{self, CHECKPOINT_RECORDS_MAX, state_digest};
use ledger::{Opened, open_books, replay, save_books, verify_books};

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_resumes_to_the_same_books_as_a_replay() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let path = dir.path().join("ledger.ckpt");
    let (books, opened, mark) = open_books(&*store, Some(&path)).await.expect("books");
    assert_eq!(opened, Opened::Rebuilt);
    assert!(mark.is_none());
    save_books(&*store, &books, &path, None).await.expect("saved");
    let day_one = books.position();

    // Resuming at the head: nothing to catch up, the same state.
    let (again, opened, _) = open_books(&*store, Some(&path)).await.expect("books");
    assert_eq!(opened, Opened::Resumed(day_one));
    assert_eq!(state_digest(&again), state_digest(&books));

    // Day two arrives: resumed and caught up equals a replay from position 0.
    ingest_day_two(&store).await;
    let (resumed, opened, _) = open_books(&*store, Some(&path)).await.expect("books");
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

/// Stores the fixture's second day (its refunds and voids reach back to day one's sales).
async fn ingest_day_two(store: &std::sync::Arc<ingest::store::EmbeddedStore>) {
    let mut ingestor = ingest::pipeline::Ingestor::open(store.clone(), None).await.expect("ingestor");
    let feed = std::fs::File::open(common::fixture("feed-2026-11-25.ndjson")).expect("feed");
    ingestor
        .ingest_reader(std::io::BufReader::new(feed), ingest::pipeline::InputKind::Feed, |_, _| {})
        .await
        .map_err(|f| f.error)
        .expect("day two");
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
    let mark = save_books(&*store, &books, &path, None).await.expect("saved");
    let good = std::fs::read(&path).expect("read");
    let log = checkpoint::log_path(&path, 0);
    let good_log = std::fs::read(&log).expect("read");
    assert_eq!(good_log.len() as u64, std::fs::metadata(&log).expect("log").len());
    let want = state_digest(&books);

    // Damaged: one byte flipped in the summary, in the maps, in the log.
    for (file, good, at) in [(&path, &good, 100), (&path, &good, good.len() - 3), (&log, &good_log, good_log.len() / 2)]
    {
        let mut bytes = good.clone();
        bytes[at] ^= 0x40;
        std::fs::write(file, &bytes).expect("write");
        let (rebuilt, opened, mark) = open_books(&*store, Some(&path)).await.expect("books");
        refused(&opened, "damaged");
        assert!(mark.is_none());
        assert_eq!(state_digest(&rebuilt), want, "rebuilt from the log");
        let report = verify_books(&*store, Some(&path), u64::MAX).await.expect("verify");
        assert!(!report.ok(), "verify reports the damaged checkpoint");
        std::fs::write(file, good).expect("write");
    }
    assert_eq!(open_books(&*store, Some(&path)).await.expect("books").1, Opened::Resumed(mark.position()));

    // Truncated: the state, the log.
    std::fs::write(&path, &good[..good.len() - 7]).expect("write");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "header says");
    std::fs::write(&path, &good).expect("write");
    std::fs::write(&log, &good_log[..good_log.len() - 7]).expect("write");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "the state says");
    std::fs::remove_file(&log).expect("remove");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "its log");

    // Ahead of the log: a checkpoint of a longer log.
    let longer = store_fixture(&dir.path().join("b"), &["2026-11-24", "2026-11-25"]).await;
    let ahead = replay(&*longer, u64::MAX).await.expect("books");
    save_books(&*longer, &ahead, &path, None).await.expect("saved");
    refused(&open_books(&*store, Some(&path)).await.expect("books").1, "log ends at");

    // Same position, another log: the anchor differs.
    let other = store_fixture(&dir.path().join("c"), &["2026-11-25"]).await;
    let cut = replay(&*other, store.head()).await.expect("books");
    assert_eq!(cut.position(), store.head());
    save_books(&*other, &cut, &path, None).await.expect("saved");
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
    /// At most 37 events a call, as long as there are events.
    Small,
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
                (_, Reader::Small) => inner(from, max.min(37)),
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

/// Every event of `[from, end)` a scan hands over (read ahead on a thread when the store
/// allows, however short the range), with its position.
async fn scanned<S: EventStore>(
    store: &S,
    from: u64,
    end: u64,
    types: Option<&[&str]>,
) -> Result<Vec<(u64, ingest::event::Event)>, ledger::ReplayError> {
    let mut scan = ledger::scan::Scan::with_thread(store, from, end, types, true);
    let mut all: Vec<(u64, ingest::event::Event)> = Vec::new();
    while let Some(batch) = scan.next().await? {
        // The position is past every event handed over, and no further than the range.
        if let Some((last, _)) = batch.last() {
            assert!(scan.position() > *last);
        }
        assert!(scan.position() <= end.min(store.head()));
        all.extend(batch);
    }
    assert_eq!(scan.position(), end.min(store.head()), "the scan ends at the end of its range");
    Ok(all)
}

#[tokio::test(flavor = "multi_thread")]
async fn scans_hand_over_the_events_of_their_range_and_types_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(dir.path(), &["2026-11-24", "2026-11-25"]).await;
    let head = store.head();
    // The reference: every event read and decoded one by one.
    let mut every = Vec::new();
    let mut at = 0;
    while at < head {
        for e in store.read_all(at, 1000).await.expect("read") {
            let event = ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                .expect("decode");
            every.push((e.position, event));
            at = e.position + 1;
        }
    }
    let types = ["PaymentCaptured", "TerminalBatchClosed"];
    let of_types: Vec<_> = every.iter().filter(|(_, e)| types.contains(&e.event_type())).cloned().collect();
    assert!(!of_types.is_empty() && of_types.len() < every.len());
    let (from, end) = (37, head - 11);
    let in_range: Vec<_> = every.iter().filter(|(p, _)| (from..end).contains(p)).cloned().collect();
    // On the store's own thread, and read on the caller's task: the same events.
    let async_only = TestStore(store.clone(), Reader::None);
    assert_eq!(scanned(&*store, 0, u64::MAX, None).await.expect("scan"), every);
    assert_eq!(scanned(&async_only, 0, u64::MAX, None).await.expect("scan"), every);
    assert_eq!(scanned(&*store, 0, head, Some(&types)).await.expect("scan"), of_types);
    assert_eq!(scanned(&async_only, 0, head, Some(&types)).await.expect("scan"), of_types);
    assert_eq!(scanned(&*store, from, end, None).await.expect("scan"), in_range);
    assert_eq!(scanned(&async_only, from, end, None).await.expect("scan"), in_range);
    // A thread whose reader gives 37 events at a time: many batches, more than the channel
    // holds, in order.
    let small = TestStore(store.clone(), Reader::Small);
    assert_eq!(scanned(&small, 0, u64::MAX, None).await.expect("scan"), every);
    assert_eq!(
        scanned(&small, from, end, Some(&types)).await.expect("scan").len(),
        in_range.iter().filter(|(_, e)| types.contains(&e.event_type())).count()
    );
    // Scans of a short range on the caller's task, by default.
    let mut scan = ledger::scan::Scan::new(&*store, from, end, None);
    let mut handed = Vec::new();
    while let Some(batch) = scan.next().await.expect("scan") {
        handed.extend(batch);
    }
    assert_eq!(handed, in_range);
    assert!(scanned(&*store, head, head, None).await.expect("scan").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_stops_at_the_first_event_it_cannot_decode_having_handed_over_those_before() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(dir.path(), &["2026-11-24"]).await;
    let bad = store.head();
    let damaged = ingest::store::EventData {
        event_id: uuid::Uuid::from_u128(7),
        event_type: "PaymentCaptured".into(),
        schema_version: 1,
        occurred_at_us: 0,
        payload: b"{\"txn_id\":".to_vec(),
    };
    store.append("damaged", ingest::store::ExpectedRevision::Any, vec![damaged]).await.expect("append");
    // Read on the caller's task, and on the store's own thread.
    stops_at_the_damaged_event(&TestStore(store.clone(), Reader::None), bad - 50, bad).await;
    stops_at_the_damaged_event(&*store, 0, bad).await;
    stops_at_the_damaged_event(&TestStore(store.clone(), Reader::Small), 0, bad).await;
    // A thread whose reader stops short: an error naming where, never a quiet end.
    for (reader, why) in
        [(Reader::EndsAfterFirst, "stopped at position 100"), (Reader::FailsAfterFirst, "disk on fire")]
    {
        let short = TestStore(store.clone(), reader);
        let mut scan = ledger::scan::Scan::with_thread(&short, 0, bad, None, true);
        let mut handed = 0;
        let err = loop {
            match scan.next().await {
                Ok(Some(batch)) => handed += batch.len(),
                Ok(None) => panic!("a scan that stopped short ended quietly"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(err.contains(why), "{err}");
        assert_eq!((handed, scan.position()), (100, 100), "the first batch, and where it stopped");
    }
}

/// A scan from `from` hands over every event before `bad`, then fails naming it.
async fn stops_at_the_damaged_event<S: EventStore>(store: &S, from: u64, bad: u64) {
    let mut scan = ledger::scan::Scan::with_thread(store, from, u64::MAX, None, true);
    let mut handed = 0;
    let err = loop {
        match scan.next().await {
            Ok(Some(batch)) => handed += batch.len() as u64,
            Ok(None) => panic!("the damaged event was passed over"),
            Err(e) => break e,
        }
    };
    assert_eq!(handed, bad - from, "every event before the damaged one");
    assert_eq!(scan.position(), bad, "the scan names the first event not handled");
    assert!(err.to_string().contains(&format!("decoding the event at position {bad}")), "{err}");
}

/// A state file of `a` and `b` (hashes right unless `len` overrides section A's length).
fn state_file(a: &[u8], b: &[u8], a_len: u64) -> Vec<u8> {
    let mut f = b"PLLEDGR4".to_vec();
    f.extend_from_slice(&a_len.to_le_bytes());
    f.extend_from_slice(blake3::hash(a).as_bytes());
    f.extend_from_slice(&(b.len() as u64).to_le_bytes());
    f.extend_from_slice(blake3::hash(b).as_bytes());
    f.extend_from_slice(a);
    f.extend_from_slice(b);
    f
}

/// Section A at position `position` naming a log of `log_len` bytes ending in `log_hash`
/// (one record), with `accounts` as its count of accounts.
fn summary_section(position: u64, log_len: u64, log_hash: &[u8; 32], accounts: u32) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&checkpoint::RULES_VERSION.to_le_bytes());
    a.extend_from_slice(&position.to_le_bytes());
    a.extend_from_slice(&[0; 16]); // entries, postings
    a.extend_from_slice(&[0; 32]); // anchor
    a.extend_from_slice(&0u64.to_le_bytes()); // generation
    a.extend_from_slice(&log_len.to_le_bytes());
    a.extend_from_slice(log_hash);
    a.extend_from_slice(&1u64.to_le_bytes()); // records
    a.extend_from_slice(&accounts.to_le_bytes());
    a
}

/// Counts in a damaged checkpoint are checked against what is left of it before anything is
/// allocated for them, and lengths near `u64::MAX` are refused.
#[test]
fn hostile_checkpoints_are_refused_without_large_allocations() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.ckpt");
    // Maps: no merchants, then empty days, settled, paid, booked and batches.
    let mut maps = 0u32.to_le_bytes().to_vec();
    maps.extend_from_slice(&[0; 40]);
    // A summary claiming four billion accounts in a few bytes.
    let a = summary_section(0, 0, &[0; 32], u32::MAX);
    std::fs::write(&path, state_file(&a, &maps, a.len() as u64)).expect("write");
    let err = checkpoint::summary(&path).expect_err("refused");
    assert!(err.to_string().contains("larger than the rest"), "{err}");
    assert!(checkpoint::load(&path).is_err());
    // Lengths near u64::MAX.
    std::fs::write(&path, state_file(&a, &maps, u64::MAX - 10)).expect("write");
    assert!(checkpoint::load(&path).err().expect("refused").to_string().contains("header says"));
    // A log record claiming half of u64::MAX positions and a record longer than the log.
    let mut body = 0u64.to_le_bytes().to_vec();
    body.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    body.extend_from_slice(&[0; 64]);
    let hash = {
        let mut h = blake3::Hasher::new();
        h.update(&[0; 32]);
        h.update(&body);
        *h.finalize().as_bytes()
    };
    for claimed in [body.len() as u64, u64::MAX - 1] {
        let mut record = claimed.to_le_bytes().to_vec();
        record.extend_from_slice(&hash);
        record.extend_from_slice(&body);
        std::fs::write(checkpoint::log_path(&path, 0), &record).expect("write");
        let a = summary_section(u64::MAX / 2, record.len() as u64, &hash, 0);
        std::fs::write(&path, state_file(&a, &maps, a.len() as u64)).expect("write");
        let err = checkpoint::load(&path).err().expect("refused").to_string();
        assert!(err.contains("larger than the rest") || err.contains("longer than the log"), "{err}");
    }
    // An older layout is refused by its magic.
    let mut old = state_file(&a, &maps, a.len() as u64);
    old[7] = b'3';
    std::fs::write(&path, old).expect("write");
    assert!(checkpoint::load(&path).err().expect("refused").to_string().contains("bad magic"));
}

/// Saving again appends what changed (day two's events, the day-one sales it refunds and
/// voids) to the log; the books loaded from a log of several records equal a replay; a save
/// that stopped before its state was written is cut off by the next; and after
/// `CHECKPOINT_RECORDS_MAX` records a save starts a new generation holding the whole books.
#[tokio::test(flavor = "multi_thread")]
async fn saves_append_what_changed_and_load_to_the_same_books() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(&dir.path().join("log"), &["2026-11-24"]).await;
    let path = dir.path().join("ledger.ckpt");
    let log = checkpoint::log_path(&path, 0);
    let day_one = replay(&*store, u64::MAX).await.expect("books");
    let first = save_books(&*store, &day_one, &path, None).await.expect("saved");
    let whole = std::fs::metadata(&log).expect("log").len();
    drop(day_one);

    ingest_day_two(&store).await;
    let (books, opened, mark) = open_books(&*store, Some(&path)).await.expect("books");
    assert_eq!(opened, Opened::Resumed(first.position()));
    let second = save_books(&*store, &books, &path, mark.as_ref()).await.expect("saved");
    assert_eq!(second.records(), 2);
    let appended = std::fs::metadata(&log).expect("log").len() - whole;
    assert!(appended > 0 && appended < whole * 3 / 2, "day two's record is {appended} bytes, day one's {whole}");

    let rebuilt = replay(&*store, u64::MAX).await.expect("replay");
    let want = state_digest(&rebuilt);
    let loaded = checkpoint::load(&path).expect("loaded");
    assert_eq!(state_digest(&loaded.books), want);
    assert_eq!((loaded.mark.position(), loaded.mark.records()), (second.position(), 2));
    // The summary answers what the books answer.
    let summary = checkpoint::summary(&path).expect("summary");
    assert_eq!(summary.position, store.head());
    assert_eq!(summary.trial_balance(), rebuilt.balances().trial_balance(u64::MAX));
    for (account, currency, _) in rebuilt.balances().trial_balance(u64::MAX) {
        assert!(summary.holds(&account, currency));
        assert_eq!(summary.balance(&account, currency), rebuilt.balances().balance(&account, currency, u64::MAX));
    }
    assert_eq!(ledger::summary_at_head(&*store, &path).await.expect("summary").as_ref(), Some(&summary));

    // A save that appended its record but stopped before its state: the state before it stays
    // right, and the next save from it cuts the record off before appending its own.
    let state = std::fs::read(&path).expect("state");
    let third = save_books(&*store, &books, &path, Some(&second)).await.expect("saved");
    assert_eq!(third.records(), 3);
    std::fs::write(&path, &state).expect("the older state back");
    let reloaded = checkpoint::load(&path).expect("loaded");
    assert_eq!((reloaded.mark.records(), state_digest(&reloaded.books)), (2, want));
    let after = save_books(&*store, &reloaded.books, &path, Some(&reloaded.mark)).await.expect("saved");
    assert_eq!(after.records(), 3);
    assert_eq!(state_digest(&checkpoint::load(&path).expect("loaded").books), want);

    // Records up to the limit, then a new generation with the whole books.
    let mut mark = after;
    while mark.records() < CHECKPOINT_RECORDS_MAX {
        mark = save_books(&*store, &books, &path, Some(&mark)).await.expect("saved");
    }
    let next = save_books(&*store, &books, &path, Some(&mark)).await.expect("saved");
    assert_eq!(next.records(), 1);
    assert!(!log.exists(), "the older generation is removed");
    assert!(checkpoint::log_path(&path, 1).exists());
    assert_eq!(state_digest(&checkpoint::load(&path).expect("loaded").books), want);
}

/// Books an event broke are past that event: they are never saved, so no start resumes after
/// it as if it had been booked.
#[tokio::test(flavor = "multi_thread")]
async fn broken_books_are_not_saved() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_fixture(&dir.path().join("log"), &["2026-11-24"]).await;
    let path = dir.path().join("ledger.ckpt");
    let mut books = replay(&*store, u64::MAX).await.expect("books");
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
    let one = rust_decimal::Decimal::ONE;
    // A settlement whose net is not gross − refunds − fees breaks the books.
    let settled = ingest::event::Event::MerchantSettled(ingest::event::MerchantSettled {
        merchant_id: "M000001".into(),
        settlement_date: date,
        business_date: date,
        gross: one,
        refunds: rust_decimal::Decimal::ZERO,
        fees: rust_decimal::Decimal::ZERO,
        net: one + one,
        currency: ingest::money::Currency::Cny,
    });
    assert!(books.apply(books.position(), &settled).is_err());
    assert!(books.broken().is_some());
    let err = save_books(&*store, &books, &path, None).await.expect_err("broken books are not saved");
    assert!(err.to_string().contains("does not add up"), "{err}");
    assert!(!path.exists());
}

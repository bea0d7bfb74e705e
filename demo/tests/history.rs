//! The day's reads that skip the history give what reading the whole log gives: the
//! reconciliation's items and terms, and the host's verdict on each terminal batch, on every
//! day of a demo acquirer whose log is long enough for the skipping to happen.

use std::sync::Arc;

use demo::{Options, run};
use ingest::store::{AppendError, AppendRequest, Appended, EmbeddedStore, EventStore, ReadError, RecordedEvent};

/// A store that reads the whole log for every question about time: the default
/// `position_since`, everything else the embedded store's.
struct WholeLog(Arc<EmbeddedStore>);

impl EventStore for WholeLog {
    async fn append_many(&self, requests: Vec<AppendRequest>) -> Vec<Result<Appended, AppendError>> {
        self.0.append_many(requests).await
    }
    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        self.0.read_stream(stream, from, max).await
    }
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        self.0.read_all(from, max).await
    }
    async fn event_by_id(&self, id: uuid::Uuid) -> Result<Option<RecordedEvent>, ReadError> {
        self.0.event_by_id(id).await
    }
    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, ReadError> {
        self.0.stream_revision(stream).await
    }
    fn head(&self) -> u64 {
        self.0.head()
    }
    async fn wait_for(&self, position: u64) {
        self.0.wait_for(position).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_days_reads_equal_reading_the_whole_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let options = Options { merchants: 6, payments_per_day: 2_500, days: 5, seed: 11 };
    let report = run(&dir, options, &|_| {}).await.expect("demo");
    assert!(report.disagreements.is_empty(), "{:#?}", report.disagreements);
    let store = Arc::new(EmbeddedStore::open(app::DataDir::new(&dir).events()).expect("open the demo's log"));
    let whole = WholeLog(store.clone());
    let (books, _) = ledger::open_books(&*store, None).await.expect("books");
    let (mut skipped, mut cancelled, mut refunds) = (0, 0, 0);
    for day in 0..options.days {
        let date = demo::run::first_day() + chrono::Days::new(u64::from(day));
        for statement in demo::day::STATEMENTS {
            let ours = ledger::recon::load_items(&*store, statement, date).await.expect("items");
            let reference = ledger::recon::load_items(&whole, statement, date).await.expect("items, whole log");
            assert!(!ours.0.is_empty(), "{statement} {date} has items");
            assert_eq!(ours.0, reference.0, "{statement} {date}: items");
            assert_eq!(ours.1, reference.1, "{statement} {date}: terms");
            cancelled += ours.0.iter().filter(|i| i.cancelled).count();
            refunds += ours.0.iter().filter(|i| i.kind == ingest::statement::LineKind::Refund).count();
        }
        let closes = ledger::recon::batch_closes(&*store, date).await.expect("closes");
        let from_books = ledger::recon::batch_verdicts_of(closes, |t, b| books.batch_totals(t, b), date);
        let reference = ledger::recon::batch_verdicts(&*store, date).await.expect("verdicts, whole log");
        assert!(!reference.is_empty(), "{date} has batches closed");
        assert_eq!(from_books, reference, "{date}: batch verdicts");
        // The demo's channels carry items one day forward.
        skipped = store.position_since(ledger::recon::window_start(date - chrono::Days::new(1)));
    }
    eprintln!("cancelled {cancelled}, refunds {refunds}, skipped {skipped} of {}", store.head());
    assert!(cancelled > 0 && refunds > 0, "voids and refunds were compared: {cancelled}, {refunds}");
    assert!(skipped > store.head() / 4, "the last day's reads skip the first days: from {skipped} of {}", store.head());
}

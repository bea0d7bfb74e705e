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
    let last = demo::run::first_day() + chrono::Days::new(u64::from(options.days - 1));
    let sale = refund_an_early_sale(&dir, last).await;
    let store = Arc::new(EmbeddedStore::open(app::DataDir::new(&dir).events()).expect("open the demo's log"));
    let whole = WholeLog(store.clone());
    let (books, _, _) = ledger::open_books(&*store, None).await.expect("books");
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
    // The refund of the first day's sale on the last: its sale lies before what the last day
    // reads, and is found by its id.
    let (items, _) =
        ledger::recon::load_items(&*store, ingest::statement::StatementChannel::Wechat, last).await.expect("items");
    let refund = items.iter().find(|i| i.txn_id == format!("{}-RH", sale.txn_id)).expect("the late refund");
    assert!(sale.position < skipped, "the sale at {} is before the last day's reads ({skipped})", sale.position);
    assert_eq!(refund.channel_txn_id, sale.channel_txn_id);
    eprintln!("cancelled {cancelled}, refunds {refunds}, skipped {skipped} of {}", store.head());
    assert!(cancelled > 0 && refunds > 0, "voids and refunds were compared: {cancelled}, {refunds}");
    assert!(skipped > store.head() / 4, "the last day's reads skip the first days: from {skipped} of {}", store.head());
}

/// A WeChat sale of the first day, refunded here.
struct Sale {
    position: u64,
    txn_id: ingest::event::Id,
    channel_txn_id: Option<ingest::event::Id>,
}

/// Records, on `date`, a refund of one of the first day's WeChat sales (in a batch of its own,
/// open): the refund of a sale far older than the reconciliation window.
async fn refund_an_early_sale(dir: &std::path::Path, date: chrono::NaiveDate) -> Sale {
    let app = app::App::open(app::DataDir::new(dir), Box::new(|w| panic!("{w}"))).expect("app");
    let early = app.store().read_all(0, 20_000).await.expect("read");
    for e in early {
        let Ok(ingest::event::Event::PaymentCaptured(s)) =
            ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
        else {
            continue;
        };
        if s.channel != ingest::event::Channel::Wechat || s.channel_txn_id.is_none() {
            continue;
        }
        let record = format!(
            r#"{{"kind": "refund", "txn_id": "{t}-RH", "original_txn_id": "{t}", "merchant_id": "{m}", "terminal_id": "{term}", "batch_no": "990001", "stan": "990001", "channel": "wechat", "amount": "0.01", "currency": "CNY", "at": "{date}T12:00:00+08:00"}}"#,
            t = s.txn_id,
            m = s.merchant_id,
            term = s.terminal_id,
        );
        let summary = app
            .ingest_reader(format!("{record}\n").as_bytes(), ingest::pipeline::InputKind::Feed, |_, _| {})
            .await
            .expect("ingest");
        if summary.accepted == 1 {
            app.close().await;
            return Sale { position: e.position, txn_id: s.txn_id, channel_txn_id: s.channel_txn_id };
        }
    }
    panic!("no early WeChat sale could be refunded");
}

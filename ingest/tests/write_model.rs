//! The write model through the ingest pipeline: given these records stored, when this record
//! arrives, then it is accepted, a duplicate, or rejected with this code.

use std::path::PathBuf;
use std::sync::Arc;

use ingest::pipeline::{IngestSummary, Ingestor, InputKind, RecordOutcome};
use ingest::store::{
    AppendError, AppendRequest, Appended, EmbeddedStore, EventStore, ExpectedRevision, ReadError, RecordedEvent,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day").join(name)
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    ingestor: Ingestor<EmbeddedStore>,
}

const ADMIN: &str = r#"{"kind":"merchant_applied","merchant_id":"M1","legal_name":"Shop","licence_no":"91","mcc":"5812","timezone":"Asia/Shanghai","settlement_account":"6222","at":"2026-11-01T09:00:00+08:00"}
{"kind":"merchant_approved","merchant_id":"M1","reviewer":"risk","at":"2026-11-02T09:00:00+08:00"}
{"kind":"contract_signed","merchant_id":"M1","fees":{"wechat":{"rate":"0.0038"},"unionpay_card":{"rate":"0.006","cap":"20.00"},"cash":{"rate":"0"}},"settlement_cycle":"T1","at":"2026-11-03T09:00:00+08:00"}
{"kind":"terminal_bound","merchant_id":"M1","terminal_id":"T1","serial":"S1","model":"ME31","at":"2026-11-04T09:00:00+08:00"}
{"kind":"terminal_activated","terminal_id":"T1","at":"2026-11-05T09:00:00+08:00"}
{"kind":"terminal_bound","merchant_id":"M1","terminal_id":"T2","serial":"S2","model":"ME31","at":"2026-11-04T09:00:00+08:00"}"#;

fn sale(txn: &str, terminal: &str, batch: &str, amount: &str) -> String {
    format!(
        r#"{{"kind":"sale","txn_id":"{txn}","merchant_id":"M1","terminal_id":"{terminal}","batch_no":"{batch}","stan":"000001","channel":"wechat","channel_txn_id":"42{txn}","amount":"{amount}","currency":"CNY","at":"2026-11-26T12:00:00+08:00","payer":"oX","mcc":"5812"}}"#
    )
}

fn adjustment(kind: &str, txn: &str, original: &str, terminal: &str, batch: &str, amount: &str) -> String {
    format!(
        r#"{{"kind":"{kind}","txn_id":"{txn}","original_txn_id":"{original}","merchant_id":"M1","terminal_id":"{terminal}","batch_no":"{batch}","stan":"000002","channel":"wechat","amount":"{amount}","currency":"CNY","at":"2026-11-26T13:00:00+08:00"}}"#
    )
}

fn batch_close(terminal: &str, batch: &str) -> String {
    format!(
        r#"{{"kind":"batch_close","merchant_id":"M1","terminal_id":"{terminal}","batch_no":"{batch}","debit_count":1,"debit_amount":"1.00","credit_count":0,"credit_amount":"0.00","at":"2026-11-26T23:59:59+08:00"}}"#
    )
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path().join("events")).expect("open"));
        let ingestor = Ingestor::open(store.clone(), None).await.expect("ingestor");
        let mut w = World { _dir: dir, store, ingestor };
        let s = w.run(InputKind::Admin, ADMIN).await;
        assert_eq!((s.accepted, s.rejected), (6, 0), "{:?}", s.first_rejections);
        w
    }

    async fn run(&mut self, kind: InputKind, text: &str) -> IngestSummary {
        self.ingestor.ingest_reader(text.as_bytes(), kind, |_, _| {}).await.expect("ingest")
    }

    /// Feeds the lines as one chunk and returns each line's outcome.
    async fn outcomes(&mut self, lines: &[String]) -> Vec<RecordOutcome> {
        let numbered: Vec<_> = lines.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.clone().into_bytes())).collect();
        self.ingestor.process_chunk(&numbered, InputKind::Feed).await.expect("chunk")
    }

    /// Feeds the lines one by one (each its own chunk) and returns the outcomes.
    async fn each(&mut self, lines: &[String]) -> Vec<RecordOutcome> {
        let mut out = Vec::new();
        for l in lines {
            out.extend(self.outcomes(std::slice::from_ref(l)).await);
        }
        out
    }
}

fn code(o: &RecordOutcome) -> &str {
    match o {
        RecordOutcome::Accepted { .. } => "accepted",
        RecordOutcome::Duplicate { .. } => "duplicate",
        RecordOutcome::Rejected(r) => &r.code,
    }
}

fn codes(outcomes: &[RecordOutcome]) -> Vec<&str> {
    outcomes.iter().map(code).collect()
}

/// Each rule, both when the records arrive in separate chunks and in one chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_rejects_what_it_should() {
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("sale on an active terminal", vec![sale("A", "T1", "000001", "10.00")], vec!["accepted"]),
        ("sale on a terminal never activated", vec![sale("A", "T2", "000001", "10.00")], vec!["terminal_not_active"]),
        ("sale on an unknown terminal", vec![sale("A", "T9", "000001", "10.00")], vec!["terminal_unknown"]),
        (
            "sale for another merchant's terminal",
            vec![sale("A", "T1", "000001", "10.00").replace(r#""merchant_id":"M1""#, r#""merchant_id":"M2""#)],
            vec!["terminal_merchant_mismatch"],
        ),
        (
            "sale on a channel the contract lacks",
            vec![sale("A", "T1", "000001", "10.00").replace(r#""channel":"wechat""#, r#""channel":"alipay""#)],
            vec!["channel_not_contracted"],
        ),
        (
            "same sale twice, then the same txn_id with other content",
            vec![
                sale("A", "T1", "000001", "10.00"),
                sale("A", "T1", "000001", "10.00"),
                sale("A", "T1", "000001", "11.00"),
            ],
            vec!["accepted", "duplicate", "conflicting_duplicate"],
        ),
        (
            "refunds up to the amount, then one cent too many",
            vec![
                sale("A", "T1", "000001", "10.00"),
                adjustment("refund", "A-R1", "A", "T1", "000001", "3.33"),
                adjustment("refund", "A-R2", "A", "T1", "000001", "6.67"),
                adjustment("refund", "A-R3", "A", "T1", "000001", "0.01"),
            ],
            vec!["accepted", "accepted", "accepted", "refund_exceeds_remaining"],
        ),
        (
            "refund of an unknown sale",
            vec![adjustment("refund", "X-R1", "X", "T1", "000001", "1.00")],
            vec!["original_unknown"],
        ),
        (
            "void in the sale's batch, then a refund of the voided sale",
            vec![
                sale("A", "T1", "000001", "10.00"),
                adjustment("void", "A-V", "A", "T1", "000001", "10.00"),
                adjustment("refund", "A-R1", "A", "T1", "000001", "1.00"),
            ],
            vec!["accepted", "accepted", "original_cancelled"],
        ),
        (
            "void in another batch",
            vec![sale("A", "T1", "000001", "10.00"), adjustment("void", "A-V", "A", "T1", "000002", "10.00")],
            vec!["accepted", "void_outside_batch"],
        ),
        (
            "void of part of the amount",
            vec![sale("A", "T1", "000001", "10.00"), adjustment("void", "A-V", "A", "T1", "000001", "5.00")],
            vec!["accepted", "amount_not_full"],
        ),
        (
            "void after the batch closed, and a sale into the closed batch",
            vec![
                sale("A", "T1", "000001", "10.00"),
                batch_close("T1", "000001"),
                adjustment("void", "A-V", "A", "T1", "000001", "10.00"),
                sale("B", "T1", "000001", "10.00"),
                batch_close("T1", "000001").replace("1.00", "2.00"),
            ],
            vec!["accepted", "accepted", "batch_closed", "batch_closed", "conflicting_duplicate"],
        ),
        (
            "reversal, then a second reversal",
            vec![
                sale("A", "T1", "000001", "10.00"),
                adjustment("reversal", "A-X", "A", "T1", "000001", "10.00"),
                adjustment("reversal", "A-X2", "A", "T1", "000001", "10.00"),
            ],
            vec!["accepted", "accepted", "original_cancelled"],
        ),
        (
            "reversal of a refunded sale",
            vec![
                sale("A", "T1", "000001", "10.00"),
                adjustment("refund", "A-R1", "A", "T1", "000001", "1.00"),
                adjustment("reversal", "A-X", "A", "T1", "000001", "10.00"),
            ],
            vec!["accepted", "accepted", "original_refunded"],
        ),
        (
            "a refund or reversal into a closed batch",
            vec![
                sale("A", "T1", "000001", "10.00"),
                batch_close("T1", "000001"),
                adjustment("refund", "A-R1", "A", "T1", "000001", "1.00"),
                adjustment("reversal", "A-X", "A", "T1", "000001", "10.00"),
                adjustment("refund", "A-R2", "A", "T1", "000002", "1.00"),
            ],
            vec!["accepted", "accepted", "batch_closed", "batch_closed", "accepted"],
        ),
        (
            "a txn_id names one record only",
            vec![
                sale("A", "T1", "000001", "10.00"),
                sale("B", "T1", "000001", "10.00"),
                adjustment("refund", "B", "A", "T1", "000001", "1.00"),
                adjustment("refund", "A-R1", "A", "T1", "000001", "1.00"),
                sale("A-R1", "T1", "000001", "10.00"),
                adjustment("void", "A-R1", "B", "T1", "000001", "10.00"),
            ],
            vec!["accepted", "accepted", "txn_id_in_use", "accepted", "txn_id_in_use", "txn_id_in_use"],
        ),
        (
            "an adjustment dated before its sale",
            vec![
                sale("A", "T1", "000001", "10.00").replace("12:00:00", "14:00:00"),
                adjustment("refund", "A-R1", "A", "T1", "000001", "1.00"),
            ],
            vec!["accepted", "before_original"],
        ),
        (
            "a full PAN and a malformed amount are invalid records",
            vec![
                sale("A", "T1", "000001", "10.00")
                    .replace(r#""channel":"wechat""#, r#""channel":"unionpay_card""#)
                    .replace(r#""payer":"oX""#, r#""payer":"6222021234567890128""#),
                sale("B", "T1", "000001", "-1.00"),
            ],
            vec!["invalid_record", "invalid_record"],
        ),
    ];
    for (name, lines, expected) in cases {
        for together in [false, true] {
            let mut w = World::new().await;
            let head = w.store.head();
            let outcomes = if together { w.outcomes(&lines).await } else { w.each(&lines).await };
            assert_eq!(codes(&outcomes), expected, "{name} (one chunk: {together})");
            let accepted = expected.iter().filter(|c| **c == "accepted").count() as u64;
            assert_eq!(w.store.head(), head + accepted, "{name}: only accepted records are stored");
        }
    }
}

/// Lifecycle rules of admin records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_follows_its_order() {
    let mut w = World::new().await;
    let lines = r#"{"kind":"merchant_approved","merchant_id":"M9","reviewer":"risk","at":"2026-11-02T09:00:00+08:00"}
{"kind":"terminal_bound","merchant_id":"M1","terminal_id":"T1","serial":"S1","model":"ME31","at":"2026-11-09T09:00:00+08:00"}
{"kind":"terminal_suspended","terminal_id":"T1","at":"2026-11-10T09:00:00+08:00"}
{"kind":"terminal_suspended","terminal_id":"T1","at":"2026-11-11T09:00:00+08:00"}
{"kind":"merchant_closed","merchant_id":"M1","at":"2026-11-12T09:00:00+08:00"}"#;
    let s = w.run(InputKind::Admin, lines).await;
    let got: Vec<_> = s.first_rejections.iter().map(|r| (r.line, r.code.as_str())).collect();
    assert_eq!(
        got,
        vec![(1, "merchant_unknown"), (2, "terminal_bound"), (4, "terminal_state"), (5, "merchant_has_terminals")]
    );
    assert_eq!(s.accepted, 1);
    // The suspension is in force: a sale on T1 is refused now.
    assert_eq!(codes(&w.outcomes(&[sale("A", "T1", "000001", "1.00")]).await), vec!["terminal_not_active"]);
}

/// A merchant closes only with a zero payable, which the books tell the write model; without
/// the books' word no close is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_closes_only_with_a_zero_payable() {
    let mut w = World::new().await;
    let unbind = r#"{"kind":"terminal_unbound","terminal_id":"T1","at":"2026-11-10T09:00:00+08:00"}
{"kind":"terminal_unbound","terminal_id":"T2","at":"2026-11-10T09:00:00+08:00"}"#;
    assert_eq!(w.run(InputKind::Admin, unbind).await.accepted, 2);
    let close = r#"{"kind":"merchant_closed","merchant_id":"M1","at":"2026-11-12T09:00:00+08:00"}"#;
    let code = |s: &ingest::pipeline::IngestSummary| s.first_rejections.first().map(|r| r.code.clone());
    let s = w.run(InputKind::Admin, close).await;
    assert_eq!(code(&s).as_deref(), Some("merchant_payable_unknown"));
    w.ingestor.set_owed_merchants(["M1".to_owned()].into());
    let s = w.run(InputKind::Admin, close).await;
    assert_eq!(code(&s).as_deref(), Some("merchant_payable_not_zero"));
    w.ingestor.set_owed_merchants(["M2".to_owned()].into());
    assert_eq!(w.run(InputKind::Admin, close).await.accepted, 1);
}

/// The clock these tests hold records against: noon of the sales' day, in UTC+08:00.
fn noon_of_the_26th() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00+08:00").unwrap_or_default().to_utc()
}

/// With a clock, a record whose business time is further ahead of it than the skew allows is
/// refused on its `at`; up to the skew it passes; channel terms may take effect later; a
/// record stored before is still answered as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_the_future_are_refused() {
    let mut w = World::new().await;
    let stored = sale("A", "T1", "000001", "10.00");
    assert_eq!(codes(&w.outcomes(std::slice::from_ref(&stored)).await), vec!["accepted"]);
    w.ingestor.refuse_times_ahead_of(noon_of_the_26th);
    let at = |s: &str, t: &str| s.replace("2026-11-26T12:00:00+08:00", t);
    let skew = ingest::pipeline::AT_AHEAD_OF_CLOCK_SECONDS_MAX / 60;
    let just_within = format!("2026-11-26T12:{skew:02}:00+08:00");
    let just_beyond = format!("2026-11-26T12:{skew:02}:01+08:00");
    let lines = vec![
        at(&sale("B", "T1", "000001", "10.00"), "2099-01-01T00:00:00+08:00"),
        at(&sale("C", "T1", "000001", "10.00"), &just_beyond),
        at(&sale("D", "T1", "000001", "10.00"), &just_within),
        // The same instant written in UTC: 04:00Z is noon in UTC+08:00.
        at(&sale("E", "T1", "000001", "10.00"), "2026-11-26T04:00:00Z"),
        stored,
    ];
    let outcomes = w.outcomes(&lines).await;
    assert_eq!(codes(&outcomes), vec!["time_in_future", "time_in_future", "accepted", "accepted", "duplicate"]);
    let RecordOutcome::Rejected(r) = &outcomes[0] else { panic!("rejected") };
    assert_eq!((r.line, r.field.as_deref(), r.reference.as_deref()), (1, Some("at"), Some("B")));
    assert!(r.message.contains("2099-01-01T00:00:00+08:00"), "{}", r.message);
    // Admin records too, except terms that take effect later.
    let admin = r#"{"kind":"terminal_suspended","terminal_id":"T1","at":"2027-01-01T09:00:00+08:00"}
{"kind":"channel_terms","channel":"wechat","fee_rate":"0.0025","fee_tolerance":"0.01","carry_forward_days":1,"effective_from":"2027-01-01"}"#;
    let s = w.run(InputKind::Admin, admin).await;
    assert_eq!((s.accepted, s.rejected), (1, 1), "{:?}", s.first_rejections);
    assert_eq!(s.first_rejections[0].code, "time_in_future");
}

/// A second merchant M2 with an active terminal T3.
const SECOND_MERCHANT: &str = r#"{"kind":"merchant_applied","merchant_id":"M2","legal_name":"Other","licence_no":"92","mcc":"5812","timezone":"Asia/Shanghai","settlement_account":"6223","at":"2026-11-01T09:00:00+08:00"}
{"kind":"merchant_approved","merchant_id":"M2","reviewer":"risk","at":"2026-11-02T09:00:00+08:00"}
{"kind":"contract_signed","merchant_id":"M2","fees":{"wechat":{"rate":"0.0038"}},"settlement_cycle":"T1","at":"2026-11-03T09:00:00+08:00"}
{"kind":"terminal_bound","merchant_id":"M2","terminal_id":"T3","serial":"S3","model":"ME31","at":"2026-11-04T09:00:00+08:00"}
{"kind":"terminal_activated","terminal_id":"T3","at":"2026-11-05T09:00:00+08:00"}"#;

/// `line` as merchant M2's terminal T3 sends it.
fn from_m2(line: &str) -> String {
    line.replace(r#""merchant_id":"M1""#, r#""merchant_id":"M2""#)
        .replace(r#""terminal_id":"T1""#, r#""terminal_id":"T3""#)
}

/// A txn_id is its merchant's: another merchant's terminal sending it first (M1's ids are easy
/// to guess) neither blocks M1's sale nor reaches it, and a refusal says nothing of M1's
/// payments. Records from the log before this rule keep their names: a payment is named by
/// its txn_id alone unless another merchant's payment already holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchants_txn_ids_are_its_own() {
    for one_chunk in [false, true] {
        let mut w = World::new().await;
        let s = w.run(InputKind::Admin, SECOND_MERCHANT).await;
        assert_eq!((s.accepted, s.rejected), (5, 0), "{:?}", s.first_rejections);
        // M1 sells M1-2 before anyone else uses it.
        assert_eq!(codes(&w.outcomes(&[sale("M1-2", "T1", "000001", "8.00")]).await), vec!["accepted"]);
        let lines = vec![
            // M2 takes M1's next txn_id first, then M1 sells it.
            from_m2(&sale("M1-1", "T1", "000001", "50.00")),
            sale("M1-1", "T1", "000001", "10.00"),
            sale("M1-1", "T1", "000001", "10.00"),
            // Each refunds its own M1-1, with the same refund txn_id.
            adjustment("refund", "M1-1-R", "M1-1", "T1", "000001", "3.00"),
            from_m2(&adjustment("refund", "M1-1-R", "M1-1", "T1", "000001", "20.00")),
            // M2 cannot touch M1's sales, and learns no more than of a sale never made.
            from_m2(&adjustment("refund", "M2-R9", "M1-2", "T1", "000001", "1.00")),
            from_m2(&adjustment("void", "M2-V9", "M1-2", "T1", "000001", "8.00")),
            from_m2(&adjustment("refund", "M2-R8", "M1-404", "T1", "000001", "1.00")),
            // M2's refund again: found under M2's name, not taken for M1's.
            from_m2(&adjustment("refund", "M1-1-R", "M1-1", "T1", "000001", "20.00")),
        ];
        let outcomes = if one_chunk { w.outcomes(&lines).await } else { w.each(&lines).await };
        assert_eq!(
            codes(&outcomes),
            vec![
                "accepted",
                "accepted",
                "duplicate",
                "accepted",
                "accepted",
                "original_unknown",
                "original_unknown",
                "original_unknown",
                "duplicate",
            ],
            "one chunk: {one_chunk}"
        );
        let message = |o: &RecordOutcome| match o {
            RecordOutcome::Rejected(r) => {
                r.message.replace("M2-V9", "M2-R9").replace("M2-R8", "M2-R9").replace("M1-404", "M1-2")
            }
            other => panic!("rejected: {other:?}"),
        };
        assert_eq!(message(&outcomes[5]), message(&outcomes[7]));
        assert_eq!(message(&outcomes[6]), message(&outcomes[7]));
        // The first to use a txn_id keeps the plain name; M1's M1-1 is named by its merchant.
        let plain = w.store.read_stream("payment-M1-1", 0, 10).await.expect("read");
        let own = w.store.read_stream("payment-M1/M1-1", 0, 10).await.expect("read");
        let merchants = |events: &[RecordedEvent]| -> Vec<String> {
            events
                .iter()
                .map(|e| {
                    let v: serde_json::Value = serde_json::from_slice(&e.data.payload).expect("json");
                    format!("{} {} {}", e.data.event_type, v["merchant_id"], v["amount"])
                })
                .collect()
        };
        assert_eq!(
            merchants(&plain),
            vec![r#"PaymentCaptured "M2" "50.00""#, r#"PaymentRefunded "M2" "20.00""#],
            "one chunk: {one_chunk}"
        );
        assert_eq!(
            merchants(&own),
            vec![r#"PaymentCaptured "M1" "10.00""#, r#"PaymentRefunded "M1" "3.00""#],
            "one chunk: {one_chunk}"
        );
        // M1's refund of 3.00 left 7.00 of its sale; M2's left 30.00 of its own.
        let more = vec![
            adjustment("refund", "M1-1-R2", "M1-1", "T1", "000001", "7.01"),
            adjustment("refund", "M1-1-R3", "M1-1", "T1", "000001", "7.00"),
            from_m2(&adjustment("refund", "M1-1-R4", "M1-1", "T1", "000001", "30.00")),
        ];
        assert_eq!(codes(&w.each(&more).await), vec!["refund_exceeds_remaining", "accepted", "accepted"]);
    }
}

/// The fixture day: everything is accepted, and a second run stores nothing again; the
/// registry survives a restart through its checkpoint and equals a rebuild from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_days_ingest_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("writemodel.json");
    let files = [
        ("admin.ndjson", InputKind::Admin, 62u64),
        ("feed-2026-11-24.ndjson", InputKind::Feed, 429),
        ("feed-2026-11-25.ndjson", InputKind::Feed, 444),
    ];
    let registry = {
        let store = Arc::new(EmbeddedStore::open(dir.path().join("events")).expect("open"));
        let mut ingestor = Ingestor::open(store.clone(), Some(&checkpoint)).await.expect("ingestor");
        for (name, kind, n) in files {
            let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
            let s = ingestor.ingest_reader(file, kind, |_, _| {}).await.expect("ingest");
            assert_eq!((s.records, s.accepted, s.rejected), (n, n, 0), "{name}: {:?}", s.first_rejections);
        }
        ingestor.save_checkpoint(&checkpoint).await.expect("checkpoint");
        assert_eq!(store.head(), 62 + 429 + 444);
        ingestor.registry().clone()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path().join("events")).expect("reopen"));
    let mut ingestor = Ingestor::open(store.clone(), Some(&checkpoint)).await.expect("from checkpoint");
    assert_eq!(ingestor.registry(), &registry);
    let rebuilt = Ingestor::open(store.clone(), None).await.expect("rebuilt");
    assert_eq!(rebuilt.registry(), &registry, "checkpoint equals a rebuild from the log");
    for (name, kind, n) in files {
        let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
        let s = ingestor.ingest_reader(file, kind, |_, _| {}).await.expect("again");
        assert_eq!((s.duplicates, s.accepted), (n, 0), "{name} the second time");
    }
    assert_eq!(store.head(), 62 + 429 + 444);
}

/// A checkpoint that does not belong to the log is ignored and the registry rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_checkpoint_is_ignored() {
    let mut w = World::new().await;
    let path = w._dir.path().join("cp.json");
    w.ingestor.save_checkpoint(&path).await.expect("save");
    let other = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(other.path()).expect("open"));
    // Same number of events, different history.
    let mut fresh = Ingestor::open(store.clone(), None).await.expect("fresh");
    let admin = ADMIN.replace("M1", "M7");
    fresh.ingest_reader(admin.as_bytes(), InputKind::Admin, |_, _| {}).await.expect("admin");
    let reopened = Ingestor::open(store, Some(&path)).await.expect("open with foreign checkpoint");
    assert!(reopened.registry().merchants.contains_key("M7"));
    assert!(!reopened.registry().merchants.contains_key("M1"));
    let _ = w.outcomes(&[]).await;
}

/// Across chunk borders, where the next chunk is decided while the previous one is still
/// being stored: a refund sees its sale, an over-refund is refused, a repeated sale is a
/// duplicate and a changed one a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_see_the_chunk_still_being_stored() {
    let mut w = World::new().await;
    let chunk = ingest::pipeline::CHUNK_RECORDS_MAX;
    let mut lines: Vec<String> = (0..chunk - 1).map(|i| sale(&format!("F{i}"), "T1", "000001", "1.00")).collect();
    lines.push(sale("A", "T1", "000001", "10.00")); // last line of the first chunk
    lines.push(adjustment("refund", "A-R1", "A", "T1", "000001", "6.00"));
    lines.push(adjustment("refund", "A-R2", "A", "T1", "000001", "4.01"));
    lines.push(sale("A", "T1", "000001", "10.00"));
    lines.push(sale("A", "T1", "000001", "10.01"));
    // A third chunk that refunds what the second left.
    lines.extend((0..chunk).map(|i| sale(&format!("G{i}"), "T1", "000001", "1.00")));
    lines.push(adjustment("refund", "A-R3", "A", "T1", "000001", "4.00"));
    let s = w.run(InputKind::Feed, &lines.join("\n")).await;
    let got: Vec<_> = s.first_rejections.iter().map(|r| (r.line as usize, r.code.as_str())).collect();
    assert_eq!(got, vec![(chunk + 2, "refund_exceeds_remaining"), (chunk + 4, "conflicting_duplicate")]);
    assert_eq!((s.accepted, s.duplicates, s.rejected), (lines.len() as u64 - 3, 1, 2));
}

/// A store through which another writer refunds payment `A` just before the ingestor's own
/// first append to it, so that the ingestor's decision is stale when it reaches the store.
struct Meddling {
    inner: EmbeddedStore,
    meddled: std::sync::atomic::AtomicBool,
}

impl EventStore for Meddling {
    async fn append_many(&self, requests: Vec<AppendRequest>) -> Vec<Result<Appended, AppendError>> {
        let touches_a = requests.iter().any(|r| r.stream == "payment-A" && r.expected != ExpectedRevision::NoStream);
        if touches_a && !self.meddled.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let line = adjustment("refund", "A-OTHER", "A", "T1", "000001", "7.00");
            let ingest::feed::FeedCommand::Refund(r) =
                ingest::feed::parse_feed_line(1, line.as_bytes()).expect("valid")
            else {
                panic!("a refund")
            };
            let event = ingest::event::Event::PaymentRefunded(r);
            self.inner
                .append("payment-A", ExpectedRevision::Exact(0), vec![event.to_event_data()])
                .await
                .expect("meddle");
        }
        self.inner.append_many(requests).await
    }
    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, from, max).await
    }
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_all(from, max).await
    }
    async fn event_by_id(&self, id: uuid::Uuid) -> Result<Option<RecordedEvent>, ReadError> {
        self.inner.event_by_id(id).await
    }
    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, ReadError> {
        self.inner.stream_revision(stream).await
    }
    fn head(&self) -> u64 {
        self.inner.head()
    }
    async fn wait_for(&self, position: u64) {
        self.inner.wait_for(position).await
    }
}

/// A decision made on a view that another writer changed before it reached the store is
/// refused by the store (expected revision) and decided again: here the second refund no
/// longer fits what remains, so it is rejected instead of over-refunding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_decision_is_decided_again() {
    for pipelined in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Meddling {
            inner: EmbeddedStore::open(dir.path()).expect("open"),
            meddled: std::sync::atomic::AtomicBool::new(false),
        });
        let mut ingestor = Ingestor::open(store.clone(), None).await.expect("ingestor");
        ingestor.ingest_reader(ADMIN.as_bytes(), InputKind::Admin, |_, _| {}).await.expect("admin");
        let sale_line = sale("A", "T1", "000001", "10.00");
        let refunds = [
            adjustment("refund", "A-R1", "A", "T1", "000001", "2.00"),
            adjustment("refund", "A-R2", "A", "T1", "000001", "2.00"),
        ];
        // The sale first, alone; then both refunds, which the meddler races with a 7.00 refund.
        ingestor.process_chunk(&[(1, sale_line.into_bytes())], InputKind::Feed).await.expect("sale");
        let outcomes = if pipelined {
            let s =
                ingestor.ingest_reader(refunds.join("\n").as_bytes(), InputKind::Feed, |_, _| {}).await.expect("feed");
            assert_eq!((s.accepted, s.rejected), (1, 1), "{:?}", s.first_rejections);
            s.first_rejections.iter().map(|r| r.code.clone()).collect::<Vec<_>>()
        } else {
            let lines: Vec<_> =
                refunds.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.clone().into_bytes())).collect();
            let outcomes = ingestor.process_chunk(&lines, InputKind::Feed).await.expect("refunds");
            assert_eq!(code(&outcomes[0]), "accepted");
            vec![code(&outcomes[1]).to_owned()]
        };
        assert_eq!(outcomes, vec!["refund_exceeds_remaining".to_owned()], "pipelined: {pipelined}");
        let events = store.read_stream("payment-A", 0, 100).await.expect("stream");
        let types: Vec<_> = events.iter().map(|e| e.data.event_type.as_str()).collect();
        assert_eq!(
            types,
            vec!["PaymentCaptured", "PaymentRefunded", "PaymentRefunded"],
            "10.00 = 7.00 + 2.00 + nothing more"
        );
    }
}

/// A record sent twice while its first copy is not yet settled is decided once: the copy is
/// a duplicate, the tentative state counts the record once, and nothing over-refunds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_record_in_flight_is_decided_once() {
    let mut w = World::new().await;
    let lines = vec![
        sale("S", "T1", "000001", "100.00"),
        adjustment("refund", "S-A", "S", "T1", "000001", "100.00"),
        sale("S", "T1", "000001", "100.00"),
        adjustment("refund", "S-B", "S", "T1", "000001", "100.00"),
        adjustment("refund", "S-B", "S", "T1", "000001", "100.00"),
    ];
    let outcomes = w.outcomes(&lines).await;
    assert_eq!(
        codes(&outcomes),
        vec!["accepted", "accepted", "duplicate", "refund_exceeds_remaining", "refund_exceeds_remaining"]
    );
    let events = w.store.read_stream("payment-S", 0, 100).await.expect("stream");
    assert_eq!(events.len(), 2, "the sale and one full refund, nothing more");

    let mut w = World::new().await;
    w.outcomes(&[sale("T", "T1", "000001", "100.00")]).await;
    let lines = vec![
        adjustment("refund", "T-A", "T", "T1", "000001", "60.00"),
        adjustment("refund", "T-A", "T", "T1", "000001", "60.00"),
        adjustment("refund", "T-B", "T", "T1", "000001", "30.00"),
    ];
    assert_eq!(codes(&w.outcomes(&lines).await), vec!["accepted", "duplicate", "accepted"]);
    // The same through the pipelined reader, the repeat arriving in the next chunk.
    let mut w = World::new().await;
    let chunk = ingest::pipeline::CHUNK_RECORDS_MAX;
    let mut lines: Vec<String> = (0..chunk - 2).map(|i| sale(&format!("F{i}"), "T1", "000001", "1.00")).collect();
    lines.push(sale("U", "T1", "000001", "100.00"));
    lines.push(adjustment("refund", "U-A", "U", "T1", "000001", "60.00"));
    lines.push(adjustment("refund", "U-A", "U", "T1", "000001", "60.00"));
    lines.push(adjustment("refund", "U-B", "U", "T1", "000001", "30.00"));
    let s = w.run(InputKind::Feed, &lines.join("\n")).await;
    assert_eq!((s.accepted, s.duplicates, s.rejected), (lines.len() as u64 - 1, 1, 0), "{:?}", s.first_rejections);
}

/// A line longer than the limit is refused whole, however it is padded: nothing after the cut
/// is lost unseen (a `\r` at the cut used to make a cut line fit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_line_is_refused_not_cut() {
    let mut w = World::new().await;
    let max = ingest::feed::FEED_LINE_BYTES_MAX;
    let valid = sale("A", "T1", "000001", "1.00");
    let mut line = valid.clone();
    line.push_str(&" ".repeat(max - valid.len()));
    line.push('\r');
    line.push_str(&sale("LOST", "T1", "000001", "1.00"));
    let s = w.run(InputKind::Feed, &format!("{line}\r\n{}\r\n", sale("B", "T1", "000001", "1.00"))).await;
    assert_eq!((s.accepted, s.rejected), (1, 1), "{:?}", s.first_rejections);
    assert!(s.first_rejections[0].message.contains("longer than"), "{:?}", s.first_rejections);
    // A line exactly at the limit, with CRLF, is fine.
    let mut exact = sale("C", "T1", "000001", "1.00");
    exact.push_str(&" ".repeat(max - exact.len()));
    let s = w.run(InputKind::Feed, &format!("{exact}\r\n")).await;
    assert_eq!(s.accepted, 1, "{:?}", s.first_rejections);
}

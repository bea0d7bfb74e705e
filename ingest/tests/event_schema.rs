//! Frozen event fixtures: one event of every type as schema version 1 wrote it. Each must keep
//! decoding, and encoding the decoded event must give the very same bytes (the stable JSON
//! form). Refresh with `UPDATE_GOLDEN=1 cargo test -p ingest --test event_schema` and review
//! the diff: a change here is a change of the stored format and needs an upcaster.

use std::path::PathBuf;

use ingest::admin::parse_admin_line;
use ingest::event::Event;
use ingest::feed::parse_feed_line;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events-v1.ndjson")
}

/// One event of every type, built from admin and feed records.
fn one_of_each() -> Vec<Event> {
    let admin = [
        r#"{"kind":"channel_terms","channel":"wechat","fee_rate":"0.0025","fee_tolerance":"0.01","carry_forward_days":1,"effective_from":"2026-10-25"}"#,
        r#"{"kind":"merchant_applied","merchant_id":"M1","legal_name":"Shop 1 Trading Co.","licence_no":"913100000000000001","mcc":"5814","timezone":"Asia/Shanghai","settlement_account":"6222020200000000001","at":"2026-11-04T09:01:00+08:00"}"#,
        r#"{"kind":"merchant_approved","merchant_id":"M1","reviewer":"risk-01","at":"2026-11-05T09:01:00+08:00"}"#,
        r#"{"kind":"merchant_rejected","merchant_id":"M2","reviewer":"risk-01","reason":"licence expired","at":"2026-11-05T09:02:00+08:00"}"#,
        r#"{"kind":"contract_signed","merchant_id":"M1","fees":{"wechat":{"rate":"0.0038"},"unionpay_card":{"rate":"0.0060","cap":"20.00","min":"0.10"}},"settlement_cycle":"T1","at":"2026-11-06T09:01:00+08:00"}"#,
        r#"{"kind":"terminal_bound","merchant_id":"M1","terminal_id":"T1","serial":"NL-ME31-000010","model":"ME31","at":"2026-11-07T09:01:00+08:00"}"#,
        r#"{"kind":"terminal_activated","terminal_id":"T1","at":"2026-11-08T09:01:00+08:00"}"#,
        r#"{"kind":"terminal_suspended","terminal_id":"T1","reason":"repair","at":"2026-11-09T09:01:00+08:00"}"#,
        r#"{"kind":"terminal_unbound","terminal_id":"T1","at":"2026-11-10T09:01:00+08:00"}"#,
        r#"{"kind":"merchant_closed","merchant_id":"M1","at":"2026-11-11T09:01:00+08:00"}"#,
    ];
    let feed = [
        r#"{"kind":"sale","txn_id":"M1-1","merchant_id":"M1","terminal_id":"T1","batch_no":"000012","stan":"000123","rrn":"633012345678","channel":"unionpay_card","channel_txn_id":"112405173000000000631","amount":"25.00","currency":"CNY","at":"2026-11-26T12:00:01+08:00","payer":"622848******1964","mcc":"5812"}"#,
        r#"{"kind":"void","txn_id":"M1-1-V","original_txn_id":"M1-1","merchant_id":"M1","terminal_id":"T1","batch_no":"000012","stan":"000124","channel":"unionpay_card","amount":"25.00","currency":"CNY","at":"2026-11-26T12:01:00+08:00"}"#,
        r#"{"kind":"refund","txn_id":"M1-1-R1","original_txn_id":"M1-1","merchant_id":"M1","terminal_id":"T1","batch_no":"000012","stan":"500125","channel":"unionpay_card","amount":"5.00","currency":"CNY","at":"2026-11-26T13:00:00+08:00"}"#,
        r#"{"kind":"reversal","txn_id":"M1-1-X","original_txn_id":"M1-1","merchant_id":"M1","terminal_id":"T1","batch_no":"000012","stan":"000126","channel":"unionpay_card","amount":"25.00","currency":"CNY","at":"2026-11-26T12:00:30+08:00"}"#,
        r#"{"kind":"batch_close","merchant_id":"M1","terminal_id":"T1","batch_no":"000012","debit_count":18,"debit_amount":"751.59","credit_count":1,"credit_amount":"5.00","at":"2026-11-26T23:59:59+08:00"}"#,
    ];
    let mut events: Vec<Event> = admin.iter().map(|l| parse_admin_line(1, l.as_bytes()).expect("admin")).collect();
    events.extend(feed.iter().map(|l| parse_feed_line(1, l.as_bytes()).expect("feed").into_event()));
    let date = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("date");
    let amount = |a: &str| a.parse::<rust_decimal::Decimal>().expect("amount");
    events.push(Event::MerchantSettled(ingest::event::MerchantSettled {
        merchant_id: "M1".into(),
        settlement_date: date("2026-11-27"),
        business_date: date("2026-11-26"),
        gross: amount("1000.00"),
        refunds: amount("20.00"),
        fees: amount("3.72"),
        net: amount("976.28"),
        currency: ingest::money::Currency::Cny,
    }));
    use ingest::statement::{LineKind, StatementChannel, StatementLine, Totals};
    let line = StatementLine {
        line: 2,
        kind: LineKind::Payment,
        txn_id: "M1-1".into(),
        original_txn_id: None,
        channel_txn_id: "4200020261124000000000000086".into(),
        amount: amount("15.14"),
        fee: amount("0.03785"),
        at: chrono::NaiveDateTime::parse_from_str("2026-11-24 00:28:45", "%Y-%m-%d %H:%M:%S").ok(),
        currency: ingest::money::Currency::Cny,
    };
    let totals = Totals {
        payments: 1,
        payment_amount: amount("15.14"),
        refunds: 0,
        refund_amount: amount("0"),
        fees: amount("0.03785"),
    };
    let digest = "d1d2".repeat(16);
    events.push(Event::StatementLines(ingest::event::StatementLines {
        channel: StatementChannel::Wechat,
        date: date("2026-11-24"),
        digest: digest.clone(),
        part: 0,
        lines: vec![line],
    }));
    events.push(Event::StatementImported(ingest::event::StatementImported {
        channel: StatementChannel::Wechat,
        date: date("2026-11-24"),
        file_name: "wechat-2026-11-24.csv".into(),
        digest: digest.clone(),
        import_no: 1,
        lines: 1,
        parts: 1,
        totals,
    }));
    events.push(Event::ReconciliationBreaks(ingest::event::ReconciliationBreaks {
        channel: StatementChannel::Wechat,
        date: date("2026-11-24"),
        classification_digest: "c1c2".repeat(16),
        part: 0,
        breaks: vec![ingest::event::ReconBreak {
            outcome: ingest::event::ReconOutcome::MissingInStatement,
            kind: LineKind::Payment,
            txn_id: "M1-2".into(),
            channel_txn_id: Some("42".into()),
            ledger_channel: Some(ingest::event::Channel::Wechat),
            line: None,
            our_amount: Some(amount("20.90")),
            expected_fee: Some(amount("0.05225")),
            their_amount: None,
            their_fee: None,
            item_date: Some(date("2026-11-24")),
            currency: ingest::money::Currency::Cny,
        }],
        run_no: 0,
    }));
    events.push(Event::ReconciliationCompleted(ingest::event::ReconciliationCompleted {
        channel: StatementChannel::Wechat,
        date: date("2026-11-24"),
        statement_digest: digest,
        counts: [("matched".to_owned(), 1u64), ("missing_in_statement".to_owned(), 1)].into(),
        matched: [(
            ingest::event::Channel::Wechat,
            ingest::event::ReconMatched {
                payments: 1,
                payment_amount: amount("15.14"),
                refunds: 0,
                refund_amount: amount("0.00"),
                fees: amount("0.03785"),
            },
        )]
        .into(),
        matched_by_currency: Default::default(),
        break_parts: 1,
        breaks: 1,
        classification_digest: "c1c2".repeat(16),
        run_no: 0,
    }));
    let totals = |dc, da: &str, cc, ca: &str| ingest::event::BatchTotals {
        debit_count: dc,
        debit_amount: amount(da),
        credit_count: cc,
        credit_amount: amount(ca),
    };
    events.push(Event::TerminalBatchReconciled(ingest::event::TerminalBatchReconciled {
        merchant_id: "M1".into(),
        terminal_id: "T1".into(),
        batch_no: "000012".into(),
        date: date("2026-11-26"),
        terminal: totals(18, "751.59", 1, "5.00"),
        host: totals(18, "741.59", 1, "5.00"),
        balanced: false,
        difference: amount("10.00"),
    }));
    events.push(Event::BreakResolved(ingest::event::BreakResolved {
        break_id: "0a1b2c3d4e5f".into(),
        statement: StatementChannel::Wechat,
        date: date("2026-11-24"),
        outcome: ingest::event::ReconOutcome::MissingInStatement,
        txn_id: "M1-2".into(),
        suspense_amount: amount("20.90"),
        currency: ingest::money::Currency::Cny,
        ledger_channel: Some(ingest::event::Channel::Wechat),
        action: ingest::event::ResolveAction::WriteOff,
        reason: "never settled by the channel".into(),
        by: "ops-1".into(),
        approved_by: None,
        approval_over: amount("1000.00"),
    }));
    events.push(Event::SettlementHeld(ingest::event::SettlementHeld {
        merchant_id: "M1".into(),
        settlement_date: date("2026-11-26"),
        business_date: date("2026-11-25"),
        net: amount("1234.56"),
        currency: ingest::money::Currency::Cny,
        reasons: vec![
            ingest::event::HoldReason {
                kind: ingest::event::HoldKind::UnbalancedBatch,
                reference: "T1/000012".into(),
                amount: amount("10.00"),
            },
            ingest::event::HoldReason {
                kind: ingest::event::HoldKind::OpenBreak,
                reference: "0a1b2c3d4e5f".into(),
                amount: amount("-1500.00"),
            },
        ],
    }));
    events.push(Event::LogAnchored(ingest::event::LogAnchored {
        head: 935,
        head_hash: "15d2c23e1cb65943af32fd6628ee54db8fe927ff269b062d5f4b31445acfb50f".into(),
        at: chrono::DateTime::parse_from_rfc3339("2026-11-26T08:30:00+08:00").expect("time"),
    }));
    events
}

/// The fixture line of an event: type, version, id, stream and payload.
fn line(e: &Event) -> String {
    let data = e.to_event_data();
    // The payload is kept as its exact bytes: field order and number formatting are part of
    // the stable form.
    let payload = String::from_utf8(data.payload).expect("utf-8 payload");
    serde_json::json!({
        "event_type": data.event_type,
        "schema_version": data.schema_version,
        "event_id": data.event_id.to_string(),
        "stream": e.stream(),
        "payload": payload,
    })
    .to_string()
}

#[test]
fn frozen_v1_events_still_decode_to_the_same_bytes() {
    let events = one_of_each();
    let expected: String = events.iter().map(|e| line(e) + "\n").collect();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(fixture(), &expected).expect("write golden");
    }
    let frozen = std::fs::read_to_string(fixture()).expect("frozen fixture");
    let mut types = std::collections::BTreeSet::new();
    for (i, l) in frozen.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).expect("fixture line");
        let event_type = v["event_type"].as_str().expect("type");
        let version = v["schema_version"].as_u64().expect("version") as u16;
        let payload = v["payload"].as_str().expect("payload bytes").as_bytes().to_vec();
        let event = Event::decode(event_type, version, &payload).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        // Encoding what was decoded gives back the frozen payload, id and stream.
        assert_eq!(line(&event), l, "line {} of the frozen fixture", i + 1);
        types.insert(event_type.to_owned());
    }
    assert_eq!(types.len(), 24, "every event type is frozen");
    assert_eq!(frozen, expected, "this build writes what the fixture froze");
}

//! Statements and reconciliation runs recorded through the application layer: imports in any
//! order record the same runs; runs clear the clearing accounts and book nothing more when
//! repeated; thousands of breaks are recorded in parts; re-imports keep the books and the
//! breaks' ids; resolutions follow the maker–checker rule.

use std::path::PathBuf;

use app::approvals::{Actor, Resolution};
use app::recon::ImportOutcome;
use app::{App, DataDir};
use chrono::NaiveDate;
use ingest::pipeline::InputKind;
use ingest::statement::StatementChannel;
use ingest::store::EventStore;
use ledger::recon::Outcome;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/day").join(name)
}

/// A data directory in `dir` holding the fixture's admin records and the given feed days.
async fn app_with(dir: &std::path::Path, days: &[&str]) -> App {
    let app = App::open(DataDir::new(dir), Box::new(|w| panic!("warning: {w}"))).expect("open");
    let feeds: Vec<String> = days.iter().map(|d| format!("feed-{d}.ndjson")).collect();
    let files =
        std::iter::once(("admin.ndjson", InputKind::Admin)).chain(feeds.iter().map(|f| (f.as_str(), InputKind::Feed)));
    for (name, kind) in files {
        let file = std::io::BufReader::new(std::fs::File::open(fixture(name)).expect("fixture"));
        let s = app.ingest_reader(file, kind, |_, _| {}).await.expect("ingest");
        assert_eq!(s.rejected, 0, "{name}: {:?}", s.first_rejections);
    }
    app
}

const SIX: [(StatementChannel, &str); 6] = [
    (StatementChannel::Wechat, "statements/wechat-2026-11-24.csv"),
    (StatementChannel::Alipay, "statements/alipay-2026-11-24.csv"),
    (StatementChannel::Unionpay, "statements/unionpay-2026-11-24.txt"),
    (StatementChannel::Wechat, "statements/wechat-2026-11-25.csv"),
    (StatementChannel::Alipay, "statements/alipay-2026-11-25.csv"),
    (StatementChannel::Unionpay, "statements/unionpay-2026-11-25.txt"),
];

const CHANNELS: [StatementChannel; 3] =
    [StatementChannel::Wechat, StatementChannel::Alipay, StatementChannel::Unionpay];

async fn import(
    app: &App,
    channel: StatementChannel,
    name: &str,
    bytes: &[u8],
    date: Option<NaiveDate>,
) -> ImportOutcome {
    app.import_statement(channel, name, bytes, date).await.expect("import")
}

/// Importing the statements in another order, then reconciling, records the same results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_of_imports_does_not_matter() {
    let mut digests = Vec::new();
    for order in [vec![0, 1, 2, 3, 4, 5], vec![5, 3, 1, 4, 0, 2]] {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_with(dir.path(), &["2026-11-24", "2026-11-25"]).await;
        for i in order {
            let (channel, name) = SIX[i];
            let bytes = std::fs::read(fixture(name)).expect("fixture");
            assert!(matches!(import(&app, channel, name, &bytes, None).await, ImportOutcome::Imported(_)));
        }
        let mut run = Vec::new();
        for date in ["2026-11-24", "2026-11-25"] {
            for channel in CHANNELS {
                let day = app.reconcile(date.parse().expect("date"), Some(channel)).await.expect("reconcile");
                run.push(day.reports[0].classification_digest.clone());
            }
        }
        digests.push(run);
    }
    assert_eq!(digests[0], digests[1]);
}

/// Reconciled days clear the clearing accounts: what is left in each is what the statements
/// have not settled yet (the carried items); a re-run books nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_clears_the_clearing_accounts() {
    use ingest::money::Currency;
    use ledger::entry::Account;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app_with(dir.path(), &["2026-11-24", "2026-11-25"]).await;
    for (channel, name) in SIX {
        let bytes = std::fs::read(fixture(name)).expect("fixture");
        import(&app, channel, name, &bytes, None).await;
    }
    let store = app.store().clone();
    let before = ledger::replay(&*store, u64::MAX).await.expect("books");
    let mut carried = std::collections::HashMap::new();
    for _ in 0..2 {
        for date in ["2026-11-24", "2026-11-25"] {
            for channel in CHANNELS {
                let day = app.reconcile(date.parse().expect("date"), Some(channel)).await.expect("run");
                // The report lists every carried item with our amount; the ledger channel is
                // recorded with the run.
                let (latest, _) = ledger::recon::recorded_breaks(&*store).await.expect("read");
                let recorded = &latest[&(channel, date.parse().expect("date"))].1;
                assert_eq!(recorded.len(), day.reports[0].breaks.len());
                for b in recorded.iter().filter(|b| b.outcome == Outcome::CarriedForward) {
                    carried.insert((b.ledger_channel, b.txn_id.clone()), b.our_amount.unwrap_or_default());
                }
            }
        }
    }
    let after = ledger::replay(&*store, u64::MAX).await.expect("books balance after reconciling");
    for channel in [
        ingest::event::Channel::Wechat,
        ingest::event::Channel::Alipay,
        ingest::event::Channel::UnionpayCard,
        ingest::event::Channel::UnionpayQr,
    ] {
        let left = after.balances().balance(&Account::clearing(channel), Currency::Cny, u64::MAX);
        let want: rust_decimal::Decimal =
            carried.iter().filter(|((c, _), _)| *c == Some(channel)).map(|(_, a)| *a).sum();
        assert_eq!(left, want, "{channel}: only the carried items stay in clearing");
        let was = before.balances().balance(&Account::clearing(channel), Currency::Cny, u64::MAX);
        assert!(was > left, "{channel} was cleared");
    }
    assert!(after.balances().balance(&Account::bank(), Currency::Cny, u64::MAX) > rust_decimal::Decimal::ZERO);
    // The second round of runs booked nothing: the same books as after the first, and a
    // third run of the last day books nothing either.
    let head = store.head();
    app.reconcile("2026-11-25".parse().expect("date"), None).await.expect("run");
    assert_eq!(store.head(), head, "a repeated run records nothing");
    let again = ledger::replay(&*store, u64::MAX).await.expect("books");
    assert_eq!((again.entries(), again.digest()), (after.entries(), after.digest()));
}

/// A run with thousands of breaks records them in parts (each under the store's payload
/// limit), books all of them, and reads them all back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_breaks_are_recorded_in_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app_with(dir.path(), &["2026-11-24"]).await;
    let mut csv = String::from("reference,amount,fee,date,status\n");
    for i in 0..2500 {
        csv.push_str(&format!("UNKNOWN-{i},10.00,0.03,2026-11-24,payment\n"));
    }
    let date: NaiveDate = "2026-11-24".parse().expect("date");
    import(&app, StatementChannel::Generic, "other.csv", csv.as_bytes(), Some(date)).await;
    let day = app.reconcile(date, Some(StatementChannel::Generic)).await.expect("reconcile");
    assert_eq!(day.reports[0].breaks.len(), 2500);
    let store = app.store().clone();
    let (latest, _) = ledger::recon::recorded_breaks(&*store).await.expect("read back");
    let (record, breaks) = &latest[&(StatementChannel::Generic, date)];
    assert_eq!((breaks.len(), record.break_parts), (2500, 3));
    let books = ledger::replay(&*store, u64::MAX).await.expect("books balance");
    let suspense = books.balances().balance(
        &ledger::entry::Account::parse("assets:suspense:generic").expect("account"),
        ingest::money::Currency::Cny,
        u64::MAX,
    );
    assert_eq!(suspense, rust_decimal::Decimal::new(-2_500_000, 2), "every unknown line waits in suspense");
}

/// Re-imports: a re-downloaded file (other bytes, same rows) is another run that books the
/// same, an earlier file imported again is in force again, a file whose lines moved keeps its
/// breaks' ids (and their resolutions), and a date that disagrees with the file is refused.
/// Resolutions: once only; over the threshold a proposal that the same person (in other case
/// or spacing) cannot approve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reimports_keep_the_books_and_the_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app_with(dir.path(), &["2026-11-24"]).await;
    let store = app.store().clone();
    let date: NaiveDate = "2026-11-24".parse().expect("date");
    let name = "statements/alipay-2026-11-24.csv";
    let original = std::fs::read(fixture(name)).expect("fixture");
    let text = encoding_rs::GBK.decode(&original).0.into_owned();
    let gbk = |t: &str| encoding_rs::GBK.encode(t).0.into_owned();
    let redownloaded =
        gbk(&text.replace("#导出时间：[2026年11月25日 09:12:00]", "#导出时间：[2026年11月25日 10:40:00]"));
    assert_ne!(redownloaded, original);
    let run = || async {
        app.reconcile(date, Some(StatementChannel::Alipay)).await.expect("reconcile");
        let (latest, _) = ledger::recon::recorded_breaks(&*store).await.expect("read");
        let books = ledger::replay(&*store, u64::MAX).await.expect("books");
        (latest[&(StatementChannel::Alipay, date)].1.clone(), books.digest())
    };
    import(&app, StatementChannel::Alipay, name, &original, None).await;
    let (breaks, books) = run().await;
    assert_eq!(breaks.len(), 6);
    let ImportOutcome::Imported(first) = import(&app, StatementChannel::Alipay, name, &redownloaded, None).await else {
        panic!("a new import");
    };
    assert_eq!(first.import_no, 2);
    let (again, books_again) = run().await;
    assert_eq!((again.len(), &books_again), (6, &books), "another run, the same books and breaks");
    // The first file again: in force again (a third import), same books.
    let ImportOutcome::Imported(back) = import(&app, StatementChannel::Alipay, name, &original, None).await else {
        panic!("in force again");
    };
    assert!(back.import_no == 3 && back.digest == ledger::recon::file_digest(&original));
    assert!(
        matches!(import(&app, StatementChannel::Alipay, name, &original, None).await, ImportOutcome::Again(_)),
        "the file in force: nothing changes"
    );
    assert_eq!(run().await.1, books);

    // Resolve a break, then import the file with its lines moved down by one: same break ids,
    // the resolution holds.
    let ids = ledger::recon::break_ids(StatementChannel::Alipay, date, &breaks);
    let (id, _) = ids.iter().zip(&breaks).find(|(_, b)| b.outcome == Outcome::MissingInStatement).expect("one");
    let resolved = app
        .resolve(id, ingest::event::ResolveAction::WriteOff, "never paid", &Actor::Person("ops-1".into()))
        .await
        .expect("ok");
    assert!(matches!(resolved, Resolution::Recorded(_)), "under the threshold: recorded at once");
    let moved = gbk(&text.replacen("#支付宝业务明细查询\r\n", "#支付宝业务明细查询\r\n\r\n", 1));
    import(&app, StatementChannel::Alipay, name, &moved, None).await;
    let (moved_breaks, _) = run().await;
    assert!(moved_breaks.iter().zip(&breaks).any(|(a, b)| a.line != b.line), "lines moved");
    assert_eq!(ledger::recon::break_ids(StatementChannel::Alipay, date, &moved_breaks), ids);
    let err = app
        .resolve(id, ingest::event::ResolveAction::Refund, "again", &Actor::Person("ops-2".into()))
        .await
        .expect_err("once");
    assert_eq!(err.code, "already_resolved", "{err}");

    let err = app
        .import_statement(StatementChannel::Alipay, name, &original, "2026-11-25".parse().ok())
        .await
        .expect_err("the file says 11-24");
    assert!(err.message.contains("not of 2026-11-25"), "{err}");
}

/// Over the threshold, a resolution waits for a second person: the same person in other case
/// or spacing cannot approve it, an approval naming something else is refused, another
/// person's approval records it with both names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_break_needs_a_second_person() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every break that parks anything is over a threshold of zero.
    let app = app_with(dir.path(), &["2026-11-24"]).await.with_approval_over(rust_decimal::Decimal::ZERO);
    let date: NaiveDate = "2026-11-24".parse().expect("date");
    let name = "statements/alipay-2026-11-24.csv";
    import(&app, StatementChannel::Alipay, name, &std::fs::read(fixture(name)).expect("fixture"), None).await;
    app.reconcile(date, Some(StatementChannel::Alipay)).await.expect("reconcile");
    let listed = app.breaks(true).await.expect("breaks");
    let big = listed.iter().find(|b| !b.suspense_amount.is_zero()).expect("one").id.clone();
    let action = ingest::event::ResolveAction::WriteOff;
    let err = app.approve(&big, action, "x", &Actor::Person("Ops-1".into())).await.expect_err("nothing proposed");
    assert_eq!(err.code, "no_proposal");
    let Resolution::Proposed { .. } =
        app.resolve(&big, action, "x", &Actor::Person("Ops-1".into())).await.expect("proposed")
    else {
        panic!("over the threshold");
    };
    let err = app.approve(&big, action, "x", &Actor::Person(" ops-1 ".into())).await.expect_err("the same person");
    assert_eq!(err.code, "same_approver");
    // A person cannot take a key's name.
    let err = app.approve(&big, action, "x", &Actor::Person("key:abc".into())).await.expect_err("not a key");
    assert_eq!(err.code, "invalid_field");
    let err = app.approve(&big, action, "y", &Actor::Person("ops-2".into())).await.expect_err("another reason");
    assert_eq!(err.code, "proposal_changed");
    let listed = app.breaks(true).await.expect("breaks");
    let waiting = listed.iter().find(|b| b.id == big).and_then(|b| b.awaiting_approval.clone()).expect("shown");
    assert_eq!(waiting.by, "Ops-1");
    let record = app.approve(&big, action, "x", &Actor::Person("ops-2".into())).await.expect("approved");
    assert_eq!((record.by.as_str(), record.approved_by.as_deref()), ("Ops-1", Some("ops-2")));
    assert!(app.breaks(true).await.expect("breaks").iter().all(|b| b.id != big), "no longer open");
    let err = app.approve(&big, action, "x", &Actor::Person("ops-3".into())).await.expect_err("spent");
    assert_eq!(err.code, "no_proposal");
}

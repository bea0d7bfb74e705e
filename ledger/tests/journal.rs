//! The journal export opened by ledger-cli and by beancount: every account's balance equals
//! ours, for the whole log and as of a business time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ledger::journal::{JournalFormat, beancount_account, write_journal, write_journal_to_time};
use rust_decimal::Decimal;

/// Whether a peer tool is there; on CI (which installs them in .ci/run) it must be.
fn present(what: &str, probe: &mut Command) -> bool {
    if probe.output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{what} is not installed on CI");
    eprintln!("skipped: {what} is not installed");
    false
}

/// `ledger bal` of a journal file: account → CNY balance, zeros left out.
fn ledger_bal(path: &Path) -> BTreeMap<String, Decimal> {
    let output = Command::new("ledger")
        .args(["-f", path.to_str().expect("utf8"), "bal", "--flat", "--no-total", "--empty"])
        .output()
        .expect("run ledger");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Lines like "   CNY 4875.06  assets:clearing:alipay".
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (commodity, amount, account) = (words.next()?, words.next()?, words.next()?);
            if commodity != "CNY" {
                return None;
            }
            Some((account.to_owned(), amount.replace(',', "").parse().ok()?))
        })
        .filter(|(_, b): &(String, Decimal)| !b.is_zero())
        .collect()
}

fn nonzero(rows: Vec<(ledger::entry::Account, ingest::money::Currency, Decimal)>) -> BTreeMap<String, Decimal> {
    rows.into_iter().filter(|(_, _, b)| !b.is_zero()).map(|(a, _, b)| (a.path().to_owned(), b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_cli_agrees_with_every_balance() {
    if !present("ledger-cli (apt-get install ledger)", Command::new("ledger").arg("--version")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::store_fixture(&dir.path().join("events"), &["2026-11-24", "2026-11-25"]).await;
    let path = dir.path().join("books.ledger");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("journal file"));
    let books = write_journal(&*store, u64::MAX, JournalFormat::Ledger, &mut out).await.expect("journal");
    drop(out);
    let ours = nonzero(books.balances().trial_balance(u64::MAX));
    assert!(ours.len() > 10, "{ours:?}");
    assert_eq!(ledger_bal(&path), ours, "ledger-cli's balances against posledger's");

    // As of the end of day one, by business time.
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-24T23:59:59+08:00").expect("time").timestamp_micros();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("journal file"));
    write_journal_to_time(&*store, t, JournalFormat::Ledger, &mut out).await.expect("journal");
    drop(out);
    let as_of = nonzero(books.trial_balance_at_time(t));
    assert!(!as_of.is_empty() && as_of != ours);
    assert_eq!(ledger_bal(&path), as_of, "ledger-cli's balances as of day one against posledger's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beancount_accepts_the_journal_and_agrees_with_every_balance() {
    if !present("beancount (pip install beancount)", Command::new("python3").args(["-c", "import beancount"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::store_fixture(&dir.path().join("events"), &["2026-11-24", "2026-11-25"]).await;
    let path = dir.path().join("books.beancount");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("journal file"));
    let books = write_journal(&*store, u64::MAX, JournalFormat::Beancount, &mut out).await.expect("journal");
    drop(out);
    // beancount's own loader: no errors, then the sum of every account's postings.
    let script = r#"
import sys
from collections import defaultdict
from decimal import Decimal
from beancount import loader
entries, errors, _ = loader.load_file(sys.argv[1])
for e in errors:
    print("ERROR", e.message, file=sys.stderr)
sums = defaultdict(Decimal)
for entry in entries:
    for p in getattr(entry, "postings", None) or []:
        sums[p.account] += p.units.number
for account, total in sorted(sums.items()):
    print(account, total)
sys.exit(1 if errors else 0)
"#;
    let output =
        Command::new("python3").args(["-c", script, path.to_str().expect("utf8")]).output().expect("run beancount");
    assert!(output.status.success(), "beancount refused the journal: {}", String::from_utf8_lossy(&output.stderr));
    let theirs: BTreeMap<String, Decimal> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (account, total) = line.split_once(' ')?;
            Some((account.to_owned(), total.parse().ok()?))
        })
        .filter(|(_, b): &(String, Decimal)| !b.is_zero())
        .collect();
    let ours: BTreeMap<String, Decimal> = books
        .balances()
        .trial_balance(u64::MAX)
        .into_iter()
        .filter(|(_, _, b)| !b.is_zero())
        .map(|(a, _, b)| (beancount_account(&a), b))
        .collect();
    assert!(ours.len() > 10, "{ours:?}");
    assert_eq!(theirs, ours, "beancount's balances against posledger's");
}

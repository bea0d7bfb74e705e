//! The journal export opened by ledger-cli: every account's balance equals ours.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use ledger::journal::{JournalFormat, write_journal};
use rust_decimal::Decimal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_cli_agrees_with_every_balance() {
    if Command::new("ledger").arg("--version").output().is_err() {
        // CI installs Debian's ledger (.ci/run); there the comparison must run.
        assert!(std::env::var_os("CI").is_none(), "ledger-cli is not installed on CI");
        eprintln!("skipped: ledger-cli is not installed (apt-get install ledger)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::store_fixture(&dir.path().join("events"), &["2026-11-24", "2026-11-25"]).await;
    let path = dir.path().join("books.ledger");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("journal file"));
    let books = write_journal(&*store, u64::MAX, JournalFormat::Ledger, &mut out).await.expect("journal");
    drop(out);
    let output = Command::new("ledger")
        .args(["-f", path.to_str().expect("utf8"), "bal", "--flat", "--no-total", "--empty"])
        .output()
        .expect("run ledger");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Lines like "   CNY 4875.06  assets:clearing:alipay".
    let theirs: BTreeMap<String, Decimal> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (commodity, amount, account) = (words.next()?, words.next()?, words.next()?);
            if commodity != "CNY" {
                return None;
            }
            Some((account.to_owned(), amount.replace(',', "").parse().ok()?))
        })
        .collect();
    let ours: BTreeMap<String, Decimal> = books
        .balances()
        .trial_balance(u64::MAX)
        .into_iter()
        .filter(|(_, _, b)| !b.is_zero())
        .map(|(a, _, b)| (a.path().to_owned(), b))
        .collect();
    let theirs: BTreeMap<String, Decimal> = theirs.into_iter().filter(|(_, b)| !b.is_zero()).collect();
    assert!(ours.len() > 10, "{ours:?}");
    assert_eq!(theirs, ours, "ledger-cli's balances against posledger's");
}

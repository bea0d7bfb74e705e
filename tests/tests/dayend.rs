//! `posledger day-end`: the whole end of a business day in one command, equal to the separate
//! commands; run again it records nothing and prints the same report; killed at any point and
//! run again it finishes the day with nothing twice; a bad statement directory records
//! nothing and names the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/day").join(name)
}

fn posledger(data: &Path, args: &[&str]) -> Output {
    Command::new(POSLEDGER).arg("--data-dir").arg(data).args(args).stdin(Stdio::null()).output().expect("run")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// A data directory with the fixture's admin records and both days' feeds, and the two days'
/// statement directories.
fn setup(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = root.join("data");
    let s = |f: &str| fixture(f).display().to_string();
    assert_eq!(posledger(&data, &["merchants", "import", &s("admin.ndjson")]).status.code(), Some(0));
    for day in ["2026-11-24", "2026-11-25"] {
        assert_eq!(posledger(&data, &["ingest", &s(&format!("feed-{day}.ndjson"))]).status.code(), Some(0));
    }
    let mut dirs = Vec::new();
    for day in ["2026-11-24", "2026-11-25"] {
        let dir = root.join(format!("statements-{day}"));
        std::fs::create_dir_all(&dir).expect("dir");
        for (channel, ext) in [("wechat", "csv"), ("alipay", "csv"), ("unionpay", "txt")] {
            let name = format!("{channel}-{day}.{ext}");
            std::fs::copy(fixture(&format!("statements/{name}")), dir.join(&name)).expect("copy");
        }
        dirs.push(dir);
    }
    (data, dirs[0].clone(), dirs[1].clone())
}

fn day_end(data: &Path, date: &str, statements: &Path) -> Output {
    posledger(data, &["day-end", "--date", date, "--statements", &statements.display().to_string(), "--format", "json"])
}

fn head(data: &Path) -> u64 {
    json(&posledger(data, &["verify", "--format", "json"]))["events"].as_u64().expect("events")
}

/// The answer key's amounts for `date` (worked out by `tests/fixtures/day/answer_amounts.py`
/// from the fixture files, not by posledger) against a day-end's report: every clearing
/// account's balance at the end of the day, each merchant's business of the day, and every
/// settlement due that day, paid or held.
fn assert_amounts_of_the_day(answer: &serde_json::Value, date: &str, report: &serde_json::Value) {
    let rows = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    let clearing: Vec<_> = rows(&report["report"]["reports"])
        .iter()
        .flat_map(|r| rows(&r["clearing"]))
        .map(|c| (c["account"].clone(), c["currency"].clone(), c["closing"].clone()))
        .collect();
    for want in rows(&answer["clearing"]).iter().filter(|c| c["date"] == date) {
        let want = (want["account"].clone(), want["currency"].clone(), want["closing"].clone());
        assert!(
            clearing.contains(&want),
            "{date}: clearing {want:?} at the end of the day; the report has {clearing:?}"
        );
    }
    let fields = ["merchant_id", "currency", "gross", "refunds", "fees", "net"];
    let pick = |v: &serde_json::Value, fields: &[&str]| fields.iter().map(|f| v[*f].clone()).collect::<Vec<_>>();
    let business: Vec<_> = rows(&report["report"]["settlement"]).iter().map(|m| pick(m, &fields)).collect();
    let want: Vec<_> =
        rows(&answer["merchant_days"]).iter().filter(|m| m["date"] == date).map(|m| pick(m, &fields)).collect();
    assert_eq!(business, want, "{date}: the merchants' business of the day");
    // Paid in full, or held with what it would have been paid.
    let mut settled: Vec<_> = rows(&report["settlement"]["paid"])
        .iter()
        .map(|p| pick(&p["settled"], &["merchant_id", "business_date", "currency", "net"]))
        .chain(
            rows(&report["settlement"]["held"])
                .iter()
                .map(|h| pick(&h["held"], &["merchant_id", "business_date", "currency", "net"])),
        )
        .collect();
    settled.sort_by_key(|r| r[0].as_str().map(str::to_owned));
    let due: Vec<_> = rows(&answer["settlements"])
        .iter()
        .filter(|s| s["settlement_date"] == date)
        .map(|s| pick(s, &["merchant_id", "business_date", "currency", "net"]))
        .collect();
    assert_eq!(settled, due, "{date}: the settlements due");
    for p in rows(&report["settlement"]["paid"]) {
        let want = rows(&answer["settlements"])
            .into_iter()
            .find(|s| s["settlement_date"] == date && s["merchant_id"] == p["settled"]["merchant_id"])
            .expect("due");
        assert_eq!(pick(&p["settled"], &fields), pick(&want, &fields), "{date}: paid");
    }
}

/// The day-end of both fixture days gives what the separate commands give: the same
/// reconciliation report, the same settlements, the same books; its breaks are the answer key's,
/// and so are its amounts: what each break parks in suspense, the clearing balances at the end
/// of each day, the merchants' business and the settlements.
#[test]
fn the_day_end_equals_the_separate_commands() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, s24, s25) = setup(&root.path().join("one"));
    let (separate, _, _) = setup(&root.path().join("separate"));
    let answer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("answer.json")).expect("answer")).expect("json");
    for (date, dir) in [("2026-11-24", &s24), ("2026-11-25", &s25)] {
        let out = day_end(&data, date, dir);
        assert_eq!(out.status.code(), Some(1), "breaks: exit 1; {}", String::from_utf8_lossy(&out.stderr));
        let report = json(&out);
        // The separate commands, in the order finance runs them.
        for (channel, ext) in [("wechat", "csv"), ("alipay", "csv"), ("unionpay", "txt")] {
            // Named as the day-end names them: by the file's own name.
            let out = Command::new(POSLEDGER)
                .current_dir(dir)
                .arg("--data-dir")
                .arg(&separate)
                .args(["statement", "import", "--channel", channel, &format!("{channel}-{date}.{ext}")])
                .output()
                .expect("import");
            assert_eq!(out.status.code(), Some(0));
        }
        let reconciled = json(&posledger(&separate, &["reconcile", "--date", date, "--format", "json"]));
        let settle = posledger(&separate, &["settle", "--date", date]);
        assert!(settle.status.code().is_some_and(|c| c < 2));
        let settled = json(&posledger(&separate, &["settlements", "--date", date, "--format", "json"]));
        if report["report"] != reconciled {
            let (a, b) = (root.path().join("day-end.json"), root.path().join("reconcile.json"));
            std::fs::write(&a, serde_json::to_string_pretty(&report["report"]).expect("json")).expect("write");
            std::fs::write(&b, serde_json::to_string_pretty(&reconciled).expect("json")).expect("write");
            let diff = Command::new("diff").arg(&a).arg(&b).output().expect("diff");
            panic!("{date}: the reconciliation differs:\n{}", String::from_utf8_lossy(&diff.stdout));
        }
        assert_eq!(
            (
                report["settlement"]["paid"].as_array().map(Vec::len),
                report["settlement"]["held"].as_array().map(Vec::len)
            ),
            (settled["settled"].as_array().map(Vec::len), settled["held"].as_array().map(Vec::len)),
            "{date}: the settlements"
        );
        let breaks = report["report"]["reports"]
            .as_array()
            .expect("reports")
            .iter()
            .flat_map(|r| r["breaks"].as_array().cloned().unwrap_or_default())
            .filter(|b| b["outcome"] != "carried_forward")
            .count();
        let want = answer["breaks"].as_array().expect("breaks").iter().filter(|b| b["date"] == date).count();
        assert_eq!(breaks, want, "{date}: the answer key's breaks");
        assert_amounts_of_the_day(&answer, date, &report);
        assert_eq!(report["verify"]["error"], serde_json::Value::Null);
        assert_eq!(report["verify"]["trial_balance_zero"], true);
    }
    // 11-25 settles 11-24's business; M000007's batch closed unbalanced on 11-25 holds it.
    let last = json(&day_end(&data, "2026-11-25", &s25));
    let held = last["settlement"]["held"].as_array().expect("held");
    assert_eq!((held.len(), held[0]["held"]["merchant_id"].as_str()), (1, Some("M000007")));
    // The same books either way.
    let tb = |d: &Path| json(&posledger(d, &["trial-balance", "--format", "json"]))["balances"].clone();
    assert_eq!(tb(&data), tb(&separate));
    // What every break parks, and each suspense account: the sum of its statement's runs.
    let listed = json(&posledger(&data, &["breaks", "--format", "json"]))["breaks"].clone();
    let key = |b: &serde_json::Value| {
        ["statement", "date", "outcome", "txn_id", "channel_txn_id"].map(|f| b[f].as_str().unwrap_or("").to_owned())
    };
    let parked: std::collections::BTreeMap<_, _> = listed
        .as_array()
        .expect("breaks")
        .iter()
        .filter(|b| b["outcome"] != "carried_forward")
        .map(|b| (key(b), b["suspense_amount"].clone()))
        .collect();
    let want: std::collections::BTreeMap<_, _> =
        answer["breaks"].as_array().expect("breaks").iter().map(|b| (key(b), b["parked"].clone())).collect();
    assert_eq!(parked, want, "what each break parks");
    let mut suspense = std::collections::BTreeMap::<String, rust_decimal::Decimal>::new();
    for (run, amount) in answer["suspense"].as_object().expect("suspense") {
        let statement = run.split(':').next().expect("statement");
        *suspense.entry(format!("assets:suspense:{statement}")).or_default() +=
            amount.as_str().and_then(|a| a.parse::<rust_decimal::Decimal>().ok()).expect("amount");
    }
    let books: std::collections::BTreeMap<_, _> = tb(&data)
        .as_array()
        .expect("balances")
        .iter()
        .filter(|r| r["account"].as_str().is_some_and(|a| a.starts_with("assets:suspense:")))
        .map(|r| {
            assert_eq!(r["currency"], "CNY");
            let balance = r["balance"].as_str().and_then(|a| a.parse::<rust_decimal::Decimal>().ok());
            (r["account"].as_str().expect("account").to_owned(), balance.expect("balance"))
        })
        .collect();
    assert_eq!(books, suspense, "suspense balances");
}

/// Run again with the same statements, a day-end records nothing and prints the same report.
#[test]
fn a_day_end_run_again_records_nothing_and_says_the_same() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, s24, _) = setup(root.path());
    let first = day_end(&data, "2026-11-24", &s24);
    let events = head(&data);
    let again = day_end(&data, "2026-11-24", &s24);
    assert_eq!(head(&data), events, "nothing recorded twice");
    assert_eq!((again.status.code(), again.stdout), (first.status.code(), first.stdout));
    // The table too.
    let table =
        |d: &Path| posledger(d, &["day-end", "--date", "2026-11-24", "--statements", &s24.display().to_string()]);
    assert_eq!(table(&data).stdout, table(&data).stdout);
}

/// Two merchants with one txn_id: M000001's terminal takes M000003's next txn_id first, then
/// M000003 makes a large sale with it that the statement lacks. The break over the approval
/// threshold holds M000003, whose payment it is, not the merchant that used the txn_id first.
#[test]
fn a_break_holds_the_merchant_whose_payment_it_is() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, s24, s25) = setup(root.path());
    let sale = |merchant: &str, terminal: &str, amount: &str, channel_txn: &str| {
        format!(
            r#"{{"kind":"sale","txn_id":"M000003-20261124-999999","merchant_id":"{merchant}","terminal_id":"{terminal}","batch_no":"000777","stan":"000001","channel":"wechat","channel_txn_id":"{channel_txn}","amount":"{amount}","currency":"CNY","at":"2026-11-24T12:00:00+08:00","payer":"oX","mcc":"5812"}}"#
        )
    };
    let feed = root.path().join("extra.ndjson");
    let lines = [
        sale("M000001", "T0000100", "1.00", "4200020261124999999999000001"),
        sale("M000003", "T0000300", "5000.00", "4200020261124999999999000003"),
    ];
    std::fs::write(&feed, lines.join("\n")).expect("feed");
    let out = posledger(&data, &["ingest", &feed.display().to_string(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out)["accepted"], 2);
    // Breaks found: exit 1.
    assert_eq!(day_end(&data, "2026-11-24", &s24).status.code(), Some(1));
    let last = json(&day_end(&data, "2026-11-25", &s25));
    let mut held: Vec<&str> = last["settlement"]["held"]
        .as_array()
        .expect("held")
        .iter()
        .filter_map(|h| h["held"]["merchant_id"].as_str())
        .collect();
    held.sort();
    assert_eq!(held, vec!["M000003", "M000007"]);
}

/// Killed with `kill -9` at several points and run again, the day-end finishes the day: the
/// same report and the same log as a day-end that was never interrupted.
#[test]
fn a_killed_day_end_run_again_finishes_the_day_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let (clean, s24, _) = setup(&root.path().join("clean"));
    let want = json(&day_end(&clean, "2026-11-24", &s24));
    let want_events = head(&clean);
    for delay_ms in [5u64, 40, 120, 250, 500] {
        let (data, s24, _) = setup(&root.path().join(format!("killed-{delay_ms}")));
        let mut child = Command::new(POSLEDGER)
            .arg("--data-dir")
            .arg(&data)
            .args(["day-end", "--date", "2026-11-24", "--statements", &s24.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let finished = json(&day_end(&data, "2026-11-24", &s24));
        // The export's directory is the data directory's own, and the hash chain links the
        // commits as they were made (a killed run made others); everything else is the same.
        let strip = |mut v: serde_json::Value| {
            v["export"]["dir"] = serde_json::Value::Null;
            v["verify"]["head_hash"] = serde_json::Value::Null;
            v
        };
        assert!(strip(finished) == strip(want.clone()), "killed after {delay_ms} ms: another report");
        assert_eq!(head(&data), want_events, "killed after {delay_ms} ms: nothing twice");
        let tb = |d: &Path| json(&posledger(d, &["trial-balance", "--format", "json"]))["balances"].clone();
        assert!(tb(&data) == tb(&clean), "killed after {delay_ms} ms: other books");
    }
}

/// A statement directory with an unknown file, a truncated file, or a file of another day than
/// its name: the day-end fails (exit 2) naming the file, and records nothing.
#[test]
fn a_bad_statement_directory_records_nothing_and_names_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, s24, _) = setup(root.path());
    let events = head(&data);
    let case = |name: &str, make: &dyn Fn(&Path)| {
        let dir = root.path().join(format!("bad-{name}"));
        std::fs::create_dir_all(&dir).expect("dir");
        for entry in std::fs::read_dir(&s24).expect("dir").flatten() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
        }
        make(&dir);
        let out = day_end(&data, "2026-11-24", &dir);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(head(&data), events, "{name}: nothing recorded");
        stderr
    };
    let unknown = case("unknown", &|d| std::fs::write(d.join("notes.txt"), "hello\n").expect("write"));
    assert!(unknown.contains("notes.txt") && unknown.contains("not a statement"), "{unknown}");
    let truncated = case("truncated", &|d| {
        let path = d.join("wechat-2026-11-24.csv");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    });
    assert!(truncated.contains("wechat-2026-11-24.csv"), "{truncated}");
    let other_day = case("other-day", &|d| {
        // The 25th's UnionPay records under the 24th's name.
        std::fs::copy(fixture("statements/unionpay-2026-11-25.txt"), d.join("unionpay-2026-11-24.txt")).expect("copy");
    });
    assert!(other_day.contains("unionpay-2026-11-24.txt") && other_day.contains("2026-11-25"), "{other_day}");
}

/// A day with no statement (the files not there yet): the terminal batches are still
/// reconciled, the day settled, exported and verified.
#[test]
fn a_day_without_statements_still_gets_its_batch_verdicts() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, _, _) = setup(root.path());
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let out = day_end(&data, "2026-11-25", &empty);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    assert_eq!(report["statements"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["report"]["batches"]["unbalanced"][0]["terminal_id"], "T0000700");
    assert_eq!(report["verify"]["head"].as_u64(), Some(head(&data)));
}

/// What finance reads after the day-end: the CSV report holds the breaks, the unbalanced
/// batches and the merchants' business; breaks filter by date and channel; expected fees are
/// shown at the statement's precision; clearing balances name their currency.
#[test]
fn the_report_reads_as_finance_needs() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, s24, s25) = setup(root.path());
    day_end(&data, "2026-11-24", &s24);
    day_end(&data, "2026-11-25", &s25);
    let csv = String::from_utf8(posledger(&data, &["reconcile", "--date", "2026-11-24", "--format", "csv"]).stdout)
        .expect("utf-8");
    let records: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap_or_default()).collect();
    assert_eq!(records.iter().filter(|r| **r == "unbalanced_batch").count(), 1, "{csv}");
    assert_eq!(records.iter().filter(|r| **r == "merchant").count(), 8, "{csv}");
    assert!(records.iter().filter(|r| **r == "break").count() >= 17, "{csv}");
    let answer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("answer.json")).expect("answer")).expect("json");
    let listed = json(&posledger(
        &data,
        &["breaks", "--date", "2026-11-25", "--channel", "alipay", "--format", "json"],
    ))["breaks"]
        .as_array()
        .cloned()
        .expect("breaks");
    let want = answer["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .filter(|b| b["date"] == "2026-11-25" && b["statement"] == "alipay")
        .count();
    assert_eq!(listed.len(), want);
    assert!(listed.iter().all(|b| b["date"] == "2026-11-25" && b["statement"] == "alipay"));
    let report = json(&posledger(&data, &["reconcile", "--date", "2026-11-24", "--format", "json"]));
    for r in report["reports"].as_array().expect("reports") {
        let places = if r["statement"] == "wechat" { 5 } else { 2 };
        for b in r["breaks"].as_array().expect("breaks") {
            if let Some(fee) = b["expected_fee"].as_str() {
                let shown = fee.split_once('.').map_or(0, |(_, f)| f.len());
                assert!(shown <= places, "{}: expected fee {fee} beside fees of {places} places", r["statement"]);
            }
        }
        assert!(r["clearing"].as_array().expect("clearing").iter().all(|c| c["currency"] == "CNY"));
    }
}

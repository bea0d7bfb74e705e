//! The `posledger` command line end to end: imports, summaries, exit codes, verify.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/day").join(name)
}

fn posledger(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(POSLEDGER);
    cmd.arg("--data-dir").arg(data).args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn posledger");
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn the_fixture_day_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let admin = posledger(
        data,
        &["merchants", "import", fixture("admin.ndjson").to_str().expect("utf8"), "--format", "json"],
        None,
    );
    assert_eq!(admin.status.code(), Some(0));
    assert_eq!(json(&admin)["accepted"], 62);
    let feed = fixture("feed-2026-11-24.ndjson");
    let first = posledger(data, &["ingest", feed.to_str().expect("utf8"), "--format", "json"], None);
    assert_eq!((first.status.code(), json(&first)["accepted"].clone()), (Some(0), 429.into()));
    // Standard input works the same; the second day is new, the first is all duplicates.
    let day2 = std::fs::read_to_string(fixture("feed-2026-11-25.ndjson")).expect("fixture");
    let second = posledger(data, &["ingest", "-", "--format", "json"], Some(&day2));
    assert_eq!(json(&second)["accepted"], 444);
    let again = posledger(data, &["ingest", feed.to_str().expect("utf8"), "--format", "json"], None);
    assert_eq!((json(&again)["duplicates"].clone(), json(&again)["accepted"].clone()), (429.into(), 0.into()));

    // A rejected record: exit 1, the line, field and reason in the table.
    let bad = r#"{"kind":"sale","txn_id":"X1","merchant_id":"M000001","terminal_id":"T0000100","batch_no":"739945","stan":"000001","channel":"wechat","channel_txn_id":"42","amount":"1.001","currency":"CNY","at":"2026-11-25T10:00:00+08:00","mcc":"5812"}"#;
    let out = posledger(data, &["ingest", "-"], Some(&format!("\n{bad}\n")));
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("line 2") && table.contains("field `amount`") && table.contains("decimal places"),
        "{table}"
    );

    // A merchant the books still owe cannot close (its terminals unbound first).
    let close = ["T0000800", "T0000801", "T0000802"]
        .iter()
        .map(|t| format!(r#"{{"kind":"terminal_unbound","terminal_id":"{t}","at":"2026-11-26T09:00:00+08:00"}}"#))
        .chain([r#"{"kind":"merchant_closed","merchant_id":"M000008","at":"2026-11-26T10:00:00+08:00"}"#.to_owned()])
        .collect::<Vec<_>>()
        .join("\n");
    let out = posledger(data, &["merchants", "import", "-", "--format", "json"], Some(&close));
    assert_eq!(out.status.code(), Some(1));
    let summary = json(&out);
    assert_eq!((summary["accepted"].clone(), summary["rejected"].clone()), (3.into(), 1.into()));
    assert_eq!(summary["first_rejections"][0]["code"], "merchant_payable_not_zero");

    // The books: the trial balance sums to zero, one account's balance agrees with it, and
    // an earlier position gives an earlier balance.
    let tb = json(&posledger(data, &["trial-balance", "--format", "json"], None));
    let rows = tb["balances"].as_array().expect("balances");
    let sum: rust_decimal::Decimal = rows
        .iter()
        .map(|r| r["balance"].as_str().expect("balance").parse::<rust_decimal::Decimal>().expect("decimal"))
        .sum();
    assert!(sum.is_zero(), "trial balance sums to {sum}");
    let payable = "liabilities:merchant:M000001:payable";
    let row = rows.iter().find(|r| r["account"] == payable).expect("payable listed");
    let one = json(&posledger(data, &["balance", payable, "--format", "json"], None));
    assert_eq!(one["balances"][0]["balance"], row["balance"]);
    let early = json(&posledger(data, &["balance", payable, "--as-of", "100", "--format", "json"], None));
    assert_ne!(early["balances"][0]["balance"], row["balance"]);
    let csv = posledger(data, &["trial-balance", "--format", "csv"], None);
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("account,currency,balance\n"));

    // Replays: to the end of day one by position and by business time give the same books;
    // the whole log gives others.
    let digest =
        |until: &str| json(&posledger(data, &["replay", "--until", until, "--format", "json"], None))["digest"].clone();
    let day_one = (62 + 429).to_string();
    assert_eq!(digest(&day_one), digest("2026-11-24T23:59:59+08:00"));
    assert_ne!(digest(&day_one), digest("2026-11-25T23:59:59+08:00"));
    assert_eq!(posledger(data, &["replay", "--until", "yesterday"], None).status.code(), Some(2));
    // The trial balance as of a business time, answered from the books without a replay,
    // equals the replay to that time.
    let end_of_day_one = "2026-11-24T23:59:59+08:00";
    let as_of = json(&posledger(data, &["trial-balance", "--as-of", end_of_day_one, "--format", "json"], None));
    let replayed = json(&posledger(data, &["replay", "--until", end_of_day_one, "--format", "json"], None));
    assert_eq!(as_of["balances"], replayed["balances"]);
    assert_eq!(as_of["as_of_time"], "2026-11-24T23:59:59+08:00");
    let one = json(&posledger(data, &["balance", payable, "--as-of", end_of_day_one, "--format", "json"], None));
    let row = replayed["balances"].as_array().expect("rows").iter().find(|r| r["account"] == payable).expect("row");
    assert_eq!(one["balances"][0]["balance"], row["balance"]);

    // History, a page at a time: the pages join up, and the last balance is the balance.
    let page = |from: &str| {
        json(&posledger(data, &["history", payable, "--from", from, "--limit", "3", "--format", "json"], None))
    };
    let (mut from, mut seen, mut last) = ("0".to_owned(), Vec::new(), serde_json::Value::Null);
    loop {
        let p = page(&from);
        for posting in p["postings"].as_array().expect("postings") {
            seen.push(posting["position"].as_u64().expect("position"));
            last = posting["balance"].clone();
            assert!(posting["event_type"].as_str().is_some_and(|t| t.starts_with("Payment")), "{posting}");
        }
        match p["next"].as_u64() {
            Some(n) => from = n.to_string(),
            None => break,
        }
    }
    assert!(seen.len() > 3 && seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let now = json(&posledger(data, &["balance", payable, "--format", "json"], None));
    assert_eq!(now["balances"][0]["balance"], last);
    let too_many = posledger(data, &["history", payable, "--limit", "1000000"], None);
    assert_eq!(too_many.status.code(), Some(2));

    // Settlement: 11-25 pays the 11-24 business day (T+1) once; the payout leaves the payables.
    // M000007's terminal T0000700 closed an unbalanced batch on 11-25: it is held (exit 1).
    let settled = posledger(data, &["settle", "--date", "2026-11-25", "--format", "json"], None);
    assert_eq!(settled.status.code(), Some(1), "a merchant held");
    let first = json(&settled);
    let rows = first["settled"].as_array().expect("settled");
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r["business_date"] == "2026-11-24"));
    let held = first["held"].as_array().expect("held");
    assert_eq!((held.len(), held[0]["merchant_id"].as_str()), (1, Some("M000007")));
    assert_eq!(held[0]["reasons"][0]["reference"], "T0000700/739945");
    let again = json(&posledger(data, &["settle", "--date", "2026-11-25", "--format", "json"], None));
    assert_eq!(again["settled"].as_array().map(Vec::len), Some(0), "settling twice settles nothing twice");
    let listed = json(&posledger(data, &["settlements", "--date", "2026-11-25", "--format", "json"], None));
    assert_eq!(
        (listed["settled"].as_array().map(Vec::len), listed["held"].as_array().map(Vec::len)),
        (Some(7), Some(1))
    );
    // The hold is over on the next date: 11-26 pays M000007 everything unpaid (11-24 and 11-25).
    let next = json(&posledger(data, &["settle", "--date", "2026-11-26", "--format", "json"], None));
    let m7 = next["settled"].as_array().expect("settled").iter().find(|r| r["merchant_id"] == "M000007").cloned();
    assert_eq!(m7.map(|r| r["business_date"].clone()), Some("2026-11-25".into()));
    let tb = json(&posledger(data, &["trial-balance", "--format", "json"], None));
    let bank = tb["balances"].as_array().expect("rows").iter().find(|r| r["account"] == "assets:bank:settlement");
    let paid: rust_decimal::Decimal = rows
        .iter()
        .chain(next["settled"].as_array().expect("settled"))
        .map(|r| r["net"].as_str().expect("net").parse::<rust_decimal::Decimal>().expect("decimal"))
        .sum();
    assert_eq!(
        bank.map(|b| b["balance"].as_str().expect("balance").parse::<rust_decimal::Decimal>().expect("d")),
        Some(-paid)
    );

    // verify: every event, a head hash, the books rebuilt and equal to the checkpoint.
    let verify = posledger(data, &["verify", "--format", "json"], None);
    assert_eq!(verify.status.code(), Some(0));
    let report = json(&verify);
    let settlements = 7 + 1 + 8;
    assert_eq!(
        report["events"],
        62 + 429 + 444 + 3 + settlements,
        "the feeds, three unbindings, settlements and a hold"
    );
    assert_eq!(report["head_hash"].as_str().map(str::len), Some(64));
    let checkpoint = &report["books"]["checkpoint"];
    assert_eq!(
        (checkpoint["matches_rebuild"].clone(), checkpoint["resumed_matches_rebuild"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(report["books"]["digest"], digest(&(62 + 429 + 444 + 3 + settlements).to_string()));

    // Balances now are answered from the checkpoint's summary alone, without loading the
    // books: with the checkpoint's log damaged they still come, with no warning. A balance as
    // of a position loads the books, finds the damage and rebuilds them from the event log.
    let log = data.join("ledger.ckpt.0.log");
    let mut bytes = std::fs::read(&log).expect("checkpoint log");
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&log, &bytes).expect("damage");
    let now = posledger(data, &["trial-balance", "--format", "json"], None);
    assert!(now.stderr.is_empty(), "{}", String::from_utf8_lossy(&now.stderr));
    assert_eq!(json(&now)["balances"], tb["balances"]);
    let head = report["events"].to_string();
    let at = posledger(data, &["trial-balance", "--as-of", &head, "--format", "json"], None);
    assert!(String::from_utf8_lossy(&at.stderr).contains("rebuilt from position 0"));
    assert_eq!(json(&at)["balances"], tb["balances"]);

    // A damaged ledger checkpoint: the books are rebuilt from the log (with a warning) and
    // give the same answer; verify says what is wrong and exits 1.
    let path = data.join("ledger.ckpt");
    let mut bytes = std::fs::read(&path).expect("checkpoint");
    bytes[100] ^= 1;
    std::fs::write(&path, &bytes).expect("damage");
    let verify = posledger(data, &["verify", "--format", "json"], None);
    assert_eq!(verify.status.code(), Some(1));
    assert!(json(&verify)["books"]["checkpoint"]["refused"].as_str().is_some_and(|r| r.contains("damaged")));
    let out = posledger(data, &["trial-balance", "--format", "json"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilt from position 0"));
    assert_eq!(json(&out)["balances"], tb["balances"]);
    assert_eq!(posledger(data, &["verify"], None).status.code(), Some(0), "a new checkpoint was written");
}

/// A checkpoint that cannot be written is a warning: the records are stored and counted.
#[test]
fn an_unwritable_checkpoint_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    std::fs::create_dir_all(data.join("writemodel.json")).expect("a directory where the file goes");
    let out = posledger(
        data,
        &["merchants", "import", fixture("admin.ndjson").to_str().expect("utf8"), "--format", "json"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)["accepted"], 62);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
}

/// Verify on a directory with no log, and a damaged log, fail with their own exit codes.
#[test]
fn verify_reports_damage_with_exit_code_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    assert_eq!(posledger(data, &["verify"], None).status.code(), Some(2), "no log at all");
    posledger(data, &["merchants", "import", fixture("admin.ndjson").to_str().expect("utf8")], None);
    let seg = data.join("events/seg-000000.log");
    let mut bytes = std::fs::read(&seg).expect("segment");
    bytes[200] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("damage");
    let out = posledger(data, &["verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Statements through the CLI: imported once (again changes nothing), refused whole when
/// damaged, and reconciled into the end-of-day report — the same report when run again.
#[test]
fn statements_import_and_reconcile_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let path = |f: &str| fixture(f).to_str().expect("utf8").to_owned();
    assert_eq!(posledger(data, &["merchants", "import", &path("admin.ndjson")], None).status.code(), Some(0));
    for day in ["2026-11-24", "2026-11-25"] {
        let out = posledger(data, &["ingest", &path(&format!("feed-{day}.ndjson"))], None);
        assert_eq!(out.status.code(), Some(0));
    }
    let statements = [
        ("wechat", "statements/wechat-2026-11-24.csv"),
        ("alipay", "statements/alipay-2026-11-24.csv"),
        ("unionpay", "statements/unionpay-2026-11-24.txt"),
        ("wechat", "statements/wechat-2026-11-25.csv"),
        ("alipay", "statements/alipay-2026-11-25.csv"),
        ("unionpay", "statements/unionpay-2026-11-25.txt"),
    ];
    for (channel, file) in statements {
        let out =
            posledger(data, &["statement", "import", "--channel", channel, &path(file), "--format", "json"], None);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(json(&out)["imported"], true);
    }
    let again = posledger(
        data,
        &["statement", "import", "--channel", "wechat", &path("statements/wechat-2026-11-24.csv"), "--format", "json"],
        None,
    );
    assert_eq!((json(&again)["again"].clone(), json(&again)["imported"].clone()), (true.into(), false.into()));
    // A damaged file: refused with its line and field, nothing recorded.
    let bad = dir.path().join("wechat-2026-11-26.csv");
    let text = std::fs::read_to_string(fixture("statements/wechat-2026-11-24.csv")).expect("fixture");
    std::fs::write(&bad, text.replacen("`59.05,", "`59.x5,", 1)).expect("write");
    let out = posledger(
        data,
        &["statement", "import", "--channel", "wechat", bad.to_str().expect("utf8"), "--format", "json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let refusal = json(&out);
    assert_eq!((refusal["line"].clone(), refusal["field"].clone()), (3.into(), "应结订单金额".into()));
    assert_eq!(
        posledger(data, &["reconcile", "--date", "2026-11-26"], None).status.code(),
        Some(2),
        "nothing imported for 11-26"
    );

    let answer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("answer.json")).expect("answer")).expect("json");
    for day in ["2026-11-24", "2026-11-25"] {
        let run = || posledger(data, &["reconcile", "--date", day, "--format", "json"], None);
        let first = run();
        assert_eq!(first.status.code(), Some(1), "breaks: exit 1; {}", String::from_utf8_lossy(&first.stderr));
        let report = json(&first);
        assert_eq!(report, json(&run()), "a re-run gives the identical report");
        assert!(report["settlement"].as_array().is_some_and(|s| s.len() == 8), "every merchant's business of the day");
        for r in report["reports"].as_array().expect("reports") {
            let key = format!("{}:{day}", r["statement"].as_str().expect("statement"));
            assert_eq!(r["counts"]["matched"], answer["matched"][&key], "{key}");
            let want = answer["breaks"]
                .as_array()
                .expect("breaks")
                .iter()
                .filter(|b| b["date"] == day && b["statement"] == r["statement"])
                .count();
            let got =
                r["breaks"].as_array().expect("breaks").iter().filter(|b| b["outcome"] != "carried_forward").count();
            assert_eq!(got, want, "{key}");
            assert!(r["clearing"].as_array().is_some_and(|c| !c.is_empty()));
            // The clearing balances at the end of the day: the answer key's, worked out from
            // the fixture files by tests/fixtures/day/answer_amounts.py.
            for c in r["clearing"].as_array().expect("clearing") {
                let want = answer["clearing"]
                    .as_array()
                    .expect("clearing")
                    .iter()
                    .find(|w| w["date"] == day && w["account"] == c["account"] && w["currency"] == c["currency"])
                    .unwrap_or_else(|| panic!("{key}: {c} is not in the answer key"));
                assert_eq!(c["closing"], want["closing"], "{key}: {}", c["account"]);
            }
        }
        // Each merchant's business of the day.
        let fields = ["merchant_id", "currency", "gross", "refunds", "fees", "net"];
        let pick = |v: &serde_json::Value| fields.map(|f| v[f].clone());
        let business: Vec<_> = report["settlement"].as_array().expect("settlement").iter().map(pick).collect();
        let want: Vec<_> =
            answer["merchant_days"].as_array().expect("days").iter().filter(|m| m["date"] == day).map(pick).collect();
        assert_eq!(business, want, "{day}: the merchants' business");
    }
    let batches: Vec<_> = ["2026-11-24", "2026-11-25"]
        .iter()
        .flat_map(|day| {
            let r = json(&posledger(data, &["reconcile", "--date", day, "--format", "json"], None));
            r["batches"]["unbalanced"].as_array().cloned().unwrap_or_default()
        })
        .map(|b| (b["terminal_id"].clone(), b["difference"].clone()))
        .collect();
    let want: Vec<_> = answer["unbalanced_batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| (b["terminal_id"].clone(), b["difference"].clone()))
        .collect();
    assert_eq!(batches, want);
    let table = posledger(data, &["reconcile", "--date", "2026-11-25", "--channel", "alipay"], None);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("carried_forward"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    let breaks = json(&posledger(data, &["breaks", "--format", "json"], None));
    assert_eq!(breaks["breaks"].as_array().map(Vec::len), answer["breaks"].as_array().map(Vec::len));
    // What each break parks in suspense: the answer key's amount.
    for b in breaks["breaks"].as_array().expect("breaks") {
        let want = answer["breaks"]
            .as_array()
            .expect("breaks")
            .iter()
            .find(|w| ["statement", "date", "outcome", "txn_id", "channel_txn_id"].iter().all(|f| w[*f] == b[*f]))
            .unwrap_or_else(|| panic!("{b} is not in the answer key"));
        assert_eq!(b["suspense_amount"], want["parked"], "{b}");
    }

    // Resolving breaks: once each; large ones need a second, different person.
    let open = |data: &Path| json(&posledger(data, &["breaks", "--open", "--format", "json"], None))["breaks"].clone();
    let all = open(data);
    let find = |outcome: &str| {
        all.as_array()
            .expect("breaks")
            .iter()
            .find(|b| b["outcome"] == outcome)
            .map(|b| {
                (
                    b["id"].as_str().expect("id").to_owned(),
                    b["statement"].as_str().expect("s").to_owned(),
                    b["suspense_amount"].as_str().expect("a").to_owned(),
                )
            })
            .expect("a break")
    };
    let (id, statement, parked) = find("missing_in_statement");
    let resolve = |id: &str, extra: &[&str], over: &str| {
        let mut cmd = Command::new(POSLEDGER);
        cmd.arg("--data-dir").arg(data).args([
            "resolve",
            id,
            "--action",
            "write-off",
            "--reason",
            "the channel never settled it",
        ]);
        cmd.args(extra).env("POSLEDGER_APPROVAL_OVER", over).stdin(Stdio::null());
        cmd.output().expect("run")
    };
    let out = resolve(&id, &["--by", "ops-1"], "1000.00");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(open(data).as_array().map(Vec::len), all.as_array().map(|a| a.len() - 1));
    let again = resolve(&id, &["--by", "ops-2"], "1000.00");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stdout).contains("resolved already"));
    let tb = json(&posledger(data, &["trial-balance", "--format", "json"], None));
    let written_off = tb["balances"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["account"] == format!("expenses:write-offs:{statement}"))
        .expect("write-off account");
    assert_eq!(written_off["balance"], parked);
    // Over the threshold: proposed by one person, approved by another (not the same one, in
    // any case or spacing), naming what was proposed.
    let (big, _, _) = find("missing_in_ledger");
    let proposed = resolve(&big, &["--by", "ops-1"], "0.01");
    assert_eq!(proposed.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&proposed.stdout).contains("posledger approve"), "{}", stdout(&proposed));
    let listed = json(&posledger(data, &["breaks", "--open", "--format", "json"], None));
    let waiting = listed["breaks"].as_array().expect("breaks").iter().find(|b| b["id"] == big.as_str()).expect("open");
    assert_eq!(waiting["awaiting_approval"]["by"], "ops-1");
    let approve = |by: &str, reason: &str| {
        let mut cmd = Command::new(POSLEDGER);
        cmd.arg("--data-dir").arg(data).args([
            "approve",
            &big,
            "--action",
            "write-off",
            "--reason",
            reason,
            "--by",
            by,
        ]);
        cmd.env("POSLEDGER_APPROVAL_OVER", "0.01").stdin(Stdio::null());
        cmd.output().expect("run")
    };
    let same = approve(" OPS-1", "the channel never settled it");
    assert_eq!(same.status.code(), Some(1));
    assert!(stdout(&same).contains("another person"), "{}", stdout(&same));
    assert_eq!(approve("lead-1", "something else").status.code(), Some(1), "not what was proposed");
    let approved = approve("lead-1", "the channel never settled it");
    assert_eq!(approved.status.code(), Some(0), "{}", stdout(&approved));
    assert!(stdout(&approved).contains(&format!("resolved {big}")));
    assert_eq!(resolve("000000000000", &["--by", "ops-1"], "1000.00").status.code(), Some(1), "unknown id");
    assert_eq!(posledger(data, &["verify"], None).status.code(), Some(0), "the books still balance and rebuild");
}

/// Dates that could not be taken back or computed are refused on the command line as over HTTP:
/// a settlement or day-end for a day not yet begun (exit 2, nothing recorded), years outside
/// the bounds, a sale from 2099 (rejected on its `at`, exit 1).
#[test]
fn dates_that_cannot_be_undone_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path();
    let admin = posledger(data, &["merchants", "import", &fixture("admin.ndjson").to_string_lossy()], None);
    assert_eq!(admin.status.code(), Some(0), "{}", String::from_utf8_lossy(&admin.stderr));
    let head = |data: &Path| json(&posledger(data, &["verify", "--format", "json"], None))["events"].as_u64();
    let before = head(data);
    for args in [
        vec!["settle", "--date", "2099-01-01"],
        vec!["day-end", "--date", "2099-01-01"],
        vec!["settle", "--date", "-262143-01-01"],
        vec!["breaks", "--date", "+262142-12-31"],
        vec!["settlements", "--date", "1999-12-31"],
        vec!["trial-balance", "--as-of", "9999-12-31T23:59:59+08:00"],
        vec!["query", "daily_sales", "--param", "from=-262143-01-01"],
    ] {
        let out = posledger(data, &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let out = posledger(data, &["settle", "--date", "2099-01-01"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a day is settled once it has begun"));
    let sale = std::fs::read_to_string(fixture("feed-2026-11-24.ndjson")).expect("feed");
    let first = sale.lines().next().expect("a line");
    let at = serde_json::from_str::<serde_json::Value>(first).expect("json")["at"].as_str().expect("at").to_owned();
    let out = posledger(data, &["ingest", "-"], Some(&first.replace(&at, "2099-01-01T00:00:00+08:00")));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("time_in_future"), "{}", stdout(&out));
    assert_eq!(head(data), before, "nothing recorded");
}

#[test]
fn a_data_directory_that_does_not_exist_is_named_and_not_created() {
    // A misspelt --data-dir: every reading command says so with exit 2 and leaves nothing
    // behind; the commands that record something start the directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("posledger-dta");
    let backup_to = dir.path().join("backup");
    let backup_to = backup_to.to_str().expect("utf8");
    let reads: [&[&str]; 8] = [
        &["balance", "assets:bank:settlement"],
        &["trial-balance"],
        &["breaks"],
        &["events"],
        &["query", "daily_sales"],
        &["settle", "--date", "2026-11-03"],
        &["keys", "list"],
        &["backup", "--to", backup_to],
    ];
    for args in reads {
        let out = posledger(&missing, args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("no data directory at") && said.contains("posledger-dta"), "{args:?}: {said}");
        assert!(!missing.exists(), "{args:?} created the directory");
    }
    let started = posledger(&missing, &["merchants", "import", fixture("admin.ndjson").to_str().expect("utf8")], None);
    assert_eq!(started.status.code(), Some(0), "{}", String::from_utf8_lossy(&started.stderr));
    assert!(missing.join("events").is_dir());
}

/// `--store` and `migrate` name what is wrong with an address, and this build (without the
/// `kurrentdb` feature) says it has no KurrentDB client rather than trying.
#[test]
fn kurrentdb_addresses_are_checked_and_the_missing_client_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let cases: [(&[&str], &str); 5] = [
        (&["--store", "http://localhost:2113", "verify"], "starts with kurrentdb://"),
        (&["--store", "kurrentdb://h:2113?namespace=$all", "verify"], "namespace \"$all\""),
        (&["--store", "kurrentdb://127.0.0.1:2113", "verify"], "built without the KurrentDB client"),
        (&["migrate", "--from", "kurrentdb://127.0.0.1:2113"], "built without the KurrentDB client"),
        (&["migrate"], "--to"),
    ];
    for (args, says) in cases {
        let out = posledger(data, args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // `embedded` (or an empty POSLEDGER_STORE) is the data directory's own log.
    let out = posledger(data, &["--store", "embedded", "verify"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no event log"));
}

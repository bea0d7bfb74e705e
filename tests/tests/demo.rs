//! `posledger demo` as a newcomer runs it: the report agrees and names its next commands, the
//! JSON form holds the same checks, bad sizes and a used directory are refused, and `--serve`
//! serves the result with a key for every role.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");
const SMALL: [&str; 6] = ["--merchants", "4", "--payments-per-day", "300", "--days", "3"];

fn demo(dir: &Path, args: &[&str]) -> Output {
    Command::new(POSLEDGER)
        .arg("--data-dir")
        .arg(dir)
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run posledger demo")
}

#[test]
fn the_demo_agrees_and_shows_the_way_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let out = demo(&dir, &SMALL);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in ["everything agrees", "trial balance zero", "Next, try:", "daily_sales", "closed (销户)"] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    assert!(dir.join("charts/daily_sales.svg").is_file());
    assert!(dir.join("inputs/statements/2026-11-03/alipay-2026-11-03.csv").is_file());
    // The day-end it suggests runs on the demo's data and records nothing new.
    let events = |dir: &Path| {
        let out = Command::new(POSLEDGER)
            .arg("--data-dir")
            .arg(dir)
            .args(["verify", "--format", "json"])
            .output()
            .expect("verify");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify JSON");
        v["events"].as_u64().expect("events")
    };
    let before = events(&dir);
    let again = Command::new(POSLEDGER)
        .arg("--data-dir")
        .arg(&dir)
        .args(["day-end", "--date", "2026-11-04", "--statements"])
        .arg(dir.join("inputs/statements/2026-11-04"))
        .output()
        .expect("day-end");
    assert_eq!(again.status.code(), Some(1), "breaks were planted: {}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("2026-11-04"));
    assert_eq!(events(&dir), before, "a day-end run again records nothing");

    // The same run as JSON, into another directory: the same checks.
    let json_dir = tmp.path().join("json");
    let out = demo(&json_dir, &[&SMALL[..], &["--format", "json"]].concat());
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["disagreements"], serde_json::json!([]));
    for o in report["outcomes"].as_array().expect("outcomes") {
        assert_eq!(o["planted"], o["found"], "{o}");
    }
}

#[test]
fn bad_sizes_and_a_used_directory_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = demo(&tmp.path().join("a"), &["--merchants", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--merchants 2 is outside 4..=50000"));
    let out = demo(&tmp.path().join("b"), &["--payments-per-day", "2000001"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--payments-per-day"));
    std::fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
    let out = demo(tmp.path(), &SMALL);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(std::fs::read_to_string(tmp.path().join("notes.txt")).expect("kept"), "mine");
}

#[test]
fn demo_serve_serves_the_result_with_a_key_per_role() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let demo = tests::Demo::start(POSLEDGER, &dir, &SMALL, &[]);
    let (addr, keys) = (demo.server.addr, &demo.keys);
    assert_eq!(
        keys.keys().map(String::as_str).collect::<Vec<_>>(),
        ["admin", "analyst", "auditor", "finance", "terminal"],
        "{keys:?}"
    );
    let (status, body) = tests::http(addr, "GET", "/v1/trial-balance", &keys["finance"], b"").expect("request");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _) = tests::http(addr, "GET", "/v1/trial-balance", &keys["analyst"], b"").expect("request");
    assert_eq!(status, 403);
    let (status, _) = tests::http(addr, "GET", "/v1/queries/daily_sales", &keys["analyst"], b"").expect("request");
    assert_eq!(status, 200);
    // Every named query answers an analyst (repeat payers counts payers, naming none), and an
    // analyst's own SQL sees no payer column.
    let (status, body) = tests::http(addr, "GET", "/v1/queries", &keys["analyst"], b"").expect("request");
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let names: Vec<&str> =
        listed["queries"].as_array().expect("queries").iter().filter_map(|q| q["name"].as_str()).collect();
    assert!(names.contains(&"repeat_payers"), "{names:?}");
    for name in names {
        let (status, body) = tests::http(addr, "GET", &format!("/v1/queries/{name}?format=svg"), &keys["analyst"], b"")
            .expect("request");
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
    }
    let sql = b"SELECT payer FROM payments LIMIT 1";
    let (status, body) = tests::http(addr, "POST", "/v1/sql", &keys["analyst"], sql).expect("request");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("payer"));
    demo.stop();
}

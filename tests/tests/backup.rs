//! 数据备份 and the auditor's trail, end to end: backups taken while a server takes terminal
//! traffic, restored whole and cut at a point in time; backups and restores killed at several
//! points; damaged backups refused naming the file; and the chain recomputed from
//! `posledger events` by the independent Python check (`tools/check_chain.py`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tests::Server;

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/day").join(name).display().to_string()
}

/// `tools/check_chain.py LISTING --head HEAD`.
fn check_chain(listing: &Path, head: &str) -> Output {
    Command::new("python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/check_chain.py"))
        .arg(listing)
        .args(["--head", head])
        .output()
        .expect("python3")
}

/// Whether python3 can run the check (it needs the `blake3` package).
fn python_has_blake3() -> bool {
    Command::new("python3").args(["-c", "import blake3"]).status().is_ok_and(|s| s.success())
}

fn posledger(data: &Path, args: &[&str]) -> Output {
    Command::new(POSLEDGER).arg("--data-dir").arg(data).args(args).stdin(Stdio::null()).output().expect("run posledger")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn ok(out: Output) -> Output {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    out
}

/// The event lines of a listing (not its commit or end lines).
fn event_lines(listing: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(listing).lines().filter(|l| l.contains("\"stored\"")).map(str::to_owned).collect()
}

/// The sales a terminal posts while backups run.
const SALES: tests::Sales<'static> = tests::Sales {
    tag: "BAK",
    terminal: "T0000100",
    batch_no: "739946",
    rrn: "7",
    channel_txn: "4200000008",
    amount: "6.60",
    at: "2026-11-26T10:00:00+08:00",
    payer: "oBak",
};

/// A data directory with the fixture's merchants and first day.
fn fixture_dir(data: &Path) {
    ok(posledger(data, &["merchants", "import", &fixture("admin.ndjson")]));
    ok(posledger(data, &["ingest", &fixture("feed-2026-11-24.ndjson")]));
}

/// Two backups while a terminal posts to the server; each restored is a prefix of the live
/// log ending at its manifest's head, verifies, and holds every sale acknowledged before the
/// backup began; the second copied only what was new.
#[test]
fn backups_taken_under_load_restore_to_a_prefix_of_the_live_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, backup) = (root.path().join("data"), root.path().join("backup"));
    fixture_dir(&data);
    let token =
        String::from_utf8_lossy(&ok(posledger(&data, &["keys", "create", "--role", "admin"])).stdout).trim().to_owned();
    let server = Server::start(POSLEDGER, &data);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let terminal = {
        let (stop, token, acknowledged) = (stop.clone(), token.clone(), acknowledged.clone());
        std::thread::spawn(move || {
            let mut batch = 0;
            while !stop.load(Ordering::Acquire) {
                let (status, body) =
                    tests::http(addr, "POST", "/v1/transactions", &token, &SALES.ndjson(batch * 100, 100))
                        .expect("post");
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                batch += 1;
                acknowledged.store(batch * 100, Ordering::Release);
            }
        })
    };
    let mut taken = Vec::new();
    for _ in 0..2 {
        while acknowledged.load(Ordering::Acquire) < 300 * (taken.len() + 1) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = acknowledged.load(Ordering::Acquire);
        let report =
            json(&ok(posledger(&data, &["backup", "--to", &backup.display().to_string(), "--format", "json"])));
        taken.push((before, report));
    }
    stop.store(true, Ordering::Release);
    terminal.join().expect("terminal");
    let live = ok(posledger(&data, &["events"])).stdout;
    let live_events = event_lines(&live);
    assert!(taken[1].1["bytes_copied"].as_u64() < taken[1].1["bytes_total"].as_u64(), "the second copies what is new");
    for (i, (before, report)) in taken.iter().enumerate() {
        let restored = root.path().join(format!("restored-{i}"));
        let manifest = report["manifest"].as_str().expect("manifest");
        let out = json(&ok(posledger(
            &restored,
            &["restore", "--from", &backup.display().to_string(), "--manifest", manifest, "--format", "json"],
        )));
        assert_eq!(out["events"], report["events"]);
        assert_eq!(out["head_hash"], report["head_hash"]);
        let verified = json(&ok(posledger(&restored, &["verify", "--format", "json"])));
        assert_eq!(
            (verified["events"].clone(), verified["head_hash"].clone()),
            (report["events"].clone(), report["head_hash"].clone())
        );
        let events = event_lines(&ok(posledger(&restored, &["events"])).stdout);
        assert_eq!(events.len() as u64, report["events"].as_u64().expect("events"));
        assert_eq!(events[..], live_events[..events.len()], "a prefix of the live log");
        let sales_in = events.iter().filter(|l| l.contains("\"BAK")).count();
        assert!(sales_in >= *before, "{sales_in} sales restored, {before} acknowledged before the backup");
    }
    server.stop();
}

/// A point-in-time restore to the end of a business day equals `replay --until` that time on
/// the live log, and a restore to a position equals `replay --until` that position.
#[test]
fn a_point_in_time_restore_equals_replay_until_that_time() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, backup) = (root.path().join("data"), root.path().join("backup"));
    fixture_dir(&data);
    let first_day = json(&ok(posledger(&data, &["verify", "--format", "json"])))["events"].as_u64().expect("events");
    ok(posledger(&data, &["ingest", &fixture("feed-2026-11-25.ndjson")]));
    ok(posledger(&data, &["backup", "--to", &backup.display().to_string()]));
    let end_of_day = "2026-11-24T23:59:59+08:00";
    let by_time = root.path().join("by-time");
    let cut = json(&ok(posledger(
        &by_time,
        &["restore", "--from", &backup.display().to_string(), "--until", end_of_day, "--format", "json"],
    )));
    assert!(cut["cut"]["position"].as_u64().is_some(), "{cut}");
    let digest = |dir: &Path, until: &str| {
        json(&ok(posledger(dir, &["replay", "--until", until, "--format", "json"])))["digest"].clone()
    };
    assert_eq!(digest(&by_time, end_of_day), digest(&data, end_of_day));
    let head = cut["events"].as_u64().expect("events").to_string();
    assert_eq!(digest(&by_time, &head), digest(&data, end_of_day), "the restored log holds that day and nothing after");
    let by_position = root.path().join("by-position");
    let at = first_day.to_string();
    let cut = json(&ok(posledger(
        &by_position,
        &["restore", "--from", &backup.display().to_string(), "--until", &at, "--format", "json"],
    )));
    assert_eq!(cut["events"].as_u64(), Some(first_day));
    assert_eq!(digest(&by_position, &at), digest(&data, &at));
    ok(posledger(&by_position, &["verify"]));
}

/// Files of a backup to damage: its pieces and manifests.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

/// A flipped byte in a piece, a missing piece, a truncated manifest, an altered state file:
/// each restore is refused naming the file, and leaves no data directory that opens.
#[test]
fn a_damaged_backup_is_refused_naming_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, backup) = (root.path().join("data"), root.path().join("backup"));
    fixture_dir(&data);
    ok(posledger(&data, &["keys", "create", "--role", "auditor"]));
    ok(posledger(&data, &["backup", "--to", &backup.display().to_string()]));
    ok(posledger(&data, &["ingest", &fixture("feed-2026-11-25.ndjson")]));
    ok(posledger(&data, &["backup", "--to", &backup.display().to_string()]));
    let pieces = files_under(&backup.join("log"));
    assert_eq!(pieces.len(), 2, "{pieces:?}");
    let manifests = files_under(&backup.join("manifests"));
    let state = files_under(&backup.join("files"));
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, PathBuf, Damage)> = vec![
        (
            "flipped byte",
            pieces[1].clone(),
            Box::new(|p: &Path| {
                let mut b = std::fs::read(p).expect("read");
                let at = b.len() / 2;
                b[at] ^= 1;
                std::fs::write(p, b).expect("write");
            }),
        ),
        ("missing piece", pieces[0].clone(), Box::new(|p: &Path| std::fs::remove_file(p).expect("remove"))),
        (
            "truncated manifest",
            manifests[1].clone(),
            Box::new(|p: &Path| {
                let b = std::fs::read(p).expect("read");
                std::fs::write(p, &b[..b.len() / 2]).expect("write");
            }),
        ),
        (
            "altered keys",
            state[0].clone(),
            Box::new(|p: &Path| {
                let mut b = std::fs::read(p).expect("read");
                b.push(b' ');
                std::fs::write(p, b).expect("write");
            }),
        ),
    ];
    for (i, (what, file, damage)) in cases.iter().enumerate() {
        let saved = std::fs::read(file).expect("read");
        damage(file);
        let target = root.path().join(format!("target-{i}"));
        let out = posledger(&target, &["restore", "--from", &backup.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        let name = file.file_name().expect("name").to_string_lossy().into_owned();
        assert!(text(&out).contains(&name), "{what}: the refusal names {name}: {}", text(&out));
        // Refused before anything was written, or a directory that does not open.
        if target.exists() {
            let opened = posledger(&target, &["balance", "assets:clearing:wechat"]);
            assert_ne!(opened.status.code(), Some(0), "{what}: an unfinished restore is not a data directory");
        }
        std::fs::write(file, saved).expect("put back");
        ok(posledger(&target, &["restore", "--from", &backup.display().to_string()]));
    }
    // The first manifest still restores after the second was written.
    let first = root.path().join("first");
    let name = manifests[0].file_name().expect("name").to_string_lossy().into_owned();
    let out = json(&ok(posledger(
        &first,
        &["restore", "--from", &backup.display().to_string(), "--manifest", &name, "--format", "json"],
    )));
    assert_eq!(out["manifest"], name.as_str());
    // A non-empty target is refused.
    let out = posledger(&data, &["restore", "--from", &backup.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not empty"), "{}", text(&out));
}

/// Backups and restores killed with SIGKILL at several points: the earlier manifests stay
/// whole, the next backup completes, a killed restore's directory is refused until a restore
/// into it again finishes.
#[test]
fn backups_and_restores_killed_at_any_point_leave_every_manifest_restorable() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, backup) = (root.path().join("data"), root.path().join("backup"));
    let shape = ingest::generate::Shape { merchants: 20, terminals_per_merchant: 2, seed: 9 };
    let (admin, feed) = tests::generated_feed(root.path(), shape, 60_000);
    ok(posledger(&data, &["merchants", "import", &admin.display().to_string()]));
    ok(posledger(&data, &["ingest", &feed.display().to_string()]));
    let spawn = |dir: &Path, args: &[&str]| {
        Command::new(POSLEDGER)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let to = backup.display().to_string();
    for delay_ms in [0u64, 5, 20, 60] {
        let mut child = spawn(&data, &["backup", "--to", &to]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        for m in files_under(&backup.join("manifests")) {
            let name = m.file_name().expect("name").to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp") || m.exists());
        }
    }
    // Stopped between making the directory and putting its marker in place: taken as empty.
    let fresh = root.path().join("fresh");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    std::fs::write(fresh.join("POSLEDGER-BACKUP.tmp"), b"posledger-backup-1\n").expect("write");
    ok(posledger(&data, &["backup", "--to", &fresh.display().to_string()]));
    let half = root.path().join("half");
    std::fs::create_dir_all(&half).expect("mkdir");
    std::fs::write(half.join("RESTORING.tmp"), b"").expect("write");
    let out = posledger(&half, &["balance", "assets:clearing:wechat"]);
    assert!(text(&out).contains("did not finish"), "{}", text(&out));
    ok(posledger(&half, &["restore", "--from", &fresh.display().to_string()]));
    let done = json(&ok(posledger(&data, &["backup", "--to", &to, "--format", "json"])));
    let leftovers: Vec<_> =
        files_under(&backup.join("log")).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let target = root.path().join("restored");
    for delay_ms in [0u64, 10, 40, 100] {
        let mut child = spawn(&target, &["restore", "--from", &to]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let finished = child.wait().expect("wait").success();
        if !finished && target.join("RESTORING").exists() {
            let out = posledger(&target, &["balance", "assets:clearing:wechat"]);
            assert_eq!(out.status.code(), Some(2), "{}", text(&out));
            assert!(text(&out).contains("did not finish"), "{}", text(&out));
        }
        if finished {
            break;
        }
    }
    if !target.exists() || target.join("RESTORING").exists() {
        ok(posledger(&target, &["restore", "--from", &to]));
    }
    let out = json(&ok(posledger(&target, &["verify", "--format", "json"])));
    assert_eq!(out["head_hash"], done["head_hash"], "{out}");
    // Every manifest written, by a finished run or before a kill, restores.
    for (i, m) in files_under(&backup.join("manifests")).iter().enumerate() {
        let name = m.file_name().expect("name").to_string_lossy().into_owned();
        let dir = root.path().join(format!("each-{i}"));
        ok(posledger(&dir, &["restore", "--from", &to, "--manifest", &name]));
        ok(posledger(&dir, &["verify"]));
    }
}

/// The independent check recomputes the head hash from `posledger events` and agrees with
/// verify; it disagrees once any byte of the listing is changed, an event dropped, or two
/// swapped.
#[test]
fn the_python_check_recomputes_the_head_hash_from_the_listing() {
    if !python_has_blake3() {
        assert!(std::env::var_os("CI").is_none(), "CI needs python3 with blake3 (pip install blake3)");
        eprintln!("skipped: python3 with blake3 is not installed (pip install blake3)");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    fixture_dir(&data);
    ok(posledger(&data, &["ingest", &fixture("feed-2026-11-25.ndjson")]));
    let verified = json(&ok(posledger(&data, &["verify", "--format", "json"])));
    let head = format!("{}@{}", verified["head_hash"].as_str().expect("hash"), verified["events"]);
    let listing = String::from_utf8(ok(posledger(&data, &["events"])).stdout).expect("utf-8");
    let check = |listing: &str| {
        let path = root.path().join("listing.ndjson");
        std::fs::write(&path, listing).expect("write");
        let out = check_chain(&path, &head);
        (out.status.code(), text(&out))
    };
    let (code, said) = check(&listing);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(verified["head_hash"].as_str().expect("hash")), "{said}");
    let lines: Vec<&str> = listing.lines().collect();
    let events: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains("\"stored\"")).collect();
    let mut altered: Vec<(String, String)> = Vec::new();
    // One hex digit of one stored byte, at several places of one event.
    let target = events[events.len() / 2];
    let stored_at = lines[target].find("\"stored\":\"").expect("stored") + 10;
    for offset in [0usize, 20, 200] {
        let mut line = lines[target].to_owned();
        let at = stored_at + offset;
        let digit = line.as_bytes()[at];
        let other = if digit == b'0' { "1" } else { "0" };
        line.replace_range(at..at + 1, other);
        let mut changed = lines.clone();
        changed[target] = &line;
        altered.push((format!("a byte at {offset}"), changed.join("\n")));
    }
    // The readable payload changed, the stored bytes not.
    let mut changed = lines.clone();
    let payload = lines[target].replacen("\"payload\":{", "\"payload\":{\"x\":1,", 1);
    changed[target] = &payload;
    altered.push(("a readable field".into(), changed.join("\n")));
    let mut dropped = lines.clone();
    dropped.remove(target);
    altered.push(("an event dropped".into(), dropped.join("\n")));
    let mut swapped = lines.clone();
    let (a, b) = (events[3], events[4]);
    assert_eq!(b, a + 1, "two events of one commit");
    swapped.swap(a, b);
    altered.push(("two events swapped".into(), swapped.join("\n")));
    let mut cut = lines.clone();
    cut.truncate(lines.len() - 1);
    altered.push(("the end cut off".into(), cut.join("\n")));
    for (what, listing) in altered {
        let (code, said) = check(&listing);
        assert_eq!(code, Some(1), "{what}: {said}");
        assert!(said.starts_with("FAIL"), "{what}: {said}");
    }
}

/// `GET /v1/events?format=chain` pages through the same commits as `posledger events`, each
/// page whole commits, each end line naming where the next starts.
#[test]
fn the_http_listing_pages_through_the_same_commits() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    fixture_dir(&data);
    ok(posledger(&data, &["ingest", &fixture("feed-2026-11-25.ndjson")]));
    let auditor = String::from_utf8_lossy(&ok(posledger(&data, &["keys", "create", "--role", "auditor"])).stdout)
        .trim()
        .to_owned();
    let whole = String::from_utf8(ok(posledger(&data, &["events"])).stdout).expect("utf-8");
    let server = Server::start(POSLEDGER, &data);
    let mut paged = Vec::new();
    let mut from = 0;
    let mut pages = 0;
    loop {
        let path = format!("/v1/events?format=chain&from={from}&limit=100");
        let (status, body) = tests::http(server.addr, "GET", &path, &auditor, b"").expect("get");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let body = String::from_utf8(body).expect("utf-8");
        let (lines, end) = body.trim_end().rsplit_once('\n').expect("an end line");
        let end: serde_json::Value = serde_json::from_str(end).expect("end");
        paged.extend(lines.lines().map(str::to_owned));
        pages += 1;
        if end["end"]["more"] == false {
            break;
        }
        from = end["end"]["events"].as_u64().expect("next");
    }
    assert!(pages > 2, "several pages");
    let whole: Vec<&str> = whole.lines().filter(|l| !l.starts_with("{\"end\"")).collect();
    assert_eq!(paged, whole);
    let bad = tests::http(server.addr, "GET", "/v1/events?format=raw", &auditor, b"").expect("get");
    assert_eq!(bad.0, 400);
    server.stop();
}

/// `anchor` records the head and prints it; `verify --anchor` holds while the log grows, fails
/// for another hash, a position inside a commit, and a log cut before the anchor; the Python
/// check ends in the anchor when given the listing up to it.
#[test]
fn an_anchor_is_checked_by_verify_and_by_the_python_check() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, backup) = (root.path().join("data"), root.path().join("backup"));
    fixture_dir(&data);
    let anchored = json(&ok(posledger(&data, &["anchor", "--format", "json"])));
    let anchor = format!("{}@{}", anchored["anchor"]["head_hash"].as_str().expect("hash"), anchored["anchor"]["head"]);
    assert_eq!(anchored["recorded_at"], anchored["anchor"]["head"], "the anchor is the next event");
    ok(posledger(&data, &["ingest", &fixture("feed-2026-11-25.ndjson")]));
    let checked = json(&ok(posledger(&data, &["verify", "--anchor", &anchor, "--format", "json"])));
    assert_eq!(checked["anchor"]["holds"], true, "{checked}");
    let head = anchored["anchor"]["head"].as_u64().expect("head");
    let other = format!("{}@{head}", "0".repeat(64));
    let inside = format!("{}@{}", anchored["anchor"]["head_hash"].as_str().expect("hash"), head - 1);
    for wrong in [other.as_str(), inside.as_str()] {
        let out = posledger(&data, &["verify", "--anchor", wrong]);
        assert_eq!(out.status.code(), Some(1), "{wrong}: {}", text(&out));
        assert!(text(&out).contains("does not extend"), "{}", text(&out));
    }
    ok(posledger(&data, &["backup", "--to", &backup.display().to_string()]));
    let cut = root.path().join("cut");
    ok(posledger(&cut, &["restore", "--from", &backup.display().to_string(), "--until", &(head - 1).to_string()]));
    assert_eq!(posledger(&cut, &["verify", "--anchor", &anchor]).status.code(), Some(1));
    if python_has_blake3() {
        let listing = root.path().join("to-anchor.ndjson");
        std::fs::write(&listing, ok(posledger(&data, &["events", "--until", &head.to_string()])).stdout)
            .expect("write");
        let out = check_chain(&listing, &anchor);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
}

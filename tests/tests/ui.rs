//! The screen end to end: `tests/ui/ui.test.mjs` drives headless Chromium (Debian's
//! `chromium`, through npm's `playwright-core`) against `posledger demo --serve` on loopback,
//! signing in with every role's key. Screenshots of every view go to
//! `$CARGO_TARGET_TMPDIR/ui-screenshots` (or `POSLEDGER_SCREENSHOTS`).
//!
//! Without Chromium, Node or `tests/ui/node_modules` the test says so and passes, unless
//! `POSLEDGER_REQUIRE_BROWSER=1` (as `.ci/run` sets), when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");
/// The demo's sizes: enough days and merchants for every kind of break.
const DEMO: [&str; 6] = ["--merchants", "8", "--payments-per-day", "1000", "--days", "3"];
/// The approval threshold the server runs with: the demo plants open breaks on both sides of it.
const APPROVAL_OVER: &str = "10.00";
/// Longest the browser run may take.
const BROWSER_TIME_MAX: Duration = Duration::from_secs(600);

/// What the browser run needs, or why it cannot run here.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.is_file() {
        return Err(format!("no Chromium at {} (apt-get install chromium)", chromium.display()));
    }
    if Command::new("node").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        return Err("no node on the PATH".into());
    }
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    if !ui.join("node_modules/playwright-core").is_dir() {
        return Err(format!("no playwright-core in {} (npm ci --prefix tests/ui)", ui.display()));
    }
    Ok((chromium, ui))
}

#[test]
fn every_role_uses_the_screen_in_a_browser() {
    let (chromium, ui) = match browser() {
        Ok(found) => found,
        Err(why) if std::env::var("POSLEDGER_REQUIRE_BROWSER").is_ok_and(|v| v == "1") => {
            panic!("the browser test must run (POSLEDGER_REQUIRE_BROWSER=1), but {why}")
        }
        Err(why) => {
            eprintln!("the browser test did not run: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let demo = tests::Demo::start(POSLEDGER, &dir, &DEMO, &[("POSLEDGER_APPROVAL_OVER", APPROVAL_OVER)]);
    // A second finance key, made through the running server, approves what the first proposes.
    let created = Command::new(POSLEDGER)
        .arg("--data-dir")
        .arg(&dir)
        .args(["keys", "create", "--role", "finance"])
        .output()
        .expect("keys create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let second = String::from_utf8_lossy(&created.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("plk_"))
        .expect("the new key")
        .to_owned();
    let mut keys: serde_json::Map<String, serde_json::Value> =
        demo.keys.iter().map(|(role, key)| (role.clone(), key.clone().into())).collect();
    keys.insert("finance2".into(), second.into());

    let shots = std::env::var_os("POSLEDGER_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"));
    let _ = std::fs::remove_dir_all(&shots);
    let mut node = Command::new("node")
        .arg(ui.join("ui.test.mjs"))
        .current_dir(&ui)
        .env("POSLEDGER_URL", format!("http://{}", demo.server.addr))
        .env("POSLEDGER_KEYS", serde_json::Value::Object(keys).to_string())
        .env("POSLEDGER_APPROVAL_OVER", APPROVAL_OVER)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .spawn()
        .expect("run node");
    let status = tests::wait_with_limit(&mut node, BROWSER_TIME_MAX, "the browser run");
    assert!(status.success(), "the browser run failed ({status}): its output above says where");
    let taken = std::fs::read_dir(&shots).expect("screenshots").count();
    assert!(taken >= 10, "{taken} screenshots in {}", shots.display());
    eprintln!("{taken} screenshots in {}", shots.display());
    demo.stop();
}

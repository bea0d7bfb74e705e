//! The README's commands, run as written: every `sh` block of `README.md`, in order, as one
//! bash script in a scratch directory. `target/release/posledger` there is the binary under
//! test, and `cargo` a stand-in that runs `cargo run --release -- ARGS` as `posledger ARGS`
//! and passes over building and testing (this test is part of that). A command must exit 0
//! unless its line ends with `# exit N`. A block preceded by `<!-- readme-test: needs TOOL -->`
//! runs only where TOOL is installed (on CI it must be); `<!-- readme-test: skip (why) -->`
//! marks a block that cannot run here, with the reason shown to the reader.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const POSLEDGER: &str = env!("CARGO_BIN_EXE_posledger-under-test");
/// Longest the whole README may take (the default demo on a debug build is about two minutes).
const SCRIPT_TIME_MAX: Duration = Duration::from_secs(20 * 60);

/// One `sh` block: its first line's number in the README, its lines, and its marker.
struct Block {
    line: usize,
    lines: Vec<String>,
    marker: Option<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut marker: Option<String> = None;
    for (i, line) in readme.lines().enumerate() {
        if let Some(block) = current.as_mut() {
            if line.trim_end() == "```" {
                blocks.push(current.take().expect("open block"));
            } else {
                block.lines.push(line.to_string());
            }
        } else if line.trim_end() == "```sh" {
            current = Some(Block { line: i + 2, lines: Vec::new(), marker: marker.take() });
        } else if let Some(m) = line.strip_prefix("<!-- readme-test:").and_then(|m| m.strip_suffix("-->")) {
            marker = Some(m.trim().to_string());
        } else if !line.trim().is_empty() {
            marker = None;
        }
    }
    assert!(current.is_none(), "README.md ends inside a code block");
    blocks
}

/// The exit status a README line says its command ends with (`# exit N`), 0 when it says none.
fn expected_exit(line: &str) -> i32 {
    line.rsplit_once("# exit ").and_then(|(_, n)| n.trim().parse().ok()).unwrap_or(0)
}

/// Whether a tool a block needs is installed.
fn installed(tool: &str) -> bool {
    let (program, args): (&str, &[&str]) = match tool {
        "duckdb" => ("python3", &["-c", "import duckdb"]),
        "ledger" => ("ledger", &["--version"]),
        other => panic!("the README needs {other:?}, which this test does not know how to find"),
    };
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The script: each command checked against its expected exit status, naming its README line.
fn script(blocks: &[Block], port: u16) -> (String, Vec<String>) {
    let mut out = String::from(
        "set -u\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n",
    );
    let mut skipped = Vec::new();
    for block in blocks {
        match block.marker.as_deref() {
            Some(m) if m.starts_with("skip") => {
                skipped.push(format!("README line {}: {m}", block.line));
                continue;
            }
            Some(m) if m.starts_with("needs ") => {
                let tool = m["needs ".len()..].trim();
                if !installed(tool) {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "{tool} is not installed on CI (README line {})",
                        block.line
                    );
                    skipped.push(format!("README line {}: {tool} is not installed", block.line));
                    continue;
                }
            }
            Some(m) => panic!("README line {}: unknown marker {m:?}", block.line),
            None => {}
        }
        for (i, line) in block.lines.iter().enumerate() {
            let command = line.trim();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            let command = command.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
            let at = block.line + i;
            if command.ends_with('&') {
                out.push_str(&format!("{command}\n"));
                continue;
            }
            let expected = expected_exit(&command);
            let shown = command.replace('\'', "'\\''");
            out.push_str(&format!(
                "echo '+ {shown}' >&2\n{{ {command}\n}}\nrc=$?\n\
                 if [ $rc -ne {expected} ]; then echo 'README line {at}: exit '$rc', expected {expected}: {shown}' >&2; exit 1; fi\n"
            ));
        }
    }
    (out, skipped)
}

/// `cargo` in the scratch directory: `run --release -- ARGS` runs the binary under test.
fn cargo_stand_in(bin: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         case \"$1\" in\n\
         run) while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done; shift; exec '{}' \"$@\" ;;\n\
         build|test|install) echo \"cargo $*: built and tested by the test that runs this\" >&2; exit 0 ;;\n\
         *) echo \"cargo $*: not something the README should ask\" >&2; exit 97 ;;\n\
         esac\n",
        bin.display()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

#[test]
fn every_readme_command_runs_as_written() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(manifest.join("../README.md")).expect("README.md");
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 6, "the README's blocks: {}", blocks.len());
    let first: Vec<&str> = blocks[0].lines.iter().map(|l| l.trim()).collect();
    assert_eq!(first, ["cargo run --release -- demo", "cargo test --workspace"], "the two commands of Try it");

    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    std::fs::create_dir_all(root.join("target/release")).expect("mkdir");
    std::os::unix::fs::symlink(POSLEDGER, root.join("target/release/posledger")).expect("link the binary");
    std::fs::create_dir_all(root.join("tests")).expect("mkdir");
    std::os::unix::fs::symlink(manifest.join("fixtures"), root.join("tests/fixtures")).expect("link the fixtures");
    std::fs::create_dir_all(root.join("stand-in")).expect("mkdir");
    let cargo = root.join("stand-in/cargo");
    std::fs::write(&cargo, cargo_stand_in(Path::new(POSLEDGER))).expect("write cargo");
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");

    let (text, skipped) = script(&blocks, free_port());
    for s in &skipped {
        eprintln!("not run: {s}");
    }
    std::fs::write(root.join("readme.sh"), &text).expect("write script");
    let path = format!("{}:{}", root.join("stand-in").display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new("bash")
        .arg("readme.sh")
        .current_dir(root)
        .env("PATH", path)
        .env_remove("POSLEDGER_APPROVAL_OVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = tests::wait_with_limit(&mut child, SCRIPT_TIME_MAX, "the README's commands");
    let out = out.join().expect("stdout");
    let err = err.join().expect("stderr");
    assert!(status.success(), "{err}\n--- stdout ---\n{out}");
    // What the reader is told to look for is there.
    for expected in ["everything agrees", "Next, try:", "held: break", "assets:clearing:wechat"] {
        assert!(out.contains(expected), "{expected:?} in the README's output:\n{out}");
    }
    assert!(root.join("posledger-demo/charts/daily_sales.svg").is_file());
    assert!(root.join("posledger-data").is_dir(), "the fixture day went to the default directory");
}

#[test]
fn expected_exits_and_markers_are_read() {
    assert_eq!(expected_exit("posledger day-end --date D  # exit 1"), 1);
    assert_eq!(expected_exit("posledger verify"), 0);
    let readme = "a\n<!-- readme-test: needs ledger -->\n```sh\nls\n```\n\ntext\n```sh\npwd\n```\n";
    let b = blocks(readme);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].marker.as_deref(), Some("needs ledger"));
    assert_eq!((b[0].line, b[0].lines.clone()), (4, vec!["ls".to_string()]));
    assert_eq!(b[1].marker, None);
}

//! The adapters stay adapters: the command line and the HTTP API never import each other, and
//! neither appends events or opens the store on its own (those are the application layer's).
//! `app` cannot import `api` at all: Cargo refuses the circle.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn src(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src").join(rel)
}

/// Every file of an adapter, with the offending lines it holds.
fn offending(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if forbidden.iter().any(|f| code.contains(f)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_command_line_and_the_http_api_do_not_import_each_other() {
    let cli = vec![src("cli.rs")];
    let http = sources(&src("http"));
    assert!(http.len() >= 5, "the HTTP adapter's files: {http:?}");
    assert_eq!(offending(&cli, &["crate::http", "http::"]), Vec::<String>::new());
    assert_eq!(offending(&http, &["crate::cli", "cli::"]), Vec::<String>::new());
}

#[test]
fn the_adapters_neither_append_events_nor_open_the_store() {
    // Everything that records goes through `app::App`; an adapter that appends or opens the
    // store itself would bypass the write model's and the app's locks.
    let mut files = sources(&src(""));
    files.retain(|f| !f.ends_with("main.rs"));
    let found = offending(&files, &[".append(", "append_many(", "EmbeddedStore::open", "Ingestor::open"]);
    assert_eq!(found, Vec::<String>::new());
}

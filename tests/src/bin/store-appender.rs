//! A child process for crash tests: appends numbered events to an embedded store in group
//! commits and prints `acked N` (N = events acknowledged so far) after each one, so that a
//! test can kill it with SIGKILL at any moment and know what was acknowledged.
//!
//! Usage: `store-appender DIR TOTAL PER_COMMIT`

use std::io::Write;

use ingest::store::conformance::event;
use ingest::store::{AppendRequest, EmbeddedStore, EventStore, ExpectedRevision};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, total, per_commit] = args.as_slice() else {
        eprintln!("usage: store-appender DIR TOTAL PER_COMMIT");
        std::process::exit(2);
    };
    let total: u64 = total.parse().expect("TOTAL is a number");
    let per_commit: u64 = per_commit.parse().expect("PER_COMMIT is a number");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let store = EmbeddedStore::open(dir).expect("open");
        let mut next = store.head();
        let mut out = std::io::stdout().lock();
        while next < total {
            let end = (next + per_commit).min(total);
            let requests = (next..end)
                .map(|i| AppendRequest {
                    stream: format!("s{}", i % 13),
                    expected: ExpectedRevision::Any,
                    events: vec![event(&format!("k{i}"), i)],
                })
                .collect();
            for r in store.append_many(requests).await {
                r.expect("append");
            }
            next = end;
            writeln!(out, "acked {next}").expect("stdout");
            out.flush().expect("flush");
        }
    });
}

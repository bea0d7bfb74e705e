//! Analytics in a worker process. A query or an analysis that a server runs in its own
//! process can take the server down with it: a scalar function that builds a 2 GiB value, a
//! join that multiplies a wide literal, a polars frame bigger than memory. None of those is
//! counted by DataFusion's memory pool, and none can be interrupted inside the poll that
//! allocates. So an [`crate::App`] given a worker ([`crate::App::with_analytics_worker`]: the
//! `posledger` binary itself) runs each [`Job`] in a process of its own,
//! `posledger analytics-worker`, which:
//!
//! - holds at most [`WORKER_MEMORY_BYTES_MAX`] of data (`RLIMIT_DATA`): past it an allocation
//!   fails and the worker stops, answered as the query's memory limit;
//! - runs at a lower priority ([`WORKER_NICE`]), so terminals and balance reads keep the CPU
//!   they need while an analyst's query runs;
//! - is stopped at its time limit ([`Job::time_max`] and [`WORKER_GRACE`]) and as soon as its
//!   caller goes away (a client that disconnects); its admission place is given back only
//!   then, when the work has really stopped;
//! - answers with at most [`WORKER_REPLY_BYTES_MAX`] of JSON.
//!
//! The job goes in on the worker's standard input and its answer (`Result<Answer, Failure>`
//! as JSON) comes out on its standard output.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use std::io::{Read, Write};

use crate::analysis::{Answer, Job};
use crate::{Class, Failure};

/// The argument that makes the `posledger` binary a worker.
pub const WORKER_ARG: &str = "analytics-worker";
/// Data a worker may hold (its heap and anonymous mappings), in bytes.
pub const WORKER_MEMORY_BYTES_MAX: u64 = 3 << 30;
/// How much lower a worker's scheduling priority is than its server's (`nice`).
pub const WORKER_NICE: i32 = 10;
/// Time a worker has beyond its job's own limit to start and to write its answer.
pub const WORKER_GRACE: Duration = Duration::from_secs(5);
/// Longest answer read from a worker, in bytes of JSON (a result of
/// [`analytics::sql::QUERY_RESULT_BYTES_MAX`] with its quoting).
pub const WORKER_REPLY_BYTES_MAX: usize = 4 * analytics::sql::QUERY_RESULT_BYTES_MAX;
/// Longest job read by a worker, in bytes of JSON.
pub const WORKER_JOB_BYTES_MAX: u64 = 1 << 20;
/// Bytes of a worker's standard error kept for its failure's message.
const STDERR_KEPT_BYTES: usize = 16 * 1024;

/// How often a running worker is looked at (its exit, its deadline).
const WORKER_POLL: Duration = Duration::from_millis(10);

/// A started worker: dropping it (the caller went away, or the deadline passed) kills it.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        // Reaped at once: a killed process ends without running anything more.
        let _ = self.0.wait();
    }
}

/// Runs `job` in a worker process started from `exe`, holding `running` until the worker has
/// stopped.
pub async fn run(exe: &Path, job: &Job, running: crate::admission::Admitted) -> Result<Answer, Failure> {
    let input = serde_json::to_vec(job).map_err(|e| Failure::internal(format!("writing the job: {e}")))?;
    let mut child = std::process::Command::new(exe)
        .arg(WORKER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::internal(format!("starting the analytics worker {}: {e}", exe.display())))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Failure::internal("the analytics worker's pipes"));
    };
    let mut started = Started(child);
    // The pipes on blocking threads; each ends when the worker does.
    tokio::task::spawn_blocking(move || {
        // A worker that stopped before reading its job says why on its standard error.
        let _ = stdin.write_all(&input);
    });
    let out = tokio::task::spawn_blocking(move || kept(stdout, WORKER_REPLY_BYTES_MAX));
    let err = tokio::task::spawn_blocking(move || kept(stderr, STDERR_KEPT_BYTES));
    let deadline = tokio::time::Instant::now() + job.time_max() + WORKER_GRACE;
    let status = loop {
        match started.0.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if tokio::time::Instant::now() >= deadline => break Err(job.time_failure()),
            Ok(None) => tokio::time::sleep(WORKER_POLL).await,
            Err(e) => break Err(Failure::internal(format!("waiting for the analytics worker: {e}"))),
        }
    };
    // The worker has stopped (or is stopped now): only then is its place given back.
    drop(started);
    drop(running);
    let status = status?;
    let pipe = |e: tokio::task::JoinError| Failure::internal(format!("reading the analytics worker: {e}"));
    let out = out.await.map_err(pipe)?;
    let err = err.await.map_err(pipe)?;
    judge(out, &err.0, status)
}

/// What a worker's output and exit say.
fn judge((out, over): (Vec<u8>, bool), err: &[u8], status: std::process::ExitStatus) -> Result<Answer, Failure> {
    let err = String::from_utf8_lossy(err);
    if over {
        return Err(crate::analysis::sql_failure(analytics::sql::SqlError::ResultBytesLimit {
            max: analytics::sql::QUERY_RESULT_BYTES_MAX,
        }));
    }
    if status.success() {
        return serde_json::from_slice::<Result<Answer, Failure>>(&out)
            .map_err(|e| Failure::internal(format!("reading the analytics worker's answer: {e}")))?;
    }
    // An allocation past RLIMIT_DATA ends the worker with the allocator's message (Rust's
    // `memory allocation of N bytes failed`, then an abort).
    if err.contains("memory allocation") || err.contains("out of memory") || err.contains("Cannot allocate memory") {
        return Err(Failure::new(
            Class::Unavailable,
            "query_memory_limit",
            format!(
                "the work needs more than its worker's memory limit of {} MiB; filter or aggregate more",
                WORKER_MEMORY_BYTES_MAX >> 20
            ),
        ));
    }
    let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    Err(Failure::internal(format!("the analytics worker stopped ({status}): {last}")))
}

/// Reads `from` to its end, keeping at most `max` bytes; the flag says more came.
fn kept(mut from: impl Read, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut over = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
                over |= n > room;
            }
        }
    }
    (kept, over)
}

/// The worker's side (`posledger analytics-worker`): limits itself, reads one job from
/// standard input, runs it and writes its answer to standard output.
pub fn serve_one() -> ExitCode {
    let limit =
        rustix::process::Rlimit { current: Some(WORKER_MEMORY_BYTES_MAX), maximum: Some(WORKER_MEMORY_BYTES_MAX) };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Data, limit) {
        eprintln!("error: limiting the worker's memory: {e}");
        return ExitCode::from(2);
    }
    // A lower priority is a courtesy; a system that refuses it still runs the job.
    let _ = rustix::process::setpriority_process(None, WORKER_NICE);
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(WORKER_JOB_BYTES_MAX).read_to_end(&mut input) {
        eprintln!("error: reading the job: {e}");
        return ExitCode::from(2);
    }
    let answer = match serde_json::from_slice::<Job>(&input) {
        Ok(job) => match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime.block_on(job.run(None)),
            Err(e) => Err(Failure::internal(format!("starting the worker's runtime: {e}"))),
        },
        Err(e) => Err(Failure::internal(format!("reading the job: {e}"))),
    };
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &answer).map_err(std::io::Error::from).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the answer: {e}");
            ExitCode::from(2)
        }
    }
}

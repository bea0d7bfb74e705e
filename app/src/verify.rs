//! Verify: the whole log (every checksum, position, revision and link of the hash chain),
//! then the books rebuilt from position 0 (every invariant) and compared with the ledger
//! checkpoint. Offline ([`verify_offline`]: no process has the store; nothing is opened for
//! writing, so a damaged log is reported, never repaired) or online ([`App::verify`]: by the
//! process that holds the store, up to its head as of the call, while appends go on).

use ingest::store::{VerifiedHead, VerifyError, VerifyReport};
use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::{App, DataDir, Failure, Warn};

/// What verify found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The log's walk, when it completed.
    pub log: Option<VerifyReport>,
    /// The books' rebuild, when the log was whole.
    pub books: Option<ledger::BooksReport>,
    /// What failed: damage in the log, or a difference in the books.
    pub error: Option<String>,
}

impl Verified {
    /// Whether everything checked out.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.books.as_ref().is_some_and(ledger::BooksReport::ok)
    }
}

fn log_result<T>(walked: Result<T, VerifyError>) -> Result<Result<T, String>, Failure> {
    match walked {
        Ok(report) => Ok(Ok(report)),
        Err(VerifyError::Io(e)) => Err(Failure::unavailable(e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Verifies a data directory no process has open: the strict walk of the log (every byte
/// after the last commit must be zero), then, when the log is whole, the books.
pub async fn verify_offline(dir: &DataDir, warn: Warn) -> Result<Verified, Failure> {
    if dir.store().is_some() {
        // On KurrentDB there are no files to walk: the namespace is read again from the server.
        let app = App::open_dir(dir.clone(), warn).await?;
        let verified = app.verify().await;
        app.close().await;
        return verified;
    }
    crate::not_on_kurrent(dir)?;
    let events = dir.events();
    if !events.exists() {
        return Err(Failure::not_found("no_log", format!("{} holds no event log", dir.root().display())));
    }
    let walk = log_result(ingest::store::verify_dir_head(&events))?;
    let (log, head) = match walk {
        Ok(walked) => walked,
        Err(e) => return Ok(Verified { log: None, books: None, error: Some(e) }),
    };
    let app = App::open(dir.clone(), warn)?;
    app.remember_verified(&head);
    let verified = app.verify_books(log).await;
    app.close().await;
    verified
}

/// Whole-log verifies that may run at once in a process (over HTTP and the socket alike): each
/// walks the whole log and rebuilds the books, so more are refused as busy.
pub const VERIFIES_RUNNING_MAX: usize = 1;

impl App {
    /// Verifies the log up to its head as of the call (appends may go on meanwhile), then the
    /// books. One at a time ([`VERIFIES_RUNNING_MAX`]); another meanwhile is refused as busy.
    pub async fn verify(&self) -> Result<Verified, Failure> {
        let _place = self.verifies.try_enter().ok_or_else(|| {
            Failure::new(
                crate::Class::Busy,
                "too_many_requests",
                format!("{VERIFIES_RUNNING_MAX} verify is running already; retry when it has finished"),
            )
        })?;
        match log_result(self.walk_log(None).await)? {
            Ok((log, head)) => {
                if let Some(head) = head {
                    self.remember_verified(&head);
                }
                self.verify_books(log).await
            }
            Err(e) => Ok(Verified { log: None, books: None, error: Some(e) }),
        }
    }

    /// Walks the log up to its head as of the call: the embedded log's strict walk (from
    /// `from`, an earlier verify's end, when given) with where it ended; or the KurrentDB
    /// namespace read again from the server (whole, with no place to resume from).
    pub(crate) async fn walk_log(
        &self,
        from: Option<VerifiedHead>,
    ) -> Result<(VerifyReport, Option<VerifiedHead>), VerifyError> {
        match &*self.store {
            Store::Embedded(_) => {
                let store = self.store.clone();
                let walked = tokio::task::spawn_blocking(move || match &*store {
                    Store::Embedded(log) => ingest::store::verify_open_from(log, from.as_ref()),
                    Store::Kurrent(_) => Err(VerifyError::Io("the store changed backend".into())),
                })
                .await
                .map_err(|e| VerifyError::Io(format!("verify stopped: {e}")))?;
                walked.map(|(report, head)| (report, Some(head)))
            }
            Store::Kurrent(k) => match k.verify().await {
                Ok((events, head_hash)) => Ok((VerifyReport { events, frames: events, segments: 0, head_hash }, None)),
                Err(kurrent::OpenError::Server(e)) => Err(VerifyError::Io(e.to_string())),
                Err(kurrent::OpenError::Damaged(reason)) => Err(VerifyError::Corrupt {
                    segment: 0,
                    file: format!("KurrentDB namespace {}", k.namespace()),
                    offset: 0,
                    reason,
                }),
            },
        }
    }

    /// Records where a verify of the log ended, for the next one to resume from (a failure
    /// to write it only costs the next verify a whole walk).
    pub(crate) fn remember_verified(&self, head: &ingest::store::VerifiedHead) {
        if let Err(e) = crate::jsonfile::save(&self.dir.verified(), head) {
            (self.warn)(&format!("{e} (the next verify walks the whole log)"));
        }
    }

    async fn verify_books(&self, log: VerifyReport) -> Result<Verified, Failure> {
        match ledger::verify_books(&*self.store, Some(&self.dir.ledger_checkpoint()), log.events).await {
            Ok(books) => {
                let error = (!books.ok()).then(|| "books: they differ from the ledger checkpoint".to_owned());
                Ok(Verified { log: Some(log), books: Some(books), error })
            }
            Err(e) => Ok(Verified { log: Some(log), books: None, error: Some(format!("books: {e}")) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a verify runs, another is refused as busy; once it ends, the next one runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_verify_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::open(DataDir::new(dir.path()), Box::new(|_| {})).expect("app");
        let running = app.verifies.try_enter().expect("a place");
        let busy = app.verify().await.map(|_| ()).expect_err("busy");
        assert_eq!((busy.class, busy.code.as_str()), (crate::Class::Busy, "too_many_requests"));
        drop(running);
        let done = app.verify().await.expect("verified");
        assert!(done.error.is_none(), "{:?}", done.error);
    }
}

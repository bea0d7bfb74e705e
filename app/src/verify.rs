//! Verify: the whole log (every checksum, position, revision and link of the hash chain),
//! then the books rebuilt from position 0 (every invariant) and compared with the ledger
//! checkpoint. Offline ([`verify_offline`]: no process has the store; nothing is opened for
//! writing, so a damaged log is reported, never repaired) or online ([`App::verify`]: by the
//! process that holds the store, up to its head as of the call, while appends go on).

use ingest::store::{VerifyError, VerifyReport};
use serde::{Deserialize, Serialize};

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

impl App {
    /// Verifies the log up to its head as of the call (appends may go on meanwhile), then the
    /// books.
    pub async fn verify(&self) -> Result<Verified, Failure> {
        let store = self.store.clone();
        let walked = tokio::task::spawn_blocking(move || ingest::store::verify_open_from(&store, None))
            .await
            .map_err(|e| Failure::internal(format!("verify stopped: {e}")))?;
        match log_result(walked)? {
            Ok((log, head)) => {
                self.remember_verified(&head);
                self.verify_books(log).await
            }
            Err(e) => Ok(Verified { log: None, books: None, error: Some(e) }),
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

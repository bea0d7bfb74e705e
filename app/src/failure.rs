//! [`Failure`]: why a use case did not do what it was asked, said once for every adapter.
//!
//! Each failure has a [`Class`] (whose fault it is; the HTTP API turns it into a status, the
//! command line into an exit code), a stable `code` (the HTTP problem's `type`), a message
//! for people, and where it applies the offending field and records.

use serde::{Deserialize, Serialize};

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The request is malformed (a parameter, a field).
    Invalid,
    /// The request is well formed but its content is refused (a record, a statement, an
    /// action that the break does not allow).
    Refused,
    /// The caller may not do this.
    Forbidden,
    /// What the request names does not exist.
    NotFound,
    /// The request conflicts with what is recorded (resolved already, a waiting proposal).
    Conflict,
    /// The request is over a size limit.
    TooLarge,
    /// Too much is running; try again shortly.
    Busy,
    /// The store or the file system failed, or a resource limit was reached.
    Unavailable,
    /// A bug or damage: what should hold did not.
    Internal,
}

/// One offending record of a refused batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// 1-based record (line) number.
    pub record: u64,
    /// The offending field, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// Why a use case failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Whose fault.
    pub class: Class,
    /// Stable kind, e.g. `unknown_break`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// The offending field, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every offending record, for a batch refused for its records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RecordError>,
}

impl Failure {
    /// A failure of `class` with a stable `code`.
    pub fn new(class: Class, code: &str, message: impl Into<String>) -> Failure {
        Failure { class, code: code.to_owned(), message: message.into(), field: None, errors: Vec::new() }
    }

    /// Names the offending field.
    pub fn field(mut self, field: impl Into<String>) -> Failure {
        self.field = Some(field.into());
        self
    }

    /// A malformed request.
    pub fn invalid(code: &str, message: impl Into<String>) -> Failure {
        Failure::new(Class::Invalid, code, message)
    }

    /// The store or the file system failed.
    pub fn unavailable(message: impl Into<String>) -> Failure {
        Failure::new(Class::Unavailable, "unavailable", message)
    }

    /// What should hold did not.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(Class::Internal, "internal", message)
    }

    /// Nothing of that name.
    pub fn not_found(code: &str, message: impl Into<String>) -> Failure {
        Failure::new(Class::NotFound, code, message)
    }

    /// Whether the failure is the system's (I/O, damage, a bug) rather than the request's.
    pub fn is_system(&self) -> bool {
        matches!(self.class, Class::Unavailable | Class::Internal)
    }

    /// Whether the request was refused for what it asked (bad, forbidden, unknown, in
    /// conflict), as opposed to not done for now (busy, too large, the system failing).
    pub fn is_refusal(&self) -> bool {
        matches!(self.class, Class::Invalid | Class::Refused | Class::Forbidden | Class::NotFound | Class::Conflict)
    }
}

impl From<ingest::store::ReadError> for Failure {
    fn from(e: ingest::store::ReadError) -> Failure {
        Failure::unavailable(format!("reading the event log: {e}"))
    }
}

impl From<ingest::store::AppendError> for Failure {
    fn from(e: ingest::store::AppendError) -> Failure {
        Failure::unavailable(format!("recording: {e}"))
    }
}

impl From<ledger::ReplayError> for Failure {
    fn from(e: ledger::ReplayError) -> Failure {
        match e {
            // Reading or saving failed: it may succeed later.
            ledger::ReplayError::Read(_) | ledger::ReplayError::Checkpoint(_) => {
                Failure::unavailable(format!("booking the event log: {e}"))
            }
            // A stored event that does not decode, books that do not balance: damage or a bug.
            e => Failure::internal(format!("booking the event log: {e}")),
        }
    }
}

impl From<ingest::pipeline::IngestError> for Failure {
    fn from(e: ingest::pipeline::IngestError) -> Failure {
        Failure::unavailable(e.to_string())
    }
}

/// Why a use case that writes text (the journal, the event listing) stopped.
#[derive(Debug, thiserror::Error)]
pub enum OutputFailure {
    /// Writing the output failed (a reader that went away is one: `| head`).
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    /// The use case failed.
    #[error(transparent)]
    Failed(Failure),
}

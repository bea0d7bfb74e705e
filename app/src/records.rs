//! Terminal and admin records into the log: a whole input read by one process
//! ([`App::ingest_reader`], pipelined), a chunk at a time among other writers
//! ([`App::ingest_lines`], a running server's clients), or one request that is stored only
//! if every record in it is valid ([`App::ingest_request`], the HTTP API, with
//! `Idempotency-Key` answers remembered).

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::sync::Arc;

use ingest::pipeline::{IngestSummary, InputKind, RecordOutcome};
use serde::{Deserialize, Serialize};

use crate::failure::RecordError;
use crate::{App, Class, Failure};

/// Idempotency keys remembered (the oldest are forgotten first).
pub const IDEMPOTENCY_KEYS_MAX: usize = 10_000;
/// Bytes of answers the remembered idempotency keys may hold together (the oldest go first).
pub const IDEMPOTENCY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// An ingest that stopped before the end of its input: what was settled before it stopped
/// (stored for good; running the same input again stores nothing twice) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{failure}")]
pub struct Stopped {
    /// The records settled before the failure.
    pub summary: IngestSummary,
    /// What stopped it.
    pub failure: Failure,
}

/// The answer to one request of records: one outcome per record, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsAnswer {
    /// Records in the request.
    pub records: usize,
    /// Stored now.
    pub accepted: usize,
    /// Stored before.
    pub duplicates: usize,
    /// Refused by a rule (nothing is stored for them).
    pub rejected: usize,
    /// Each record's outcome.
    pub results: Vec<RecordOutcome>,
}

/// A request's idempotency key: whose (a key id) and the key, with a digest of the body it
/// came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who sent it (keys of different callers never meet).
    pub owner: String,
    /// The key, including what kind of records it was for.
    pub key: String,
    /// BLAKE3 of the body.
    pub digest: [u8; 32],
}

/// Answers remembered by idempotency key, within [`IDEMPOTENCY_KEYS_MAX`] and
/// [`IDEMPOTENCY_BYTES_MAX`] (in memory: after a restart a retried request answers
/// `duplicate` per record, which is still exactly once).
#[derive(Default)]
pub(crate) struct Idempotency(std::sync::Mutex<Remembered>);

/// An answer remembered: the body's digest, the answer's size in bytes, the answer.
type Kept = ([u8; 32], usize, Arc<RecordsAnswer>);

#[derive(Default)]
struct Remembered {
    bytes: usize,
    order: VecDeque<(String, String)>,
    answers: HashMap<(String, String), Kept>,
}

impl Idempotency {
    /// The answer remembered for a key: the same answer again for the same body, a conflict
    /// for another.
    fn recall(&self, key: &IdempotencyKey) -> Option<Result<Arc<RecordsAnswer>, Failure>> {
        let remembered = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (digest, _, answer) = remembered.answers.get(&(key.owner.clone(), key.key.clone()))?;
        if *digest != key.digest {
            return Some(Err(Failure::new(
                Class::Conflict,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another body",
            )
            .field("Idempotency-Key")));
        }
        Some(Ok(answer.clone()))
    }

    /// Remembers an answer, forgetting the oldest past the limits.
    fn remember(&self, key: &IdempotencyKey, answer: Arc<RecordsAnswer>) {
        // What the answer costs to keep: its size as JSON.
        let size = serde_json::to_vec(answer.as_ref()).map_or(0, |v| v.len());
        let mut remembered = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = (key.owner.clone(), key.key.clone());
        remembered.bytes += size;
        match remembered.answers.insert(entry.clone(), (key.digest, size, answer)) {
            Some((_, old, _)) => remembered.bytes -= old,
            None => remembered.order.push_back(entry),
        }
        while remembered.order.len() > IDEMPOTENCY_KEYS_MAX || remembered.bytes > IDEMPOTENCY_BYTES_MAX {
            let Some(old) = remembered.order.pop_front() else { break };
            if let Some((_, size, _)) = remembered.answers.remove(&old) {
                remembered.bytes -= size;
            }
        }
    }
}

impl App {
    /// Reads NDJSON records from `input` to its end and stores what is accepted, deciding one
    /// chunk while the one before is made durable; `progress` is called after every chunk with
    /// the bytes read and the running totals. For a process that has the store to itself.
    pub async fn ingest_reader(
        &self,
        input: impl BufRead,
        kind: InputKind,
        progress: impl FnMut(u64, &IngestSummary),
    ) -> Result<IngestSummary, Stopped> {
        let stopped = |failure| Stopped { summary: IngestSummary::default(), failure };
        let mut ingestor = self.ingestor().await.map_err(stopped)?;
        if kind == InputKind::Admin {
            // A merchant closes only with a zero payable: the books say whose is not.
            let owed = self.books().await.map_err(stopped)?.merchants_with_payable();
            ingestor.set_owed_merchants(owed);
        }
        ingestor
            .ingest_reader(input, kind, progress)
            .await
            .map_err(|f| Stopped { summary: f.summary, failure: f.error.into() })
    }

    /// Decides and stores one chunk of NDJSON lines (at most
    /// [`ingest::pipeline::CHUNK_RECORDS_MAX`], each with its line number): one outcome per
    /// line, a bad line rejected on its own. Other writers go on between chunks.
    pub async fn ingest_lines(&self, lines: &[(u64, Vec<u8>)], kind: InputKind) -> Result<Vec<RecordOutcome>, Failure> {
        if lines.len() > ingest::pipeline::CHUNK_RECORDS_MAX {
            return Err(Failure::new(
                Class::TooLarge,
                "too_many_records",
                format!("{} lines in one chunk; at most {}", lines.len(), ingest::pipeline::CHUNK_RECORDS_MAX),
            ));
        }
        let mut ingestor = self.ingestor().await?;
        if kind == InputKind::Admin {
            ingestor.set_owed_merchants(self.books().await?.merchants_with_payable());
        }
        Ok(ingestor.process_chunk(lines, kind).await?)
    }

    /// Stores a request's records only if every one of them is valid (one bad record: nothing
    /// stored, every bad record listed). A `scope` (a terminal key's merchant) refuses the
    /// request if any record is for another merchant. With an idempotency key, the first
    /// answer is remembered and given again for the same body (a conflict for another).
    pub async fn ingest_request(
        &self,
        kind: InputKind,
        lines: &[(u64, Vec<u8>)],
        scope: Option<&str>,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Arc<RecordsAnswer>, Failure> {
        if let Some(answer) = idempotency.and_then(|k| self.idempotency.recall(k)) {
            return answer;
        }
        // Every record must be valid before any is decided: a request with a bad one (a wrong
        // type, a negative or huge amount, a full card number ...) stores nothing.
        let mut valid = Vec::new();
        let mut invalid: Vec<ingest::feed::LineError> = Vec::new();
        for chunk in lines.chunks(ingest::pipeline::CHUNK_RECORDS_MAX) {
            match ingest::pipeline::validate_chunk(chunk, kind) {
                Ok(v) => valid.push(v),
                Err(errors) => invalid.extend(errors),
            }
        }
        if let Some(first) = invalid.first() {
            let mut failure = Failure::new(
                Class::Refused,
                "invalid_record",
                format!(
                    "{} of {} records are invalid; nothing was stored (record {}: {})",
                    invalid.len(),
                    lines.len(),
                    first.line,
                    first.reason
                ),
            );
            if let Some(field) = &first.field {
                failure = failure.field(format!("/{}/{field}", first.line - 1));
            }
            failure.errors = invalid
                .iter()
                .take(ingest::pipeline::REJECTIONS_LISTED_MAX)
                .map(|e| RecordError { record: e.line, field: e.field.clone(), reason: e.reason.clone() })
                .collect();
            return Err(failure);
        }
        if let Some(merchant) = scope {
            check_scope(lines, merchant)?;
        }
        let mut ingestor = self.ingestor().await?;
        // Checked again under the write model's lock, which every request holds while it
        // decides and remembers: of two requests with one key, the second sees the first's
        // answer.
        if let Some(answer) = idempotency.and_then(|k| self.idempotency.recall(k)) {
            return answer;
        }
        if kind == InputKind::Admin {
            // Closing a merchant needs a zero payable: the books say who is owed, now.
            ingestor.set_owed_merchants(self.books().await?.merchants_with_payable());
        }
        let mut results = Vec::with_capacity(lines.len());
        for chunk in valid {
            let decided = ingestor
                .process_valid(chunk)
                .await
                .map_err(|e| Failure::unavailable(format!("the store did not take the records: {e}")))?;
            results.extend(decided);
        }
        let count = |f: fn(&RecordOutcome) -> bool| results.iter().filter(|o| f(o)).count();
        let answer = Arc::new(RecordsAnswer {
            records: results.len(),
            accepted: count(|o| matches!(o, RecordOutcome::Accepted { .. })),
            duplicates: count(|o| matches!(o, RecordOutcome::Duplicate { .. })),
            rejected: count(|o| matches!(o, RecordOutcome::Rejected(_))),
            results,
        });
        if let Some(key) = idempotency {
            self.idempotency.remember(key, answer.clone());
        }
        drop(ingestor);
        Ok(answer)
    }
}

/// A terminal key posts for its own merchant only: checked before anything is decided.
fn check_scope(lines: &[(u64, Vec<u8>)], merchant: &str) -> Result<(), Failure> {
    #[derive(Deserialize)]
    struct Scope {
        merchant_id: Option<String>,
    }
    for (line, bytes) in lines {
        let scope: Option<Scope> = serde_json::from_slice(bytes).ok();
        if let Some(Scope { merchant_id: Some(m) }) = scope
            && m != merchant
        {
            return Err(Failure::new(
                Class::Forbidden,
                "forbidden",
                format!("record {line} is for merchant {m}; this key posts for {merchant} only"),
            )
            .field(format!("/{}/merchant_id", line - 1)));
        }
    }
    Ok(())
}

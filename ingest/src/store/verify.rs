//! `verify`: a strict, read-only walk of the whole log.
//!
//! Unlike opening the store, which cuts off a torn last frame, verify accepts no damage at
//! all: every segment header, frame header, record checksum, position, stream revision,
//! event id and link of the hash chain must be right, up to the last byte of the last
//! segment.

use std::fs::File;
use std::path::Path;

use super::embedded::{IndexBuilderForVerify, TailCheck, acquire, list_segments, scan_log};
use super::format;

/// What a successful verify found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events in the log.
    pub events: u64,
    /// Frames (group commits).
    pub frames: u64,
    /// Segment files.
    pub segments: u32,
    /// The hash-chain link of the last frame, hex: it commits to the whole history.
    pub head_hash: String,
}

/// Why verify failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The data directory could not be read or is in use by a writer.
    #[error("{0}")]
    Io(String),
    /// The log is damaged or was altered at this place.
    #[error("segment {segment} ({file}) at offset {offset}: {reason}")]
    Corrupt {
        /// Segment index.
        segment: u32,
        /// Segment file name.
        file: String,
        /// Byte offset of the damaged frame or record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Verifies the log in `dir`. Refuses to run while a writer holds the store open, because a
/// frame being written would look like damage.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let lock_path = dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| VerifyError::Io(format!("{}: {e}", lock_path.display())))?;
    if !acquire(|| lock.try_lock_shared().is_ok()) {
        return Err(VerifyError::Io(format!("{} is open for writing by another process", dir.display())));
    }
    let paths = list_segments(dir).map_err(|e| VerifyError::Io(e.to_string()))?;
    if paths.is_empty() {
        return Err(VerifyError::Io(format!("{} holds no event log", dir.display())));
    }
    let mut checker =
        IndexBuilderForVerify::new(&paths).map_err(|e| VerifyError::Io(format!("{}: {e}", dir.display())))?;
    let (end, fault) = scan_log(&paths, &mut checker.builder(), TailCheck::Strict, None);
    if let Some(f) = fault {
        return Err(VerifyError::Corrupt {
            segment: f.segment,
            file: format::segment_file_name(f.segment),
            offset: f.offset,
            reason: f.reason,
        });
    }
    Ok(VerifyReport {
        events: end.events,
        frames: end.frames,
        segments: end.segments,
        head_hash: hex::encode(end.link),
    })
}

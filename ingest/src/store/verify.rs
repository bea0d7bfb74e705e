//! `verify`: a strict, read-only walk of the whole log.
//!
//! Unlike opening the store, which cuts off a torn last frame, verify accepts no damage at
//! all: every segment header, frame header, record checksum, position, stream revision,
//! event id and link of the hash chain must be right, up to the last byte of the last
//! segment.

use std::fs::File;
use std::path::Path;

use super::embedded::acquire;
use super::format;
use super::scan::{IndexBuilderForVerify, TailCheck, list_segments, scan_log};

/// What a successful verify found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    verify_dir_keeping(dir, super::INDEX_RECENT_ENTRIES_MAX_DEFAULT)
}

/// [`verify_dir`], with where it ended: what the next verify may resume from.
pub fn verify_dir_head(dir: &Path) -> Result<(VerifyReport, VerifiedHead), VerifyError> {
    let _lock = shared_lock(dir)?;
    let (report, end) = walk_inner(dir, super::INDEX_RECENT_ENTRIES_MAX_DEFAULT, TailCheck::Strict, None)?;
    let head = VerifiedHead {
        events: end.events,
        link: hex::encode(end.link),
        segment: end.end_segment,
        offset: end.end_offset,
    };
    Ok((report, head))
}

/// The store's lock taken shared: no writer while it is held.
fn shared_lock(dir: &Path) -> Result<File, VerifyError> {
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
    Ok(lock)
}

/// [`verify_dir`], its index keeping `recent_entries_max` entries of each map in memory.
pub(crate) fn verify_dir_keeping(dir: &Path, recent_entries_max: usize) -> Result<VerifyReport, VerifyError> {
    let _lock = shared_lock(dir)?;
    walk(dir, recent_entries_max, TailCheck::Strict, None)
}

/// Where a verify ended: the head it checked up to, its hash-chain link, and where its last
/// frame ends on disk — what the next verify resumes from ([`verify_open_from`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifiedHead {
    /// Events checked (the head).
    pub events: u64,
    /// The link of the frame that ends there, hex.
    pub link: String,
    /// The segment the head's frame is in.
    pub segment: u32,
    /// The offset in that segment where the next frame starts.
    pub offset: u64,
}

/// A scan that checks what the walk itself checks (every frame's header and records, their
/// checksums, positions and the hash chain) and nothing about streams or ids.
struct ChainOnly;

impl super::scan::ScanVisitor for ChainOnly {
    fn record(&mut self, _: &super::format::RecordView<'_>, _: u64) -> Result<(), String> {
        Ok(())
    }

    fn frame(&mut self, _: u64, _: u64, _: u64) {}
}

/// Verifies what was appended since `from` (a verify's [`VerifiedHead`]) up to the head as of
/// the call, in a store open in this process: every frame's checksums, positions and the hash
/// chain from `from`'s link to the head's — the cost of what is new, not of the history.
/// Without `from`, the whole log ([`verify_open`]). Returns the report (frames counts those
/// walked) and where the next verify resumes.
pub fn verify_open_from(
    store: &super::EmbeddedStore,
    from: Option<&VerifiedHead>,
) -> Result<(VerifyReport, VerifiedHead), VerifyError> {
    let (head, link) = store.head_and_link();
    let (end, report) = match from {
        None => {
            let (report, end) = walk_to(store.dir(), super::INDEX_RECENT_ENTRIES_MAX_DEFAULT, Some(head))?;
            (end, report)
        }
        Some(from) => {
            let mut link_from = [0u8; 32];
            hex::decode_to_slice(&from.link, &mut link_from)
                .map_err(|_| VerifyError::Io(format!("the verified head's link {:?} is not a hash", from.link)))?;
            if from.events > head {
                return Err(VerifyError::Io(format!(
                    "the verified head {} is past the log's head {head}",
                    from.events
                )));
            }
            let paths = list_segments(store.dir()).map_err(|e| VerifyError::Io(e.to_string()))?;
            let resume = super::scan::Resume {
                segment: from.segment,
                offset: from.offset,
                events: from.events,
                link: link_from,
            };
            let (end, fault) = scan_log(&paths, &mut ChainOnly, TailCheck::Strict, Some(resume), Some(head));
            if let Some(f) = fault {
                return Err(VerifyError::Corrupt {
                    segment: f.segment,
                    file: format::segment_file_name(f.segment),
                    offset: f.offset,
                    reason: f.reason,
                });
            }
            let report = VerifyReport {
                events: end.events,
                frames: end.frames,
                segments: end.segments,
                head_hash: hex::encode(end.link),
            };
            (end, report)
        }
    };
    check_head(&report, head, link)?;
    let verified = VerifiedHead {
        events: end.events,
        link: hex::encode(end.link),
        segment: end.end_segment,
        offset: end.end_offset,
    };
    Ok((report, verified))
}

fn check_head(report: &VerifyReport, head: u64, link: [u8; 32]) -> Result<(), VerifyError> {
    if report.events != head {
        return Err(VerifyError::Io(format!("the log ends at {} events, its head is at {head}", report.events)));
    }
    if report.head_hash != hex::encode(link) {
        return Err(VerifyError::Corrupt {
            segment: report.segments.saturating_sub(1),
            file: format::segment_file_name(report.segments.saturating_sub(1)),
            offset: 0,
            reason: format!(
                "the hash chain ends in {}, the store's head link is {}",
                report.head_hash,
                hex::encode(link)
            ),
        });
    }
    Ok(())
}

/// Verifies the log of a store open in this process, while it may be appended to: every
/// frame up to the head as of the call is checked as [`verify_dir`] checks it, and the hash
/// chain must end in the head's link; what is appended meanwhile, and the zero-filled space
/// after the head, are not looked at.
pub fn verify_open(store: &super::EmbeddedStore) -> Result<VerifyReport, VerifyError> {
    verify_open_from(store, None).map(|(report, _)| report)
}

fn walk(
    dir: &Path,
    recent_entries_max: usize,
    tail: TailCheck,
    stop_at: Option<u64>,
) -> Result<VerifyReport, VerifyError> {
    walk_inner(dir, recent_entries_max, tail, stop_at).map(|(report, _)| report)
}

/// [`walk`] strictly up to `stop_at` events, with where it ended.
fn walk_to(
    dir: &Path,
    recent_entries_max: usize,
    stop_at: Option<u64>,
) -> Result<(VerifyReport, super::scan::ScanEnd), VerifyError> {
    walk_inner(dir, recent_entries_max, TailCheck::Strict, stop_at)
}

fn walk_inner(
    dir: &Path,
    recent_entries_max: usize,
    tail: TailCheck,
    stop_at: Option<u64>,
) -> Result<(VerifyReport, super::scan::ScanEnd), VerifyError> {
    let paths = list_segments(dir).map_err(|e| VerifyError::Io(e.to_string()))?;
    if paths.is_empty() {
        return Err(VerifyError::Io(format!("{} holds no event log", dir.display())));
    }
    let mut checker = IndexBuilderForVerify::new(&paths, recent_entries_max)
        .map_err(|e| VerifyError::Io(format!("{}: {e}", dir.display())))?;
    let mut builder = checker.builder();
    let (end, fault) = scan_log(&paths, &mut builder, tail, None, stop_at);
    // The scratch index failing (a full temporary directory) is not damage in the log.
    if let Some(e) = builder.io_error.take() {
        return Err(VerifyError::Io(format!("verify's scratch index: {e}")));
    }
    if let Some(f) = fault {
        return Err(VerifyError::Corrupt {
            segment: f.segment,
            file: format::segment_file_name(f.segment),
            offset: f.offset,
            reason: f.reason,
        });
    }
    Ok((
        VerifyReport {
            events: end.events,
            frames: end.frames,
            segments: end.segments,
            head_hash: hex::encode(end.link),
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::event;
    use crate::store::{EmbeddedStore, EventStore, ExpectedRevision};

    #[test]
    fn verify_with_an_index_on_disk_checks_as_in_memory() {
        // 16 entries in memory: runs are written, merged and thrown away while the log is
        // checked, the report is the in-memory one's, and the scratch directory goes.
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        rt.block_on(async {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            for i in 0..400u64 {
                let e = event(&format!("v{i}"), i);
                store.append(&format!("s{}", i % 150), ExpectedRevision::Any, vec![e]).await.expect("append");
            }
        });
        let before: Vec<_> = scratch_dirs();
        let report = verify_dir_keeping(dir.path(), 16).expect("verified");
        assert_eq!(report.events, 400);
        assert_eq!(report, verify_dir(dir.path()).expect("verified in memory"));
        assert_eq!(scratch_dirs(), before, "the scratch directory is removed");
    }

    #[test]
    fn a_verify_resumes_where_the_last_one_ended_and_checks_only_what_is_new() {
        // From the head a full verify reached, a resumed one walks only the frames appended
        // since, ends in the same head hash as a full walk, and finds damage in them.
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let append = |from: u64, to: u64| {
            rt.block_on(async {
                for i in from..to {
                    let e = event(&format!("r{i}"), i);
                    store.append(&format!("s{}", i % 7), ExpectedRevision::Any, vec![e]).await.expect("append");
                }
            })
        };
        append(0, 50);
        let (full, head) = verify_open_from(&store, None).expect("full");
        assert_eq!((full.events, head.events), (50, 50));
        append(50, 80);
        let (resumed, next) = verify_open_from(&store, Some(&head)).expect("resumed");
        let (whole, _) = verify_open_from(&store, None).expect("full again");
        assert_eq!((resumed.events, resumed.frames), (80, 30), "only the 30 new frames");
        assert_eq!(resumed.head_hash, whole.head_hash);
        assert_eq!(next.events, 80);
        // Nothing new: nothing walked, the same head.
        let (again, _) = verify_open_from(&store, Some(&next)).expect("nothing new");
        assert_eq!((again.frames, again.head_hash), (0, whole.head_hash.clone()));
        // A verified head whose link is not the log's is refused by the first new frame.
        append(80, 81);
        let forged = VerifiedHead { link: "00".repeat(32), ..next.clone() };
        assert!(matches!(verify_open_from(&store, Some(&forged)), Err(VerifyError::Corrupt { .. })));
        assert!(verify_open_from(&store, Some(&next)).is_ok());
    }

    fn scratch_dirs() -> Vec<std::path::PathBuf> {
        let pid = format!("posledger-verify-{}-", std::process::id());
        let mut dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dirs.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&pid)));
        dirs.sort();
        dirs
    }
}

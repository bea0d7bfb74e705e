//! The embedded backend: segment files in a data directory, one writer thread with group
//! commit, indexes of bounded memory (spilling to `keys/`) rebuilt from the log when the
//! store opens without a usable snapshot.
//!
//! The writer takes every append waiting in its queue, checks each request against the
//! committed index plus what the same batch already staged, encodes the accepted events into
//! one frame, writes it with one call and makes it durable with one fdatasync. Only then does
//! it publish the new head and answer the callers. A write or sync failure stops the writer
//! (fail-stop): the file's state is unknown until the store is reopened and recovered.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::fault::{LogFile, LogFs, RealFs, ZERO_FILL_ALIGN};
use super::format::{
    self, FRAME_HEADER_LEN, NO_LOCATION, RecordMeta, RecordView, SEGMENT_HEADER_LEN, location, split_location,
};
use super::index::{HashKeyMap, Index, StreamHead};
use super::keymap::{self, INDEX_FILTER_BYTES_DEFAULT, INDEX_RECENT_ENTRIES_MAX_DEFAULT, SpillOptions};
use super::{
    AppendError, AppendRequest, Appended, EventStore, ExpectedRevision, READ_EVENTS_MAX, ReadError, RecordedEvent,
    check_request, stream_hash,
};

/// Default size at which a segment is closed and the next one started.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 512 << 20;
/// Default most events in one group commit.
pub const BATCH_EVENTS_MAX_DEFAULT: usize = 65_536;
/// Default most bytes of records in one group commit (a batch may exceed it by one request).
pub const BATCH_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Default events between index snapshots written while the store runs.
pub const SNAPSHOT_EVERY_EVENTS_DEFAULT: u64 = 2_000_000;
/// Most events one `append_many` call may carry in all.
pub const APPEND_MANY_EVENTS_MAX: usize = 100_000;
/// Largest frame a writer produces and a reader accepts; anything larger is damage. It also
/// bounds how far past the last commit an unfinished one can have left bytes.
const FRAME_BYTES_MAX: u64 = 64 << 20;
/// Most bytes of records one `append_many` call may carry (so a frame stays within
/// [`FRAME_BYTES_MAX`]: a batch is at most `batch_bytes_max` plus one call).
pub const APPEND_MANY_BYTES_MAX: usize = 32 << 20;
/// Space zero-filled ahead of the log at a time.
const PREALLOCATE_STEP_BYTES: u64 = 16 << 20;
/// How many bytes a sequential read takes from a segment at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Jobs that may wait for the writer before appenders are held back.
const WRITER_QUEUE_JOBS_MAX: usize = 1024;

/// How to open an [`EmbeddedStore`].
#[derive(Clone)]
pub struct StoreOptions {
    /// Segment size limit in bytes.
    pub segment_bytes_max: u64,
    /// Most events in one group commit.
    pub batch_events_max: usize,
    /// Most record bytes in one group commit.
    pub batch_bytes_max: usize,
    /// The file layer the writer uses; tests put a crashing one here.
    pub fs: Arc<dyn LogFs>,
    /// Write an index snapshot every this many events (0: only on a clean close), so that
    /// opening after a crash scans at most about this many events.
    pub snapshot_every_events: u64,
    /// Stream and event-id index entries each index keeps in memory before writing them out
    /// as a sorted run.
    pub index_recent_entries_max: usize,
    /// Bytes of each index's filter over the entries on disk.
    pub index_filter_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            fs: Arc::new(RealFs),
            snapshot_every_events: SNAPSHOT_EVERY_EVENTS_DEFAULT,
            index_recent_entries_max: INDEX_RECENT_ENTRIES_MAX_DEFAULT,
            index_filter_bytes: INDEX_FILTER_BYTES_DEFAULT,
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// I/O error on the data directory.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another process holds the store open.
    #[error("{0} is locked by another posledger process")]
    Locked(PathBuf),
    /// Damage before the end of the log: refused, never truncated.
    #[error("corrupt event log: segment {segment} ({file}) at offset {offset}: {reason}")]
    Corrupt {
        /// Segment index.
        segment: u32,
        /// File name.
        file: String,
        /// Byte offset of the damaged frame or record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

/// What recovery did when the store opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Events found.
    pub events: u64,
    /// Events the index snapshot covered (the log after them was scanned), if one was used.
    pub from_snapshot: Option<u64>,
    /// Bytes of a torn last frame that were cut off (never acknowledged to anyone).
    pub truncated_bytes: u64,
}

struct Shared {
    dir: PathBuf,
    index: RwLock<Index>,
    /// Set when the writer stopped after a failed write.
    failed: std::sync::atomic::AtomicBool,
}

/// A job for the writer thread.
struct Job {
    requests: Vec<AppendRequest>,
    reply: oneshot::Sender<Reply>,
}

/// The writer's answer to a job. The requests travel back so that the caller, not the writer
/// thread, pays for freeing them.
struct Reply {
    results: Vec<Result<Appended, AppendError>>,
    _requests: Vec<AppendRequest>,
}

impl Job {
    fn answer(self, results: Vec<Result<Appended, AppendError>>) {
        let _ = self.reply.send(Reply { results, _requests: self.requests });
    }

    fn fail(self, e: impl Fn() -> AppendError) {
        let n = self.requests.len();
        self.answer((0..n).map(|_| Err(e())).collect());
    }
}

/// The embedded event store. Cheap to share behind an `Arc`; dropping it stops the writer
/// after the queued appends are written.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    head_rx: watch::Receiver<u64>,
    writer: Option<JoinHandle<()>>,
    _lock: File,
    report: OpenReport,
}

/// How long opening waits for a lock held by another process before giving up. A lock can be
/// held for a moment by a process that is exiting, or by a child forked by another thread of
/// this process between its fork and exec.
pub(crate) const LOCK_WAIT_MS_MAX: u64 = 2000;

/// Tries `take` until it succeeds or [`LOCK_WAIT_MS_MAX`] has passed.
pub(crate) fn acquire(mut take: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if take() {
            return true;
        }
        if start.elapsed() >= std::time::Duration::from_millis(LOCK_WAIT_MS_MAX) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_owned(), source }
}

/// The segment files in `dir`, in order, checked to be numbered 0, 1, 2, ... without a gap.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, OpenError> {
    let mut indices = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("seg-").and_then(|s| s.strip_suffix(".log")) {
            let index: u32 = n.parse().map_err(|_| OpenError::Corrupt {
                segment: 0,
                file: name.to_owned(),
                offset: 0,
                reason: "segment file name is not seg-NNNNNN.log".into(),
            })?;
            indices.push(index);
        }
    }
    indices.sort_unstable();
    for (expected, &index) in indices.iter().enumerate() {
        if index as usize != expected {
            return Err(OpenError::Corrupt {
                segment: expected as u32,
                file: format::segment_file_name(expected as u32),
                offset: 0,
                reason: "segment file is missing".into(),
            });
        }
    }
    Ok(indices.iter().map(|&i| dir.join(format::segment_file_name(i))).collect())
}

/// A problem found while scanning the log: where, and whether anything valid follows it.
#[derive(Debug)]
pub(crate) struct ScanFault {
    pub segment: u32,
    pub offset: u64,
    pub reason: String,
    /// The fault is inside a frame whose hash-chain link checked out: the frame was written
    /// whole, so this is damage (or an I/O error), never an unfinished commit.
    pub in_verified_frame: bool,
}

/// Where a scan starts when the log before it is known (from the index snapshot).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    segment: u32,
    offset: u64,
    events: u64,
    link: [u8; 32],
}

/// What a scan visits.
pub(crate) trait ScanVisitor {
    fn record(&mut self, view: &RecordView<'_>, loc: u64) -> Result<(), String>;
    fn frame(&mut self, first_position: u64, frame_loc: u64, frame_end: u64);
    fn segment_end(&mut self, _segment: u32, _len: u64) {}
}

/// The result of scanning the whole log.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ScanEnd {
    pub events: u64,
    pub link: [u8; 32],
    pub frames: u64,
    pub segments: u32,
}

/// How much of the zero-filled space after a segment's last frame a scan checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TailCheck {
    /// Every byte after the last frame of every segment must be zero (verify).
    Strict,
    /// Only the last segment's next [`FRAME_BYTES_MAX`] bytes, where an unfinished commit
    /// could have left bytes (opening the store).
    LastSegment,
}

/// Walks every segment, frame and record, checking magic numbers, checksums, the hash chain,
/// position order, and whatever the visitor checks. A segment's data ends where the next
/// frame header would start and is all zeros (the space is zero-filled ahead of the log).
/// Stops at the first fault, or at the first frame boundary with `stop_at` events behind it
/// (a log another thread is appending to: what follows is not checked).
pub(crate) fn scan_log(
    paths: &[PathBuf],
    visitor: &mut dyn ScanVisitor,
    tail: TailCheck,
    resume: Option<Resume>,
    stop_at: Option<u64>,
) -> (ScanEnd, Option<ScanFault>) {
    let mut end = ScanEnd::default();
    let mut body = Vec::new();
    let first_segment = resume.map_or(0, |r| r.segment);
    if let Some(r) = resume {
        end.events = r.events;
        end.link = r.link;
    }
    let stopped = |end: &ScanEnd| stop_at.is_some_and(|s| end.events >= s);
    for (seg, path) in paths.iter().enumerate().skip(first_segment as usize) {
        if stopped(&end) && end.segments > 0 {
            break;
        }
        let seg = seg as u32;
        end.segments = seg + 1;
        let fault = |offset: u64, reason: String| ScanFault { segment: seg, offset, reason, in_verified_frame: false };
        let verified_fault =
            |offset: u64, reason: String| ScanFault { segment: seg, offset, reason, in_verified_frame: true };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return (end, Some(fault(0, format!("cannot open: {e}")))),
        };
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = io::BufReader::with_capacity(READ_CHUNK_BYTES, file);
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        if let Err(e) = reader.read_exact(&mut header) {
            return (end, Some(fault(0, format!("segment header unreadable: {e}"))));
        }
        match format::decode_segment_header(&header) {
            Ok(h) if h.index != seg => {
                return (end, Some(fault(0, "segment header names another segment".into())));
            }
            Ok(h) if h.first_position != end.events && resume.is_none_or(|r| r.segment != seg) => {
                return (
                    end,
                    Some(fault(0, "segment header's first position does not follow the previous segment".into())),
                );
            }
            Ok(_) => {}
            Err(e) => return (end, Some(fault(0, e.into()))),
        }
        let mut offset = SEGMENT_HEADER_LEN as u64;
        if let Some(r) = resume
            && r.segment == seg
        {
            if let Err(e) = reader.seek_relative((r.offset - offset) as i64) {
                return (end, Some(fault(r.offset, format!("cannot seek: {e}"))));
            }
            offset = r.offset;
        }
        while offset < file_len {
            if stopped(&end) {
                return (end, None);
            }
            let mut fh = [0u8; FRAME_HEADER_LEN];
            let n = (file_len - offset).min(FRAME_HEADER_LEN as u64) as usize;
            if let Err(e) = reader.read_exact(&mut fh[..n]) {
                return (end, Some(fault(offset, format!("frame header unreadable: {e}"))));
            }
            if fh.iter().all(|&b| b == 0) {
                // The end of this segment's data: what follows must be unused, zeroed space.
                let last = seg as usize == paths.len() - 1;
                let limit = match tail {
                    TailCheck::Strict => file_len,
                    TailCheck::LastSegment if last => file_len.min(offset + FRAME_BYTES_MAX),
                    TailCheck::LastSegment => offset,
                };
                if let Some(at) = first_nonzero(&mut reader, offset + n as u64, limit) {
                    let reason = format!("non-zero byte at offset {at} after the last commit");
                    return (end, Some(fault(offset, reason)));
                }
                break;
            }
            if n < FRAME_HEADER_LEN {
                return (end, Some(fault(offset, "frame header is truncated".into())));
            }
            let header = match format::decode_frame_header(&fh) {
                Ok(h) => h,
                Err(e) => return (end, Some(fault(offset, e.into()))),
            };
            let body_start = offset + FRAME_HEADER_LEN as u64;
            let body_len = u64::from(header.body_len);
            if body_len > FRAME_BYTES_MAX || body_start + body_len > file_len {
                return (end, Some(fault(offset, "frame body runs past the end of the segment".into())));
            }
            if header.first_position != end.events {
                return (
                    end,
                    Some(fault(
                        offset,
                        format!("frame starts at position {}, expected {}", header.first_position, end.events),
                    )),
                );
            }
            body.resize(body_len as usize, 0);
            if let Err(e) = reader.read_exact(&mut body) {
                return (end, Some(fault(offset, format!("frame body unreadable: {e}"))));
            }
            if !format::check_frame_link(&end.link, &fh, &body, &header.link) {
                return (end, Some(fault(offset, "hash chain broken: frame content does not match its link".into())));
            }
            let frame_end = body_start + body_len;
            visitor.frame(header.first_position, location(seg, offset), frame_end);
            let mut at = 0usize;
            let mut count = 0u32;
            while at < body.len() {
                let rec_offset = body_start + at as u64;
                let (view, len) = match format::decode_record(&body[at..]) {
                    Ok(v) => v,
                    Err(e) => return (end, Some(verified_fault(rec_offset, e.into()))),
                };
                if view.meta.position != end.events {
                    return (
                        end,
                        Some(verified_fault(
                            rec_offset,
                            format!("record has position {}, expected {}", view.meta.position, end.events),
                        )),
                    );
                }
                if let Err(e) = visitor.record(&view, location(seg, rec_offset)) {
                    return (end, Some(verified_fault(rec_offset, e)));
                }
                end.events += 1;
                count += 1;
                at += len;
            }
            if count != header.record_count {
                return (end, Some(verified_fault(offset, "frame record count does not match its records".into())));
            }
            end.link = header.link;
            end.frames += 1;
            offset = frame_end;
        }
        visitor.segment_end(seg, offset.min(file_len));
    }
    (end, None)
}

/// The offset of the first non-zero byte in `from..to` of the reader's file (which is
/// positioned at `from`), if any.
fn first_nonzero(reader: &mut impl Read, from: u64, to: u64) -> Option<u64> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        if reader.read_exact(&mut buf[..n]).is_err() {
            return Some(at);
        }
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Some(at + i as u64);
        }
        at += n as u64;
    }
    None
}

/// Whether a complete, valid frame header for some later position starts anywhere after
/// `offset` in `path`. A torn tail has none; damage in the middle of the log does. Reads the
/// file in chunks that overlap by a header, so a header across a chunk border is seen.
fn valid_frame_after(path: &Path, offset: u64, min_position: u64) -> bool {
    let Ok(file) = File::open(path) else {
        return true;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return true;
    };
    let mut buf = vec![0u8; READ_CHUNK_BYTES + FRAME_HEADER_LEN];
    let mut at = offset + 1;
    while at + FRAME_HEADER_LEN as u64 <= len {
        let n = ((len - at) as usize).min(buf.len());
        if file.read_exact_at(&mut buf[..n], at).is_err() {
            return true;
        }
        for i in 0..=n - FRAME_HEADER_LEN {
            if buf[i..i + 4] == format::FRAME_MAGIC
                && let Ok(h) = format::decode_frame_header(&buf[i..i + FRAME_HEADER_LEN])
                && h.first_position >= min_position
            {
                return true;
            }
        }
        at += (n - FRAME_HEADER_LEN + 1) as u64;
    }
    false
}

/// Builds the index while the log is scanned, checking stream revisions and unique ids.
pub(crate) struct IndexBuilder<'a> {
    index: &'a mut Index,
    frame_end: u64,
    /// An I/O error that stopped the scan (the index's own files, not damage in the log).
    pub(crate) io_error: Option<io::Error>,
}

impl<'a> IndexBuilder<'a> {
    fn new(index: &'a mut Index) -> Self {
        IndexBuilder { index, frame_end: 0, io_error: None }
    }

    /// The reason a scan stops for `e`; an I/O error is also kept apart from damage.
    fn failed(&mut self, e: ReadError) -> String {
        // A read past a file's end is the log being short: damage, as before.
        if let ReadError::Io(io) = &e
            && io.kind() != io::ErrorKind::UnexpectedEof
            && self.io_error.is_none()
        {
            self.io_error = Some(io::Error::new(io.kind(), io.to_string()));
        }
        format!("reading an earlier record: {e}")
    }
}

/// The index `verify` builds to check revisions and ids, then throws away.
/// Its runs go to a scratch directory of its own, made afresh (owner only) under the
/// system's temporary directory (the data directory is only read), and removed when it is
/// dropped, so its memory is bounded like the store's. Its runs are neither synced nor kept
/// once merged away: nothing needs them after a crash.
pub(crate) struct IndexBuilderForVerify {
    index: Index,
    scratch: PathBuf,
}

impl IndexBuilderForVerify {
    pub(crate) fn new(paths: &[PathBuf], recent_entries_max: usize) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let files = open_for_reading(paths)?;
        // A name nobody else holds: made here, or another is tried.
        let mut attempts = 0;
        let scratch = loop {
            attempts += 1;
            let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!("posledger-verify-{}-{n}-{nanos:x}", std::process::id()));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => continue,
                Err(e) => return Err(e),
            }
        };
        let spill = SpillOptions {
            dir: scratch.clone(),
            recent_entries_max: recent_entries_max.max(1),
            filter_bytes: INDEX_FILTER_BYTES_DEFAULT,
            durable: false,
        };
        Ok(IndexBuilderForVerify { index: Index::with_spill(files, Some(spill)), scratch })
    }

    pub(crate) fn builder(&mut self) -> IndexBuilder<'_> {
        IndexBuilder::new(&mut self.index)
    }
}

impl Drop for IndexBuilderForVerify {
    fn drop(&mut self) {
        // The index goes first: dropping it waits for a merge still writing into the scratch.
        drop(std::mem::replace(&mut self.index, Index::with_spill(Vec::new(), None)));
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

/// Read handles of every segment.
fn open_for_reading(paths: &[PathBuf]) -> io::Result<Vec<Arc<File>>> {
    paths.iter().map(|p| File::open(p).map(Arc::new)).collect()
}

impl ScanVisitor for IndexBuilder<'_> {
    fn record(&mut self, view: &RecordView<'_>, loc: u64) -> Result<(), String> {
        let head = self.index.stream_head(view.stream).map_err(|e| self.failed(e))?;
        let expected = head.map_or((0, NO_LOCATION), |h| (h.revision + 1, h.loc));
        if (view.meta.revision, view.meta.prev_loc) != expected {
            return Err(format!(
                "stream {:?}: record has revision {}, expected {}",
                view.stream, view.meta.revision, expected.0
            ));
        }
        self.index.set_stream_head(view.stream, loc, head.is_some()).map_err(|e| self.failed(e))?;
        if !self.index.insert_id(view.event_id, loc).map_err(|e| self.failed(e))? {
            return Err(format!("event id {} appears twice", view.event_id));
        }
        self.index.add_sparse(view.meta.position, loc, self.frame_end);
        Ok(())
    }
    fn frame(&mut self, first_position: u64, frame_loc: u64, frame_end: u64) {
        // An entry at a frame header has `frame_end` equal to its own offset, which tells a
        // reader to read the header first.
        self.index.add_sparse(first_position, frame_loc, split_location(frame_loc).1);
        self.index.last_frame = frame_loc;
        self.frame_end = frame_end;
    }
    fn segment_end(&mut self, segment: u32, len: u64) {
        self.index.set_segment_len(segment, len);
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore, OpenError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens the store in `dir`: scans and checks the whole log, cuts off a torn last frame,
    /// refuses damage anywhere else, rebuilds the indexes and starts the writer.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<EmbeddedStore, OpenError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock =
            File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_at(&lock_path))?;
        if !acquire(|| lock.try_lock().is_ok()) {
            return Err(OpenError::Locked(dir));
        }
        let mut report = OpenReport::default();
        let mut paths = list_segments(&dir)?;
        if paths.is_empty() {
            create_segment(&*options.fs, &dir, 0, 0).map_err(io_at(&dir))?;
            paths = list_segments(&dir)?;
        }
        let snapshot = dir.join(SNAPSHOT_FILE);
        let spill = SpillOptions {
            dir: dir.join(KEYS_DIR),
            recent_entries_max: options.index_recent_entries_max.max(1),
            filter_bytes: options.index_filter_bytes,
            durable: true,
        };
        let (mut index, resume) = load_index(&snapshot, &paths, &spill).map_err(io_at(&dir))?;
        let mut builder = IndexBuilder::new(&mut index);
        let (mut end, fault) = scan_log(&paths, &mut builder, TailCheck::LastSegment, resume, None);
        if let Some(e) = builder.io_error.take() {
            return Err(OpenError::Io { path: dir.join(KEYS_DIR), source: e });
        }
        if let Some(fault) = fault {
            let last = paths.len() as u32 - 1;
            let path = &paths[fault.segment as usize];
            // Only a frame that never checked out whole, at the very end of the log, can be an
            // unfinished commit. Anything else is damage: refused, never cut.
            let torn_tail =
                !fault.in_verified_frame && fault.segment == last && !valid_frame_after(path, fault.offset, end.events);
            if !torn_tail {
                return Err(OpenError::Corrupt {
                    segment: fault.segment,
                    file: format::segment_file_name(fault.segment),
                    offset: fault.offset,
                    reason: fault.reason,
                });
            }
            if fault.offset < SEGMENT_HEADER_LEN as u64 {
                // The segment's own header is torn: it was being created when the process
                // died and holds nothing. Start it again.
                fs::remove_file(path).map_err(io_at(path))?;
                create_segment(&*options.fs, &dir, last, end.events).map_err(io_at(&dir))?;
            } else {
                // An unfinished commit: zero it, back to unused space. Scanning stopped at it,
                // so nothing past it is in the index.
                report.truncated_bytes = discard_torn_tail(&*options.fs, path, fault.offset).map_err(io_at(path))?;
            }
            // Index again so the index holds exactly what the repaired log holds.
            let (again, resume) = load_index(&snapshot, &paths, &spill).map_err(io_at(&dir))?;
            index = again;
            let mut builder = IndexBuilder::new(&mut index);
            let (end2, fault2) = scan_log(&paths, &mut builder, TailCheck::LastSegment, resume, None);
            if let Some(e) = builder.io_error.take() {
                return Err(OpenError::Io { path: dir.join(KEYS_DIR), source: e });
            }
            if let Some(f) = fault2 {
                return Err(OpenError::Corrupt {
                    segment: f.segment,
                    file: format::segment_file_name(f.segment),
                    offset: f.offset,
                    reason: f.reason,
                });
            }
            end = end2;
        }
        index.head = end.events;
        index.link = end.link;
        report.events = index.head;
        report.from_snapshot = resume.map(|r| r.events);
        let last_seg = paths.len() as u32 - 1;
        let seg_len = index.segment_lens.last().copied().unwrap_or(SEGMENT_HEADER_LEN as u64);
        let seg_path = &paths[last_seg as usize];
        let file = options.fs.open(seg_path, false).map_err(io_at(seg_path))?;
        let preallocated = fs::metadata(seg_path).map_err(io_at(seg_path))?.len();

        let (head_tx, head_rx) = watch::channel(index.head);
        let writer_state = Writer {
            dir: dir.clone(),
            options: options.clone(),
            file,
            segment: last_seg,
            segment_len: seg_len,
            preallocated,
            head: index.head,
            link: index.link,
            head_tx,
            spare: Batch::default(),
            snapshot_head: index.head,
            snapshot_writer: None,
        };
        let shared = Arc::new(Shared { dir, index: RwLock::new(index), failed: Default::default() });
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_JOBS_MAX);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("posledger-writer".into())
            .spawn(move || writer_state.run(writer_shared, rx))
            .map_err(io_at(&shared.dir))?;
        Ok(EmbeddedStore { shared, jobs: Some(tx), head_rx, writer: Some(writer), _lock: lock, report })
    }

    /// What recovery found and did when this store was opened.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The hash-chain link of the last committed frame: commits to the whole log.
    pub fn head_hash(&self) -> [u8; 32] {
        self.shared.index.read().map(|i| i.link).unwrap_or_default()
    }

    /// The head and the hash-chain link of the frame that ends there, read together.
    pub fn head_and_link(&self) -> (u64, [u8; 32]) {
        self.shared.index.read().map(|i| (i.head, i.link)).unwrap_or_default()
    }

    /// Waits for queued appends to be written and stops the writer.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.jobs.take();
        if let Some(handle) = self.writer.take() {
            // A writer that panicked may have left the index half updated: no snapshot then.
            if handle.join().is_err() {
                return;
            }
            // With the writer stopped cleanly, the index describes the whole log: save it so
            // the next open scans nothing. After a write failure the log's end is unknown.
            if !self.shared.failed.load(std::sync::atomic::Ordering::SeqCst) {
                let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
                // A merge still running is waited for, so the closing snapshot names its run; one
                // that failed leaves the runs as they were, which the snapshot then names.
                let _ = index.finish_merges();
                // Nothing appended or merged since the snapshot this open started from: it is
                // current.
                let current = self.report.from_snapshot == Some(index.head) && !index.has_retired();
                // A snapshot that cannot be written only makes the next open slower.
                if index.head > 0 && !current && index.write_snapshot(&self.shared.dir.join(SNAPSHOT_FILE)).is_ok() {
                    remove_files(&index.take_retired());
                }
            }
        }
    }

    fn read_all_sync(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        read_all_shared(&self.shared, from, max)
    }
}

fn read_all_shared(shared: &Shared, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
    let (files, lens, head, start) = {
        let index = shared.index.read().map_err(|_| poisoned())?;
        if from >= index.head {
            return Ok(Vec::new());
        }
        let i = index.sparse.partition_point(|e| e.position <= from);
        // Position `from` exists, so some entry (the first frame's) is at or before it.
        let start = index.sparse[i.saturating_sub(1)];
        (index.files.clone(), index.segment_lens.clone(), index.head, start)
    };
    let want = max.min(READ_EVENTS_MAX).min((head - from) as usize);
    let mut out = Vec::with_capacity(want.min(4096));
    let (mut seg, mut off) = split_location(start.loc);
    let mut frame_end = start.frame_end;
    let mut buf = Vec::new();
    while out.len() < want {
        let seg_len = lens.get(seg as usize).copied().unwrap_or(0);
        if off >= frame_end {
            if off >= seg_len {
                seg += 1;
                off = SEGMENT_HEADER_LEN as u64;
                frame_end = off;
                if seg as usize >= files.len() {
                    break;
                }
                continue;
            }
            let mut fh = [0u8; FRAME_HEADER_LEN];
            files[seg as usize].read_exact_at(&mut fh, off)?;
            let header = format::decode_frame_header(&fh).map_err(|reason| ReadError::Corrupt {
                segment: seg,
                offset: off,
                reason,
            })?;
            off += FRAME_HEADER_LEN as u64;
            frame_end = off + u64::from(header.body_len);
            continue;
        }
        let chunk = ((frame_end - off) as usize).min(READ_CHUNK_BYTES);
        buf.resize(chunk, 0);
        files[seg as usize].read_exact_at(&mut buf, off)?;
        let mut at = 0;
        while at < buf.len() && out.len() < want {
            let need = format::RECORD_PREFIX_LEN
                + if buf.len() - at >= 4 { format::le_u32(&buf[at..]) as usize } else { usize::MAX / 2 };
            if buf.len() - at < need {
                if at == 0 {
                    // One record larger than the chunk: read exactly it.
                    buf.resize(need.min((frame_end - off) as usize), 0);
                    files[seg as usize].read_exact_at(&mut buf, off)?;
                    continue;
                }
                break;
            }
            let (view, len) = format::decode_record(&buf[at..]).map_err(|reason| ReadError::Corrupt {
                segment: seg,
                offset: off + at as u64,
                reason,
            })?;
            if view.meta.position >= from {
                out.push(view.to_recorded());
            }
            at += len;
        }
        off += at as u64;
    }
    Ok(out)
}

fn poisoned() -> ReadError {
    ReadError::Io(io::Error::other("store index lock poisoned by a panicked thread"))
}

/// The index snapshot's file name in the data directory.
const SNAPSHOT_FILE: &str = "index.snap";
/// The directory of the indexes' run files in the data directory.
const KEYS_DIR: &str = "keys";

/// Removes files no snapshot names any more; one that stays is removed at the next open.
fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        let _ = fs::remove_file(path);
    }
}

/// The index to start scanning with: the snapshot's, if there is one and the log holds
/// exactly the frame it ends with, and where to resume; otherwise an empty one. Run files
/// the chosen index does not use are removed.
fn load_index(snapshot: &Path, paths: &[PathBuf], spill: &SpillOptions) -> io::Result<(Index, Option<Resume>)> {
    let (index, resume) = snapshot_index(snapshot, paths, spill)?;
    if resume.is_none() && snapshot.exists() {
        // An unusable snapshot goes before the runs it named: it can never be taken later
        // with runs built again under the same numbers.
        fs::remove_file(snapshot)?;
        if let Some(dir) = snapshot.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    keymap::remove_unused_runs(&spill.dir, &index.run_paths())?;
    Ok((index, resume))
}

fn snapshot_index(snapshot: &Path, paths: &[PathBuf], spill: &SpillOptions) -> io::Result<(Index, Option<Resume>)> {
    let files = open_for_reading(paths)?;
    let fresh = |files| Index::with_spill(files, Some(spill.clone()));
    let Some(index) = Index::read_snapshot(snapshot, files.clone(), Some(spill.clone()))? else {
        return Ok((fresh(files), None));
    };
    let matches = || -> io::Result<Option<Resume>> {
        let Some(segment) = index.segment_lens.len().checked_sub(1).and_then(|s| u32::try_from(s).ok()) else {
            return Ok(None);
        };
        let (frame_seg, frame_off) = split_location(index.last_frame);
        if index.head == 0 || frame_seg != segment || segment as usize >= paths.len() {
            return Ok(None);
        }
        let mut fh = [0u8; FRAME_HEADER_LEN];
        match index.files[segment as usize].read_exact_at(&mut fh, frame_off) {
            Ok(()) => {}
            // The log is shorter than the snapshot says: it does not match.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let Ok(h) = format::decode_frame_header(&fh) else { return Ok(None) };
        let end = frame_off + FRAME_HEADER_LEN as u64 + u64::from(h.body_len);
        let offset = index.segment_lens[segment as usize];
        let same = h.link == index.link && h.first_position + u64::from(h.record_count) == index.head && end == offset;
        Ok(same.then_some(Resume { segment, offset, events: index.head, link: index.link }))
    };
    match matches()? {
        Some(resume) => Ok((index, Some(resume))),
        None => Ok((fresh(files), None)),
    }
}

/// Zeros the bytes an unfinished commit left from `offset` on (at most [`FRAME_BYTES_MAX`] of
/// them) and syncs. Returns how many bytes it cleared, up to the last non-zero one.
fn discard_torn_tail(fs: &dyn LogFs, path: &Path, offset: u64) -> io::Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let end = len.min(offset + FRAME_BYTES_MAX);
    let mut last_nonzero = offset;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut at = offset;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            last_nonzero = at + i as u64 + 1;
        }
        at += n as u64;
    }
    let mut f = fs.open(path, false)?;
    let aligned = offset.next_multiple_of(ZERO_FILL_ALIGN).min(end.max(offset));
    f.write_all_at(&vec![0u8; (aligned - offset) as usize], offset)?;
    if end > aligned {
        f.zero_fill(aligned, end.next_multiple_of(ZERO_FILL_ALIGN))?;
    }
    f.sync_data()?;
    Ok(last_nonzero - offset)
}

fn create_segment(fs: &dyn LogFs, dir: &Path, index: u32, first_position: u64) -> io::Result<Box<dyn LogFile>> {
    let path = dir.join(format::segment_file_name(index));
    let mut file = fs.open(&path, true)?;
    file.write_all_at(&format::encode_segment_header(index, first_position), 0)?;
    file.sync_data()?;
    fs.sync_dir(dir)?;
    Ok(file)
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.stop();
    }
}

/// State private to the writer thread.
struct Writer {
    dir: PathBuf,
    options: StoreOptions,
    file: Box<dyn LogFile>,
    segment: u32,
    segment_len: u64,
    /// The segment file's length: space up to here is allocated (zero-filled or written).
    preallocated: u64,
    head: u64,
    link: [u8; 32],
    head_tx: watch::Sender<u64>,
    /// The last batch's buffers, kept for the next one.
    spare: Batch,
    /// Head when the last snapshot was taken.
    snapshot_head: u64,
    /// The thread writing the last snapshot, if it may still run.
    snapshot_writer: Option<JoinHandle<()>>,
}

/// An event staged in the current batch, for idempotency checks within the batch.
struct Staged {
    loc: u64,
    body_offset: usize,
}

/// Everything one batch stages before it is written.
#[derive(Default)]
struct Batch {
    /// Frame header space followed by the records.
    frame: Vec<u8>,
    first_position: u64,
    next_position: u64,
    /// Streams the batch appends to, by their full 128-bit hash: name, new head, and whether
    /// the index held the stream before the batch.
    streams: HashKeyMap<u128, (String, StreamHead, bool)>,
    ids: HashKeyMap<u128, Staged>,
    recorded_at_us: i64,
}

impl Writer {
    fn run(mut self, shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
        let mut failed: Option<String> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            let mut events: usize = jobs[0].requests.iter().map(|r| r.events.len()).sum();
            let mut bytes: usize = jobs[0].requests.iter().map(request_bytes).sum();
            while events < self.options.batch_events_max && bytes < self.options.batch_bytes_max {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.requests.iter().map(|r| r.events.len()).sum::<usize>();
                        bytes += job.requests.iter().map(request_bytes).sum::<usize>();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            if let Some(reason) = &failed {
                for job in jobs {
                    job.fail(|| AppendError::Io(reason.clone()));
                }
                continue;
            }
            if let Err(e) = self.commit_batch(&shared, jobs) {
                shared.failed.store(true, std::sync::atomic::Ordering::SeqCst);
                failed = Some(e);
            }
        }
        // A snapshot still being written must land before the closing one replaces it.
        if let Some(handle) = self.snapshot_writer.take() {
            let _ = handle.join();
        }
    }

    fn commit_batch(&mut self, shared: &Shared, jobs: Vec<Job>) -> Result<(), String> {
        if self.segment_len >= self.options.segment_bytes_max
            && let Err(e) = self.roll_segment(shared)
        {
            let reason = format!("starting segment {}: {e}", self.segment + 1);
            reply_all_failed(jobs, &reason);
            return Err(reason);
        }
        // The batch reuses the previous one's buffers: no allocation or page faults per commit.
        let mut batch = std::mem::take(&mut self.spare);
        batch.frame.clear();
        batch.frame.resize(FRAME_HEADER_LEN, 0);
        batch.streams.clear();
        batch.ids.clear();
        batch.first_position = self.head;
        batch.next_position = self.head;
        batch.recorded_at_us = now_us();
        let mut results = Vec::with_capacity(jobs.len());
        {
            // Readers may run meanwhile; the writer is the only one that changes the index.
            let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
            for job in &jobs {
                let total: usize = job.requests.iter().map(|r| r.events.len()).sum();
                let bytes: usize = job.requests.iter().map(request_bytes).sum();
                let job_results: Vec<_> = if total > APPEND_MANY_EVENTS_MAX || bytes > APPEND_MANY_BYTES_MAX {
                    job.requests
                        .iter()
                        .map(|_| {
                            Err(AppendError::Invalid(format!(
                                "one append_many may carry at most {APPEND_MANY_EVENTS_MAX} events \
                                 and {APPEND_MANY_BYTES_MAX} bytes"
                            )))
                        })
                        .collect()
                } else {
                    // A request decided on the effect of an earlier one to the same stream must
                    // not land if that one was refused: its revision may still match.
                    let mut refused: HashKeyMap<u128, ()> = HashKeyMap::default();
                    job.requests
                        .iter()
                        .map(|r| {
                            let result = self.stage(&index, &mut batch, r, &refused);
                            if result.is_err() {
                                refused.insert(stream_hash(&r.stream), ());
                            }
                            result
                        })
                        .collect()
                };
                results.push(job_results);
            }
        }
        let count = batch.next_position - batch.first_position;
        if count > 0 {
            let header = format::encode_frame_header(
                &self.link,
                count as u32,
                batch.first_position,
                &batch.frame[FRAME_HEADER_LEN..],
            );
            batch.frame[..FRAME_HEADER_LEN].copy_from_slice(&header);
            if let Err(e) = self.preallocate(self.segment_len + batch.frame.len() as u64) {
                let reason = format!("segment {}: allocating space: {e}", self.segment);
                reply_all_failed(jobs, &reason);
                return Err(reason);
            }
            let write = self.file.write_all_at(&batch.frame, self.segment_len).and_then(|()| self.file.sync_data());
            if let Err(e) = write {
                let reason = format!("segment {}: {e}", self.segment);
                reply_all_failed(jobs, &reason);
                return Err(reason);
            }
            let frame_loc = location(self.segment, self.segment_len);
            let frame_end = self.segment_len + batch.frame.len() as u64;
            self.segment_len = frame_end;
            self.head = batch.next_position;
            self.link.copy_from_slice(&header[32..64]);
            let mut index = shared.index.write().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = index_batch(&mut index, &mut batch) {
                // The frame is durable but the index could not take it: stop writing; a
                // reopen indexes the log from disk.
                drop(index);
                let reason = format!("indexing the commit: {e}");
                reply_all_failed(jobs, &reason);
                return Err(reason);
            }
            index.last_frame = frame_loc;
            // Entries every stride bytes inside the frame too, so a reader starts near any position.
            let frame_start = split_location(frame_loc).1;
            index.add_sparse(batch.first_position, frame_loc, frame_start);
            let mut at = FRAME_HEADER_LEN;
            while at < batch.frame.len() {
                let position = format::le_u64(&batch.frame[at + format::RECORD_PREFIX_LEN..]);
                index.add_sparse(position, location(self.segment, frame_start + at as u64), frame_end);
                at += format::RECORD_PREFIX_LEN + format::le_u32(&batch.frame[at..]) as usize;
            }
            index.set_segment_len(self.segment, frame_end);
            index.head = self.head;
            index.link = self.link;
            drop(index);
            self.head_tx.send_replace(self.head);
        }
        for (job, job_results) in jobs.into_iter().zip(results) {
            job.answer(job_results);
        }
        self.spare = batch;
        if self.snapshot_due() {
            self.take_snapshot(shared);
        }
        Ok(())
    }

    /// Whether enough has been appended since the last snapshot to take another.
    fn snapshot_due(&self) -> bool {
        let every = self.options.snapshot_every_events;
        every > 0
            && self.head - self.snapshot_head >= every
            && self.snapshot_writer.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Streams the index into the snapshot's temporary file (appends wait meanwhile, readers
    /// do not), then makes it durable and puts it in place on a thread of its own. Taken after
    /// a durable commit, it describes a prefix of the log whatever happens later.
    fn take_snapshot(&mut self, shared: &Shared) {
        self.snapshot_head = self.head;
        let path = shared.dir.join(SNAPSHOT_FILE);
        let tmp = {
            let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
            index.write_snapshot_tmp(&path)
        };
        // A snapshot that cannot be written only makes the next open after a crash slower.
        let Ok(tmp) = tmp else { return };
        // Runs merged away before this snapshot may be named by the one it replaces: they go
        // once it is in place.
        let retired = shared.index.write().unwrap_or_else(|p| p.into_inner()).take_retired();
        let spawned = std::thread::Builder::new().name("posledger-snapshot".into()).spawn(move || {
            if super::index::finish_snapshot(&tmp, &path).is_ok() {
                remove_files(&retired);
            }
        });
        self.snapshot_writer = spawned.ok();
    }

    /// Makes sure `..end` of the current segment is allocated, zero-filling ahead of the log
    /// in steps of [`PREALLOCATE_STEP_BYTES`], never past the segment's size limit.
    fn preallocate(&mut self, end: u64) -> io::Result<()> {
        if end <= self.preallocated {
            return Ok(());
        }
        // Never zero a byte at or before the log's end: start at the next block after it.
        let from = self.preallocated.max(self.segment_len).next_multiple_of(ZERO_FILL_ALIGN);
        let limit = self.options.segment_bytes_max.next_multiple_of(ZERO_FILL_ALIGN);
        let to = (end + PREALLOCATE_STEP_BYTES).next_multiple_of(ZERO_FILL_ALIGN).min(limit.max(from));
        if to > from {
            self.file.zero_fill(from, to)?;
        }
        // Past the limit the frame itself extends the file.
        self.preallocated = to.max(end);
        Ok(())
    }

    fn roll_segment(&mut self, shared: &Shared) -> io::Result<()> {
        let next = self.segment + 1;
        let file = create_segment(&*self.options.fs, &self.dir, next, self.head)?;
        let read = File::open(self.dir.join(format::segment_file_name(next)))?;
        self.file = file;
        self.segment = next;
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        self.preallocated = SEGMENT_HEADER_LEN as u64;
        let mut index = shared.index.write().unwrap_or_else(|p| p.into_inner());
        index.files.push(Arc::new(read));
        index.set_segment_len(next, SEGMENT_HEADER_LEN as u64);
        Ok(())
    }

    /// Checks one request against the committed index and the batch so far, and stages its
    /// events into the batch's frame if it is accepted.
    fn stage(
        &self,
        index: &Index,
        batch: &mut Batch,
        req: &AppendRequest,
        refused: &HashKeyMap<u128, ()>,
    ) -> Result<Appended, AppendError> {
        check_request(req)?;
        // Idempotency first: a retried append is answered with the original result whatever
        // the stream's revision is now.
        let mut found = Vec::new();
        for (i, e) in req.events.iter().enumerate() {
            if req.events[..i].iter().any(|p| p.event_id == e.event_id) {
                return Err(AppendError::Invalid(format!("event id {} appears twice in one append", e.event_id)));
            }
            if let Some(view) = self.lookup_id(index, batch, e.event_id)? {
                found.push((i, view));
            }
        }
        if !found.is_empty() {
            return duplicate_result(req, &found);
        }
        let hash = stream_hash(&req.stream);
        if refused.contains_key(&hash) && req.expected != ExpectedRevision::Any {
            return Err(AppendError::WrongExpectedRevision {
                stream: req.stream.clone(),
                expected: req.expected,
                actual: None,
            });
        }
        let current = match batch.streams.get(&hash) {
            Some((_, head, _)) => Some(*head),
            None => index.stream_head(&req.stream).map_err(|e| AppendError::Io(e.to_string()))?,
        };
        let ok = match (req.expected, current) {
            (ExpectedRevision::Any, _) => true,
            (ExpectedRevision::NoStream, None) => true,
            (ExpectedRevision::Exact(n), Some(h)) => h.revision == n,
            _ => false,
        };
        if !ok {
            return Err(AppendError::WrongExpectedRevision {
                stream: req.stream.clone(),
                expected: req.expected,
                actual: current.map(|h| h.revision),
            });
        }
        let mut revision = current.map_or(0, |h| h.revision + 1);
        let mut prev_loc = current.map_or(NO_LOCATION, |h| h.loc);
        let first_position = batch.next_position;
        for e in &req.events {
            let body_offset = batch.frame.len();
            let loc = location(self.segment, self.segment_len + body_offset as u64);
            let meta =
                RecordMeta { position: batch.next_position, revision, prev_loc, recorded_at_us: batch.recorded_at_us };
            format::encode_record(&mut batch.frame, meta, &req.stream, e);
            batch.ids.insert(e.event_id.as_u128(), Staged { loc, body_offset });
            prev_loc = loc;
            revision += 1;
            batch.next_position += 1;
        }
        let head = StreamHead { revision: revision - 1, loc: prev_loc };
        match batch.streams.get_mut(&hash) {
            Some((_, h, _)) => *h = head,
            None => {
                // Not in the batch before: `current` came from the index.
                batch.streams.insert(hash, (req.stream.clone(), head, current.is_some()));
            }
        }
        Ok(Appended { first_position, last_revision: revision - 1, duplicate: false })
    }

    /// The stored or staged event with this id.
    fn lookup_id(&self, index: &Index, batch: &Batch, id: Uuid) -> Result<Option<RecordedEvent>, AppendError> {
        if let Some(staged) = batch.ids.get(&id.as_u128()) {
            let (view, _) = format::decode_record(&batch.frame[staged.body_offset..])
                .map_err(|e| AppendError::Io(format!("staged record unreadable: {e}")))?;
            return Ok(Some(view.to_recorded()));
        }
        let io = |e: ReadError| AppendError::Io(e.to_string());
        let Some(loc) = index.id_loc(id).map_err(io)? else { return Ok(None) };
        index.read_at(loc).map(|(e, _)| Some(e)).map_err(io)
    }
}

/// Puts a durable batch's streams and ids into the index.
fn index_batch(index: &mut Index, batch: &mut Batch) -> Result<(), ReadError> {
    for (_, (name, head, indexed)) in batch.streams.drain() {
        index.set_stream_head(&name, head.loc, indexed)?;
    }
    // Every staged id was looked up and found absent when it was staged, and only this thread
    // changes the index.
    for (id, staged) in batch.ids.drain() {
        index.insert_new_id(Uuid::from_u128(id), staged.loc)?;
    }
    Ok(())
}

/// The answer to a request some of whose ids are stored already: the original result if all
/// of them are, with the same content, in order in the same stream; a conflict otherwise.
fn duplicate_result(req: &AppendRequest, found: &[(usize, RecordedEvent)]) -> Result<Appended, AppendError> {
    let conflict = |e: &RecordedEvent| AppendError::IdConflict { event_id: e.data.event_id, position: e.position };
    if found.len() != req.events.len() {
        return Err(conflict(&found[0].1));
    }
    for (k, (i, stored)) in found.iter().enumerate() {
        let consecutive = k == 0 || stored.position == found[k - 1].1.position + 1;
        if stored.stream != req.stream || stored.data != req.events[*i] || !consecutive {
            return Err(conflict(stored));
        }
    }
    let last = &found[found.len() - 1].1;
    Ok(Appended { first_position: found[0].1.position, last_revision: last.revision, duplicate: true })
}

fn request_bytes(r: &AppendRequest) -> usize {
    r.events.iter().map(|e| format::record_len(&r.stream, e)).sum()
}

fn reply_all_failed(jobs: Vec<Job>, reason: &str) {
    for job in jobs {
        job.fail(|| AppendError::Io(reason.to_owned()));
    }
}

impl EventStore for EmbeddedStore {
    async fn append_many(&self, requests: Vec<AppendRequest>) -> Vec<Result<Appended, AppendError>> {
        let n = requests.len();
        let closed = || (0..n).map(|_| Err(AppendError::Closed)).collect();
        let Some(jobs) = &self.jobs else {
            return closed();
        };
        let (reply, rx) = oneshot::channel();
        if jobs.send(Job { requests, reply }).await.is_err() {
            return closed();
        }
        rx.await.map(|reply| reply.results).unwrap_or_else(|_| closed())
    }

    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let index = self.shared.index.read().map_err(|_| poisoned())?;
        let Some(head) = index.stream_head(stream)? else {
            return Ok(Vec::new());
        };
        if from > head.revision {
            return Ok(Vec::new());
        }
        // Follow the back links from the last event down to `from`, then return in order.
        let mut out = Vec::new();
        let mut loc = head.loc;
        loop {
            let (event, prev) = index.read_at(loc)?;
            let revision = event.revision;
            out.push(event);
            if revision == from || prev == NO_LOCATION {
                break;
            }
            loc = prev;
        }
        out.reverse();
        out.truncate(max.min(READ_EVENTS_MAX));
        Ok(out)
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_all_sync(from, max)
    }

    fn blocking_reader(&self) -> Option<super::BlockingReader> {
        let shared = self.shared.clone();
        Some(Box::new(move |from, max| read_all_shared(&shared, from, max)))
    }

    async fn event_by_id(&self, id: Uuid) -> Result<Option<RecordedEvent>, ReadError> {
        let index = self.shared.index.read().map_err(|_| poisoned())?;
        index.id_loc(id)?.map(|loc| index.read_at(loc).map(|(e, _)| e)).transpose()
    }

    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, ReadError> {
        let index = self.shared.index.read().map_err(|_| poisoned())?;
        Ok(index.stream_head(stream)?.map(|h| h.revision))
    }

    fn head(&self) -> u64 {
        *self.head_rx.borrow()
    }

    async fn wait_for(&self, position: u64) {
        let mut rx = self.head_rx.clone();
        let _ = rx.wait_for(|head| *head > position).await;
    }
}

//! The embedded backend: segment files in a data directory, one writer thread with group
//! commit ([`super::writer`]), indexes of bounded memory (spilling to `keys/`) rebuilt from the
//! log when the store opens without a usable snapshot ([`super::scan`]). This file holds the
//! store itself: opening (lock, snapshot, recovery), reads, and the [`EventStore`] methods.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::fault::{LogFile, LogFs, RealFs, ZERO_FILL_ALIGN};
use super::format::{self, FRAME_HEADER_LEN, NO_LOCATION, SEGMENT_HEADER_LEN, split_location};
use super::index::Index;
use super::keymap::{self, INDEX_FILTER_BYTES_DEFAULT, INDEX_RECENT_ENTRIES_MAX_DEFAULT, SpillOptions};
use super::scan::{IndexBuilder, Resume, TailCheck, list_segments, open_for_reading, scan_log, valid_frame_after};
use super::writer::{Batch, Io, Job, Writer};
use super::{AppendError, AppendRequest, Appended, EventStore, READ_EVENTS_MAX, ReadError, RecordedEvent};

/// Default size at which a segment is closed and the next one started.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 512 << 20;
/// Default most events in one group commit.
pub const BATCH_EVENTS_MAX_DEFAULT: usize = 65_536;
/// Default most bytes of records in one group commit (a batch may exceed it by one request).
pub const BATCH_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Default events between index snapshots written while the store runs.
pub const SNAPSHOT_EVERY_EVENTS_DEFAULT: u64 = 2_000_000;
/// Ids a batched lookup asks the index to bring into the cache before it looks them up.
const ID_LOOKUPS_AHEAD: usize = 256;
/// Most events one `append_many` call may carry in all.
pub const APPEND_MANY_EVENTS_MAX: usize = 100_000;
/// Largest frame a writer produces and a reader accepts; anything larger is damage. It also
/// bounds how far past the last commit an unfinished one can have left bytes.
pub(crate) const FRAME_BYTES_MAX: u64 = 64 << 20;
/// Most bytes of records one `append_many` call may carry (so a frame stays within
/// [`FRAME_BYTES_MAX`]: a batch is at most `batch_bytes_max` plus one call).
pub const APPEND_MANY_BYTES_MAX: usize = 32 << 20;
/// Space zero-filled ahead of the log at a time.
pub(crate) const PREALLOCATE_STEP_BYTES: u64 = 16 << 20;
/// How many bytes a sequential read takes from a segment at a time.
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;
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
    /// The commit clock (µs since the epoch) when not the system's: a migration sets each
    /// copied commit's original time through it.
    pub clock: Option<Arc<dyn Fn() -> i64 + Send + Sync>>,
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
            clock: None,
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

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) index: RwLock<Index>,
    /// Set when the writer stopped after a failed write.
    pub(crate) failed: std::sync::atomic::AtomicBool,
    /// Batches the writer staged while the frame before them was being written and synced.
    pub(crate) staged_during_sync: std::sync::atomic::AtomicU64,
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

pub(crate) fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_owned(), source }
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
            file: Some(file),
            io: Io::spawn(index.link).map_err(io_at(&dir))?,
            segment: last_seg,
            segment_len: seg_len,
            preallocated,
            head: index.head,
            head_tx,
            spare: Batch::default(),
            in_flight: None,
            snapshot_head: index.head,
            snapshot_writer: None,
        };
        let shared = Arc::new(Shared {
            dir,
            index: RwLock::new(index),
            failed: Default::default(),
            staged_during_sync: Default::default(),
        });
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

    /// How many batches of appends the writer has checked and staged while the frame before
    /// them was being written and synced (see the writer's commit pipeline), since the store
    /// was opened.
    pub fn batches_staged_during_sync(&self) -> u64 {
        self.shared.staged_during_sync.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The hash-chain link of the last committed frame: commits to the whole log.
    pub fn head_hash(&self) -> [u8; 32] {
        self.shared.index.read().map(|i| i.link).unwrap_or_default()
    }

    /// The head and the hash-chain link of the frame that ends there, read together.
    pub fn head_and_link(&self) -> (u64, [u8; 32]) {
        self.shared.index.read().map(|i| (i.head, i.link)).unwrap_or_default()
    }

    /// How far the log is durable now: the head, its link and each segment's length up to it,
    /// read together. The bytes inside the extent never change.
    pub fn extent(&self) -> super::frames::LogExtent {
        let index = self.shared.index.read().unwrap_or_else(|p| p.into_inner());
        super::frames::LogExtent {
            events: index.head,
            link: index.link,
            segment_lens: index.segment_lens.clone(),
            last_frame: (index.head > 0).then(|| split_location(index.last_frame)),
        }
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
                if current {
                    index.save_filters_if_changed();
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
pub(crate) const SNAPSHOT_FILE: &str = "index.snap";
/// The directory of the indexes' run files in the data directory.
pub(crate) const KEYS_DIR: &str = "keys";

/// Removes files no snapshot names any more; one that stays is removed at the next open.
pub(crate) fn remove_files(paths: &[PathBuf]) {
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
pub(crate) fn discard_torn_tail(fs: &dyn LogFs, path: &Path, offset: u64) -> io::Result<u64> {
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

pub(crate) fn create_segment(
    fs: &dyn LogFs,
    dir: &Path,
    index: u32,
    first_position: u64,
) -> io::Result<Box<dyn LogFile>> {
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
        index.event_by_id(id)
    }

    async fn events_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Option<RecordedEvent>>, ReadError> {
        let index = self.shared.index.read().map_err(|_| poisoned())?;
        let mut found = Vec::with_capacity(ids.len());
        // The index's first reads for the next ids are asked of memory before they are needed.
        for batch in ids.chunks(ID_LOOKUPS_AHEAD) {
            index.touch(std::iter::empty(), batch.iter().copied());
            for &id in batch {
                found.push(index.event_by_id(id)?);
            }
        }
        Ok(found)
    }

    async fn stream_revision(&self, stream: &str) -> Result<Option<u64>, ReadError> {
        let index = self.shared.index.read().map_err(|_| poisoned())?;
        Ok(index.stream_head(stream)?.map(|h| h.revision))
    }

    fn head(&self) -> u64 {
        *self.head_rx.borrow()
    }

    fn position_since(&self, occurred_at_us: i64) -> u64 {
        // A poisoned lock only costs the shortcut: 0 is always a true answer.
        self.shared.index.read().map_or(0, |index| index.position_since(occurred_at_us))
    }

    async fn wait_for(&self, position: u64) {
        let mut rx = self.head_rx.clone();
        let _ = rx.wait_for(|head| *head > position).await;
    }
}

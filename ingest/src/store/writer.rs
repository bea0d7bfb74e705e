//! The writer thread: takes every append waiting in its queue, checks each request against the
//! committed index plus what the batches not yet published staged, encodes the accepted events
//! into one frame, and hands the frame to the I/O thread, which seals it (its header and hash
//! chain link), writes it and makes it durable with one fdatasync (group commit). Only then
//! does the writer publish the new head and answer the callers. A write or sync failure stops
//! the writer (fail-stop): the file's state is unknown until the store is reopened and
//! recovered. It also zero-fills space ahead of the log (on the I/O thread, before the frame),
//! starts segments, spills the index and takes snapshots.
//!
//! # The commit pipeline
//!
//! One frame is in flight at a time. While the I/O thread writes and syncs frame N, the writer
//! stages frame N+1 against the index and frame N's streams and ids. As soon as N is durable,
//! N+1 goes to the I/O thread and the writer publishes N (index, head, answers) while N+1 is
//! written. So the disk's time and the writer's checking and indexing overlap, and the bytes
//! reach the file in the same order as before: N+1 is written only after N's sync returned.
//! Answers, including refusals and duplicates decided against N, are given only once every
//! frame they depend on is durable. If N fails, N+1 fails with it; if N is durable but cannot
//! be indexed, N+1 (already written) is answered with that failure as well, as N is.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::embedded::{
    APPEND_MANY_BYTES_MAX, APPEND_MANY_EVENTS_MAX, PREALLOCATE_STEP_BYTES, SNAPSHOT_FILE, Shared, StoreOptions,
    create_segment, now_us, remove_files,
};
use super::fault::{LogFile, ZERO_FILL_ALIGN};
use super::format::{self, FRAME_HEADER_LEN, NO_LOCATION, RecordMeta, SEGMENT_HEADER_LEN, location};
use super::index::{HashKeyMap, Index, StreamHead};
use super::{
    AppendError, AppendRequest, Appended, ExpectedRevision, ReadError, RecordedEvent, check_request, stream_hash,
};

/// Requests whose index lookups are brought into the cache together before they are staged:
/// enough for their cache misses to overlap, few enough for the lines to stay in the cache.
const TOUCH_AHEAD_REQUESTS: usize = 256;

/// A job for the writer thread.
pub(super) struct Job {
    pub(super) requests: Vec<AppendRequest>,
    pub(super) reply: oneshot::Sender<Reply>,
}

/// The writer's answer to a job. The requests travel back so that the caller, not the writer
/// thread, pays for freeing them.
pub(super) struct Reply {
    pub(super) results: Vec<Result<Appended, AppendError>>,
    _requests: Vec<AppendRequest>,
}

impl Job {
    pub(super) fn answer(self, results: Vec<Result<Appended, AppendError>>) {
        let _ = self.reply.send(Reply { results, _requests: self.requests });
    }

    pub(super) fn fail(self, e: impl Fn() -> AppendError) {
        let n = self.requests.len();
        self.answer((0..n).map(|_| Err(e())).collect());
    }
}

/// State private to the writer thread.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) options: StoreOptions,
    /// The current segment, open for writing; away on the I/O thread while a frame is in flight.
    pub(super) file: Option<Box<dyn LogFile>>,
    pub(super) io: Io,
    pub(super) segment: u32,
    /// The segment's length once the frames staged so far are written.
    pub(super) segment_len: u64,
    /// The segment file's length: space up to here is allocated (zero-filled or written).
    pub(super) preallocated: u64,
    /// The head once the frames staged so far are durable.
    pub(super) head: u64,
    pub(super) head_tx: watch::Sender<u64>,
    /// A published batch's buffers, kept for the next one.
    pub(super) spare: Batch,
    /// The frame the I/O thread is writing, if any.
    pub(super) in_flight: Option<InFlight>,
    /// Head when the last snapshot was taken.
    pub(super) snapshot_head: u64,
    /// The thread writing the last snapshot, if it may still run.
    pub(super) snapshot_writer: Option<JoinHandle<()>>,
}

/// An event staged in the current batch, for idempotency checks within the batch.
struct Staged {
    loc: u64,
    body_offset: usize,
}

/// Everything one batch stages before it is written.
#[derive(Default)]
pub(super) struct Batch {
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

/// A staged batch with the jobs it answers.
struct Staging {
    batch: Batch,
    jobs: Vec<Job>,
    results: Vec<Vec<Result<Appended, AppendError>>>,
}

/// A batch whose frame is on the I/O thread: its frame shared with that thread, its maps
/// still looked at by the staging of the next batch.
pub(super) struct InFlight {
    staging: Staging,
    frame: Arc<Vec<u8>>,
    segment: u32,
    frame_start: u64,
    /// The frame's chain link, once the I/O thread has sealed it.
    link: [u8; 32],
}

impl InFlight {
    fn frame_end(&self) -> u64 {
        self.frame_start + self.frame.len() as u64
    }
}

/// What the I/O thread is asked to do with one frame: zero-fill `zero` ahead of it when set,
/// seal it (its header, with the chain link over its records), write it at `offset`, fdatasync.
struct IoJob {
    file: Box<dyn LogFile>,
    /// Header space, then the records.
    frame: Arc<Vec<u8>>,
    count: u32,
    first_position: u64,
    offset: u64,
    zero: Option<(u64, u64)>,
}

/// The I/O thread's answer: the file back, and the frame's link once it is durable.
struct IoDone {
    file: Box<dyn LogFile>,
    result: Result<[u8; 32], IoFailure>,
}

enum IoFailure {
    Allocating(io::Error),
    Writing(io::Error),
}

/// The thread that seals, writes and syncs frames for the writer, one at a time. It keeps the
/// hash chain: each frame's link is computed from the one before on this thread, off the
/// writer's.
pub(super) struct Io {
    jobs: Option<std_mpsc::SyncSender<IoJob>>,
    done: std_mpsc::Receiver<IoDone>,
    thread: Option<JoinHandle<()>>,
}

impl Io {
    /// Starts the thread; `link` is the link of the log's last frame.
    pub(super) fn spawn(mut link: [u8; 32]) -> io::Result<Io> {
        let (jobs, rx) = std_mpsc::sync_channel::<IoJob>(1);
        let (tx, done) = std_mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name("posledger-sync".into()).spawn(move || {
            for IoJob { mut file, frame, count, first_position, offset, zero } in rx {
                let records = &frame[FRAME_HEADER_LEN..];
                let header = format::encode_frame_header(&link, count, first_position, records);
                link.copy_from_slice(&header[32..64]);
                // The records first, then the header: a process stopped between the two leaves
                // no header where the log ends. The sync after both is what makes the frame
                // durable; until then either may be lost, and recovery cuts a frame whose link
                // does not match as a torn tail.
                let result = match zero.map_or(Ok(()), |(from, to)| file.zero_fill(from, to)) {
                    Err(e) => Err(IoFailure::Allocating(e)),
                    Ok(()) => file
                        .write_all_at(records, offset + FRAME_HEADER_LEN as u64)
                        .and_then(|()| file.write_all_at(&header, offset))
                        .and_then(|()| file.sync_data())
                        .map(|()| link)
                        .map_err(IoFailure::Writing),
                };
                // The writer takes the frame back for its next batch once this copy is gone.
                drop(frame);
                if tx.send(IoDone { file, result }).is_err() {
                    return;
                }
            }
        })?;
        Ok(Io { jobs: Some(jobs), done, thread: Some(thread) })
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    pub(super) fn run(mut self, shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
        let mut failed: Option<String> = None;
        loop {
            let first = if self.in_flight.is_some() {
                // Something to stage while the frame in flight is written; otherwise publish it.
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => {
                        if let Err(e) = self.settle_in_flight(&shared) {
                            failed = Some(fail_stop(&shared, e));
                        }
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(job) => job,
                    None => break,
                }
            };
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
                failed = Some(fail_stop(&shared, e));
            }
        }
        if let Err(e) = self.settle_in_flight(&shared) {
            fail_stop(&shared, e);
        }
        // A snapshot still being written must land before the closing one replaces it.
        if let Some(handle) = self.snapshot_writer.take() {
            let _ = handle.join();
        }
    }

    /// Waits for the frame in flight, if any, and publishes it; its callers hear a failure.
    fn settle_in_flight(&mut self, shared: &Shared) -> Result<(), String> {
        let Some(mut flight) = self.in_flight.take() else { return Ok(()) };
        match self.wait(&mut flight) {
            Ok(()) => self.publish(shared, flight),
            Err(reason) => {
                reply_all_failed(flight.staging.jobs, &reason);
                Err(reason)
            }
        }
    }

    /// Waits until the I/O thread is done with `flight`'s frame, taking the file back.
    fn wait(&mut self, flight: &mut InFlight) -> Result<(), String> {
        let Ok(done) = self.io.done.recv() else {
            return Err(format!("segment {}: the I/O thread stopped", flight.segment));
        };
        self.file = Some(done.file);
        match done.result {
            Ok(link) => {
                flight.link = link;
                Ok(())
            }
            Err(IoFailure::Allocating(e)) => Err(format!("segment {}: allocating space: {e}", flight.segment)),
            Err(IoFailure::Writing(e)) => Err(format!("segment {}: {e}", flight.segment)),
        }
    }

    fn commit_batch(&mut self, shared: &Shared, jobs: Vec<Job>) -> Result<(), String> {
        if self.segment_len >= self.options.segment_bytes_max {
            // The next frame's locations name the next segment: the frame in flight lands first.
            if let Err(reason) = self.settle_in_flight(shared) {
                reply_all_failed(jobs, &reason);
                return Err(reason);
            }
            if let Err(e) = self.roll_segment(shared) {
                let reason = format!("starting segment {}: {e}", self.segment + 1);
                reply_all_failed(jobs, &reason);
                return Err(reason);
            }
        }
        if self.in_flight.is_some() {
            shared.staged_during_sync.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let staging = self.stage_jobs(shared, jobs);
        // The frame before this one must be durable before this one is written or answered.
        let previous = match self.in_flight.take() {
            None => None,
            Some(mut flight) => match self.wait(&mut flight) {
                Ok(()) => Some(flight),
                Err(reason) => {
                    reply_all_failed(flight.staging.jobs, &reason);
                    reply_all_failed(staging.jobs, &reason);
                    return Err(reason);
                }
            },
        };
        let mut unwritten = None;
        if staging.batch.next_position == staging.batch.first_position {
            unwritten = Some(staging);
        } else if let Some(file) = self.file.take() {
            self.submit(staging, file);
        } else {
            // Only a stopped I/O thread keeps the file, and `wait` has reported that already;
            // whatever waits here is answered all the same.
            let reason = format!("segment {}: the I/O thread stopped", self.segment);
            if let Some(flight) = previous {
                reply_all_failed(flight.staging.jobs, &reason);
            }
            reply_all_failed(staging.jobs, &reason);
            return Err(reason);
        }
        if let Some(flight) = previous
            && let Err(reason) = self.publish(shared, flight)
        {
            // What was staged on the frame that could not be indexed hears the same failure,
            // also a frame just handed over that may become durable.
            if let Some(mut next) = self.in_flight.take() {
                let _ = self.wait(&mut next);
                reply_all_failed(next.staging.jobs, &reason);
            }
            if let Some(staging) = unwritten {
                reply_all_failed(staging.jobs, &reason);
            }
            return Err(reason);
        }
        if let Some(staging) = unwritten {
            // Nothing accepted: the answers (duplicates, refusals) are given once what they were
            // decided against is durable and published, so a read after them sees it.
            for (job, results) in staging.jobs.into_iter().zip(staging.results) {
                job.answer(results);
            }
            self.spare = staging.batch;
        }
        Ok(())
    }

    /// Checks every job's requests against the index and the frame in flight, staging the
    /// accepted events into a new batch.
    fn stage_jobs(&mut self, shared: &Shared, jobs: Vec<Job>) -> Staging {
        // The batch reuses a published one's buffers: no allocation or page faults per commit.
        let mut batch = std::mem::take(&mut self.spare);
        batch.frame.clear();
        batch.frame.resize(FRAME_HEADER_LEN, 0);
        batch.streams.clear();
        batch.ids.clear();
        batch.first_position = self.head;
        batch.next_position = self.head;
        batch.recorded_at_us = self.options.clock.as_ref().map_or_else(now_us, |clock| clock());
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
                    let mut job_results = Vec::with_capacity(job.requests.len());
                    for chunk in job.requests.chunks(TOUCH_AHEAD_REQUESTS) {
                        index.touch(
                            chunk.iter().map(|r| r.stream.as_str()),
                            chunk.iter().flat_map(|r| r.events.iter().map(|e| e.event_id)),
                        );
                        for r in chunk {
                            let result = self.stage(&index, &mut batch, r, &refused);
                            if result.is_err() {
                                refused.insert(stream_hash(&r.stream), ());
                            }
                            job_results.push(result);
                        }
                    }
                    job_results
                };
                results.push(job_results);
            }
        }
        Staging { batch, jobs, results }
    }

    /// Seals a staged batch's frame and hands it to the I/O thread.
    fn submit(&mut self, mut staging: Staging, file: Box<dyn LogFile>) {
        let batch = &mut staging.batch;
        let count = (batch.next_position - batch.first_position) as u32;
        let first_position = batch.first_position;
        let frame = Arc::new(std::mem::take(&mut batch.frame));
        let frame_start = self.segment_len;
        let zero = self.preallocate(frame_start + frame.len() as u64);
        self.segment_len = frame_start + frame.len() as u64;
        self.head = batch.next_position;
        let job = IoJob { file, frame: frame.clone(), count, first_position, offset: frame_start, zero };
        // A stopped I/O thread answers nothing: `wait` reports it.
        if let Some(jobs) = &self.io.jobs {
            let _ = jobs.send(job);
        }
        self.in_flight = Some(InFlight { staging, frame, segment: self.segment, frame_start, link: [0; 32] });
    }

    /// Puts a durable frame's streams and ids into the index, publishes the new head and
    /// answers the frame's callers.
    fn publish(&mut self, shared: &Shared, flight: InFlight) -> Result<(), String> {
        let frame_end = flight.frame_end();
        let InFlight { staging: Staging { mut batch, jobs, results }, frame, segment, frame_start, link } = flight;
        let mut index = shared.index.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = index_batch(&mut index, &mut batch) {
            // The frame is durable but the index could not take it: stop writing; a
            // reopen indexes the log from disk.
            drop(index);
            let reason = format!("indexing the commit: {e}");
            reply_all_failed(jobs, &reason);
            return Err(reason);
        }
        let frame_loc = location(segment, frame_start);
        index.last_frame = frame_loc;
        // Entries every stride bytes inside the frame too, so a reader starts near any position.
        index.add_sparse(batch.first_position, frame_loc, frame_start, None);
        let mut at = FRAME_HEADER_LEN;
        while at < frame.len() {
            let body = &frame[at + format::RECORD_PREFIX_LEN..];
            let (position, occurred) = (format::le_u64(body), format::record_occurred_at_us(body));
            index.add_sparse(position, location(segment, frame_start + at as u64), frame_end, Some(occurred));
            at += format::RECORD_PREFIX_LEN + format::le_u32(&frame[at..]) as usize;
        }
        index.set_segment_len(segment, frame_end);
        let index_head = batch.next_position;
        index.head = index_head;
        index.link = link;
        drop(index);
        self.head_tx.send_replace(batch.next_position);
        for (job, job_results) in jobs.into_iter().zip(results) {
            job.answer(job_results);
        }
        // The I/O thread has let go of the frame: its buffer serves the next batch.
        batch.frame = Arc::try_unwrap(frame).unwrap_or_default();
        self.spare = batch;
        if self.snapshot_due(index_head) {
            self.take_snapshot(shared, index_head);
        }
        Ok(())
    }

    /// Whether enough has been appended since the last snapshot to take another.
    fn snapshot_due(&self, head: u64) -> bool {
        let every = self.options.snapshot_every_events;
        every > 0 && head - self.snapshot_head >= every && self.snapshot_writer.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Streams the index into the snapshot's temporary file (appends wait meanwhile, readers
    /// do not), then makes it durable and puts it in place on a thread of its own. Taken after
    /// a durable commit, it describes a prefix of the log whatever happens later.
    fn take_snapshot(&mut self, shared: &Shared, head: u64) {
        self.snapshot_head = head;
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

    /// The range to zero-fill so that `..end` of the current segment is allocated, ahead of the
    /// log in steps of [`PREALLOCATE_STEP_BYTES`], never past the segment's size limit; the
    /// I/O thread fills it before it writes the frame ending at `end`.
    fn preallocate(&mut self, end: u64) -> Option<(u64, u64)> {
        if end <= self.preallocated {
            return None;
        }
        // Never zero a byte at or before the log's end: start at the next block after it.
        let from = self.preallocated.max(self.segment_len).next_multiple_of(ZERO_FILL_ALIGN);
        let limit = self.options.segment_bytes_max.next_multiple_of(ZERO_FILL_ALIGN);
        let to = (end + PREALLOCATE_STEP_BYTES).next_multiple_of(ZERO_FILL_ALIGN).min(limit.max(from));
        // Past the limit the frame itself extends the file.
        self.preallocated = to.max(end);
        (to > from).then_some((from, to))
    }

    fn roll_segment(&mut self, shared: &Shared) -> io::Result<()> {
        let next = self.segment + 1;
        let file = create_segment(&*self.options.fs, &self.dir, next, self.head)?;
        let read = File::open(self.dir.join(format::segment_file_name(next)))?;
        self.file = Some(file);
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
        // The frame in flight is published before this batch: a stream it holds is indexed then.
        let in_flight = self.in_flight.as_ref().and_then(|f| f.staging.batch.streams.get(&hash));
        let (current, indexed) = match (batch.streams.get(&hash), in_flight) {
            (Some((_, head, indexed)), _) => (Some(*head), *indexed),
            (None, Some((_, head, _))) => (Some(*head), true),
            (None, None) => {
                let head = index.stream_head(&req.stream).map_err(|e| AppendError::Io(e.to_string()))?;
                (head, head.is_some())
            }
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
                batch.streams.insert(hash, (req.stream.clone(), head, indexed));
            }
        }
        Ok(Appended { first_position, last_revision: revision - 1, duplicate: false })
    }

    /// The stored or staged event with this id.
    fn lookup_id(&self, index: &Index, batch: &Batch, id: Uuid) -> Result<Option<RecordedEvent>, AppendError> {
        let key = id.as_u128();
        let staged = batch.ids.get(&key).map(|s| (s, batch.frame.as_slice())).or_else(|| {
            let flight = self.in_flight.as_ref()?;
            flight.staging.batch.ids.get(&key).map(|s| (s, flight.frame.as_slice()))
        });
        if let Some((staged, frame)) = staged {
            let (view, _) = format::decode_record(&frame[staged.body_offset..])
                .map_err(|e| AppendError::Io(format!("staged record unreadable: {e}")))?;
            return Ok(Some(view.to_recorded()));
        }
        index.event_by_id(id).map_err(|e| AppendError::Io(e.to_string()))
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

/// The answer to a request some of whose ids are stored already (`found`: the index of each
/// such event in the request, with what is stored): the original result if all of them are,
/// with the same content, in order in the same stream; a conflict otherwise. Every backend
/// answers retries by this rule.
pub fn duplicate_result(req: &AppendRequest, found: &[(usize, RecordedEvent)]) -> Result<Appended, AppendError> {
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

/// Marks the store failed after a write, sync or index failure; returns the reason, which every
/// later append is answered with.
fn fail_stop(shared: &Shared, reason: String) -> String {
    shared.failed.store(true, std::sync::atomic::Ordering::SeqCst);
    reason
}

pub(super) fn reply_all_failed(jobs: Vec<Job>, reason: &str) {
    for job in jobs {
        job.fail(|| AppendError::Io(reason.to_owned()));
    }
}

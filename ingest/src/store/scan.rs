//! Walking the log: every segment, frame and record checked (magic numbers, checksums, the
//! hash chain, positions), with a visitor that indexes what it sees. Opening the store walks
//! what its snapshot does not cover (and cuts a torn last frame); `verify` walks everything
//! with an index of its own ([`IndexBuilderForVerify`]) and accepts no damage.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ReadError;
use super::embedded::{FRAME_BYTES_MAX, OpenError, READ_CHUNK_BYTES, io_at};
use super::format::{self, FRAME_HEADER_LEN, NO_LOCATION, RecordView, SEGMENT_HEADER_LEN, location, split_location};
use super::index::Index;
use super::keymap::{INDEX_FILTER_BYTES_DEFAULT, SpillOptions};

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
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) events: u64,
    pub(crate) link: [u8; 32],
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
    /// Where the scan ended: the segment, and the offset where the next frame would start.
    pub end_segment: u32,
    pub end_offset: u64,
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
                (end.end_segment, end.end_offset) = (seg, offset);
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
        (end.end_segment, end.end_offset) = (seg, offset.min(file_len));
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
pub(crate) fn valid_frame_after(path: &Path, offset: u64, min_position: u64) -> bool {
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
    pub(crate) fn new(index: &'a mut Index) -> Self {
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
pub(crate) fn open_for_reading(paths: &[PathBuf]) -> io::Result<Vec<Arc<File>>> {
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
        self.index.add_sparse(view.meta.position, loc, self.frame_end, Some(view.occurred_at_us));
        Ok(())
    }
    fn frame(&mut self, first_position: u64, frame_loc: u64, frame_end: u64) {
        // An entry at a frame header has `frame_end` equal to its own offset, which tells a
        // reader to read the header first.
        self.index.add_sparse(first_position, frame_loc, split_location(frame_loc).1, None);
        self.index.last_frame = frame_loc;
        self.frame_end = frame_end;
    }
    fn segment_end(&mut self, segment: u32, len: u64) {
        self.index.set_segment_len(segment, len);
    }
}

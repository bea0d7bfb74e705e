//! The log as it was committed, frame by frame, read from segment files up to a durable
//! [`LogExtent`]: what a backup copies, a restore cuts at a commit boundary and an auditor
//! recomputes the hash chain from.
//!
//! A walk checks as it goes what makes a frame the one that was written: the segment header,
//! the frame header's own checksum, positions without a gap, every record's checksum and
//! position, and the frame's hash-chain link recomputed from the previous one. Bytes past the
//! extent are never read, so a walk runs beside the writer of a live store.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::format::{self, FRAME_HEADER_LEN, RecordView, SEGMENT_HEADER_LEN};

/// How far the log is durable at one moment: a copy of each segment up to its length here is
/// a whole log ending in `link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogExtent {
    /// Events in the log (the head position).
    pub events: u64,
    /// The link of the frame ending at the head (zeros for an empty log).
    pub link: [u8; 32],
    /// Each segment's length in bytes up to the head, segment 0 first.
    pub segment_lens: Vec<u64>,
    /// Where the head's frame starts (segment, offset), for an empty log `None`.
    pub last_frame: Option<(u32, u64)>,
}

/// One committed frame, as stored.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Its segment.
    pub segment: u32,
    /// The offset of its header in that segment.
    pub offset: u64,
    /// The position of its first record.
    pub first_position: u64,
    /// Its records.
    pub record_count: u32,
    /// The link of the frame before it (zeros before the first).
    pub prev_link: [u8; 32],
    /// Its own link: BLAKE3(prev_link ‖ header bytes 8..32 ‖ body).
    pub link: [u8; 32],
    /// The records' bytes as stored, back to back.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The position after its last record.
    pub fn end_position(&self) -> u64 {
        self.first_position + u64::from(self.record_count)
    }

    /// Its records, each with its stored bytes (length prefix, checksum and body). The walk
    /// that produced the frame has checked them.
    pub fn records(&self) -> impl Iterator<Item = (RecordView<'a>, &'a [u8])> + 'a {
        let body = self.body;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= body.len() {
                return None;
            }
            let (view, len) = format::decode_record(&body[at..]).ok()?;
            let bytes = &body[at..at + len];
            at += len;
            Some((view, bytes))
        })
    }
}

/// Where a walk found the log not as it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} at offset {offset}: {reason}")]
pub struct FrameFault {
    /// The segment.
    pub segment: u32,
    /// Its file name (or the file a caller read it from).
    pub file: String,
    /// The offset of the damaged header, frame or record.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// Where a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalkEnd {
    /// Events before the end.
    pub events: u64,
    /// The link of the last frame walked.
    pub link: [u8; 32],
}

/// Walks the frames of the segment files `paths` (segment 0 first), each up to its length in
/// `lens`, handing each checked frame to `visit`, which may stop the walk. Every frame before
/// the stop is checked. Returns where the walk ended.
pub fn walk_frames(
    paths: &[PathBuf],
    lens: &[u64],
    visit: &mut dyn FnMut(&Frame<'_>) -> ControlFlow<()>,
) -> Result<WalkEnd, FrameFault> {
    let mut end = WalkEnd::default();
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut body = Vec::new();
    for (seg, (path, &len)) in paths.iter().zip(lens).enumerate() {
        let seg = seg as u32;
        let file_name = format::segment_file_name(seg);
        let fault = |offset: u64, reason: String| FrameFault { segment: seg, file: file_name.clone(), offset, reason };
        let io_fault = |offset: u64, e: io::Error| {
            let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
                "the file ends before its durable length".to_owned()
            } else {
                format!("{}: {e}", path.display())
            };
            fault(offset, reason)
        };
        let file = File::open(path).map_err(|e| io_fault(0, e))?;
        let mut reader = BufReader::with_capacity(super::embedded::READ_CHUNK_BYTES, file);
        let mut seg_header = [0u8; SEGMENT_HEADER_LEN];
        reader.read_exact(&mut seg_header).map_err(|e| io_fault(0, e))?;
        let h = format::decode_segment_header(&seg_header).map_err(|r| fault(0, r.to_owned()))?;
        if h.index != seg || h.first_position != end.events {
            return Err(fault(
                0,
                format!(
                    "segment header says segment {} from position {}, expected segment {seg} from {}",
                    h.index, h.first_position, end.events
                ),
            ));
        }
        let mut offset = SEGMENT_HEADER_LEN as u64;
        while offset < len {
            if len - offset < FRAME_HEADER_LEN as u64 {
                return Err(fault(offset, "a frame header runs past the durable length".into()));
            }
            reader.read_exact(&mut header).map_err(|e| io_fault(offset, e))?;
            let fh = format::decode_frame_header(&header).map_err(|r| fault(offset, r.to_owned()))?;
            let body_end = offset + FRAME_HEADER_LEN as u64 + u64::from(fh.body_len);
            if body_end > len {
                return Err(fault(offset, "a frame runs past the durable length".into()));
            }
            if fh.first_position != end.events {
                return Err(fault(
                    offset,
                    format!("frame starts at position {}, expected {}", fh.first_position, end.events),
                ));
            }
            body.resize(fh.body_len as usize, 0);
            reader.read_exact(&mut body).map_err(|e| io_fault(offset, e))?;
            if !format::check_frame_link(&end.link, &header, &body, &fh.link) {
                return Err(fault(
                    offset,
                    "the hash chain does not link: the frame or one before it was altered".into(),
                ));
            }
            let mut at = 0;
            let mut count = 0u32;
            while at < body.len() {
                let record_at = offset + (FRAME_HEADER_LEN + at) as u64;
                let (view, rlen) = format::decode_record(&body[at..]).map_err(|r| fault(record_at, r.to_owned()))?;
                let expected = end.events + u64::from(count);
                if view.meta.position != expected {
                    return Err(fault(
                        record_at,
                        format!("record at position {}, expected {expected}", view.meta.position),
                    ));
                }
                at += rlen;
                count += 1;
            }
            if count != fh.record_count {
                return Err(fault(offset, format!("frame says {} records, holds {count}", fh.record_count)));
            }
            let frame = Frame {
                segment: seg,
                offset,
                first_position: fh.first_position,
                record_count: fh.record_count,
                prev_link: end.link,
                link: fh.link,
                body: &body,
            };
            let flow = visit(&frame);
            end.events += u64::from(count);
            end.link = fh.link;
            offset = body_end;
            if flow.is_break() {
                return Ok(end);
            }
        }
    }
    Ok(end)
}

/// The segment file paths of a log directory `dir` for `segments` segments.
pub fn segment_paths(dir: &Path, segments: usize) -> Vec<PathBuf> {
    (0..segments as u32).map(|s| dir.join(format::segment_file_name(s))).collect()
}

/// Reads the frame header at `offset` of segment file `path`: its link and where it ends.
pub fn frame_header_at(path: &Path, offset: u64) -> io::Result<Option<([u8; 32], u64)>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    match file.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(format::decode_frame_header(&header)
        .ok()
        .map(|h| (h.link, offset + FRAME_HEADER_LEN as u64 + u64::from(h.body_len))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::event;
    use crate::store::{EmbeddedStore, EventStore, ExpectedRevision, StoreOptions};

    fn store_with(dir: &Path, events: u64, options: StoreOptions) -> LogExtent {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let store = EmbeddedStore::open_with(dir, options).expect("open");
        rt.block_on(async {
            for i in 0..events {
                let e = event(&format!("f{i}"), i);
                store.append(&format!("s{}", i % 5), ExpectedRevision::Any, vec![e]).await.expect("append");
            }
        });
        let extent = store.extent();
        store.close();
        extent
    }

    #[test]
    fn a_walk_sees_every_frame_and_ends_in_the_head_link() {
        // Small segments: the walk crosses segment files and ends where the store's head is.
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions { segment_bytes_max: 4096, ..StoreOptions::default() };
        let extent = store_with(dir.path(), 120, options);
        assert!(extent.segment_lens.len() > 2, "several segments");
        let paths = segment_paths(dir.path(), extent.segment_lens.len());
        let mut positions = Vec::new();
        let end = walk_frames(&paths, &extent.segment_lens, &mut |f| {
            positions.extend(f.records().map(|(v, _)| v.meta.position));
            ControlFlow::Continue(())
        })
        .expect("walked");
        assert_eq!(positions, (0..120).collect::<Vec<_>>());
        assert_eq!((end.events, end.link), (extent.events, extent.link));
        let (seg, off) = extent.last_frame.expect("a last frame");
        let seg_len = extent.segment_lens[seg as usize];
        assert_eq!(frame_header_at(&paths[seg as usize], off).expect("read"), Some((extent.link, seg_len)));
    }

    #[test]
    fn a_flipped_byte_is_found_where_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let extent = store_with(dir.path(), 30, StoreOptions::default());
        let path = dir.path().join(format::segment_file_name(0));
        let mut bytes = std::fs::read(&path).expect("read");
        let at = extent.segment_lens[0] as usize - 3;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let fault =
            walk_frames(&[path], &extent.segment_lens, &mut |_| ControlFlow::Continue(())).expect_err("damaged");
        assert_eq!(fault.file, "seg-000000.log");
        assert!(fault.offset < at as u64, "{fault}");
    }
}

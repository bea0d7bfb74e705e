//! The embedded store's on-disk format, byte by byte.
//!
//! All integers are little-endian and fixed width; nothing depends on the host.
//!
//! # Files
//!
//! A data directory holds the log as numbered segment files `seg-000000.log`,
//! `seg-000001.log`, ... . Segments are written strictly in order; only the last one grows.
//! A segment is closed once it has reached the store's `segment_bytes_max`; the frame that
//! crossed the limit stays whole in the segment it started in.
//!
//! # Segment header (32 bytes, at offset 0 of every segment)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `PLSEG\0\0\x01` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | segment index (equals the number in the file name) |
//! | 16 | 8 | global position of the segment's first record |
//! | 24 | 4 | reserved, zero |
//! | 28 | 4 | CRC32C of bytes 0..28 |
//!
//! # Frame (one per group commit)
//!
//! A frame holds the records one fdatasync made durable. Frames follow each other with no
//! gap from offset 32 to the end of the segment.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `PLF1` |
//! | 4 | 4 | CRC32C of bytes 8..64 of this header |
//! | 8 | 4 | body length in bytes (the records that follow) |
//! | 12 | 4 | record count |
//! | 16 | 8 | global position of the first record |
//! | 24 | 8 | reserved, zero |
//! | 32 | 32 | chain link: BLAKE3(previous link ‖ bytes 8..32 ‖ body) |
//!
//! The previous link of the very first frame is 32 zero bytes; the chain runs on across
//! segments. The link of the last frame is the log's *head hash*: it commits to every byte
//! of every record before it, so an altered, dropped or reordered record changes it.
//! Linking per frame rather than per record lets BLAKE3 hash a whole commit as one input,
//! which is what keeps hashing off the critical path of a million appends a second.
//!
//! # Record (inside a frame body, back to back)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | body length `n` (bytes after this 8-byte prefix) |
//! | 4 | 4 | CRC32C of the `n` body bytes |
//! | 8 | 8 | global position |
//! | 16 | 8 | revision within its stream (0 for the first event) |
//! | 24 | 8 | location of the previous record of the same stream, or `u64::MAX` |
//! | 32 | 16 | event id (UUID bytes, big-endian as UUIDs are written) |
//! | 48 | 8 | occurred at, microseconds since the Unix epoch (i64) |
//! | 56 | 8 | recorded at, microseconds since the Unix epoch (i64), the commit's clock |
//! | 64 | 2 | schema version |
//! | 66 | 2 | stream name length `s` |
//! | 68 | 1 | event type length `t` |
//! | 69 | s | stream name, UTF-8 |
//! | 69+s | t | event type, UTF-8 |
//! | 69+s+t | n-61-s-t | payload (JSON) |
//!
//! A *location* is `segment index << 40 | byte offset of the record's length prefix`.

use uuid::Uuid;

use super::{EventData, RecordedEvent};

/// The occurred-at of a record's body (the bytes after its 8-byte prefix), which must hold at
/// least its fixed fields.
pub fn record_occurred_at_us(body: &[u8]) -> i64 {
    le_u64(&body[40..48]) as i64
}

/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Magic at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PLSEG\0\0\x01";
/// Format version written in segment headers.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 64;
/// Magic at the start of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"PLF1";
/// Bytes before a record's body: length and CRC.
pub const RECORD_PREFIX_LEN: usize = 8;
/// Fixed part of a record body before the stream name.
pub const RECORD_FIXED_LEN: usize = 61;
/// Marker for "no previous record in this stream".
pub const NO_LOCATION: u64 = u64::MAX;
/// Bits of a location that hold the byte offset.
const OFFSET_BITS: u32 = 40;

/// Packs a segment index and byte offset into a location.
pub const fn location(segment: u32, offset: u64) -> u64 {
    ((segment as u64) << OFFSET_BITS) | offset
}

/// Splits a location into segment index and byte offset.
pub const fn split_location(loc: u64) -> (u32, u64) {
    ((loc >> OFFSET_BITS) as u32, loc & ((1 << OFFSET_BITS) - 1))
}

/// The file name of segment `index`.
pub fn segment_file_name(index: u32) -> String {
    format!("seg-{index:06}.log")
}

/// Encodes a segment header.
pub fn encode_segment_header(index: u32, first_position: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&index.to_le_bytes());
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment index.
    pub index: u32,
    /// Position of its first record.
    pub first_position: u64,
}

/// Decodes and checks a segment header.
pub fn decode_segment_header(h: &[u8]) -> Result<SegmentHeader, &'static str> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err("segment header is truncated");
    }
    if h[0..8] != SEGMENT_MAGIC {
        return Err("segment header magic is wrong");
    }
    if crc32c::crc32c(&h[0..28]) != le_u32(&h[28..32]) {
        return Err("segment header checksum mismatch");
    }
    if le_u32(&h[8..12]) != FORMAT_VERSION {
        return Err("unsupported segment format version");
    }
    Ok(SegmentHeader { index: le_u32(&h[12..16]), first_position: le_u64(&h[16..24]) })
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of records after the header.
    pub body_len: u32,
    /// Records in the body.
    pub record_count: u32,
    /// Position of the first record.
    pub first_position: u64,
    /// Chain link after this frame.
    pub link: [u8; 32],
}

/// Computes a frame's chain link from the previous link, the header fields and the body.
pub fn frame_link(prev_link: &[u8; 32], header_fields: &[u8], body: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev_link);
    hasher.update(header_fields);
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

/// Encodes a frame header for `body`, returning it with the new chain link.
pub fn encode_frame_header(
    prev_link: &[u8; 32],
    record_count: u32,
    first_position: u64,
    body: &[u8],
) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    h[8..12].copy_from_slice(&body_len.to_le_bytes());
    h[12..16].copy_from_slice(&record_count.to_le_bytes());
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    let link = frame_link(prev_link, &h[8..32], body);
    h[32..64].copy_from_slice(&link);
    let crc = crc32c::crc32c(&h[8..64]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a frame header and checks its own checksum (not the body: see [`check_frame_link`]).
pub fn decode_frame_header(h: &[u8]) -> Result<FrameHeader, &'static str> {
    if h.len() < FRAME_HEADER_LEN {
        return Err("frame header is truncated");
    }
    if h[0..4] != FRAME_MAGIC {
        return Err("frame magic is wrong");
    }
    if crc32c::crc32c(&h[8..64]) != le_u32(&h[4..8]) {
        return Err("frame header checksum mismatch");
    }
    let mut link = [0u8; 32];
    link.copy_from_slice(&h[32..64]);
    Ok(FrameHeader {
        body_len: le_u32(&h[8..12]),
        record_count: le_u32(&h[12..16]),
        first_position: le_u64(&h[16..24]),
        link,
    })
}

/// Whether the frame's stored link equals the link computed from the previous one and its body.
pub fn check_frame_link(prev_link: &[u8; 32], header_bytes: &[u8], body: &[u8], stored: &[u8; 32]) -> bool {
    frame_link(prev_link, &header_bytes[8..32], body) == *stored
}

/// Encoded size of a record for `stream` and `data`.
pub fn record_len(stream: &str, data: &EventData) -> usize {
    RECORD_PREFIX_LEN + RECORD_FIXED_LEN + stream.len() + data.event_type.len() + data.payload.len()
}

/// The fields of a record other than the event data.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    /// Global position.
    pub position: u64,
    /// Stream revision.
    pub revision: u64,
    /// Location of the stream's previous record.
    pub prev_loc: u64,
    /// Commit time.
    pub recorded_at_us: i64,
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, meta: RecordMeta, stream: &str, data: &EventData) {
    let start = out.len();
    let body_len = RECORD_FIXED_LEN + stream.len() + data.event_type.len() + data.payload.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&meta.position.to_le_bytes());
    out.extend_from_slice(&meta.revision.to_le_bytes());
    out.extend_from_slice(&meta.prev_loc.to_le_bytes());
    out.extend_from_slice(data.event_id.as_bytes());
    out.extend_from_slice(&data.occurred_at_us.to_le_bytes());
    out.extend_from_slice(&meta.recorded_at_us.to_le_bytes());
    out.extend_from_slice(&data.schema_version.to_le_bytes());
    out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    out.push(data.event_type.len() as u8);
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(data.event_type.as_bytes());
    out.extend_from_slice(&data.payload);
    let crc = crc32c::crc32c(&out[start + RECORD_PREFIX_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record's fields borrowed from the bytes they were decoded from.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Position, revision, previous location and commit time.
    pub meta: RecordMeta,
    /// Event id.
    pub event_id: Uuid,
    /// Business time.
    pub occurred_at_us: i64,
    /// Schema version.
    pub schema_version: u16,
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    /// Copies the record out into an owned event.
    pub fn to_recorded(&self) -> RecordedEvent {
        RecordedEvent {
            position: self.meta.position,
            stream: self.stream.to_owned(),
            revision: self.meta.revision,
            recorded_at_us: self.meta.recorded_at_us,
            data: EventData {
                event_id: self.event_id,
                event_type: self.event_type.into(),
                schema_version: self.schema_version,
                occurred_at_us: self.occurred_at_us,
                payload: self.payload.to_vec(),
            },
        }
    }

    /// Whether this record holds the same event (same id, stream, type, version, time and
    /// payload) as `data` in `stream`: the test for an idempotent retry.
    pub fn same_content(&self, stream: &str, data: &EventData) -> bool {
        self.event_id == data.event_id
            && self.stream == stream
            && self.event_type == data.event_type
            && self.schema_version == data.schema_version
            && self.occurred_at_us == data.occurred_at_us
            && self.payload == data.payload.as_slice()
    }
}

/// Decodes the record at the start of `buf`, checking its CRC. Returns the view and the
/// record's total encoded length.
pub fn decode_record(buf: &[u8]) -> Result<(RecordView<'_>, usize), &'static str> {
    if buf.len() < RECORD_PREFIX_LEN {
        return Err("record prefix is truncated");
    }
    let body_len = le_u32(&buf[0..4]) as usize;
    let total = RECORD_PREFIX_LEN + body_len;
    if body_len < RECORD_FIXED_LEN || buf.len() < total {
        return Err("record length runs past its frame");
    }
    let body = &buf[RECORD_PREFIX_LEN..total];
    if crc32c::crc32c(body) != le_u32(&buf[4..8]) {
        return Err("record checksum mismatch");
    }
    let stream_len = le_u16(&body[58..60]) as usize;
    let type_len = body[60] as usize;
    let names_end = RECORD_FIXED_LEN + stream_len + type_len;
    if names_end > body_len {
        return Err("record name lengths run past its body");
    }
    let stream = std::str::from_utf8(&body[RECORD_FIXED_LEN..RECORD_FIXED_LEN + stream_len])
        .map_err(|_| "record stream name is not UTF-8")?;
    let event_type = std::str::from_utf8(&body[RECORD_FIXED_LEN + stream_len..names_end])
        .map_err(|_| "record event type is not UTF-8")?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&body[24..40]);
    let view = RecordView {
        meta: RecordMeta {
            position: le_u64(&body[0..8]),
            revision: le_u64(&body[8..16]),
            prev_loc: le_u64(&body[16..24]),
            recorded_at_us: le_u64(&body[48..56]) as i64,
        },
        event_id: Uuid::from_bytes(id),
        occurred_at_us: record_occurred_at_us(body),
        schema_version: le_u16(&body[56..58]),
        stream,
        event_type,
        payload: &body[names_end..],
    };
    Ok((view, total))
}

/// Reads a little-endian u16 from the first two bytes of `b`.
pub fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// Reads a little-endian u32 from the first four bytes of `b`.
pub fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads a little-endian u64 from the first eight bytes of `b`.
pub fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> EventData {
        EventData {
            event_id: Uuid::from_u128(7),
            event_type: "PaymentCaptured".into(),
            schema_version: 1,
            occurred_at_us: -5,
            payload: br#"{"a":1}"#.to_vec(),
        }
    }

    #[test]
    fn record_round_trips_and_length_matches() {
        let mut buf = Vec::new();
        let meta = RecordMeta { position: 9, revision: 2, prev_loc: location(3, 77), recorded_at_us: 123 };
        encode_record(&mut buf, meta, "payment-1", &data());
        assert_eq!(buf.len(), record_len("payment-1", &data()));
        let (view, len) = decode_record(&buf).expect("decodes");
        assert_eq!(len, buf.len());
        assert!(view.same_content("payment-1", &data()));
        assert_eq!(view.meta.position, 9);
        assert_eq!(view.meta.revision, 2);
        assert_eq!(split_location(view.meta.prev_loc), (3, 77));
        assert_eq!(view.occurred_at_us, -5);
    }

    #[test]
    fn every_flipped_bit_of_a_record_is_caught() {
        let mut buf = Vec::new();
        let meta = RecordMeta { position: 1, revision: 0, prev_loc: NO_LOCATION, recorded_at_us: 0 };
        encode_record(&mut buf, meta, "s", &data());
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let ok = decode_record(&bad).is_ok_and(|(v, _)| v.same_content("s", &data()));
            assert!(!ok, "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn headers_round_trip_and_refuse_damage() {
        let h = encode_segment_header(4, 1000);
        assert_eq!(decode_segment_header(&h), Ok(SegmentHeader { index: 4, first_position: 1000 }));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).is_err());

        let body = b"records";
        let fh = encode_frame_header(&[0; 32], 1, 5, body);
        let d = decode_frame_header(&fh).expect("decodes");
        assert_eq!((d.body_len, d.record_count, d.first_position), (7, 1, 5));
        assert!(check_frame_link(&[0; 32], &fh, body, &d.link));
        assert!(!check_frame_link(&[0; 32], &fh, b"recordz", &d.link));
        assert!(!check_frame_link(&[1; 32], &fh, body, &d.link));
    }
}

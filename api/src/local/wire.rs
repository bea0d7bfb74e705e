//! The local socket's framing: each message is a frame of a 4-byte little-endian length (of
//! what follows), a 1-byte kind and the payload; JSON payloads for messages, raw bytes for
//! input and output, a compact binary form for chunks of lines.
//!
//! A conversation: the server says [`Hello`] (or, in its hello, why it will not take the
//! client); the client sends one [`Opening`]; for a call with input, `INPUT` frames and an
//! `END`; for an ingest, `LINES` frames and an `END`, each chunk answered by a `PROGRESS` frame
//! once it is durable; for the journal and the event listing, `OUTPUT` frames; for a backup, `PROGRESS` frames; last the server's `RESULT`. Then the
//! connection closes. A JSON message longer than a frame goes as `MORE` frames and a last
//! frame of its own kind.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame, in bytes (a chunk of lines is cut to stay under it; one line is at most
/// `ingest::feed::FEED_LINE_BYTES_MAX`).
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest message (a reply of many rows is several frames), in bytes.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Bytes of lines a client puts in one `LINES` frame, at most.
pub const LINES_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// The server's greeting.
pub const HELLO: u8 = b'H';
/// The client's opening message.
pub const OPENING: u8 = b'Q';
/// A piece of the request's input.
pub const INPUT: u8 = b'I';
/// A chunk of numbered lines to ingest.
pub const LINES: u8 = b'L';
/// The end of the input.
pub const END: u8 = b'E';
/// Running totals.
pub const PROGRESS: u8 = b'P';
/// A piece of streamed output.
pub const OUTPUT: u8 = b'O';
/// The answer; the last frame.
pub const RESULT: u8 = b'R';
/// The first pieces of a message too long for one frame; its last piece comes in a frame of
/// the message's own kind.
pub const MORE: u8 = b'M';

/// The protocol's version: a client and a server of other versions do not talk.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the server says first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The server's process id.
    pub pid: u32,
    /// Its version of posledger.
    pub version: String,
    /// Its version of this protocol ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Where its HTTP API listens.
    pub http: Option<String>,
    /// Why the server will not take this client (too many at once), if it will not.
    pub refused: Option<app::Failure>,
}

/// What the client asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "opening", rename_all = "snake_case")]
pub enum Opening {
    /// One use case; its input (if any) follows as `INPUT` frames and an `END`.
    Call {
        /// The use case.
        request: app::request::Request,
        /// Whether input follows.
        input: bool,
    },
    /// Ingest records: `LINES` frames, then `END`.
    Ingest {
        /// Feed or admin records.
        admin: bool,
    },
    /// The journal, streamed as `OUTPUT` frames.
    Journal {
        /// Its dialect.
        kind: app::books::JournalKind,
        /// Up to when.
        until: app::AsOf,
    },
    /// The event listing, streamed as `OUTPUT` frames; the result is its end.
    Events {
        /// The first position.
        from: u64,
        /// Up to when.
        until: app::AsOf,
    },
    /// A backup into a directory; `PROGRESS` frames while it copies.
    Backup {
        /// The backup directory (absolute).
        to: std::path::PathBuf,
    },
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    if payload.len() + 1 > FRAME_BYTES_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame over FRAME_BYTES_MAX"));
    }
    let len = u32::try_from(payload.len() + 1).map_err(io::Error::other)?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4] = kind;
    out.write_all(&head)?;
    out.write_all(payload)?;
    out.flush()
}

/// Writes a message as JSON: one frame, or `MORE` frames and a last one of `kind` when it is
/// longer than a frame holds (a result of many rows).
pub fn write_json(out: &mut impl Write, kind: u8, message: &impl Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    let mut pieces = bytes.chunks(FRAME_BYTES_MAX - 1).peekable();
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        write_frame(out, if last { kind } else { MORE }, piece)?;
    }
    if bytes.is_empty() {
        write_frame(out, kind, &[])?;
    }
    Ok(())
}

/// Reads one message: a frame, with the `MORE` frames before it joined to it (at most
/// `message_bytes_max` bytes in all); `None` at a clean end of the connection.
pub fn read_message(input: &mut impl Read, message_bytes_max: usize) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut joined = Vec::new();
    loop {
        let Some((kind, payload)) = read_frame(input)? else {
            return if joined.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        };
        if joined.len() + payload.len() > message_bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message over {message_bytes_max} bytes"),
            ));
        }
        if kind != MORE {
            if joined.is_empty() {
                return Ok(Some((kind, payload)));
            }
            joined.extend_from_slice(&payload);
            return Ok(Some((kind, joined)));
        }
        joined.extend_from_slice(&payload);
    }
}

/// Reads one frame: its kind and payload; `None` at a clean end of the connection.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > FRAME_BYTES_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    let kind = body.remove(0);
    Ok(Some((kind, body)))
}

/// Reads a JSON payload.
pub fn from_json<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> io::Result<T> {
    serde_json::from_slice(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Encodes numbered lines: per line its number (u64), length (u32), bytes, little-endian.
pub fn encode_lines<'a>(lines: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, line) in lines {
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(line.len() as u32).to_le_bytes());
        out.extend_from_slice(line);
    }
    out
}

/// Decodes [`encode_lines`].
pub fn decode_lines(mut bytes: &[u8]) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a malformed chunk of lines");
    let mut lines = Vec::new();
    while !bytes.is_empty() {
        let (n, rest) = bytes.split_at_checked(8).ok_or_else(bad)?;
        let (len, rest) = rest.split_at_checked(4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
        let (line, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        lines.push((u64::from_le_bytes(n.try_into().map_err(|_| bad())?), line.to_vec()));
        bytes = rest;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_lines_round_trip_and_bad_lengths_are_refused() {
        // A frame reads back as written; a zero or oversized length is an error, not an
        // allocation; lines keep their numbers and bytes, even bytes that are not UTF-8.
        let mut buf = Vec::new();
        write_frame(&mut buf, OUTPUT, b"abc").expect("write");
        write_json(&mut buf, PROGRESS, &serde_json::json!({"n": 1})).expect("write");
        let mut input = &buf[..];
        assert_eq!(read_frame(&mut input).expect("read"), Some((OUTPUT, b"abc".to_vec())));
        assert_eq!(read_frame(&mut input).expect("read").map(|f| f.0), Some(PROGRESS));
        assert_eq!(read_frame(&mut input).expect("end"), None);
        for len in [0u32, FRAME_BYTES_MAX as u32 + 1, u32::MAX] {
            let bytes = len.to_le_bytes();
            assert!(read_frame(&mut &bytes[..]).is_err(), "{len}");
        }
        let lines = vec![(3u64, b"{\"a\":1}".to_vec()), (7, vec![0xff, 0xfe]), (8, Vec::new())];
        let encoded = encode_lines(lines.iter().map(|(n, l)| (*n, l.as_slice())));
        assert_eq!(decode_lines(&encoded).expect("decode"), lines);
        assert!(decode_lines(&encoded[..5]).is_err());
        assert!(write_frame(&mut Vec::new(), INPUT, &vec![0u8; FRAME_BYTES_MAX]).is_err());
    }

    #[test]
    fn a_message_longer_than_a_frame_goes_in_pieces_and_comes_back_whole() {
        // A result of many rows is not lost to the frame limit; a message over the reader's
        // own limit is refused, not buffered.
        let long = "x".repeat(2 * FRAME_BYTES_MAX + 17);
        let mut buf = Vec::new();
        write_json(&mut buf, RESULT, &long).expect("write");
        let frames = {
            let mut input = &buf[..];
            std::iter::from_fn(|| read_frame(&mut input).expect("frame")).map(|f| f.0).collect::<Vec<_>>()
        };
        assert_eq!(frames, vec![MORE, MORE, RESULT]);
        let (kind, payload) = read_message(&mut &buf[..], 4 * FRAME_BYTES_MAX).expect("read").expect("message");
        assert_eq!((kind, from_json::<String>(&payload).expect("json")), (RESULT, long));
        assert!(read_message(&mut &buf[..], FRAME_BYTES_MAX).is_err());
    }
}

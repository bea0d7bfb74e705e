//! The embedded store's indexes and their snapshot file.
//!
//! Streams and events are indexed by 64-bit hashes mapped to the location of a record on
//! disk: the last record of a stream, the record of an event id. A hit is always confirmed
//! against the record itself (its stream name, its full event id), and the rare key that
//! collides with another's hash lives in a small side map under its full name. The maps are
//! [`KeyMap`]s: the newest entries in memory, the rest in sorted runs on disk, so memory
//! does not grow with the log (see `keymap.rs`).
//!
//! Revision numbers are not kept in memory: a stream's revision is read from its last record
//! when an append to an existing stream needs it.
//!
//! # Snapshot file (`index.snap`), little-endian
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `PLIDX003` |
//! | 8 | head (events covered) |
//! | 32 | hash-chain link after the last covered frame |
//! | 8 | location of the last covered frame's header (`u64::MAX` if none) |
//! | 8 × 8 | counts: streams and ids in memory, stream collisions, id collisions, sparse entries, segments, stream runs, id runs |
//! | 16 × n | streams in memory: (hash, location) |
//! | 16 × n | ids in memory: (hash, location) |
//! | var | stream collisions: (u16 name length, name, u64 location) |
//! | 24 × n | id collisions: (u128 id, u64 location) |
//! | 32 × n | sparse entries: (position, location, frame end, latest occurred-at in µs of the span it starts) |
//! | 8 × n | logical length of each segment |
//! | 20 × n | stream runs: (number, entries, CRC32C of the run file) |
//! | 20 × n | id runs: (number, entries, CRC32C of the run file) |
//! | 4 | CRC32C of everything before |
//!
//! It is written when the store closes and every so many events, and trusted on open only if
//! the frame it names holds exactly its link and head and every run it names checks out; the
//! log after it is then scanned as usual. A snapshot holds the entries in memory and names
//! the runs; what grows with the log is only the sparse position index (32 bytes per 64 KiB).
//! A snapshot of an earlier format is not trusted: the log is indexed from its start once.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::format::{self, NO_LOCATION, RecordView, split_location};
use super::keymap::{Keep, KeyMap, RunName, SpillOptions};
use super::{ReadError, RecordedEvent};

/// The snapshot file's magic.
const SNAPSHOT_MAGIC: [u8; 8] = *b"PLIDX003";
/// Most runs a snapshot may name per map (merging keeps a few dozen at most).
const SNAPSHOT_RUNS_MAX: u64 = 1024;
/// The sparse position index gets an entry at least every this many bytes of log.
const SPARSE_INDEX_STRIDE_BYTES: u64 = 64 << 10;

/// Hashes a u64 key that is already a hash by mixing it once.
#[derive(Default)]
pub(crate) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64((v as u64) ^ ((v >> 64) as u64));
    }
}

/// A map keyed by something that is already a good hash.
pub(crate) type HashKeyMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

/// The 64-bit index key of a stream name.
pub(crate) fn stream_key(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// The 64-bit index key of an event id (UUIDs are already random).
fn id_key(id: Uuid) -> u64 {
    let v = id.as_u128();
    (v as u64) ^ ((v >> 64) as u64)
}

/// A stream's last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamHead {
    /// Its revision.
    pub revision: u64,
    /// Its location.
    pub loc: u64,
}

/// A place to start reading the log for a position, and how late the events of the span it
/// starts (up to the next entry) occurred: a zone map over occurred-at, so a read of what
/// happened since a time skips the spans that ended before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SparseEntry {
    pub position: u64,
    pub loc: u64,
    pub frame_end: u64,
    /// The latest occurred-at (µs since the epoch) of the span's events; `i64::MIN` while it
    /// holds none.
    pub occurred_max_us: i64,
}

/// The committed state of the log, shared by the writer and readers.
pub(crate) struct Index {
    pub head: u64,
    pub link: [u8; 32],
    pub last_frame: u64,
    pub sparse: Vec<SparseEntry>,
    pub files: Vec<Arc<File>>,
    pub segment_lens: Vec<u64>,
    streams: KeyMap,
    stream_collisions: HashMap<String, u64>,
    ids: KeyMap,
    id_collisions: HashKeyMap<u128, u64>,
}

/// The stream map's name, in its run files' names.
const STREAMS: &str = "streams";
/// The event id map's name.
const IDS: &str = "ids";

impl Index {
    /// An empty index reading records from `files`, held in memory only.
    #[cfg(test)]
    pub fn new(files: Vec<Arc<File>>) -> Self {
        Self::with_spill(files, None)
    }

    /// An empty index reading records from `files`, spilling its maps as `spill` says.
    pub fn with_spill(files: Vec<Arc<File>>, spill: Option<SpillOptions>) -> Self {
        Index {
            head: 0,
            link: [0; 32],
            last_frame: NO_LOCATION,
            sparse: Vec::new(),
            files,
            segment_lens: Vec::new(),
            streams: KeyMap::new(STREAMS, Keep::Latest, spill.clone()),
            stream_collisions: HashMap::new(),
            ids: KeyMap::new(IDS, Keep::All, spill),
            id_collisions: HashKeyMap::default(),
        }
    }

    /// The run files the index uses.
    pub fn run_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.streams.run_paths();
        paths.extend(self.ids.run_paths());
        paths
    }

    /// Waits for the maps' running merges and takes them in (starting no new one), so that a
    /// closing snapshot names the merged runs.
    pub fn finish_merges(&mut self) -> io::Result<()> {
        let streams = self.streams.finish_merge();
        let ids = self.ids.finish_merge();
        streams.and(ids)
    }

    /// Whether runs were merged away since the last [`Index::take_retired`].
    pub fn has_retired(&self) -> bool {
        self.streams.has_retired() || self.ids.has_retired()
    }

    /// The run files merged away since the last call: remove them once a snapshot taken
    /// after this call is durable.
    pub fn take_retired(&mut self) -> Vec<PathBuf> {
        let mut paths = self.streams.take_retired();
        paths.extend(self.ids.take_retired());
        paths
    }

    /// Records a place to start reading for `position`, if the last one is far enough back.
    /// `occurred_at_us` is that of the record at `loc` (`None` at a frame header): it widens
    /// the span's zone map.
    pub fn add_sparse(&mut self, position: u64, loc: u64, frame_end: u64, occurred_at_us: Option<i64>) {
        let (seg, off) = split_location(loc);
        let occurred = occurred_at_us.unwrap_or(i64::MIN);
        let near = |last: &SparseEntry| {
            let (last_seg, last_off) = split_location(last.loc);
            last_seg == seg && off - last_off < SPARSE_INDEX_STRIDE_BYTES
        };
        match self.sparse.last_mut() {
            Some(last) if near(last) => last.occurred_max_us = last.occurred_max_us.max(occurred),
            _ => self.sparse.push(SparseEntry { position, loc, frame_end, occurred_max_us: occurred }),
        }
    }

    /// A position before which every event occurred before `occurred_at_us`: the start of the
    /// first span whose latest event occurred at or after it (the head when none did).
    pub fn position_since(&self, occurred_at_us: i64) -> u64 {
        self.sparse.iter().find(|e| e.occurred_max_us >= occurred_at_us).map_or(self.head, |e| e.position)
    }

    /// Sets the logical length of segment `seg`.
    pub fn set_segment_len(&mut self, seg: u32, len: u64) {
        let seg = seg as usize;
        if self.segment_lens.len() <= seg {
            self.segment_lens.resize(seg + 1, 0);
        }
        self.segment_lens[seg] = len;
    }

    /// Calls `f` with the record at `loc`, checked, without copying it.
    pub fn with_record<T>(&self, loc: u64, f: impl FnOnce(&RecordView<'_>) -> T) -> Result<T, ReadError> {
        let (seg, off) = split_location(loc);
        let file = self.files.get(seg as usize).ok_or_else(|| io::Error::other("record location names no segment"))?;
        let mut prefix = [0u8; 4];
        file.read_exact_at(&mut prefix, off)?;
        let total = format::RECORD_PREFIX_LEN + format::le_u32(&prefix) as usize;
        if total > super::PAYLOAD_BYTES_MAX + 4096 {
            return Err(ReadError::Corrupt { segment: seg, offset: off, reason: "record length is implausible" });
        }
        let mut buf = vec![0u8; total];
        file.read_exact_at(&mut buf, off)?;
        let (view, _) =
            format::decode_record(&buf).map_err(|reason| ReadError::Corrupt { segment: seg, offset: off, reason })?;
        Ok(f(&view))
    }

    /// The record at `loc` and the location of its stream's previous record.
    pub fn read_at(&self, loc: u64) -> Result<(RecordedEvent, u64), ReadError> {
        self.with_record(loc, |v| (v.to_recorded(), v.meta.prev_loc))
    }

    /// Where the stream's last record is, if the stream exists.
    fn stream_loc(&self, name: &str) -> Result<Option<u64>, ReadError> {
        // The side map is almost always empty: skip hashing the name for it.
        if !self.stream_collisions.is_empty()
            && let Some(&loc) = self.stream_collisions.get(name)
        {
            return Ok(Some(loc));
        }
        let Some(loc) = self.streams.latest(stream_key(name))? else { return Ok(None) };
        // The key may belong to another stream with the same hash.
        Ok(self.with_record(loc, |v| v.stream == name)?.then_some(loc))
    }

    /// Brings into the cache what looking up these streams and event ids will read first
    /// (see [`KeyMap::touch`]).
    pub fn touch<'a>(&self, streams: impl Iterator<Item = &'a str>, ids: impl Iterator<Item = Uuid>) {
        let mut seen = 0u64;
        for name in streams {
            seen ^= self.streams.touch(stream_key(name));
        }
        for id in ids {
            seen ^= self.ids.touch(id_key(id));
        }
        std::hint::black_box(seen);
    }

    /// The stream's last record, if the stream exists.
    pub fn stream_head(&self, name: &str) -> Result<Option<StreamHead>, ReadError> {
        match self.stream_loc(name)? {
            None => Ok(None),
            Some(loc) => Ok(Some(StreamHead { revision: self.with_record(loc, |v| v.meta.revision)?, loc })),
        }
    }

    /// Makes `loc` the stream's last record. `known`: the caller found the stream's head in
    /// this index by its name, so its key is its own and need not be looked up again.
    pub fn set_stream_head(&mut self, name: &str, loc: u64, known: bool) -> Result<(), ReadError> {
        if !self.stream_collisions.is_empty()
            && let Some(slot) = self.stream_collisions.get_mut(name)
        {
            *slot = loc;
            return Ok(());
        }
        let key = stream_key(name);
        if known {
            return Ok(self.streams.insert(key, loc)?);
        }
        match self.streams.latest(key)? {
            Some(old) if !self.with_record(old, |v| v.stream == name)? => {
                self.stream_collisions.insert(name.to_owned(), loc);
            }
            _ => self.streams.insert(key, loc)?,
        }
        Ok(())
    }

    /// The stored event with this id, if any.
    pub fn event_by_id(&self, id: Uuid) -> Result<Option<RecordedEvent>, ReadError> {
        self.id_loc(id)?.map(|loc| self.read_at(loc).map(|(e, _)| e)).transpose()
    }

    /// Where the event with this id is, if stored.
    pub fn id_loc(&self, id: Uuid) -> Result<Option<u64>, ReadError> {
        if !self.id_collisions.is_empty()
            && let Some(&loc) = self.id_collisions.get(&id.as_u128())
        {
            return Ok(Some(loc));
        }
        self.ids.find(id_key(id), |loc| self.with_record(loc, |v| v.event_id == id))
    }

    /// Records where an event id is that the caller knows is not indexed yet (the writer
    /// checked it when it staged the event, under the same lock).
    pub fn insert_new_id(&mut self, id: Uuid, loc: u64) -> io::Result<()> {
        let key = id_key(id);
        // In memory a key holds one location; another id with the same key waits aside.
        if self.ids.recent_get(key).is_some() {
            self.id_collisions.insert(id.as_u128(), loc);
            Ok(())
        } else {
            self.ids.insert(key, loc)
        }
    }

    /// Records where a new event id is. Returns false if the id is already indexed.
    pub fn insert_id(&mut self, id: Uuid, loc: u64) -> Result<bool, ReadError> {
        if self.id_loc(id)?.is_some() {
            return Ok(false);
        }
        self.insert_new_id(id, loc)?;
        Ok(true)
    }

    /// Saves each map's filter whose file does not hold it as it is.
    pub fn save_filters_if_changed(&self) {
        let _ = self.streams.save_filter_if_changed();
        let _ = self.ids.save_filter_if_changed();
    }

    /// Writes the snapshot atomically: a temporary file, synced, renamed over `path`.
    pub fn write_snapshot(&self, path: &Path) -> io::Result<()> {
        let tmp = self.write_snapshot_tmp(path)?;
        finish_snapshot(&tmp, path)
    }

    /// Streams the snapshot into `path`'s temporary file (not yet synced) and returns that
    /// file's path; [`finish_snapshot`] makes it durable and puts it in place. Streaming keeps
    /// memory flat: the snapshot is as large as the index.
    pub fn write_snapshot_tmp(&self, path: &Path) -> io::Result<std::path::PathBuf> {
        // The maps' filters go beside their runs (when they changed since they were saved); one
        // that cannot be saved is built at the next open instead.
        self.save_filters_if_changed();
        let tmp = path.with_extension("tmp");
        let mut out = CrcWriter::new(File::create(&tmp)?);
        out.put(&SNAPSHOT_MAGIC)?;
        out.put(&self.head.to_le_bytes())?;
        out.put(&self.link)?;
        out.put(&self.last_frame.to_le_bytes())?;
        let (stream_runs, id_runs) = (self.streams.runs(), self.ids.runs());
        for n in [
            self.streams.recent_len(),
            self.ids.recent_len(),
            self.stream_collisions.len(),
            self.id_collisions.len(),
            self.sparse.len(),
            self.segment_lens.len(),
            stream_runs.len(),
            id_runs.len(),
        ] {
            out.put(&(n as u64).to_le_bytes())?;
        }
        for map in [&self.streams, &self.ids] {
            for (k, v) in map.recent() {
                out.put(&k.to_le_bytes())?;
                out.put(&v.to_le_bytes())?;
            }
        }
        for (name, loc) in &self.stream_collisions {
            out.put(&(name.len() as u16).to_le_bytes())?;
            out.put(name.as_bytes())?;
            out.put(&loc.to_le_bytes())?;
        }
        for (id, loc) in &self.id_collisions {
            out.put(&id.to_le_bytes())?;
            out.put(&loc.to_le_bytes())?;
        }
        for e in &self.sparse {
            for v in [e.position, e.loc, e.frame_end, e.occurred_max_us as u64] {
                out.put(&v.to_le_bytes())?;
            }
        }
        for len in &self.segment_lens {
            out.put(&len.to_le_bytes())?;
        }
        for run in stream_runs.iter().chain(&id_runs) {
            out.put(&run.number.to_le_bytes())?;
            out.put(&run.entries.to_le_bytes())?;
            out.put(&run.crc.to_le_bytes())?;
        }
        out.finish()?;
        Ok(tmp)
    }

    /// Reads a snapshot: `None` if it is missing, damaged, of another format or names a run
    /// that is missing, damaged or another; an error if a file could not be read for another
    /// reason (the snapshot may be good: it is not given up for that). Whether it matches the
    /// log is for the caller to check. Streams the file: memory holds the index, not the file
    /// as well.
    pub fn read_snapshot(path: &Path, files: Vec<Arc<File>>, spill: Option<SpillOptions>) -> io::Result<Option<Index>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < 8 + 8 + 32 + 8 + 64 + 4 {
            return Ok(None);
        }
        let mut r = CrcReader::new(file, len - 4);
        let parsed = Self::parse_snapshot(&mut r, len, files, spill.clone());
        // A read that failed is not damage: the snapshot may be good.
        if let Some(e) = r.error.take() {
            return Err(e);
        }
        let Some((mut index, recent, runs)) = parsed else { return Ok(None) };
        let [stream_recent, id_recent] = recent;
        let [stream_runs, id_runs] = runs;
        // The two maps read and check their runs side by side, a thread each.
        let (streams, ids) = std::thread::scope(|scope| {
            let spill_streams = spill.clone();
            let streams =
                std::thread::Builder::new().name("posledger-index-open".into()).spawn_scoped(scope, move || {
                    KeyMap::restore(STREAMS, Keep::Latest, spill_streams, stream_recent, &stream_runs)
                });
            let ids = KeyMap::restore(IDS, Keep::All, spill, id_recent, &id_runs);
            let streams = streams
                .and_then(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("reading the stream index panicked"))));
            (streams, ids)
        });
        // A map that is missing or damaged makes the snapshot unusable, whatever the other's
        // reading met; only then does a read error count.
        if matches!(streams, Ok(None)) || matches!(ids, Ok(None)) {
            return Ok(None);
        }
        let (Some(streams), Some(ids)) = (streams?, ids?) else { return Ok(None) };
        index.streams = streams;
        index.ids = ids;
        Ok(Some(index))
    }

    /// The snapshot file's contents; `None` if it is damaged or of another format.
    fn parse_snapshot(
        r: &mut CrcReader<File>,
        len: u64,
        files: Vec<Arc<File>>,
        spill: Option<SpillOptions>,
    ) -> Option<Parsed> {
        if r.take::<8>()? != SNAPSHOT_MAGIC {
            return None;
        }
        let mut index = Index::with_spill(files, spill);
        index.head = r.u64()?;
        index.link = r.take::<32>()?;
        index.last_frame = r.u64()?;
        let counts: Vec<u64> = (0..8).map(|_| r.u64()).collect::<Option<_>>()?;
        // Counts are checked against the file's length before anything is allocated for them.
        let fixed = [16u64, 16, 0, 24, 32, 8, 20, 20]
            .iter()
            .zip(&counts)
            .try_fold(0u64, |acc, (w, n)| acc.checked_add(w.checked_mul(*n)?))?;
        if fixed > len || counts[6] > SNAPSHOT_RUNS_MAX || counts[7] > SNAPSHOT_RUNS_MAX {
            return None;
        }
        let counts: Vec<usize> = counts.into_iter().map(|n| n as usize).collect();
        let mut recent = |n: usize| -> Option<HashKeyMap<u64, u64>> {
            let mut map = HashKeyMap::default();
            map.reserve(n);
            for _ in 0..n {
                map.insert(r.u64()?, r.u64()?);
            }
            Some(map)
        };
        let stream_recent = recent(counts[0])?;
        let id_recent = recent(counts[1])?;
        for _ in 0..counts[2] {
            let name_len = u16::from_le_bytes(r.take::<2>()?) as usize;
            let mut name = vec![0u8; name_len];
            r.fill(&mut name)?;
            index.stream_collisions.insert(String::from_utf8(name).ok()?, r.u64()?);
        }
        for _ in 0..counts[3] {
            let id = u128::from_le_bytes(r.take::<16>()?);
            index.id_collisions.insert(id, r.u64()?);
        }
        for _ in 0..counts[4] {
            index.sparse.push(SparseEntry {
                position: r.u64()?,
                loc: r.u64()?,
                frame_end: r.u64()?,
                occurred_max_us: r.u64()? as i64,
            });
        }
        for _ in 0..counts[5] {
            index.segment_lens.push(r.u64()?);
        }
        let mut runs = |n: usize| {
            (0..n)
                .map(|_| Some(RunName { number: r.u64()?, entries: r.u64()?, crc: u32::from_le_bytes(r.take::<4>()?) }))
                .collect::<Option<Vec<_>>>()
        };
        let stream_runs = runs(counts[6])?;
        let id_runs = runs(counts[7])?;
        r.finish().then_some((index, [stream_recent, id_recent], [stream_runs, id_runs]))
    }
}

/// A snapshot file read: the index without its maps, and the maps' in-memory tables and runs
/// (streams, ids).
type Parsed = (Index, [HashKeyMap<u64, u64>; 2], [Vec<RunName>; 2]);

/// Makes a snapshot written by [`Index::write_snapshot_tmp`] durable and puts it in place.
pub(crate) fn finish_snapshot(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Bytes a snapshot is checksummed and written or read in at a time.
const SNAPSHOT_BLOCK_BYTES: usize = 1 << 20;

/// A writer that keeps the CRC32C of what went through it, a block at a time.
struct CrcWriter<W: Write> {
    inner: W,
    block: Vec<u8>,
    crc: u32,
}

impl<W: Write> CrcWriter<W> {
    fn new(inner: W) -> Self {
        CrcWriter { inner, block: Vec::with_capacity(SNAPSHOT_BLOCK_BYTES), crc: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.block.len() + bytes.len() > SNAPSHOT_BLOCK_BYTES {
            self.flush_block()?;
        }
        self.block.extend_from_slice(bytes);
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &self.block);
        self.inner.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }

    /// Writes what is buffered, then the checksum of everything.
    fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.inner.write_all(&self.crc.to_le_bytes())?;
        Ok(self.inner)
    }
}

/// A reader that keeps the CRC32C of what it read, a block at a time, and refuses to read
/// past the checksum at the end. A read that fails other than by the file ending is kept in
/// `error`.
struct CrcReader<R: io::Read> {
    inner: R,
    block: Vec<u8>,
    at: usize,
    crc: u32,
    /// Checksummed bytes not yet read into `block`.
    left: u64,
    error: Option<io::Error>,
}

impl<R: io::Read> CrcReader<R> {
    fn new(inner: R, checksummed: u64) -> Self {
        CrcReader { inner, block: Vec::new(), at: 0, crc: 0, left: checksummed, error: None }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Option<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => Some(()),
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    self.error.get_or_insert(e);
                }
                None
            }
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Option<()> {
        let mut done = 0;
        while done < buf.len() {
            if self.at == self.block.len() {
                let n = (SNAPSHOT_BLOCK_BYTES as u64).min(self.left) as usize;
                if n == 0 {
                    return None;
                }
                let mut block = std::mem::take(&mut self.block);
                block.resize(n, 0);
                let read = self.read_exact(&mut block);
                self.block = block;
                read?;
                self.crc = crc32c::crc32c_append(self.crc, &self.block);
                self.left -= n as u64;
                self.at = 0;
            }
            let n = (buf.len() - done).min(self.block.len() - self.at);
            buf[done..done + n].copy_from_slice(&self.block[self.at..self.at + n]);
            self.at += n;
            done += n;
        }
        Some(())
    }

    /// Whether everything checksummed was read and the stored checksum matches.
    fn finish(&mut self) -> bool {
        let mut stored = [0u8; 4];
        self.left == 0
            && self.at == self.block.len()
            && self.read_exact(&mut stored).is_some()
            && u32::from_le_bytes(stored) == self.crc
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::event;
    use crate::store::format::{RecordMeta, encode_record, location};

    /// Two records in a file: stream `a` (event `x`) and stream `b` (event `y`).
    fn two_records() -> (tempfile::NamedTempFile, u64, u64) {
        let mut bytes = Vec::new();
        let meta = |position| RecordMeta { position, revision: 0, prev_loc: NO_LOCATION, recorded_at_us: 0 };
        encode_record(&mut bytes, meta(0), "a", &event("x", 0));
        let second = bytes.len() as u64;
        encode_record(&mut bytes, meta(1), "b", &event("y", 1));
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&bytes).expect("write");
        (file, location(0, 0), location(0, second))
    }

    #[test]
    fn colliding_keys_never_confuse_two_streams_or_ids() {
        let (file, loc_a, loc_b) = two_records();
        let mut index = Index::new(vec![Arc::new(File::open(file.path()).expect("open"))]);
        // Pretend `b` hashes like `a`, and `y` like `x`: their keys are taken by the others.
        index.streams.insert(stream_key("b"), loc_a).expect("insert");
        let (x, y) = (event("x", 0).event_id, event("y", 1).event_id);
        index.ids.insert(id_key(y), loc_a).expect("insert");
        assert_eq!(index.stream_head("b").expect("read"), None, "a hit is confirmed by name");
        assert_eq!(index.id_loc(y).expect("read"), None, "a hit is confirmed by id");
        index.set_stream_head("b", loc_b, false).expect("set");
        assert!(index.insert_id(y, loc_b).expect("insert"));
        assert_eq!(index.stream_head("b").expect("read"), Some(StreamHead { revision: 0, loc: loc_b }));
        assert_eq!(index.id_loc(y).expect("read"), Some(loc_b));
        assert_eq!(index.id_loc(x).expect("read"), None, "x was never indexed");
        assert!(!index.insert_id(y, loc_b).expect("insert"), "an id is indexed once");
        // And they survive a snapshot.
        index.head = 2;
        let snap = tempfile::NamedTempFile::new().expect("temp file");
        index.write_snapshot(snap.path()).expect("write snapshot");
        let files = vec![Arc::new(File::open(file.path()).expect("open"))];
        let back = Index::read_snapshot(snap.path(), files, None).expect("read").expect("read snapshot");
        assert_eq!(back.stream_head("b").expect("read"), Some(StreamHead { revision: 0, loc: loc_b }));
        assert_eq!(back.id_loc(y).expect("read"), Some(loc_b));
        // A damaged snapshot is not used.
        let mut bytes = std::fs::read(snap.path()).expect("read");
        bytes[20] ^= 1;
        std::fs::write(snap.path(), &bytes).expect("write");
        assert!(Index::read_snapshot(snap.path(), Vec::new(), None).expect("read").is_none());
    }
}

//! A map from 64-bit keys to record locations whose memory does not grow with the log.
//!
//! The embedded store indexes every stream and every event id. Held in a hash table, that
//! index grows by about 40 bytes per event; so here the newest entries stay in a bounded
//! table (`recent`) and the rest go to sorted files on disk (runs), read with `pread`:
//!
//! - When `recent` holds [`SpillOptions::recent_entries_max`] entries they are sorted and
//!   written as a new run, and `recent` is emptied (its table is kept, so memory stays put).
//! - Two adjacent runs are merged when the older is no larger than the newer, like the digits
//!   of a binary counter: about log2(entries / table size) runs, and each entry is rewritten
//!   about that many times in all. A merge runs on a thread of its own, one at a time per map;
//!   lookups and inserts go on meanwhile, and the two runs are replaced by the merged one only
//!   once it is durable.
//! - A lookup tries `recent`, then the runs from the newest. A run is searched with an
//!   in-memory fence per 4 KiB block (the first key of each block; 1/32 byte per entry), so a
//!   hit costs one read of one block.
//! - A blocked Bloom filter of a fixed size ([`SpillOptions::filter_bytes`]) over the keys in
//!   runs answers most lookups of keys that are not there (every new stream and event id)
//!   without any read. Its memory is fixed: past its design load it answers "maybe" more
//!   often and such lookups read a block per run. Each index snapshot also saves the filter
//!   (`keys/NAME.filter`, naming the runs it covers), so an open finds it ready instead of adding
//!   every key of every run to it again (at 10M events, ~90 % of an open's time).
//!
//! A map keeps either the latest location per key (streams: a later entry replaces an
//! earlier one) or all of them (event ids: two ids can share a key, and each hit is confirmed
//! by the caller against the record). Runs are derived data: the index snapshot names the
//! runs it relies on, and a run that fails its checksum makes the snapshot unusable, so the
//! store indexes the log again.
//!
//! # Filter file (`keys/NAME.filter`), little-endian
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `PLFLT001` (changed whenever the filter's hashing changes) |
//! | 8 | bits set per key ([`FILTER_BITS_PER_KEY`]) |
//! | 8 | run count r |
//! | 20 × r | the runs whose keys it holds: (number u64, entries u64, checksum u32) |
//! | 8 | block count b |
//! | 64 × b | the filter's blocks |
//! | 4 | CRC32C of everything before |
//!
//! Derived and not synced: a filter file that is missing, damaged, of another size or of other
//! runs than the snapshot names is not used, and the open builds the filter from the runs.
//!
//! # Run file (`keys/NAME-NUMBER.run`), little-endian
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `PLRUN002` |
//! | 16 × n | entries: (key, location), sorted by key |
//! | 8 | entry count n |
//! | 4 | CRC32C of everything before |

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::ReadError;
use super::index::HashKeyMap;

/// Default entries kept in memory per map before they are written as a run: 7/8 of 2^19,
/// the most a table of 2^19 slots holds before it would grow.
pub const INDEX_RECENT_ENTRIES_MAX_DEFAULT: usize = 458_752;
/// Default size of each map's filter over the keys on disk. At 16 MiB it answers a false
/// "maybe" for under 0.1 % of absent keys up to about 7 million keys per map, 0.25 % at 10
/// million, and more past that.
pub const INDEX_FILTER_BYTES_DEFAULT: usize = 16 << 20;

/// A run file's magic.
const RUN_MAGIC: [u8; 8] = *b"PLRUN002";
/// A filter file's magic: a new one whenever [`Filter::place`] or [`splitmix`] changes, so a
/// file of the old hashing is never taken (it would miss keys).
const FILTER_MAGIC: [u8; 8] = *b"PLFLT001";
/// Most runs a filter file may name.
const FILTER_RUNS_MAX: u64 = 1024;
/// Bytes of one (key, location) entry.
const ENTRY_BYTES: usize = 16;
/// Entries in one block of a run: one fence each.
const BLOCK_ENTRIES: usize = 256;
/// Bytes a run's header takes before its entries.
const RUN_HEADER_BYTES: u64 = 8;
/// Bytes after a run's entries: their count and the checksum.
const RUN_TRAILER_BYTES: u64 = 12;
/// Buffer for writing and streaming runs.
const RUN_IO_BUFFER_BYTES: usize = 256 << 10;
/// Runs a map may have before a spill waits for the running merge: merges keep about
/// log2(entries / table size) runs, so this is reached only when merging falls behind.
const RUNS_PENDING_MAX: usize = 48;
/// How many keys ahead of its inserts a spill reads the filter blocks they will change.
const FILTER_TOUCH_AHEAD: usize = 16;
/// Filter bits set per key, all in one 64-byte block.
const FILTER_BITS_PER_KEY: u32 = 6;

/// Where and how a map spills to disk.
#[derive(Debug, Clone)]
pub(crate) struct SpillOptions {
    /// Directory of the run files.
    pub dir: PathBuf,
    /// Entries kept in memory before they are written as a run.
    pub recent_entries_max: usize,
    /// Bytes of the filter over keys on disk.
    pub filter_bytes: usize,
    /// Whether runs must survive a crash (a store's do; a throwaway index's, such as
    /// `verify`'s, are neither synced nor kept once merged away).
    pub durable: bool,
}

/// What a map keeps when a key is inserted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Only the latest location.
    Latest,
    /// Every location (the caller keeps a key's entries in `recent` distinct).
    All,
}

/// A sorted run on disk.
#[derive(Debug)]
struct Run {
    number: u64,
    file: File,
    entries: u64,
    /// The file's checksum: with the number and the count it names this run's content, so a
    /// snapshot never takes another run that happens to have the same number and count.
    crc: u32,
    /// The first key of each block.
    fences: Vec<u64>,
}

impl Run {
    /// The run for reading it whole on another thread (no fences: they serve lookups).
    fn reader(&self) -> io::Result<Run> {
        Ok(Run {
            number: self.number,
            file: self.file.try_clone()?,
            entries: self.entries,
            crc: self.crc,
            fences: Vec::new(),
        })
    }

    /// Calls `visit` with the location of each entry for `key`, until it returns true.
    fn find(&self, key: u64, visit: &mut dyn FnMut(u64) -> Result<bool, ReadError>) -> Result<bool, ReadError> {
        let after = self.fences.partition_point(|&k| k < key);
        if after == 0 && self.fences.first() != Some(&key) {
            return Ok(false);
        }
        let mut block = after.saturating_sub(1);
        let mut buf = [0u8; BLOCK_ENTRIES * ENTRY_BYTES];
        loop {
            let first = (block * BLOCK_ENTRIES) as u64;
            let count = (self.entries - first).min(BLOCK_ENTRIES as u64) as usize;
            let bytes = &mut buf[..count * ENTRY_BYTES];
            self.file.read_exact_at(bytes, RUN_HEADER_BYTES + first * ENTRY_BYTES as u64)?;
            for entry in bytes.chunks_exact(ENTRY_BYTES) {
                let (k, loc) = split_entry(entry);
                if k > key {
                    return Ok(false);
                }
                if k == key && visit(loc)? {
                    return Ok(true);
                }
            }
            // Entries for the key may go on into the next block.
            block += 1;
            if self.fences.get(block) != Some(&key) {
                return Ok(false);
            }
        }
    }
}

fn split_entry(entry: &[u8]) -> (u64, u64) {
    let k = u64::from_le_bytes(entry[..8].try_into().unwrap_or_default());
    let loc = u64::from_le_bytes(entry[8..16].try_into().unwrap_or_default());
    (k, loc)
}

/// A blocked Bloom filter: each key sets [`FILTER_BITS_PER_KEY`] bits in one 64-byte block.
#[derive(Debug)]
struct Filter {
    blocks: Vec<[u64; 8]>,
}

impl Filter {
    fn new(bytes: usize) -> Self {
        Filter { blocks: vec![[0u64; 8]; (bytes / 64).max(1)] }
    }

    /// The block of `key` and its bits there, as (word, mask). Keys are hashes already; mixing
    /// once more decorrelates the block from the bits.
    fn place(&self, key: u64) -> (usize, impl Iterator<Item = (usize, u64)> + use<>) {
        let h = splitmix(key);
        let block = ((u128::from(h) * self.blocks.len() as u128) >> 64) as usize;
        let bits = splitmix(h ^ 0x5851_F42D_4C95_7F2D);
        let masks = (0..FILTER_BITS_PER_KEY).map(move |i| {
            let bit = ((bits >> (9 * i)) & 511) as usize;
            (bit / 64, 1u64 << (bit % 64))
        });
        (block, masks)
    }

    fn insert(&mut self, key: u64) {
        let (block, masks) = self.place(key);
        for (word, mask) in masks {
            self.blocks[block][word] |= mask;
        }
    }

    fn may_contain(&self, key: u64) -> bool {
        let (block, mut masks) = self.place(key);
        masks.all(|(word, mask)| self.blocks[block][word] & mask != 0)
    }

    /// Inserts the key of every entry, reading the block of the key [`FILTER_TOUCH_AHEAD`]
    /// places later first, so that their cache misses overlap with the inserts before them.
    fn insert_all(&mut self, entries: &[(u64, u64)]) {
        let mut seen = 0;
        for (i, &(key, _)) in entries.iter().enumerate() {
            if let Some(&(later, _)) = entries.get(i + FILTER_TOUCH_AHEAD) {
                seen ^= self.touch(later);
            }
            self.insert(key);
        }
        std::hint::black_box(seen);
    }

    /// The first word of `key`'s block: reading it brings the block into the cache.
    fn touch(&self, key: u64) -> u64 {
        self.blocks[self.place(key).0][0]
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a snapshot records of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunName {
    pub number: u64,
    pub entries: u64,
    pub crc: u32,
}

/// Keys to locations: a bounded table in memory, sorted runs on disk.
#[derive(Debug)]
pub(crate) struct KeyMap {
    name: &'static str,
    keep: Keep,
    recent: HashKeyMap<u64, u64>,
    /// Oldest first.
    runs: Vec<Run>,
    filter: Option<Filter>,
    /// The filter file holds `filter` as it is (read from it, or saved since it last changed).
    filter_on_disk: std::sync::atomic::AtomicBool,
    spill: Option<SpillOptions>,
    next_number: u64,
    /// Runs merged away that the last durable snapshot may still name.
    retired: Vec<PathBuf>,
    /// Reused to sort `recent` when it is written.
    scratch: Vec<(u64, u64)>,
    /// The merge running, if any.
    merging: Option<Merging>,
}

/// A merge of two adjacent runs on a thread of its own.
#[derive(Debug)]
struct Merging {
    /// The numbers of the runs merged: older, newer.
    pair: (u64, u64),
    handle: std::thread::JoinHandle<io::Result<Run>>,
}

impl Drop for KeyMap {
    fn drop(&mut self) {
        // A merge still writing must not outlive the map: a store opened again could reuse
        // its run number.
        if let Some(m) = self.merging.take() {
            let _ = m.handle.join();
        }
    }
}

impl KeyMap {
    /// An empty map; without `spill` it never leaves memory.
    pub fn new(name: &'static str, keep: Keep, spill: Option<SpillOptions>) -> Self {
        KeyMap {
            name,
            keep,
            recent: HashKeyMap::default(),
            runs: Vec::new(),
            filter: None,
            filter_on_disk: std::sync::atomic::AtomicBool::new(false),
            spill,
            next_number: 1,
            retired: Vec::new(),
            scratch: Vec::new(),
            merging: None,
        }
    }

    /// A map with `recent` and the runs a snapshot named (number, entries, checksum), each
    /// read whole and checked; `None` if a run is missing, damaged or not the one named, an
    /// error if one could not be read for another reason.
    pub fn restore(
        name: &'static str,
        keep: Keep,
        spill: Option<SpillOptions>,
        recent: HashKeyMap<u64, u64>,
        runs: &[RunName],
    ) -> io::Result<Option<Self>> {
        let mut map = KeyMap::new(name, keep, spill);
        map.recent = recent;
        if runs.is_empty() {
            return Ok(Some(map));
        }
        let Some(spill) = map.spill.clone() else { return Ok(None) };
        // The filter the last snapshot saved, when it holds exactly these runs.
        let saved = read_filter(&filter_path(&spill.dir, name), runs, spill.filter_bytes);
        let (mut filter, building) = match saved {
            Some(filter) => (filter, false),
            None => (Filter::new(spill.filter_bytes), true),
        };
        map.filter_on_disk = std::sync::atomic::AtomicBool::new(!building);
        for &RunName { number, entries, crc } in runs {
            let adding = building.then_some(&mut filter);
            let run = match open_run(&run_path(&spill.dir, name, number), number, entries, keep, adding) {
                Ok(run) => run,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            if run.crc != crc {
                return Ok(None);
            }
            map.next_number = map.next_number.max(number + 1);
            map.runs.push(run);
        }
        map.filter = Some(filter);
        Ok(Some(map))
    }

    /// Reads the memory a lookup of `key` starts with (its slot in memory, its filter block)
    /// and returns a value that depends on it. A batch touches all its keys first: the cache
    /// misses of independent keys then overlap instead of following one another.
    pub fn touch(&self, key: u64) -> u64 {
        let filter = self.filter.as_ref().map_or(0, |f| f.touch(key));
        filter ^ u64::from(self.recent.contains_key(&key))
    }

    /// The entry for `key` in memory, if any.
    pub fn recent_get(&self, key: u64) -> Option<u64> {
        self.recent.get(&key).copied()
    }

    /// Calls `visit` with each location stored for `key`, newest first, until it returns
    /// true; returns that location. A `Latest` map offers only the newest.
    pub fn find(
        &self,
        key: u64,
        mut visit: impl FnMut(u64) -> Result<bool, ReadError>,
    ) -> Result<Option<u64>, ReadError> {
        if let Some(&loc) = self.recent.get(&key) {
            if visit(loc)? {
                return Ok(Some(loc));
            }
            if self.keep == Keep::Latest {
                return Ok(None);
            }
        }
        if !self.filter.as_ref().is_some_and(|f| f.may_contain(key)) {
            return Ok(None);
        }
        let mut found = None;
        let mut offered = false;
        for run in self.runs.iter().rev() {
            let hit = run.find(key, &mut |loc| {
                offered = true;
                if visit(loc)? {
                    found = Some(loc);
                    return Ok(true);
                }
                // A `Latest` map's newest entry is the only one that counts.
                Ok(self.keep == Keep::Latest)
            })?;
            if hit || (offered && self.keep == Keep::Latest) {
                break;
            }
        }
        Ok(found)
    }

    /// The newest location for `key`, unconfirmed.
    pub fn latest(&self, key: u64) -> Result<Option<u64>, ReadError> {
        self.find(key, |_| Ok(true))
    }

    /// Stores `loc` for `key` (replacing an entry in memory), writing memory out as a run
    /// when it is full.
    pub fn insert(&mut self, key: u64, loc: u64) -> io::Result<()> {
        self.recent.insert(key, loc);
        if let Some(spill) = &self.spill
            && self.recent.len() >= spill.recent_entries_max
        {
            self.spill_recent()?;
        } else if self.merging.as_ref().is_some_and(|m| m.handle.is_finished()) {
            self.tend_merges(false, true)?;
        }
        Ok(())
    }

    /// Waits for the running merge, if any, and takes it in; starts no other.
    pub fn finish_merge(&mut self) -> io::Result<()> {
        if self.merging.is_some() {
            self.tend_merges(true, false)?;
        }
        Ok(())
    }

    /// Waits for merges until no two runs call for one.
    #[cfg(test)]
    pub fn settle(&mut self) -> io::Result<()> {
        self.tend_merges(true, true)?;
        while self.merging.is_some() {
            self.tend_merges(true, true)?;
        }
        Ok(())
    }

    /// The entries in memory.
    pub fn recent(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.recent.iter().map(|(&k, &v)| (k, v))
    }

    /// Entries in memory.
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// The runs, oldest first.
    pub fn runs(&self) -> Vec<RunName> {
        self.runs.iter().map(|r| RunName { number: r.number, entries: r.entries, crc: r.crc }).collect()
    }

    /// Saves the filter over the runs (see the module doc), naming the runs it holds; a map
    /// that keeps nothing on disk has none to save. Not synced: a lost or torn filter file is
    /// not used and costs the next open the time to build it again.
    pub fn save_filter(&self) -> io::Result<()> {
        let (Some(spill), Some(filter)) = (&self.spill, &self.filter) else { return Ok(()) };
        let runs = self.runs();
        let mut bytes = Vec::with_capacity(8 + 8 + 8 + 20 * runs.len() + 8 + 64 * filter.blocks.len() + 4);
        bytes.extend_from_slice(&FILTER_MAGIC);
        bytes.extend_from_slice(&u64::from(FILTER_BITS_PER_KEY).to_le_bytes());
        bytes.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        for run in &runs {
            bytes.extend_from_slice(&run.number.to_le_bytes());
            bytes.extend_from_slice(&run.entries.to_le_bytes());
            bytes.extend_from_slice(&run.crc.to_le_bytes());
        }
        bytes.extend_from_slice(&(filter.blocks.len() as u64).to_le_bytes());
        for block in &filter.blocks {
            for word in block {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let path = filter_path(&spill.dir, self.name);
        let tmp = path.with_extension("filter-tmp");
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, &path)?;
        self.filter_on_disk.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Saves the filter if its file does not hold it as it is (see [`KeyMap::save_filter`]).
    pub fn save_filter_if_changed(&self) -> io::Result<()> {
        if self.filter_on_disk.load(std::sync::atomic::Ordering::Relaxed) { Ok(()) } else { self.save_filter() }
    }

    /// Paths of the run files in use.
    pub fn run_paths(&self) -> Vec<PathBuf> {
        let Some(spill) = &self.spill else { return Vec::new() };
        self.runs.iter().map(|r| run_path(&spill.dir, self.name, r.number)).collect()
    }

    /// Whether runs were merged away since the last [`KeyMap::take_retired`].
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Hands over the runs merged away since the last call, to be removed once a snapshot
    /// that does not name them is durable.
    pub fn take_retired(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.retired)
    }

    /// Writes `recent` as a new run and merges runs.
    fn spill_recent(&mut self) -> io::Result<()> {
        let Some(spill) = self.spill.clone() else { return Ok(()) };
        fs::create_dir_all(&spill.dir)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend(self.recent.iter().map(|(&k, &v)| (k, v)));
        scratch.sort_unstable();
        let number = self.take_number();
        let path = run_path(&spill.dir, self.name, number);
        let run = write_run(&path, number, scratch.iter().map(|&e| Ok(e)), spill.durable)?;
        if spill.durable {
            sync_dir(&spill.dir)?;
        }
        let filter = self.filter.get_or_insert_with(|| Filter::new(spill.filter_bytes));
        filter.insert_all(&scratch);
        self.filter_on_disk.store(false, std::sync::atomic::Ordering::Relaxed);
        self.scratch = scratch;
        self.recent.clear();
        self.runs.push(run);
        self.tend_merges(false, true)?;
        // Spills outrunning the merges wait for them, so runs (and their open files) stay few.
        while self.runs.len() > RUNS_PENDING_MAX && self.merging.is_some() {
            self.tend_merges(true, true)?;
        }
        Ok(())
    }

    /// Takes in a finished merge (waiting for it if `wait`), then, if `start`, starts the next
    /// one if two adjacent runs call for it and none is running. The two runs stay in use
    /// until the merged one is durable: a failed merge loses nothing from the index, and its
    /// error stops the writer.
    fn tend_merges(&mut self, wait: bool, start: bool) -> io::Result<()> {
        let Some(spill) = self.spill.clone() else { return Ok(()) };
        if let Some(m) = &self.merging {
            if !wait && !m.handle.is_finished() {
                return Ok(());
            }
            let Merging { pair: (older, newer), handle } = self.merging.take().expect("a merge");
            let merged = handle.join().map_err(|_| io::Error::other("merging index runs panicked"))??;
            let at = self.runs.iter().position(|r| r.number == older);
            let Some(at) = at.filter(|&i| self.runs.get(i + 1).is_some_and(|r| r.number == newer)) else {
                return Err(io::Error::other(format!("index runs {older} and {newer} are no longer side by side")));
            };
            self.runs.splice(at..at + 2, [merged]);
            // The filter holds the same keys, but its file names the runs merged away.
            self.filter_on_disk.store(false, std::sync::atomic::Ordering::Relaxed);
            for number in [older, newer] {
                let path = run_path(&spill.dir, self.name, number);
                if spill.durable {
                    self.retired.push(path);
                } else {
                    fs::remove_file(path)?;
                }
            }
        }
        if !start {
            return Ok(());
        }
        let pair = (1..self.runs.len()).rev().find(|&j| self.runs[j - 1].entries <= self.runs[j].entries);
        let Some(j) = pair else { return Ok(()) };
        let (older, newer) = (self.runs[j - 1].reader()?, self.runs[j].reader()?);
        let number = self.take_number();
        let path = run_path(&spill.dir, self.name, number);
        let keep = self.keep;
        let pair = (older.number, newer.number);
        let handle = std::thread::Builder::new().name("posledger-merge".into()).spawn(move || {
            let merged = merge(&path, number, &older, &newer, keep, spill.durable)?;
            if spill.durable {
                sync_dir(&spill.dir)?;
            }
            Ok(merged)
        })?;
        self.merging = Some(Merging { pair, handle });
        Ok(())
    }

    fn take_number(&mut self) -> u64 {
        let n = self.next_number;
        self.next_number += 1;
        n
    }
}

/// The file of run `number` of map `name`.
/// The filter file of map `name`.
fn filter_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.filter"))
}

/// The filter saved in `path` if it is whole, of `bytes` bytes, and holds exactly `runs`. Read
/// straight into the filter's blocks (no second copy of the file in memory).
fn read_filter(path: &Path, runs: &[RunName], bytes: usize) -> Option<Filter> {
    let blocks = (bytes / 64).max(1);
    let mut file = File::open(path).ok()?;
    let head_len = 8 + 8 + 8 + 20 * runs.len() + 8;
    let expected = head_len + 64 * blocks + 4;
    if file.metadata().ok()?.len() != expected as u64 || runs.len() as u64 > FILTER_RUNS_MAX {
        return None;
    }
    let mut head = vec![0u8; head_len];
    file.read_exact(&mut head).ok()?;
    let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
    if head[..8] != FILTER_MAGIC
        || u64_at(8) != u64::from(FILTER_BITS_PER_KEY)
        || u64_at(16) != runs.len() as u64
        || u64_at(head_len - 8) != blocks as u64
    {
        return None;
    }
    for (i, run) in runs.iter().enumerate() {
        let at = 24 + 20 * i;
        let crc = u32::from_le_bytes(head[at + 16..at + 20].try_into().unwrap_or_default());
        if (u64_at(at), u64_at(at + 8), crc) != (run.number, run.entries, run.crc) {
            return None;
        }
    }
    let mut crc = crc32c::crc32c(&head);
    let mut filter = Filter { blocks: vec![[0u64; 8]; blocks] };
    let mut chunk = vec![0u8; 64 << 10];
    for group in filter.blocks.chunks_mut(chunk.len() / 64) {
        let bytes = &mut chunk[..group.len() * 64];
        file.read_exact(bytes).ok()?;
        crc = crc32c::crc32c_append(crc, bytes);
        for (block, b) in group.iter_mut().zip(bytes.chunks_exact(64)) {
            for (word, w) in block.iter_mut().zip(b.chunks_exact(8)) {
                *word = u64::from_le_bytes(w.try_into().unwrap_or_default());
            }
        }
    }
    let mut stored = [0u8; 4];
    file.read_exact(&mut stored).ok()?;
    (u32::from_le_bytes(stored) == crc).then_some(filter)
}

pub(crate) fn run_path(dir: &Path, name: &str, number: u64) -> PathBuf {
    dir.join(format!("{name}-{number:08}.run"))
}

/// Removes every run file in `dir` that `keep` does not name: runs of an index that was not
/// used, or merged away.
pub(crate) fn remove_unused_runs(dir: &Path, keep: &[PathBuf]) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "run") && !keep.contains(&path) {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `entries` (sorted) as run `number` at `path` (synced if `durable`) and returns it
/// open.
fn write_run(
    path: &Path,
    number: u64,
    entries: impl Iterator<Item = io::Result<(u64, u64)>>,
    durable: bool,
) -> io::Result<Run> {
    let file = File::options().create(true).truncate(true).read(true).write(true).open(path)?;
    let mut fences = Vec::new();
    let mut out = BufWriter::with_capacity(RUN_IO_BUFFER_BYTES, &file);
    // Entries are checksummed a block at a time.
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK_ENTRIES * ENTRY_BYTES);
    let mut crc = crc32c::crc32c(&RUN_MAGIC);
    out.write_all(&RUN_MAGIC)?;
    let mut written = 0u64;
    for entry in entries {
        let (k, loc) = entry?;
        if written.is_multiple_of(BLOCK_ENTRIES as u64) {
            fences.push(k);
        }
        block.extend_from_slice(&k.to_le_bytes());
        block.extend_from_slice(&loc.to_le_bytes());
        written += 1;
        if block.len() == BLOCK_ENTRIES * ENTRY_BYTES {
            crc = crc32c::crc32c_append(crc, &block);
            out.write_all(&block)?;
            block.clear();
        }
    }
    block.extend_from_slice(&written.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &block);
    out.write_all(&block)?;
    out.write_all(&crc.to_le_bytes())?;
    out.flush()?;
    drop(out);
    if durable {
        file.sync_all()?;
    }
    Ok(Run { number, file, entries: written, crc, fences })
}

/// Merges two runs into run `number` at `path`: for equal keys a `Latest` map keeps the
/// newer entry only.
fn merge(path: &Path, number: u64, older: &Run, newer: &Run, keep: Keep, durable: bool) -> io::Result<Run> {
    let mut a = RunReader::new(older)?.peekable();
    let mut b = RunReader::new(newer)?.peekable();
    let merged = std::iter::from_fn(|| {
        let next_a = match a.peek() {
            Some(Ok(e)) => Some(*e),
            Some(Err(_)) => return a.next(),
            None => None,
        };
        let next_b = match b.peek() {
            Some(Ok(e)) => Some(*e),
            Some(Err(_)) => return b.next(),
            None => None,
        };
        match (next_a, next_b) {
            (None, None) => None,
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (Some((ka, _)), Some((kb, _))) => {
                if ka < kb {
                    a.next()
                } else if kb < ka || keep == Keep::All {
                    b.next()
                } else {
                    a.next();
                    b.next()
                }
            }
        }
    });
    write_run(path, number, merged, durable)
}

/// Reads a run's entries in order with positioned reads, so several readers can share one
/// file (not checked: the run was checked when it was opened or written by this process).
struct RunReader<'a> {
    file: &'a File,
    buf: Vec<u8>,
    at: usize,
    /// Where the next read from the file starts.
    offset: u64,
    /// Entries not yet returned.
    left: u64,
    /// Entries not yet read into `buf`.
    unread: u64,
}

impl<'a> RunReader<'a> {
    fn new(run: &'a Run) -> io::Result<Self> {
        let left = run.entries;
        Ok(RunReader { file: &run.file, buf: Vec::new(), at: 0, offset: RUN_HEADER_BYTES, left, unread: left })
    }
}

impl Iterator for RunReader<'_> {
    type Item = io::Result<(u64, u64)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        if self.at == self.buf.len() {
            let entries = self.unread.min((RUN_IO_BUFFER_BYTES / ENTRY_BYTES) as u64);
            self.buf.resize(entries as usize * ENTRY_BYTES, 0);
            if let Err(e) = self.file.read_exact_at(&mut self.buf, self.offset) {
                self.left = 0;
                return Some(Err(e));
            }
            self.offset += self.buf.len() as u64;
            self.unread -= entries;
            self.at = 0;
        }
        let entry = split_entry(&self.buf[self.at..self.at + ENTRY_BYTES]);
        self.at += ENTRY_BYTES;
        self.left -= 1;
        Some(Ok(entry))
    }
}

/// Opens run `number`, checks it whole (magic, count, order, checksum), builds its fences and
/// adds its keys to `filter` (when the filter is not already known to hold them).
fn open_run(path: &Path, number: u64, entries: u64, keep: Keep, mut filter: Option<&mut Filter>) -> io::Result<Run> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let expected =
        entries.checked_mul(ENTRY_BYTES as u64).and_then(|b| b.checked_add(RUN_HEADER_BYTES + RUN_TRAILER_BYTES));
    if expected != Some(len) {
        return Err(bad("length does not match the entry count"));
    }
    let mut reader = BufReader::with_capacity(RUN_IO_BUFFER_BYTES, &file);
    let mut header = [0u8; RUN_HEADER_BYTES as usize];
    reader.read_exact(&mut header)?;
    if header != RUN_MAGIC {
        return Err(bad("bad magic"));
    }
    let mut crc = crc32c::crc32c(&header);
    let mut fences = Vec::with_capacity((entries as usize).div_ceil(BLOCK_ENTRIES));
    let mut previous = None;
    let mut block = vec![0u8; BLOCK_ENTRIES * ENTRY_BYTES];
    let mut at = 0u64;
    while at < entries {
        let count = (entries - at).min(BLOCK_ENTRIES as u64) as usize;
        let bytes = &mut block[..count * ENTRY_BYTES];
        reader.read_exact(bytes)?;
        crc = crc32c::crc32c_append(crc, bytes);
        for (i, entry) in bytes.chunks_exact(ENTRY_BYTES).enumerate() {
            let (k, _) = split_entry(entry);
            if i == 0 {
                fences.push(k);
            }
            // Sorted, and in a `Latest` map each key once.
            let in_order = previous.is_none_or(|p| if keep == Keep::Latest { p < k } else { p <= k });
            if !in_order {
                return Err(bad("entries out of order"));
            }
            previous = Some(k);
            if let Some(filter) = filter.as_deref_mut() {
                filter.insert(k);
            }
        }
        at += count as u64;
    }
    let mut count = [0u8; 8];
    reader.read_exact(&mut count)?;
    if u64::from_le_bytes(count) != entries {
        return Err(bad("the entry count does not match"));
    }
    crc = crc32c::crc32c_append(crc, &count);
    let mut stored = [0u8; 4];
    reader.read_exact(&mut stored)?;
    if u32::from_le_bytes(stored) != crc {
        return Err(bad("checksum mismatch"));
    }
    drop(reader);
    Ok(Run { number, file, entries, crc, fences })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spill(dir: &Path, recent: usize) -> Option<SpillOptions> {
        Some(SpillOptions { dir: dir.to_owned(), recent_entries_max: recent, filter_bytes: 4096, durable: true })
    }

    fn all(map: &KeyMap, key: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        map.find(key, |loc| {
            seen.push(loc);
            Ok(false)
        })
        .expect("find");
        seen
    }

    #[test]
    fn latest_map_spills_merges_and_answers_like_a_hash_map() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut map = KeyMap::new("streams", Keep::Latest, spill(dir.path(), 100));
        let mut model = std::collections::HashMap::new();
        // Keys repeat (a stream appended to again), so runs overlap and merges collapse them.
        for i in 0..5_000u64 {
            let key = splitmix(i % 1_700);
            map.insert(key, i).expect("insert");
            model.insert(key, i);
        }
        map.settle().expect("merges");
        assert!((1..=8).contains(&map.runs.len()), "a few runs, not one per spill: {:?}", map.runs());
        assert!(map.recent_len() < 100);
        for (&key, &loc) in &model {
            assert_eq!(map.latest(key).expect("find"), Some(loc));
            assert_eq!(all(&map, key), vec![loc], "a latest map offers one location");
        }
        assert_eq!(map.latest(splitmix(1_000_000)).expect("find"), None);
        // Merged runs collapse repeated keys.
        let on_disk: u64 = map.runs().iter().map(|r| r.entries).sum();
        assert!(on_disk <= 1_700 * map.runs.len() as u64);
        // Restored from its parts, it answers the same.
        let runs = map.runs();
        let recent: HashKeyMap<u64, u64> = map.recent().collect();
        let back = KeyMap::restore("streams", Keep::Latest, spill(dir.path(), 100), recent, &runs)
            .expect("read")
            .expect("restore");
        for (&key, &loc) in &model {
            assert_eq!(back.latest(key).expect("find"), Some(loc));
        }
        // Retired runs are not in use; removing the unused ones keeps those in use.
        let retired = map.take_retired();
        assert!(!retired.is_empty());
        remove_unused_runs(dir.path(), &map.run_paths()).expect("remove");
        assert!(retired.iter().all(|p| !p.exists()));
        assert!(map.run_paths().iter().all(|p| p.exists()));
    }

    #[test]
    fn all_map_keeps_every_location_of_a_shared_key_across_blocks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut map = KeyMap::new("ids", Keep::All, spill(dir.path(), 50));
        // 300 entries for one key span two 256-entry blocks and many runs.
        let shared = 42u64;
        for i in 0..300u64 {
            map.insert(shared, i).expect("insert");
            map.insert(splitmix(i), 10_000 + i).expect("insert");
            // `recent` holds one location per key, as the store's caller guarantees; spill
            // after each shared entry so none is replaced in memory.
            map.spill_recent().expect("spill");
        }
        let mut locs = all(&map, shared);
        locs.sort_unstable();
        assert_eq!(locs, (0..300).collect::<Vec<_>>());
        assert_eq!(map.find(shared, |loc| Ok(loc == 17)).expect("find"), Some(17));
        assert_eq!(map.find(shared, |_| Ok(false)).expect("find"), None);
        for i in 0..300u64 {
            assert_eq!(all(&map, splitmix(i)), vec![10_000 + i]);
        }
    }

    #[test]
    fn a_damaged_run_is_not_restored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut map = KeyMap::new("ids", Keep::All, spill(dir.path(), 10));
        for i in 0..10u64 {
            map.insert(splitmix(i), i).expect("insert");
        }
        let runs = map.runs();
        assert_eq!(runs.len(), 1);
        let path = run_path(dir.path(), "ids", runs[0].number);
        let restore =
            || KeyMap::restore("ids", Keep::All, spill(dir.path(), 10), HashKeyMap::default(), &runs).expect("read");
        assert!(restore().is_some());
        // Another run with the same number and count (an index built again) is not this one.
        let other = [RunName { crc: runs[0].crc ^ 1, ..runs[0] }];
        let restored = KeyMap::restore("ids", Keep::All, spill(dir.path(), 10), HashKeyMap::default(), &other);
        assert!(restored.expect("read").is_none());
        let mut bytes = fs::read(&path).expect("read");
        bytes[40] ^= 1;
        fs::write(&path, &bytes).expect("write");
        assert!(restore().is_none(), "a flipped bit fails the checksum");
        fs::remove_file(&path).expect("remove");
        assert!(restore().is_none(), "a missing run");
    }

    /// A restored map takes the filter its last save wrote when that filter holds exactly the
    /// runs named, and builds it from the runs otherwise (another run list, a damaged or
    /// missing file): either way every key on disk is found again.
    #[test]
    fn a_saved_filter_is_used_only_for_the_runs_it_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut map = KeyMap::new("ids", Keep::All, spill(dir.path(), 100));
        for i in 0..1000u64 {
            map.insert(splitmix(i), i).expect("insert");
        }
        map.settle().expect("merged");
        let runs = map.runs();
        assert!(!runs.is_empty());
        map.save_filter().expect("saved");
        let path = filter_path(dir.path(), "ids");
        let saved = read_filter(&path, &runs, 4096).expect("the saved filter is read back");
        assert_eq!(saved.blocks, map.filter.as_ref().expect("filter").blocks);
        let found_again = |restored: KeyMap| {
            let on_disk: u64 = runs.iter().map(|r| r.entries).sum();
            assert_eq!(on_disk, 1000 - restored.recent_len() as u64);
            (0..1000u64).filter(|&i| all(&restored, splitmix(i)) == vec![i]).count()
        };
        let restore = |runs: &[RunName]| {
            KeyMap::restore("ids", Keep::All, spill(dir.path(), 100), map.recent.clone(), runs).expect("read")
        };
        assert_eq!(found_again(restore(&runs).expect("restored")), 1000);
        // It is really what the restored map answers from: an empty filter saved for the same
        // runs hides every key on disk.
        let good = fs::read(&path).expect("read");
        let mut bytes = good[..8 + 8 + 8 + 20 * runs.len()].to_vec();
        bytes.extend_from_slice(&((4096 / 64) as u64).to_le_bytes());
        bytes.extend_from_slice(&vec![0; 4096]);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        fs::write(&path, &bytes).expect("write");
        assert_eq!(found_again(restore(&runs).expect("restored")), map.recent_len());
        fs::write(&path, &good).expect("write");
        // Named runs other than those it holds: not used.
        let fewer = &runs[..runs.len() - 1];
        assert!(read_filter(&path, fewer, 4096).is_none());
        assert!(read_filter(&path, &runs, 8192).is_none(), "another size");
        // Damaged, then missing: the filter is built from the runs and finds every key.
        let mut bytes = fs::read(&path).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        fs::write(&path, &bytes).expect("write");
        assert!(read_filter(&path, &runs, 4096).is_none());
        assert_eq!(found_again(restore(&runs).expect("restored")), 1000);
        fs::remove_file(&path).expect("remove");
        assert_eq!(found_again(restore(&runs).expect("restored")), 1000);
    }

    #[test]
    fn filter_has_no_false_negatives_and_few_false_positives() {
        let mut filter = Filter::new(64 << 10);
        for i in 0..40_000u64 {
            filter.insert(splitmix(i));
        }
        assert!((0..40_000u64).all(|i| filter.may_contain(splitmix(i))));
        let false_maybes = (1_000_000..1_100_000u64).filter(|&i| filter.may_contain(splitmix(i))).count();
        // 13 bits per key and 6 bits set: about 0.5 % for a blocked filter.
        assert!(false_maybes < 2_000, "{false_maybes} false maybes in 100,000");
    }
}

//! Checkpoints: the books saved with the position they are caught up to, so a restart resumes
//! instead of replaying the log from the start. Saving again appends only what was appended to
//! the books since the last save (about 100 bytes an event) and rewrites a small state whose
//! size follows accounts, merchants × days and terminal batches, not events.
//!
//! A checkpoint is two files beside each other:
//!
//! - **the state** (`PATH`, rewritten whole at every save): where the books are, the current
//!   balance of every account, and the maps that change in place (merchants, business days,
//!   settlements, reconciliations booked, terminal batches);
//! - **the log** (`PATH.<generation>.log`, appended to): one record per save holding what was
//!   appended to the books since the save before — event times, new accounts, the new postings
//!   of each account's history, new payments — and the payments that changed (voided, reversed,
//!   refunded). Everything the log holds only ever grows, so a record never rewrites history.
//!
//! A save appends a record and syncs it, then replaces the state (written and synced under a
//! temporary name, then renamed). A crash between the two leaves the previous state, which
//! names how much of the log it covers; the next save cuts the log back to that before it
//! appends. After [`CHECKPOINT_RECORDS_MAX`] records (or with no usable previous checkpoint)
//! a save writes the whole books as the first record of a new generation and removes the
//! older one.
//!
//! State layout (little-endian):
//!
//! ```text
//! magic   8 bytes  "PLLEDGR4" (the layout's version)
//! a_len u64, a_hash 32 bytes (BLAKE3 of section A), b_len u64, b_hash 32 bytes (of section B)
//! section A, the summary:
//!   rules u32 [`RULES_VERSION`]; position u64, entries u64, postings u64
//!   anchor 32 bytes  BLAKE3 of the last event applied (see `anchor`); zeros at position 0
//!   generation u64, log_len u64 (bytes of the log this state covers), log_hash 32 bytes (the
//!     last record's hash; zeros with no record), records u64
//!   accounts: count u32, then per balance slot: path, currency, current, points u64
//! section B, the maps:
//!   merchants: count u32, then per merchant: id, closed u8, cycle u8 (0 none, 1 T1, 2 D0),
//!     fee terms as JSON (`null` before a contract)
//!   days: count u64, then (merchant u32, date i32, currency, gross, refunds, fees), sorted
//!   settled: count u64, then (merchant u32, date i32, currency), sorted
//!   paid: count u64, then (merchant u32, currency, through i32, gross, refunds, fees), sorted
//!   reconciliations booked: count u64, then per statement and date (sorted): channel,
//!     date i32, the run's digest, count u32 and (slot u32, amount) each
//!   terminal batches: count u64, then per terminal and batch (sorted): terminal id, batch
//!     number, debit count u64, debit amount, credit count u64, credit amount
//! ```
//!
//! Log record layout:
//!
//! ```text
//! body_len u64, hash 32 bytes  BLAKE3 of the previous record's hash (zeros for the first) and the body
//! body:
//!   from u64, to u64  the positions the record brings the books from and to
//!   times: one i64 (µs since the epoch) per position from..to
//!   accounts: first slot u32, count u32, then (path, currency) of each new balance slot
//!   histories: count u32, then per history that changed: slot u32, points u64,
//!     last_position u64, current, blocks from u64 (the first block written: earlier ones are
//!     unchanged), count u64 and per block first u64, before, start u64, count u32; bytes from
//!     u64 (the history's length before), length u64 and the bytes; late postings: given up u8,
//!     from u64, count u64 and (position u64, amount) each
//!   payments: first u64, count u64, then per payment: txn_id, merchant u32, date i32 (days
//!     from CE), amount, fee, channel u8, currency, cancelled u8
//!   changed payments: count u64, then per payment: index u32, cancelled u8, refunded u8 and,
//!     when refunded, the amount and fee refunded so far
//! ```
//!
//! Strings are a u32 length and UTF-8 bytes; a currency is its code as a string; a Decimal is
//! its 16-byte serialized form. Every count is checked against the bytes left before anything
//! is allocated for it.
//!
//! A checkpoint is refused (and the books rebuilt from the log) when a hash does not match,
//! when the log's records do not chain or do not add up to the summary, when it is ahead of
//! the log, or when its anchor is not the event the log holds just before its position.
//! [`summary`] reads section A alone: a command that wants the balances as they are now
//! answers from it without loading the books.
//!
//! [`state_digest`] hashes a canonical serialization of the whole books (the same books always
//! give the same bytes): `verify` compares a rebuild from position 0 with the checkpoint by it.

use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use ingest::event::{Channel, SettlementCycle};
use ingest::money::Currency;
use ingest::store::RecordedEvent;
use rust_decimal::Decimal;

use crate::entry::Account;
use crate::history::{Block, History};
use crate::projection::{Balances, DayTotals, MerchantBook, Paid, PaymentBook, Projection, Refunded};
use crate::timeline::Timeline;

const MAGIC: &[u8; 8] = b"PLLEDGR4";

/// The version of the posting rules (and of what the state means) a checkpoint was written
/// with: raise it whenever a rule changes, so that books built by other rules are rebuilt.
pub const RULES_VERSION: u32 = 4;

/// Records a checkpoint's log holds before the next save starts a new generation with the
/// whole books in one record (loading replays every record; this bounds how many).
pub const CHECKPOINT_RECORDS_MAX: u64 = 256;

const STATE_HEADER_LEN: u64 = 8 + 8 + 32 + 8 + 32;
const RECORD_HEADER_LEN: u64 = 8 + 32;

/// Why a checkpoint could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The file is not a checkpoint of this log, or is damaged.
    #[error("checkpoint {path} refused: {reason}")]
    Refused {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A checkpoint as read from its files.
pub struct Loaded {
    /// The books as of [`Projection::position`].
    pub books: Projection,
    /// The anchor: which event the books end with.
    pub anchor: [u8; 32],
    /// What the files hold, for the next [`save`] to append to.
    pub mark: Mark,
}

/// What a checkpoint's files hold (returned by [`save`] and [`load`]): the next save of the
/// same books appends only what changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    generation: u64,
    position: u64,
    log_len: u64,
    log_hash: [u8; 32],
    records: u64,
    /// Per balance slot, what its history held.
    histories: Vec<HistoryMark>,
    payments: u64,
    /// Length of the books' journal of changed payments.
    changes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HistoryMark {
    points: u64,
    blocks: u64,
    bytes: u64,
    late: u64,
    given_up: bool,
}

impl Mark {
    /// The position of the books the checkpoint holds.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Records in the checkpoint's log.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn of(books: &Projection, generation: u64, log_len: u64, log_hash: [u8; 32], records: u64, changes: u64) -> Mark {
        let histories = books
            .balances
            .accounts
            .iter()
            .map(|(_, _, h)| HistoryMark {
                points: h.points,
                blocks: h.blocks.len() as u64,
                bytes: h.bytes.len() as u64,
                late: h.late.len() as u64,
                given_up: h.late_given_up,
            })
            .collect();
        Mark {
            generation,
            position: books.next_position,
            log_len,
            log_hash,
            records,
            histories,
            payments: books.payments.len() as u64,
            changes,
        }
    }

    /// Whether `books` can be what this mark was taken of, moved on.
    fn precedes(&self, books: &Projection) -> bool {
        self.position <= books.next_position
            && self.histories.len() <= books.balances.accounts.len()
            && self.payments <= books.payments.len() as u64
            && self.changes <= books.payment_changes.len() as u64
            && self.histories.iter().zip(&books.balances.accounts).all(|(m, (_, _, h))| {
                m.points <= h.points && m.bytes <= h.bytes.len() as u64 && m.blocks <= h.blocks.len() as u64
            })
    }
}

/// The books' summary as a checkpoint holds it (section A): enough to answer what an account's
/// balance is now without loading the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The position the books were at.
    pub position: u64,
    /// Entries booked.
    pub entries: u64,
    /// Postings booked.
    pub postings: u64,
    /// Which event the books end with (see [`anchor`]).
    pub anchor: [u8; 32],
    /// Per balance slot: the account, its currency, its balance, and its postings.
    accounts: Vec<(Account, Currency, Decimal, u64)>,
}

impl Summary {
    /// The balance of `account` in `currency` now (as [`Balances::balance`] with `u64::MAX`).
    pub fn balance(&self, account: &Account, currency: Currency) -> Decimal {
        self.accounts.iter().find(|(a, c, _, _)| a == account && *c == currency).map_or(Decimal::ZERO, |s| s.2)
    }

    /// Whether the books hold `account` in `currency` (as [`Balances::history`] being some).
    pub fn holds(&self, account: &Account, currency: Currency) -> bool {
        self.accounts.iter().any(|(a, c, _, _)| a == account && *c == currency)
    }

    /// Every account's balance now (as [`Balances::trial_balance`] with `u64::MAX`).
    pub fn trial_balance(&self) -> Vec<(Account, Currency, Decimal)> {
        let mut rows: Vec<_> =
            self.accounts.iter().filter(|s| s.3 > 0).map(|(a, c, balance, _)| (a.clone(), *c, *balance)).collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }
}

/// A digest of the last event the books applied: its id, place, type and content.
pub fn anchor(e: &RecordedEvent) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(e.data.event_id.as_bytes());
    h.update(&e.position.to_le_bytes());
    h.update(&(e.stream.len() as u64).to_le_bytes());
    h.update(e.stream.as_bytes());
    h.update(&e.revision.to_le_bytes());
    h.update(&(e.data.event_type.len() as u64).to_le_bytes());
    h.update(e.data.event_type.as_bytes());
    h.update(&e.data.schema_version.to_le_bytes());
    h.update(&e.data.occurred_at_us.to_le_bytes());
    h.update(&e.data.payload);
    *h.finalize().as_bytes()
}

/// A digest of the whole state of the books (BLAKE3 of their canonical serialization with a
/// zero anchor): equal digests, equal books.
pub fn state_digest(books: &Projection) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    // Writing into a hasher cannot fail.
    let _ = write_body(&mut hasher, books, &[0; 32]);
    *hasher.finalize().as_bytes()
}

/// The log file of generation `generation` of the checkpoint at `path`.
pub fn log_path(path: &Path, generation: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{generation}.log"));
    path.with_file_name(name)
}

/// The generations of logs beside the checkpoint at `path`.
fn generations(path: &Path) -> Vec<u64> {
    let prefix = format!("{}.", path.file_name().unwrap_or_default().to_string_lossy());
    let Some(dir) = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d }) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?.strip_suffix(".log")?.parse().ok()
        })
        .collect()
}

/// Saves the books as a checkpoint at `path`, with `anchor` the [`anchor`] of the event at
/// `books.position() - 1`. With the [`Mark`] of the last save or load of these same books
/// (moved on since), only what changed is appended; without one, or when the log it names is
/// not there whole, or after [`CHECKPOINT_RECORDS_MAX`] records, the whole books start a new
/// generation.
pub fn save(path: &Path, books: &Projection, anchor: &[u8; 32], mark: Option<&Mark>) -> Result<Mark, CheckpointError> {
    let err = |source| CheckpointError::Io { path: path.display().to_string(), source };
    let on_disk = |m: &Mark| std::fs::metadata(log_path(path, m.generation)).map_or(0, |md| md.len());
    let append = mark.filter(|m| m.records < CHECKPOINT_RECORDS_MAX && m.precedes(books) && on_disk(m) >= m.log_len);
    let (generation, mut file, start, previous, records) = match append {
        Some(m) => {
            let mut file = std::fs::OpenOptions::new().write(true).open(log_path(path, m.generation)).map_err(err)?;
            // A record appended by a save that stopped before its state was written goes.
            file.set_len(m.log_len).map_err(err)?;
            file.seek(SeekFrom::Start(m.log_len)).map_err(err)?;
            (m.generation, file, m.log_len, m.log_hash, m.records)
        }
        None => {
            let generation = generations(path).into_iter().max().map_or(0, |g| g + 1);
            let file = std::fs::File::create(log_path(path, generation)).map_err(err)?;
            (generation, file, 0, [0; 32], 0)
        }
    };
    file.write_all(&[0; RECORD_HEADER_LEN as usize]).map_err(err)?;
    let (len, hash) = {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&previous);
        // Hashed below the buffer: the hasher gets whole megabytes, not field-sized pieces.
        let hashing = Hashing { inner: &mut file, hasher, len: 0 };
        let mut out = BufWriter::with_capacity(1 << 20, hashing);
        write_record(&mut out, books, append).map_err(err)?;
        let hashing = out.into_inner().map_err(|e| err(e.into_error()))?;
        (hashing.len, *hashing.hasher.finalize().as_bytes())
    };
    file.seek(SeekFrom::Start(start)).map_err(err)?;
    let mut header = Vec::with_capacity(RECORD_HEADER_LEN as usize);
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&hash);
    file.write_all(&header).map_err(err)?;
    // The state about to be written must never name a record the disk does not hold.
    file.sync_data().map_err(err)?;
    drop(file);
    let log_len = start + RECORD_HEADER_LEN + len;
    let mark = Mark::of(books, generation, log_len, hash, records + 1, books.payment_changes.len() as u64);
    write_state(path, books, anchor, &mark).map_err(err)?;
    // The new log's name and the state's rename are durable before an older log goes.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    if append.is_none() {
        for old in generations(path).into_iter().filter(|g| *g != generation) {
            let _ = std::fs::remove_file(log_path(path, old));
        }
    }
    Ok(mark)
}

fn write_state(path: &Path, books: &Projection, anchor: &[u8; 32], mark: &Mark) -> io::Result<()> {
    let mut a = Vec::new();
    a.extend_from_slice(&RULES_VERSION.to_le_bytes());
    for v in [books.next_position, books.entries, books.postings] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a.extend_from_slice(anchor);
    for v in [mark.generation, mark.log_len] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a.extend_from_slice(&mark.log_hash);
    a.extend_from_slice(&mark.records.to_le_bytes());
    a.extend_from_slice(&(books.balances.accounts.len() as u32).to_le_bytes());
    for (account, currency, h) in &books.balances.accounts {
        put_str(&mut a, account.path())?;
        put_str(&mut a, currency.code())?;
        put_dec(&mut a, h.current)?;
        a.extend_from_slice(&h.points.to_le_bytes());
    }
    let mut b = Vec::new();
    write_merchants(&mut b, books)?;
    write_maps(&mut b, books)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    let mut header = Vec::with_capacity(STATE_HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    for section in [&a, &b] {
        header.extend_from_slice(&(section.len() as u64).to_le_bytes());
        header.extend_from_slice(blake3::hash(section).as_bytes());
    }
    file.write_all(&header)?;
    file.write_all(&a)?;
    file.write_all(&b)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// What was appended to the books since `mark` (all of them without one).
fn write_record(out: &mut impl Write, books: &Projection, mark: Option<&Mark>) -> io::Result<()> {
    let from = mark.map_or(0, |m| m.position);
    out.write_all(&from.to_le_bytes())?;
    out.write_all(&books.next_position.to_le_bytes())?;
    put_times(out, &books.timeline.times()[from as usize..])?;
    let accounts = &books.balances.accounts;
    let known = mark.map_or(0, |m| m.histories.len());
    out.write_all(&(known as u32).to_le_bytes())?;
    out.write_all(&((accounts.len() - known) as u32).to_le_bytes())?;
    for (account, currency, _) in &accounts[known..] {
        put_str(out, account.path())?;
        put_str(out, currency.code())?;
    }
    let was = |slot: usize| mark.and_then(|m| m.histories.get(slot)).copied();
    let changed: Vec<usize> =
        (0..accounts.len()).filter(|&s| was(s).is_none_or(|w| w.points != accounts[s].2.points)).collect();
    out.write_all(&(changed.len() as u32).to_le_bytes())?;
    for slot in changed {
        let h = &accounts[slot].2;
        let w = was(slot).unwrap_or(HistoryMark { points: 0, blocks: 0, bytes: 0, late: 0, given_up: false });
        out.write_all(&(slot as u32).to_le_bytes())?;
        out.write_all(&h.points.to_le_bytes())?;
        out.write_all(&h.last_position.to_le_bytes())?;
        put_dec(out, h.current)?;
        // The last block may have taken more points since: it is written again.
        let blocks_from = w.blocks.saturating_sub(1) as usize;
        out.write_all(&(blocks_from as u64).to_le_bytes())?;
        put_blocks(out, &h.blocks[blocks_from..])?;
        out.write_all(&w.bytes.to_le_bytes())?;
        out.write_all(&(h.bytes.len() as u64 - w.bytes).to_le_bytes())?;
        out.write_all(&h.bytes[w.bytes as usize..])?;
        out.write_all(&[u8::from(h.late_given_up)])?;
        let late_from = if h.late_given_up { 0 } else { w.late.min(h.late.len() as u64) };
        out.write_all(&late_from.to_le_bytes())?;
        put_late(out, &h.late[late_from as usize..])?;
    }
    let first = mark.map_or(0, |m| m.payments);
    out.write_all(&first.to_le_bytes())?;
    out.write_all(&(books.payments.len() as u64 - first).to_le_bytes())?;
    let mut buf = Vec::with_capacity(1 << 16);
    for i in first as usize..books.payments.len() {
        let Some(p) = books.payments.get(i) else { break };
        put_str(&mut buf, books.payment_ids.get(p.id_start, p.id_len as usize).unwrap_or_default())?;
        put_payment(&mut buf, p)?;
        if buf.len() > (1 << 16) - 256 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    // Payments voided, reversed or refunded since the mark, with what they are now; for the
    // whole books, every refund (the payments above carry their cancellations).
    let mut changed: Vec<u32> = match mark {
        Some(m) => books.payment_changes[m.changes as usize..].to_vec(),
        None => books.refunds.keys().copied().collect(),
    };
    changed.sort_unstable();
    changed.dedup();
    out.write_all(&(changed.len() as u64).to_le_bytes())?;
    for i in changed {
        let cancelled = books.payments.get(i as usize).is_some_and(|p| p.cancelled);
        out.write_all(&i.to_le_bytes())?;
        out.write_all(&[u8::from(cancelled)])?;
        match books.refunds.get(&i) {
            None => out.write_all(&[0])?,
            Some(r) => {
                out.write_all(&[1])?;
                put_dec(out, r.amount)?;
                put_dec(out, r.fee)?;
            }
        }
    }
    Ok(())
}

/// Reads a state file: its header and section A (checked against its hash), and section B's
/// bytes with their expected hash unchecked when `with_maps` is false.
fn read_state(path: &Path, with_maps: bool) -> Result<(Summary, StateRest, Vec<u8>), CheckpointError> {
    let name = path.display().to_string();
    let refused = |reason: String| CheckpointError::Refused { path: name.clone(), reason };
    let mut file = std::fs::File::open(path).map_err(|source| CheckpointError::Io { path: name.clone(), source })?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut header = [0u8; STATE_HEADER_LEN as usize];
    file.read_exact(&mut header).map_err(|_| refused("shorter than its header".into()))?;
    if &header[..8] != MAGIC {
        return Err(refused("not a posledger ledger checkpoint of this layout (bad magic)".into()));
    }
    let a_len = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let b_len = u64::from_le_bytes(header[48..56].try_into().unwrap_or_default());
    let body = file_len.saturating_sub(STATE_HEADER_LEN);
    if a_len.checked_add(b_len) != Some(body) {
        return Err(refused(format!("body is {body} bytes, header says {a_len} + {b_len}")));
    }
    let mut a = vec![0u8; a_len as usize];
    file.read_exact(&mut a).map_err(|_| refused("shorter than its header says".into()))?;
    if blake3::hash(&a).as_bytes()[..] != header[16..48] {
        return Err(refused("its summary does not match its hash (damaged)".into()));
    }
    let (summary, rest) = read_summary(&a).map_err(|e| refused(format!("its summary does not decode: {e}")))?;
    let mut b = Vec::new();
    if with_maps {
        b = vec![0u8; b_len as usize];
        file.read_exact(&mut b).map_err(|_| refused("shorter than its header says".into()))?;
        if blake3::hash(&b).as_bytes()[..] != header[56..88] {
            return Err(refused("its maps do not match their hash (damaged)".into()));
        }
    }
    Ok((summary, rest, b))
}

/// What section A says of the log.
struct StateRest {
    generation: u64,
    log_len: u64,
    log_hash: [u8; 32],
    records: u64,
}

fn read_summary(a: &[u8]) -> io::Result<(Summary, StateRest)> {
    let mut r = Body { input: a, left: a.len() as u64 };
    let rules = r.u32()?;
    if rules != RULES_VERSION {
        return Err(bad(&format!("written by posting rules version {rules}, these are version {RULES_VERSION}")));
    }
    let (position, entries, postings) = (r.u64()?, r.u64()?, r.u64()?);
    let anchor: [u8; 32] = r.bytes()?;
    let rest = StateRest { generation: r.u64()?, log_len: r.u64()?, log_hash: r.bytes()?, records: r.u64()? };
    let n = r.u32()?;
    let mut accounts = Vec::with_capacity(r.fits(u64::from(n), 8 + 16 + 8)?);
    for _ in 0..n {
        let account = Account::parse(&r.string()?).map_err(|e| bad(&e))?;
        accounts.push((account, r.currency()?, r.dec()?, r.u64()?));
    }
    if r.left != 0 {
        return Err(bad("bytes after the summary"));
    }
    Ok((Summary { position, entries, postings, anchor, accounts }, rest))
}

/// Reads a checkpoint's summary alone (section A of its state; see [`Summary`]): whether it
/// belongs to the log is the caller's check, as for [`load`].
pub fn summary(path: &Path) -> Result<Summary, CheckpointError> {
    read_state(path, false).map(|(summary, _, _)| summary)
}

/// Reads a checkpoint: its hashes are checked, its log's records applied in order and the books
/// they make compared with its summary; whether it belongs to the event log is the caller's
/// check (compare [`Loaded::anchor`] with the log's event before its position).
pub fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    let name = path.display().to_string();
    let refused = |reason: String| CheckpointError::Refused { path: name.clone(), reason };
    let (summary, rest, maps) = read_state(path, true)?;
    let log = log_path(path, rest.generation);
    let file = std::fs::File::open(&log).map_err(|e| refused(format!("its log {}: {e}", log.display())))?;
    let on_disk = file.metadata().map(|m| m.len()).unwrap_or(0);
    if on_disk < rest.log_len {
        return Err(refused(format!("its log is {on_disk} bytes, the state says {}", rest.log_len)));
    }
    let mut books = Projection::default();
    let mut maps = Body { input: &maps[..], left: maps.len() as u64 };
    read_merchants(&mut maps, &mut books).map_err(|e| refused(format!("its merchants do not decode: {e}")))?;
    let (mut file, mut left) = (file, rest.log_len);
    let (mut times, mut previous, mut records) = (Vec::new(), [0u8; 32], 0u64);
    while left > 0 {
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        if left < RECORD_HEADER_LEN || file.read_exact(&mut header).is_err() {
            return Err(refused(format!("record {records} of its log is cut short")));
        }
        left -= RECORD_HEADER_LEN;
        let len = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        if len > left {
            return Err(refused(format!("record {records} of its log is longer than the log")));
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&previous);
        // Hashed below the buffer: the hasher gets whole megabytes, not field-sized pieces.
        let hashing = HashingReader { inner: (&mut file).take(len), hasher };
        let mut body = Body { input: BufReader::with_capacity(1 << 20, hashing), left: len };
        read_record(&mut body, &mut books, &mut times)
            .and_then(|()| if body.left == 0 { Ok(()) } else { Err(bad("bytes after the record")) })
            .map_err(|e| refused(format!("record {records} of its log does not decode: {e}")))?;
        let hash = *body.input.into_inner().hasher.finalize().as_bytes();
        if hash[..] != header[8..] {
            return Err(refused(format!("record {records} of its log does not match its hash (damaged)")));
        }
        (previous, records, left) = (hash, records + 1, left - len);
    }
    if records != rest.records || previous != rest.log_hash {
        return Err(refused("its log does not end where its state says".into()));
    }
    books.timeline = Timeline::from_times(times);
    books.balances = Balances::from_accounts(std::mem::take(&mut books.balances.accounts));
    read_maps(&mut maps, &mut books)
        .and_then(|()| if maps.left == 0 { Ok(()) } else { Err(bad("bytes after the maps")) })
        .map_err(|e| refused(format!("its maps do not decode: {e}")))?;
    books.entries = summary.entries;
    books.postings = summary.postings;
    let summed: Vec<_> = books.balances.accounts.iter().map(|(a, c, h)| (a.clone(), *c, h.current, h.points)).collect();
    if books.next_position != summary.position || summed != summary.accounts {
        return Err(refused("the books its log makes differ from its summary".into()));
    }
    books.check().map_err(|e| refused(format!("books inside do not check: {e}")))?;
    let mark = Mark::of(&books, rest.generation, rest.log_len, rest.log_hash, rest.records, 0);
    Ok(Loaded { books, anchor: summary.anchor, mark })
}

/// Applies one log record to the books being loaded (times are gathered, the timeline is built
/// once at the end).
fn read_record<R: Read>(r: &mut Body<R>, books: &mut Projection, times: &mut Vec<i64>) -> io::Result<()> {
    let (from, to) = (r.u64()?, r.u64()?);
    if from != books.next_position || to < from {
        return Err(bad(&format!("it goes from position {from} to {to}, the books are at {}", books.next_position)));
    }
    times.reserve(r.fits(to - from, 8)?);
    for _ in from..to {
        times.push(r.i64()?);
    }
    books.next_position = to;
    let accounts = &mut books.balances.accounts;
    let (first, n) = (r.u32()?, r.u32()?);
    if first as usize != accounts.len() {
        return Err(bad("its new accounts do not follow the accounts before"));
    }
    r.fits(u64::from(n), 8)?;
    let mut added = Vec::new();
    for _ in 0..n {
        let account = Account::parse(&r.string()?).map_err(|e| bad(&e))?;
        added.push((account, r.currency()?, History::default()));
    }
    accounts.extend(added);
    let n = r.u32()?;
    r.fits(u64::from(n), 60)?;
    for _ in 0..n {
        let slot = r.u32()? as usize;
        let Some((_, _, h)) = accounts.get_mut(slot) else { return Err(bad("a history points outside the accounts")) };
        (h.points, h.last_position, h.current) = (r.u64()?, r.u64()?, r.dec()?);
        let (blocks_from, count) = (r.u64()?, r.u64()?);
        if blocks_from > h.blocks.len() as u64 {
            return Err(bad("a history's blocks do not follow the blocks before"));
        }
        h.blocks.truncate(blocks_from as usize);
        h.blocks.reserve(r.fits(count, 36)?);
        for _ in 0..count {
            h.blocks.push(Block { first: r.u64()?, before: r.dec()?, start: r.u64()?, count: r.u32()? });
        }
        let (bytes_from, len) = (r.u64()?, r.u64()?);
        if bytes_from != h.bytes.len() as u64 {
            return Err(bad("a history's postings do not follow the postings before"));
        }
        r.extend(&mut h.bytes, len)?;
        h.late_given_up = r.u8()? != 0;
        let (late_from, count) = (r.u64()?, r.u64()?);
        if late_from > h.late.len() as u64 {
            return Err(bad("a history's late postings do not follow those before"));
        }
        h.late.truncate(late_from as usize);
        h.late.reserve(r.fits(count, 24)?);
        for _ in 0..count {
            let (position, amount) = (r.u64()?, r.dec()?);
            if position >= to || h.late.last().is_some_and(|(p, _)| *p > position) {
                return Err(bad("a late posting is out of order"));
            }
            h.late.push((position, amount));
        }
        if h.late_given_up && !h.late.is_empty() {
            return Err(bad("a history keeps late postings it gave up"));
        }
    }
    let (first, n) = (r.u64()?, r.u64()?);
    if first != books.payments.len() as u64 {
        return Err(bad("its payments do not follow the payments before"));
    }
    // Room in the payment index at once: growing it payment by payment would rehash it again
    // and again.
    books.reserve_payments(r.fits(n, 4 + 4 + 4 + 32 + 1 + 4 + 1)? as u64);
    let merchants = books.merchants.len();
    let mut id_buf = Vec::new();
    for _ in 0..n {
        let id = r.str_into(&mut id_buf)?;
        let p = PaymentBook {
            id_start: 0,
            id_len: id.len() as u32,
            merchant: r.u32()?,
            date: r.date()?,
            amount: r.dec()?,
            fee: r.dec()?,
            channel: *Channel::ALL.get(usize::from(r.u8()?)).ok_or_else(|| bad("unknown channel"))?,
            currency: r.currency()?,
            cancelled: r.u8()? != 0,
        };
        if p.merchant as usize >= merchants {
            return Err(bad("a payment points outside the merchants"));
        }
        let id_start = books.payment_ids.push(id);
        let i = books.payments.push(PaymentBook { id_start, ..p }) as u32;
        books.index_payment(i);
    }
    let n = r.u64()?;
    r.fits(n, 6)?;
    let payments = books.payments.len() as u64;
    for _ in 0..n {
        let i = r.u32()?;
        if u64::from(i) >= payments {
            return Err(bad("a changed payment points outside the payments"));
        }
        let cancelled = r.u8()? != 0;
        if let Some(p) = books.payments.get_mut(i as usize) {
            p.cancelled = cancelled;
        }
        match r.u8()? {
            0 => {
                books.refunds.remove(&i);
            }
            1 => {
                books.refunds.insert(i, Refunded { amount: r.dec()?, fee: r.dec()? });
            }
            _ => return Err(bad("a changed payment's refund is neither there nor not")),
        }
    }
    Ok(())
}

struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn put_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u32).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn put_dec(out: &mut impl Write, d: Decimal) -> io::Result<()> {
    out.write_all(&d.serialize())
}

fn days_of(date: NaiveDate) -> [u8; 4] {
    chrono::Datelike::num_days_from_ce(&date).to_le_bytes()
}

fn write_body(out: &mut impl Write, books: &Projection, anchor: &[u8; 32]) -> io::Result<()> {
    out.write_all(&RULES_VERSION.to_le_bytes())?;
    for v in [books.next_position, books.entries, books.postings] {
        out.write_all(&v.to_le_bytes())?;
    }
    out.write_all(anchor)?;
    let times = books.timeline.times();
    out.write_all(&(times.len() as u64).to_le_bytes())?;
    put_times(out, times)?;
    out.write_all(&(books.balances.accounts.len() as u32).to_le_bytes())?;
    for (account, currency, h) in &books.balances.accounts {
        put_str(out, account.path())?;
        put_str(out, currency.code())?;
        out.write_all(&h.points.to_le_bytes())?;
        out.write_all(&h.last_position.to_le_bytes())?;
        put_dec(out, h.current)?;
        put_blocks(out, &h.blocks)?;
        out.write_all(&(h.bytes.len() as u64).to_le_bytes())?;
        out.write_all(&h.bytes)?;
        out.write_all(&[u8::from(h.late_given_up)])?;
        put_late(out, &h.late)?;
    }
    write_merchants(out, books)?;
    out.write_all(&(books.payment_ids.chunks.len() as u64).to_le_bytes())?;
    for chunk in &books.payment_ids.chunks {
        out.write_all(&(chunk.len() as u64).to_le_bytes())?;
        out.write_all(chunk.as_bytes())?;
    }
    out.write_all(&(books.payments.len() as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(1 << 16);
    for p in books.payments.iter() {
        buf.extend_from_slice(&p.id_start.to_le_bytes());
        buf.extend_from_slice(&p.id_len.to_le_bytes());
        put_payment(&mut buf, p)?;
        if buf.len() > (1 << 16) - 128 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    let mut refunds: Vec<_> = books.refunds.iter().collect();
    refunds.sort_by_key(|(i, _)| **i);
    out.write_all(&(refunds.len() as u64).to_le_bytes())?;
    for (i, r) in refunds {
        out.write_all(&i.to_le_bytes())?;
        put_dec(out, r.amount)?;
        put_dec(out, r.fee)?;
    }
    write_maps(out, books)?;
    Ok(())
}

fn write_merchants(out: &mut impl Write, books: &Projection) -> io::Result<()> {
    out.write_all(&(books.merchants.len() as u32).to_le_bytes())?;
    for m in &books.merchants {
        put_str(out, &m.id)?;
        let cycle = match m.cycle {
            None => 0u8,
            Some(SettlementCycle::T1) => 1,
            Some(SettlementCycle::D0) => 2,
        };
        out.write_all(&[u8::from(m.closed), cycle])?;
        put_str(out, &serde_json::to_string(&m.fees).map_err(io::Error::other)?)?;
    }
    Ok(())
}

fn write_maps(out: &mut impl Write, books: &Projection) -> io::Result<()> {
    let mut days: Vec<_> = books.days.iter().collect();
    days.sort_by_key(|(k, _)| **k);
    out.write_all(&(days.len() as u64).to_le_bytes())?;
    for ((m, date, currency), t) in days {
        out.write_all(&m.to_le_bytes())?;
        out.write_all(&days_of(*date))?;
        put_str(out, currency.code())?;
        for v in [t.gross, t.refunds, t.fees] {
            put_dec(out, v)?;
        }
    }
    let mut settled: Vec<_> = books.settled.iter().collect();
    settled.sort();
    out.write_all(&(settled.len() as u64).to_le_bytes())?;
    for (m, date, currency) in settled {
        out.write_all(&m.to_le_bytes())?;
        out.write_all(&days_of(*date))?;
        put_str(out, currency.code())?;
    }
    let mut booked: Vec<_> = books.recon_booked.iter().collect();
    booked.sort_by_key(|(k, _)| **k);
    let mut paid: Vec<_> = books.paid.iter().collect();
    paid.sort_by_key(|(k, _)| **k);
    out.write_all(&(paid.len() as u64).to_le_bytes())?;
    for ((m, currency), p) in paid {
        out.write_all(&m.to_le_bytes())?;
        put_str(out, currency.code())?;
        out.write_all(&days_of(p.through))?;
        for v in [p.totals.gross, p.totals.refunds, p.totals.fees] {
            put_dec(out, v)?;
        }
    }
    out.write_all(&(booked.len() as u64).to_le_bytes())?;
    for ((channel, date), (digest, lines)) in booked {
        put_str(out, channel.as_str())?;
        out.write_all(&days_of(*date))?;
        put_str(out, digest)?;
        out.write_all(&(lines.len() as u32).to_le_bytes())?;
        for (slot, amount) in lines {
            out.write_all(&slot.to_le_bytes())?;
            put_dec(out, *amount)?;
        }
    }
    let mut batches: Vec<_> =
        books.batches.iter().flat_map(|(t, batches)| batches.iter().map(move |(b, totals)| (t, b, totals))).collect();
    batches.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    out.write_all(&(batches.len() as u64).to_le_bytes())?;
    for (terminal, batch, t) in batches {
        put_str(out, terminal)?;
        put_str(out, batch)?;
        out.write_all(&t.debit_count.to_le_bytes())?;
        put_dec(out, t.debit_amount)?;
        out.write_all(&t.credit_count.to_le_bytes())?;
        put_dec(out, t.credit_amount)?;
    }
    Ok(())
}

/// Event times, as they are (the count is the reader's to know).
fn put_times(out: &mut impl Write, times: &[i64]) -> io::Result<()> {
    for chunk in times.chunks(8192) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|t| t.to_le_bytes()).collect();
        out.write_all(&bytes)?;
    }
    Ok(())
}

/// A count, then each block of a history: first u64, before, start u64, count u32.
fn put_blocks(out: &mut impl Write, blocks: &[Block]) -> io::Result<()> {
    out.write_all(&(blocks.len() as u64).to_le_bytes())?;
    for b in blocks {
        out.write_all(&b.first.to_le_bytes())?;
        put_dec(out, b.before)?;
        out.write_all(&b.start.to_le_bytes())?;
        out.write_all(&b.count.to_le_bytes())?;
    }
    Ok(())
}

/// A count, then each late posting: position u64, amount.
fn put_late(out: &mut impl Write, late: &[(u64, Decimal)]) -> io::Result<()> {
    out.write_all(&(late.len() as u64).to_le_bytes())?;
    for (position, amount) in late {
        out.write_all(&position.to_le_bytes())?;
        put_dec(out, *amount)?;
    }
    Ok(())
}

/// A payment's fields after its id: merchant, date, amount, fee, channel, currency, cancelled.
fn put_payment(buf: &mut Vec<u8>, p: &PaymentBook) -> io::Result<()> {
    buf.extend_from_slice(&p.merchant.to_le_bytes());
    buf.extend_from_slice(&days_of(p.date));
    buf.extend_from_slice(&p.amount.serialize());
    buf.extend_from_slice(&p.fee.serialize());
    buf.push(channel_code(p.channel));
    put_str(buf, p.currency.code())?;
    buf.push(u8::from(p.cancelled));
    Ok(())
}

fn channel_code(c: Channel) -> u8 {
    Channel::ALL.iter().position(|x| *x == c).unwrap_or_default() as u8
}

/// Reads the body, refusing anything that does not fit (sizes are checked against what is
/// left before anything is allocated for them).
struct Body<R> {
    input: R,
    /// Bytes of the body not read yet: no count read from the file may claim more.
    left: u64,
}

impl<R: Read> Body<R> {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.input.read_exact(&mut b)?;
        self.left = self.left.saturating_sub(N as u64);
        Ok(b)
    }

    /// Checks that `n` items of at least `size` bytes each can still be in the body.
    fn fits(&self, n: u64, size: u64) -> io::Result<usize> {
        match n.checked_mul(size) {
            Some(bytes) if bytes <= self.left => Ok(n as usize),
            _ => Err(bad("a count is larger than the rest of the body")),
        }
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_le_bytes(self.bytes()?))
    }
    fn dec(&mut self) -> io::Result<Decimal> {
        let d = Decimal::deserialize(self.bytes()?);
        if d.scale() > 28 {
            return Err(bad("a decimal's scale is out of range"));
        }
        Ok(d)
    }
    fn vec(&mut self, len: u64) -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; self.fits(len, 1)?];
        self.input.read_exact(&mut v)?;
        self.left -= len;
        Ok(v)
    }
    /// Reads `len` bytes onto the end of `v`.
    fn extend(&mut self, v: &mut Vec<u8>, len: u64) -> io::Result<()> {
        let start = v.len();
        v.resize(start + self.fits(len, 1)?, 0);
        self.input.read_exact(&mut v[start..])?;
        self.left -= len;
        Ok(())
    }
    /// Reads a string into `buf` (reused: no allocation per string).
    fn str_into<'b>(&mut self, buf: &'b mut Vec<u8>) -> io::Result<&'b str> {
        let len = self.u32()?;
        buf.clear();
        self.extend(buf, u64::from(len))?;
        std::str::from_utf8(buf).map_err(|_| bad("a string is not UTF-8"))
    }
    fn string(&mut self) -> io::Result<String> {
        let len = self.u32()?;
        String::from_utf8(self.vec(u64::from(len))?).map_err(|_| bad("a string is not UTF-8"))
    }
    fn currency(&mut self) -> io::Result<Currency> {
        self.string()?.parse().map_err(|e: String| bad(&e))
    }
    fn date(&mut self) -> io::Result<NaiveDate> {
        NaiveDate::from_num_days_from_ce_opt(i32::from_le_bytes(self.bytes()?))
            .ok_or_else(|| bad("a date is out of range"))
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn read_merchants<R: Read>(r: &mut Body<R>, books: &mut Projection) -> io::Result<()> {
    let n = r.u32()?;
    for i in 0..n {
        let id = r.string()?;
        let closed = r.u8()? != 0;
        let cycle = match r.u8()? {
            0 => None,
            1 => Some(SettlementCycle::T1),
            2 => Some(SettlementCycle::D0),
            _ => return Err(bad("unknown settlement cycle")),
        };
        let fees = serde_json::from_str(&r.string()?).map_err(|e| bad(&e.to_string()))?;
        books.merchant_index.insert(id.as_str().into(), i);
        books.merchants.push(MerchantBook {
            payable: Account::payable(&id),
            id: id.into(),
            fees,
            cycle,
            closed,
            payable_slots: Vec::new(),
        });
    }
    Ok(())
}

/// Reads the settlement, reconciliation and batch maps (after the accounts and merchants).
fn read_maps<R: Read>(r: &mut Body<R>, books: &mut Projection) -> io::Result<()> {
    let merchants = books.merchants.len() as u64;
    let n = r.u64()?;
    for _ in 0..n {
        let key = (r.u32()?, r.date()?, r.currency()?);
        if u64::from(key.0) >= merchants {
            return Err(bad("a day points outside the merchants"));
        }
        books.days.insert(key, DayTotals { gross: r.dec()?, refunds: r.dec()?, fees: r.dec()? });
    }
    let n = r.u64()?;
    for _ in 0..n {
        let key = (r.u32()?, r.date()?, r.currency()?);
        if u64::from(key.0) >= merchants {
            return Err(bad("a settlement points outside the merchants"));
        }
        books.settled.insert(key);
    }
    let n = r.u64()?;
    for _ in 0..n {
        let key = (r.u32()?, r.currency()?);
        if u64::from(key.0) >= merchants {
            return Err(bad("a payout points outside the merchants"));
        }
        let through = r.date()?;
        let totals = DayTotals { gross: r.dec()?, refunds: r.dec()?, fees: r.dec()? };
        books.paid.insert(key, Paid { through, totals });
    }
    let n = r.u64()?;
    r.fits(n, 12)?;
    let accounts = books.balances.accounts.len() as u64;
    for _ in 0..n {
        let channel = match r.string()?.as_str() {
            "wechat" => ingest::statement::StatementChannel::Wechat,
            "alipay" => ingest::statement::StatementChannel::Alipay,
            "unionpay" => ingest::statement::StatementChannel::Unionpay,
            "generic" => ingest::statement::StatementChannel::Generic,
            _ => return Err(bad("unknown statement channel")),
        };
        let date = r.date()?;
        let digest = r.string()?;
        let count = r.u32()?;
        let mut lines = Vec::with_capacity(r.fits(u64::from(count), 20)?);
        for _ in 0..count {
            let slot = r.u32()?;
            if u64::from(slot) >= accounts {
                return Err(bad("a booked reconciliation points outside the accounts"));
            }
            lines.push((slot, r.dec()?));
        }
        books.recon_booked.insert((channel, date), (digest, lines));
    }
    let n = r.u64()?;
    r.fits(n, 56)?;
    for _ in 0..n {
        let (terminal, batch) = (r.string()?, r.string()?);
        let totals = ingest::event::BatchTotals {
            debit_count: r.u64()?,
            debit_amount: r.dec()?,
            credit_count: r.u64()?,
            credit_amount: r.dec()?,
        };
        books.batches.entry(terminal).or_default().insert(batch, totals);
    }
    Ok(())
}

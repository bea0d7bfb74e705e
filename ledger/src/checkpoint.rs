//! Checkpoints: the projection's whole state saved with the position it is caught up to, so a
//! restart resumes instead of replaying the log from the start.
//!
//! File layout (little-endian):
//!
//! ```text
//! magic    8 bytes  "PLLEDGR3" (the layout's version)
//! body_len u64
//! body_hash 32 bytes  BLAKE3 of the body
//! body:
//!   rules    u32  [`RULES_VERSION`]
//!   position u64, entries u64, postings u64
//!   anchor   32 bytes  BLAKE3 of the last event applied (see `anchor`); zeros at position 0
//!   timeline: count u64, then one i64 (µs since the epoch) per position
//!   accounts: count u32, then per account: path, currency, history
//!     (points u64, last_position u64, current, blocks: count u64 then per block
//!      first u64, before, start u64, count u32; bytes: length u64 then the bytes;
//!      late postings: given up u8, count u64 then (position u64, amount) each)
//!   merchants: count u32, then per merchant: id, closed u8, cycle u8 (0 none, 1 T1, 2 D0),
//!     fee terms as JSON (`null` before a contract)
//!   payment ids: chunk count u64, then per chunk its length u64 and bytes
//!   payments: count u64, then per payment: id_start u64, id_len u32, merchant u32,
//!     date i32 (days from CE), amount, fee, channel u8, currency, cancelled u8
//!   refunds: count u64, then (payment u32, amount, fee), in payment order
//!   days: count u64, then (merchant u32, date i32, currency, gross, refunds, fees), sorted
//!   settled: count u64, then (merchant u32, date i32, currency), sorted
//!   paid: count u64, then (merchant u32, currency, through i32, gross, refunds, fees), sorted
//!   reconciliations booked: count u64, then per statement and date (sorted): channel,
//!     date i32, the run's digest, count u32 and (slot u32, amount) each
//!   terminal batches: count u64, then per terminal and batch (sorted): terminal id, batch
//!     number, debit count u64, debit amount, credit count u64, credit amount
//! ```
//!
//! Strings are a u32 length and UTF-8 bytes; a currency is its code as a string; a Decimal is
//! its 16-byte serialized form. The body is canonical — the same books always give the same
//! bytes — so its hash doubles as a digest of the whole state ([`state_digest`]): `verify`
//! compares a rebuild from position 0 with the checkpoint by that digest.
//!
//! A checkpoint is refused (and the books rebuilt from the log) when its hash does not match
//! its body, when it is ahead of the log, or when its anchor is not the event the log holds
//! just before its position.

use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use chrono::NaiveDate;
use ingest::event::{Channel, SettlementCycle};
use ingest::money::Currency;
use ingest::store::RecordedEvent;
use rust_decimal::Decimal;

use crate::chunked::ID_CHUNK_BYTES;
use crate::entry::Account;
use crate::history::{Block, History};
use crate::projection::{Balances, DayTotals, MerchantBook, Paid, PaymentBook, Projection, Refunded};
use crate::timeline::Timeline;

const MAGIC: &[u8; 8] = b"PLLEDGR3";

/// The version of the posting rules (and of what the state means) a checkpoint was written
/// with: raise it whenever a rule changes, so that books built by other rules are rebuilt.
pub const RULES_VERSION: u32 = 4;
const HEADER_LEN: u64 = 8 + 8 + 32;

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

/// A checkpoint as read from its file.
pub struct Loaded {
    /// The books as of [`Projection::position`].
    pub books: Projection,
    /// The anchor: which event the books end with.
    pub anchor: [u8; 32],
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

/// A digest of the whole state of the books (BLAKE3 of the canonical checkpoint body with a
/// zero anchor): equal digests, equal books.
pub fn state_digest(books: &Projection) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    // Writing into a hasher cannot fail.
    let _ = write_body(&mut hasher, books, &[0; 32]);
    *hasher.finalize().as_bytes()
}

/// Writes the books to `path` (a temporary file renamed over it), with `anchor` the
/// [`anchor`] of the event at `books.position() - 1`. Not synced: a checkpoint lost or torn
/// in a crash is refused by its hash and costs a rebuild, nothing more.
pub fn save(path: &Path, books: &Projection, anchor: &[u8; 32]) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Io { path: path.display().to_string(), source };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&[0; HEADER_LEN as usize]).map_err(err)?;
    let (len, hash) = {
        // Hashed below the buffer: the hasher gets whole megabytes, not field-sized pieces.
        let hashing = Hashing { inner: &mut file, hasher: blake3::Hasher::new(), len: 0 };
        let mut out = BufWriter::with_capacity(1 << 20, hashing);
        write_body(&mut out, books, anchor).map_err(err)?;
        let hashing = out.into_inner().map_err(|e| err(e.into_error()))?;
        (hashing.len, *hashing.hasher.finalize().as_bytes())
    };
    file.seek(SeekFrom::Start(0)).map_err(err)?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&hash);
    file.write_all(&header).map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Reads a checkpoint: its hash is checked; whether it belongs to the log is the caller's
/// check (compare [`Loaded::anchor`] with the log's event before its position).
pub fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| CheckpointError::Io { path: name.clone(), source })?;
    let refused = |reason: String| CheckpointError::Refused { path: name.clone(), reason };
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut file = file;
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut header).map_err(|_| refused("shorter than its header".into()))?;
    if &header[..8] != MAGIC {
        return Err(refused("not a posledger ledger checkpoint (bad magic)".into()));
    }
    let len = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    if HEADER_LEN.checked_add(len) != Some(file_len) {
        return Err(refused(format!("body is {} bytes, header says {len}", file_len.saturating_sub(HEADER_LEN))));
    }
    // Hashed below the buffer: the hasher gets whole megabytes.
    let mut input = BufReader::with_capacity(1 << 20, HashingReader { inner: file, hasher: blake3::Hasher::new() });
    let body = read_body(&mut input, len);
    // A body that does not decode is most likely damaged: hash the rest to say which.
    let _ = io::copy(&mut input, &mut io::sink());
    if input.into_inner().hasher.finalize().as_bytes()[..] != header[16..48] {
        return Err(refused("body does not match its hash (damaged)".into()));
    }
    let (books, anchor) = body.map_err(|e| refused(format!("body does not decode: {e}")))?;
    books.check().map_err(|e| refused(format!("books inside do not check: {e}")))?;
    Ok(Loaded { books, anchor })
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
    for chunk in times.chunks(8192) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|t| t.to_le_bytes()).collect();
        out.write_all(&bytes)?;
    }
    out.write_all(&(books.balances.accounts.len() as u32).to_le_bytes())?;
    for (account, currency, h) in &books.balances.accounts {
        put_str(out, account.path())?;
        put_str(out, currency.code())?;
        out.write_all(&h.points.to_le_bytes())?;
        out.write_all(&h.last_position.to_le_bytes())?;
        put_dec(out, h.current)?;
        out.write_all(&(h.blocks.len() as u64).to_le_bytes())?;
        for b in &h.blocks {
            out.write_all(&b.first.to_le_bytes())?;
            put_dec(out, b.before)?;
            out.write_all(&b.start.to_le_bytes())?;
            out.write_all(&b.count.to_le_bytes())?;
        }
        out.write_all(&(h.bytes.len() as u64).to_le_bytes())?;
        out.write_all(&h.bytes)?;
        out.write_all(&[u8::from(h.late_given_up)])?;
        out.write_all(&(h.late.len() as u64).to_le_bytes())?;
        for (position, amount) in &h.late {
            out.write_all(&position.to_le_bytes())?;
            put_dec(out, *amount)?;
        }
    }
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
        buf.extend_from_slice(&p.merchant.to_le_bytes());
        buf.extend_from_slice(&days_of(p.date));
        buf.extend_from_slice(&p.amount.serialize());
        buf.extend_from_slice(&p.fee.serialize());
        buf.push(channel_code(p.channel));
        put_str(&mut buf, p.currency.code())?;
        buf.push(u8::from(p.cancelled));
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

fn read_body(input: &mut impl Read, len: u64) -> io::Result<(Projection, [u8; 32])> {
    let mut r = Body { input, left: len };
    let mut books = Projection::default();
    let rules = r.u32()?;
    if rules != RULES_VERSION {
        return Err(bad(&format!("written by posting rules version {rules}, these are version {RULES_VERSION}")));
    }
    books.next_position = r.u64()?;
    books.entries = r.u64()?;
    books.postings = r.u64()?;
    let anchor: [u8; 32] = r.bytes()?;
    let n = r.u64()?;
    if n != books.next_position {
        return Err(bad("the timeline does not cover the position"));
    }
    let mut times = Vec::with_capacity(r.fits(n, 8)?);
    for _ in 0..n {
        times.push(r.i64()?);
    }
    books.timeline = Timeline::from_times(times);
    let n = r.u32()?;
    let mut accounts = Vec::with_capacity(r.fits(u64::from(n), 8)?);
    for _ in 0..n {
        let account = Account::parse(&r.string()?).map_err(|e| bad(&e))?;
        let currency = r.currency()?;
        let mut h = History { points: r.u64()?, last_position: r.u64()?, current: r.dec()?, ..History::default() };
        let blocks = r.u64()?;
        h.blocks.reserve(r.fits(blocks, 36)?);
        for _ in 0..blocks {
            h.blocks.push(Block { first: r.u64()?, before: r.dec()?, start: r.u64()?, count: r.u32()? });
        }
        let len = r.u64()?;
        h.bytes = r.vec(len)?;
        h.late_given_up = r.u8()? != 0;
        let late = r.u64()?;
        h.late.reserve(r.fits(late, 24)?);
        for _ in 0..late {
            let (position, amount) = (r.u64()?, r.dec()?);
            if !books.timeline.is_late(position) || h.late.last().is_some_and(|(p, _)| *p > position) {
                return Err(bad("a late posting is not of a late event, or out of order"));
            }
            h.late.push((position, amount));
        }
        accounts.push((account, currency, h));
    }
    books.balances = Balances::from_accounts(accounts);
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
    let n = r.u64()?;
    r.fits(n, 8)?;
    for _ in 0..n {
        let len = r.u64()?;
        if len > ID_CHUNK_BYTES as u64 {
            return Err(bad("a chunk of payment ids is too long"));
        }
        let mut chunk = String::with_capacity(r.fits(len, 1)?);
        chunk.push_str(std::str::from_utf8(&r.vec(len)?).map_err(|_| bad("payment ids are not UTF-8"))?);
        books.payment_ids.chunks.push(chunk);
    }
    let n = r.u64()?;
    for _ in 0..n {
        let p = PaymentBook {
            id_start: r.u64()?,
            id_len: r.u32()?,
            merchant: r.u32()?,
            date: r.date()?,
            amount: r.dec()?,
            fee: r.dec()?,
            channel: *Channel::ALL.get(usize::from(r.u8()?)).ok_or_else(|| bad("unknown channel"))?,
            currency: r.currency()?,
            cancelled: r.u8()? != 0,
        };
        if books.payment_ids.get(p.id_start, p.id_len as usize).is_none()
            || p.merchant as usize >= books.merchants.len()
        {
            return Err(bad("a payment points outside the ids or merchants"));
        }
        books.payments.push(p);
    }
    books.payment_index.reserve(books.payments.len(), |_| 0);
    for i in 0..books.payments.len() {
        books.index_payment(i as u32);
    }
    let payments = books.payments.len() as u64;
    let merchants = books.merchants.len() as u64;
    let n = r.u64()?;
    for _ in 0..n {
        let i = r.u32()?;
        if u64::from(i) >= payments {
            return Err(bad("a refund points outside the payments"));
        }
        books.refunds.insert(i, Refunded { amount: r.dec()?, fee: r.dec()? });
    }
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
    let mut rest = [0u8; 1];
    if r.input.read(&mut rest)? != 0 {
        return Err(bad("bytes after the body"));
    }
    Ok((books, anchor))
}

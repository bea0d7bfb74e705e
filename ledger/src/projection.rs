//! The projection: events in, balanced entries out, balances kept. Deterministic: no clock,
//! no I/O, no randomness; the same events in the same order give the same books.
//!
//! Posting rules (amounts in the payment's currency):
//!
//! | event | debit | credit |
//! |---|---|---|
//! | sale, card or QR | `assets:clearing:<ch>` amount | `liabilities:merchant:<m>:payable` amount − fee; `income:mdr:<ch>` fee |
//! | sale, cash | — (the merchant holds the cash; no entry) | — |
//! | void, reversal | the sale's entry, reversed | |
//! | refund | payable refund − fee part; `income:mdr:<ch>` fee part | `assets:clearing:<ch>` refund |
//! | channel fee on a settled line ([`Projection::channel_fee`]) | `expenses:channel-fees:<ch>` | `assets:clearing:<ch>` |
//! | reconciliation, matched lines of a channel (per run, summed) | `assets:bank:settlement` what was paid; `expenses:channel-fees:<ch>` the day's fee, rounded to the fen | `assets:clearing:<ch>` payments less refunds |
//! | break `missing_in_statement` | `assets:suspense:<statement>` | `assets:clearing:<ch>` |
//! | break `missing_in_ledger`, `status_mismatch`, `duplicate_in_statement` (money came) | bank, channel fees | suspense |
//! | break `amount_mismatch` / `fee_mismatch` | bank what came, channel fees (theirs / the expected), suspense the difference | clearing our amount |
//!
//! Refund lines and items book the same the other way. Matched lines book in their currency
//! (summed per currency and channel), each break and its resolution in the break's currency
//! (its item's, or its line's): an HKD payment's break parks HKD. A reconciliation run again
//! for the same statement and date books only the difference from what its previous run
//! booked.
//!
//! The fee is the merchant's contract in force when the sale is booked ([`crate::fees`]); a
//! refund gives back the fee in proportion, and the refund that completes the payment gives
//! back exactly the rest, so a fully refunded payment nets to zero on every account.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use hashbrown::HashTable;
use ingest::event::{
    BatchTotals, Channel, Event, FeeTerms, MerchantSettled, PaymentAdjustment, ReconBreak, ReconOutcome,
    SettlementCycle,
};
use ingest::money::Currency;
use ingest::statement::{LineKind, StatementChannel};
use rust_decimal::Decimal;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::chunked::{Chunked, IdArena};
use crate::entry::{Account, BalancedEntry, EntryError, Posting};
use crate::fees;
use crate::history::History;
use crate::timeline::Timeline;

/// Maps with small keys (merchant ids, indexes, days): hashbrown's default hasher (foldhash),
/// much cheaper than SipHash or a streaming xxh3 for keys of a few bytes.
pub(crate) type FastMap<K, V> = hashbrown::HashMap<K, V>;
pub(crate) type FastSet<K> = hashbrown::HashSet<K>;

/// Why the projection stopped: a bug or damaged history, never bad input (the write model
/// refuses bad input before it becomes an event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A posting rule made an unbalanced entry.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// An event breaks an invariant of the books.
    #[error("invariant broken at position {position}: {message}")]
    Invariant {
        /// Position of the event.
        position: u64,
        /// What is wrong.
        message: String,
    },
    /// Events must arrive in position order, each once.
    #[error("event at position {got} arrived, expected position {expected}")]
    OutOfOrder {
        /// Position the projection expected.
        expected: u64,
        /// Position it got.
        got: u64,
    },
}

/// What the books remember of a merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MerchantBook {
    pub(crate) id: Box<str>,
    pub(crate) payable: Account,
    /// Fee terms of the contract in force; none before a contract.
    pub(crate) fees: Option<BTreeMap<Channel, FeeTerms>>,
    pub(crate) cycle: Option<SettlementCycle>,
    /// The relationship ended: nothing may be posted for the merchant any more.
    pub(crate) closed: bool,
    /// The payable's balance slot per currency (a cache).
    pub(crate) payable_slots: Vec<(Currency, u32)>,
}

/// What the books remember of a payment, to book what happens to it later. Kept small: the
/// books hold one per payment (the id lives in the projection's id arena).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PaymentBook {
    pub(crate) id_start: u64,
    pub(crate) id_len: u32,
    pub(crate) merchant: u32,
    pub(crate) date: NaiveDate,
    pub(crate) amount: Decimal,
    pub(crate) fee: Decimal,
    pub(crate) channel: Channel,
    pub(crate) currency: Currency,
    pub(crate) cancelled: bool,
}

/// How much of a payment was refunded, and how much fee went back with it (only refunded
/// payments have one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Refunded {
    pub(crate) amount: Decimal,
    pub(crate) fee: Decimal,
}

/// Balances of every account, now and as of any position.
#[derive(Debug, Clone, Default)]
pub struct Balances {
    /// Where each account's histories are, per currency.
    slots: FastMap<Account, Vec<(Currency, u32)>>,
    /// Per slot: the account, its currency, and its history.
    pub(crate) accounts: Vec<(Account, Currency, History)>,
}

impl Balances {
    fn find(&self, account: &Account, currency: Currency) -> Option<u32> {
        self.slots.get(account)?.iter().find(|(c, _)| *c == currency).map(|(_, i)| *i)
    }

    /// The slot of an account's history in a currency, made when first used.
    pub(crate) fn slot(&mut self, account: &Account, currency: Currency) -> u32 {
        if let Some(i) = self.find(account, currency) {
            return i;
        }
        self.accounts.push((account.clone(), currency, History::default()));
        let i = (self.accounts.len() - 1) as u32;
        self.slots.entry(account.clone()).or_default().push((currency, i));
        i
    }

    /// Puts back the lookup of slots (after a checkpoint load).
    pub(crate) fn from_accounts(accounts: Vec<(Account, Currency, History)>) -> Self {
        let mut slots: FastMap<Account, Vec<(Currency, u32)>> = FastMap::default();
        for (i, (account, currency, _)) in accounts.iter().enumerate() {
            slots.entry(account.clone()).or_default().push((*currency, i as u32));
        }
        Balances { slots, accounts }
    }

    fn post(&mut self, slot: u32, position: u64, amount: Decimal, late: bool) {
        let history = &mut self.accounts[slot as usize].2;
        history.push(position, amount);
        if late {
            history.mark_late(position, amount);
        }
    }

    /// The history of `account` in `currency`, if it was ever posted to.
    pub fn history(&self, account: &Account, currency: Currency) -> Option<&History> {
        self.find(account, currency).map(|i| &self.accounts[i as usize].2)
    }

    /// The balance of `account` in `currency` after every event before position `until`
    /// (`u64::MAX` for now). A binary search and a short scan: no replay.
    pub fn balance(&self, account: &Account, currency: Currency, until: u64) -> Decimal {
        match self.history(account, currency) {
            None => Decimal::ZERO,
            Some(h) if until == u64::MAX => h.current(),
            Some(h) => h.before(until),
        }
    }

    /// Every posting by an event at positions `from..to`, from the accounts' histories: (the
    /// event's position, the account's slot, the amount), in position order and, within an
    /// event, in the order the accounts were first used.
    pub(crate) fn postings_between(&self, from: u64, to: u64) -> Vec<(u64, u32, Decimal)> {
        let mut postings: Vec<(u64, u32, Decimal)> = Vec::new();
        for (slot, (_, _, h)) in self.accounts.iter().enumerate() {
            let points = h.points_from(from).take_while(|p| p.position < to);
            postings.extend(points.map(|p| (p.position, slot as u32, p.amount)));
        }
        postings.sort_unstable_by_key(|&(position, slot, _)| (position, slot));
        postings
    }

    /// Every account's balance before position `until`, accounts in path order; zero
    /// balances of accounts that were used are kept (a trial balance lists them).
    pub fn trial_balance(&self, until: u64) -> Vec<(Account, Currency, Decimal)> {
        self.rows(|h| h.first_position().is_some_and(|p| p < until), |h| h.before(until))
    }

    fn rows(
        &self,
        used: impl Fn(&History) -> bool,
        balance: impl Fn(&History) -> Decimal,
    ) -> Vec<(Account, Currency, Decimal)> {
        let mut rows: Vec<_> = self
            .accounts
            .iter()
            .filter(|(_, _, h)| used(h))
            .map(|(account, currency, h)| (account.clone(), *currency, balance(h)))
            .collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }

    /// Checks every balance against the sum of its postings.
    pub fn check(&self) -> Result<(), String> {
        for (account, currency, h) in &self.accounts {
            h.check().map_err(|e| format!("{account} {currency}: {e}"))?;
        }
        Ok(())
    }
}

/// A merchant's business day, for settlement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DayTotals {
    pub(crate) gross: Decimal,
    pub(crate) refunds: Decimal,
    pub(crate) fees: Decimal,
}

/// The classification digest of the reconciliation run booked last for a statement and date,
/// and what it booked by balance slot.
pub(crate) type ReconBooked = (String, Vec<(u32, Decimal)>);

/// What a merchant's settlements paid so far in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paid {
    /// The last business date covered.
    pub(crate) through: NaiveDate,
    /// Sums of the settlements' gross, refunds and fees.
    pub(crate) totals: DayTotals,
}

/// The double-entry projection of the event log.
///
/// After an error the projection is broken for good: every later call returns that error
/// (the books never hold half an entry, but the state behind them may be half-updated).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    pub(crate) merchants: Vec<MerchantBook>,
    pub(crate) merchant_index: FastMap<Box<str>, u32>,
    pub(crate) payments: Chunked<PaymentBook>,
    /// Every payment's `txn_id`.
    pub(crate) payment_ids: IdArena,
    /// Payments by the hash of their id (indexes into `payments`).
    pub(crate) payment_index: HashTable<u32>,
    pub(crate) refunds: FastMap<u32, Refunded>,
    /// Payments voided, reversed or refunded, in the order it happened (since the books were
    /// built or loaded): a checkpoint saves again only those changed since its last save.
    pub(crate) payment_changes: Vec<u32>,
    /// What each merchant's business day brought, per currency, for settlement.
    pub(crate) days: FastMap<(u32, NaiveDate, Currency), DayTotals>,
    /// Merchant, settlement date and currency of every settlement booked.
    pub(crate) settled: FastSet<(u32, NaiveDate, Currency)>,
    /// Per merchant and currency: what its settlements paid so far and the last business
    /// date they covered.
    pub(crate) paid: FastMap<(u32, Currency), Paid>,
    /// Per statement and date: the classification digest of the run booked last and what it
    /// booked, by balance slot (another run first takes that back).
    pub(crate) recon_booked: FastMap<(StatementChannel, NaiveDate), ReconBooked>,
    /// The host's own totals of each terminal batch, by terminal and batch number (see
    /// [`Projection::batch_totals`]).
    pub(crate) batches: FastMap<String, FastMap<String, BatchTotals>>,
    /// Balance slots of each channel's clearing and fee income accounts (a cache).
    channel_slots: Vec<(Channel, Currency, u32, u32)>,
    pub(crate) balances: Balances,
    pub(crate) timeline: Timeline,
    pub(crate) next_position: u64,
    pub(crate) entries: u64,
    pub(crate) postings: u64,
    broken: Option<LedgerError>,
}

/// The postings of one entry: the balance slot and amount of each (at most three; zeros are
/// dropped when booked). A slot is an account in one currency, so the slots say each posting's
/// currency (a reconciliation's entry may book several).
struct Lines {
    items: [(u32, Decimal); 3],
    len: usize,
    /// Entries of more than three postings (reconciliations) keep them here instead.
    many: Vec<(u32, Decimal)>,
}

impl Lines {
    fn new(items: &[(u32, Decimal)]) -> Lines {
        let mut lines = Lines { items: [(0, Decimal::ZERO); 3], len: 0, many: Vec::new() };
        let nonzero = items.iter().filter(|(_, a)| !a.is_zero());
        if items.len() > 3 {
            lines.many = nonzero.copied().collect();
            return lines;
        }
        for &(slot, amount) in nonzero {
            lines.items[lines.len] = (slot, amount);
            lines.len += 1;
        }
        lines
    }

    fn items(&self) -> &[(u32, Decimal)] {
        if self.many.is_empty() { &self.items[..self.len] } else { &self.many }
    }
}

impl Projection {
    /// The balances.
    pub fn balances(&self) -> &Balances {
        &self.balances
    }

    /// When each event happened, by position.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The position of the next event the projection expects (events applied so far).
    pub fn position(&self) -> u64 {
        self.next_position
    }

    /// Entries booked so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Postings booked so far.
    pub fn postings(&self) -> u64 {
        self.postings
    }

    /// The error that broke the books, if one did (see the type's doc).
    pub fn broken(&self) -> Option<&LedgerError> {
        self.broken.as_ref()
    }

    /// Payments booked so far.
    pub fn payments(&self) -> u64 {
        self.payments.len() as u64
    }

    /// Applies the event at `position`, returning the entry it books, if any.
    pub fn apply(&mut self, position: u64, event: &Event) -> Result<Option<BalancedEntry>, LedgerError> {
        self.apply_inner(position, event, true)
    }

    /// Applies the event at `position` like [`Projection::apply`] (with the same checks) but
    /// does not hand out the entry: a replay that only wants the balances saves making it.
    pub fn apply_unrecorded(&mut self, position: u64, event: &Event) -> Result<(), LedgerError> {
        self.apply_inner(position, event, false).map(|_| ())
    }

    /// Makes room for `n` more payments at once (a replay knows about how many events are
    /// coming; growing the payment index step by step would rehash it again and again).
    pub fn reserve(&mut self, n: u64) {
        self.timeline.reserve(n);
        self.reserve_payments(n);
    }

    /// Makes room in the payment index for `n` more payments at once (bounded like
    /// [`Projection::reserve`]).
    pub(crate) fn reserve_payments(&mut self, n: u64) {
        let (ids, payments) = (&self.payment_ids, &self.payments);
        let n = n.min(PAYMENTS_RESERVED_MAX) as usize;
        self.payment_index.reserve(n, |&j| payment_hash_of(ids, payments, j));
    }

    fn apply_inner(&mut self, position: u64, event: &Event, want: bool) -> Result<Option<BalancedEntry>, LedgerError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        if position != self.next_position {
            return Err(LedgerError::OutOfOrder { expected: self.next_position, got: position });
        }
        let late = self.timeline.push(event.occurred_at().timestamp_micros());
        let booked = self.book(position, event, want, late);
        match &booked {
            Err(e) => self.broken = Some(e.clone()),
            Ok(_) => self.count_in_batch(event),
        }
        self.next_position += 1;
        booked
    }

    /// Books the event's lines after checking them (the checks of [`BalancedEntry::new`]).
    fn book(
        &mut self,
        position: u64,
        event: &Event,
        want: bool,
        late: bool,
    ) -> Result<Option<BalancedEntry>, LedgerError> {
        let Some(lines) = self.entry_for(position, event)? else {
            return Ok(None);
        };
        // The entry balances in each of its currencies (indexed as in `Currency::ALL`).
        let mut sums = [Decimal::ZERO; Currency::ALL.len()];
        for &(slot, amount) in lines.items() {
            let currency = self.balances.accounts[slot as usize].1;
            if amount.scale() > currency.scale() {
                let account = self.account(slot);
                return Err(EntryError::OverScale { position, account, amount, currency }.into());
            }
            sums[currency as usize] += amount;
        }
        if let Some((currency, sum)) = Currency::ALL.into_iter().zip(sums).find(|(_, sum)| !sum.is_zero()) {
            return Err(EntryError::Unbalanced { position, currency, difference: sum }.into());
        }
        let entry = if want {
            let postings = lines
                .items()
                .iter()
                .map(|&(slot, amount)| {
                    let (account, currency, _) = &self.balances.accounts[slot as usize];
                    Posting { account: account.clone(), amount, currency: *currency }
                })
                .collect();
            Some(BalancedEntry::new(position, postings)?)
        } else {
            None
        };
        for &(slot, amount) in lines.items() {
            self.balances.post(slot, position, amount, late);
        }
        self.entries += 1;
        self.postings += lines.items().len() as u64;
        Ok(entry)
    }

    /// A digest of every balance (BLAKE3 over `account currency balance` lines in account
    /// order, hex): two books with the same digest hold the same balances.
    pub fn digest(&self) -> String {
        digest_rows(&self.balances.trial_balance(u64::MAX))
    }

    /// The balance of `account` in `currency` counting the entries of every event that
    /// happened at or before business time `t` (microseconds since the Unix epoch), as the
    /// log booked them. No replay: the timeline narrows the events to look at to those
    /// recorded out of time order around `t`.
    pub fn balance_at_time(&self, account: &Account, currency: Currency, t: i64) -> Decimal {
        let Some(h) = self.balances.history(account, currency) else { return Decimal::ZERO };
        let window = self.timeline.window(t);
        let counts = |p: u64| self.timeline.time(p).is_some_and(|at| at <= t);
        at_time(h, window, counts)
    }

    /// Every account's balance as of business time `t` (see [`Projection::balance_at_time`]).
    pub fn trial_balance_at_time(&self, t: i64) -> Vec<(Account, Currency, Decimal)> {
        let window = self.timeline.window(t);
        let counts = |p: u64| self.timeline.time(p).is_some_and(|at| at <= t);
        // An account is listed when one of its postings counts.
        self.balances.rows(
            |h| {
                let end = window.end(h.keeps_late());
                h.points_from(0)
                    .take_while(|pt| pt.position < end)
                    .any(|pt| pt.position < window.from || counts(pt.position))
                    || (h.keeps_late() && h.any_late_from(end, counts))
            },
            |h| at_time(h, window, counts),
        )
    }

    fn merchant(&mut self, id: &str) -> u32 {
        if let Some(i) = self.merchant_index.get(id) {
            return *i;
        }
        let i = self.merchants.len() as u32;
        self.merchants.push(MerchantBook {
            id: id.into(),
            payable: Account::payable(id),
            fees: None,
            cycle: None,
            closed: false,
            payable_slots: Vec::new(),
        });
        self.merchant_index.insert(id.into(), i);
        i
    }

    fn payable_slot(&mut self, merchant: u32, currency: Currency) -> u32 {
        let book = &self.merchants[merchant as usize];
        if let Some((_, s)) = book.payable_slots.iter().find(|(c, _)| *c == currency) {
            return *s;
        }
        let slot = self.balances.slot(&book.payable, currency);
        self.merchants[merchant as usize].payable_slots.push((currency, slot));
        slot
    }

    /// Slots of the channel's clearing and fee income accounts.
    fn channel_slots(&mut self, channel: Channel, currency: Currency) -> (u32, u32) {
        if let Some((_, _, c, m)) = self.channel_slots.iter().find(|(ch, cu, _, _)| *ch == channel && *cu == currency) {
            return (*c, *m);
        }
        let c = self.balances.slot(&Account::clearing(channel), currency);
        let m = self.balances.slot(&Account::mdr(channel), currency);
        self.channel_slots.push((channel, currency, c, m));
        (c, m)
    }

    fn account(&self, slot: u32) -> Account {
        self.balances.accounts[slot as usize].0.clone()
    }

    /// The payment a void, refund or reversal applies to: its merchant's sale `original_txn_id`
    /// (a payment is named by its merchant and txn_id; two merchants may use one txn_id).
    fn find_payment(&self, a: &PaymentAdjustment) -> Option<u32> {
        let merchant = *self.merchant_index.get(a.merchant_id.as_str())?;
        let (ids, payments) = (&self.payment_ids, &self.payments);
        let is_it = |&i: &u32| is_payment(ids, payments, i, merchant, &a.original_txn_id);
        self.payment_index.find(payment_hash(merchant, &a.original_txn_id), is_it).copied()
    }

    /// Indexes payment `i` (already in `payments`) by its merchant and id.
    pub(crate) fn index_payment(&mut self, i: u32) {
        let (ids, payments) = (&self.payment_ids, &self.payments);
        let hash_of = |j: &u32| payment_hash_of(ids, payments, *j);
        self.payment_index.insert_unique(hash_of(&i), i, hash_of);
    }

    /// Approximate bytes held, by part (for the bench's memory figures).
    pub fn memory(&self) -> Vec<(&'static str, u64)> {
        let histories: usize = self.balances.accounts.iter().map(|(_, _, h)| h.bytes()).sum();
        vec![
            ("payments", self.payments.bytes() as u64),
            ("payment_ids", self.payment_ids.bytes() as u64),
            ("payment_index", (self.payment_index.capacity() * 5) as u64),
            ("refunds", (self.refunds.capacity() * 40) as u64),
            ("payment_changes", (self.payment_changes.capacity() * 4) as u64),
            ("histories", histories as u64),
            ("timeline", self.timeline.bytes() as u64),
        ]
    }

    /// The host's own totals of terminal `terminal_id`'s batch `batch_no` (zeros for a batch
    /// without one): its sales less reversals (debits), its voids and refunds (credits), cash
    /// left out. Final once the batch closes: the write model records nothing in a closed
    /// batch, and keeps a void or reversal in its sale's batch.
    pub fn batch_totals(&self, terminal_id: &str, batch_no: &str) -> BatchTotals {
        self.batches.get(terminal_id).and_then(|b| b.get(batch_no)).copied().unwrap_or_default()
    }

    /// Counts a booked payment event in its terminal batch's totals.
    fn count_in_batch(&mut self, event: &Event) {
        let (terminal, batch, debit, credit) = match event {
            Event::PaymentCaptured(s) if s.channel != Channel::Cash => {
                (&s.terminal_id, &s.batch_no, Some((1, s.amount)), None)
            }
            Event::PaymentReversed(a) => match self.find_payment(a).map(|i| self.payment(i)) {
                // Takes back the sale: its count and its amount.
                Some(sale) if sale.channel != Channel::Cash => {
                    (&a.terminal_id, &a.batch_no, Some((-1, -sale.amount)), None)
                }
                _ => return,
            },
            Event::PaymentVoided(a) | Event::PaymentRefunded(a) if a.channel != Channel::Cash => {
                (&a.terminal_id, &a.batch_no, None, Some(a.amount))
            }
            _ => return,
        };
        let totals = self.batches.entry_ref(terminal.as_str()).or_default().entry_ref(batch.as_str()).or_default();
        if let Some((count, amount)) = debit {
            totals.debit_count = totals.debit_count.saturating_add_signed(count);
            totals.debit_amount += amount;
        }
        if let Some(amount) = credit {
            totals.credit_count += 1;
            totals.credit_amount += amount;
        }
    }

    /// The entries booked for the events at positions `from..to` (as far as the books have
    /// applied), read back from the accounts' histories instead of booked again: each holds
    /// the postings its event booked, in the order the accounts were first used (an entry's
    /// own order is not kept). An export of a day takes them here rather than replaying the
    /// history before it.
    pub fn entries_between(&self, from: u64, to: u64) -> Result<Vec<BalancedEntry>, LedgerError> {
        let postings = self.balances.postings_between(from, to.min(self.next_position));
        let mut entries = Vec::new();
        for event in postings.chunk_by(|a, b| a.0 == b.0) {
            let position = event[0].0;
            let postings = event
                .iter()
                .map(|&(_, slot, amount)| {
                    let (account, currency, _) = &self.balances.accounts[slot as usize];
                    Posting { account: account.clone(), amount, currency: *currency }
                })
                .collect();
            entries.push(BalancedEntry::new(position, postings)?);
        }
        Ok(entries)
    }

    /// The payment found by [`Projection::find_payment`] (so it exists).
    fn payment(&self, i: u32) -> PaymentBook {
        self.payments.get(i as usize).copied().unwrap_or_else(|| unreachable!("payment {i} was found, so it exists"))
    }

    fn entry_for(&mut self, position: u64, event: &Event) -> Result<Option<Lines>, LedgerError> {
        let invariant = |message: String| LedgerError::Invariant { position, message };
        let merchant_id = match event {
            Event::PaymentCaptured(s) => Some(s.merchant_id.as_str()),
            Event::PaymentVoided(a) | Event::PaymentRefunded(a) | Event::PaymentReversed(a) => {
                Some(a.merchant_id.as_str())
            }
            Event::MerchantSettled(m) => Some(m.merchant_id.as_str()),
            _ => None,
        };
        if let Some(m) = merchant_id
            && self.merchant_index.get(m).is_some_and(|&i| self.merchants[i as usize].closed)
        {
            return Err(invariant(format!("{} posts to merchant {m}, which is closed", event.event_type())));
        }
        match event {
            Event::MerchantClosed(c) => {
                let m = self.merchant(&c.merchant_id);
                self.merchants[m as usize].closed = true;
                Ok(None)
            }
            Event::BreakResolved(b) => {
                // Moved out of suspense in the currency it was parked in.
                let cur = b.currency;
                let suspense = self.balances.slot(&statement_account("assets:suspense", b.statement, None), cur);
                let target = match b.action {
                    ingest::event::ResolveAction::WriteOff => {
                        statement_account("expenses:write-offs", b.statement, None)
                    }
                    ingest::event::ResolveAction::Refund => Account::bank(),
                    ingest::event::ResolveAction::Book => {
                        statement_account("assets:clearing", b.statement, b.ledger_channel)
                    }
                };
                let target = self.balances.slot(&target, cur);
                Ok(Some(Lines::new(&[(suspense, -b.suspense_amount), (target, b.suspense_amount)])))
            }
            Event::ReconciliationCompleted(r) => {
                let matched = std::iter::once((Currency::Cny, &r.matched))
                    .chain(r.matched_by_currency.iter().map(|(c, m)| (*c, m)));
                let lines = self.recon_lines(r.channel, r.date, &r.classification_digest, matched, &[]);
                Ok((!lines.items().is_empty()).then_some(lines))
            }
            Event::ReconciliationBreaks(p) => {
                let lines =
                    self.recon_lines(p.channel, p.date, &p.classification_digest, std::iter::empty(), &p.breaks);
                Ok((!lines.items().is_empty()).then_some(lines))
            }
            Event::ContractSigned(c) => {
                let m = self.merchant(&c.merchant_id) as usize;
                self.merchants[m].fees = Some(c.fees.clone());
                self.merchants[m].cycle = Some(c.settlement_cycle);
                Ok(None)
            }
            Event::MerchantSettled(s) => {
                if s.net != s.gross - s.refunds - s.fees {
                    return Err(invariant(format!(
                        "settlement of {} on {} does not add up",
                        s.merchant_id, s.settlement_date
                    )));
                }
                let m = self.merchant(&s.merchant_id);
                if !self.settled.insert((m, s.settlement_date, s.currency)) {
                    return Err(invariant(format!("{} settled twice for {}", s.merchant_id, s.settlement_date)));
                }
                let paid = self
                    .paid
                    .entry((m, s.currency))
                    .or_insert(Paid { through: s.business_date, totals: DayTotals::default() });
                paid.through = paid.through.max(s.business_date);
                paid.totals.gross += s.gross;
                paid.totals.refunds += s.refunds;
                paid.totals.fees += s.fees;
                let payable = self.payable_slot(m, s.currency);
                let bank = self.balances.slot(&Account::bank(), s.currency);
                Ok(Some(Lines::new(&[(payable, s.net), (bank, -s.net)])))
            }
            Event::PaymentCaptured(s) => {
                let m = self.merchant(&s.merchant_id);
                let terms =
                    self.merchants[m as usize].fees.as_ref().and_then(|f| f.get(&s.channel)).ok_or_else(|| {
                        invariant(format!("sale {} has no contract terms for {}", s.txn_id, s.channel))
                    })?;
                let fee = fees::merchant_fee(terms, s.amount, s.currency);
                let (ids, payments) = (&self.payment_ids, &self.payments);
                let entry = self.payment_index.entry(
                    payment_hash(m, &s.txn_id),
                    |&j| is_payment(ids, payments, j, m, &s.txn_id),
                    |&j| payment_hash_of(ids, payments, j),
                );
                let hashbrown::hash_table::Entry::Vacant(vacant) = entry else {
                    return Err(invariant(format!("sale {} captured twice", s.txn_id)));
                };
                let date = s.at.date_naive();
                let book = PaymentBook {
                    id_start: self.payment_ids.push(&s.txn_id),
                    id_len: s.txn_id.len() as u32,
                    merchant: m,
                    date,
                    amount: s.amount,
                    fee,
                    channel: s.channel,
                    currency: s.currency,
                    cancelled: false,
                };
                vacant.insert(self.payments.push(book) as u32);
                if s.channel == Channel::Cash {
                    return Ok(None);
                }
                let day = self.days.entry((m, date, s.currency)).or_default();
                day.gross += s.amount;
                day.fees += fee;
                Ok(Some(self.capture_lines(&book, false)))
            }
            Event::PaymentVoided(a) | Event::PaymentReversed(a) => {
                let i = self.find_payment(a).ok_or_else(|| unknown_sale(position, a))?;
                let book = self.payment(i);
                if book.cancelled || self.refunds.contains_key(&i) {
                    return Err(invariant(format!(
                        "{} cancels sale {} after a cancel or refund",
                        a.txn_id, a.original_txn_id
                    )));
                }
                if let Some(b) = self.payments.get_mut(i as usize) {
                    b.cancelled = true;
                }
                self.payment_changes.push(i);
                if book.channel == Channel::Cash {
                    return Ok(None);
                }
                // The sale never happened: it leaves the day it was made.
                let day = self.days.entry((book.merchant, book.date, book.currency)).or_default();
                day.gross -= book.amount;
                day.fees -= book.fee;
                Ok(Some(self.capture_lines(&book, true)))
            }
            Event::PaymentRefunded(a) => {
                let i = self.find_payment(a).ok_or_else(|| unknown_sale(position, a))?;
                let book = self.payment(i);
                let so_far = self.refunds.get(&i).copied().unwrap_or_default();
                if book.cancelled || so_far.amount + a.amount > book.amount {
                    return Err(invariant(format!(
                        "refund {} of {} exceeds what remains of sale {}",
                        a.txn_id, a.amount, a.original_txn_id
                    )));
                }
                let fee_part =
                    fees::refunded_fee(book.fee, so_far.fee, book.amount, so_far.amount, a.amount, book.currency);
                self.refunds.insert(i, Refunded { amount: so_far.amount + a.amount, fee: so_far.fee + fee_part });
                self.payment_changes.push(i);
                if book.channel == Channel::Cash {
                    return Ok(None);
                }
                // A refund counts on the day it is made.
                let day = self.days.entry((book.merchant, a.at.date_naive(), book.currency)).or_default();
                day.refunds += a.amount;
                day.fees -= fee_part;
                let cur = book.currency;
                let payable = self.payable_slot(book.merchant, cur);
                let (clearing, mdr) = self.channel_slots(book.channel, cur);
                Ok(Some(Lines::new(&[(payable, a.amount - fee_part), (mdr, fee_part), (clearing, -a.amount)])))
            }
            _ => Ok(None),
        }
    }

    /// What part of a reconciliation run books (see the module doc): its matched sums, or a
    /// part of its breaks. The first event of another run for the same statement and date
    /// first takes back everything the previous run booked.
    fn recon_lines<'m>(
        &mut self,
        statement: StatementChannel,
        date: NaiveDate,
        digest: &str,
        matched: impl Iterator<Item = (Currency, &'m BTreeMap<Channel, ingest::event::ReconMatched>)>,
        breaks: &[ReconBreak],
    ) -> Lines {
        let mut want: BTreeMap<(Account, Currency), Decimal> = BTreeMap::new();
        let mut add = |account: Account, currency: Currency, amount: Decimal| {
            *want.entry((account, currency)).or_default() += amount
        };
        // Channels state fees to more places than money has (WeChat: 5): a day's fees are
        // booked rounded to the currency's minor unit (the module's rounding rule), as the
        // channel pays them.
        for (cur, sums) in matched {
            for (channel, m) in sums {
                let settled = m.payment_amount - m.refund_amount;
                let fee = fees::round(m.fees, cur);
                add(Account::clearing(*channel), cur, -settled);
                add(Account::channel_fees(*channel), cur, fee);
                add(Account::bank(), cur, settled - fee);
            }
        }
        let suspense = statement_account("assets:suspense", statement, None);
        for b in breaks {
            // Each break books in its own currency; a refund moves money the other way.
            let cur = b.currency;
            let minor = |d: Decimal| fees::round(d, cur);
            let way = if b.kind == LineKind::Refund { Decimal::NEGATIVE_ONE } else { Decimal::ONE };
            let (ours, expected) = (b.our_amount.unwrap_or_default(), minor(b.expected_fee.unwrap_or_default()));
            let (theirs, their_fee) = (b.their_amount.unwrap_or_default(), minor(b.their_fee.unwrap_or_default()));
            let clearing = b.ledger_channel.map(Account::clearing);
            let fees = statement_account("expenses:channel-fees", statement, b.ledger_channel);
            match b.outcome {
                // Money came for something we do not hold (or hold cancelled, or twice): it
                // waits in suspense.
                ReconOutcome::MissingInLedger | ReconOutcome::StatusMismatch | ReconOutcome::DuplicateInStatement => {
                    add(Account::bank(), cur, way * (theirs - their_fee));
                    add(fees, cur, way * their_fee);
                    add(suspense.clone(), cur, crate::recon::parked(b));
                }
                // Settled with another amount: ours leaves clearing, the difference waits.
                ReconOutcome::AmountMismatch => {
                    if let Some(clearing) = clearing {
                        add(clearing, cur, -way * ours);
                        add(Account::bank(), cur, way * (theirs - their_fee));
                        add(fees, cur, way * their_fee);
                        add(suspense.clone(), cur, crate::recon::parked(b));
                    }
                }
                // Settled, with another fee: the expected fee is booked, the difference waits.
                ReconOutcome::FeeMismatch => {
                    if let Some(clearing) = clearing {
                        add(clearing, cur, -way * ours);
                        add(Account::bank(), cur, way * (theirs - their_fee));
                        add(fees, cur, way * expected);
                        add(suspense.clone(), cur, crate::recon::parked(b));
                    }
                }
                // Never settled: out of clearing, into suspense until resolved.
                ReconOutcome::MissingInStatement => {
                    if let Some(clearing) = clearing {
                        add(clearing, cur, -way * ours);
                        add(suspense.clone(), cur, crate::recon::parked(b));
                    }
                }
                _ => {}
            }
        }
        let mut lines: BTreeMap<u32, Decimal> = BTreeMap::new();
        for ((account, currency), amount) in want {
            *lines.entry(self.balances.slot(&account, currency)).or_default() += amount;
        }
        let booked = self.recon_booked.entry((statement, date)).or_insert_with(|| (digest.to_owned(), Vec::new()));
        let mut entry = lines.clone();
        if booked.0 != digest {
            // Another run: what the previous one booked goes back first.
            for (slot, amount) in booked.1.drain(..) {
                *entry.entry(slot).or_default() -= amount;
            }
            booked.0 = digest.to_owned();
        }
        let mut total: BTreeMap<u32, Decimal> = booked.1.iter().copied().collect();
        for (slot, amount) in lines {
            *total.entry(slot).or_default() += amount;
        }
        booked.1 = total.into_iter().filter(|(_, a)| !a.is_zero()).collect();
        Lines::new(&entry.into_iter().collect::<Vec<_>>())
    }

    /// The postings of a sale, or of its cancellation (the same, each the other way).
    fn capture_lines(&mut self, book: &PaymentBook, cancel: bool) -> Lines {
        let cur = book.currency;
        let payable = self.payable_slot(book.merchant, cur);
        let (clearing, mdr) = self.channel_slots(book.channel, cur);
        let way = |amount: Decimal| if cancel { -amount } else { amount };
        Lines::new(&[(clearing, way(book.amount)), (payable, way(book.fee - book.amount)), (mdr, way(-book.fee))])
    }

    /// The entry for a channel's fee on a payment its statement settled: the channel keeps
    /// the fee out of what it pays, so clearing is reduced by it. Booked when a statement
    /// line is matched (the statement events arrive with reconciliation).
    pub fn channel_fee(
        position: u64,
        channel: Channel,
        fee: Decimal,
        currency: Currency,
    ) -> Result<BalancedEntry, EntryError> {
        BalancedEntry::new(
            position,
            vec![
                Posting { account: Account::channel_fees(channel), amount: fee, currency },
                Posting { account: Account::clearing(channel), amount: -fee, currency },
            ],
        )
    }

    /// The settlements due on `settlement_date` and not booked yet, in merchant order: per
    /// merchant and currency, everything of the business days up to the one the date covers
    /// (T+1: the day before; D0: the day) that earlier settlements did not pay — that day's
    /// business, and any event that arrived after its own day was settled (a late refund, a
    /// void of a settled sale). A merchant with no business that day and nothing left over is
    /// not due; nor is one with a settlement covering that day or a later one already (what is
    /// left over then waits for its next settlement).
    pub fn settlements_due(&self, settlement_date: NaiveDate) -> Vec<MerchantSettled> {
        // Per merchant and currency: the sums of its days up to the day covered, and whether
        // it had business on that day.
        let mut sums: FastMap<(u32, Currency), (NaiveDate, DayTotals, bool)> = FastMap::default();
        for (&(m, day, currency), totals) in &self.days {
            let business_date = match self.merchants[m as usize].cycle.unwrap_or(SettlementCycle::T1) {
                SettlementCycle::T1 => settlement_date.pred_opt(),
                SettlementCycle::D0 => Some(settlement_date),
            };
            let Some(business_date) = business_date.filter(|b| day <= *b) else { continue };
            let entry = sums.entry((m, currency)).or_insert((business_date, DayTotals::default(), false));
            entry.1.gross += totals.gross;
            entry.1.refunds += totals.refunds;
            entry.1.fees += totals.fees;
            entry.2 |= day == business_date;
        }
        let mut due = Vec::new();
        for ((m, currency), (business_date, sum, business_that_day)) in sums {
            if self.settled.contains(&(m, settlement_date, currency)) {
                continue;
            }
            let paid = self.paid.get(&(m, currency));
            if paid.is_some_and(|p| p.through >= business_date) {
                continue;
            }
            let paid = paid.map(|p| p.totals).unwrap_or_default();
            let scaled = |mut v: Decimal| {
                v.rescale(currency.scale());
                v
            };
            let (gross, refunds, fees) =
                (scaled(sum.gross - paid.gross), scaled(sum.refunds - paid.refunds), scaled(sum.fees - paid.fees));
            let net = scaled(gross - refunds - fees);
            if !business_that_day && gross.is_zero() && refunds.is_zero() && fees.is_zero() {
                continue;
            }
            due.push(MerchantSettled {
                merchant_id: self.merchants[m as usize].id.to_string(),
                settlement_date,
                business_date,
                gross,
                refunds,
                fees,
                net,
                currency,
            });
        }
        due.sort_by(|a, b| (&a.merchant_id, a.currency).cmp(&(&b.merchant_id, b.currency)));
        due
    }

    /// Each merchant's business of `date` (sales less voids and reversals, refunds, fees, net),
    /// in merchant order.
    pub fn day_totals(&self, date: NaiveDate) -> Vec<(String, Currency, Decimal, Decimal, Decimal, Decimal)> {
        let mut rows: Vec<_> = self
            .days
            .iter()
            .filter(|((_, d, _), _)| *d == date)
            .map(|(&(m, _, currency), t)| {
                let id = self.merchants[m as usize].id.to_string();
                (id, currency, t.gross, t.refunds, t.fees, t.gross - t.refunds - t.fees)
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }

    /// Whether the merchant's settlement for `settlement_date` in `currency` is booked.
    pub fn is_settled(&self, merchant: &str, settlement_date: NaiveDate, currency: Currency) -> bool {
        self.merchant_index.get(merchant).is_some_and(|&m| self.settled.contains(&(m, settlement_date, currency)))
    }

    /// Merchants whose payable is not zero in some currency (they may not close).
    pub fn merchants_with_payable(&self) -> std::collections::HashSet<String> {
        self.merchants
            .iter()
            .filter(|m| {
                self.balances.slots.get(&m.payable).is_some_and(|slots| {
                    slots.iter().any(|(_, i)| !self.balances.accounts[*i as usize].2.current().is_zero())
                })
            })
            .map(|m| m.id.to_string())
            .collect()
    }

    /// Checks the books: every currency's balances sum to zero (the trial balance balances).
    pub fn check_trial_balance(&self) -> Result<(), LedgerError> {
        let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
        for (_, currency, h) in &self.balances.accounts {
            *sums.entry(*currency).or_default() += h.current();
        }
        match sums.into_iter().find(|(_, s)| !s.is_zero()) {
            None => Ok(()),
            Some((currency, s)) => Err(LedgerError::Invariant {
                position: self.next_position,
                message: format!("trial balance is off by {s} {currency}"),
            }),
        }
    }

    /// The checks after a replay: the trial balance is zero and every balance is the sum of
    /// its postings.
    pub fn check(&self) -> Result<(), LedgerError> {
        self.check_trial_balance()?;
        self.balances.check().map_err(|message| LedgerError::Invariant { position: self.next_position, message })
    }
}

/// Most payments [`Projection::reserve`] makes room for at once.
pub const PAYMENTS_RESERVED_MAX: u64 = 1 << 25;

/// `<root>:<channel>`: the ledger channel's when known, else the statement's.
fn statement_account(root: &str, statement: StatementChannel, ledger: Option<Channel>) -> Account {
    let name = ledger.map_or(statement.as_str(), Channel::as_str);
    // Roots and channel names are fixed words: the path is always valid.
    Account::parse(&format!("{root}:{name}")).unwrap_or_else(|_| Account::bank())
}

/// A history's balance as of the time `window` and `counts` come from.
fn at_time(h: &History, window: crate::timeline::Window, counts: impl Fn(u64) -> bool + Copy) -> Decimal {
    let end = window.end(h.keeps_late());
    let late = if h.keeps_late() { h.late_from(end, counts) } else { Decimal::ZERO };
    h.before_window(window.from, end, counts) + late
}

/// The id of payment `i`.
pub(crate) fn payment_id<'a>(ids: &'a IdArena, payments: &Chunked<PaymentBook>, i: u32) -> Option<&'a str> {
    let b = payments.get(i as usize)?;
    ids.get(b.id_start, b.id_len as usize)
}

/// Where a payment of merchant `merchant` (its index) named `txn_id` hashes in the payment index.
fn payment_hash(merchant: u32, txn_id: &str) -> u64 {
    xxh3_64_with_seed(txn_id.as_bytes(), u64::from(merchant))
}

/// [`payment_hash`] of payment `i`.
fn payment_hash_of(ids: &IdArena, payments: &Chunked<PaymentBook>, i: u32) -> u64 {
    let merchant = payments.get(i as usize).map_or(0, |b| b.merchant);
    payment_hash(merchant, payment_id(ids, payments, i).unwrap_or_default())
}

/// Whether payment `i` is merchant `merchant`'s `txn_id`.
fn is_payment(ids: &IdArena, payments: &Chunked<PaymentBook>, i: u32, merchant: u32, txn_id: &str) -> bool {
    payments.get(i as usize).is_some_and(|b| b.merchant == merchant) && payment_id(ids, payments, i) == Some(txn_id)
}

/// BLAKE3 over `account currency balance` lines, hex.
pub fn digest_rows(rows: &[(Account, Currency, Decimal)]) -> String {
    let mut hasher = blake3::Hasher::new();
    for (account, currency, balance) in rows {
        hasher.update(format!("{account} {currency} {balance}\n").as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

fn unknown_sale(position: u64, a: &PaymentAdjustment) -> LedgerError {
    LedgerError::Invariant {
        position,
        message: format!("{} refers to sale {}, which was never booked", a.txn_id, a.original_txn_id),
    }
}

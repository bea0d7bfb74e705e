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
//!
//! The fee is the merchant's contract in force when the sale is booked ([`crate::fees`]); a
//! refund gives back the fee in proportion, and the refund that completes the payment gives
//! back exactly the rest, so a fully refunded payment nets to zero on every account.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use ingest::event::{Channel, Event, FeeTerms, MerchantSettled, PaymentAdjustment, SettlementCycle};
use ingest::money::Currency;
use rust_decimal::Decimal;

use crate::entry::{Account, BalancedEntry, EntryError, Posting};
use crate::fees;

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

/// What the books remember of a payment, to book what happens to it later.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PaymentBook {
    merchant: String,
    date: NaiveDate,
    payable: Account,
    channel: Channel,
    currency: Currency,
    amount: Decimal,
    fee: Decimal,
    refunded: Decimal,
    fee_returned: Decimal,
    cancelled: bool,
}

/// An account's balance after each position that changed it, in position order.
type History = Vec<(u64, Decimal)>;

/// Balances of every account, now and at every position where they changed.
#[derive(Debug, Clone, Default)]
pub struct Balances {
    /// Where each account's histories are, per currency (looked up without cloning the key).
    slots: HashMap<Account, Vec<(Currency, usize)>>,
    /// Per slot: the account, its currency, and its history.
    history: Vec<(Account, Currency, History)>,
}

impl Balances {
    fn slot(&self, account: &Account, currency: Currency) -> Option<usize> {
        self.slots.get(account)?.iter().find(|(c, _)| *c == currency).map(|(_, i)| *i)
    }

    fn post(&mut self, position: u64, p: &Posting) {
        let slot = match self.slot(&p.account, p.currency) {
            Some(i) => i,
            None => {
                self.history.push((p.account.clone(), p.currency, Vec::new()));
                let i = self.history.len() - 1;
                self.slots.entry(p.account.clone()).or_default().push((p.currency, i));
                i
            }
        };
        let history = &mut self.history[slot].2;
        let before = history.last().map_or(Decimal::ZERO, |(_, b)| *b);
        match history.last_mut() {
            // Two postings of one entry to one account: one point in its history.
            Some((at, balance)) if *at == position => *balance = before + p.amount,
            _ => history.push((position, before + p.amount)),
        }
    }

    /// The balance of `account` in `currency` after every event before position `until`
    /// (`u64::MAX` for now). A binary search: no replay.
    pub fn balance(&self, account: &Account, currency: Currency, until: u64) -> Decimal {
        let Some(slot) = self.slot(account, currency) else { return Decimal::ZERO };
        let history = &self.history[slot].2;
        let i = history.partition_point(|(at, _)| *at < until);
        if i == 0 { Decimal::ZERO } else { history[i - 1].1 }
    }

    /// Every account's balance before position `until`, accounts in path order; zero
    /// balances of accounts that were used are kept (a trial balance lists them).
    pub fn trial_balance(&self, until: u64) -> Vec<(Account, Currency, Decimal)> {
        let mut rows: Vec<_> = self
            .history
            .iter()
            .filter(|(_, _, h)| h.first().is_some_and(|(at, _)| *at < until))
            .map(|(account, currency, _)| (account.clone(), *currency, self.balance(account, *currency, until)))
            .collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }
}

/// A merchant's business day, for settlement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DayTotals {
    gross: Decimal,
    refunds: Decimal,
    fees: Decimal,
}

/// The double-entry projection of the event log.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    contracts: HashMap<String, BTreeMap<Channel, FeeTerms>>,
    payments: HashMap<String, PaymentBook>,
    /// Merchants whose relationship ended: nothing may be posted for them any more.
    closed: std::collections::HashSet<String>,
    /// Settlement cycle of each merchant's contract in force.
    cycles: HashMap<String, SettlementCycle>,
    /// What each merchant's business day brought, per currency, for settlement.
    days: BTreeMap<(String, NaiveDate, Currency), DayTotals>,
    /// Merchant, settlement date and currency of every settlement booked.
    settled: std::collections::HashSet<(String, NaiveDate, Currency)>,
    /// Accounts made once and shared: each merchant's payable, each channel's accounts.
    payables: HashMap<String, Account>,
    channel_accounts: HashMap<Channel, (Account, Account)>,
    balances: Balances,
    next_position: u64,
    entries: u64,
}

impl Projection {
    /// The balances.
    pub fn balances(&self) -> &Balances {
        &self.balances
    }

    /// The position of the next event the projection expects (events applied so far).
    pub fn position(&self) -> u64 {
        self.next_position
    }

    /// Entries booked so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Applies the event at `position`, returning the entry it books, if any.
    pub fn apply(&mut self, position: u64, event: &Event) -> Result<Option<BalancedEntry>, LedgerError> {
        if position != self.next_position {
            return Err(LedgerError::OutOfOrder { expected: self.next_position, got: position });
        }
        let entry = self.entry_for(position, event)?;
        if let Some(entry) = &entry {
            for p in entry.postings() {
                self.balances.post(position, p);
            }
            self.entries += 1;
        }
        self.next_position += 1;
        Ok(entry)
    }

    /// Passes over the event at `position` without booking it (a replay to a business time
    /// leaves out events that happened after it).
    pub fn skip(&mut self, position: u64) -> Result<(), LedgerError> {
        if position != self.next_position {
            return Err(LedgerError::OutOfOrder { expected: self.next_position, got: position });
        }
        self.next_position += 1;
        Ok(())
    }

    /// A digest of every balance (BLAKE3 over `account currency balance` lines in account
    /// order, hex): two books with the same digest hold the same balances.
    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for (account, currency, balance) in self.balances.trial_balance(u64::MAX) {
            hasher.update(format!("{account} {currency} {balance}\n").as_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }

    fn entry_for(&mut self, position: u64, event: &Event) -> Result<Option<BalancedEntry>, LedgerError> {
        let invariant = |message: String| LedgerError::Invariant { position, message };
        let merchant = match event {
            Event::PaymentCaptured(s) => Some(&s.merchant_id),
            Event::PaymentVoided(a) | Event::PaymentRefunded(a) | Event::PaymentReversed(a) => Some(&a.merchant_id),
            Event::MerchantSettled(m) => Some(&m.merchant_id),
            _ => None,
        };
        if let Some(m) = merchant
            && self.closed.contains(m)
        {
            return Err(invariant(format!("{} posts to merchant {m}, which is closed", event.event_type())));
        }
        match event {
            Event::MerchantClosed(c) => {
                self.closed.insert(c.merchant_id.clone());
                Ok(None)
            }
            Event::ContractSigned(c) => {
                self.contracts.insert(c.merchant_id.clone(), c.fees.clone());
                self.cycles.insert(c.merchant_id.clone(), c.settlement_cycle);
                Ok(None)
            }
            Event::MerchantSettled(m) => {
                if m.net != m.gross - m.refunds - m.fees {
                    return Err(invariant(format!(
                        "settlement of {} on {} does not add up",
                        m.merchant_id, m.settlement_date
                    )));
                }
                if !self.settled.insert((m.merchant_id.clone(), m.settlement_date, m.currency)) {
                    return Err(invariant(format!("{} settled twice for {}", m.merchant_id, m.settlement_date)));
                }
                let payable = self
                    .payables
                    .entry(m.merchant_id.clone())
                    .or_insert_with(|| Account::payable(&m.merchant_id))
                    .clone();
                let postings = vec![
                    Posting { account: payable, amount: m.net, currency: m.currency },
                    Posting { account: Account::bank(), amount: -m.net, currency: m.currency },
                ];
                Ok(Some(BalancedEntry::new(position, postings)?))
            }
            Event::PaymentCaptured(s) => {
                let terms =
                    self.contracts.get(&s.merchant_id).and_then(|f| f.get(&s.channel)).ok_or_else(|| {
                        invariant(format!("sale {} has no contract terms for {}", s.txn_id, s.channel))
                    })?;
                let fee = fees::merchant_fee(terms, s.amount, s.currency);
                let payable = self
                    .payables
                    .entry(s.merchant_id.clone())
                    .or_insert_with(|| Account::payable(&s.merchant_id))
                    .clone();
                self.channel_accounts
                    .entry(s.channel)
                    .or_insert_with(|| (Account::clearing(s.channel), Account::mdr(s.channel)));
                let date = s.at.date_naive();
                if s.channel != Channel::Cash {
                    let day = self.days.entry((s.merchant_id.clone(), date, s.currency)).or_default();
                    day.gross += s.amount;
                    day.fees += fee;
                }
                let book = PaymentBook {
                    merchant: s.merchant_id.clone(),
                    date,
                    payable,
                    channel: s.channel,
                    currency: s.currency,
                    amount: s.amount,
                    fee,
                    refunded: Decimal::ZERO,
                    fee_returned: Decimal::ZERO,
                    cancelled: false,
                };
                let entry = capture_postings(&book, &self.channel_accounts, Decimal::ONE);
                if self.payments.insert(s.txn_id.clone(), book).is_some() {
                    return Err(invariant(format!("sale {} captured twice", s.txn_id)));
                }
                Ok(entry.map(|p| BalancedEntry::new(position, p)).transpose()?)
            }
            Event::PaymentVoided(a) | Event::PaymentReversed(a) => {
                let accounts = &self.channel_accounts;
                let book = self.payments.get_mut(&a.original_txn_id).ok_or_else(|| unknown_sale(position, a))?;
                if book.cancelled || !book.refunded.is_zero() {
                    return Err(invariant(format!(
                        "{} cancels sale {} after a cancel or refund",
                        a.txn_id, a.original_txn_id
                    )));
                }
                book.cancelled = true;
                if book.channel != Channel::Cash {
                    // The sale never happened: it leaves the day it was made.
                    let day = self.days.entry((book.merchant.clone(), book.date, book.currency)).or_default();
                    day.gross -= book.amount;
                    day.fees -= book.fee;
                }
                let entry = capture_postings(book, accounts, Decimal::NEGATIVE_ONE);
                Ok(entry.map(|p| BalancedEntry::new(position, p)).transpose()?)
            }
            Event::PaymentRefunded(a) => {
                let book = self.payments.get_mut(&a.original_txn_id).ok_or_else(|| unknown_sale(position, a))?;
                if book.cancelled || book.refunded + a.amount > book.amount {
                    return Err(invariant(format!(
                        "refund {} of {} exceeds what remains of sale {}",
                        a.txn_id, a.amount, a.original_txn_id
                    )));
                }
                let fee_part = fees::refunded_fee(
                    book.fee,
                    book.fee_returned,
                    book.amount,
                    book.refunded,
                    a.amount,
                    book.currency,
                );
                book.refunded += a.amount;
                book.fee_returned += fee_part;
                if book.channel == Channel::Cash {
                    return Ok(None);
                }
                // A refund counts on the day it is made.
                let day = self.days.entry((book.merchant.clone(), a.at.date_naive(), book.currency)).or_default();
                day.refunds += a.amount;
                day.fees -= fee_part;
                let cur = book.currency;
                let (clearing, mdr) = channel_pair(&self.channel_accounts, book.channel);
                let postings = vec![
                    Posting { account: book.payable.clone(), amount: a.amount - fee_part, currency: cur },
                    Posting { account: mdr, amount: fee_part, currency: cur },
                    Posting { account: clearing, amount: -a.amount, currency: cur },
                ];
                Ok(Some(BalancedEntry::new(position, postings)?))
            }
            _ => Ok(None),
        }
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

    /// The settlements due on `settlement_date` and not booked yet, one per merchant and
    /// currency with business on the day it covers (T+1: the day before; D0: the day).
    pub fn settlements_due(&self, settlement_date: NaiveDate) -> Vec<MerchantSettled> {
        let mut due = Vec::new();
        for ((merchant, day, currency), totals) in &self.days {
            let cycle = self.cycles.get(merchant).copied().unwrap_or(SettlementCycle::T1);
            let business_date = match cycle {
                SettlementCycle::T1 => settlement_date.pred_opt(),
                SettlementCycle::D0 => Some(settlement_date),
            };
            if Some(*day) != business_date || self.settled.contains(&(merchant.clone(), settlement_date, *currency)) {
                continue;
            }
            let scaled = |mut v: Decimal| {
                v.rescale(currency.scale());
                v
            };
            due.push(MerchantSettled {
                merchant_id: merchant.clone(),
                settlement_date,
                business_date: *day,
                gross: scaled(totals.gross),
                refunds: scaled(totals.refunds),
                fees: scaled(totals.fees),
                net: scaled(totals.gross - totals.refunds - totals.fees),
                currency: *currency,
            });
        }
        due
    }

    /// Whether the merchant's settlement for `settlement_date` in `currency` is booked.
    pub fn is_settled(&self, merchant: &str, settlement_date: NaiveDate, currency: Currency) -> bool {
        self.settled.contains(&(merchant.to_owned(), settlement_date, currency))
    }

    /// Checks the books: every currency's balances sum to zero (the trial balance balances).
    pub fn check_trial_balance(&self) -> Result<(), LedgerError> {
        let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
        for (_, currency, balance) in self.balances.trial_balance(u64::MAX) {
            *sums.entry(currency).or_default() += balance;
        }
        match sums.into_iter().find(|(_, s)| !s.is_zero()) {
            None => Ok(()),
            Some((currency, s)) => Err(LedgerError::Invariant {
                position: self.next_position,
                message: format!("trial balance is off by {s} {currency}"),
            }),
        }
    }
}

fn unknown_sale(position: u64, a: &PaymentAdjustment) -> LedgerError {
    LedgerError::Invariant {
        position,
        message: format!("{} refers to sale {}, which was never booked", a.txn_id, a.original_txn_id),
    }
}

/// A channel's clearing and fee income accounts, from the cache (made here if missing).
fn channel_pair(cache: &HashMap<Channel, (Account, Account)>, channel: Channel) -> (Account, Account) {
    cache.get(&channel).cloned().unwrap_or_else(|| (Account::clearing(channel), Account::mdr(channel)))
}

/// The postings of a sale (`sign` 1) or of its cancellation (`sign` −1); none for cash.
fn capture_postings(
    book: &PaymentBook,
    accounts: &HashMap<Channel, (Account, Account)>,
    sign: Decimal,
) -> Option<Vec<Posting>> {
    if book.channel == Channel::Cash {
        return None;
    }
    let cur = book.currency;
    let (clearing, mdr) = channel_pair(accounts, book.channel);
    Some(vec![
        Posting { account: clearing, amount: sign * book.amount, currency: cur },
        Posting { account: book.payable.clone(), amount: -sign * (book.amount - book.fee), currency: cur },
        Posting { account: mdr, amount: -sign * book.fee, currency: cur },
    ])
}

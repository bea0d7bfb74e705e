//! The books: balances and the trial balance (now, as of a position or a business time), an
//! account's postings a page at a time, a replay to any point, the journal for ledger-cli and
//! beancount.

use std::io::Write;

use ingest::money::Currency;
use ledger::entry::Account;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use crate::failure::OutputFailure;
use crate::{App, AsOf, Failure, money};

/// Most postings one page of an account's history holds.
pub const HISTORY_PAGE_MAX: usize = 10_000;

/// One account's balance in one currency (debits positive, credits negative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceRow {
    /// The account's path.
    pub account: String,
    /// The currency.
    pub currency: Currency,
    /// The balance, at least at the currency's scale.
    pub balance: Decimal,
}

/// Balances as of a point of the books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// The point asked for.
    pub as_of: AsOf,
    /// Events the books had applied when they answered.
    pub position: u64,
    /// The rows, accounts in path order.
    pub rows: Vec<BalanceRow>,
}

impl Balances {
    /// The position the balances stand at: every event before it is counted (for a business
    /// time, the events recorded so far).
    pub fn as_of_position(&self) -> u64 {
        match self.as_of {
            AsOf::Position(p) => p.min(self.position),
            AsOf::Now | AsOf::Time(_) => self.position,
        }
    }
}

/// One posting of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostingRow {
    /// The event's position.
    pub position: u64,
    /// The event's type.
    pub event_type: String,
    /// What it is about (a txn id, a merchant, a break).
    pub reference: String,
    /// When it happened (RFC 3339).
    pub occurred_at: String,
    /// The posting (debit positive).
    pub amount: Decimal,
    /// The balance after it.
    pub balance: Decimal,
}

/// A page of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The account's path.
    pub account: String,
    /// The currency.
    pub currency: Currency,
    /// The postings, in position order.
    pub postings: Vec<PostingRow>,
    /// The following page's `from`, when there is more.
    pub next: Option<u64>,
}

/// A replay's books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// Every balance of the replayed books.
    pub rows: Vec<BalanceRow>,
    /// Events read.
    pub events_read: u64,
    /// Entries booked.
    pub entries: u64,
    /// Digest of every balance: two replays with the same digest hold the same books.
    pub digest: String,
}

/// A journal's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// ledger-cli and hledger.
    Ledger,
    /// beancount.
    Beancount,
}

fn parse_account(text: &str) -> Result<Account, Failure> {
    Account::parse(text).map_err(|e| Failure::invalid("invalid_account", e.to_string()).field("account"))
}

fn rows(rows: Vec<(Account, Currency, Decimal)>) -> Vec<BalanceRow> {
    rows.into_iter()
        .map(|(a, c, b)| BalanceRow { account: a.path().to_owned(), currency: c, balance: money(b, c) })
        .collect()
}

impl App {
    /// One account's balance as of a point: in `currency`, or in every currency it was posted
    /// in (a CNY zero for an account never used).
    pub async fn balance(&self, account: &str, currency: Option<Currency>, as_of: AsOf) -> Result<Balances, Failure> {
        let parsed = parse_account(account)?;
        let row = |c: Currency, amount| BalanceRow {
            account: parsed.path().to_owned(),
            currency: c,
            balance: money(amount, c),
        };
        if matches!(as_of, AsOf::Now)
            && let Some(summary) = self.summary_now().await
        {
            let rows = currencies(currency, |c| summary.holds(&parsed, c))
                .into_iter()
                .map(|c| row(c, summary.balance(&parsed, c)))
                .collect();
            return Ok(Balances { as_of, position: summary.position, rows });
        }
        let books = self.books().await?;
        let rows = currencies(currency, |c| books.balances().history(&parsed, c).is_some())
            .into_iter()
            .map(|c| {
                let amount = match as_of {
                    AsOf::Now => books.balances().balance(&parsed, c, u64::MAX),
                    AsOf::Position(p) => books.balances().balance(&parsed, c, p),
                    AsOf::Time(t) => books.balance_at_time(&parsed, c, t.timestamp_micros()),
                };
                row(c, amount)
            })
            .collect();
        Ok(Balances { as_of, position: books.position(), rows })
    }

    /// Every account's balance as of a point; they sum to zero per currency.
    pub async fn trial_balance(&self, as_of: AsOf) -> Result<Balances, Failure> {
        if matches!(as_of, AsOf::Now)
            && let Some(summary) = self.summary_now().await
        {
            return Ok(Balances { as_of, position: summary.position, rows: rows(summary.trial_balance()) });
        }
        let books = self.books().await?;
        let all = match as_of {
            AsOf::Now => books.balances().trial_balance(u64::MAX),
            AsOf::Position(p) => books.balances().trial_balance(p),
            AsOf::Time(t) => books.trial_balance_at_time(t.timestamp_micros()),
        };
        Ok(Balances { as_of, position: books.position(), rows: rows(all) })
    }

    /// An account's postings from position `from` on, at most `limit` (1 to
    /// [`HISTORY_PAGE_MAX`]).
    pub async fn history(
        &self,
        account: &str,
        currency: Currency,
        from: u64,
        limit: usize,
    ) -> Result<HistoryPage, Failure> {
        use ingest::store::EventStore;
        let parsed = parse_account(account)?;
        if limit == 0 || limit > HISTORY_PAGE_MAX {
            return Err(Failure::invalid(
                "invalid_limit",
                format!("limit {limit} is out of range: 1 to {HISTORY_PAGE_MAX} postings a page"),
            )
            .field("limit"));
        }
        let mut points: Vec<_> = {
            let books = self.books().await?;
            books
                .balances()
                .history(&parsed, currency)
                .map(|h| h.points_from(from).take(limit + 1).collect())
                .unwrap_or_default()
        };
        let next = (points.len() > limit).then(|| points.pop().map(|p| p.position)).flatten();
        let mut postings = Vec::with_capacity(points.len());
        for p in points {
            let stored = self.store.read_all(p.position, 1).await?;
            let e = stored.first().ok_or_else(|| Failure::internal("a posting's event is missing from the log"))?;
            let event = ingest::event::Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                .map_err(|e| Failure::internal(e.to_string()))?;
            postings.push(PostingRow {
                position: p.position,
                event_type: event.event_type().to_owned(),
                reference: event.reference(),
                occurred_at: event.occurred_at().to_rfc3339(),
                amount: money(p.amount, currency),
                balance: money(p.balance, currency),
            });
        }
        Ok(HistoryPage { account: parsed.path().to_owned(), currency, postings, next })
    }

    /// Rebuilds the books in memory up to a point (not the books this app keeps).
    pub async fn replay(&self, until: AsOf) -> Result<Replayed, Failure> {
        Ok(match until {
            AsOf::Now | AsOf::Position(_) => {
                let position = if let AsOf::Position(p) = until { p } else { u64::MAX };
                let books = ledger::replay(&*self.store, position).await?;
                Replayed {
                    rows: rows(books.balances().trial_balance(u64::MAX)),
                    events_read: books.position(),
                    entries: books.entries(),
                    digest: books.digest(),
                }
            }
            AsOf::Time(t) => {
                let r = ledger::replay_until_time(&*self.store, t).await?;
                Replayed { rows: rows(r.rows), events_read: r.events_read, entries: r.entries, digest: r.digest }
            }
        })
    }

    /// Writes the books as a journal to `out`, up to a point.
    pub async fn journal(&self, kind: JournalKind, until: AsOf, out: &mut impl Write) -> Result<(), OutputFailure> {
        use ledger::journal::{JournalFormat, write_journal, write_journal_to_time};
        let format = match kind {
            JournalKind::Ledger => JournalFormat::Ledger,
            JournalKind::Beancount => JournalFormat::Beancount,
        };
        let written = match until {
            AsOf::Time(t) => write_journal_to_time(&*self.store, t.timestamp_micros(), format, out).await,
            AsOf::Position(p) => write_journal(&*self.store, p, format, out).await,
            AsOf::Now => write_journal(&*self.store, u64::MAX, format, out).await,
        };
        match written {
            Ok(_) => out.flush().map_err(OutputFailure::Output),
            Err(ledger::journal::JournalError::Io(e)) => Err(OutputFailure::Output(e)),
            Err(ledger::journal::JournalError::Replay(e)) => Err(OutputFailure::Failed(e.into())),
        }
    }
}

/// The currencies a balance is given in: the one asked for, else every currency the books hold
/// the account in (CNY when none).
fn currencies(asked: Option<Currency>, held: impl Fn(Currency) -> bool) -> Vec<Currency> {
    if let Some(c) = asked {
        return vec![c];
    }
    let used: Vec<Currency> = Currency::ALL.into_iter().filter(|c| held(*c)).collect();
    if used.is_empty() { vec![Currency::Cny] } else { used }
}

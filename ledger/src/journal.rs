//! The books as a plain-text journal that ledger-cli or beancount accept unchanged and that
//! gives exactly posledger's balances.

use std::collections::HashSet;
use std::io::{self, Write};

use ingest::event::Event;
use ingest::store::EventStore;

use crate::entry::{Account, BalancedEntry};
use crate::{Projection, ReplayError};

/// Which plain-text accounting tool the journal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalFormat {
    /// ledger-cli (and hledger).
    Ledger,
    /// beancount.
    Beancount,
}

/// Why a journal could not be written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Booking the log failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Writing the journal failed.
    #[error("writing the journal: {0}")]
    Io(#[from] io::Error),
}

/// The account's name for beancount: capitalised components of letters, digits and dashes.
pub fn beancount_account(account: &Account) -> String {
    account
        .path()
        .split(':')
        .map(|part| {
            let part = part.replace(['_', '.'], "-");
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// Books every event before `until` and writes each entry as a transaction dated by the
/// event's business date (in its own UTC offset). Returns the books.
pub async fn write_journal<S: EventStore>(
    store: &S,
    until: u64,
    format: JournalFormat,
    out: &mut impl Write,
) -> Result<Projection, JournalError> {
    write_journal_where(store, until, format, out, |_| true).await
}

/// Like [`write_journal`] over the whole log, writing only the entries of events that
/// happened at or before business time `t` (µs since the epoch): the journal of the books as
/// of that time (see [`Projection::balance_at_time`]).
pub async fn write_journal_to_time<S: EventStore>(
    store: &S,
    t: i64,
    format: JournalFormat,
    out: &mut impl Write,
) -> Result<Projection, JournalError> {
    write_journal_where(store, u64::MAX, format, out, |event| event.occurred_at().timestamp_micros() <= t).await
}

/// Books every event before `until`, writing the entries of the events `keep` keeps.
async fn write_journal_where<S: EventStore>(
    store: &S,
    until: u64,
    format: JournalFormat,
    out: &mut impl Write,
    keep: impl Fn(&Event) -> bool,
) -> Result<Projection, JournalError> {
    let mut writer = JournalWriter::new(format);
    let mut books = Projection::default();
    crate::catch_up_with(store, &mut books, until, |event, entry| -> Result<(), JournalError> {
        if keep(event) {
            writer.write(out, event, entry)?;
        }
        Ok(())
    })
    .await?;
    books.check().map_err(ReplayError::from)?;
    Ok(books)
}

/// Writes entries as journal transactions, one after another, opening beancount accounts
/// before their first use.
pub struct JournalWriter {
    format: JournalFormat,
    opened: HashSet<Account>,
}

impl JournalWriter {
    /// A writer for `format`.
    pub fn new(format: JournalFormat) -> Self {
        JournalWriter { format, opened: HashSet::new() }
    }

    /// Writes the entry `event` booked, dated by the event's business date (in its own UTC
    /// offset).
    pub fn write(&mut self, out: &mut impl Write, event: &Event, entry: &BalancedEntry) -> io::Result<()> {
        let date = event.occurred_at().date_naive();
        let what = format!("{} {}", event.event_type(), event.reference());
        match self.format {
            JournalFormat::Ledger => {
                writeln!(out, "{date} * {what}")?;
                writeln!(out, "    ; position: {}", entry.position())?;
                for p in entry.postings() {
                    writeln!(out, "    {}    {} {}", p.account, p.currency, p.amount)?;
                }
            }
            JournalFormat::Beancount => {
                for p in entry.postings() {
                    if self.opened.insert(p.account.clone()) {
                        writeln!(out, "{date} open {}", beancount_account(&p.account))?;
                    }
                }
                writeln!(out, "{date} * \"{}\"", what.replace('"', "'"))?;
                writeln!(out, "  position: \"{}\"", entry.position())?;
                for p in entry.postings() {
                    writeln!(out, "  {}    {} {}", beancount_account(&p.account), p.amount, p.currency)?;
                }
            }
        }
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beancount_names_are_capitalised_and_dashed() {
        let a = Account::parse("liabilities:merchant:M000001:payable").expect("account");
        assert_eq!(beancount_account(&a), "Liabilities:Merchant:M000001:Payable");
        let c = Account::parse("assets:clearing:unionpay_card").expect("account");
        assert_eq!(beancount_account(&c), "Assets:Clearing:Unionpay-card");
    }
}

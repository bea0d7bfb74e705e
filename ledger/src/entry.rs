//! Accounts, postings and balanced journal entries.

use std::fmt;

use ingest::event::Channel;
use ingest::money::Currency;
use rust_decimal::Decimal;

/// An account of the chart (design.md §4), named by its path. Shared, so a clone is cheap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Account(std::sync::Arc<str>);

impl Account {
    fn new(path: String) -> Self {
        Account(path.into())
    }

    /// `assets:clearing:<channel>`: owed to us by the channel for captured payments.
    pub fn clearing(channel: Channel) -> Self {
        Account::new(format!("assets:clearing:{channel}"))
    }
    /// `assets:bank:settlement`: money received from channels and paid to merchants.
    pub fn bank() -> Self {
        Account::new("assets:bank:settlement".to_owned())
    }
    /// `liabilities:merchant:<id>:payable`: what we owe the merchant.
    pub fn payable(merchant: &str) -> Self {
        Account::new(format!("liabilities:merchant:{merchant}:payable"))
    }
    /// `income:mdr:<channel>`: the merchant discount, our fee.
    pub fn mdr(channel: Channel) -> Self {
        Account::new(format!("income:mdr:{channel}"))
    }
    /// `expenses:channel-fees:<channel>`: what the channel charged us.
    pub fn channel_fees(channel: Channel) -> Self {
        Account::new(format!("expenses:channel-fees:{channel}"))
    }
    /// `assets:suspense:<channel>`: unmatched items parked until resolved.
    pub fn suspense(channel: Channel) -> Self {
        Account::new(format!("assets:suspense:{channel}"))
    }
    /// An account named by its path as typed by a user; it must have a known root.
    pub fn parse(path: &str) -> Result<Self, String> {
        let root = path.split(':').next().unwrap_or_default();
        let parts_ok = path
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')));
        if !matches!(root, "assets" | "liabilities" | "income" | "expenses" | "equity") || !parts_ok {
            return Err(format!(
                "{path:?} is not an account path like assets:clearing:wechat or liabilities:merchant:M1:payable"
            ));
        }
        Ok(Account::new(path.to_owned()))
    }
    /// The path.
    pub fn path(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of an entry: a signed amount on an account (debit positive, credit negative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// The account.
    pub account: Account,
    /// Debit (positive) or credit (negative), at the currency's scale.
    pub amount: Decimal,
    /// Currency.
    pub currency: Currency,
}

/// Why an entry could not be made: always a bug in a posting rule, never bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The postings do not sum to zero in some currency.
    #[error("entry at position {position} does not balance in {currency}: off by {difference}")]
    Unbalanced {
        /// Position of the event.
        position: u64,
        /// Currency.
        currency: Currency,
        /// Sum of the postings.
        difference: Decimal,
    },
    /// An amount has more decimal places than its currency.
    #[error("entry at position {position} posts {amount} {currency} to {account}: too many decimal places")]
    OverScale {
        /// Position of the event.
        position: u64,
        /// Account.
        account: Account,
        /// Amount.
        amount: Decimal,
        /// Currency.
        currency: Currency,
    },
}

/// A journal entry whose postings balance per currency; only [`BalancedEntry::new`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancedEntry {
    position: u64,
    postings: Vec<Posting>,
}

impl BalancedEntry {
    /// Checks the postings (zero postings are dropped) and makes the entry for the event at
    /// `position`.
    pub fn new(position: u64, postings: Vec<Posting>) -> Result<Self, EntryError> {
        let postings: Vec<Posting> = postings.into_iter().filter(|p| !p.amount.is_zero()).collect();
        // Sums per currency; an entry has a handful of postings in one or two currencies.
        let mut sums: Vec<(Currency, Decimal)> = Vec::new();
        for p in &postings {
            if p.amount.scale() > p.currency.scale() {
                return Err(EntryError::OverScale {
                    position,
                    account: p.account.clone(),
                    amount: p.amount,
                    currency: p.currency,
                });
            }
            match sums.iter_mut().find(|(c, _)| *c == p.currency) {
                Some((_, sum)) => *sum += p.amount,
                None => sums.push((p.currency, p.amount)),
            }
        }
        if let Some((currency, difference)) = sums.into_iter().find(|(_, s)| !s.is_zero()) {
            return Err(EntryError::Unbalanced { position, currency, difference });
        }
        Ok(BalancedEntry { position, postings })
    }

    /// Position of the event the entry books.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The postings, none zero.
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(account: Account, cents: i64) -> Posting {
        Posting { account, amount: Decimal::new(cents, 2), currency: Currency::Cny }
    }

    #[test]
    fn only_balanced_entries_are_made() {
        let ok = BalancedEntry::new(
            1,
            vec![
                p(Account::clearing(Channel::Wechat), 10000),
                p(Account::payable("M1"), -10000),
                p(Account::bank(), 0),
            ],
        )
        .expect("balanced");
        assert_eq!(ok.postings().len(), 2, "zero postings are dropped");
        let err = BalancedEntry::new(2, vec![p(Account::bank(), 1), p(Account::payable("M1"), -2)]).expect_err("off");
        assert!(matches!(err, EntryError::Unbalanced { difference, .. } if difference == Decimal::new(-1, 2)));
        let over = Posting { account: Account::bank(), amount: Decimal::new(1, 3), currency: Currency::Cny };
        assert!(matches!(BalancedEntry::new(3, vec![over]), Err(EntryError::OverScale { .. })));
    }

    #[test]
    fn account_paths_are_checked() {
        assert!(Account::parse("liabilities:merchant:M000001:payable").is_ok());
        assert!(Account::parse("cash").is_err());
        assert!(Account::parse("assets::x").is_err());
    }
}

//! Merchants and terminals as the events describe them (the write model's registry): status,
//! fees in force, terminals. A caller scoped to one merchant (a terminal key) sees only that
//! merchant and its terminals, and is told alike of a terminal that does not exist and of
//! another merchant's, so it cannot learn which terminals exist.

use std::collections::BTreeMap;

use ingest::event::FeeTerms;
use ingest::writemodel::{MerchantStatus, TerminalStatus};
use serde::{Deserialize, Serialize};

use crate::{App, Class, Failure};

/// A terminal of a merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalRef {
    /// The terminal.
    pub terminal_id: String,
    /// Its status.
    pub status: TerminalStatus,
}

/// A merchant's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    /// The merchant.
    pub merchant_id: String,
    /// Where it is in 申请 → 审核 → 签约 → 销户.
    pub status: MerchantStatus,
    /// The contract's fees in force, per channel.
    pub fees: BTreeMap<String, FeeTerms>,
    /// Its terminals, by id.
    pub terminals: Vec<TerminalRef>,
}

/// A terminal's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    /// The terminal.
    pub terminal_id: String,
    /// Its merchant.
    pub merchant_id: String,
    /// Where it is in 装机 → 开通 → suspended → unbound.
    pub status: TerminalStatus,
    /// Batches closed on it.
    pub closed_batches: usize,
}

/// Most merchants one page of [`App::merchants`] lists.
pub const MERCHANTS_PAGE_MAX: usize = 1_000;

/// A page of merchants in id order; `next` is the id the following page starts after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantPage {
    /// The merchants of the page.
    pub merchants: Vec<Merchant>,
    /// The last id of this page when more follow.
    pub next: Option<String>,
}

/// The states of the merchants `ids` in `registry` (each one there), in the order given: one
/// pass over the terminals for them all.
fn merchants_of(registry: &ingest::writemodel::Registry, ids: &[&str]) -> Vec<Merchant> {
    let mut terminals: BTreeMap<&str, Vec<TerminalRef>> = ids.iter().map(|id| (*id, Vec::new())).collect();
    for (tid, t) in &registry.terminals {
        if let Some(list) = terminals.get_mut(t.merchant_id.as_str()) {
            list.push(TerminalRef { terminal_id: tid.clone(), status: t.status });
        }
    }
    ids.iter()
        .filter_map(|id| {
            let m = registry.merchants.get(*id)?;
            let mut terminals = terminals.remove(id).unwrap_or_default();
            terminals.sort_by(|a, b| a.terminal_id.cmp(&b.terminal_id));
            let fees = m.fees.iter().map(|(c, f)| (c.as_str().to_owned(), f.clone())).collect();
            Some(Merchant { merchant_id: (*id).to_owned(), status: m.status, fees, terminals })
        })
        .collect()
}

impl App {
    /// The merchants after `after` in id order, at most `limit` (1 to [`MERCHANTS_PAGE_MAX`]).
    pub async fn merchants(&self, after: Option<&str>, limit: usize) -> Result<MerchantPage, Failure> {
        if !(1..=MERCHANTS_PAGE_MAX).contains(&limit) {
            return Err(Failure::invalid(
                "invalid_limit",
                format!("limit {limit}: a page holds 1 to {MERCHANTS_PAGE_MAX} merchants"),
            )
            .field("limit"));
        }
        let mut ingestor = self.ingestor().await?;
        ingestor.catch_up().await?;
        let registry = ingestor.registry();
        let mut ids: Vec<&str> =
            registry.merchants.keys().map(String::as_str).filter(|id| after.is_none_or(|a| *id > a)).collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let merchants = merchants_of(registry, &ids);
        let next = if more { merchants.last().map(|m| m.merchant_id.clone()) } else { None };
        Ok(MerchantPage { merchants, next })
    }

    /// A merchant's state; `scope` (a terminal key's merchant) may see its own only.
    pub async fn merchant(&self, id: &str, scope: Option<&str>) -> Result<Merchant, Failure> {
        if scope.is_some_and(|m| m != id) {
            return Err(Failure::new(Class::Forbidden, "forbidden", "a terminal key sees its own merchant only"));
        }
        let mut ingestor = self.ingestor().await?;
        ingestor.catch_up().await?;
        let registry = ingestor.registry();
        merchants_of(registry, &[id])
            .pop()
            .ok_or_else(|| Failure::not_found("unknown_merchant", format!("no merchant {id}")))
    }

    /// A terminal's state; `scope` (a terminal key's merchant) may see its own merchant's only.
    pub async fn terminal(&self, id: &str, scope: Option<&str>) -> Result<Terminal, Failure> {
        let mut ingestor = self.ingestor().await?;
        ingestor.catch_up().await?;
        let found = ingestor.registry().terminals.get(id);
        if let Some(own) = scope
            && found.is_none_or(|t| t.merchant_id != own)
        {
            return Err(Failure::new(
                Class::Forbidden,
                "forbidden",
                "a terminal key sees its own merchant's terminals only",
            ));
        }
        let t = found.ok_or_else(|| Failure::not_found("unknown_terminal", format!("no terminal {id}")))?;
        let closed_batches = ingestor.registry().closed_batches.get(id).map_or(0, |b| b.len());
        Ok(Terminal {
            terminal_id: id.to_owned(),
            merchant_id: t.merchant_id.clone(),
            status: t.status,
            closed_batches,
        })
    }
}

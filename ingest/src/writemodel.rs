//! The write model: what the recorded events say about merchants, terminals, batches and
//! payments, and the decision whether a new record is accepted.
//!
//! State is only ever derived from events ([`Registry::apply`], [`PaymentState::from_events`]);
//! there is no second source of truth. The registry of merchants, terminals and closed
//! batches is small and kept in memory; a payment's state is loaded from its own stream when
//! a void, refund or reversal needs it, so memory does not grow with the number of payments.

use std::collections::{HashMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::event::{Channel, ContractSigned, Event, FeeTerms, PaymentAdjustment, PaymentCaptured, TerminalBatchClosed};
use crate::store::RecordedEvent;

/// Where a merchant is in onboarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    /// Applied, waiting for review.
    Applied,
    /// Passed review, no contract yet.
    Approved,
    /// Refused by review.
    Rejected,
    /// Has a contract: may take payments.
    Contracted,
    /// Relationship ended.
    Closed,
}

/// A merchant as the events describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantState {
    /// Lifecycle status.
    pub status: MerchantStatus,
    /// Fees of the contract in force, per channel.
    pub fees: Vec<(Channel, FeeTerms)>,
}

/// Where a terminal is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStatus {
    /// Installed, not yet switched on.
    Bound,
    /// Takes payments.
    Active,
    /// Temporarily may not take payments.
    Suspended,
    /// Removed from its merchant.
    Unbound,
}

/// A terminal as the events describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalState {
    /// The merchant it is (or was last) bound to.
    pub merchant_id: String,
    /// Lifecycle status.
    pub status: TerminalStatus,
}

/// A map keyed by ids from admin records (trusted input), hashed with xxh3: it is looked up
/// for every terminal record.
pub type IdMap<V> = HashMap<String, V, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

/// Merchants, terminals and closed batches: the part of the write model kept in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// By merchant id.
    pub merchants: IdMap<MerchantState>,
    /// By terminal id.
    pub terminals: IdMap<TerminalState>,
    /// The closed batch numbers of each terminal.
    pub closed_batches: IdMap<HashSet<String>>,
}

/// Why a valid record was not accepted: a stable code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable machine-readable code, e.g. `terminal_not_active`.
    pub code: &'static str,
    /// What is wrong, naming the record's ids.
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn reject<T>(code: &'static str, message: String) -> Result<T, Rejection> {
    Err(Rejection { code, message })
}

/// Event types the registry is built from; every other type leaves it unchanged, so a reader
/// can skip them without decoding.
pub const REGISTRY_EVENT_TYPES: [&str; 10] = [
    "MerchantApplied",
    "MerchantApproved",
    "MerchantRejected",
    "ContractSigned",
    "MerchantClosed",
    "TerminalBound",
    "TerminalActivated",
    "TerminalSuspended",
    "TerminalUnbound",
    "TerminalBatchClosed",
];

/// Lookup of registry entries through an overlay of not-yet-committed changes.
pub struct View<'a> {
    base: &'a Registry,
    overlay: &'a Registry,
}

impl<'a> View<'a> {
    /// `overlay` entries hide `base` entries with the same key.
    pub fn new(base: &'a Registry, overlay: &'a Registry) -> Self {
        View { base, overlay }
    }

    fn merchant(&self, id: &str) -> Option<&'a MerchantState> {
        self.overlay.merchants.get(id).or_else(|| self.base.merchants.get(id))
    }

    fn terminal(&self, id: &str) -> Option<&'a TerminalState> {
        self.overlay.terminals.get(id).or_else(|| self.base.terminals.get(id))
    }

    fn batch_closed(&self, terminal: &str, batch: &str) -> bool {
        let closed = |r: &Registry| r.closed_batches.get(terminal).is_some_and(|b| b.contains(batch));
        closed(self.overlay) || closed(self.base)
    }

    /// Decides whether an admin record's event may be recorded now.
    pub fn decide_admin(&self, event: &Event) -> Result<(), Rejection> {
        use MerchantStatus as M;
        use TerminalStatus as T;
        let merchant_status = |id: &str| self.merchant(id).map(|m| m.status);
        match event {
            Event::ChannelTermsSet(_) => Ok(()),
            Event::MerchantApplied(e) => match merchant_status(&e.merchant_id) {
                None => Ok(()),
                Some(_) => reject("merchant_exists", format!("merchant {} has already applied", e.merchant_id)),
            },
            Event::MerchantApproved(e) => need_merchant(&e.merchant_id, merchant_status(&e.merchant_id), &[M::Applied]),
            Event::MerchantRejected(e) => need_merchant(&e.merchant_id, merchant_status(&e.merchant_id), &[M::Applied]),
            Event::ContractSigned(e) => {
                need_merchant(&e.merchant_id, merchant_status(&e.merchant_id), &[M::Approved, M::Contracted])
            }
            Event::MerchantClosed(e) => {
                need_merchant(
                    &e.merchant_id,
                    merchant_status(&e.merchant_id),
                    &[M::Applied, M::Approved, M::Rejected, M::Contracted],
                )?;
                let bound = self.terminals_of(&e.merchant_id).filter(|(_, t)| t.status != T::Unbound).count();
                if bound > 0 {
                    return reject(
                        "merchant_has_terminals",
                        format!("merchant {} still has {bound} bound terminal(s); unbind them first", e.merchant_id),
                    );
                }
                Ok(())
            }
            Event::TerminalBound(e) => {
                need_merchant(&e.merchant_id, merchant_status(&e.merchant_id), &[M::Contracted])?;
                match self.terminal(&e.terminal_id) {
                    None => Ok(()),
                    Some(t) if t.status == T::Unbound => Ok(()),
                    Some(t) => reject(
                        "terminal_bound",
                        format!("terminal {} is already bound to merchant {}", e.terminal_id, t.merchant_id),
                    ),
                }
            }
            Event::TerminalActivated(e) => {
                let t = self.need_terminal(&e.terminal_id, &[T::Bound, T::Suspended])?;
                need_merchant(&t.merchant_id, merchant_status(&t.merchant_id), &[M::Contracted])
            }
            Event::TerminalSuspended(e) => self.need_terminal(&e.terminal_id, &[T::Active]).map(drop),
            Event::TerminalUnbound(e) => {
                self.need_terminal(&e.terminal_id, &[T::Bound, T::Active, T::Suspended]).map(drop)
            }
            other => reject("not_admin", format!("{} is not an admin record", other.event_type())),
        }
    }

    fn terminals_of<'b>(&'b self, merchant: &'b str) -> impl Iterator<Item = (&'b String, &'b TerminalState)> + 'b {
        let overlay = self.overlay.terminals.iter();
        let base = self.base.terminals.iter().filter(|(id, _)| !self.overlay.terminals.contains_key(*id));
        overlay.chain(base).filter(move |(_, t)| t.merchant_id == merchant)
    }

    fn need_terminal(&self, id: &str, allowed: &[TerminalStatus]) -> Result<&'a TerminalState, Rejection> {
        match self.terminal(id) {
            None => reject("terminal_unknown", format!("terminal {id} is not known")),
            Some(t) if allowed.contains(&t.status) => Ok(t),
            Some(t) => reject("terminal_state", format!("terminal {id} is {:?}, which does not allow this", t.status)),
        }
    }

    /// Checks that `terminal` is active and bound to `merchant`, and that the merchant has a
    /// contract that covers `channel`.
    fn check_point_of_sale(&self, merchant: &str, terminal: &str, channel: Channel) -> Result<(), Rejection> {
        let Some(t) = self.terminal(terminal) else {
            return reject("terminal_unknown", format!("terminal {terminal} is not known"));
        };
        if t.merchant_id != merchant {
            return reject(
                "terminal_merchant_mismatch",
                format!("terminal {terminal} belongs to merchant {}, not {merchant}", t.merchant_id),
            );
        }
        if t.status != TerminalStatus::Active {
            return reject("terminal_not_active", format!("terminal {terminal} is {:?}, not active", t.status));
        }
        let Some(m) = self.merchant(merchant) else {
            return reject("merchant_unknown", format!("merchant {merchant} is not known"));
        };
        if m.status != MerchantStatus::Contracted {
            return reject(
                "merchant_no_contract",
                format!("merchant {merchant} has no contract in force ({:?})", m.status),
            );
        }
        if !m.fees.iter().any(|(c, _)| *c == channel) {
            return reject(
                "channel_not_contracted",
                format!("merchant {merchant}'s contract has no terms for {channel}"),
            );
        }
        Ok(())
    }

    /// Decides a terminal record. For a void, refund or reversal, `payment` is the state of
    /// the sale it refers to, `None` if its merchant has none. A sale is decided on its point
    /// of sale alone: the pipeline sends one here only when its id is new to its merchant (a
    /// repeated id is a duplicate or a conflict, decided before), and passes `None`.
    pub fn decide_feed(&self, event: &Event, payment: Option<&PaymentState>) -> Result<(), Rejection> {
        match event {
            Event::PaymentCaptured(s) => {
                self.check_point_of_sale(&s.merchant_id, &s.terminal_id, s.channel)?;
                self.check_batch_open(&s.terminal_id, &s.batch_no)?;
                Ok(())
            }
            Event::PaymentVoided(a) => {
                let p = original(a, payment)?;
                p.check_untouched(a, "void")?;
                if a.terminal_id != p.capture.terminal_id || a.batch_no != p.capture.batch_no {
                    return reject(
                        "void_outside_batch",
                        format!(
                            "void {} is in terminal {} batch {}, the sale {} was in terminal {} batch {}",
                            a.txn_id,
                            a.terminal_id,
                            a.batch_no,
                            p.capture.txn_id,
                            p.capture.terminal_id,
                            p.capture.batch_no
                        ),
                    );
                }
                self.check_batch_open(&a.terminal_id, &a.batch_no)?;
                p.check_full_amount(a, "void")?;
                self.check_point_of_sale(&a.merchant_id, &a.terminal_id, a.channel)?;
                Ok(())
            }
            Event::PaymentReversed(a) => {
                let p = original(a, payment)?;
                p.check_untouched(a, "reversal")?;
                if a.terminal_id != p.capture.terminal_id || a.batch_no != p.capture.batch_no {
                    return reject(
                        "reversal_outside_batch",
                        format!("reversal {} must come from the sale's terminal and batch", a.txn_id),
                    );
                }
                p.check_full_amount(a, "reversal")?;
                // A reversal changes the batch's totals: the batch must still be open.
                self.check_batch_open(&a.terminal_id, &a.batch_no)?;
                Ok(())
            }
            Event::PaymentRefunded(a) => {
                let p = original(a, payment)?;
                if let Some(kind) = p.cancelled {
                    return reject(
                        "original_cancelled",
                        format!("refund {}: sale {} was {kind}", a.txn_id, p.capture.txn_id),
                    );
                }
                p.check_same_payment(a)?;
                let remaining = p.remaining();
                if a.amount > remaining {
                    return reject(
                        "refund_exceeds_remaining",
                        format!(
                            "refund {} of {} exceeds the {} that remains of sale {} ({} captured, {} refunded)",
                            a.txn_id, a.amount, remaining, p.capture.txn_id, p.capture.amount, p.refunded
                        ),
                    );
                }
                self.check_point_of_sale(&a.merchant_id, &a.terminal_id, a.channel)?;
                // A refund counts in the totals of the batch it is made in.
                self.check_batch_open(&a.terminal_id, &a.batch_no)?;
                Ok(())
            }
            Event::TerminalBatchClosed(b) => {
                let Some(t) = self.terminal(&b.terminal_id) else {
                    return reject("terminal_unknown", format!("terminal {} is not known", b.terminal_id));
                };
                if t.merchant_id != b.merchant_id {
                    return reject(
                        "terminal_merchant_mismatch",
                        format!(
                            "terminal {} belongs to merchant {}, not {}",
                            b.terminal_id, t.merchant_id, b.merchant_id
                        ),
                    );
                }
                self.check_batch_open(&b.terminal_id, &b.batch_no)?;
                Ok(())
            }
            other => reject("not_terminal_record", format!("{} is not a terminal record", other.event_type())),
        }
    }

    fn check_batch_open(&self, terminal: &str, batch: &str) -> Result<(), Rejection> {
        if self.batch_closed(terminal, batch) {
            return reject("batch_closed", format!("batch {batch} of terminal {terminal} is already closed"));
        }
        Ok(())
    }
}

fn need_merchant(id: &str, status: Option<MerchantStatus>, allowed: &[MerchantStatus]) -> Result<(), Rejection> {
    match status {
        None => reject("merchant_unknown", format!("merchant {id} is not known")),
        Some(s) if allowed.contains(&s) => Ok(()),
        Some(s) => reject("merchant_state", format!("merchant {id} is {s:?}, which does not allow this")),
    }
}

fn original<'p>(a: &PaymentAdjustment, payment: Option<&'p PaymentState>) -> Result<&'p PaymentState, Rejection> {
    payment.ok_or_else(|| Rejection {
        code: "original_unknown",
        message: format!("{}: original sale {} is not recorded", a.txn_id, a.original_txn_id),
    })
}

/// A payment as its stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentState {
    /// The capture.
    pub capture: PaymentCaptured,
    /// Sum of refunds so far.
    pub refunded: Decimal,
    /// Number of refunds so far.
    pub refunds: u32,
    /// `Some("voided")` or `Some("reversed")` once cancelled.
    pub cancelled: Option<&'static str>,
    /// Revision of the stream's last event.
    pub revision: u64,
}

impl PaymentState {
    /// The state after a capture at `revision`.
    pub fn captured(capture: PaymentCaptured, revision: u64) -> Self {
        PaymentState { capture, refunded: Decimal::ZERO, refunds: 0, cancelled: None, revision }
    }

    /// Folds a payment stream. `None` if the stream is empty or does not start with a capture.
    pub fn from_events(events: &[RecordedEvent]) -> Result<Option<Self>, crate::event::DecodeError> {
        let mut state: Option<PaymentState> = None;
        for e in events {
            let event = Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)?;
            match (&mut state, event) {
                (None, Event::PaymentCaptured(c)) => state = Some(PaymentState::captured(c, e.revision)),
                (Some(s), event) => {
                    s.apply(&event);
                    s.revision = e.revision;
                }
                (None, _) => return Ok(None),
            }
        }
        Ok(state)
    }

    /// Applies a void, refund or reversal of this payment.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::PaymentVoided(_) => self.cancelled = Some("voided"),
            Event::PaymentReversed(_) => self.cancelled = Some("reversed"),
            Event::PaymentRefunded(a) => {
                self.refunded += a.amount;
                self.refunds += 1;
            }
            _ => {}
        }
    }

    /// What may still be refunded.
    pub fn remaining(&self) -> Decimal {
        self.capture.amount - self.refunded
    }

    fn check_untouched(&self, a: &PaymentAdjustment, what: &str) -> Result<(), Rejection> {
        if let Some(kind) = self.cancelled {
            return reject(
                "original_cancelled",
                format!("{what} {}: sale {} was already {kind}", a.txn_id, self.capture.txn_id),
            );
        }
        if self.refunds > 0 {
            return reject(
                "original_refunded",
                format!("{what} {}: sale {} already has refunds", a.txn_id, self.capture.txn_id),
            );
        }
        self.check_same_payment(a)
    }

    fn check_same_payment(&self, a: &PaymentAdjustment) -> Result<(), Rejection> {
        let c = &self.capture;
        if a.at < c.at {
            return reject(
                "before_original",
                format!(
                    "{} at {} is earlier than sale {} at {}",
                    a.txn_id,
                    a.at.to_rfc3339(),
                    c.txn_id,
                    c.at.to_rfc3339()
                ),
            );
        }
        if a.merchant_id != c.merchant_id || a.channel != c.channel || a.currency != c.currency {
            return reject(
                "original_mismatch",
                format!(
                    "{} does not match sale {} (merchant {} / {}, channel {} / {}, currency {} / {})",
                    a.txn_id, c.txn_id, a.merchant_id, c.merchant_id, a.channel, c.channel, a.currency, c.currency
                ),
            );
        }
        Ok(())
    }

    fn check_full_amount(&self, a: &PaymentAdjustment, what: &str) -> Result<(), Rejection> {
        if a.amount != self.capture.amount {
            return reject(
                "amount_not_full",
                format!(
                    "{what} {} is for {}, the sale {} was {}",
                    a.txn_id, a.amount, self.capture.txn_id, self.capture.amount
                ),
            );
        }
        Ok(())
    }
}

impl Registry {
    /// Applies an event to the registry (events of other types change nothing). Events are
    /// facts: this never refuses one.
    pub fn apply(&mut self, event: &Event) {
        self.apply_over(event, None);
    }

    /// Applies an event to `self` as an overlay over `base`: entries are copied from `base`
    /// before they change.
    pub fn apply_over(&mut self, event: &Event, base: Option<&Registry>) {
        let merchant = merchant_entry;
        let set_merchant = |reg: &mut Registry, id: &str, status| {
            if let Some(m) = merchant_entry(reg, base, id) {
                m.status = status;
            }
        };
        let set_terminal = |reg: &mut Registry, id: &str, status| {
            if let Some(t) = terminal_entry(reg, base, id) {
                t.status = status;
            }
        };
        match event {
            Event::MerchantApplied(e) => {
                self.merchants
                    .insert(e.merchant_id.clone(), MerchantState { status: MerchantStatus::Applied, fees: Vec::new() });
            }
            Event::MerchantApproved(e) => set_merchant(self, &e.merchant_id, MerchantStatus::Approved),
            Event::MerchantRejected(e) => set_merchant(self, &e.merchant_id, MerchantStatus::Rejected),
            Event::ContractSigned(ContractSigned { merchant_id, fees, .. }) => {
                if let Some(m) = merchant(self, base, merchant_id) {
                    m.status = MerchantStatus::Contracted;
                    m.fees = fees.iter().map(|(c, f)| (*c, f.clone())).collect();
                }
            }
            Event::MerchantClosed(e) => set_merchant(self, &e.merchant_id, MerchantStatus::Closed),
            Event::TerminalBound(e) => {
                self.terminals.insert(
                    e.terminal_id.clone(),
                    TerminalState { merchant_id: e.merchant_id.clone(), status: TerminalStatus::Bound },
                );
            }
            Event::TerminalActivated(e) => set_terminal(self, &e.terminal_id, TerminalStatus::Active),
            Event::TerminalSuspended(e) => set_terminal(self, &e.terminal_id, TerminalStatus::Suspended),
            Event::TerminalUnbound(e) => set_terminal(self, &e.terminal_id, TerminalStatus::Unbound),
            Event::TerminalBatchClosed(TerminalBatchClosed { terminal_id, batch_no, .. }) => {
                self.closed_batches.entry(terminal_id.clone()).or_default().insert(batch_no.clone());
            }
            _ => {}
        }
    }

    /// Folds `other` (an overlay built with [`Registry::apply_over`]) into `self`.
    pub fn merge(&mut self, other: Registry) {
        self.merchants.extend(other.merchants);
        self.terminals.extend(other.terminals);
        for (terminal, batches) in other.closed_batches {
            self.closed_batches.entry(terminal).or_default().extend(batches);
        }
    }
}

/// The merchant's entry in `reg`, copied from `base` first if only `base` has it.
fn merchant_entry<'r>(reg: &'r mut Registry, base: Option<&Registry>, id: &str) -> Option<&'r mut MerchantState> {
    if !reg.merchants.contains_key(id)
        && let Some(m) = base.and_then(|b| b.merchants.get(id))
    {
        reg.merchants.insert(id.to_owned(), m.clone());
    }
    reg.merchants.get_mut(id)
}

/// The terminal's entry in `reg`, copied from `base` first if only `base` has it.
fn terminal_entry<'r>(reg: &'r mut Registry, base: Option<&Registry>, id: &str) -> Option<&'r mut TerminalState> {
    if !reg.terminals.contains_key(id)
        && let Some(t) = base.and_then(|b| b.terminals.get(id))
    {
        reg.terminals.insert(id.to_owned(), t.clone());
    }
    reg.terminals.get_mut(id)
}

//! Settlement: paying merchants what is due for a date (T+1: the business of the day before;
//! D0: the day's own), recorded once per merchant, date and currency (`MerchantSettled`) and
//! booked payable → `assets:bank:settlement` — unless the merchant is held (暂缓结算,
//! `ledger::holds`): an unbalanced terminal batch of its closed that day, or an open break on
//! its payments parking more than the approval threshold. A hold is recorded
//! (`SettlementHeld`) and books nothing; a later settlement pays the merchant once the causes
//! are gone.

use chrono::NaiveDate;
use ingest::event::{Event, MerchantSettled, SettlementHeld};
use ingest::store::{EventStore, ExpectedRevision};
use serde::{Deserialize, Serialize};

use crate::{App, Failure};

/// One merchant paid, and where its record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paid {
    /// The payout.
    pub settled: MerchantSettled,
    /// The record's position in the log.
    pub position: u64,
}

/// One merchant held, and where its record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The hold and its causes.
    pub held: SettlementHeld,
    /// The record's position in the log.
    pub position: u64,
}

/// The settlements of a date: who was paid, who is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The settlement date.
    pub settlement_date: NaiveDate,
    /// One per merchant and currency paid.
    pub paid: Vec<Paid>,
    /// One per merchant and currency held (and not paid since for that date).
    pub held: Vec<Held>,
}

impl App {
    /// Pays merchants for `date`: everything of the business days the date covers that earlier
    /// settlements did not pay, except for held merchants, whose holds are recorded. Running it
    /// again for the same date pays nothing twice; it pays a held merchant whose causes are gone.
    /// Returns what this run recorded.
    pub async fn settle(&self, date: NaiveDate) -> Result<Settlement, Failure> {
        crate::dates::not_after_today(date, chrono::Utc::now(), "a settlement", "date")?;
        let _writer = self.writes.lock().await;
        let due = self.books().await?.settlements_due(date);
        let mut done = Settlement { settlement_date: date, paid: Vec::new(), held: Vec::new() };
        if due.is_empty() {
            return Ok(done);
        }
        let threshold = self.approval_over.clone()?;
        let verdicts = self.batch_verdicts(date).await?;
        let open = self.open_breaks_of_merchants().await?;
        for settled in due {
            let reasons = ledger::holds::hold_reasons(&settled.merchant_id, &verdicts, &open, threshold);
            if reasons.is_empty() {
                let position = self.record(Event::MerchantSettled(settled.clone())).await?;
                done.paid.push(Paid { settled, position });
            } else {
                let held = SettlementHeld {
                    merchant_id: settled.merchant_id,
                    settlement_date: settled.settlement_date,
                    business_date: settled.business_date,
                    net: settled.net,
                    currency: settled.currency,
                    reasons,
                };
                let position = self.record(Event::SettlementHeld(held.clone())).await?;
                done.held.push(Held { held, position });
            }
        }
        Ok(done)
    }

    /// The settlements recorded for `date`: every merchant paid, and every one held and not
    /// paid since for that date (its latest hold).
    pub async fn settlements(&self, date: NaiveDate) -> Result<Settlement, Failure> {
        let merchants: Vec<String> = {
            let mut ingestor = self.ingestor().await?;
            ingestor.catch_up().await?;
            let mut ids: Vec<String> = ingestor.registry().merchants.keys().cloned().collect();
            ids.sort();
            ids
        };
        let mut listed = Settlement { settlement_date: date, paid: Vec::new(), held: Vec::new() };
        for merchant in merchants {
            let stream = ingest::streams::settlement(&merchant, date);
            let mut paid: Vec<Paid> = Vec::new();
            let mut held: Vec<Held> = Vec::new();
            for e in self.store.read_stream(&stream, 0, ingest::store::READ_EVENTS_MAX).await? {
                match Event::decode(&e.data.event_type, e.data.schema_version, &e.data.payload)
                    .map_err(|d| Failure::internal(format!("the event at {}: {d}", e.position)))?
                {
                    Event::MerchantSettled(settled) => paid.push(Paid { settled, position: e.position }),
                    Event::SettlementHeld(h) => {
                        held.retain(|x| x.held.currency != h.currency);
                        held.push(Held { held: h, position: e.position });
                    }
                    _ => {}
                }
            }
            held.retain(|h| !paid.iter().any(|p| p.settled.currency == h.held.currency));
            listed.paid.extend(paid);
            listed.held.extend(held);
        }
        Ok(listed)
    }

    /// The merchant of the payment event `id` when that event is the one break `b` is on: a
    /// sale for a payment break, a refund for a refund break, of our amount and currency.
    async fn payment_of_break(&self, id: uuid::Uuid, b: &ingest::event::ReconBreak) -> Result<Option<String>, Failure> {
        let Some(stored) = self.store.event_by_id(id).await? else { return Ok(None) };
        let (merchant_id, amount, currency) =
            match Event::decode(&stored.data.event_type, stored.data.schema_version, &stored.data.payload) {
                Ok(Event::PaymentCaptured(s)) if b.kind == ingest::statement::LineKind::Payment => {
                    (s.merchant_id, s.amount, s.currency)
                }
                Ok(Event::PaymentRefunded(a)) if b.kind == ingest::statement::LineKind::Refund => {
                    (a.merchant_id, a.amount, a.currency)
                }
                _ => return Ok(None),
            };
        Ok((b.our_amount == Some(amount) && b.currency == currency).then_some(merchant_id.to_string()))
    }

    /// Appends one settlement event (its own stream; a retry is recognised by its id).
    async fn record(&self, event: Event) -> Result<u64, Failure> {
        let appended =
            self.store.append(&event.stream(), ExpectedRevision::Any, vec![event.to_event_data()]).await.map_err(
                |e| Failure::unavailable(format!("recording {} {}: {e}", event.event_type(), event.reference())),
            )?;
        Ok(appended.first_position)
    }

    /// The unresolved breaks on our payments, with whose payments they are.
    async fn open_breaks_of_merchants(&self) -> Result<Vec<ledger::holds::OpenBreak>, Failure> {
        let mut open = Vec::new();
        let mut merchants: Option<Vec<String>> = None;
        for b in self.breaks(true).await? {
            if b.found.ledger_channel.is_none() {
                // A line with no payment of ours: nobody's to hold.
                continue;
            }
            let first = ingest::event::event_id_of(ingest::event::PAYMENT_ID_SPACE, &b.found.txn_id);
            let mut merchant_id = self.payment_of_break(first, &b.found).await?;
            if merchant_id.is_none() {
                // The txn_id's plain name is another merchant's payment: the break's is named by
                // its merchant too (rare: only where two merchants used one txn_id).
                if merchants.is_none() {
                    let mut ingestor = self.ingestor().await?;
                    ingestor.catch_up().await?;
                    merchants = Some(ingestor.registry().merchants.keys().cloned().collect());
                }
                for m in merchants.iter().flatten() {
                    let id = ingest::event::payment_event_id_of(m, &b.found.txn_id);
                    if let Some(found) = self.payment_of_break(id, &b.found).await? {
                        merchant_id = Some(found);
                        break;
                    }
                }
            }
            if let Some(merchant_id) = merchant_id {
                open.push(ledger::holds::OpenBreak { merchant_id, break_id: b.id, parked: b.suspense_amount });
            }
        }
        Ok(open)
    }
}

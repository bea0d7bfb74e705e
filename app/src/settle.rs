//! Settlement: paying merchants what is due for a date (T+1: the business of the day before;
//! D0: the day's own), recorded once per merchant, date and currency (`MerchantSettled`) and
//! booked payable → `assets:bank:settlement`.

use chrono::NaiveDate;
use ingest::event::MerchantSettled;
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

/// What a settlement run paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The settlement date.
    pub settlement_date: NaiveDate,
    /// One per merchant and currency paid now (none when the date was settled before).
    pub paid: Vec<Paid>,
}

impl App {
    /// Pays merchants for `date`: everything of the business days the date covers that earlier
    /// settlements did not pay. Running it again for the same date pays nothing twice.
    pub async fn settle(&self, date: NaiveDate) -> Result<Settlement, Failure> {
        let _writer = self.writes.lock().await;
        let due = self.books().await?.settlements_due(date);
        let mut paid = Vec::with_capacity(due.len());
        for settled in due {
            let event = ingest::event::Event::MerchantSettled(settled.clone());
            let appended =
                self.store.append(&event.stream(), ExpectedRevision::Any, vec![event.to_event_data()]).await.map_err(
                    |e| Failure::unavailable(format!("recording the settlement of {}: {e}", settled.merchant_id)),
                )?;
            paid.push(Paid { settled, position: appended.first_position });
        }
        Ok(Settlement { settlement_date: date, paid })
    }
}

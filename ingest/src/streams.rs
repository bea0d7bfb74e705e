//! Stream names, built here and nowhere else. A stream holds the events of one entity; its
//! name is the entity's kind and its id. The names are part of the log's format: an event's
//! stream never changes once recorded.

use std::fmt::Display;

use chrono::NaiveDate;

/// A channel's terms: `channel-<channel>`.
pub fn channel(channel: impl Display) -> String {
    format!("channel-{channel}")
}

/// A merchant's lifecycle: `merchant-<id>`.
pub fn merchant(merchant_id: &str) -> String {
    format!("merchant-{merchant_id}")
}

/// A terminal's lifecycle: `terminal-<id>`.
pub fn terminal(terminal_id: &str) -> String {
    format!("terminal-{terminal_id}")
}

/// A payment and everything done to it: `payment-<txn_id>`, the name of the first merchant's
/// payment to use that txn_id (see [`payment_of`]).
pub fn payment(txn_id: &str) -> String {
    format!("payment-{txn_id}")
}

/// A payment whose txn_id already names another merchant's payment: `payment-<merchant>/<txn_id>`.
/// A payment is its merchant's txn_id; ids hold no `/`, so the two forms never meet.
pub fn payment_of(merchant_id: &str, txn_id: &str) -> String {
    format!("payment-{merchant_id}/{txn_id}")
}

/// A terminal batch's close: `batch-<terminal>-<batch_no>`.
pub fn batch(terminal_id: &str, batch_no: &str) -> String {
    format!("batch-{terminal_id}-{batch_no}")
}

/// The host's verdict on a terminal batch: `batch-verdict-<terminal>-<batch_no>`.
pub fn batch_verdict(terminal_id: &str, batch_no: &str) -> String {
    format!("batch-verdict-{terminal_id}-{batch_no}")
}

/// A merchant's settlement for a date: `settlement-<merchant>-<date>`.
pub fn settlement(merchant_id: &str, settlement_date: NaiveDate) -> String {
    format!("settlement-{merchant_id}-{settlement_date}")
}

/// A statement's imports for a channel and date: `statement-<channel>-<date>`.
pub fn statement(channel: impl Display, date: NaiveDate) -> String {
    format!("statement-{channel}-{date}")
}

/// The reconciliation runs of a statement and date: `recon-<channel>-<date>`.
pub fn recon(channel: impl Display, date: NaiveDate) -> String {
    format!("recon-{channel}-{date}")
}

/// The heads of the log published outside it: `anchors`.
pub fn anchors() -> String {
    "anchors".to_owned()
}

/// A break's resolution: `break-<id>`.
pub fn break_resolution(break_id: &str) -> String {
    format!("break-{break_id}")
}

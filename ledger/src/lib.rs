//! `ledger` will own the projection of events into double-entry postings, balances now and
//! as of any position or business time, merchant settlement and the reconciliation engine.
//!
//! It is a deterministic state machine: it reads events only through the store's
//! read/subscribe API, reads no clock and does no other I/O. Nothing is implemented yet;
//! the crate exists so the workspace has its final shape.

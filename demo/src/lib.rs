//! `posledger demo`: a realistic acquirer, generated and run through every day-end.
//!
//! [`world`] makes the merchants (six trades, onboarded through application, review — two
//! applicants rejected — contract, terminal installation and activation), [`day`] makes each
//! business day's terminal feed and the three channels' statements with breaks planted in them,
//! and [`run`] takes a fresh data directory through it all with posledger's own use cases:
//! the records ingested as they happen (a faulty terminal replaced mid-day, a merchant closing
//! after its last settlement), every day's day-end, a break over the approval threshold
//! resolved by two people, then verify, the named queries and their charts. The report
//! compares what posledger found with what was planted, and what it paid with what the
//! generated records say is due, worked out apart from the ledger.

pub mod day;
pub mod run;
pub mod sample;
pub mod world;

pub use run::{Options, Report, run};

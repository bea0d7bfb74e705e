//! Reconciliation, in one home: the channels' statements against our payments and refunds.
//!
//! - `classify.rs` — the matching engine ([`classify`]): pure and deterministic.
//! - `rules.rs` — what an import, a run, a batch verdict and a resolution record
//!   ([`import_record`], [`run_record`], [`BatchHost`], [`batch_verdicts_of`], [`resolution`]),
//!   and a break's id and what it parks ([`break_ids`], [`parked`]): pure too.
//! - `read.rs` — the reads that gather their inputs from the log ([`load_day`], [`load_items`],
//!   [`prepare_import`], [`prepare_run`], [`batch_closes`], [`batch_verdicts`],
//!   [`prepare_resolution`], [`recorded_breaks`], [`BreaksFollower`]), through the store's read
//!   API, from the day's place in the log on where they can ([`window_start`]); nothing here
//!   appends: recording is the application layer's (`app`).

mod classify;
mod read;
mod rules;

pub use classify::*;
pub use read::*;
pub use rules::*;

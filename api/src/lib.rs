//! `api` is glue: the `posledger` command-line tool ([`cli`]) and, later, the warp HTTP
//! server. It parses arguments and wires the library crates together; business rules live
//! in `ingest`, `ledger`, `analytics` and `queries`.

pub mod analyze;
pub mod bench;
pub mod cli;
pub mod recon;

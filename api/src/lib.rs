//! `api` is glue: the `posledger` command-line tool ([`cli`]) and the warp HTTP server
//! ([`http`], with its API keys in [`keys`] and its [`openapi`] document). It parses arguments and wires the library crates together; business rules live
//! in `ingest`, `ledger`, `analytics` and `queries`.

pub mod analyze;
pub mod bench;
pub mod cli;
pub mod http;
mod jsonfile;
pub mod keys;
pub mod openapi;
pub mod recon;

//! `ingest` owns what comes into posledger and how it is kept: the event catalogue
//! ([`event::Event`]), the event store ([`store::EventStore`], with the embedded backend
//! [`store::EmbeddedStore`]), the parsers of terminal feeds and admin records
//! ([`feed`], [`admin`]), and the write model ([`writemodel::WriteModel`]) that decides from
//! the recorded events whether a new record is accepted, and the channel statement parsers
//! ([`statement`]).
//!
//! It knows nothing of accounts, HTTP or SQL.

pub mod admin;
pub mod event;
pub mod feed;
pub mod fields;
pub mod generate;
pub mod money;
pub mod pipeline;
pub mod statement;
pub mod store;
pub mod streams;
pub mod writemodel;

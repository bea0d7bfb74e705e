//! The running server's local socket (`DATA_DIR/posledger.sock`): how every command of the
//! command line works while `posledger serve` holds the data directory.
//!
//! The server ([`server`]) listens on a Unix socket that only the data directory's owner can
//! open (the socket is created inside a private directory and moved into place, mode 0600):
//! the file system's permissions are its authentication, as with a database's local socket.
//! The command line ([`client`]) finds the socket, connects, and sends the same
//! [`app::request::Request`] it would otherwise run in its own process; the server runs it on
//! its own [`app::App`] (the store, write model and books it already holds) and answers with
//! the typed [`app::request::Reply`], which the command line renders exactly as it renders a
//! reply of its own. Ingest streams chunks of lines and gets the running totals after each
//! chunk is durable; the journal streams its text back. [`wire`] is the framing.

pub mod client;
pub mod server;
pub mod wire;

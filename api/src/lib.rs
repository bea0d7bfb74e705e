//! `api` holds posledger's adapters: the `posledger` command line ([`cli`]), the HTTP API
//! ([`http`], with its [`openapi`] document), the running server's local socket ([`local`])
//! and `posledger serve`, which runs the last two ([`serve`]). They parse input into a use
//! case's arguments, call [`app::App`], and render its typed result ([`render`]); business
//! rules live in `app` and the library crates below it. The command line and the HTTP API never
//! import each other.

pub mod cli;
pub mod demo;
pub mod http;
pub mod local;
pub mod openapi;
pub mod render;
pub mod serve;

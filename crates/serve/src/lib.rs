//! # retrace-serve
//!
//! `retrace serve`: one process owns a store (sled lets only one open it) and drives its
//! runs with a bounded pool of workers; every other process reaches the store through the
//! daemon's local API, an HTTP API on `serve.sock` in the store directory (optionally also
//! on loopback TCP behind a bearer token).
//!
//! - [`server`]: start, take up unfinished runs, serve, shut down gracefully.
//! - [`scheduler`]: the worker pool and the one-writer rule; [`streamed`]: the text models
//!   stream as it drives them, for followers.
//! - [`cluster`]: many workers on one PostgreSQL store — leases, takeovers, signals left
//!   for the worker driving a run.
//! - [`routes`]: the API; [`api`]: its JSON shapes; [`wire`]: the store over the API;
//!   [`auth`]: callers, their roles, and the tokens file; [`resolve`]: settling a call of
//!   unknown outcome.
//! - [`client`]: the API's client, and [`RemoteStore`], the [`Store`](retrace_store::Store)
//!   that goes through it. [`Access`] is the one way a command reaches a store: the
//!   daemon's API when one holds it, the files otherwise.

pub mod api;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod held;
pub mod otlp;
pub mod resolve;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod streamed;
pub mod wire;

pub use client::{Access, Client, RemoteStore};

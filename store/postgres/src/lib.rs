//! # retrace-store-postgres
//!
//! The [`Store`](retrace_store::Store) on PostgreSQL, so that many processes on many
//! machines share one store: `retrace serve` workers, the CLI and the inspector.
//!
//! - **Same invariants as the embedded store.** An append is one transaction: the run's row
//!   is locked, the head compared with the writer's, the events inserted and the head moved
//!   together; it returns only after the commit (PostgreSQL's `synchronous_commit`, on by
//!   default, makes that durable). A fork is one row naming its origin: nothing is copied.
//! - **Tables** (`migrations/`, applied in order by [`refinery`], under an advisory lock so
//!   that workers starting together migrate once): `retrace_runs`, `retrace_events` (one row
//!   per event: `(run, seq)`, the id it was stored under, its canonical bytes),
//!   `retrace_blobs` (content-addressed, zstd where it pays), `retrace_snapshots`, and for
//!   workers `retrace_leases` and `retrace_inbox`. They live in the connection's schema
//!   (`search_path`), so one database can hold several stores.
//! - **Live tail** through `LISTEN/NOTIFY`: each append notifies channel
//!   `retrace_<md5 of the schema>` with the run's id; a follower in any process reads the new events
//!   and hands them to its subscribers, with no polling loop.
//! - **Leases** ([`Leases`]): which worker drives which run, claimed with
//!   `FOR UPDATE SKIP LOCKED`, kept by heartbeats, lost on expiry. A store opened for a
//!   worker ([`PgStore::fenced`]) appends to a run only while that worker holds the run's
//!   lease, checked in the append's transaction.
//!
//! The URL is libpq's (`postgres://user@host:port/db?options=...`); the password comes from
//! `PGPASSWORD` and is refused inside the URL, so it never reaches a process list, a log, an
//! error or a recorded event. TLS is not supported yet: use a loopback or private network,
//! or a local TLS-terminating proxy.
#![deny(missing_docs)]

mod bridge;
mod lease;
mod rows;
mod schema;
mod store;
mod tail;
mod target;
pub mod testing;

pub use lease::{Claim, Fence, Leases, Letter};
pub use store::{IDLE_IN_TRANSACTION, PgStore};
pub use target::{Target, TargetError, is_postgres_url};

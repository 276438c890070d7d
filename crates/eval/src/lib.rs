//! # retrace-eval
//!
//! Replay-based regression checks over recorded runs: [`check`] runs today's `decide` on
//! every decision a run recorded and reports the first one that comes out otherwise;
//! [`bundle`] packs runs into a verifiable file and imports them into another store.
#![deny(missing_docs)]

pub mod bundle;
pub mod check;

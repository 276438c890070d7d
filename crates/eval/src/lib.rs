//! # retrace-eval
//!
//! Replay-based regression checks over recorded runs:
//! - [`check`] runs today's `decide` on every decision a run recorded and reports the first
//!   one that comes out otherwise;
//! - [`suite`] reads eval suites, [`case`] runs a case as a fork of its recording (tools
//!   served from the recording) and judges it, [`report`] runs a suite concurrently and
//!   writes its table, JSON and JUnit reports;
//! - [`bundle`] packs runs into a verifiable file and imports them into another store.
#![deny(missing_docs)]

pub mod bundle;
pub mod case;
pub mod check;
mod expect;
pub mod report;
pub mod suite;

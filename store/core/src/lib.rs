//! # retrace-store
//!
//! The [`Store`] trait — events, blobs, run refs, the `(run, seq)` index, snapshots and live
//! subscriptions — with an in-memory backend, run verification, and the conformance suite
//! every backend must pass. The sled backend lives in `retrace-store-sled`; keeping it out of
//! this crate keeps sled out of the pure replay core, which depends on the trait only.
//!
//! ```
//! use retrace_events::{BlobId, Event, EventKind, RunId, Timestamp};
//! use retrace_store::{MemoryStore, NewRun, Store, VerifyOptions, verify_run};
//!
//! let store = MemoryStore::new();
//! let run = RunId::from_bytes([1; 16]);
//! store.create_run(NewRun::new(run, Timestamp(0)))?;
//! let spec = store.put_blob(br#"{"name":"demo"}"#)?;
//! let first = Event::root(Timestamp(1), EventKind::RunStarted { run, spec, input: spec });
//! let head = store.append(&run, None, &[first])?;
//!
//! // A second writer still holding the old head is refused, not forked.
//! let stale = Event::root(Timestamp(2), EventKind::RunStarted { run, spec, input: spec });
//! assert!(store.append(&run, None, &[stale]).is_err());
//!
//! assert_eq!(store.event_id_at(&run, 0)?, Some(head.id));
//! assert!(verify_run(&store, &run, VerifyOptions::default())?.is_ok());
//! # Ok::<(), retrace_store::Error>(())
//! ```
#![deny(missing_docs)]

mod chain;
pub mod conformance;
mod error;
mod memory;
mod run;
mod store;
pub mod tree;
mod verify;
mod watch;

pub use chain::{Record, prepare_append};
pub use error::{Error, Holder, Result};
pub use memory::MemoryStore;
pub use run::{ForkOrigin, NewRun, RunInfo, StoreStats};
pub use store::{MAX_RANGE, Store, StoredEvent, check_fork_origin};
pub use verify::{Problem, ProblemKind, VerifyOptions, VerifyReport, verify_run};
pub use watch::{Appended, Subscription, Watchers};

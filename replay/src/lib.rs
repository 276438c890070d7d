//! # retrace-replay
//!
//! The pure replay core: a run's state is `fold(apply, State::default(), events)`. This crate
//! derives states from the log (from the first event or from a verified snapshot), and
//! offers state hashes, state diffs, run-vs-run comparison and fork planning, and rebuilds
//! exactly what a model call sent from its request record ([`request`], [`preview`]). It
//! reads the log through the `Store` trait and does no other IO, reads no clock and pulls in no async
//! runtime (CI checks its dependency tree).
//!
//! ```
//! use retrace_events::{BlobId, Event, EventKind, RunId, Timestamp};
//! use retrace_replay::{Status, fold};
//!
//! let run = RunId::from_bytes([1; 16]);
//! let blob = BlobId::of(b"\"hi\"");
//! let first = Event::root(Timestamp(0), EventKind::RunStarted { run, spec: blob, input: blob });
//! let state = fold([&first]).unwrap();
//! assert_eq!(state.status, Status::Running);
//! assert_eq!(state.conversation.len(), 1);
//! ```
#![deny(missing_docs)]

mod apply;
mod approval;
pub mod describe;
mod diff;
mod fold;
mod fork;
pub mod plan;
pub mod preview;
pub mod question;
pub mod request;
mod snapshot;
mod state;
pub mod testkit;
mod timeline;

pub use apply::{ApplyError, MODEL_CALL, SPEC_SIGNAL, apply};
pub use approval::{DecideError, decide_approval};
pub use diff::{Change, ChangeKind, Comparison, Divergence, compare_runs, diff_json, diff_states};
pub use fold::{Error, fold, fold_into, fold_stored};
pub use fork::{ForkAt, ForkError, edited_kind, fork};
pub use question::{Answer, AnswerError, Asking, Question, answer_question, pending_question};
pub use snapshot::{
    Bypassed, REPLAY_VERSION, SnapshotPolicy, StateAt, decode_snapshot, encode_snapshot,
    snapshot_now, state_at, state_at_head,
};
pub use state::{
    Approval, CONTEXT_MESSAGES, CallSignature, ESCALATION, Escalated, Message, ModelTotals, Models,
    Pending, RECENT_CALLS, RECENT_DECISIONS, Role, State, StateHash, Status, StepFailure, Timing,
    Totals, escalation_budget,
};
pub use timeline::{Lineage, kind_counts, lineage};

//! Settling a tool call whose outcome is unknown (a non-idempotent tool was running when
//! the process stopped): the one implementation behind `retrace resolve` and
//! `POST /v1/runs/{run}/resolve`.
//!
//! - retry: an `approval_decided` (approved) by the resolver; the retry's new intent
//!   consumes it, so a crash during the retry asks again instead of repeating silently;
//! - skip: a `tool_returned` with the given result, as if the call had returned (the result
//!   is what the agent reads, so the resolver's name is not added to it);
//! - fail: a `run_finished` (failed) whose detail names the resolver (`by`) and the note.

use retrace_events::{Decision, Event, EventKind, Head, Outcome, RunId, Timestamp, canonical_json};
use retrace_replay::{SnapshotPolicy, Status, state_at_head};
use retrace_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How to settle the call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// Run the tool again.
    Retry,
    /// Do not run it again: this (any JSON) is its result.
    Skip(Value),
    /// End the run as failed.
    Fail,
}

/// Why a call could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The run waits on no call of unknown outcome.
    #[error("run {} has no tool call of unknown outcome to resolve", .run.short())]
    Nothing {
        /// The run.
        run: RunId,
    },
    /// The call named is not the one in doubt.
    #[error("the call of unknown outcome in run {} is {pending}, not {asked}", .run.short())]
    NotThat {
        /// The run.
        run: RunId,
        /// The call in doubt.
        pending: String,
        /// The call named.
        asked: String,
    },
    /// Reading the run failed.
    #[error(transparent)]
    Replay(#[from] retrace_replay::Error),
    /// Appending failed.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
}

/// Settle the call of unknown outcome of `run` (checked to be `call`, if given) as `how`
/// says, recorded at `at` as decided by `by` with an optional note. Returns the call and
/// the run's new head.
///
/// # Errors
/// [`Error::Nothing`] or [`Error::NotThat`] when there is no such call in doubt; a store
/// or replay error.
pub fn settle(
    store: &(impl Store + ?Sized),
    run: &RunId,
    call: Option<&str>,
    how: &How,
    by: &str,
    note: Option<&str>,
    at: Timestamp,
) -> Result<(String, Head), Error> {
    let state = state_at_head(store, run, SnapshotPolicy::default())?.state;
    let Status::OutcomeUnknown { call_id } = state.status else {
        return Err(Error::Nothing { run: *run });
    };
    if let Some(asked) = call
        && asked != call_id
    {
        return Err(Error::NotThat {
            run: *run,
            pending: call_id,
            asked: asked.to_owned(),
        });
    }
    let kind = match how {
        How::Retry => EventKind::ApprovalDecided {
            call_id: call_id.clone(),
            decision: Decision::Approved,
            by: by.to_owned(),
            note: note
                .map(|n| store.put_blob(&canonical_json(&json!(n))))
                .transpose()?,
        },
        How::Skip(result) => EventKind::ToolReturned {
            call_id: call_id.clone(),
            output: store.put_blob(&canonical_json(result))?,
            is_error: false,
            duration_ms: 0,
        },
        How::Fail => {
            let detail = json!({
                "reason": format!("the outcome of {call_id} was unknown; {by} ended the run"),
                "note": note,
                "by": by,
            });
            EventKind::RunFinished {
                outcome: Outcome::Failed,
                detail: store.put_blob(&canonical_json(&detail))?,
            }
        }
    };
    let head = store.require_run(run)?.head;
    let new_head = store.append(run, head.map(|h| h.id), &[Event::after(head, at, kind)])?;
    Ok((call_id, new_head))
}

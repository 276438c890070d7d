//! Deciding a pending approval: the one way the CLI (`retrace approve`) and the inspector
//! append a human's decision. The time is the caller's (this crate reads no clock).

use retrace_events::{BlobId, Decision, Event, EventKind, Head, RunId, Timestamp, canonical_json};
use retrace_store::Store;
use serde_json::json;

use crate::fold::Error;
use crate::snapshot::{SnapshotPolicy, state_at_head};

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// Nothing is waiting for a decision.
    #[error("run {run} has no pending approval{}", asked.as_ref().map(|c| format!(" (asked about `{c}`)")).unwrap_or_default())]
    NonePending {
        /// The run.
        run: RunId,
        /// The call asked about, if any.
        asked: Option<String>,
    },
    /// The call named is not pending.
    #[error("run {run} has no pending approval for `{asked}`; pending: {}", pending.join(", "))]
    NotPending {
        /// The run.
        run: RunId,
        /// The call asked about.
        asked: String,
        /// What is pending.
        pending: Vec<String>,
    },
    /// Several are pending and none was named.
    #[error("run {run} has {} pending approvals; name one: {}", pending.len(), pending.join(", "))]
    Ambiguous {
        /// The run.
        run: RunId,
        /// What is pending.
        pending: Vec<String>,
    },
    /// Reading or writing the store failed.
    #[error(transparent)]
    Replay(#[from] Error),
}

impl From<retrace_store::Error> for DecideError {
    fn from(e: retrace_store::Error) -> Self {
        Self::Replay(Error::Store(e))
    }
}

/// Append `decision` on the pending approval `call` of `run` (the only one pending if
/// `call` is `None`), by `by`, with an optional note, at `at`. Returns the call decided and
/// the run's new head.
pub fn decide_approval(
    store: &(impl Store + ?Sized),
    run: &RunId,
    call: Option<&str>,
    decision: Decision,
    by: &str,
    note: Option<&str>,
    at: Timestamp,
) -> Result<(String, Head), DecideError> {
    let state = state_at_head(store, run, SnapshotPolicy::default())?.state;
    let pending: Vec<String> = state.approvals_pending.keys().cloned().collect();
    let call_id = match (call, pending.as_slice()) {
        (Some(call), _) if state.approvals_pending.contains_key(call) => call.to_owned(),
        (Some(call), []) => {
            return Err(DecideError::NonePending {
                run: *run,
                asked: Some(call.to_owned()),
            });
        }
        (Some(call), _) => {
            return Err(DecideError::NotPending {
                run: *run,
                asked: call.to_owned(),
                pending,
            });
        }
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(DecideError::NonePending {
                run: *run,
                asked: None,
            });
        }
        (None, _) => return Err(DecideError::Ambiguous { run: *run, pending }),
    };
    let note: Option<BlobId> = note
        .map(|n| store.put_blob(&canonical_json(&json!(n))))
        .transpose()?;
    let head = store.require_run(run)?.head;
    let event = Event::after(
        head,
        at,
        EventKind::ApprovalDecided {
            call_id: call_id.clone(),
            decision,
            by: by.to_owned(),
            note,
        },
    );
    let new_head = store.append(run, head.map(|h| h.id), &[event])?;
    Ok((call_id, new_head))
}

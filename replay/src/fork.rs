//! Forks: a new run from event k of a run, continuing after k or with event k replaced by an
//! edited event. Constant work in the prefix length: the prefix is shared, not copied, and
//! the edit is checked against the state at k − 1 (a snapshot plus a short tail).

use retrace_events::{Decision, Event, EventKind, Head, RunId, Timestamp, canonical_json};
use retrace_store::{ForkOrigin, NewRun, RunInfo, Store};
use serde_json::Value;

use crate::apply::apply;
use crate::fold::Error;
use crate::snapshot::{SnapshotPolicy, state_at};

/// Where and how to fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForkAt {
    /// Share events `0..=seq` and continue from there.
    After(u64),
    /// Share events `0..seq` and put `kind` at `seq` instead of the original. Only a model
    /// reply, a tool result or an approval decision can be edited, into the same kind.
    Replace {
        /// The event replaced.
        seq: u64,
        /// Its edited content.
        kind: EventKind,
    },
}

/// Why a fork was refused.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The edit is not an allowed kind, or not the same kind as the event it replaces.
    #[error("cannot replace seq {seq} (a {original} event) with a {edited} event: {why}")]
    BadEdit {
        /// The seq edited.
        seq: u64,
        /// Kind of the original event.
        original: &'static str,
        /// Kind of the edit.
        edited: &'static str,
        /// What is allowed.
        why: &'static str,
    },
    /// The edited event does not apply after the shared prefix.
    #[error("the edited event does not fit at seq {seq}: {source}")]
    EditDoesNotApply {
        /// The seq edited.
        seq: u64,
        /// Why.
        #[source]
        source: crate::ApplyError,
    },
    /// The edit's content does not say what the edited kind needs.
    #[error("{0}")]
    BadContent(String),
    /// Reading or writing the store, or deriving the state, failed.
    #[error(transparent)]
    Replay(#[from] Error),
}

/// `original` with its content replaced by `value` (blobs stored as needed), for a
/// [`ForkAt::Replace`]:
/// - a model reply (`model_responded`): `value` is the new reply;
/// - a tool result (`tool_returned`): `value` is the new output (`"is_error": true` in it
///   marks an error);
/// - an approval decision (`approval_decided`): `{"decision": "approved"|"denied", "note": …}`,
///   recorded as decided `by`.
pub fn edited_kind(
    store: &(impl Store + ?Sized),
    original: EventKind,
    value: &Value,
    by: &str,
) -> Result<EventKind, ForkError> {
    Ok(match original {
        EventKind::ModelResponded {
            request_seq, usage, ..
        } => EventKind::ModelResponded {
            request_seq,
            response: store.put_blob(&canonical_json(value))?,
            usage,
        },
        EventKind::ToolReturned {
            call_id,
            duration_ms,
            ..
        } => EventKind::ToolReturned {
            is_error: value
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            output: store.put_blob(&canonical_json(value))?,
            call_id,
            duration_ms,
        },
        EventKind::ApprovalDecided { call_id, .. } => {
            let decision = match value.get("decision").and_then(Value::as_str) {
                Some("approved") => Decision::Approved,
                Some("denied") => Decision::Denied,
                other => {
                    return Err(ForkError::BadContent(format!(
                        "`decision` must be \"approved\" or \"denied\", found {other:?}"
                    )));
                }
            };
            let note = match value.get("note") {
                Some(note) => Some(store.put_blob(&canonical_json(note))?),
                None => None,
            };
            EventKind::ApprovalDecided {
                call_id,
                decision,
                by: by.to_owned(),
                note,
            }
        }
        other => {
            return Err(ForkError::BadContent(format!(
                "the event there is a {} event; only a model reply, a tool result or an \
                 approval decision can be edited",
                other.name()
            )));
        }
    })
}

impl From<retrace_store::Error> for ForkError {
    fn from(e: retrace_store::Error) -> Self {
        Self::Replay(Error::Store(e))
    }
}

/// Create run `new_id` as a fork of `from` (labels `forked_from` and `edited` say how),
/// created at `now`. An edited event keeps the original event's time.
pub fn fork(
    store: &(impl Store + ?Sized),
    from: &RunId,
    at: ForkAt,
    new_id: RunId,
    now: Timestamp,
) -> Result<RunInfo, ForkError> {
    let info = store.require_run(from)?;
    let (share_upto, edit) = match at {
        ForkAt::After(seq) => (Some(seq), None),
        ForkAt::Replace { seq, kind } => (seq.checked_sub(1), Some((seq, kind))),
    };
    let last = share_upto.or(edit.as_ref().map(|(s, _)| *s)).unwrap_or(0);
    if last >= info.len() {
        return Err(Error::NoSuchSeq {
            run: *from,
            seq: last,
            len: info.len(),
        }
        .into());
    }
    // Validate the edit before creating anything.
    let edited_event = match (&edit, share_upto) {
        (Some((seq, kind)), Some(prev)) => {
            let (original_at, original) = store
                .event_at(from, *seq)?
                .map(|(_, e)| (e.at, e.kind))
                .ok_or(Error::NoSuchSeq {
                    run: *from,
                    seq: *seq,
                    len: info.len(),
                })?;
            check_edit_kind(*seq, &original, kind)?;
            let mut state = state_at(store, from, prev, SnapshotPolicy::default())?.state;
            let head = Head {
                id: store.event_id_at(from, prev)?.ok_or(Error::NoSuchSeq {
                    run: *from,
                    seq: prev,
                    len: info.len(),
                })?,
                seq: prev,
            };
            // The edit keeps the original's time: it answers "what if this event had said X".
            let event = Event::after(Some(head), original_at, kind.clone());
            apply(&mut state, &event)
                .map_err(|source| ForkError::EditDoesNotApply { seq: *seq, source })?;
            Some(event)
        }
        (Some((seq, kind)), None) => {
            let original = store
                .event_at(from, *seq)?
                .map_or("run_started", |(_, e)| e.kind.name());
            return Err(ForkError::BadEdit {
                seq: *seq,
                original,
                edited: kind.name(),
                why: "the first event cannot be edited; start a new run with another task",
            });
        }
        (None, _) => None,
    };
    let mut new = match share_upto {
        Some(seq) => {
            let id = store.event_id_at(from, seq)?.ok_or(Error::NoSuchSeq {
                run: *from,
                seq,
                len: info.len(),
            })?;
            NewRun::fork(
                new_id,
                now,
                ForkOrigin {
                    run: *from,
                    at: Head { id, seq },
                },
            )
        }
        None => NewRun::new(new_id, now),
    };
    // the fork is the same agent: keep its name so listings read "tidy", not "run"
    if let Some(name) = info.meta.get("name") {
        new.meta.insert("name".into(), name.clone());
    }
    new.meta
        .insert("forked_from".into(), format!("{from}@{last}"));
    new.meta
        .insert("edited".into(), edited_event.is_some().to_string());
    let created = store.create_run(new)?;
    match edited_event {
        Some(event) => {
            let head = store.append(&new_id, event.parent, std::slice::from_ref(&event))?;
            Ok(RunInfo {
                head: Some(head),
                ..created
            })
        }
        None => Ok(created),
    }
}

fn check_edit_kind(seq: u64, original: &EventKind, edited: &EventKind) -> Result<(), ForkError> {
    let editable = matches!(
        original,
        EventKind::ModelResponded { .. }
            | EventKind::ToolReturned { .. }
            | EventKind::ApprovalDecided { .. }
    );
    let bad = |why| ForkError::BadEdit {
        seq,
        original: original.name(),
        edited: edited.name(),
        why,
    };
    if !editable {
        return Err(bad(
            "only a model reply, a tool result or an approval decision can be edited",
        ));
    }
    if original.tag() != edited.tag() {
        return Err(bad("an edit must keep the event's kind"));
    }
    Ok(())
}

//! Forks: a new run from event k of a run, continuing after k or with event k replaced by an
//! edited event. Constant work in the prefix length: the prefix is shared, not copied, and
//! the edit is checked against the state at k − 1 (a snapshot plus a short tail).

use retrace_events::reply::ModelReply;
use retrace_events::{Decision, Event, EventKind, Head, RunId, Timestamp, canonical_json};
use retrace_store::{ForkOrigin, NewRun, RunInfo, Store};
use serde_json::Value;

use crate::apply::apply;
use crate::fold::Error;
use crate::snapshot::{SnapshotPolicy, state_at};

/// Where and how to fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForkAt {
    /// Share events `0..=seq` and continue from there (a reply at `seq` keeps the calls it
    /// proposed: its `tool_calls_proposed` is shared too).
    After(u64),
    /// Share events `0..seq` and put `kind` at `seq` instead of the original. Only a model
    /// reply, a tool result or an approval decision can be edited, into the same kind. An
    /// edited reply's calls are proposed right after it (`tool_calls_proposed` at `seq + 1`),
    /// so the fork continues as a run that had received that reply.
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
/// [`ForkAt::Replace`]. `value` is checked against the kind's shape before anything is
/// stored; unknown fields are refused:
/// - a model reply (`model_responded`): `value` is the new reply,
///   `{"text": "…", "tool_calls": [{"id", "name", "arguments": {…}}], "stop_reason": …}`
///   (see [`ModelReply::from_edit`]); it is stored as a recorded reply is, and its calls
///   are proposed by the fork exactly as a recorded reply's are. Its `usage` tokens, when
///   given, become the event's (budgets count them); otherwise the recorded call's are
///   kept in both;
/// - a tool result (`tool_returned`): `value` is the new output, any JSON a tool could
///   return (`"is_error": true` in an object marks an error; `is_error` must be a boolean);
/// - an approval decision (`approval_decided`): `{"decision": "approved"|"denied",
///   "note": "…"}` (`note` optional, a string), recorded as decided `by`.
pub fn edited_kind(
    store: &(impl Store + ?Sized),
    original: EventKind,
    value: &Value,
    by: &str,
) -> Result<EventKind, ForkError> {
    Ok(match original {
        EventKind::ModelResponded {
            request_seq,
            mut usage,
            ..
        } => {
            let mut reply =
                ModelReply::from_edit(value).map_err(|e| ForkError::BadContent(e.to_string()))?;
            // the event and its reply say the same tokens: the edit's when it gives them
            // (budgets count them), else the recorded call's; cost and latency stay the
            // recorded call's
            if value.get("usage").is_some() {
                usage.input_tokens = reply.usage.input_tokens;
                usage.output_tokens = reply.usage.output_tokens;
            } else {
                reply.usage.input_tokens = usage.input_tokens;
                reply.usage.output_tokens = usage.output_tokens;
            }
            let reply = serde_json::to_value(&reply)
                .map_err(|e| ForkError::BadContent(format!("the reply does not serialise: {e}")))?;
            EventKind::ModelResponded {
                request_seq,
                response: store.put_blob(&canonical_json(&reply))?,
                usage,
            }
        }
        EventKind::ToolReturned {
            call_id,
            duration_ms,
            ..
        } => {
            let is_error = match value.get("is_error") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(ForkError::BadContent(format!(
                        "a tool result's `is_error` must be true or false, found {other}"
                    )));
                }
            };
            EventKind::ToolReturned {
                is_error,
                output: store.put_blob(&canonical_json(value))?,
                call_id,
                duration_ms,
            }
        }
        EventKind::ApprovalDecided { call_id, .. } => {
            let edit: DecisionEdit = serde_json::from_value(value.clone()).map_err(|e| {
                ForkError::BadContent(format!(
                    "not an approval decision: {e}; a decision is \
                     {{\"decision\": \"approved\"|\"denied\", \"note\": \"…\"}} (note optional)"
                ))
            })?;
            let note = match &edit.note {
                Some(note) => Some(store.put_blob(&canonical_json(&Value::String(note.clone())))?),
                None => None,
            };
            EventKind::ApprovalDecided {
                call_id,
                decision: edit.decision,
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

impl ForkAt {
    /// Replace the event at `seq` of `run` with the edit `value` (checked and stored by
    /// [`edited_kind`], decided `by`): the one way the CLI, the daemon's API and the
    /// inspector turn a person's edit into a fork point.
    pub fn edit(
        store: &(impl Store + ?Sized),
        run: &RunId,
        seq: u64,
        value: &Value,
        by: &str,
    ) -> Result<Self, ForkError> {
        let len = store.require_run(run)?.len();
        let (_, original) = store.event_at(run, seq)?.ok_or(Error::NoSuchSeq {
            run: *run,
            seq,
            len,
        })?;
        Ok(Self::Replace {
            seq,
            kind: edited_kind(store, original.kind, value, by)?,
        })
    }
}

/// An approval decision as an edit gives it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionEdit {
    decision: Decision,
    #[serde(default)]
    note: Option<String>,
}

/// The `tool_calls_proposed` that follows the reply `event` (at `seq`) of `run`, as the
/// executor records it after a reply: none when the reply calls no tool.
fn proposals_after(
    store: &(impl Store + ?Sized),
    run: &RunId,
    seq: u64,
    event: &EventKind,
) -> Result<Option<EventKind>, ForkError> {
    let EventKind::ModelResponded { response, .. } = event else {
        return Ok(None);
    };
    let bytes = store.blob(response)?.ok_or_else(|| {
        ForkError::BadContent(format!("run {run}: the reply blob {response} is missing"))
    })?;
    let reply: ModelReply = serde_json::from_slice(&bytes).map_err(|e| {
        ForkError::BadContent(format!(
            "run {run}: the reply blob {response} is not a reply: {e}"
        ))
    })?;
    let calls = reply.proposed_calls(|args| store.put_blob(&canonical_json(args)))?;
    Ok((!calls.is_empty()).then_some(EventKind::ToolCallsProposed {
        response_seq: seq,
        calls,
    }))
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
        ForkAt::After(seq) => (Some(after_reply(store, from, seq)?), None),
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
    // Validate the edit (and the proposals that follow an edited reply) before creating
    // anything.
    let edited_events = match (&edit, share_upto) {
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
            let mut events = vec![event];
            // An edited reply is followed as a recorded one is: its calls are proposed in the
            // same append.
            if let Some(proposed) = proposals_after(store, from, *seq, kind)? {
                let event = Event::after(Some(events[0].head()), original_at, proposed);
                apply(&mut state, &event).map_err(|source| ForkError::EditDoesNotApply {
                    seq: *seq + 1,
                    source,
                })?;
                events.push(event);
            }
            events
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
        (None, _) => Vec::new(),
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
        .insert("edited".into(), (!edited_events.is_empty()).to_string());
    let created = store.create_run(new)?;
    match edited_events.first() {
        Some(first) => {
            let head = store.append(&new_id, first.parent, &edited_events)?;
            Ok(RunInfo {
                head: Some(head),
                ..created
            })
        }
        None => Ok(created),
    }
}

/// Where a fork "after `seq`" ends its shared prefix: at `seq`, or one further when `seq` is
/// a reply whose calls were proposed right after it (a reply and its proposals are recorded
/// in one append, and a fork never separates them: the calls would be lost).
fn after_reply(store: &(impl Store + ?Sized), run: &RunId, seq: u64) -> Result<u64, ForkError> {
    let is_reply = matches!(
        store.event_at(run, seq)?,
        Some((
            _,
            Event {
                kind: EventKind::ModelResponded { .. },
                ..
            }
        ))
    );
    if !is_reply {
        return Ok(seq);
    }
    Ok(match store.event_at(run, seq + 1)? {
        Some((
            _,
            Event {
                kind: EventKind::ToolCallsProposed { response_seq, .. },
                ..
            },
        )) if response_seq == seq => seq + 1,
        _ => seq,
    })
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

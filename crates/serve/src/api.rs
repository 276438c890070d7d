//! The local API's request and response shapes (JSON), shared by the daemon and its
//! client. `docs/guide/serve.md` documents each route with these shapes.

use std::path::PathBuf;

use retrace_events::{Event, EventId, Outcome};
use retrace_replay::{SnapshotPolicy, State, describe, state_at_head};
use retrace_store::{RunInfo, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/runs`: start a run (or resume the unfinished run of the same spec and input).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The agent spec as a run records it (what `Spec::load` makes of a TOML file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    /// Or: a spec TOML file the daemon loads (a path on the daemon's machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_path: Option<PathBuf>,
    /// The task.
    pub input: String,
    /// Start a new run even if an unfinished run of this spec and input exists.
    #[serde(default)]
    pub new: bool,
}

/// The answer to [`Submit`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submitted {
    /// The run.
    pub run: String,
    /// Whether an unfinished run was taken up instead of starting one.
    pub resumed: bool,
}

/// `POST /v1/runs/{run}/approve`: decide a pending approval.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    /// The call (needed only when several are pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// Deny instead of approve.
    #[serde(default)]
    pub deny: bool,
    /// A note recorded with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who decides (recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The answer to [`Approve`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decided {
    /// The call decided.
    pub call_id: String,
    /// `approved` or `denied`.
    pub decision: String,
}

/// `POST /v1/runs/{run}/answer`: answer the question (`user.ask`) a run waits on, with
/// one of its choices or free text.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The question's call (checked if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The choice picked, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<usize>,
    /// A free-text answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Who answers (recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl Answer {
    /// The answer given: exactly one of `choice` and `text`.
    pub fn given(&self) -> Result<retrace_replay::Answer, String> {
        match (self.choice, &self.text) {
            (Some(n), None) => Ok(retrace_replay::Answer::Choice(n)),
            (None, Some(text)) => Ok(retrace_replay::Answer::Text(text.clone())),
            _ => Err("give exactly one of `choice` (from 1) and `text`".into()),
        }
    }
}

/// The answer to [`Answer`]: the call answered and its recorded result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answered {
    /// The question's call.
    pub call_id: String,
}

/// `POST /v1/runs/{run}/resolve`: settle the tool call whose outcome is unknown.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// The call (checked if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// `"retry"`, `{"skip": RESULT}` (any JSON: the call's result) or `"fail"`.
    pub how: crate::resolve::How,
    /// A note recorded with a retry or a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who resolves (recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The answer to [`Resolve`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Resolved {
    /// The call settled.
    pub call_id: String,
}

/// `POST /v1/runs/{run}/signal`: a signal into the run (`user_message` with a string
/// payload adds the user's message to the conversation at the next model call).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// Its name.
    pub name: String,
    /// Its payload (any JSON).
    #[serde(default)]
    pub payload: Value,
}

/// `POST /v1/runs/{run}/cancel`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Why (recorded, and in the run's finish reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who cancels (recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The answer to a signal, a cancel or a resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Accepted {
    /// The run.
    pub run: String,
    /// `recorded`: appended before this answer; `queued`: the run is being driven, and the
    /// drive appends it at its next step.
    pub status: String,
}

/// `POST /v1/runs/{run}/fork`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    /// The seq to fork at.
    pub at: u64,
    /// Replace the event at `at` with this content (as `retrace fork --edit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<Value>,
    /// Drive the fork on.
    #[serde(default, rename = "continue")]
    pub continue_run: bool,
}

/// The answer to [`Fork`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forked {
    /// The new run.
    pub run: String,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    /// retrace's version.
    pub version: String,
    /// The store directory.
    pub store: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Runs driven at once, at most.
    pub workers: usize,
    /// Runs being driven or waiting for a worker.
    pub active: usize,
}

/// A run as the API shows it (`GET /v1/runs`, `GET /v1/runs/{run}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// Run id.
    pub id: String,
    /// The agent's name.
    pub name: String,
    /// Where it stands, in words (`running` while driven, `parked: approval of c1`,
    /// `parked: outcome of c1 unknown`, `needs resume`, `succeeded`, `failed`, `cancelled`;
    /// see `retrace_replay::describe::standing`).
    pub status: String,
    /// Why it ended, for a finished run (the `reason` of its finish detail: a budget, a
    /// provider's error, a cancel, or the final answer's note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it has finished.
    pub finished: bool,
    /// `succeeded`, `failed` or `cancelled` once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Whether it waits for a human: an approval, an answer, or a call whose outcome is
    /// unknown.
    pub parked: bool,
    /// Calls awaiting approval.
    pub awaiting_approval: Vec<String>,
    /// The call whose outcome is unknown (after a crash), which `retrace resolve` settles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_unknown: Option<String>,
    /// The `user.ask` call waiting for an answer, which `retrace answer` (or
    /// `POST /v1/runs/{run}/answer`) gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_answer: Option<String>,
    /// Whether the daemon is driving it (or it waits for a worker).
    pub active: bool,
    /// Why the daemon's last drive of it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_error: Option<String>,
    /// Events in the run.
    pub events: u64,
    /// Model steps.
    pub steps: u64,
    /// Tool calls.
    pub tool_calls: u64,
    /// Tokens in.
    pub input_tokens: u64,
    /// Tokens out.
    pub output_tokens: u64,
    /// Cost in millionths of a dollar.
    pub cost_micro_usd: u64,
    /// Creation time (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// For a fork: `RUN@SEQ` it branched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
}

impl RunView {
    /// The view of `info` from its state at head; `active`: whether it is being driven now.
    pub fn of(
        store: &dyn Store,
        info: &RunInfo,
        active: bool,
    ) -> Result<Self, retrace_replay::Error> {
        let state = state_at_head(store, &info.id, SnapshotPolicy::default())?.state;
        Ok(Self::from_state(store, info, &state, active))
    }

    /// The view of `info` whose state at head is `state` (`store` gives a finished run's
    /// reason); `active`: whether it is being driven now.
    pub fn from_state(store: &dyn Store, info: &RunInfo, state: &State, active: bool) -> Self {
        let outcome = match &state.status {
            retrace_replay::Status::Finished { outcome, .. } => Some(*outcome),
            _ => None,
        };
        let parked = state.is_parked();
        let t = &state.totals;
        Self {
            id: info.id.to_string(),
            name: info.meta.get("name").cloned().unwrap_or_default(),
            status: describe::standing(&state.status, active),
            reason: finish_reason(store, &state.status),
            finished: state.is_finished(),
            outcome,
            parked,
            awaiting_approval: state.approvals_pending.keys().cloned().collect(),
            outcome_unknown: match &state.status {
                retrace_replay::Status::OutcomeUnknown { call_id } => Some(call_id.clone()),
                _ => None,
            },
            awaiting_answer: match &state.status {
                retrace_replay::Status::AwaitingAnswer { call_id } => Some(call_id.clone()),
                _ => None,
            },
            active,
            drive_error: None,
            events: info.len(),
            steps: t.steps,
            tool_calls: t.tool_calls,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            cost_micro_usd: t.cost_micro_usd,
            created_at_ms: info.created_at.0,
            forked_from: info.origin.map(|o| format!("{}@{}", o.run, o.at.seq)),
        }
    }
}

/// The `reason` a finished run's detail blob gives (`None` while unfinished, or when the
/// blob is unreadable: a view never fails for it).
fn finish_reason(store: &dyn Store, status: &retrace_replay::Status) -> Option<String> {
    let retrace_replay::Status::Finished { detail, .. } = status else {
        return None;
    };
    let bytes = store.blob(detail).ok()??;
    let detail: Value = serde_json::from_slice(&bytes).ok()?;
    detail
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// One event of `GET /v1/runs/{run}/events` (an SSE `event` message's data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Its seq.
    pub seq: u64,
    /// Its id.
    pub id: EventId,
    /// Its kind's name.
    pub kind: String,
    /// One line about it (as `retrace log` prints).
    pub summary: String,
    /// The event itself.
    pub event: Event,
}

impl EventView {
    /// The view of `event`, stored under `id`.
    pub fn of(id: EventId, event: Event) -> Self {
        Self {
            seq: event.seq,
            id,
            kind: event.kind.name().to_owned(),
            summary: describe::summary(&event),
            event,
        }
    }
}

/// The body of every error answer: `{"error": {"code": …, "message": …}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `not_found`, `conflict`, `too_large`, `unauthorized`
    /// (no or an unknown token), `forbidden` (the token's role does not allow it: nothing
    /// was done), `unavailable`, `internal`.
    pub code: String,
    /// In words: what, where, and what to do.
    pub message: String,
}

/// The payload of signal `name` as recorded when `by` sends it: a `cancel` carries who
/// cancels, `{"by": BY, "reason": …}` (a `null` payload becomes `{"by": BY, "reason":
/// null}`); any signal's object payload gets `by` set to the sender, whatever it said;
/// other payloads (a `user_message`'s text) are recorded as given.
pub fn signed(name: &str, payload: Value, by: &str) -> Value {
    if name != retrace_runtime::inbox::CANCEL {
        // an object payload says who sent it, and only the sender may say so
        return match payload {
            Value::Object(mut fields) => {
                fields.insert("by".into(), Value::String(by.to_owned()));
                Value::Object(fields)
            }
            other => other,
        };
    }
    match payload {
        Value::Null => serde_json::json!({"by": by, "reason": null}),
        Value::Object(mut fields) => {
            fields.insert("by".into(), Value::String(by.to_owned()));
            Value::Object(fields)
        }
        other => other,
    }
}

/// Whether a signal may be sent: its name is 1–64 characters of `a-z0-9_.`, not one the
/// runtime sends itself, and a `user_message` carries a string.
pub fn check_signal(name: &str, payload: &Value) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !well_formed {
        return Err(format!(
            "signal name `{name}`: use 1–64 characters of a-z, 0-9, `_` and `.`"
        ));
    }
    if name == retrace_replay::SPEC_SIGNAL || name == retrace_runtime::decide::LOOP_WARNING {
        return Err(format!(
            "signal `{name}` is the runtime's own and cannot be sent"
        ));
    }
    if name == retrace_runtime::inbox::USER_MESSAGE && !payload.is_string() {
        return Err("a `user_message` signal's payload is the message, a JSON string".into());
    }
    Ok(())
}

//! The determinism check: for every decision a run recorded, run today's `decide` on the
//! state the run was in and compare with what the run did. A code change that would make
//! an old run resume differently (a new budget rule, a policy default, a recovery change)
//! shows up here as the first decision that came out otherwise, before it is deployed.
//!
//! A decision point is an event that starts what a decision did: `model_requested` (call the
//! model), `tool_requested` (run a tool, or deny it when a `not run` result follows at
//! once), `approval_requested`, `tool_outcome_unknown`, a `loop_warning` signal and
//! `run_finished`. Outcomes of effects (replies, tool results, proposals) and what humans or
//! other processes add (decisions, signals, fork markers) are not decisions; they are
//! applied on the way.

use std::collections::VecDeque;

use retrace_events::{BlobId, Event, EventKind, Outcome, RunId};
use retrace_replay::{Change, State, apply, diff_json};
use retrace_runtime::decide::{Agent, LOOP_WARNING, Next};
use retrace_runtime::spec::Spec;
use retrace_store::Store;
use serde::Serialize;
use serde_json::Value;

/// Events read from the store at a time.
const BATCH: u64 = 4_096;

/// What a decision did, as comparable data: what `decide` returns and what a log shows both
/// map to this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Ask the model.
    CallModel,
    /// Ask this model of the spec's, chosen by this routing rule (`model_routed`).
    RouteModel {
        /// The model's name in the spec.
        model: String,
        /// The rule; `None` for the default, a retry or a fallback.
        rule: Option<u32>,
    },
    /// Issue again a model call whose intent is recorded.
    ReissueModel,
    /// Run a tool call.
    RunTool {
        /// The call.
        call_id: String,
        /// The tool.
        tool: String,
        /// Its arguments blob.
        args: BlobId,
    },
    /// Run again an idempotent call that was in flight at a crash.
    RerunTool {
        /// The call.
        call_id: String,
    },
    /// Ask a human to approve a call.
    AskApproval {
        /// The call.
        call_id: String,
        /// Allowed at once by a trust rule (an approval by `autonomy` in the same append):
        /// what only a call `decide` hands to a trust rule may be.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        automatic: bool,
    },
    /// Refuse a call (the model is told).
    Deny {
        /// The call.
        call_id: String,
    },
    /// Record that a call's outcome is unknown.
    MarkOutcomeUnknown {
        /// The call.
        call_id: String,
    },
    /// Warn the model that it repeats itself.
    WarnLoop,
    /// End the run.
    Finish {
        /// How.
        outcome: Outcome,
    },
    /// Wait for a human.
    Park,
    /// Nothing: the run is over.
    Done,
}

impl From<&Next> for Action {
    fn from(next: &Next) -> Self {
        match next {
            Next::CallModel { .. } => Self::CallModel,
            Next::ReissueModel { .. } => Self::ReissueModel,
            Next::RunTool {
                call_id,
                rerun: true,
                ..
            } => Self::RerunTool {
                call_id: call_id.clone(),
            },
            Next::RunTool {
                call_id,
                tool,
                args,
                ..
            } => Self::RunTool {
                call_id: call_id.clone(),
                tool: tool.clone(),
                args: *args,
            },
            Next::AskApproval { call, .. } => Self::AskApproval {
                call_id: call.call_id.clone(),
                automatic: false,
            },
            Next::Escalate { call_id, .. } => Self::AskApproval {
                call_id: call_id.clone(),
                automatic: false,
            },
            Next::Deny { call, .. } => Self::Deny {
                call_id: call.call_id.clone(),
            },
            Next::MarkOutcomeUnknown { call_id } => Self::MarkOutcomeUnknown {
                call_id: call_id.clone(),
            },
            Next::WarnLoop { .. } => Self::WarnLoop,
            Next::Finish { outcome, .. } => Self::Finish { outcome: *outcome },
            Next::Park { .. } => Self::Park,
            Next::Done => Self::Done,
        }
    }
}

/// The first decision of a run that today's `decide` makes otherwise.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    /// Seq of the event that records what the run did.
    pub seq: u64,
    /// What `decide` does now at the state before it.
    pub expected: Action,
    /// Its reason, when it gives one (a park, a finish, a denial, an approval request).
    pub expected_reason: Option<String>,
    /// What the run did.
    pub actual: Action,
    /// Where the two differ, field by field.
    pub changes: Vec<Change>,
}

/// The check of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunCheck {
    /// The run.
    pub run: RunId,
    /// Events read.
    pub events: u64,
    /// Decisions compared (up to and including a divergence).
    pub decisions: u64,
    /// The first decision made otherwise, if any.
    pub divergence: Option<Divergence>,
}

impl RunCheck {
    /// Whether every decision came out the same.
    pub fn passed(&self) -> bool {
        self.divergence.is_none()
    }
}

/// Why a run could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
    /// The log does not fold (`retrace verify` says more).
    #[error("run {run} seq {seq} does not apply: {source}")]
    Apply {
        /// The run.
        run: RunId,
        /// The event.
        seq: u64,
        /// Why.
        #[source]
        source: retrace_replay::ApplyError,
    },
    /// The spec the run recorded cannot be read or gives no agent.
    #[error("run {run}: its recorded spec {spec}: {why}")]
    Spec {
        /// The run.
        run: RunId,
        /// The spec blob.
        spec: BlobId,
        /// What is wrong.
        why: String,
    },
}

/// A `decide` to check against: today's [`retrace_runtime::decide::decide`], or in tests a
/// changed one.
pub type Decider<'a> = &'a dyn Fn(&Agent, &State) -> Next;

/// Check every decision of `run` against `decider`, stopping at the first divergence.
pub fn check_run(
    store: &(impl Store + ?Sized),
    run: &RunId,
    decider: Decider<'_>,
) -> Result<RunCheck, Error> {
    let len = store.require_run(run)?.len();
    let mut state = State::default();
    let mut agent: Option<(BlobId, Agent)> = None;
    let mut check = RunCheck {
        run: *run,
        events: 0,
        decisions: 0,
        divergence: None,
    };
    let mut window: VecDeque<Event> = VecDeque::new();
    let mut next_seq = 0;
    // the call the last before-hook decided on, until its request
    let mut hooked: Option<String> = None;
    // the last event was a `model_routed`
    let mut routed = false;
    while check.events < len {
        // keep one event of look-ahead (a denial is a request and its result together)
        if window.len() < 2 && next_seq < len {
            let last = (next_seq + BATCH - 1).min(len - 1);
            window.extend(
                store
                    .events(run, next_seq..=last)?
                    .into_iter()
                    .map(|(_, e)| e),
            );
            next_seq = last + 1;
        }
        let event = window.pop_front().expect("read above");
        // a routed call's decision is its `model_routed`; the intent beside it is its part
        let routed_call =
            matches!(event.kind, EventKind::ModelRequested { .. }) && std::mem::take(&mut routed);
        routed = matches!(event.kind, EventKind::ModelRouted { .. });
        if routed_call {
            // applied below like any other event
        } else if let Some(mut actual) = recorded_action(store, &event, window.front())? {
            let (_, current) = agent.as_ref().expect("run_started is never a decision");
            check.decisions += 1;
            let next = match &event.kind {
                // a delegate call requested beside others of its reply (their children run
                // at once): decided on its proposal while they are pending
                EventKind::ToolRequested { tool, .. }
                    if tool == retrace_runtime::delegate::TOOL
                        && !retrace_runtime::delegate::pending(&state).is_empty() =>
                {
                    retrace_runtime::decide::proposal(current, &state).unwrap_or(Next::Done)
                }
                _ => decider(current, &state),
            };
            // what a before-hook decided (a denial, new arguments) came after the decision
            // to run the proposal, which is what is compared
            if let (Some(call), Some(front)) = (&hooked, state.proposed.front())
                && front.call_id == *call
            {
                actual = Action::RunTool {
                    call_id: front.call_id.clone(),
                    tool: front.tool.clone(),
                    args: front.args,
                };
            }
            let mut expected = match (&next, &current.routing) {
                (Next::CallModel { .. }, Some(routing)) => route(store, routing, current, &state)?,
                _ => Action::from(&next),
            };
            // whether a trust rule's track record promoted the call is the store's to say:
            // what is checked is that today's `decide` lets a trust rule decide at all
            if let (
                Next::AskApproval {
                    autonomy: Some(_), ..
                },
                Action::AskApproval { automatic, .. },
                Action::AskApproval {
                    automatic: recorded,
                    ..
                },
            ) = (&next, &mut expected, &actual)
            {
                *automatic = *recorded;
            }
            if expected != actual {
                check.divergence = Some(divergence(event.seq, &next, expected, actual));
                return Ok(check);
            }
        }
        hooked = match &event.kind {
            EventKind::HookDecided {
                call_id,
                stage: retrace_events::HookStage::BeforeTool,
                ..
            } => Some(call_id.clone()),
            EventKind::HookDecided { .. } => hooked,
            _ => None,
        };
        let seq = event.seq;
        apply(&mut state, &event).map_err(|source| Error::Apply {
            run: *run,
            seq,
            source,
        })?;
        check.events += 1;
        if let Some(spec) = state.spec
            && agent.as_ref().is_none_or(|(loaded, _)| *loaded != spec)
        {
            agent = Some((spec, recorded_agent(store, run, spec)?));
        }
    }
    Ok(check)
}

/// The model today's routing chooses for the next call of a run in `state`.
fn route(
    store: &(impl Store + ?Sized),
    routing: &retrace_runtime::routing::Routing,
    agent: &Agent,
    state: &State,
) -> Result<Action, Error> {
    let reply = match retrace_runtime::routing::last_reply(state) {
        Some(blob) => store
            .blob(&blob)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
        None => None,
    };
    Ok(
        match retrace_runtime::routing::choose(routing, &agent.budgets, state, reply.as_ref()) {
            Some(route) => Action::RouteModel {
                model: route.model,
                rule: route.rule,
            },
            None => Action::CallModel,
        },
    )
}

fn divergence(seq: u64, next: &Next, expected: Action, actual: Action) -> Divergence {
    let expected_reason = match next {
        Next::Park { reason }
        | Next::Finish { reason, .. }
        | Next::Deny { reason, .. }
        | Next::AskApproval { reason, .. }
        | Next::Escalate { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    let (old, new) = (json(&expected), json(&actual));
    let mut changes = Vec::new();
    diff_json(&old, &new, &mut String::new(), &mut changes);
    Divergence {
        seq,
        expected,
        expected_reason,
        actual,
        changes,
    }
}

fn json(action: &Action) -> Value {
    serde_json::to_value(action).expect("an Action always serialises")
}

/// The agent of the spec blob `spec`.
fn recorded_agent(
    store: &(impl Store + ?Sized),
    run: &RunId,
    spec: BlobId,
) -> Result<Agent, Error> {
    let fail = |why: String| Error::Spec {
        run: *run,
        spec,
        why,
    };
    let bytes = store
        .blob(&spec)?
        .ok_or_else(|| fail("the blob is missing".into()))?;
    let spec: Spec =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("it does not decode: {e}")))?;
    Agent::for_spec(&spec).map_err(|e| fail(e.to_string()))
}

/// What the decision recorded by `event` did (`None`: `event` records no decision).
fn recorded_action(
    store: &(impl Store + ?Sized),
    event: &Event,
    next: Option<&Event>,
) -> Result<Option<Action>, Error> {
    Ok(Some(match &event.kind {
        EventKind::ModelRequested { .. } => Action::CallModel,
        EventKind::ModelRouted { model, rule, .. } => Action::RouteModel {
            model: model.clone(),
            rule: *rule,
        },
        EventKind::ToolRequested {
            call_id,
            tool,
            args,
            ..
        } => {
            if is_denial(store, call_id, next)? {
                Action::Deny {
                    call_id: call_id.clone(),
                }
            } else {
                Action::RunTool {
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    args: *args,
                }
            }
        }
        EventKind::ApprovalRequested { call_id, .. } => Action::AskApproval {
            call_id: call_id.clone(),
            automatic: matches!(next, Some(Event { kind: EventKind::ApprovalDecided { call_id: decided, by, .. }, .. })
                if decided == call_id && by == retrace_runtime::autonomy::BY),
        },
        EventKind::ToolOutcomeUnknown { call_id, .. } => Action::MarkOutcomeUnknown {
            call_id: call_id.clone(),
        },
        EventKind::SignalReceived { name, .. } if name == LOOP_WARNING => Action::WarnLoop,
        EventKind::RunFinished { outcome, .. } => Action::Finish { outcome: *outcome },
        _ => return Ok(None),
    }))
}

/// Whether the call `call_id` was denied: the executor records a denial as the request and,
/// in the same append, an error result that says it was not run.
fn is_denial(
    store: &(impl Store + ?Sized),
    call_id: &str,
    next: Option<&Event>,
) -> Result<bool, Error> {
    let Some(Event {
        kind:
            EventKind::ToolReturned {
                call_id: answered,
                output,
                is_error: true,
                duration_ms: 0,
            },
        ..
    }) = next
    else {
        return Ok(false);
    };
    if answered != call_id {
        return Ok(false);
    }
    Ok(says_not_run(store, output)?)
}

/// Whether the tool result `output` is the executor's record of a call it did not run (a
/// denial): an error whose text starts with `not run: `.
pub(crate) fn says_not_run(
    store: &(impl Store + ?Sized),
    output: &BlobId,
) -> Result<bool, retrace_store::Error> {
    let Some(bytes) = store.blob(output)? else {
        return Ok(false);
    };
    let said: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(said
        .get("error")
        .and_then(Value::as_str)
        .is_some_and(|e| e.starts_with("not run: ")))
}

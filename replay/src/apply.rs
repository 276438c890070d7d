//! [`apply`]: one event's effect on the state. Total: an event that makes no sense in the
//! current state is an [`ApplyError`], never a panic, and leaves the state unchanged.

use retrace_events::{BlobId, Decision, Event, EventKind, Timestamp};

use crate::plan::PLAN_TOOLS;
use crate::question::ASK_TOOL;
use crate::state::{
    Approval, CallSignature, Message, Pending, RECENT_CALLS, RECENT_DECISIONS, Role, State, Status,
    StepFailure,
};

/// Key of the model call in [`State::pending`] (tool calls use their call id).
pub const MODEL_CALL: &str = "model";

/// Why an event cannot follow the state it was applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Events must come in seq order without gaps.
    #[error("expected seq {expected}, got seq {found}")]
    OutOfOrder {
        /// The next seq.
        expected: u64,
        /// The event's seq.
        found: u64,
    },
    /// The first event of a run must be `run_started`, and only the first.
    #[error("{0}")]
    Start(&'static str),
    /// Nothing may follow `run_finished`.
    #[error("the run already finished; no event may follow")]
    AfterFinish,
    /// An outcome for an effect that was never started (or already finished).
    #[error("{kind} for {what} that is not pending")]
    NotPending {
        /// The event kind.
        kind: &'static str,
        /// The effect named.
        what: String,
    },
    /// An effect started while the same one is still pending.
    #[error("{kind} for {what} while it is already pending")]
    AlreadyPending {
        /// The event kind.
        kind: &'static str,
        /// The effect named.
        what: String,
    },
    /// The event is not allowed in the run's current status.
    #[error("{kind} is not allowed while the run is {status}")]
    WrongStatus {
        /// The event kind.
        kind: &'static str,
        /// The status, in words.
        status: &'static str,
    },
}

fn status_name(status: &Status) -> &'static str {
    match status {
        Status::NotStarted => "not started",
        Status::Running => "running",
        Status::AwaitingApproval { .. } => "awaiting approval",
        Status::OutcomeUnknown { .. } => "in doubt about a tool outcome",
        Status::AwaitingAnswer { .. } => "awaiting an answer",
        Status::Finished { .. } => "finished",
    }
}

/// Apply `event` to `state`. On error the state is unchanged.
pub fn apply(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let expected = state.len();
    if event.seq != expected {
        return Err(ApplyError::OutOfOrder {
            expected,
            found: event.seq,
        });
    }
    if state.is_finished() {
        return Err(ApplyError::AfterFinish);
    }
    let kind = event.kind.name();
    let seq = event.seq;
    // A parked run accepts only what resolves the park (and signals).
    let parked_ok = match (&state.status, &event.kind) {
        (
            Status::AwaitingApproval { .. },
            EventKind::ApprovalDecided { .. } | EventKind::ApprovalRequested { .. },
        )
        | (
            Status::OutcomeUnknown { .. },
            EventKind::ToolReturned { .. } | EventKind::ApprovalDecided { .. },
        )
        | (Status::AwaitingAnswer { .. }, EventKind::ToolReturned { .. })
        | (
            _,
            EventKind::SignalReceived { .. }
            | EventKind::Forked { .. }
            | EventKind::RunFinished { .. },
        ) => true,
        (
            Status::AwaitingApproval { .. }
            | Status::OutcomeUnknown { .. }
            | Status::AwaitingAnswer { .. },
            _,
        ) => false,
        _ => true,
    };
    if !parked_ok {
        return Err(ApplyError::WrongStatus {
            kind,
            status: status_name(&state.status),
        });
    }
    match &event.kind {
        EventKind::RunStarted { .. } => lifecycle(state, event)?,
        _ if seq == 0 => return Err(ApplyError::Start("the first event must be run_started")),
        EventKind::ModelRequested { .. }
        | EventKind::ModelRouted { .. }
        | EventKind::ModelResponded { .. }
        | EventKind::ModelFailed { .. }
        | EventKind::ContextCompacted { .. } => {
            model(state, event)?;
        }
        EventKind::ToolRequested { .. }
        | EventKind::ToolReturned { .. }
        | EventKind::ToolOutcomeUnknown { .. }
        | EventKind::ToolCallsProposed { .. } => {
            tool(state, event)?;
        }
        EventKind::ApprovalRequested { .. } | EventKind::ApprovalDecided { .. } => {
            approval(state, event)?;
        }
        EventKind::SignalReceived { .. }
        | EventKind::Forked { .. }
        | EventKind::RunFinished { .. } => {
            lifecycle(state, event)?;
        }
        EventKind::ChildStarted { .. } | EventKind::ChildFinished { .. } => {
            child(state, event)?;
        }
        // what a hook decided shows in the events it caused (a denial, the arguments the
        // call was requested with, the note in its result)
        EventKind::HookDecided { .. } => {}
    }
    state.seq = Some(seq);
    state.timing.last_at = event.at;
    Ok(())
}

/// Model calls: intent, reply, failure.
fn model(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let kind = event.kind.name();
    let seq = event.seq;
    match &event.kind {
        EventKind::ModelRequested { request, attempt } => {
            if !state.proposed.is_empty() {
                return Err(ApplyError::WrongStatus {
                    kind,
                    status: "still answering the tool calls of the last reply",
                });
            }
            if state.pending.contains_key(MODEL_CALL) {
                return Err(ApplyError::AlreadyPending {
                    kind,
                    what: "a model call".into(),
                });
            }
            state.deliver_deferred();
            state.last_request = Some(*request);
            state.pending.insert(
                MODEL_CALL.into(),
                Pending::Model {
                    seq,
                    attempt: *attempt,
                    request: *request,
                },
            );
        }
        EventKind::ModelResponded {
            request_seq,
            response,
            usage,
        } => {
            take_model_call(state, kind, *request_seq)?;
            state.last_model_error = None;
            state.model_failure_streak = 0;
            state.last_failure_permanent = false;
            state.totals.steps += 1;
            state.compacted_since_reply = false;
            count_usage(state, usage);
            routed_reply(state, usage, event.at);
            state.push_message(Message {
                role: Role::Assistant,
                content: *response,
                call_id: None,
                is_error: false,
                seq,
            });
        }
        EventKind::ModelFailed {
            request_seq,
            error,
            transient,
        } => {
            take_model_call(state, kind, *request_seq)?;
            state.totals.model_failures += 1;
            state.model_failure_streak += 1;
            state.last_failure_permanent = !transient;
            state.last_model_error = Some(*error);
            routed_failure(state, *transient, event.at);
        }
        EventKind::ModelRouted { model, .. } => {
            if state.pending.contains_key(MODEL_CALL) {
                return Err(ApplyError::AlreadyPending {
                    kind,
                    what: "a model call".into(),
                });
            }
            state.models.current = Some(model.clone());
        }
        EventKind::ContextCompacted { .. } => compacted(state, event)?,
        _ => {}
    }
    Ok(())
}

/// The oldest messages left the conversation (summarized or dropped).
fn compacted(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let kind = event.kind.name();
    let EventKind::ContextCompacted {
        request_seq,
        summary,
        evicted,
        usage,
        ..
    } = &event.kind
    else {
        return Ok(());
    };
    let evicted_len = usize::try_from(*evicted).unwrap_or(usize::MAX);
    if evicted_len > state.conversation.len() {
        return Err(ApplyError::NotPending {
            kind,
            what: format!(
                "{evicted} messages to evict (the conversation holds {})",
                state.conversation.len()
            ),
        });
    }
    if let Some(request_seq) = request_seq {
        take_model_call(state, kind, *request_seq)?;
        state.last_model_error = None;
        state.model_failure_streak = 0;
        state.last_failure_permanent = false;
        routed_reply(state, usage, event.at);
    }
    state.compacted_since_reply = true;
    count_usage(state, usage);
    state.conversation.drain(..evicted_len);
    state.earlier_messages += evicted;
    if summary.is_some() {
        state.summary = *summary;
    }
    state.totals.compactions += 1;
    Ok(())
}

/// A routed model call answered: its usage goes to its model, and the step's failures are
/// behind it.
fn routed_reply(state: &mut State, usage: &retrace_events::Usage, at: Timestamp) {
    let Some(model) = state.models.current.clone() else {
        return;
    };
    state.models.step_failures.clear();
    let totals = state.models.by_model.entry(model).or_default();
    totals.replies += 1;
    totals.input_tokens = totals.input_tokens.saturating_add(usage.input_tokens);
    totals.output_tokens = totals.output_tokens.saturating_add(usage.output_tokens);
    totals.cost_micro_usd = totals.cost_micro_usd.saturating_add(usage.cost_micro_usd);
    totals.last_replied_at = Some(at);
}

/// A routed model call failed: counted against its model and the step.
fn routed_failure(state: &mut State, transient: bool, at: Timestamp) {
    let Some(model) = state.models.current.clone() else {
        return;
    };
    let totals = state.models.by_model.entry(model.clone()).or_default();
    totals.failures += 1;
    totals.last_failed_at = Some(at);
    state
        .models
        .step_failures
        .push(StepFailure { model, transient });
}

/// A model call's tokens, cost and time, into the totals.
fn count_usage(state: &mut State, usage: &retrace_events::Usage) {
    add_spend(&mut state.totals, usage);
    state.timing.model_ms = state.timing.model_ms.saturating_add(usage.latency_ms);
    state.last_input_tokens = usage.input_tokens;
}

/// Tokens and cost into `t`; saturating: a log holds what a provider or an imported
/// recording said, however large.
fn add_spend(t: &mut crate::state::Totals, usage: &retrace_events::Usage) {
    t.input_tokens = t.input_tokens.saturating_add(usage.input_tokens);
    t.output_tokens = t.output_tokens.saturating_add(usage.output_tokens);
    t.cost_micro_usd = t.cost_micro_usd.saturating_add(usage.cost_micro_usd);
}

/// Tool calls: intent, result, outcome in doubt.
fn tool(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let kind = event.kind.name();
    let seq = event.seq;
    match &event.kind {
        EventKind::ToolRequested {
            call_id,
            tool,
            args,
            idempotent,
        } => {
            let retry = state.retry_approved.as_ref() == Some(call_id)
                && state.pending.contains_key(call_id);
            if call_id == MODEL_CALL || (state.pending.contains_key(call_id) && !retry) {
                return Err(ApplyError::AlreadyPending {
                    kind,
                    what: format!("tool call `{call_id}`"),
                });
            }
            if state
                .proposed
                .front()
                .is_some_and(|p| p.call_id == *call_id)
            {
                state.proposed.pop_front();
            }
            state.pending.insert(
                call_id.clone(),
                Pending::Tool {
                    seq,
                    tool: tool.clone(),
                    args: *args,
                    idempotent: *idempotent,
                },
            );
            // a question parks the run until its answer is recorded as its result
            if tool == ASK_TOOL {
                state.status = Status::AwaitingAnswer {
                    call_id: call_id.clone(),
                };
            }
            // A retry consumes its approval (a crash during it asks again) and is the same
            // call again, not a new one for loop detection.
            if retry {
                state.retry_approved = None;
            } else {
                remember_call(state, tool, *args);
            }
        }
        EventKind::ToolReturned { .. } => tool_returned(state, event)?,
        EventKind::ToolCallsProposed {
            response_seq,
            calls,
        } => {
            let answers_last_reply = state.conversation.back().is_some_and(|m| {
                m.role == Role::Assistant && m.seq == *response_seq && m.seq + 1 == seq
            });
            if !answers_last_reply {
                return Err(ApplyError::NotPending {
                    kind,
                    what: format!("a model reply at seq {response_seq} just before it"),
                });
            }
            if !state.proposed.is_empty() {
                return Err(ApplyError::AlreadyPending {
                    kind,
                    what: "tool calls of an earlier reply".into(),
                });
            }
            state.proposed.extend(calls.iter().cloned());
        }
        EventKind::ToolOutcomeUnknown { call_id, .. } => {
            if !matches!(state.pending.get(call_id), Some(Pending::Tool { .. })) {
                return Err(ApplyError::NotPending {
                    kind,
                    what: format!("tool call `{call_id}`"),
                });
            }
            // The call stays pending: a retry returns it, a skip records a result for it.
            state.status = Status::OutcomeUnknown {
                call_id: call_id.clone(),
            };
        }
        _ => {}
    }
    Ok(())
}

/// A child run of a pending delegating call: started (nothing changes until it ends), or
/// finished (its totals join the run's, so the run's budgets cap the whole tree).
fn child(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let kind = event.kind.name();
    let (EventKind::ChildStarted { call_id, .. } | EventKind::ChildFinished { call_id, .. }) =
        &event.kind
    else {
        return Ok(());
    };
    if !matches!(state.pending.get(call_id), Some(Pending::Tool { .. })) {
        return Err(ApplyError::NotPending {
            kind,
            what: format!("tool call `{call_id}`"),
        });
    }
    if let EventKind::ChildFinished { usage, .. } = &event.kind {
        add_spend(&mut state.totals, usage);
    }
    Ok(())
}

/// A tool's result: the call is no longer pending, the model will read the result, and a
/// park it answers (an unknown outcome settled, a question answered) ends.
fn tool_returned(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let EventKind::ToolReturned {
        call_id,
        output,
        is_error,
        duration_ms,
    } = &event.kind
    else {
        return Ok(());
    };
    let kind = event.kind.name();
    if let Status::AwaitingAnswer { call_id: asked } = &state.status
        && asked != call_id
    {
        return Err(ApplyError::NotPending {
            kind,
            what: format!("the answer to `{asked}` (this answers `{call_id}`)"),
        });
    }
    let tool = take_tool_call(state, kind, call_id)?;
    if !is_error && PLAN_TOOLS.contains(&tool.as_str()) {
        state.plan = Some(*output);
    }
    state.last_tool_error = is_error.then_some(tool);
    if matches!(&state.status, Status::OutcomeUnknown { call_id: c } | Status::AwaitingAnswer { call_id: c } if c == call_id)
    {
        state.status = Status::Running;
    }
    state.totals.tool_calls += 1;
    state.timing.tool_ms += duration_ms;
    state.push_message(Message {
        role: Role::Tool,
        content: *output,
        call_id: Some(call_id.clone()),
        is_error: *is_error,
        seq: event.seq,
    });
    Ok(())
}

/// Approvals: request and decision.
fn approval(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let kind = event.kind.name();
    let seq = event.seq;
    match &event.kind {
        EventKind::ApprovalRequested { call_id, request } => {
            if state.approvals_pending.contains_key(call_id) {
                return Err(ApplyError::AlreadyPending {
                    kind,
                    what: format!("approval of `{call_id}`"),
                });
            }
            state.approvals_pending.insert(
                call_id.clone(),
                Approval {
                    call_id: call_id.clone(),
                    request: *request,
                    requested_seq: seq,
                    decision: None,
                    by: None,
                    note: None,
                },
            );
            state.status = Status::AwaitingApproval {
                call_id: call_id.clone(),
            };
        }
        EventKind::ApprovalDecided {
            call_id,
            decision,
            by,
            note,
        } => {
            if matches!(&state.status, Status::OutcomeUnknown { call_id: c } if c == call_id) {
                // Resolving an unknown outcome: approved means "run it again".
                if *decision != Decision::Approved {
                    return Err(ApplyError::WrongStatus {
                        kind,
                        status: "in doubt about a tool outcome (deny is not a resolution: skip with a result, or fail the run)",
                    });
                }
                state.retry_approved = Some(call_id.clone());
                state.status = Status::Running;
                return Ok(());
            }
            let Some(mut approval) = state.approvals_pending.remove(call_id) else {
                return Err(ApplyError::NotPending {
                    kind,
                    what: format!("approval of `{call_id}`"),
                });
            };
            approval.decision = Some(*decision);
            approval.by = Some(by.clone());
            approval.note = *note;
            if *decision == Decision::Denied {
                state.denials += 1;
            } else if let Some(budget) = crate::state::escalation_budget(call_id) {
                // spent as of this decision (the wall clock up to it)
                state.timing.last_at = event.at;
                let from = state.spent(budget).unwrap_or(0);
                let escalated = state.escalations.entry(budget.to_owned()).or_default();
                escalated.approved += 1;
                escalated.from = from;
            }
            if state.approvals_decided.len() == RECENT_DECISIONS {
                state.approvals_decided.pop_front();
            }
            state.approvals_decided.push_back(approval);
            state.status = match state.approvals_pending.keys().next() {
                Some(next) => Status::AwaitingApproval {
                    call_id: next.clone(),
                },
                None => Status::Running,
            };
        }
        _ => {}
    }
    Ok(())
}

/// Start, signals, fork marker, finish.
fn lifecycle(state: &mut State, event: &Event) -> Result<(), ApplyError> {
    let seq = event.seq;
    match &event.kind {
        EventKind::RunStarted { run, spec, input } => {
            if seq != 0 {
                return Err(ApplyError::Start("run_started may only be the first event"));
            }
            state.run = Some(*run);
            state.timing.started_at = event.at;
            state.spec = Some(*spec);
            state.input = Some(*input);
            state.status = Status::Running;
            state.push_message(Message {
                role: Role::User,
                content: *input,
                call_id: None,
                is_error: false,
                seq,
            });
        }
        EventKind::SignalReceived { name, payload } => {
            *state.signals.entry(name.clone()).or_default() += 1;
            match name.as_str() {
                // a user's message joins the conversation with the next model call
                "user_message" => state.deferred_messages.push_back(Message {
                    role: Role::User,
                    content: *payload,
                    call_id: None,
                    is_error: false,
                    seq,
                }),
                // the runtime's corrective note (the loop guard), as recorded runs had it
                "loop_warning" => state.push_message(Message {
                    role: Role::User,
                    content: *payload,
                    call_id: None,
                    is_error: false,
                    seq,
                }),
                "cancel" => state.cancel_requested = Some(*payload),
                // from here on the run follows another spec (an eval case's overrides)
                SPEC_SIGNAL => state.spec = Some(*payload),
                _ => {}
            }
        }
        EventKind::Forked {
            from_run, from_seq, ..
        } => state.forked_from = Some((*from_run, *from_seq)),
        EventKind::RunFinished { outcome, detail } => {
            state.pending.clear();
            state.proposed.clear();
            state.retry_approved = None;
            state.approvals_pending.clear();
            state.status = Status::Finished {
                outcome: *outcome,
                detail: *detail,
            };
        }

        _ => {}
    }
    Ok(())
}

fn take_model_call(
    state: &mut State,
    kind: &'static str,
    request_seq: u64,
) -> Result<(), ApplyError> {
    match state.pending.get(MODEL_CALL) {
        Some(Pending::Model { seq, .. }) if *seq == request_seq => {
            state.pending.remove(MODEL_CALL);
            Ok(())
        }
        _ => Err(ApplyError::NotPending {
            kind,
            what: format!("the model call at seq {request_seq}"),
        }),
    }
}

/// Name of the signal whose payload is the spec the run follows from then on.
pub const SPEC_SIGNAL: &str = "spec";

/// Keep a call's signature for loop detection (the last [`RECENT_CALLS`]).
fn remember_call(state: &mut State, tool: &str, args: BlobId) {
    if state.recent_calls.len() == RECENT_CALLS {
        state.recent_calls.pop_front();
    }
    state.recent_calls.push_back(CallSignature {
        tool: tool.to_owned(),
        args,
    });
}

/// Remove the pending tool call `call_id`, giving its tool's name.
fn take_tool_call(
    state: &mut State,
    kind: &'static str,
    call_id: &str,
) -> Result<String, ApplyError> {
    match state.pending.get(call_id) {
        Some(Pending::Tool { tool, .. }) => {
            let tool = tool.clone();
            state.pending.remove(call_id);
            Ok(tool)
        }
        _ => Err(ApplyError::NotPending {
            kind,
            what: format!("tool call `{call_id}`"),
        }),
    }
}

//! `decide`: what the agent does next, from the state alone.
//!
//! Pure: it reads the [`State`] and the static parts of the agent (budgets, policy, which
//! tools exist and whether they are idempotent), never the clock or a blob. Wall time comes
//! from the recorded event times. The executor performs the returned [`Next`] and records
//! what happened; replaying `decide` over a recorded prefix must give what the run did next
//! (the determinism check).

use std::collections::BTreeMap;

use retrace_events::{BlobId, Decision, Outcome, ProposedCall};
use retrace_replay::{MODEL_CALL, Pending, Role, State, Status};

use crate::policy::Policy;
use crate::spec::{Action, Budgets, Spec};
use crate::tools::{OnError, Tier};

/// Consecutive transient model failures tolerated before the run fails.
pub const MODEL_RETRIES: u32 = 3;

/// The tool name a soft budget's escalation shows in its approval request (its arguments
/// are the figures: `budget`, `soft`, `spent`).
pub const ESCALATION_TOOL: &str = "budget.escalation";

/// Name of the signal that carries the loop guard's corrective message.
pub const LOOP_WARNING: &str = "loop_warning";

/// What a tool is, as far as deciding goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToolMeta {
    /// Policy tier.
    pub tier: Tier,
    /// Safe to re-run after a crash.
    pub idempotent: bool,
    /// What an error from it does to the run.
    pub on_error: OnError,
}

/// The static parts of an agent that decisions depend on.
#[derive(Clone, Debug)]
pub struct Agent {
    /// Limits.
    pub budgets: Budgets,
    /// Policy rules.
    pub policy: Policy,
    /// Tools available, by name.
    pub tools: BTreeMap<String, ToolMeta>,
    /// Routing between models, if the spec routes.
    pub routing: Option<crate::routing::Routing>,
    /// Trust rules.
    pub autonomy: Vec<crate::autonomy::TrustRule>,
}

impl Agent {
    /// The agent `spec` declares, from the spec alone: its tools are not loaded or
    /// connected, so a spec recorded on another machine (a bundle's) gives the same agent.
    pub fn for_spec(spec: &Spec) -> Result<Self, crate::policy::Error> {
        let meta = |tier, idempotent, on_error| ToolMeta {
            tier,
            idempotent,
            on_error,
        };
        let mut tools: BTreeMap<String, ToolMeta> = spec
            .tools
            .iter()
            .filter_map(|name| crate::tools::builtin_info(name))
            .map(|i| (i.name, meta(i.tier, i.idempotent, i.on_error)))
            .collect();
        for m in &spec.wasm {
            tools.insert(m.name.clone(), meta(m.tier, m.idempotent, m.on_error));
        }
        for i in crate::tools::declared(spec) {
            tools.insert(i.name, meta(i.tier, i.idempotent, i.on_error));
        }
        if spec.context.is_some() {
            let info = crate::context::artifact::info();
            tools.insert(info.name, meta(info.tier, info.idempotent, info.on_error));
        }
        // a run imported from another agent's recording calls that agent's tools: an eval
        // serves their calls from the recording (retrace cannot run them)
        for def in spec.imported.iter().flat_map(|i| &i.tools) {
            tools
                .entry(def.name.clone())
                .or_insert_with(|| meta(Tier::Read, false, OnError::default()));
        }
        for server in &spec.mcp {
            for tool in server.catalog.iter().flatten() {
                tools.insert(
                    server.tool_name(&tool.name),
                    meta(server.tier, server.idempotent, server.on_error),
                );
            }
        }
        Ok(Self {
            budgets: spec.budgets.clone(),
            policy: Policy::new(&spec.policy)?,
            tools,
            routing: spec.routing.clone(),
            autonomy: spec.autonomy.clone(),
        })
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Ask the model, with the conversation so far. `step` numbers the model calls of the run
    /// (replies and failures), so a resumed run asks for the same step.
    CallModel {
        /// Model calls made so far.
        step: u64,
    },
    /// A model call was in flight when the process stopped: issue it again.
    ReissueModel {
        /// Its request.
        request: BlobId,
        /// Its attempt number.
        attempt: u32,
        /// Its step.
        step: u64,
    },
    /// Run a tool call (a proposal allowed or approved, or an idempotent call in flight at a
    /// crash when `rerun`).
    RunTool {
        /// The call.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Arguments blob.
        args: BlobId,
        /// Whether it is being re-run after a crash (its intent is already recorded).
        rerun: bool,
        /// Whether re-running it after a crash is safe: the tool's declaration, or the
        /// deciding policy rule's `idempotent`.
        idempotent: bool,
    },
    /// The policy says ask: request approval and park.
    AskApproval {
        /// The proposal.
        call: ProposedCall,
        /// Why (the rule that matched).
        reason: String,
        /// The `[[autonomy]]` rule (its index) that may allow the call without asking: a
        /// `semi` one when the track record promotes ([`crate::autonomy`]), an
        /// `autonomous` one always. The executor decides and records it.
        autonomy: Option<usize>,
    },
    /// A soft budget was passed: ask a human whether the run may go on (an approval named
    /// `escalation:BUDGET:N`) and park.
    Escalate {
        /// The approval's call id.
        call_id: String,
        /// Which budget (`tokens`, `cost`, `wall_secs`, `steps`).
        budget: String,
        /// What was spent, in the budget's unit (micro-USD for cost, seconds for time).
        spent: u64,
        /// The limit passed, in the same unit.
        limit: u64,
        /// In words.
        reason: String,
    },
    /// Refuse the call; the model is told (as a failed tool result).
    Deny {
        /// The proposal.
        call: ProposedCall,
        /// Why.
        reason: String,
        /// The human's note on a denial (a JSON string blob), told to the model after the
        /// reason.
        note: Option<BlobId>,
    },
    /// A non-idempotent tool was in flight at a crash: record that its outcome is unknown.
    MarkOutcomeUnknown {
        /// The call in doubt.
        call_id: String,
    },
    /// Tell the model it is repeating itself (once), as a user message.
    WarnLoop {
        /// The message.
        message: String,
    },
    /// Nothing to do until a human acts (an approval, or resolving an unknown outcome).
    Park {
        /// What is awaited.
        reason: String,
    },
    /// End the run.
    Finish {
        /// How.
        outcome: Outcome,
        /// Why, in words (for failures and cancellations; the final reply for success).
        reason: String,
    },
    /// The run is over already.
    Done,
}

/// Decide the next step of `agent` in `state`.
pub fn decide(agent: &Agent, state: &State) -> Next {
    match &state.status {
        Status::Finished { .. } => return Next::Done,
        Status::NotStarted => {
            return Next::Park {
                reason: "the run has not started".into(),
            };
        }
        _ if state.cancel_requested.is_some() => {
            return Next::Finish {
                outcome: Outcome::Cancelled,
                reason: "cancelled by a signal".into(),
            };
        }
        Status::AwaitingApproval { call_id } => {
            return Next::Park {
                reason: format!("awaiting approval of {call_id}"),
            };
        }
        Status::OutcomeUnknown { call_id } => {
            return Next::Park {
                reason: format!(
                    "the outcome of {call_id} is unknown; resolve it (retry, skip or fail)"
                ),
            };
        }
        Status::AwaitingAnswer { call_id } => {
            return Next::Park {
                reason: format!("awaiting an answer to {call_id} (retrace answer)"),
            };
        }
        Status::Running => {}
    }
    if let Some(next) = recover_in_flight(agent, state) {
        return next;
    }
    if let Some(next) = model_gave_up(agent, state).or_else(|| tool_stopped(agent, state)) {
        return next;
    }
    if let Some(next) = over_budget(&agent.budgets, state)
        .or_else(|| escalation(&agent.budgets, state))
        .or_else(|| looping(&agent.budgets, state))
    {
        return next;
    }
    if let Some(call) = state.proposed.front() {
        return handle_proposal(agent, state, call);
    }
    match state.conversation.back() {
        // a user's message that came after the final answer asks for another reply
        Some(last) if last.role == Role::Assistant && state.deferred_messages.is_empty() => {
            Next::Finish {
                outcome: Outcome::Succeeded,
                reason: "the model gave its final answer".into(),
            }
        }
        _ => Next::CallModel {
            step: state.totals.steps + state.totals.model_failures,
        },
    }
}

/// The decision on the reply's next proposal alone (what the executor asks of the calls
/// that delegate beside one already running: their children run at once); `None` when
/// nothing is proposed.
pub fn proposal(agent: &Agent, state: &State) -> Option<Next> {
    state
        .proposed
        .front()
        .map(|call| handle_proposal(agent, state, call))
}

/// The last tool result was an error from a tool whose errors end the run.
fn tool_stopped(agent: &Agent, state: &State) -> Option<Next> {
    let tool = state.last_tool_error.as_ref()?;
    let meta = agent.tools.get(tool)?;
    (meta.on_error == OnError::Stop).then(|| Next::Finish {
        outcome: Outcome::Failed,
        reason: format!("`{tool}` failed, and its errors stop the run (on_error = \"stop\")"),
    })
}

/// Effects whose intent is logged but whose outcome is not: the process stopped mid-way.
fn recover_in_flight(agent: &Agent, state: &State) -> Option<Next> {
    if let Some(Pending::Model {
        request, attempt, ..
    }) = state.pending.get(MODEL_CALL)
    {
        return Some(Next::ReissueModel {
            request: *request,
            attempt: *attempt,
            step: state.totals.steps + state.totals.model_failures,
        });
    }
    let (call_id, pending) = state.pending.iter().find(|(k, _)| *k != MODEL_CALL)?;
    let Pending::Tool {
        tool,
        args,
        idempotent,
        ..
    } = pending
    else {
        return None;
    };
    // A human approved a retry: record a new intent (consuming the approval), then run.
    if state.retry_approved.as_ref() == Some(call_id) {
        return Some(Next::RunTool {
            call_id: call_id.clone(),
            tool: tool.clone(),
            args: *args,
            rerun: false,
            idempotent: *idempotent,
        });
    }
    // The recorded declaration decides; a tool since removed from the agent is in doubt too.
    let safe = *idempotent && agent.tools.contains_key(tool);
    Some(if safe {
        Next::RunTool {
            call_id: call_id.clone(),
            tool: tool.clone(),
            args: *args,
            rerun: true,
            idempotent: true,
        }
    } else {
        Next::MarkOutcomeUnknown {
            call_id: call_id.clone(),
        }
    })
}

/// The model failed for good: permanently once, or transiently [`MODEL_RETRIES`] times in
/// a row. (Fewer transient failures: the next `CallModel` retries, after a backoff.)
fn model_gave_up(agent: &Agent, state: &State) -> Option<Next> {
    state.last_model_error?;
    // a routed run goes on while a model of the step's chain is left
    if let Some(routing) = &agent.routing
        && state.models.current.is_some()
    {
        return crate::routing::gave_up(routing, state).map(|reason| Next::Finish {
            outcome: Outcome::Failed,
            reason,
        });
    }
    let reason = if state.last_failure_permanent {
        "the model call failed and retrying will not help".to_owned()
    } else if state.model_failure_streak >= MODEL_RETRIES {
        format!(
            "the model call failed {} times in a row",
            state.model_failure_streak
        )
    } else {
        return None;
    };
    Some(Next::Finish {
        outcome: Outcome::Failed,
        reason,
    })
}

fn over_budget(budgets: &Budgets, state: &State) -> Option<Next> {
    let t = &state.totals;
    let fail = |reason: String| {
        Some(Next::Finish {
            outcome: Outcome::Failed,
            reason,
        })
    };
    if let Some(max) = budgets.max_steps
        && t.steps >= max
        && state.proposed.is_empty()
    {
        return fail(format!(
            "budget exhausted: {} model steps (max_steps = {max})",
            t.steps
        ));
    }
    let tokens = t.tokens();
    if let Some(max) = budgets.max_tokens
        && tokens > max
    {
        return fail(format!(
            "budget exhausted: {tokens} tokens (max_tokens = {max})"
        ));
    }
    if let Some(max) = budgets.max_cost_usd
        && t.cost_micro_usd > usd_to_micro(max)
    {
        return fail(format!(
            "budget exhausted: cost ${}.{:06} (max_cost_usd = {max})",
            t.cost_micro_usd / 1_000_000,
            t.cost_micro_usd % 1_000_000
        ));
    }
    let elapsed_ms = state.timing.elapsed_ms();
    if let Some(max) = budgets.max_wall_secs
        && elapsed_ms > max.saturating_mul(1_000)
    {
        return fail(format!(
            "budget exhausted: {} s of wall time (max_wall_secs = {max})",
            elapsed_ms / 1_000
        ));
    }
    None
}

/// A soft budget passed (or a denied escalation): ask a human, or end the run.
fn escalation(budgets: &Budgets, state: &State) -> Option<Next> {
    // a denied escalation ends the run, saying who denied it
    if let Some(denied) = state.approvals_decided.back().filter(|a| {
        a.decision == Some(Decision::Denied)
            && retrace_replay::escalation_budget(&a.call_id).is_some()
    }) {
        return Some(Next::Finish {
            outcome: Outcome::Failed,
            reason: format!(
                "the run passed a soft budget and {} did not let it go on ({})",
                denied.by.as_deref().unwrap_or("a human"),
                denied.call_id
            ),
        });
    }
    if !state.proposed.is_empty() {
        return None;
    }
    let soft = [
        ("steps", budgets.soft_max_steps),
        ("tokens", budgets.soft_max_tokens),
        ("cost", budgets.soft_max_cost_usd.map(usd_to_micro)),
        ("wall_secs", budgets.soft_max_wall_secs),
    ];
    soft.into_iter().find_map(|(budget, limit)| {
        let limit = limit.filter(|l| *l > 0)?;
        let spent = state.spent(budget)?;
        let escalated = state.escalations.get(budget).copied().unwrap_or_default();
        let at = if escalated.approved == 0 {
            limit
        } else {
            escalated.from.saturating_add(limit)
        };
        (spent >= at).then(|| Next::Escalate {
            call_id: format!(
                "{}{budget}:{}",
                retrace_replay::ESCALATION,
                escalated.approved + 1
            ),
            budget: budget.to_owned(),
            spent,
            limit: at,
            reason: escalation_reason(budget, spent, limit, escalated.approved),
        })
    })
}

/// What an escalation asks, in the budget's own words and units.
fn escalation_reason(budget: &str, spent: u64, limit: u64, approved: u32) -> String {
    let key = match budget {
        "cost" => "soft_max_cost_usd",
        "steps" => "soft_max_steps",
        "tokens" => "soft_max_tokens",
        _ => "soft_max_wall_secs",
    };
    let shown = |n: u64| match budget {
        "cost" => retrace_replay::describe::usd(n),
        "steps" => format!("{n} model steps"),
        "tokens" => format!("{n} tokens"),
        _ => format!("{n} s of wall time"),
    };
    let limit_shown = if budget == "cost" {
        f64_usd(limit)
    } else {
        limit.to_string()
    };
    let extended = match approved {
        0 => String::new(),
        1 => ", extended once".to_owned(),
        n => format!(", extended {n} times"),
    };
    format!(
        "soft budget passed: {} ({key} = {limit_shown}{extended}); approve to go on for \
         another {}, or deny to stop the run",
        shown(spent),
        shown(limit)
    )
}

/// Micro-USD as dollars, the way a spec writes them (`0.002`).
fn f64_usd(micro: u64) -> String {
    let text = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn usd_to_micro(usd: f64) -> u64 {
    // `as` saturates: a negative budget is 0, an absurd one u64::MAX, NaN 0.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let micro = (usd * 1e6) as u64;
    micro
}

/// The same tool call (tool and arguments) `loop_limit` times in a row: warn once, then fail.
fn looping(budgets: &Budgets, state: &State) -> Option<Next> {
    let limit = usize::try_from(budgets.loop_limit?).ok()?.max(2);
    let recent = &state.recent_calls;
    if recent.len() < limit || !state.proposed.is_empty() {
        return None;
    }
    let last = recent.back()?;
    let repeats = recent.iter().rev().take_while(|c| *c == last).count();
    if repeats < limit {
        return None;
    }
    let warned = state.signals.get(LOOP_WARNING).copied().unwrap_or(0);
    if warned == 0 {
        Some(Next::WarnLoop {
            message: format!(
                "You have called {} with the same arguments {repeats} times in a row. That is not making progress; \
                 try a different approach or give your final answer.",
                last.tool
            ),
        })
    } else if repeats > limit {
        Some(Next::Finish {
            outcome: Outcome::Failed,
            reason: format!(
                "loop: {} called with the same arguments {repeats} times in a row, after a warning",
                last.tool
            ),
        })
    } else {
        None
    }
}

/// What to do with the proposal `call` (the front of `state.proposed`): run it, ask, or
/// deny it.
pub(crate) fn handle_proposal(agent: &Agent, state: &State, call: &ProposedCall) -> Next {
    let deny = |reason: String| Next::Deny {
        call: call.clone(),
        reason,
        note: None,
    };
    let Some(meta) = agent.tools.get(&call.tool) else {
        return deny(format!(
            "there is no tool `{}` (available: {})",
            call.tool,
            agent.tools.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    };
    let verdict = agent
        .policy
        .check(&call.tool, meta.tier, call.path.as_deref());
    let idempotent = verdict.idempotent.unwrap_or(meta.idempotent);
    // a decision is on this proposal only if it was asked for after the reply that made
    // it: a model that reuses call ids (`call_0` in every reply) does not inherit the
    // approval of an earlier call
    let replied = state
        .conversation
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant)
        .map_or(0, |m| m.seq);
    if let Some(decided) = state
        .approvals_decided
        .iter()
        .rev()
        .find(|a| a.call_id == call.call_id && a.requested_seq > replied)
    {
        return match decided.decision {
            Some(Decision::Approved) => run(call, idempotent),
            _ => Next::Deny {
                call: call.clone(),
                reason: format!("denied by {}", decided.by.as_deref().unwrap_or("a human")),
                note: decided.note,
            },
        };
    }
    // graduated autonomy: supervised asks even where the policy allows; semi and
    // autonomous may allow what it asks about, never a destructive tool or a denial
    let trust =
        crate::autonomy::rule_for(&agent.autonomy, &call.tool, meta.tier, call.path.as_deref());
    match (verdict.action, trust) {
        (Action::Allow, Some((i, rule))) if rule.level == crate::autonomy::Level::Supervised => {
            Next::AskApproval {
                call: call.clone(),
                reason: format!("autonomy rule {i}: supervised `{}`", rule.tool),
                autonomy: None,
            }
        }
        (Action::Allow, _) => run(call, idempotent),
        (Action::Ask, trust) => Next::AskApproval {
            call: call.clone(),
            reason: verdict.reason,
            autonomy: trust
                .filter(|(_, r)| {
                    r.level != crate::autonomy::Level::Supervised && meta.tier != Tier::Destructive
                })
                .map(|(i, _)| i),
        },
        (Action::Deny, _) => deny(verdict.reason),
    }
}

fn run(call: &ProposedCall, idempotent: bool) -> Next {
    Next::RunTool {
        call_id: call.call_id.clone(),
        tool: call.tool.clone(),
        args: call.args,
        rerun: false,
        idempotent,
    }
}

//! Running one eval case: fork the recording at the case's point, switch the fork to the
//! overridden spec (a recorded `spec` signal, so the fork's log says what it ran with),
//! drive it with today's runtime while tool calls are served from the recording, replay
//! the recording's approval decisions (as made, by whom) when the fork asks the same,
//! then compare the fork
//! with the recording and judge the expectations.

use std::sync::Mutex;
use std::time::Instant;

use retrace_events::{BlobId, Event, EventKind, RunId, Timestamp};
use retrace_replay::{ForkAt, SPEC_SIGNAL, SnapshotPolicy, State, fork, state_at, state_at_head};
use retrace_runtime::executor::{Around, Runner, Served, Stop, ToolSource};
use retrace_runtime::spec::Spec;
use retrace_store::Store;
use serde::Serialize;
use serde_json::Value;

use crate::suite::{Case, Unmatched};

/// How a case went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CaseReport {
    /// The case.
    pub name: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// What did not hold, or what went wrong.
    pub failures: Vec<String>,
    /// The recorded run.
    pub recording: Option<RunId>,
    /// The fork the case ran as (inspect it like any run).
    pub fork: Option<RunId>,
    /// The first seq where the fork differs from the recording (timing aside).
    pub first_divergence: Option<u64>,
    /// Model replies of the fork.
    pub steps: u64,
    /// Tokens of the fork, in and out.
    pub tokens: u64,
    /// Cost of the fork, millionths of a US dollar.
    pub cost_micro_usd: u64,
    /// The fork against the recording: steps, tokens, cost.
    pub delta: Delta,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

/// Differences of a fork's totals from the recording's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Delta {
    /// Steps.
    pub steps: i64,
    /// Tokens.
    pub tokens: i64,
    /// Cost, millionths of a US dollar.
    pub cost_micro_usd: i64,
}

/// Run `case` against the recording `recording` in `store`, as fork `fork_id`.
pub async fn run_case(
    store: &dyn Store,
    case: &Case,
    recording: RunId,
    fork_id: RunId,
) -> CaseReport {
    let started = Instant::now();
    let mut report = CaseReport {
        name: case.name.clone(),
        recording: Some(recording),
        ..CaseReport::default()
    };
    // boxed: it holds a whole runner and its drive
    if let Err(why) = Box::pin(drive_case(store, case, recording, fork_id, &mut report)).await {
        report.failures.push(why);
    }
    report.passed = report.failures.is_empty();
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

async fn drive_case(
    store: &dyn Store,
    case: &Case,
    recording: RunId,
    fork_id: RunId,
    report: &mut CaseReport,
) -> Result<(), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let recorded = store
        .events(&recording, 0..=u64::MAX)
        .map_err(|e| text(&e))?;
    let at = state_at(store, &recording, case.fork_at, SnapshotPolicy::default())
        .map_err(|e| text(&e))?
        .state;
    let spec = spec_of(store, &at)?;
    let mut spec_now = case.overrides.apply(&spec)?;
    // An imported run's tools are another agent's: they never run here (their calls are
    // served from the recording), but an agent needs a workspace; an empty one, unless the
    // case gives one.
    // (held until the case ends: the directory goes with it)
    let _scratch = if spec_now.imported.is_some() && case.overrides.workspace.is_none() {
        let dir = tempfile::tempdir().map_err(|e| format!("a workspace for the case: {e}"))?;
        spec_now.workspace = dir
            .path()
            .canonicalize()
            .map_err(|e| format!("a workspace for the case: {e}"))?;
        Some(dir)
    } else {
        None
    };
    fork(
        store,
        &recording,
        ForkAt::After(case.fork_at),
        fork_id,
        now(),
    )
    .map_err(|e| text(&e))?;
    report.fork = Some(fork_id);
    store
        .set_run_meta(&fork_id, "eval", Some(&case.name))
        .map_err(|e| text(&e))?;
    if spec_now != spec {
        let blob = store
            .put_blob(&spec_now.to_canonical_bytes())
            .map_err(|e| text(&e))?;
        append(
            store,
            &fork_id,
            EventKind::SignalReceived {
                name: SPEC_SIGNAL.into(),
                payload: blob,
            },
        )?;
    }
    let provider = retrace_runtime::model::provider(&spec_now).map_err(|e| text(&e))?;
    let source = Recorded::after(store, &recorded, case.fork_at, case.unmatched_tools)?;
    let runner = Runner::new(store, spec_now, provider)
        .map_err(|e| text(&e))?
        .with_tool_source(Box::new(source));
    // each recorded decision can be replayed once at most
    let mut replays_left = recorded
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::ApprovalDecided { .. }))
        .count();
    loop {
        match runner.drive(fork_id, &mut |_| {}).await {
            // drive takes no inbox, so nothing interrupts it
            Ok(Stop::Finished(_) | Stop::Interrupted) => break,
            Ok(Stop::Parked(reason)) => {
                let replayed = replays_left > 0 && replay_decision(store, &fork_id, &recorded)?;
                replays_left = replays_left.saturating_sub(1);
                if !replayed {
                    report.failures.push(format!(
                        "the run parked ({reason}) and the recording has no decision for it"
                    ));
                    break;
                }
            }
            Err(e) => {
                report.failures.push(format!("the run stopped: {e}"));
                break;
            }
        }
    }
    let own = store.events(&fork_id, 0..=u64::MAX).map_err(|e| text(&e))?;
    report.first_divergence = first_divergence(&recorded, &own, case.fork_at);
    let state = state_at_head(store, &fork_id, SnapshotPolicy::default())
        .map_err(|e| text(&e))?
        .state;
    let recorded_state = state_at_head(store, &recording, SnapshotPolicy::default())
        .map_err(|e| text(&e))?
        .state;
    totals(report, &state, &recorded_state);
    crate::expect::judge(store, &case.expect, &state, &own, report);
    Ok(())
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

/// The spec `state` follows.
fn spec_of(store: &dyn Store, state: &State) -> Result<Spec, String> {
    let blob = state.spec.ok_or("the recording has no spec")?;
    let bytes = store
        .blob(&blob)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the recording's spec blob {blob} is missing"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the recording's spec does not decode: {e}"))
}

/// Append one event of `kind` at the head of `run`.
fn append(store: &dyn Store, run: &RunId, kind: EventKind) -> Result<(), String> {
    let head = store.require_run(run).map_err(|e| e.to_string())?.head;
    let event = Event::after(head, now(), kind);
    store
        .append(run, head.map(|h| h.id), &[event])
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The recording's decision on the approval the fork waits for (same call, same request),
/// appended to the fork; whether there was one.
fn replay_decision(
    store: &dyn Store,
    fork_id: &RunId,
    recorded: &[(retrace_events::EventId, Event)],
) -> Result<bool, String> {
    let state = state_at_head(store, fork_id, SnapshotPolicy::default())
        .map_err(|e| e.to_string())?
        .state;
    let Some((call_id, approval)) = state.approvals_pending.iter().next() else {
        return Ok(false);
    };
    let asked_the_same = recorded.iter().any(|(_, e)| {
        matches!(&e.kind, EventKind::ApprovalRequested { call_id: c, request } if c == call_id && *request == approval.request)
    });
    let decided = recorded.iter().find_map(|(_, e)| match &e.kind {
        EventKind::ApprovalDecided {
            call_id: c,
            decision,
            by,
            note,
        } if c == call_id => Some((*decision, by.clone(), *note)),
        _ => None,
    });
    let (true, Some((decision, by, note))) = (asked_the_same, decided) else {
        return Ok(false);
    };
    append(
        store,
        fork_id,
        EventKind::ApprovalDecided {
            call_id: call_id.clone(),
            decision,
            // the recorded decision, by whoever made it (a denial's reason names them)
            by,
            note,
        },
    )?;
    Ok(true)
}

fn totals(report: &mut CaseReport, state: &State, recorded: &State) {
    let (t, r) = (&state.totals, &recorded.totals);
    report.steps = t.steps;
    report.tokens = t.input_tokens + t.output_tokens;
    report.cost_micro_usd = t.cost_micro_usd;
    let diff = |a: u64, b: u64| {
        i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
    };
    report.delta = Delta {
        steps: diff(t.steps, r.steps),
        tokens: diff(report.tokens, r.input_tokens + r.output_tokens),
        cost_micro_usd: diff(t.cost_micro_usd, r.cost_micro_usd),
    };
}

/// The first seq after the fork point where the fork's own events (its spec signal left
/// out) differ from the recording's, timing and positions aside; `None` if they are the same.
fn first_divergence(
    recorded: &[(retrace_events::EventId, Event)],
    own: &[(retrace_events::EventId, Event)],
    fork_at: u64,
) -> Option<u64> {
    let start = usize::try_from(fork_at + 1).unwrap_or(usize::MAX);
    let theirs = recorded
        .iter()
        .skip(start)
        .map(|(_, e)| comparable(&e.kind));
    let ours = own
        .iter()
        .skip(start)
        .filter(|(_, e)| !matches!(&e.kind, EventKind::SignalReceived { name, .. } if name == SPEC_SIGNAL))
        .map(|(_, e)| comparable(&e.kind));
    let mut theirs = theirs.peekable();
    let mut ours = ours.peekable();
    let mut seq = fork_at + 1;
    loop {
        match (theirs.next(), ours.next()) {
            (None, None) => return None,
            (Some(a), Some(b)) if a == b => seq += 1,
            _ => return Some(seq),
        }
    }
}

/// An event's content without what differs between equal runs: how long things took, the
/// seqs events refer to (a spec signal shifts them).
fn comparable(kind: &EventKind) -> EventKind {
    let mut kind = kind.clone();
    match &mut kind {
        EventKind::ModelResponded {
            request_seq, usage, ..
        } => {
            *request_seq = 0;
            usage.latency_ms = 0;
        }
        EventKind::ModelFailed { request_seq, .. } => *request_seq = 0,
        EventKind::ContextCompacted {
            request_seq, usage, ..
        } => {
            *request_seq = request_seq.map(|_| 0);
            usage.latency_ms = 0;
        }
        EventKind::ToolCallsProposed { response_seq, .. } => *response_seq = 0,
        EventKind::ToolReturned { duration_ms, .. } => *duration_ms = 0,
        _ => {}
    }
    kind
}

/// A recorded call: tool, arguments (as proposed), output, error, and what the recording
/// holds around it (hooks' decisions, a delegate call's child).
type RecordedCall = (String, BlobId, BlobId, bool, Option<Box<Around>>);

/// Tool results served from the recording: the fork's calls after the fork point are
/// matched, in order, with the recording's calls after it (tool and arguments). The
/// recording's user messages after the fork point are given back too, each once the fork
/// has as many model replies as the recording had when it came (and no call open), so a
/// multi-turn recording (an imported session) replays turn by turn.
struct Recorded {
    /// Tool, arguments, output, error, and a delegate call's recorded child events.
    calls: Vec<RecordedCall>,
    next: Mutex<usize>,
    unmatched: Unmatched,
    /// (replies before it, the signal)
    messages: Vec<(u64, EventKind)>,
    next_message: Mutex<usize>,
}

impl Recorded {
    /// The recording's user messages after `fork_at`, each with the model replies before it.
    fn messages_after(
        recorded: &[(retrace_events::EventId, Event)],
        fork_at: u64,
    ) -> Vec<(u64, EventKind)> {
        let mut messages = Vec::new();
        let mut replies = 0u64;
        for (_, event) in recorded {
            match &event.kind {
                EventKind::ModelResponded { .. } => replies += 1,
                EventKind::SignalReceived { name, .. }
                    if name == "user_message" && event.seq > fork_at =>
                {
                    messages.push((replies, event.kind.clone()));
                }
                _ => {}
            }
        }
        messages
    }

    fn after(
        store: &dyn Store,
        recorded: &[(retrace_events::EventId, Event)],
        fork_at: u64,
        unmatched: Unmatched,
    ) -> Result<Self, String> {
        let mut requested: Vec<(String, String, BlobId)> = Vec::new();
        let mut calls = Vec::new();
        let messages = Self::messages_after(recorded, fork_at);
        // a call a before-hook decided on is matched by the arguments the model proposed,
        // and its recorded outcome (a hook's denial, or the result of the rewritten call)
        // is served: the hook is not run again
        let mut proposed: Vec<(String, BlobId)> = Vec::new();
        let mut hooked: Vec<String> = Vec::new();
        let mut started: Vec<(String, EventKind)> = Vec::new();
        let mut finished: Vec<(String, EventKind)> = Vec::new();
        let mut decided: Vec<(String, EventKind)> = Vec::new();
        let mut rewritten: Vec<(String, BlobId)> = Vec::new();
        for (_, event) in recorded.iter().filter(|(_, e)| e.seq > fork_at) {
            match &event.kind {
                EventKind::ToolCallsProposed { calls, .. } => {
                    proposed = calls.iter().map(|c| (c.call_id.clone(), c.args)).collect();
                }
                EventKind::HookDecided { call_id, stage, .. } => {
                    if *stage == retrace_events::HookStage::BeforeTool {
                        hooked.push(call_id.clone());
                    }
                    decided.push((call_id.clone(), event.kind.clone()));
                }
                EventKind::ChildStarted { call_id, .. } => {
                    started.push((call_id.clone(), event.kind.clone()));
                }
                EventKind::ChildFinished { call_id, .. } => {
                    finished.push((call_id.clone(), event.kind.clone()));
                }
                EventKind::ToolRequested {
                    call_id,
                    tool,
                    args,
                    ..
                } => {
                    let args = match proposed.iter().find(|(c, _)| c == call_id) {
                        Some((_, asked)) if hooked.contains(call_id) => {
                            if asked != args {
                                rewritten.push((call_id.clone(), *args));
                            }
                            *asked
                        }
                        _ => *args,
                    };
                    requested.push((call_id.clone(), tool.clone(), args));
                }
                // a denial is not a run of the tool (its result says `not run`)
                EventKind::ToolReturned {
                    call_id,
                    output,
                    is_error,
                    duration_ms,
                } => {
                    if let Some(i) = requested.iter().position(|(c, ..)| c == call_id) {
                        let (_, tool, args) = requested.remove(i);
                        let denied = *is_error
                            && *duration_ms == 0
                            && crate::check::says_not_run(store, output)
                                .map_err(|e| e.to_string())?;
                        if !denied || hooked.contains(call_id) {
                            let of = |list: &[(String, EventKind)]| {
                                list.iter()
                                    .rev()
                                    .find(|(c, _)| c == call_id)
                                    .map(|(_, k)| k.clone())
                            };
                            let around = Around {
                                hooks: decided
                                    .iter()
                                    .filter(|(c, _)| c == call_id)
                                    .map(|(_, k)| k.clone())
                                    .collect(),
                                args: rewritten
                                    .iter()
                                    .find(|(c, _)| c == call_id)
                                    .map(|(_, a)| *a),
                                child: of(&started).zip(of(&finished)),
                            };
                            let around = (around != Around::default()).then(|| Box::new(around));
                            calls.push((tool, args, *output, *is_error, around));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            calls,
            next: Mutex::new(0),
            unmatched,
            messages,
            next_message: Mutex::new(0),
        })
    }
}

impl ToolSource for Recorded {
    fn serve(&self, tool: &str, args: &BlobId) -> Served {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.calls.get(*next) {
            Some((t, a, output, is_error, around)) if t == tool && a == args => {
                *next += 1;
                Served::Recorded {
                    output: *output,
                    is_error: *is_error,
                    around: around.clone(),
                }
            }
            other => match self.unmatched {
                Unmatched::Live => Served::Live,
                Unmatched::Fail => Served::Refuse(match other {
                    Some((t, ..)) => format!(
                        "the recording's next call is {t} with other arguments; this case fails unmatched calls (unmatched_tools = \"live\" runs them)"
                    ),
                    None => "the recording has no more tool calls; this case fails unmatched calls (unmatched_tools = \"live\" runs them)".into(),
                }),
            },
        }
    }

    fn letters(&self, state: &State) -> Vec<EventKind> {
        if !state.proposed.is_empty() || !state.pending.is_empty() {
            return Vec::new();
        }
        let mut next = self
            .next_message
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut due = Vec::new();
        while let Some((replies, signal)) = self.messages.get(*next)
            && *replies <= state.totals.steps
        {
            due.push(signal.clone());
            *next += 1;
        }
        due
    }
}

/// The final output of a finished run: the `output` of its finish detail (or the detail).
pub fn final_output(store: &dyn Store, state: &State) -> Option<String> {
    let retrace_replay::Status::Finished { detail, .. } = state.status else {
        return None;
    };
    let bytes = store.blob(&detail).ok()??;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    Some(match value.get("output") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => value.to_string(),
    })
}

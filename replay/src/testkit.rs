//! Generators of event sequences for tests and benchmarks (deterministic from a seed).

use retrace_events::{
    BlobId, Decision, Event, EventKind, Head, Outcome, ProposedCall, RunId, Timestamp, Usage,
};

use crate::apply::MODEL_CALL;
use crate::state::{Pending, State, Status};

/// A tiny deterministic RNG (xorshift), so generators need no dependency and no entropy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next pseudo-random u64.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn blob(rng: &mut Rng) -> BlobId {
    BlobId::of(&rng.below(64).to_le_bytes())
}

/// A valid next event for `state` (what an agent loop might do), or `None` once finished.
/// `allow_finish` lets the run end.
pub fn valid_next(
    rng: &mut Rng,
    state: &State,
    head: Option<Head>,
    run: RunId,
    allow_finish: bool,
) -> Option<EventKind> {
    let Some(_) = head else {
        return Some(EventKind::RunStarted {
            run,
            spec: blob(rng),
            input: blob(rng),
        });
    };
    match &state.status {
        Status::Finished { .. } | Status::NotStarted => return None,
        Status::AwaitingApproval { call_id } => {
            return Some(EventKind::ApprovalDecided {
                call_id: call_id.clone(),
                decision: if rng.below(4) == 0 {
                    Decision::Denied
                } else {
                    Decision::Approved
                },
                by: "tester".into(),
                note: None,
            });
        }
        Status::OutcomeUnknown { call_id } | Status::AwaitingAnswer { call_id } => {
            return Some(EventKind::ToolReturned {
                call_id: call_id.clone(),
                output: blob(rng),
                is_error: true,
                duration_ms: 0,
            });
        }
        Status::Running => {}
    }
    if let Some(Pending::Model { seq, .. }) = state.pending.get(MODEL_CALL) {
        let request_seq = *seq;
        return Some(if rng.below(8) == 0 {
            EventKind::ModelFailed {
                request_seq,
                error: blob(rng),
                transient: true,
            }
        } else {
            EventKind::ModelResponded {
                request_seq,
                response: blob(rng),
                usage: Usage {
                    input_tokens: rng.below(1000),
                    output_tokens: rng.below(200),
                    cost_micro_usd: rng.below(50),
                    latency_ms: rng.below(900),
                },
            }
        });
    }
    if let Some(kind) = proposals_next(rng, state) {
        return Some(kind);
    }
    if let Some(call_id) = state.pending.keys().next().cloned() {
        return Some(match rng.below(10) {
            0 => EventKind::ToolOutcomeUnknown {
                call_id,
                reason: blob(rng),
            },
            1 if state.approvals_pending.is_empty() => EventKind::ApprovalRequested {
                call_id,
                request: blob(rng),
            },
            _ => EventKind::ToolReturned {
                call_id,
                output: blob(rng),
                is_error: rng.below(5) == 0,
                duration_ms: rng.below(100),
            },
        });
    }
    Some(fresh_step(rng, state, allow_finish))
}

/// A step when nothing is pending: finish, a signal, a tool request or a model call.
fn fresh_step(rng: &mut Rng, state: &State, allow_finish: bool) -> EventKind {
    match rng.below(12) {
        0 if allow_finish => EventKind::RunFinished {
            outcome: [Outcome::Succeeded, Outcome::Failed, Outcome::Cancelled]
                [usize::try_from(rng.below(3)).unwrap_or(0)],
            detail: blob(rng),
        },
        1 => EventKind::SignalReceived {
            name: ["user_message", "cancel", "ping"][usize::try_from(rng.below(3)).unwrap_or(0)]
                .into(),
            payload: blob(rng),
        },
        2..=5 => EventKind::ToolRequested {
            call_id: format!("call_{}", state.len()),
            tool: ["fs.read", "fs.write", "fs.search"][usize::try_from(rng.below(3)).unwrap_or(0)]
                .into(),
            args: blob(rng),
            idempotent: rng.below(2) == 0,
        },
        _ if !state.proposed.is_empty() => EventKind::SignalReceived {
            name: "ping".into(),
            payload: blob(rng),
        },
        _ => EventKind::ModelRequested {
            request: blob(rng),
            attempt: 1,
        },
    }
}

/// Proposals: right after a reply, sometimes propose tool calls; request them in order.
fn proposals_next(rng: &mut Rng, state: &State) -> Option<EventKind> {
    // Right after a reply: sometimes it asked for tool calls.
    let just_replied = state
        .conversation
        .back()
        .is_some_and(|m| m.role == crate::state::Role::Assistant && Some(m.seq) == state.seq);
    if just_replied && state.proposed.is_empty() && rng.below(2) == 0 {
        let calls = (0..=rng.below(3))
            .map(|i| ProposedCall {
                call_id: format!("p{}_{i}", state.len()),
                tool: "fs.read".into(),
                args: blob(rng),
                path: Some(format!("file{}.txt", rng.below(5))),
            })
            .collect();
        return Some(EventKind::ToolCallsProposed {
            response_seq: state.seq.unwrap_or(0),
            calls,
        });
    }
    let tool_pending = state.pending.keys().any(|k| k != MODEL_CALL);
    if let (false, Some(front)) = (tool_pending, state.proposed.front()) {
        return Some(EventKind::ToolRequested {
            call_id: front.call_id.clone(),
            tool: front.tool.clone(),
            args: front.args,
            idempotent: true,
        });
    }
    None
}

/// A valid run of up to `len` events (shorter if it finishes), built by [`valid_next`].
pub fn valid_run(seed: u64, run: RunId, len: u64, allow_finish: bool) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut state = State::default();
    let mut head = None;
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let Some(kind) = valid_next(&mut rng, &state, head, run, allow_finish) else {
            break;
        };
        let event = Event::after(head, Timestamp(1_767_225_600_000 + out.len() as u64), kind);
        crate::apply::apply(&mut state, &event).expect("generator produced an invalid event");
        head = Some(event.head());
        out.push(event);
    }
    out
}

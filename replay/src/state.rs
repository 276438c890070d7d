//! [`State`]: what a run's log adds up to at one event — what the agent loop decides from
//! and what a human inspects.
//!
//! The state is bounded whatever the run's length: the conversation keeps the most recent
//! [`CONTEXT_MESSAGES`] messages (earlier ones stay in the log, counted in
//! [`State::earlier_messages`]), loop detection keeps the last [`RECENT_CALLS`] tool-call
//! signatures, and decided approvals keep the last [`RECENT_DECISIONS`]. That keeps
//! snapshots small, so the state at any event of a million-event run is one snapshot plus
//! a short tail away.

use std::collections::{BTreeMap, VecDeque};

use retrace_events::{BlobId, Decision, Outcome, ProposedCall, RunId, Timestamp};
use serde::{Deserialize, Serialize};

/// Messages kept in the conversation window.
pub const CONTEXT_MESSAGES: usize = 256;
/// Tool-call signatures kept for loop detection.
pub const RECENT_CALLS: usize = 32;
/// Decided approvals kept.
pub const RECENT_DECISIONS: usize = 32;

/// How the approval a soft budget's escalation asks for is named: `escalation:BUDGET:N`,
/// the `N`th escalation of `BUDGET` (`tokens`, `cost`, `wall_secs`, `steps`).
pub const ESCALATION: &str = "escalation:";

/// The budget an escalation's approval (`escalation:BUDGET:N`) is about; `None` for any
/// other call id.
pub fn escalation_budget(call_id: &str) -> Option<&str> {
    let rest = call_id.strip_prefix(ESCALATION)?;
    let (budget, n) = rest.rsplit_once(':')?;
    n.parse::<u32>().ok().map(|_| budget)
}

/// Where a run stands.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode,
)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// No event yet.
    #[default]
    NotStarted,
    /// Working: deciding, calling a model or running a tool.
    Running,
    /// Parked until a human decides on the approval of `call_id`.
    AwaitingApproval {
        /// The tool call waiting.
        call_id: String,
    },
    /// A non-idempotent tool was in flight at a crash; a human must resolve it.
    OutcomeUnknown {
        /// The call in doubt.
        call_id: String,
    },
    /// Done.
    Finished {
        /// How it ended.
        outcome: Outcome,
        /// Final output or error.
        detail: BlobId,
    },
    /// Parked until a human answers the `user.ask` call `call_id` (its `tool_returned`
    /// is the answer).
    AwaitingAnswer {
        /// The question's tool call.
        call_id: String,
    },
}

/// Who said a message.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The task or a user message sent while running.
    User,
    /// A model reply (text and tool calls, in the blob).
    Assistant,
    /// A tool result.
    Tool,
}

/// One message of the conversation. Content is a blob, resolved on demand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct Message {
    /// Who.
    pub role: Role,
    /// What (a blob id: the text, reply or tool output).
    pub content: BlobId,
    /// For tool messages: the call answered.
    pub call_id: Option<String>,
    /// For tool messages: whether the tool reported an error.
    pub is_error: bool,
    /// Seq of the event that added it.
    pub seq: u64,
}

/// An effect whose intent is logged and whose outcome is not (yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Pending {
    /// A model call in flight (re-issued after a crash).
    Model {
        /// Seq of its `model_requested`.
        seq: u64,
        /// Attempt number.
        attempt: u32,
        /// The request blob.
        request: BlobId,
    },
    /// A tool call requested and not returned.
    Tool {
        /// Seq of its `tool_requested`.
        seq: u64,
        /// Tool name.
        tool: String,
        /// Arguments blob.
        args: BlobId,
        /// Safe to re-run after a crash.
        idempotent: bool,
    },
}

/// An approval, asked or decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct Approval {
    /// The tool call it is about.
    pub call_id: String,
    /// What was asked.
    pub request: BlobId,
    /// Seq of the request.
    pub requested_seq: u64,
    /// The decision, once made.
    pub decision: Option<Decision>,
    /// Who decided.
    pub by: Option<String>,
    /// The decider's note (a JSON string blob): a denial's note is told to the model.
    pub note: Option<BlobId>,
}

/// Totals over the run so far.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Totals {
    /// Model replies received (agent steps).
    pub steps: u64,
    /// Model calls that failed.
    pub model_failures: u64,
    /// Tool calls that returned.
    pub tool_calls: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in millionths of a US dollar.
    pub cost_micro_usd: u64,
    /// Context compactions (`context_compacted` events).
    pub compactions: u64,
}

impl Totals {
    /// Input plus output tokens (saturating): what a token budget counts.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Wall-clock facts of a run: recorded data like everything else, but left out of the state
/// hash (see [`State::hash`]).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Timing {
    /// Time of the first event (for the wall-time budget).
    pub started_at: Timestamp,
    /// Time of the last event.
    pub last_at: Timestamp,
    /// Time spent waiting for models.
    pub model_ms: u64,
    /// Time spent in tools.
    pub tool_ms: u64,
}

impl Timing {
    /// Milliseconds from the first event to the last (recorded times: what the wall-time
    /// budget counts).
    pub fn elapsed_ms(&self) -> u64 {
        self.last_at
            .unix_ms()
            .saturating_sub(self.started_at.unix_ms())
    }
}

/// Routing between the spec's models, from `model_routed` events: empty for runs whose spec
/// has one model.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode,
)]
pub struct Models {
    /// The model (its name in the spec) the pending or last model call was routed to.
    pub current: Option<String>,
    /// The model calls of the current step that failed, oldest first (cleared by a reply):
    /// what the fallback chain walks.
    pub step_failures: Vec<StepFailure>,
    /// Replies, failures, tokens and cost by model.
    pub by_model: BTreeMap<String, ModelTotals>,
}

/// A failed model call of the current step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct StepFailure {
    /// The model that failed.
    pub model: String,
    /// Whether retrying may help.
    pub transient: bool,
}

/// One model's share of a run.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode,
)]
pub struct ModelTotals {
    /// Replies (and summaries) it gave.
    pub replies: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in millionths of a US dollar.
    pub cost_micro_usd: u64,
    /// When it last failed (recorded time; left out of the state hash).
    pub last_failed_at: Option<Timestamp>,
    /// When it last replied (recorded time; left out of the state hash).
    pub last_replied_at: Option<Timestamp>,
}

/// A tool call's signature for loop detection: tool and arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct CallSignature {
    /// Tool name.
    pub tool: String,
    /// Arguments blob (same arguments, same blob).
    pub args: BlobId,
}

/// The state of a run after some prefix of its log.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode,
)]
pub struct State {
    /// Seq of the last event applied; `None` before the first.
    pub seq: Option<u64>,
    /// The run, as named by its first event.
    pub run: Option<RunId>,
    /// Where it stands.
    pub status: Status,
    /// Canonical spec the run executes: the one it started with, or the last a `spec`
    /// signal gave it.
    pub spec: Option<BlobId>,
    /// The task input.
    pub input: Option<BlobId>,
    /// The most recent messages (see the module docs).
    pub conversation: VecDeque<Message>,
    /// Messages dropped from the front of the window.
    pub earlier_messages: u64,
    /// The latest compaction's summary of the messages evicted so far (a JSON string
    /// blob): what the model is shown after the pinned task in place of them.
    pub summary: Option<BlobId>,
    /// Prompt tokens the provider counted for the last model call (0: it reported none,
    /// or the last compaction made none): what the context budget is calibrated against.
    pub last_input_tokens: u64,
    /// Tool calls the last model reply asked for that the agent has not yet requested (or
    /// denied), in order.
    pub proposed: VecDeque<ProposedCall>,
    /// A human approved re-running this call, whose outcome was unknown; consumed when the
    /// retry's `tool_requested` is recorded.
    pub retry_approved: Option<String>,
    /// Effects started and not finished, by call id (`model` for the model call).
    pub pending: BTreeMap<String, Pending>,
    /// Approvals not yet decided, by call id.
    pub approvals_pending: BTreeMap<String, Approval>,
    /// The most recent decided approvals.
    pub approvals_decided: VecDeque<Approval>,
    /// Approvals denied so far.
    pub denials: u64,
    /// Totals.
    pub totals: Totals,
    /// The most recent tool-call signatures, oldest first.
    pub recent_calls: VecDeque<CallSignature>,
    /// The tool whose result was the last one recorded, if that result was an error (what
    /// a tool's `on_error = "stop"` is decided from).
    pub last_tool_error: Option<String>,
    /// The request blob of the run's last model call (the next request record chains to it).
    pub last_request: Option<BlobId>,
    /// The last model error, if the last model call failed.
    pub last_model_error: Option<BlobId>,
    /// Model calls failed in a row (0 after a reply).
    pub model_failure_streak: u32,
    /// Whether the last failure was permanent (retrying will not help).
    pub last_failure_permanent: bool,
    /// Set by a `cancel` signal (its payload: who and why); the runtime finishes the run
    /// as cancelled.
    pub cancel_requested: Option<BlobId>,
    /// Users' messages that arrived while an effect was in flight or calls were waiting:
    /// they join the conversation once nothing is (a message between a tool call and its
    /// result would break the exchange the model sees).
    pub deferred_messages: VecDeque<Message>,
    /// Signals received, by name.
    pub signals: BTreeMap<String, u64>,
    /// For a fork: the run and seq it branched from (from its `forked` marker).
    pub forked_from: Option<(RunId, u64)>,
    /// The agent's plan: the result of its last successful `task.set` or `task.update`
    /// (a JSON blob, [`crate::plan::Plan`]).
    pub plan: Option<BlobId>,
    /// Wall-clock facts (not hashed).
    pub timing: Timing,
    /// Routing between models (runs whose spec has `[[models]]`).
    pub models: Models,
    /// Whether a compaction happened since the last model reply (what a routing rule's
    /// `after_compaction` asks).
    pub compacted_since_reply: bool,
    /// Soft budgets a human let the run go past, by budget (`tokens`, `cost`, `wall_secs`,
    /// `steps`): the next escalation of a budget comes a soft limit after what had been
    /// spent at the last approval.
    pub escalations: BTreeMap<String, Escalated>,
}

/// A soft budget a human let the run go past.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Escalated {
    /// Escalations of it approved.
    pub approved: u32,
    /// What had been spent when the last was approved (the budget's unit: steps, tokens,
    /// micro-USD, seconds).
    pub from: u64,
}

impl State {
    /// Canonical bytes of the state (the fixed bincode configuration of the event codec).
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, bincode::config::standard())
            .expect("encoding into a Vec cannot fail")
    }

    /// The state hash: BLAKE3 of the canonical bytes of the state's *content* — what the
    /// agent knows, did and waits for — leaving out where in the log that content sits:
    /// the run id, event seqs (the state's own, and those inside messages, pending effects
    /// and approvals) and [`State::timing`].
    ///
    /// So equal content, equal hash, on any machine (ordered maps, no floats); and two runs
    /// that did the same things hash equal however long they took, however often they were
    /// killed and resumed, and whether or not a tool call of unknown outcome was resolved
    /// on the way (its `tool_outcome_unknown` and resolution events shift later seqs, but a
    /// skip or a retry leaves the same messages, totals and status as the uninterrupted
    /// call). Exact equality including positions is `==` on [`State`].
    pub fn hash(&self) -> StateHash {
        let mut content = Self {
            seq: None,
            run: None,
            timing: Timing::default(),
            ..self.clone()
        };
        for totals in content.models.by_model.values_mut() {
            totals.last_failed_at = None;
            totals.last_replied_at = None;
        }
        for message in &mut content.conversation {
            message.seq = 0;
        }
        for pending in content.pending.values_mut() {
            match pending {
                Pending::Model { seq, .. } | Pending::Tool { seq, .. } => *seq = 0,
            }
        }
        for approval in content
            .approvals_pending
            .values_mut()
            .chain(content.approvals_decided.iter_mut())
        {
            approval.requested_seq = 0;
        }
        StateHash(*blake3::hash(&content.to_canonical_bytes()).as_bytes())
    }

    /// The state as JSON, for display and diff.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a State always serialises")
    }

    /// Whether the run waits for a human: an approval, an answer, or a tool outcome in
    /// doubt.
    pub fn is_parked(&self) -> bool {
        matches!(
            self.status,
            Status::AwaitingApproval { .. }
                | Status::OutcomeUnknown { .. }
                | Status::AwaitingAnswer { .. }
        )
    }

    /// Whether the run has finished.
    pub fn is_finished(&self) -> bool {
        matches!(self.status, Status::Finished { .. })
    }

    /// What the run has spent of `budget` (`steps`, `tokens`, `cost` in micro-USD,
    /// `wall_secs` up to its last event), as soft and hard budgets count it; `None` for
    /// another name.
    pub fn spent(&self, budget: &str) -> Option<u64> {
        let t = &self.totals;
        Some(match budget {
            "steps" => t.steps,
            "tokens" => t.tokens(),
            "cost" => t.cost_micro_usd,
            "wall_secs" => self.timing.elapsed_ms() / 1_000,
            _ => return None,
        })
    }

    /// Number of events applied.
    pub fn len(&self) -> u64 {
        self.seq.map_or(0, |s| s + 1)
    }

    /// Whether no event has been applied.
    pub fn is_empty(&self) -> bool {
        self.seq.is_none()
    }

    /// Move users' deferred messages into the conversation: what recording the next model
    /// call does, so the request for it is built from the state after this.
    pub fn deliver_deferred(&mut self) {
        while let Some(message) = self.deferred_messages.pop_front() {
            self.push_message(message);
        }
    }

    pub(crate) fn push_message(&mut self, message: Message) {
        if self.conversation.len() == CONTEXT_MESSAGES {
            self.conversation.pop_front();
            self.earlier_messages += 1;
        }
        self.conversation.push_back(message);
    }
}

/// BLAKE3 of a state's canonical bytes.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct StateHash(pub [u8; 32]);

impl std::fmt::Display for StateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for StateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateHash({})", &self.to_string()[..12])
    }
}

//! The [`Event`] record and its [`EventKind`]s.
//!
//! An event is one immutable fact. It names its parent (the previous event of the run, or
//! none for a run's first event), its position `seq` in the run, the wall-clock time `at`
//! recorded by the runtime (data, never read by pure code), and what happened. Payloads
//! (requests, replies, tool arguments and outputs) are [`BlobId`]s: events stay small and a
//! payload repeated across calls or forks is stored once.
//!
//! **Compatibility rule.** The encoding of every existing kind is frozen by the golden tests.
//! A new kind may be appended at the end of [`EventKind`] (existing bytes do not change);
//! changing or reordering an existing kind or field needs a new
//! [`FORMAT_VERSION`](crate::FORMAT_VERSION).

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::{BlobId, EventId, RunId};

/// Milliseconds since the Unix epoch, as recorded by the runtime.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> u64 {
        self.0
    }
}

/// The last event of a run: its id and seq. `None` (no head) means the run has no events.
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
pub struct Head {
    /// Id of the last event.
    pub id: EventId,
    /// Seq of the last event (0 for a run's first event).
    pub seq: u64,
}

/// One immutable fact in a run's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct Event {
    /// The previous event of the run; `None` only for a run's first event (seq 0).
    pub parent: Option<EventId>,
    /// Position in the run, counting from 0.
    pub seq: u64,
    /// When the runtime recorded it.
    pub at: Timestamp,
    /// What happened (flattened in JSON: `"kind": "tool_requested"` beside its fields).
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The first event of a run.
    pub fn root(at: Timestamp, kind: EventKind) -> Self {
        Self {
            parent: None,
            seq: 0,
            at,
            kind,
        }
    }

    /// The event that follows `head` (or the first event when `head` is `None`).
    pub fn after(head: Option<Head>, at: Timestamp, kind: EventKind) -> Self {
        Self {
            parent: head.map(|h| h.id),
            seq: head.map_or(0, |h| h.seq + 1),
            at,
            kind,
        }
    }

    /// Canonical bytes: the format version then the fixed bincode encoding.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        codec::encode_event(self)
    }

    /// `EventId` = BLAKE3 of [`Self::to_canonical_bytes`].
    pub fn id(&self) -> EventId {
        EventId::of_canonical(&self.to_canonical_bytes())
    }

    /// This event as a chain head.
    pub fn head(&self) -> Head {
        Head {
            id: self.id(),
            seq: self.seq,
        }
    }
}

/// Tokens, cost and time of one model call.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Usage {
    /// Prompt tokens billed.
    pub input_tokens: u64,
    /// Completion tokens billed.
    pub output_tokens: u64,
    /// Cost in millionths of a US dollar (integers keep sums exact and hashes stable).
    pub cost_micro_usd: u64,
    /// Time from request to complete reply.
    pub latency_ms: u64,
}

/// A human's (or a policy's) answer to an approval request.
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
pub enum Decision {
    /// The effect may go ahead.
    Approved,
    /// The effect must not happen; the agent is told so.
    Denied,
}

/// How a run ended.
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
pub enum Outcome {
    /// The agent produced its final answer.
    Succeeded,
    /// The run stopped on an error (budget exhausted, permanent provider error, ...).
    Failed,
    /// Someone cancelled the run.
    Cancelled,
}

/// What happened. Payload contents live in blobs; see the module docs for the
/// compatibility rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A run began. `run` makes every run's first event (and so its whole chain) unique.
    RunStarted {
        /// The run this log belongs to.
        run: RunId,
        /// Canonical form of the agent spec the run executes.
        spec: BlobId,
        /// The task input.
        input: BlobId,
    },
    /// Intent to call a model (written before the call).
    ModelRequested {
        /// Provider-neutral request (canonical JSON).
        request: BlobId,
        /// 1 for the first try, then 2, 3, ... for retries of the same step.
        attempt: u32,
    },
    /// A model replied.
    ModelResponded {
        /// Seq of the `ModelRequested` this answers.
        request_seq: u64,
        /// The assembled reply (canonical JSON: text and tool calls).
        response: BlobId,
        /// Tokens, cost, latency.
        usage: Usage,
    },
    /// A model call failed.
    ModelFailed {
        /// Seq of the `ModelRequested` this answers.
        request_seq: u64,
        /// Error details (canonical JSON; never holds secrets).
        error: BlobId,
        /// Whether retrying may help (429, 5xx, connection) or not (400, 401, 404).
        transient: bool,
    },
    /// Intent to run a tool (written before the tool starts).
    ToolRequested {
        /// The call's id, as the model named it.
        call_id: String,
        /// Namespaced tool name, e.g. `fs.read`.
        tool: String,
        /// Arguments (canonical JSON).
        args: BlobId,
        /// Whether re-running the tool after a crash is safe.
        idempotent: bool,
    },
    /// A tool finished.
    ToolReturned {
        /// The call this answers.
        call_id: String,
        /// Output (or error text when `is_error`).
        output: BlobId,
        /// The tool reported an error.
        is_error: bool,
        /// How long the tool ran.
        duration_ms: u64,
    },
    /// A non-idempotent tool was in flight at a crash: nobody knows whether it took effect.
    ToolOutcomeUnknown {
        /// The call in doubt.
        call_id: String,
        /// What is known (canonical JSON).
        reason: BlobId,
    },
    /// The policy asked a human before an effect; the run parks until decided.
    ApprovalRequested {
        /// The tool call awaiting approval.
        call_id: String,
        /// What is asked (canonical JSON: tool, args preview, rule that matched).
        request: BlobId,
    },
    /// A decision on a pending approval.
    ApprovalDecided {
        /// The tool call decided.
        call_id: String,
        /// Approved or denied.
        decision: Decision,
        /// Who decided (user name, `policy`, ...).
        by: String,
        /// Optional note from the decider.
        note: Option<BlobId>,
    },
    /// Something from outside arrived (a user message into a running agent, a cancel request).
    SignalReceived {
        /// Signal name, e.g. `user_message`, `cancel`.
        name: String,
        /// Its payload.
        payload: BlobId,
    },
    /// Marks where a fork's own history begins after the prefix it shares with `from_run`.
    Forked {
        /// The run forked from.
        from_run: RunId,
        /// Seq of the last shared event.
        from_seq: u64,
        /// Id of the last shared event.
        from_event: EventId,
        /// Why, or what was edited (canonical JSON).
        note: Option<BlobId>,
    },
    /// The run ended. Nothing may follow.
    RunFinished {
        /// How it ended.
        outcome: Outcome,
        /// Final output or error (canonical JSON).
        detail: BlobId,
    },
    /// The tool calls a model reply asked for, in order; appended in the same atomic append
    /// as its `model_responded`, so a crash never leaves a reply without them. Each becomes a
    /// `tool_requested` (or a denial) when the agent gets to it.
    ToolCallsProposed {
        /// Seq of the `model_responded` whose reply holds the calls.
        response_seq: u64,
        /// The calls.
        calls: Vec<ProposedCall>,
    },
    /// The oldest messages of the conversation left it for good: summarized by a model
    /// call (whose `model_requested` this answers, in place of a `model_responded`) or
    /// dropped. What the model sees from then on is the pinned task, this `summary`, and
    /// the messages after the evicted ones.
    ContextCompacted {
        /// Seq of the `model_requested` that asked for the summary; `None` when the
        /// messages were dropped without one (`compaction = "drop_oldest"`).
        request_seq: Option<u64>,
        /// The summary as the model is shown it from then on (a JSON string); for a drop,
        /// the earlier summary with a note that messages were dropped. `None`: unchanged.
        summary: Option<BlobId>,
        /// The summarizing model's reply (canonical JSON, like a `model_responded`'s).
        response: Option<BlobId>,
        /// How many messages left the front of the conversation.
        evicted: u64,
        /// Tokens, cost and time of the summary call (zero when dropped).
        usage: Usage,
    },
    /// A tool call (`agent.delegate`) hands work to a child run. Appended in the same
    /// atomic append as the call's `tool_requested`, before the child exists: the child's id
    /// is derived from the call ([`RunId::child`]), so a resumed parent re-attaches to the
    /// same child and never starts a second one.
    ChildStarted {
        /// The delegating call.
        call_id: String,
        /// The child run ([`RunId::child`] of the run that recorded the call, the call's
        /// `tool_requested` seq and `call_id`).
        child: RunId,
        /// The sub-agent the child runs (a name the parent's spec declares).
        agent: String,
    },
    /// A child run ended. Appended with the delegating call's `tool_returned`; the child's
    /// totals join the parent's, so the parent's budgets cap the whole tree.
    ChildFinished {
        /// The delegating call.
        call_id: String,
        /// The child run.
        child: RunId,
        /// The child's last event when it ended: the link the tree's verification checks.
        head: EventId,
        /// How the child ended.
        outcome: Outcome,
        /// The child's totals (its own children's included): tokens, cost, and its wall
        /// time in `latency_ms`.
        usage: Usage,
    },
    /// A hook ran around a tool call and decided (allow, deny, rewrite the arguments, add
    /// a note). Recorded before what it caused, so a replay reads the decision instead of
    /// running the hook again.
    HookDecided {
        /// The call.
        call_id: String,
        /// The hook's name (from the spec).
        hook: String,
        /// Before the call runs, or after it returned.
        stage: HookStage,
        /// The decision (canonical JSON: `decision`, and `reason`, `args` or `note`).
        decision: BlobId,
    },
    /// Which of the spec's models the next model call goes to, and why: appended in the same
    /// atomic append as (and just before) that call's `model_requested`, by runs whose spec
    /// routes between models (`[[models]]`, `[routing]`). Its usage is accounted to this
    /// model.
    ModelRouted {
        /// The model's name in the spec (`main` for `[model]`).
        model: String,
        /// The routing rule that chose it (its index in `[[routing.rules]]`); `None` for the
        /// default or a fallback.
        rule: Option<u32>,
        /// Why, in words (`rule 0: the first 3 steps`, `fallback: main failed 3 times`).
        reason: String,
    },
}

/// When a hook runs.
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
pub enum HookStage {
    /// Before the tool runs: it may allow, deny or rewrite the arguments.
    BeforeTool,
    /// After the tool returned: it may add a note to the result.
    AfterTool,
}

/// One tool call proposed by a model.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, bincode::Encode, bincode::Decode,
)]
pub struct ProposedCall {
    /// The model's id for the call.
    pub call_id: String,
    /// Tool name.
    pub tool: String,
    /// Arguments (canonical JSON).
    pub args: BlobId,
    /// The argument policy rules look at, if the call has it: `path`, or for `exec.run` its
    /// `command` and for `web.fetch` its `url` ([`crate::reply::subject_key`]).
    pub path: Option<String>,
}

impl EventKind {
    /// Every kind's name, in declaration order (the order of their encoding tags).
    pub const NAMES: [&'static str; 18] = [
        "run_started",
        "model_requested",
        "model_responded",
        "model_failed",
        "tool_requested",
        "tool_returned",
        "tool_outcome_unknown",
        "approval_requested",
        "approval_decided",
        "signal_received",
        "forked",
        "run_finished",
        "tool_calls_proposed",
        "context_compacted",
        "child_started",
        "child_finished",
        "hook_decided",
        "model_routed",
    ];

    /// Stable snake_case name of this kind (as in JSON output).
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.tag()]
    }

    /// Position of this kind in [`Self::NAMES`] (its encoding tag).
    pub fn tag(&self) -> usize {
        match self {
            Self::RunStarted { .. } => 0,
            Self::ModelRequested { .. } => 1,
            Self::ModelResponded { .. } => 2,
            Self::ModelFailed { .. } => 3,
            Self::ToolRequested { .. } => 4,
            Self::ToolReturned { .. } => 5,
            Self::ToolOutcomeUnknown { .. } => 6,
            Self::ApprovalRequested { .. } => 7,
            Self::ApprovalDecided { .. } => 8,
            Self::SignalReceived { .. } => 9,
            Self::Forked { .. } => 10,
            Self::RunFinished { .. } => 11,
            Self::ToolCallsProposed { .. } => 12,
            Self::ContextCompacted { .. } => 13,
            Self::ChildStarted { .. } => 14,
            Self::ChildFinished { .. } => 15,
            Self::HookDecided { .. } => 16,
            Self::ModelRouted { .. } => 17,
        }
    }

    /// Every blob this event refers to, in field order.
    pub fn blobs(&self) -> Vec<BlobId> {
        match self {
            Self::RunStarted { spec, input, .. } => vec![*spec, *input],
            Self::ModelRequested { request, .. } | Self::ApprovalRequested { request, .. } => {
                vec![*request]
            }
            Self::ModelResponded { response, .. } => vec![*response],
            Self::ModelFailed { error, .. } => vec![*error],
            Self::ToolRequested { args, .. } => vec![*args],
            Self::ToolReturned { output, .. } => vec![*output],
            Self::ToolOutcomeUnknown { reason, .. } => vec![*reason],
            Self::SignalReceived { payload, .. } => vec![*payload],
            Self::ApprovalDecided { note, .. } | Self::Forked { note, .. } => {
                note.iter().copied().collect()
            }
            Self::RunFinished { detail, .. } => vec![*detail],
            Self::ToolCallsProposed { calls, .. } => calls.iter().map(|c| c.args).collect(),
            Self::ContextCompacted {
                summary, response, ..
            } => summary.iter().chain(response.iter()).copied().collect(),
            Self::ChildStarted { .. } | Self::ChildFinished { .. } | Self::ModelRouted { .. } => {
                Vec::new()
            }
            Self::HookDecided { decision, .. } => vec![*decision],
        }
    }
}

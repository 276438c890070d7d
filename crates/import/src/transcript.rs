//! The neutral form every importer produces and the writer turns into events: a task, then
//! model calls, tool results, user messages and compactions in the order they happened,
//! each with what the source said beyond what an event holds (its `extra`).
//!
//! Times are milliseconds since the Unix epoch; `None` where the source has none (the
//! writer then uses the time of the event before).

use std::collections::BTreeMap;

use retrace_events::Outcome;
use retrace_events::chat::ToolDef;
use retrace_events::reply::ModelReply;
use serde::Serialize;
use serde_json::Value;

use crate::Format;

/// A recording, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Transcript {
    /// The format it was read as.
    pub format: Format,
    /// A name for the run (the session's id or the file's name).
    pub name: String,
    /// The task: the first thing the user asked.
    pub task: String,
    /// The system prompt, when the source has it (empty otherwise).
    pub system: String,
    /// The model most calls went to.
    pub model: String,
    /// Tools the source describes (names and descriptions; schemas when given).
    pub tools: Vec<ToolDef>,
    /// When the run began.
    pub started_at: Option<u64>,
    /// What happened, in order.
    pub entries: Vec<Entry>,
    /// How it ended.
    pub finish: Finish,
    /// What the source said about the whole session (its header, settings, lines before
    /// the task): kept with the run's import record.
    pub session: Vec<Value>,
    /// Lines read and skipped.
    pub report: Report,
}

/// One thing that happened, with what the source said of it that no event field holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// What happened.
    pub step: Step,
    /// The source's lines or fields not carried by the event (`None`: nothing left over).
    pub extra: Vec<Value>,
    /// Where the source put it, when it says (a retrace export's `retrace.seq`): entries
    /// that all have one are ordered by it rather than by time, which ties within a
    /// millisecond.
    pub seq: Option<u64>,
}

impl Entry {
    /// `step` with nothing left over.
    pub fn new(step: Step) -> Self {
        Self {
            step,
            extra: Vec::new(),
            seq: None,
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A model call and its reply (the tool calls it proposed are in the reply).
    Model(ModelCall),
    /// A model call that failed.
    ModelError {
        /// When it was asked.
        requested_at: Option<u64>,
        /// When it failed.
        at: Option<u64>,
        /// The model.
        model: String,
        /// The error, as the source gave it.
        message: String,
    },
    /// The result of a tool call of an earlier reply.
    Result(ToolResult),
    /// A message from the user after the task.
    User {
        /// When.
        at: Option<u64>,
        /// What they said.
        text: String,
    },
    /// The conversation was compacted: everything before is replaced by `summary`.
    Compaction {
        /// When.
        at: Option<u64>,
        /// The summary the model sees from then on.
        summary: String,
    },
}

/// A model call that replied.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCall {
    /// When it was asked (the time of what came before, when the source has no such time).
    pub requested_at: Option<u64>,
    /// When the reply was complete.
    pub responded_at: Option<u64>,
    /// The model that answered.
    pub model: String,
    /// The reply: text, reasoning, tool calls, tokens, stop reason.
    pub reply: ModelReply,
    /// Cost in millionths of a US dollar, when the source says.
    pub cost_micro_usd: u64,
    /// Time from request to reply as the source measured it (`None`: from the two times).
    pub latency_ms: Option<u64>,
}

/// A tool call's result.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    /// The call answered (an id of a tool call in an earlier reply).
    pub call_id: String,
    /// When the tool started, if the source says (else when the reply proposed it).
    pub started_at: Option<u64>,
    /// When the result came back.
    pub at: Option<u64>,
    /// The output as the model was shown it.
    pub output: String,
    /// The output as structured JSON, when the source kept it so (a retrace run exported to
    /// OpenTelemetry); recorded instead of `output` as a string.
    pub value: Option<Value>,
    /// The tool failed.
    pub is_error: bool,
    /// The user refused the call (it did not run).
    pub rejected: bool,
    /// How long the tool ran as the source measured it (`None`: from the two times).
    pub duration_ms: Option<u64>,
}

/// How a recording ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// Succeeded unless the source says otherwise.
    pub outcome: Outcome,
    /// The final answer (or why it failed).
    pub text: String,
    /// When, if known.
    pub at: Option<u64>,
}

impl Default for Finish {
    fn default() -> Self {
        Self {
            outcome: Outcome::Succeeded,
            text: String::new(),
            at: None,
        }
    }
}

/// What an import read and left: printed at its end and kept with the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Lines (JSONL) or top-level records (spans, messages) read.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Lines kept only as an event's `extra` (no event kind holds them), by their type.
    pub kept: BTreeMap<String, u64>,
    /// Lines dropped, by why (a truncated last line, an unreadable line).
    pub skipped: BTreeMap<String, u64>,
    /// Tool calls the recording has no result for (closed as "no result recorded").
    pub unanswered_calls: u64,
    /// Results of calls no reply proposed (kept as extras).
    pub orphan_results: u64,
    /// Events written (set by the writer).
    pub events: u64,
}

impl Report {
    /// Count a line kept as an extra.
    pub fn keep(&mut self, kind: &str) {
        *self.kept.entry(kind.to_owned()).or_default() += 1;
    }

    /// Count a dropped line.
    pub fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_owned()).or_default() += 1;
    }
}

/// What a transcript holds, counted (what `retrace import-run` prints).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Model calls that replied.
    pub model_calls: u64,
    /// Model calls that failed.
    pub model_errors: u64,
    /// Tool calls proposed.
    pub tool_calls: u64,
    /// Results that were errors (rejections included).
    pub tool_errors: u64,
    /// Calls the user refused.
    pub rejected: u64,
    /// Compactions.
    pub compactions: u64,
    /// User messages after the task.
    pub user_messages: u64,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost, millionths of a US dollar.
    pub cost_micro_usd: u64,
}

impl Transcript {
    /// An empty transcript of `format`, with what was read so far (`report`).
    pub fn new(format: Format, report: Report) -> Self {
        Self {
            format,
            name: String::new(),
            task: String::new(),
            system: String::new(),
            model: String::new(),
            tools: Vec::new(),
            started_at: None,
            entries: Vec::new(),
            finish: Finish::default(),
            session: Vec::new(),
            report,
        }
    }

    /// Keep `value` (a source line or field no event holds) with what it came after: the
    /// model call being assembled (`open`, its extras), else the newest entry, else the
    /// session.
    pub(crate) fn keep_after(&mut self, open: Option<&mut Vec<Value>>, value: Value) {
        match (open, self.entries.last_mut()) {
            (Some(open), _) => open.push(value),
            (None, Some(last)) => last.extra.push(value),
            (None, None) => self.session.push(value),
        }
    }

    /// Count what this transcript holds.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for entry in &self.entries {
            match &entry.step {
                Step::Model(call) => {
                    c.model_calls += 1;
                    c.tool_calls += call.reply.tool_calls.len() as u64;
                    c.input_tokens = c.input_tokens.saturating_add(call.reply.usage.input_tokens);
                    c.output_tokens = c
                        .output_tokens
                        .saturating_add(call.reply.usage.output_tokens);
                    c.cost_micro_usd = c.cost_micro_usd.saturating_add(call.cost_micro_usd);
                }
                Step::ModelError { .. } => c.model_errors += 1,
                Step::Result(r) => {
                    c.tool_errors += u64::from(r.is_error);
                    c.rejected += u64::from(r.rejected);
                }
                Step::User { .. } => c.user_messages += 1,
                Step::Compaction { .. } => c.compactions += 1,
            }
        }
        c
    }
}

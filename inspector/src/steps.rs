//! A run as steps: the index the step view, the waterfall and the cost plot draw from.
//!
//! A **step** is what a person reads as one thing that happened: a model call (its
//! `model_requested` up to the `model_responded` or `model_failed` that answers it), a tool
//! call (`tool_requested` up to `tool_returned` or `tool_outcome_unknown`), an approval
//! (`approval_requested` up to `approval_decided`: the wait for a human), and each other
//! event on its own (run start and finish, signals, a fork's mark, compactions). The
//! `tool_calls_proposed` that comes with a reply belongs to the reply's step.
//!
//! [`StepIndex`] is built by folding events in seq order ([`StepIndex::push`]), so it grows
//! with a live run without a rescan: the background thread keeps feeding it what was
//! appended since. It holds no payloads (those are read per card, for the cards on screen)
//! and about 64 bytes a step, so a million-event run's index is about 30 MB. Times are the
//! events' recorded timestamps (milliseconds since the Unix epoch); nothing here reads a
//! clock.

use std::collections::HashMap;

use retrace_events::{Event, EventKind, RunId};

use crate::source::{CLASSES, Class};

/// What kind of step a [`StepHead`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    /// The run began (`run_started`).
    Start,
    /// A model call (or a summary request answered by a compaction).
    Model,
    /// A tool call.
    Tool,
    /// A wait for a human decision on a tool call.
    Approval,
    /// Older messages left the context (`context_compacted` without a request of its own).
    Compaction,
    /// Something from outside arrived.
    Signal,
    /// Where a fork's own history begins.
    Fork,
    /// The run ended.
    Finish,
}

impl StepKind {
    /// Every kind, in the order the filter lists them.
    pub const ALL: [StepKind; 8] = [
        StepKind::Model,
        StepKind::Tool,
        StepKind::Approval,
        StepKind::Compaction,
        StepKind::Signal,
        StepKind::Start,
        StepKind::Fork,
        StepKind::Finish,
    ];

    /// Its name in the UI.
    pub fn label(self) -> &'static str {
        match self {
            StepKind::Start => "start",
            StepKind::Model => "model",
            StepKind::Tool => "tool",
            StepKind::Approval => "approval",
            StepKind::Compaction => "compaction",
            StepKind::Signal => "signal",
            StepKind::Fork => "fork",
            StepKind::Finish => "finish",
        }
    }

    /// The event class it is coloured as.
    pub fn class(self) -> Class {
        match self {
            StepKind::Model => Class::Model,
            StepKind::Tool => Class::Tool,
            StepKind::Approval => Class::Approval,
            StepKind::Compaction => Class::Context,
            StepKind::Start | StepKind::Signal | StepKind::Fork | StepKind::Finish => Class::Run,
        }
    }
}

/// One step, without its payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepHead {
    /// Seq of its first event (where the cursor goes when the step is chosen).
    pub seq: u64,
    /// Seq of its last event; `None` while it is still open (a call in flight, an approval
    /// not decided yet).
    pub end: Option<u64>,
    /// What it is.
    pub kind: StepKind,
    /// When its first event was recorded (ms since the Unix epoch).
    pub start_ms: u64,
    /// When its last event was recorded (ms); `start_ms` while open.
    pub end_ms: u64,
    /// It failed: a model error, a tool error, an unknown outcome, a denial, a failed run.
    pub error: bool,
    /// The tool's name (for tool calls, and approvals of calls the reply before proposed),
    /// an index into [`StepIndex::names`].
    pub name: Option<u16>,
    /// A `model_responded` event's tokens in plus out (0 for other steps).
    pub tokens: u64,
    /// Cost in millionths of a dollar (model calls and summary requests).
    pub cost_micro_usd: u64,
}

impl StepHead {
    /// Whether `seq` is one of this step's events' seqs range (first to last).
    pub fn covers(&self, seq: u64) -> bool {
        seq >= self.seq && self.end.is_none_or(|end| seq <= end)
    }
}

/// One point of the cumulative usage curve: after the model call answered at `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePoint {
    /// Seq of the reply (or compaction) that billed it.
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Tokens in and out so far.
    pub tokens: u64,
    /// Cost so far, in millionths of a dollar.
    pub cost_micro_usd: u64,
}

/// The steps of a run, folded from its events in seq order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepIndex {
    /// The run.
    pub run: Option<RunId>,
    /// Events folded so far (the next one expected has this seq).
    pub scanned: u64,
    /// Steps in the order they began.
    pub steps: Vec<StepHead>,
    /// Tool names, indexed by [`StepHead::name`].
    pub names: Vec<String>,
    /// Usage so far after each billed model call.
    pub usage: Vec<UsagePoint>,
    /// The first event's time (ms).
    pub first_ms: u64,
    /// The newest event's time (ms).
    pub last_ms: u64,
    /// Each event's [`Class::index`], for the density strip.
    classes: Vec<u8>,
    /// Open model calls: `model_requested` seq → step.
    open_models: HashMap<u64, usize>,
    /// Open tool calls: call id (its [`fnv`] hash: no id is copied) → step.
    open_tools: HashMap<u64, usize>,
    /// Open approvals: call id (its [`fnv`] hash) → step.
    open_approvals: HashMap<u64, usize>,
    /// The last reply (its `model_responded` seq and step): its proposed calls come right
    /// after it, in the same append.
    last_reply: Option<(u64, usize)>,
    /// The tools of the calls the last reply proposed, by a hash of their call ids (an
    /// approval names only its call).
    proposed: Vec<(u64, u16)>,
}

impl StepIndex {
    /// An empty index of `run`.
    pub fn new(run: RunId) -> Self {
        Self {
            run: Some(run),
            ..Self::default()
        }
    }

    /// Fold the next event in. Events must come in seq order from [`Self::scanned`];
    /// `Err` names the seq expected.
    #[allow(clippy::too_many_lines, reason = "one arm per event kind")]
    pub fn push(&mut self, event: &Event) -> Result<(), u64> {
        if event.seq != self.scanned {
            return Err(self.scanned);
        }
        self.scanned += 1;
        let at = event.at.unix_ms();
        if self.steps.is_empty() && self.classes.is_empty() {
            self.first_ms = at;
        }
        self.last_ms = self.last_ms.max(at);
        self.classes
            .push(u8::try_from(Class::of(&event.kind).index()).unwrap_or(0));
        let seq = event.seq;
        match &event.kind {
            EventKind::RunStarted { .. } => {
                self.open(seq, at, StepKind::Start, None, true);
            }
            EventKind::ModelRequested { .. } => {
                let i = self.open(seq, at, StepKind::Model, None, false);
                self.open_models.insert(seq, i);
            }
            EventKind::ModelResponded {
                request_seq, usage, ..
            } => {
                let tokens = usage.input_tokens + usage.output_tokens;
                let i = self.close_model(*request_seq, seq, at, false);
                if let Some(i) = i {
                    self.steps[i].tokens = tokens;
                    self.steps[i].cost_micro_usd = usage.cost_micro_usd;
                    self.last_reply = Some((seq, i));
                }
                self.bill(seq, at, tokens, usage.cost_micro_usd);
            }
            EventKind::ModelFailed { request_seq, .. } => {
                self.close_model(*request_seq, seq, at, true);
            }
            EventKind::ToolCallsProposed {
                response_seq,
                calls,
            } => {
                self.proposed.clear();
                for call in calls {
                    let name = self.name(&call.tool);
                    self.proposed.push((fnv(&call.call_id), name));
                }
                if let Some((reply, i)) = self.last_reply
                    && reply == *response_seq
                {
                    self.steps[i].end = Some(seq);
                }
            }
            EventKind::ToolRequested { call_id, tool, .. } => {
                let name = self.name(tool);
                let i = self.open(seq, at, StepKind::Tool, Some(name), false);
                self.open_tools.insert(fnv(call_id), i);
            }
            EventKind::ToolReturned {
                call_id, is_error, ..
            } => {
                if let Some(i) = self.open_tools.remove(&fnv(call_id)) {
                    self.close(i, seq, at, *is_error);
                } else {
                    // a call that never ran (its approval was denied): its result is a step
                    let name = self.proposed_tool(call_id);
                    let i = self.open(seq, at, StepKind::Tool, name, true);
                    self.steps[i].error = *is_error;
                }
            }
            EventKind::ToolOutcomeUnknown { call_id, .. } => {
                if let Some(i) = self.open_tools.remove(&fnv(call_id)) {
                    self.close(i, seq, at, true);
                }
            }
            EventKind::ApprovalRequested { call_id, .. } => {
                let name = self.proposed_tool(call_id);
                let i = self.open(seq, at, StepKind::Approval, name, false);
                self.open_approvals.insert(fnv(call_id), i);
            }
            EventKind::ApprovalDecided {
                call_id, decision, ..
            } => {
                if let Some(i) = self.open_approvals.remove(&fnv(call_id)) {
                    let denied = *decision == retrace_events::Decision::Denied;
                    self.close(i, seq, at, denied);
                }
            }
            EventKind::SignalReceived { .. } => {
                self.open(seq, at, StepKind::Signal, None, true);
            }
            EventKind::Forked { .. } => {
                self.open(seq, at, StepKind::Fork, None, true);
            }
            EventKind::RunFinished { outcome, .. } => {
                self.finish(seq, at, *outcome == retrace_events::Outcome::Failed);
            }
            EventKind::ContextCompacted {
                request_seq, usage, ..
            } => self.compacted(seq, at, *request_seq, usage),
            EventKind::ChildFinished { call_id, usage, .. } => {
                self.child_finished(seq, at, call_id, usage);
            }
            EventKind::ChildStarted { .. }
            | EventKind::HookDecided { .. }
            | EventKind::ModelRouted { .. } => {}
        }
        Ok(())
    }

    /// Events folded, by class: `bins` counts over the run's seqs (as the density strip
    /// draws them).
    pub fn density(&self, bins: usize) -> Vec<[u32; CLASSES]> {
        let mut out = vec![[0u32; CLASSES]; bins.max(1)];
        let last = out.len() - 1;
        let n = out.len() as u64;
        let len = self.scanned.max(1);
        for (seq, class) in self.classes.iter().enumerate() {
            let bin = usize::try_from(seq as u64 * n / len).unwrap_or(last);
            out[bin.min(last)][usize::from(*class)] += 1;
        }
        out
    }

    /// The step that holds `seq`: the last one beginning at or before it that covers it,
    /// else the last one beginning before it.
    pub fn step_at(&self, seq: u64) -> Option<usize> {
        let after = self.steps.partition_point(|s| s.seq <= seq);
        let before = after.checked_sub(1)?;
        // a call in flight (or an approval) may span later steps: prefer the newest step
        // that covers the seq, looking back a little
        (before.saturating_sub(64)..=before)
            .rev()
            .find(|&i| self.steps[i].covers(seq))
            .or(Some(before))
    }

    /// A step's tool name, if it has one.
    pub fn name_of(&self, step: &StepHead) -> Option<&str> {
        step.name
            .and_then(|n| self.names.get(usize::from(n)))
            .map(String::as_str)
    }

    /// Steps whose approval or call is still open: what a parked run waits on.
    pub fn open_approvals(&self) -> impl Iterator<Item = usize> + '_ {
        self.open_approvals.values().copied()
    }

    /// At most `points` points of the usage curve, spread over the run, always with its
    /// last (so the plot ends at the run's totals).
    pub fn usage_curve(&self, points: usize) -> Vec<UsagePoint> {
        let n = self.usage.len();
        if n <= points || points < 2 {
            return self.usage.clone();
        }
        let mut out: Vec<UsagePoint> = (0..points - 1)
            .map(|i| self.usage[i * n / (points - 1)])
            .collect();
        out.push(self.usage[n - 1]);
        out
    }

    /// The tool of a call the last reply proposed.
    fn proposed_tool(&self, call_id: &str) -> Option<u16> {
        let key = fnv(call_id);
        self.proposed
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, name)| *name)
    }

    /// The run ended: what was still open never got its answer (a cancel drops a call in
    /// flight) and ends with it; then the finish.
    fn finish(&mut self, seq: u64, at: u64, failed: bool) {
        let open: Vec<usize> = self
            .open_models
            .drain()
            .map(|(_, i)| i)
            .chain(self.open_tools.drain().map(|(_, i)| i))
            .chain(self.open_approvals.drain().map(|(_, i)| i))
            .collect();
        for i in open {
            self.close(i, seq, at, false);
        }
        let i = self.open(seq, at, StepKind::Finish, None, true);
        self.steps[i].error = failed;
    }

    /// Older messages left the context: a summary request's step ends with it, a drop is a
    /// step of its own; either way its usage is billed.
    fn compacted(
        &mut self,
        seq: u64,
        at: u64,
        request_seq: Option<u64>,
        usage: &retrace_events::Usage,
    ) {
        let tokens = usage.input_tokens + usage.output_tokens;
        let i = match request_seq.filter(|r| self.open_models.contains_key(r)) {
            Some(r) => self.close_model(r, seq, at, false),
            None => Some(self.open(seq, at, StepKind::Compaction, None, true)),
        };
        if let Some(i) = i {
            self.steps[i].tokens += tokens;
            self.steps[i].cost_micro_usd += usage.cost_micro_usd;
        }
        if tokens > 0 || usage.cost_micro_usd > 0 {
            self.bill(seq, at, tokens, usage.cost_micro_usd);
        }
    }

    fn name(&mut self, tool: &str) -> u16 {
        if let Some(i) = self.names.iter().position(|n| n == tool) {
            return u16::try_from(i).unwrap_or(u16::MAX);
        }
        self.names.push(tool.to_owned());
        u16::try_from(self.names.len() - 1).unwrap_or(u16::MAX)
    }

    fn open(
        &mut self,
        seq: u64,
        at: u64,
        kind: StepKind,
        name: Option<u16>,
        closed: bool,
    ) -> usize {
        self.steps.push(StepHead {
            seq,
            end: closed.then_some(seq),
            kind,
            start_ms: at,
            end_ms: at,
            error: false,
            name,
            tokens: 0,
            cost_micro_usd: 0,
        });
        self.steps.len() - 1
    }

    fn close(&mut self, i: usize, seq: u64, at: u64, error: bool) {
        let step = &mut self.steps[i];
        step.end = Some(seq);
        step.end_ms = at.max(step.start_ms);
        step.error |= error;
    }

    fn close_model(&mut self, request_seq: u64, seq: u64, at: u64, error: bool) -> Option<usize> {
        let i = self.open_models.remove(&request_seq)?;
        self.close(i, seq, at, error);
        Some(i)
    }

    /// A child run's spending, billed to its delegating call's step and to the run (the
    /// tree's totals). Its start and hooks' decisions are parts of their call's step.
    fn child_finished(&mut self, seq: u64, at: u64, call_id: &str, usage: &retrace_events::Usage) {
        let tokens = usage.input_tokens + usage.output_tokens;
        if let Some(&i) = self.open_tools.get(&fnv(call_id)) {
            self.steps[i].tokens += tokens;
            self.steps[i].cost_micro_usd += usage.cost_micro_usd;
        }
        self.bill(seq, at, tokens, usage.cost_micro_usd);
    }

    fn bill(&mut self, seq: u64, at: u64, tokens: u64, cost: u64) {
        let (t, c) = self
            .usage
            .last()
            .map_or((0, 0), |p| (p.tokens, p.cost_micro_usd));
        self.usage.push(UsagePoint {
            seq,
            at_ms: at,
            tokens: t + tokens,
            cost_micro_usd: c + cost,
        });
    }
}

/// FNV-1a of a call id: calls told apart without copying their ids.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Which steps the step view and the waterfall show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// Kinds hidden.
    pub hidden: Vec<StepKind>,
    /// Only calls of this tool (and approvals of it), if set.
    pub tool: Option<String>,
    /// Only steps that failed.
    pub errors_only: bool,
}

impl Filter {
    /// Whether nothing is filtered out.
    pub fn is_empty(&self) -> bool {
        self.hidden.is_empty() && self.tool.is_none() && !self.errors_only
    }

    /// The positions in `index.steps` of the steps that pass.
    pub fn apply(&self, index: &StepIndex) -> Vec<usize> {
        let tool = self
            .tool
            .as_ref()
            .and_then(|t| index.names.iter().position(|n| n == t))
            .and_then(|n| u16::try_from(n).ok());
        index
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                !self.hidden.contains(&s.kind)
                    && (!self.errors_only || s.error)
                    && (self.tool.is_none() || (tool.is_some() && s.name == tool))
            })
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retrace_replay::testkit::valid_run;

    #[test]
    fn every_event_lands_in_one_step_and_calls_close_on_their_answer() {
        let run = RunId::from_bytes([3; 16]);
        let events = valid_run(11, run, 400, false);
        let mut index = StepIndex::new(run);
        for e in &events {
            index.push(e).unwrap();
        }
        assert_eq!(index.scanned, 400);
        // a gap is refused and names the seq expected
        let mut other = StepIndex::new(run);
        assert_eq!(other.push(&events[3]), Err(0));
        // each event seq is covered by at least one step, and steps start in seq order
        for e in &events {
            let i = index.step_at(e.seq).expect("a step");
            assert!(index.steps[i].covers(e.seq), "seq {} in step {i}", e.seq);
        }
        assert!(index.steps.windows(2).all(|w| w[0].seq < w[1].seq));
        // model steps end at the reply that answers them
        for (i, s) in index.steps.iter().enumerate() {
            if s.kind == StepKind::Model
                && let Some(end) = s.end
            {
                assert!(
                    matches!(
                        events[usize::try_from(end).unwrap()].kind,
                        EventKind::ModelResponded { .. }
                            | EventKind::ModelFailed { .. }
                            | EventKind::ToolCallsProposed { .. }
                            | EventKind::ContextCompacted { .. }
                    ),
                    "step {i} ends at {end}"
                );
            }
        }
        // the usage curve sums every reply's usage
        let billed: u64 = events
            .iter()
            .map(|e| match &e.kind {
                EventKind::ModelResponded { usage, .. }
                | EventKind::ContextCompacted { usage, .. } => {
                    usage.input_tokens + usage.output_tokens
                }
                _ => 0,
            })
            .sum();
        assert_eq!(index.usage.last().map_or(0, |p| p.tokens), billed);
        let curve = index.usage_curve(10);
        assert!(curve.len() <= 10);
        assert_eq!(curve.last(), index.usage.last());
        // density counts every event once
        let total: u32 = index.density(7).iter().flatten().sum();
        assert_eq!(total, 400);
    }

    #[test]
    fn the_filter_keeps_kinds_tools_and_errors_asked_for() {
        let run = RunId::from_bytes([4; 16]);
        let mut index = StepIndex::new(run);
        for e in valid_run(5, run, 300, false) {
            index.push(&e).unwrap();
        }
        let all = Filter::default().apply(&index);
        assert_eq!(all.len(), index.steps.len());
        let tools = Filter {
            hidden: StepKind::ALL
                .into_iter()
                .filter(|k| *k != StepKind::Tool)
                .collect(),
            ..Filter::default()
        }
        .apply(&index);
        assert!(!tools.is_empty());
        assert!(tools.iter().all(|&i| index.steps[i].kind == StepKind::Tool));
        let errors = Filter {
            errors_only: true,
            ..Filter::default()
        }
        .apply(&index);
        assert!(errors.iter().all(|&i| index.steps[i].error));
        let unknown = Filter {
            tool: Some("no.such.tool".into()),
            ..Filter::default()
        }
        .apply(&index);
        assert!(unknown.is_empty());
    }
}

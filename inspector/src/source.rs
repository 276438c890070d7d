//! Where the inspector's data comes from: a background thread that owns the store and
//! answers requests (the run list, a page of timeline rows, the detail at one event — with
//! the plan and any question the run waits on at that event —, a search for the next
//! event of a kind). The UI thread never reads the store; it sends [`Request`]s and picks
//! up [`Reply`]s each frame. Writes (fork, decide an approval, answer a question) go
//! through the same thread and the same `retrace_replay` functions as the CLI.

use std::sync::Arc;

use retrace_events::{Decision, EventKind, RunId, Timestamp};
use retrace_replay::plan::Plan;
use retrace_replay::{
    Answer, Asking, ChangeKind, ForkAt, Pending, Question, SnapshotPolicy, State, Status,
    answer_question, compare_runs, decide_approval, describe, diff_states, fork, state_at,
    state_at_head,
};
use retrace_store::{MAX_RANGE, Store};

use crate::cards::{Card, card, pretty, value as blob_value};
use crate::compare::Comparison;
use crate::search::Found;
use crate::steps::{StepHead, StepIndex};
use serde_json::Value;

/// What the inspector cannot do itself: read the clock, make fresh run ids (the runtime is
/// their only source) and run an agent. The `retrace` binary provides it.
pub trait Host: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Timestamp;
    /// A fresh run id.
    fn new_run_id(&self) -> RunId;
    /// Continue `run` with the runtime in the background; what it appends shows up as the
    /// run grows. `Err` says why it could not start.
    fn resume(&self, run: RunId) -> Result<(), String>;
}

/// Timeline rows per page.
pub const PAGE: u64 = 256;

/// One run in the runs panel.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Run id.
    pub id: RunId,
    /// The agent's name, if recorded.
    pub name: String,
    /// Status in a few words.
    pub status: String,
    /// Whether the run has finished.
    pub finished: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// Events in the run.
    pub len: u64,
    /// Agent steps.
    pub steps: u64,
    /// Tokens in and out.
    pub tokens: u64,
    /// Cost in millionths of a dollar.
    pub cost_micro_usd: u64,
    /// The run it was forked from, and the last shared seq.
    pub parent: Option<(RunId, u64)>,
    /// For a child run (`agent.delegate`): the run that delegated to it (meta `parent`).
    pub child_of: Option<RunId>,
    /// For a child run: the sub-agent it runs (meta `agent`).
    pub agent: Option<String>,
}

/// One row of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Seq.
    pub seq: u64,
    /// Kind name (`tool_returned`, …).
    pub kind: &'static str,
    /// What kind of step it is, for colour and jumps.
    pub class: Class,
    /// When it was recorded.
    pub at: Timestamp,
    /// One-line summary.
    pub summary: String,
}

/// Event classes the timeline colours and jumps by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Model requests and replies.
    Model,
    /// Tool requests and results.
    Tool,
    /// Approval requests and decisions.
    Approval,
    /// Failures: a failed model call, a tool error, an unknown outcome.
    Error,
    /// Run start, finish, forks, signals.
    Run,
    /// Context compactions: older messages summarized or dropped.
    Context,
}

/// Event classes, the length of a density bin.
pub const CLASSES: usize = 6;

impl Class {
    /// The class of an event.
    pub fn of(kind: &EventKind) -> Self {
        match kind {
            EventKind::ModelFailed { .. }
            | EventKind::ToolOutcomeUnknown { .. }
            | EventKind::ToolReturned { is_error: true, .. } => Class::Error,
            EventKind::ModelRequested { .. }
            | EventKind::ModelRouted { .. }
            | EventKind::ModelResponded { .. }
            | EventKind::ToolCallsProposed { .. } => Class::Model,
            EventKind::ToolRequested { .. }
            | EventKind::ToolReturned { .. }
            | EventKind::ChildStarted { .. }
            | EventKind::ChildFinished { .. }
            | EventKind::HookDecided { .. } => Class::Tool,
            EventKind::ApprovalRequested { .. } | EventKind::ApprovalDecided { .. } => {
                Class::Approval
            }
            EventKind::ContextCompacted { .. } => Class::Context,
            _ => Class::Run,
        }
    }
}

/// A model reply as a person reads it: reasoning, answer, calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyView {
    /// Each reasoning block's text (`(redacted by the provider)` for an encrypted one).
    pub reasoning: Vec<String>,
    /// The answer's text.
    pub answer: String,
    /// Each tool call as `id name arguments`.
    pub calls: Vec<String>,
}

impl ReplyView {
    pub(crate) fn reasoning_of(reasoning: &[retrace_events::reply::Reasoning]) -> Vec<String> {
        reasoning
            .iter()
            .map(|r| match &r.redacted {
                Some(_) => "(redacted by the provider)".to_owned(),
                None => r.text.clone(),
            })
            .collect()
    }

    fn of(reply: &retrace_events::reply::ModelReply) -> Self {
        Self {
            reasoning: Self::reasoning_of(&reply.reasoning),
            answer: reply.text.clone(),
            calls: reply
                .tool_calls
                .iter()
                .map(|c| format!("{} {} {}", c.id, c.name, c.arguments))
                .collect(),
        }
    }
}

/// Everything the detail panel shows for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    /// Run.
    pub run: RunId,
    /// Seq.
    pub seq: u64,
    /// Event id (hex).
    pub id: String,
    /// Kind name.
    pub kind: &'static str,
    /// When it was recorded.
    pub at: Timestamp,
    /// One-line summary.
    pub summary: String,
    /// The event as JSON, with its payload blobs resolved under `payloads`.
    pub event: Value,
    /// The conversation at this event, readable: `(role, text)`.
    pub conversation: Vec<(String, String)>,
    /// The state after this event, as JSON.
    pub state: Value,
    /// Status in a few words.
    pub status: String,
    /// The state's hash (hex).
    pub state_hash: String,
    /// Pending approvals at this event: `(call id, what is asked)` ([`crate::cards::asked`]).
    pub approvals: Vec<(String, String)>,
    /// Whether the event's content can be edited in a fork.
    pub editable: bool,
    /// The content an edit starts from (the reply, output or decision), as JSON text.
    pub edit_template: String,
    /// For a model reply: its reasoning apart from its answer.
    pub reply: Option<ReplyView>,
    /// For a model call (`model_requested`, `model_responded`, `model_failed`) or a
    /// `context_compacted`: the request it sent, rebuilt from the log by the runtime's one
    /// request builder, or why there is none (a compaction that dropped without asking).
    pub request: Option<Result<RequestView, String>>,
    /// The latest compaction summary in the state, as the model is shown it.
    pub summary_text: Option<String>,
    /// Compactions so far.
    pub compactions: u64,
    /// The agent's plan in the state at this event (`None`: no plan set yet).
    pub plan: Option<Plan>,
    /// The question the run waits on in the state at this event (it is parked on a
    /// `user.ask` call), or why its arguments are not one.
    pub question: Option<Result<Asking, String>>,
    /// For a `child_started` or `child_finished`: the child run.
    pub child: Option<RunId>,
    /// For a `hook_decided`: what the hook decided, as a person reads it
    /// ([`crate::cards::hook_decision`]), and whether it denied the call.
    pub hook: Option<(String, bool)>,
}

/// What a message of a request is, in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The run's task, pinned before the conversation once it has left it.
    PinnedTask,
    /// The latest compaction summary, pinned after the task.
    PinnedSummary,
    /// New since the run's previous model call.
    New,
    /// Sent before, in an earlier request too.
    Earlier,
    /// In a summary request: a message being summarized (it then leaves the conversation).
    Summarized,
    /// In a summary request: the instruction asking for the summary.
    Instruction,
}

impl Mark {
    /// A word or two for the mark.
    pub fn label(self) -> &'static str {
        match self {
            Mark::PinnedTask => "pinned task",
            Mark::PinnedSummary => "pinned summary",
            Mark::New => "new",
            Mark::Earlier => "",
            Mark::Summarized => "to summarize",
            Mark::Instruction => "summary instruction",
        }
    }
}

/// One message of a request, as the provider was sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMessage {
    /// Its place in the request, from 1.
    pub n: usize,
    /// `user`, `assistant`, or `tool [call id]` (with `(error)` for a failed call).
    pub role: String,
    /// What it is in the request.
    pub mark: Mark,
    /// Reasoning blocks sent back with an assistant message.
    pub reasoning: Vec<String>,
    /// Its text (a tool result's content, as sent: an artifact preview for long output).
    pub text: String,
    /// An assistant message's tool calls, each as `id name arguments`.
    pub calls: Vec<String>,
}

/// A model call's request, exactly as rebuilt by `retrace_replay::request::rebuild`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    /// Seq of its `model_requested`.
    pub seq: u64,
    /// The agent step it asked for.
    pub step: u64,
    /// Which try of that step (1 for the first).
    pub attempt: u32,
    /// The request record's short id.
    pub record: String,
    /// Model name.
    pub model: String,
    /// Parameters, as JSON (empty: none).
    pub params: String,
    /// System prompt.
    pub system: String,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    /// How it measured against the context budget, in words (runs with a `[context]`).
    pub budget: Option<String>,
    /// For a summary request: how many conversation messages it summarizes.
    pub compacts: Option<u64>,
    /// How many of the last messages are new since the previous model call.
    pub new: usize,
    /// The messages, in order.
    pub messages: Vec<RequestMessage>,
}

/// Two points compared: where the runs part and how the states differ.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffView {
    /// First point.
    pub a: (RunId, u64),
    /// Second point.
    pub b: (RunId, u64),
    /// The first seq where the two runs' logs differ (`None`: one is a prefix of the other).
    pub first_divergence: Option<u64>,
    /// State changes from a to b: `(kind, path, old, new)`.
    pub changes: Vec<(ChangeKind, String, Option<Value>, Option<Value>)>,
}

/// A request to the background thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The run list.
    Runs,
    /// Timeline rows of `run` from `from` (a multiple of [`PAGE`]).
    Page {
        /// Run.
        run: RunId,
        /// First seq.
        from: u64,
    },
    /// The detail at `seq` of `run`.
    Detail {
        /// Run.
        run: RunId,
        /// Seq.
        seq: u64,
    },
    /// The nearest event of `class` after (or before) `from`.
    Find {
        /// Run.
        run: RunId,
        /// Start (excluded).
        from: u64,
        /// What to find.
        class: Class,
        /// Direction.
        forward: bool,
    },
    /// The run's steps and where events of each class fall over it (in `bins` bins):
    /// `carry` is the index so far, extended with what was appended since (a fresh one is
    /// built when it is `None` or of another run).
    Overview {
        /// Run.
        run: RunId,
        /// Number of density bins.
        bins: usize,
        /// The index so far.
        carry: Option<Arc<StepIndex>>,
    },
    /// The cards of these steps of `run` (position in its index, and the step).
    Cards {
        /// Run.
        run: RunId,
        /// The steps.
        steps: Vec<(usize, StepHead)>,
    },
    /// A page of a tool result's lines, from line `from` (0-based).
    Lines {
        /// The output blob.
        blob: retrace_events::BlobId,
        /// First line.
        from: usize,
    },
    /// Every event of `run` whose payloads contain `query`.
    Search {
        /// Run.
        run: RunId,
        /// What to find.
        query: String,
    },
    /// The call of `parent` that started child run `child`: a scan of the parent's log
    /// for its `child_started`.
    ParentCall {
        /// The delegating run.
        parent: RunId,
        /// The child run.
        child: RunId,
    },
    /// Two runs' steps side by side.
    Compare {
        /// The first run.
        a: RunId,
        /// The second run.
        b: RunId,
    },
    /// Compare two points.
    Diff {
        /// First point.
        a: (RunId, u64),
        /// Second point.
        b: (RunId, u64),
    },
    /// Fork `run` at `seq`: continuing after it, or with its content replaced by `edit`
    /// (JSON); then continue the fork with the runtime if `resume`.
    Fork {
        /// Run.
        run: RunId,
        /// Seq.
        seq: u64,
        /// New content for the event at `seq`.
        edit: Option<String>,
        /// Continue the fork at once.
        resume: bool,
    },
    /// Decide a pending approval, then continue the run if `resume`.
    Decide {
        /// Run.
        run: RunId,
        /// The call.
        call: String,
        /// Approve or deny.
        decision: Decision,
        /// A note for the model.
        note: Option<String>,
        /// Continue the run at once.
        resume: bool,
    },
    /// Answer the question `call` of `run` waits on, then continue the run if `resume`.
    Answer {
        /// Run.
        run: RunId,
        /// The `user.ask` call.
        call: String,
        /// A choice or free text.
        answer: Answer,
        /// Continue the run at once.
        resume: bool,
    },
}

/// An answer from the background thread. Errors are messages for the UI to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The run list.
    Runs(Result<Vec<RunRow>, String>),
    /// A page of rows.
    Page {
        /// Run.
        run: RunId,
        /// First seq.
        from: u64,
        /// The rows.
        rows: Result<Vec<Row>, String>,
    },
    /// The detail at one event.
    Detail(Box<Result<Detail, String>>),
    /// Where a search ended: `None` if there is no such event.
    Found {
        /// Run.
        run: RunId,
        /// The seq found.
        seq: Option<u64>,
    },
    /// The run's steps, and per density bin the events of each class (model, tool,
    /// approval, error, run, context; see [`Class::index`]).
    Overview {
        /// Run.
        run: RunId,
        /// The steps (and the events counted: `index.scanned`), or why they could not be
        /// read.
        index: Result<Arc<StepIndex>, String>,
        /// Counts per bin.
        bins: Vec<[u32; CLASSES]>,
    },
    /// Cards of steps asked for (an error for a step that could not be read).
    Cards {
        /// Run.
        run: RunId,
        /// The cards, by step position.
        cards: Vec<(usize, Result<Card, String>)>,
    },
    /// A page of a tool result: its text and its lines in all.
    Lines {
        /// The output blob.
        blob: retrace_events::BlobId,
        /// First line.
        from: usize,
        /// The page's text.
        text: String,
        /// Lines in all.
        total: usize,
    },
    /// What a search found.
    Searched {
        /// Run.
        run: RunId,
        /// The hits, or why the search failed.
        found: Result<Found, String>,
    },
    /// Where child run `child` was started in its parent: the seq of the delegating
    /// call's `tool_requested` and its call id (`None`: not in the parent's log).
    ParentCall {
        /// The child run.
        child: RunId,
        /// The call, or why the parent could not be read.
        at: Result<Option<(u64, String)>, String>,
    },
    /// Two runs compared step by step.
    Compared(Box<Result<Comparison, String>>),
    /// Two points compared.
    Diff(Box<Result<DiffView, String>>),
    /// A fork made (its id), or why not.
    Forked(Result<RunId, String>),
    /// A decision recorded (the call), or why not.
    Decided(Result<String, String>),
    /// An answer recorded: the call, and whether the run was handed on to continue; or why
    /// not.
    Answered(Result<(String, bool), String>),
    /// A request made stale by a newer one of the same kind, not answered.
    Skipped,
}

/// The background threads' handle: one answers everything the UI waits on; a second keeps
/// the step index and density strip (most of a second on a million events at first, then
/// only what was appended); a third does searches and run-vs-run comparisons, which read
/// whole runs. So neither holds up the rows, cards and detail asked for in the same frame,
/// and a long search does not stop a live run from streaming in.
#[derive(Debug)]
pub struct Source {
    tx: Option<flume::Sender<Request>>,
    slow_tx: Option<flume::Sender<Request>>,
    overview_tx: Option<flume::Sender<Request>>,
    rx: flume::Receiver<Reply>,
    in_flight: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Source {
    /// Start the threads over `store`; `wake` is called after each reply (to repaint).
    pub fn spawn(
        store: Arc<dyn Store>,
        host: Arc<dyn Host>,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let (tx, requests) = flume::unbounded::<Request>();
        let (slow_tx, slow_requests) = flume::unbounded::<Request>();
        let (overview_tx, overview_requests) = flume::unbounded::<Request>();
        let (replies, rx) = flume::unbounded();
        let wake: Wake = Arc::new(wake);
        let threads = vec![
            worker(
                "retrace-inspector-source",
                requests,
                replies.clone(),
                (store.clone(), host.clone(), wake.clone()),
            ),
            worker(
                "retrace-inspector-overview",
                overview_requests,
                replies.clone(),
                (store.clone(), host.clone(), wake.clone()),
            ),
            worker(
                "retrace-inspector-whole-runs",
                slow_requests,
                replies,
                (store, host, wake),
            ),
        ];
        Self {
            tx: Some(tx),
            slow_tx: Some(slow_tx),
            overview_tx: Some(overview_tx),
            rx,
            in_flight: 0,
            threads,
        }
    }

    /// Ask for something; the reply comes through [`Self::poll`].
    pub fn request(&mut self, request: Request) {
        let tx = match request {
            Request::Overview { .. } => &self.overview_tx,
            Request::Search { .. } | Request::Compare { .. } | Request::ParentCall { .. } => {
                &self.slow_tx
            }
            _ => &self.tx,
        };
        if let Some(tx) = tx
            && tx.send(request).is_ok()
        {
            self.in_flight += 1;
        }
    }

    /// Replies that have arrived.
    pub fn poll(&mut self) -> Vec<Reply> {
        let replies: Vec<Reply> = self.rx.try_iter().collect();
        self.in_flight = self.in_flight.saturating_sub(replies.len());
        replies
    }

    /// Requests not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // closing the channels ends the threads' loops
        self.tx = None;
        self.slow_tx = None;
        self.overview_tx = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Repaints the UI.
type Wake = Arc<dyn Fn() + Send + Sync>;

/// A thread answering `requests` in order. Of the requests waiting together, only the newest
/// detail, the newest overview and the newest search are answered: the cursor, the run or
/// the query has moved on since.
fn worker(
    name: &str,
    requests: flume::Receiver<Request>,
    replies: flume::Sender<Reply>,
    (store, host, wake): (Arc<dyn Store>, Arc<dyn Host>, Wake),
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Ok(first) = requests.recv() {
                let mut batch = vec![first];
                batch.extend(requests.try_iter());
                let last_detail = batch
                    .iter()
                    .rposition(|r| matches!(r, Request::Detail { .. }));
                let last_overview = batch
                    .iter()
                    .rposition(|r| matches!(r, Request::Overview { .. }));
                let last_search = batch
                    .iter()
                    .rposition(|r| matches!(r, Request::Search { .. }));
                for (i, request) in batch.into_iter().enumerate() {
                    let reply = match request {
                        Request::Detail { .. } if Some(i) != last_detail => Reply::Skipped,
                        Request::Overview { .. } if Some(i) != last_overview => Reply::Skipped,
                        Request::Search { .. } if Some(i) != last_search => Reply::Skipped,
                        request => answer(store.as_ref(), host.as_ref(), &request),
                    };
                    if replies.send(reply).is_err() {
                        return;
                    }
                    wake();
                }
            }
        })
        .expect("spawn an inspector background thread")
}

/// Answer one request from the store.
pub fn answer(store: &dyn Store, host: &dyn Host, request: &Request) -> Reply {
    match request {
        Request::Runs => Reply::Runs(runs(store).map_err(|e| e.to_string())),
        &Request::Page { run, from } => Reply::Page {
            run,
            from,
            rows: page(store, &run, from).map_err(|e| e.to_string()),
        },
        &Request::Detail { run, seq } => Reply::Detail(Box::new(
            detail(store, &run, seq).map_err(|e| e.to_string()),
        )),
        &Request::Find {
            run,
            from,
            class,
            forward,
        } => Reply::Found {
            run,
            seq: find(store, &run, from, class, forward).unwrap_or(None),
        },
        Request::Overview { .. }
        | Request::Cards { .. }
        | Request::Lines { .. }
        | Request::Search { .. }
        | Request::ParentCall { .. }
        | Request::Compare { .. } => answer_story(store, request),
        &Request::Diff { a, b } => {
            Reply::Diff(Box::new(diff(store, a, b).map_err(|e| e.to_string())))
        }
        Request::Fork {
            run,
            seq,
            edit,
            resume,
        } => Reply::Forked(
            fork_at(store, host, *run, *seq, edit.as_deref()).and_then(|id| {
                if *resume {
                    host.resume(id)?;
                }
                Ok(id)
            }),
        ),
        Request::Decide {
            run,
            call,
            decision,
            note,
            resume,
        } => Reply::Decided(
            decide_approval(
                store,
                run,
                Some(call),
                *decision,
                BY,
                note.as_deref(),
                host.now(),
            )
            .map_err(|e| e.to_string())
            .and_then(|(call, _)| {
                if *resume {
                    host.resume(*run)?;
                }
                Ok(call)
            }),
        ),
        Request::Answer {
            run,
            call,
            answer,
            resume,
        } => Reply::Answered(
            answer_question(store, run, Some(call), answer, BY, host.now())
                .map_err(|e| e.to_string())
                .and_then(|(call, _)| {
                    if *resume {
                        host.resume(*run)?;
                    }
                    Ok((call, *resume))
                }),
        ),
    }
}

/// Answer a request of the step, time and run-vs-run views.
fn answer_story(store: &dyn Store, request: &Request) -> Reply {
    match request {
        Request::Overview { run, bins, carry } => {
            // the index the UI holds, extended here (copied first while the UI still
            // holds it: off the UI thread)
            let mut index = match carry {
                Some(index) if index.run == Some(*run) => Arc::clone(index),
                _ => Arc::new(StepIndex::new(*run)),
            };
            match crate::compare::extend(store, run, Arc::make_mut(&mut index)) {
                Ok(()) => Reply::Overview {
                    run: *run,
                    bins: index.density(*bins),
                    index: Ok(index),
                },
                Err(e) => Reply::Overview {
                    run: *run,
                    bins: Vec::new(),
                    index: Err(e.to_string()),
                },
            }
        }
        Request::Cards { run, steps } => Reply::Cards {
            run: *run,
            cards: steps
                .iter()
                .map(|&(i, head)| (i, card(store, run, i, head).map_err(|e| e.to_string())))
                .collect(),
        },
        &Request::Lines { blob, from } => {
            let (text, total) = crate::cards::page_of(store, &blob, from);
            Reply::Lines {
                blob,
                from,
                text,
                total,
            }
        }
        Request::Search { run, query } => Reply::Searched {
            run: *run,
            found: crate::search::search(store, run, query).map_err(|e| e.to_string()),
        },
        &Request::Compare { a, b } => {
            Reply::Compared(Box::new(crate::compare::compare(store, a, b)))
        }
        &Request::ParentCall { parent, child } => Reply::ParentCall {
            child,
            at: parent_call(store, &parent, &child).map_err(|e| e.to_string()),
        },
        _ => Reply::Skipped,
    }
}

/// The call of `parent` that started `child`: the seq of its `tool_requested` (the step
/// of the call) and its id, found by the `child_started` recorded right after it.
fn parent_call(
    store: &dyn Store,
    parent: &RunId,
    child: &RunId,
) -> Result<Option<(u64, String)>, retrace_store::Error> {
    let len = store.require_run(parent)?.len();
    let mut next = 0;
    while next < len {
        let end = (next + MAX_RANGE - 1).min(len - 1);
        for (_, event) in store.events(parent, next..=end)? {
            if let EventKind::ChildStarted {
                call_id, child: c, ..
            } = event.kind
                && c == *child
            {
                // recorded with the call's `tool_requested`, just before it
                let seq = match event.seq.checked_sub(1) {
                    Some(before) => match store.event_at(parent, before)? {
                        Some((_, e))
                            if matches!(&e.kind, EventKind::ToolRequested { call_id: id, .. }
                                if *id == call_id) =>
                        {
                            before
                        }
                        _ => event.seq,
                    },
                    None => event.seq,
                };
                return Ok(Some((seq, call_id)));
            }
        }
        next = end + 1;
    }
    Ok(None)
}

/// Who the inspector's decisions and answers are recorded as by.
pub const BY: &str = "inspector";

impl Class {
    /// Index in a density bin.
    pub fn index(self) -> usize {
        match self {
            Class::Model => 0,
            Class::Tool => 1,
            Class::Approval => 2,
            Class::Error => 3,
            Class::Run => 4,
            Class::Context => 5,
        }
    }
}

fn diff(
    store: &dyn Store,
    a: (RunId, u64),
    b: (RunId, u64),
) -> Result<DiffView, retrace_replay::Error> {
    let state_a = state_at(store, &a.0, a.1, READ_ONLY)?.state;
    let state_b = state_at(store, &b.0, b.1, READ_ONLY)?.state;
    let first_divergence = compare_runs(store, &a.0, &b.0)?
        .first_divergence
        .map(|d| d.seq);
    Ok(DiffView {
        a,
        b,
        first_divergence,
        changes: diff_states(&state_a, &state_b)
            .into_iter()
            .map(|c| (c.kind, c.path, c.old, c.new))
            .collect(),
    })
}

fn fork_at(
    store: &dyn Store,
    host: &dyn Host,
    run: RunId,
    seq: u64,
    edit: Option<&str>,
) -> Result<RunId, String> {
    let at = match edit {
        None => ForkAt::After(seq),
        Some(text) => {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| format!("the edit is not valid JSON: {e}"))?;
            ForkAt::edit(store, &run, seq, &value, "inspector").map_err(|e| e.to_string())?
        }
    };
    fork(store, &run, at, host.new_run_id(), host.now())
        .map(|info| info.id)
        .map_err(|e| e.to_string())
}

/// Reading never writes snapshots: the inspector may look at a store another tool owns.
const READ_ONLY: SnapshotPolicy = SnapshotPolicy {
    every: 1_000,
    write: false,
};

fn runs(store: &dyn Store) -> Result<Vec<RunRow>, retrace_replay::Error> {
    let mut out = Vec::new();
    for info in store.runs()? {
        let state = state_at_head(store, &info.id, READ_ONLY)?.state;
        out.push(RunRow {
            id: info.id,
            name: info.meta.get("name").cloned().unwrap_or_default(),
            status: describe::status(&state.status),
            finished: state.is_finished(),
            created_at: info.created_at,
            len: info.len(),
            steps: state.totals.steps,
            tokens: state.totals.input_tokens + state.totals.output_tokens,
            cost_micro_usd: state.totals.cost_micro_usd,
            parent: info.origin.map(|o| (o.run, o.at.seq)),
            child_of: info.meta.get("parent").and_then(|p| p.parse().ok()),
            agent: info.meta.get("agent").cloned(),
        });
    }
    out.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
    Ok(out)
}

fn page(store: &dyn Store, run: &RunId, from: u64) -> Result<Vec<Row>, retrace_store::Error> {
    Ok(store
        .events(run, from..=from + PAGE - 1)?
        .into_iter()
        .map(|(_, e)| Row {
            seq: e.seq,
            kind: e.kind.name(),
            class: Class::of(&e.kind),
            at: e.at,
            summary: describe::summary(&e),
        })
        .collect())
}

fn find(
    store: &dyn Store,
    run: &RunId,
    from: u64,
    class: Class,
    forward: bool,
) -> Result<Option<u64>, retrace_store::Error> {
    let len = store.require_run(run)?.len();
    let step = MAX_RANGE.min(4_096);
    if forward {
        let mut next = from + 1;
        while next < len {
            let end = (next + step - 1).min(len - 1);
            if let Some((_, e)) = store
                .events(run, next..=end)?
                .into_iter()
                .find(|(_, e)| Class::of(&e.kind) == class)
            {
                return Ok(Some(e.seq));
            }
            next = end + 1;
        }
    } else {
        let mut end = from;
        while end > 0 {
            let start = end.saturating_sub(step);
            if let Some((_, e)) = store
                .events(run, start..=end - 1)?
                .into_iter()
                .rev()
                .find(|(_, e)| Class::of(&e.kind) == class)
            {
                return Ok(Some(e.seq));
            }
            end = start;
        }
    }
    Ok(None)
}

/// Readable text of a message's content blob.
fn message_text(store: &dyn Store, message: &retrace_replay::Message) -> String {
    let value = blob_value(store, &message.content);
    match &value {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let mut text = o
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(calls) = o.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    let name = call.get("name").and_then(Value::as_str).unwrap_or("?");
                    let args = call
                        .get("arguments")
                        .map(Value::to_string)
                        .unwrap_or_default();
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str("-> ");
                    text.push_str(name);
                    text.push(' ');
                    text.push_str(&args);
                }
            }
            if text.is_empty() {
                value.to_string()
            } else {
                text
            }
        }
        other => other.to_string(),
    }
}

fn detail(store: &dyn Store, run: &RunId, seq: u64) -> Result<Detail, retrace_replay::Error> {
    let (id, event) = store
        .event_at(run, seq)?
        .ok_or(retrace_replay::Error::NoSuchSeq {
            run: *run,
            seq,
            len: store.require_run(run)?.len(),
        })?;
    let mut json = serde_json::to_value(&event).unwrap_or(Value::Null);
    let payloads: serde_json::Map<String, Value> = event
        .kind
        .blobs()
        .iter()
        .map(|b| (b.to_string(), blob_value(store, b)))
        .collect();
    if let Value::Object(o) = &mut json {
        o.insert("payloads".into(), Value::Object(payloads));
    }
    let state: State = state_at(store, run, seq, READ_ONLY)?.state;
    let approvals = state
        .approvals_pending
        .values()
        .map(|a| {
            (
                a.call_id.clone(),
                crate::cards::asked(&blob_value(store, &a.request)),
            )
        })
        .collect();
    let (editable, edit_template) = edit_template(store, &event.kind);
    let reply = match &event.kind {
        EventKind::ModelResponded { response, .. } => {
            serde_json::from_value(blob_value(store, response))
                .ok()
                .map(|reply| ReplyView::of(&reply))
        }
        _ => None,
    };
    let conversation = state
        .conversation
        .iter()
        .map(|m| {
            (
                format!("{:?}", m.role).to_lowercase(),
                message_text(store, m),
            )
        })
        .collect();
    let request = match &event.kind {
        EventKind::ContextCompacted {
            request_seq: None, ..
        } => Some(Err(
            "these messages were dropped without a summary request (compaction = \"drop_oldest\")"
                .to_owned(),
        )),
        EventKind::ModelRequested { .. }
        | EventKind::ModelResponded { .. }
        | EventKind::ModelFailed { .. }
        | EventKind::ContextCompacted { .. } => Some(request_view(store, run, seq, &state)),
        _ => None,
    };
    let summary_text = state.summary.map(|blob| match blob_value(store, &blob) {
        Value::String(s) => s,
        other => other.to_string(),
    });
    let plan = state
        .plan
        .and_then(|blob| Plan::from_value(&blob_value(store, &blob)));
    let question = question_at(store, &state);
    let (child, hook) = child_and_hook(store, &event.kind);
    Ok(Detail {
        run: *run,
        seq,
        id: id.to_string(),
        kind: event.kind.name(),
        at: event.at,
        summary: describe::summary(&event),
        event: json,
        conversation,
        status: describe::status(&state.status),
        state_hash: state.hash().to_string(),
        state: state.to_json(),
        approvals,
        editable,
        edit_template,
        reply,
        request,
        summary_text,
        compactions: state.totals.compactions,
        plan,
        question,
        child,
        hook,
    })
}

/// For a `child_started` or `child_finished`, its child run; for a `hook_decided`, what the
/// hook decided in a line, and whether it denied the call.
fn child_and_hook(store: &dyn Store, kind: &EventKind) -> (Option<RunId>, Option<(String, bool)>) {
    match kind {
        EventKind::ChildStarted { child, .. } | EventKind::ChildFinished { child, .. } => {
            (Some(*child), None)
        }
        EventKind::HookDecided {
            hook,
            stage,
            decision,
            ..
        } => {
            let decision = blob_value(store, decision);
            let denied = decision.get("decision").and_then(Value::as_str) == Some("deny");
            let line = crate::cards::hook_decision(hook, *stage, &decision);
            (None, Some((line, denied)))
        }
        _ => (None, None),
    }
}

/// Whether an event's content can be edited for a fork, and the JSON an edit starts from
/// (the reply, the output, or the decision).
fn edit_template(store: &dyn Store, kind: &EventKind) -> (bool, String) {
    match kind {
        EventKind::ModelResponded { response, .. } => (true, pretty(&blob_value(store, response))),
        EventKind::ToolReturned { output, .. } => (true, pretty(&blob_value(store, output))),
        EventKind::ApprovalDecided { decision, .. } => (
            true,
            pretty(&serde_json::json!({
                "decision": match decision { Decision::Approved => "approved", Decision::Denied => "denied" },
                "note": ""
            })),
        ),
        _ => (false, String::new()),
    }
}

/// The question `state` waits on, read as `retrace_replay::pending_question` reads it at the
/// head (here at any event): the asking call's arguments.
fn question_at(store: &dyn Store, state: &State) -> Option<Result<Asking, String>> {
    let Status::AwaitingAnswer { call_id } = &state.status else {
        return None;
    };
    let Some(Pending::Tool { args, seq, .. }) = state.pending.get(call_id) else {
        return Some(Err(format!("the call {call_id} is not pending")));
    };
    let question = match store.blob(args) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| Question::from_args(&v)),
        Ok(None) => Err(format!("its arguments blob {args} is missing")),
        Err(e) => Err(e.to_string()),
    };
    Some(
        question
            .map(|question| Asking {
                call_id: call_id.clone(),
                seq: *seq,
                question,
            })
            .map_err(|why| format!("the question of {call_id} cannot be read: {why}")),
    )
}

/// One message of a request as the detail shows it.
fn request_message(
    i: usize,
    mark: Mark,
    message: &retrace_events::chat::ChatMessage,
) -> RequestMessage {
    use retrace_events::chat::ChatMessage;
    let (role, reasoning, text, calls) = match message {
        ChatMessage::User { content } => ("user".to_owned(), vec![], content.clone(), vec![]),
        ChatMessage::Assistant {
            text,
            tool_calls,
            reasoning,
        } => (
            "assistant".to_owned(),
            ReplyView::reasoning_of(reasoning),
            text.clone(),
            tool_calls
                .iter()
                .map(|c| format!("{} {} {}", c.id, c.name, c.arguments))
                .collect(),
        ),
        ChatMessage::Tool {
            call_id,
            content,
            is_error,
        } => (
            format!(
                "tool [{call_id}]{}",
                if *is_error { " (error)" } else { "" }
            ),
            vec![],
            content.clone(),
            vec![],
        ),
    };
    RequestMessage {
        n: i + 1,
        role,
        mark,
        reasoning,
        text,
        calls,
    }
}

/// A request's budget in words: calibrated tokens of the limit, tokenizer, scale.
fn budget_line(b: &retrace_replay::request::Budget) -> String {
    let tokens = b.tokens();
    let percent = tokens
        .saturating_mul(100)
        .checked_div(b.limit)
        .unwrap_or_default();
    format!(
        "budget: {tokens} of {} tokens ({percent}%) · tokenizer {} · scale {}.{:03} \
         ({} counted)",
        b.limit,
        b.tokenizer,
        b.scale / 1000,
        b.scale % 1000,
        b.measured
    )
}

/// The request of the model call at `seq`, rebuilt as `retrace show RUN@SEQ --request`
/// rebuilds it; `state` (at `seq`) tells the pinned task from the pinned summary.
fn request_view(
    store: &dyn Store,
    run: &RunId,
    seq: u64,
    state: &State,
) -> Result<RequestView, String> {
    use retrace_replay::request;
    let rebuilt = request::rebuild(store, run, seq).map_err(|e| e.to_string())?;
    let (record, refs) = request::reconstruct(store, &rebuilt.record).map_err(|e| e.to_string())?;
    let messages = &rebuilt.request.messages;
    let pinned = record.pinned.len().min(messages.len());
    let first_new = messages.len() - rebuilt.new;
    let compacts = rebuilt
        .compacts
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let mark = if i < pinned {
                if refs.get(i).map(|r| r.content) == state.input {
                    Mark::PinnedTask
                } else {
                    Mark::PinnedSummary
                }
            } else if let Some(n) = compacts {
                if i == messages.len() - 1 {
                    Mark::Instruction
                } else if i < pinned + n {
                    Mark::Summarized
                } else {
                    Mark::Earlier
                }
            } else if i >= first_new {
                Mark::New
            } else {
                Mark::Earlier
            };
            request_message(i, mark, message)
        })
        .collect();
    let request = &rebuilt.request;
    Ok(RequestView {
        seq: rebuilt.seq,
        step: request.step,
        attempt: rebuilt.attempt,
        record: rebuilt.record.short(),
        model: request.model.clone(),
        params: if request.params.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&request.params).unwrap_or_default()
        },
        system: request.system.clone(),
        tools: request.tools.iter().map(|t| t.name.clone()).collect(),
        budget: rebuilt.budget.as_ref().map(budget_line),
        compacts: rebuilt.compacts,
        new: rebuilt.new,
        messages,
    })
}

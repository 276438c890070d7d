//! The executor: performs what [`decide`] asks, through one durable-effect path.
//!
//! For every effect the intent is durable before the effect starts, and the outcome is
//! folded into the state before the next decision: a model call is `model_requested` →
//! provider → `model_responded` + `tool_calls_proposed` or `model_failed`; a tool call is
//! `tool_requested` → tool → `tool_returned`. Events are appended by a [`Journal`] right
//! before the next effect or the end of the drive, so an outcome and the next intent share
//! one atomic append and one sync. After a crash
//! the state says what was in flight and [`decide`] chooses: re-issue the model call,
//! re-run an idempotent tool, or mark the outcome unknown. Nothing already recorded is
//! performed again.

use std::sync::Arc;
use std::time::Instant;

use retrace_events::{
    BlobId, Event, EventKind, Head, Outcome, ProposedCall, RunId, Usage, canonical_json,
};
use retrace_providers::{ChatMessage, Delta, ModelReply, ModelRequest, Provider, ToolDef};
use retrace_replay::request;
use retrace_replay::{Role, SnapshotPolicy, State, apply, encode_snapshot, state_at_head};
use retrace_store::{NewRun, Store};
use serde_json::{Value, json};

use crate::context::layout::{self, Measure, Plan};
use crate::context::tokens::Tokenizer;
use crate::context::{Compaction, artifact, compaction};
use crate::decide::{Agent, LOOP_WARNING, Next, decide};
use crate::entropy::now;
use crate::inbox::Inbox;
use crate::spec::Spec;
use crate::tools::{self, Toolbox, Workspace};
use retrace_replay::Question;
use retrace_replay::plan::Plan as PlanState;

mod children;
mod hooked;
mod routed;
mod trusted;

/// How a runner makes the model client of a spec: its own model's, and each child run's
/// (`agent.delegate`). Default [`crate::model::provider`].
pub type Providers = Arc<dyn Fn(&Spec) -> Result<Box<dyn Provider>, String> + Send + Sync>;

/// What can stop the executor (as opposed to ending the run, which is recorded).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
    /// The log does not fold (a bug or a damaged store).
    #[error(transparent)]
    Replay(#[from] retrace_replay::Error),
    /// A recorded payload is missing or unreadable.
    #[error("run {run}: {what}")]
    Payload {
        /// The run.
        run: RunId,
        /// What is wrong.
        what: String,
    },
    /// The agent's tools or policy could not be set up.
    #[error("cannot set up the agent: {0}")]
    Setup(String),
    /// The drive's host may no longer act for the run (its hold on it, a lease, lapsed
    /// while it stalled): the tool call was not started. Another host resumes the run.
    #[error(
        "run {run}: tool call {call_id} not started: this process's hold on the run lapsed; \
         another process resumes the run from its log"
    )]
    HoldLapsed {
        /// The run.
        run: RunId,
        /// The call left unstarted (its intent is recorded).
        call_id: String,
    },
    /// The tool source refused a call (an eval case whose call has no recorded match);
    /// nothing of the call was recorded.
    #[error("tool call {call_id} ({tool}) refused: {why}")]
    ToolRefused {
        /// The call.
        call_id: String,
        /// Its tool.
        tool: String,
        /// Why.
        why: String,
    },
}

/// Where a tool call's result comes from when not (only) from the tool: an eval serves
/// calls from a recording.
pub trait ToolSource: Send + Sync {
    /// What to do with a call of `tool` with the arguments blob `args`, asked once per call
    /// before its intent is recorded.
    fn serve(&self, tool: &str, args: &BlobId) -> Served;

    /// Signals the source has for the run in `state`, recorded at the top of the step before
    /// deciding: an eval of a recording gives back the user messages the recording got, once
    /// the fork has come as far as the recording had when they came. Default: none.
    fn letters(&self, _state: &State) -> Vec<EventKind> {
        Vec::new()
    }
}

/// A [`ToolSource`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// Record this result without running the tool.
    Recorded {
        /// The output blob.
        output: BlobId,
        /// Whether it is an error.
        is_error: bool,
        /// What the recording holds around the call beyond its request and result, recorded
        /// as it was.
        around: Option<Box<Around>>,
    },
    /// Run the tool.
    Live,
    /// Stop the drive before the call ([`Error::ToolRefused`]).
    Refuse(String),
}

/// What a recording holds around a served call: its hooks' decisions (so they are read,
/// not run again), the arguments it was requested with after them, and a delegate call's
/// child events (the recorded child's answer stands in for a new child).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Around {
    /// `hook_decided` events, before-hooks then after-hooks.
    pub hooks: Vec<EventKind>,
    /// The arguments the call was requested with, when a hook rewrote them.
    pub args: Option<BlobId>,
    /// A delegate call's `child_started` and `child_finished`.
    pub child: Option<(EventKind, EventKind)>,
}

/// How a drive ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The run finished (now or before).
    Finished(Outcome),
    /// The run waits for a human: an approval, or an unknown outcome to resolve.
    Parked(String),
    /// The host asked the drive to stop (it is shutting down); the run is unfinished and
    /// continues when resumed.
    Interrupted,
}

/// Something worth showing while a run progresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// An event was appended.
    Appended(Event),
    /// Model text streamed in.
    Text(String),
    /// Progress of a child run this drive drives (`agent.delegate`).
    Child(RunId, Box<Progress>),
}

/// What performing a tool call came to.
enum Performed {
    /// Record these.
    Events(Vec<EventKind>),
    /// The drive stops (a child run parked, or the host asked).
    Stopped(Stop),
}

/// An agent ready to run: spec, tools, policy, model.
pub struct Runner<'a> {
    store: &'a dyn Store,
    spec: Spec,
    agent: Agent,
    toolbox: Toolbox,
    provider: Box<dyn Provider>,
    /// Results served instead of running tools (evals).
    source: Option<Box<dyn ToolSource>>,
    /// Messages as sent, by reference and artifact limit, with their tokens (when the run
    /// has a token budget): blobs never change, so each message is read, parsed and
    /// counted once instead of at every model call, and a request shares them instead of
    /// copying.
    messages: std::sync::Mutex<std::collections::HashMap<CacheKey, (Arc<ChatMessage>, u64)>>,
    /// The system prompt and tool definitions as stored blobs (the same for every
    /// request), and their tokens.
    header_blobs: std::sync::OnceLock<(BlobId, BlobId, u64)>,
    /// How this run's model counts tokens (`None`: the run has no token budget).
    tokenizer: Option<Tokenizer>,
    /// Tips of the request records this runner wrote, by blob, so the next record of a
    /// run chains to its predecessor without reading it back.
    tips: std::sync::Mutex<std::collections::HashMap<BlobId, request::Tip>>,
    /// How child runs get their model clients.
    providers: Providers,
    /// The clients of `[[models]]`, by name, each made when first asked.
    routed: routed::Clients,
}

/// Entries kept in the message cache before it starts over.
const MESSAGE_CACHE: usize = 4_096;

/// A built message's cache key: its reference and the artifact limit it was built with.
type CacheKey = (request::MessageRef, Option<u64>);

/// A tool call to perform (what [`Next::RunTool`] holds).
struct ToolCall {
    call_id: String,
    tool: String,
    args: BlobId,
    rerun: bool,
    idempotent: bool,
}

/// The next model call, or what stands for it.
enum Asked {
    /// Make this request (its record stored), for this purpose.
    Request(ModelRequest, BlobId, Purpose),
    /// Record these instead.
    Events(Vec<EventKind>),
}

/// What a model call is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// An agent step: the reply is recorded as `model_responded`.
    Step,
    /// A summary of the conversation's first `evict` messages: recorded as
    /// `context_compacted`.
    Summary { evict: u64 },
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("agent", &self.spec.name)
            .field("tools", &self.toolbox)
            .finish_non_exhaustive()
    }
}

impl<'a> Runner<'a> {
    /// The same runner appending through `store` instead: e.g. a store fenced by the
    /// run's lease, which this process could take only once the run existed.
    pub fn on_store(self, store: &dyn Store) -> Runner<'_> {
        Runner {
            store,
            spec: self.spec,
            agent: self.agent,
            toolbox: self.toolbox,
            provider: self.provider,
            source: self.source,
            messages: self.messages,
            header_blobs: self.header_blobs,
            tokenizer: self.tokenizer,
            tips: self.tips,
            providers: self.providers,
            routed: self.routed,
        }
    }

    /// Set up `spec` over `store`, with `provider` as its model.
    pub fn new(
        store: &'a dyn Store,
        spec: Spec,
        provider: Box<dyn Provider>,
    ) -> Result<Self, Error> {
        if let Some(store_dir) = Spec::guarded_store() {
            spec.keeps_out_of(store_dir).map_err(Error::Setup)?;
        }
        if !spec.workspace.is_dir() {
            return Err(Error::Setup(format!(
                "the workspace {} does not exist (or is not a directory); retrace never creates \
                 one in its place: restore it, or start a new run with a spec whose `workspace` \
                 exists",
                spec.workspace.display()
            )));
        }
        // recorded resolved (`Spec::load`): a symlink swapped in since would move the run
        if spec.workspace.is_absolute()
            && let Ok(real) = spec.workspace.canonicalize()
            && real != crate::spec::normalised(&spec.workspace)
        {
            return Err(Error::Setup(format!(
                "the workspace {} now leads to {} (a symlink on the way); retrace will not act \
                 anywhere but where the run was recorded: restore it, or start a new run",
                spec.workspace.display(),
                real.display()
            )));
        }
        let workspace = Workspace::new(&spec.workspace).map_err(|e| Error::Setup(e.to_string()))?;
        let toolbox =
            Toolbox::for_spec(&spec, &workspace).map_err(|e| Error::Setup(e.to_string()))?;
        let agent = Agent::for_spec(&spec).map_err(|e| Error::Setup(e.to_string()))?;
        let tokenizer = spec
            .context
            .as_ref()
            .map(|_| Tokenizer::for_model(spec.model.provider, &spec.model.name));
        let routed = routed::clients(&spec)?;
        Ok(Self {
            tokenizer,
            store,
            agent,
            spec,
            toolbox,
            provider,
            source: None,
            messages: std::sync::Mutex::default(),
            header_blobs: std::sync::OnceLock::new(),
            tips: std::sync::Mutex::default(),
            providers: Arc::new(|spec: &Spec| {
                crate::model::provider(spec).map_err(|e| e.to_string())
            }),
            routed,
        })
    }

    /// Make child runs' model clients with `providers` (tests give loopback or scripted
    /// ones) instead of from their specs.
    #[must_use]
    pub fn with_providers(mut self, providers: Providers) -> Self {
        self.providers = providers;
        self
    }

    /// Serve tool calls from `source` (which may still send them to the tools).
    #[must_use]
    pub fn with_tool_source(mut self, source: Box<dyn ToolSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// The spec it runs.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Create run `run` with `input` as its task (records the spec it runs with).
    pub fn start(&self, run: RunId, input: &str) -> Result<(), Error> {
        let spec = self.store.put_blob(&self.spec.to_canonical_bytes())?;
        let input = self.store.put_blob(&canonical_json(&json!(input)))?;
        let mut new = NewRun::new(run, now());
        new.meta.insert("name".into(), self.spec.name.clone());
        self.store.create_run(new)?;
        let first = Event::root(now(), EventKind::RunStarted { run, spec, input });
        self.store.append(&run, None, &[first])?;
        Ok(())
    }

    /// The newest unfinished run (not a fork) started with this spec and `input`: what a
    /// repeated `retrace run` after a crash should continue rather than start over.
    pub fn unfinished_run(&self, input: &str) -> Result<Option<RunId>, Error> {
        let spec = BlobId::of(&self.spec.to_canonical_bytes());
        let input = BlobId::of(&canonical_json(&json!(input)));
        let mut runs = self.store.runs()?;
        // a child run (`agent.delegate`) is its parent's to continue
        runs.retain(|r| r.origin.is_none() && !r.is_empty() && !r.meta.contains_key("parent"));
        runs.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        for r in runs {
            let same = matches!(
                self.store.event_at(&r.id, 0)?,
                Some((_, Event { kind: EventKind::RunStarted { spec: s, input: i, .. }, .. }))
                    if s == spec && i == input
            );
            if same
                && !state_at_head(self.store, &r.id, SnapshotPolicy::default())?
                    .state
                    .is_finished()
            {
                return Ok(Some(r.id));
            }
        }
        Ok(None)
    }

    /// Drive `run` until it finishes or parks. `progress` sees every appended event and
    /// streamed text.
    pub async fn drive(
        &self,
        run: RunId,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Stop, Error> {
        self.drive_with(run, progress, None).await
    }

    /// [`Runner::drive`], taking signals from `inbox` (appended at the top of each step) and
    /// stopping early when it asks ([`Stop::Interrupted`]).
    #[tracing::instrument(name = "run", skip_all, fields(run = %run.short(), agent = %self.spec.name))]
    pub async fn drive_with(
        &self,
        run: RunId,
        progress: &mut (dyn FnMut(Progress) + Send),
        inbox: Option<&Inbox>,
    ) -> Result<Stop, Error> {
        let state = state_at_head(self.store, &run, SnapshotPolicy::default())?.state;
        let mut journal = Journal {
            run,
            durable: self.store.require_run(&run)?.head,
            batch: Vec::new(),
            snapshots: Vec::new(),
        };
        let result = self.steps(state, &mut journal, progress, inbox).await;
        if result.is_err() {
            // An outcome already decided (a tool that ran) is worth keeping even when the
            // drive cannot go on; if the store itself failed this fails too.
            let _ = journal.flush(self.store, progress);
        }
        result
    }

    /// Decide and perform until the run finishes or parks.
    async fn steps(
        &self,
        mut state: State,
        journal: &mut Journal,
        progress: &mut (dyn FnMut(Progress) + Send),
        inbox: Option<&Inbox>,
    ) -> Result<Stop, Error> {
        let run = journal.run;
        loop {
            if Self::read_inbox(inbox, &mut state, journal)? {
                journal.flush(self.store, progress)?;
                return Ok(Stop::Interrupted);
            }
            if let Some(source) = &self.source {
                let letters = source.letters(&state);
                if !letters.is_empty() && !state.is_finished() {
                    journal.record(&mut state, letters)?;
                }
            }
            let next = decide(&self.agent, &state);
            tracing::debug!(seq = ?state.seq, next = ?next, "decided");
            let kinds = match next {
                Next::Done => {
                    journal.flush(self.store, progress)?;
                    let outcome = match state.status {
                        retrace_replay::Status::Finished { outcome, .. } => outcome,
                        _ => Outcome::Failed,
                    };
                    return Ok(Stop::Finished(outcome));
                }
                Next::Park { reason } => {
                    journal.flush(self.store, progress)?;
                    return Ok(Stop::Parked(reason));
                }
                Next::CallModel { step } => {
                    self.ask_model(&mut state, journal, progress, inbox, step)
                        .await?
                }
                Next::ReissueModel { request, .. } => {
                    let (request, purpose) = self.recorded_request(run, &request)?;
                    journal.flush(self.store, progress)?;
                    let call = Box::pin(self.call_model(run, &request, purpose, &state, progress));
                    until_interrupted(inbox, call)
                        .await
                        .transpose()?
                        .unwrap_or_default()
                }
                Next::RunTool {
                    call_id,
                    tool,
                    args,
                    rerun,
                    idempotent,
                } => {
                    let call = ToolCall {
                        call_id,
                        tool,
                        args,
                        rerun,
                        idempotent,
                    };
                    // boxed: a tool's future is large, and the drive's holds it only here
                    match Box::pin(self.perform_call(&mut state, journal, progress, inbox, call))
                        .await?
                    {
                        Performed::Events(kinds) => kinds,
                        Performed::Stopped(stop) => {
                            journal.flush(self.store, progress)?;
                            return Ok(stop);
                        }
                    }
                }
                Next::AskApproval {
                    call,
                    reason,
                    autonomy,
                } => self.ask_approval(run, &call, &reason, autonomy)?,
                Next::Escalate {
                    call_id,
                    budget,
                    spent,
                    limit,
                    reason,
                } => self.escalate(call_id, &budget, spent, limit, &reason)?,
                Next::Deny { call, reason, note } => self.denial(run, &call, &reason, note)?,
                Next::MarkOutcomeUnknown { call_id } => {
                    let reason = self.put_json(&json!({"reason": "the process stopped while this non-idempotent tool ran; it may or may not have taken effect"}))?;
                    vec![EventKind::ToolOutcomeUnknown { call_id, reason }]
                }
                Next::WarnLoop { message } => vec![EventKind::SignalReceived {
                    name: LOOP_WARNING.into(),
                    payload: self.put_json(&json!(message))?,
                }],
                Next::Finish { outcome, reason } => {
                    // no child is left behind: a pending delegate call's child ends too
                    if !crate::delegate::pending(&state).is_empty() {
                        Box::pin(self.end_children(&mut state, journal, progress, &reason)).await?;
                    }
                    vec![EventKind::RunFinished {
                        outcome,
                        detail: self.finish_detail(run, &state, outcome, &reason)?,
                    }]
                }
            };
            journal.record(&mut state, kinds)?;
        }
    }

    /// Perform an allowed tool call: its before-hooks (a live call's, not a re-run's),
    /// its intent (unless it is a re-run), then its outcome — the recorded one when a tool
    /// source serves the call (replays, evals), or the tool's. A well-formed `user.ask`
    /// records only its intent: the run parks for the answer. Delegate calls start child
    /// runs ([`children`]).
    async fn perform_call(
        &self,
        state: &mut State,
        journal: &mut Journal,
        progress: &mut (dyn FnMut(Progress) + Send),
        inbox: Option<&Inbox>,
        call: ToolCall,
    ) -> Result<Performed, Error> {
        let run = journal.run;
        let served = self.served(&call.tool, &call.args);
        if let Served::Refuse(why) = served {
            journal.flush(self.store, progress)?;
            return Err(Error::ToolRefused {
                call_id: call.call_id,
                tool: call.tool,
                why,
            });
        }
        let mut call = call;
        let mut after_hooks = Self::recorded_before(&served, state, journal, &mut call)?;
        if served == Served::Live && !call.rerun && !self.spec.hooks.is_empty() {
            let (decided, before) = self
                .before_hooks(run, &call.call_id, &call.tool, call.args)
                .await?;
            journal.record(state, decided)?;
            let before = match before {
                // new arguments are held to the policy like the model's: a hook cannot take a
                // call where the policy would refuse or ask
                hooked::Before::Run(args) if args != call.args => {
                    self.allowed_after_rewrite(run, &call.tool, &args)?
                }
                other => other,
            };
            match before {
                hooked::Before::Run(args) => call.args = args,
                hooked::Before::Deny(reason) => {
                    let proposed = ProposedCall {
                        call_id: call.call_id,
                        tool: call.tool,
                        args: call.args,
                        path: None,
                    };
                    return Ok(Performed::Events(
                        self.denial(run, &proposed, &reason, None)?,
                    ));
                }
            }
        }
        if call.tool == crate::delegate::TOOL {
            return Ok(
                match self
                    .delegate(state, journal, progress, inbox, call, served)
                    .await?
                {
                    children::Delegated::Answered(kinds) => Performed::Events(kinds),
                    children::Delegated::Parked(reason) => Performed::Stopped(Stop::Parked(reason)),
                    children::Delegated::Interrupted => Performed::Stopped(Stop::Interrupted),
                },
            );
        }
        let ToolCall {
            call_id,
            tool,
            args,
            rerun,
            idempotent,
        } = call;
        if !rerun {
            let intent = EventKind::ToolRequested {
                call_id: call_id.clone(),
                tool: tool.clone(),
                args,
                idempotent,
            };
            journal.record(state, vec![intent])?;
        }
        journal.flush(self.store, progress)?;
        Ok(Performed::Events(match served {
            Served::Recorded {
                output, is_error, ..
            } => {
                after_hooks.push(EventKind::ToolReturned {
                    call_id,
                    output,
                    is_error,
                    duration_ms: 0,
                });
                after_hooks
            }
            _ if tool == tools::ask::TOOL
                && Question::from_args(&self.blob_json(run, &args)?).is_ok() =>
            {
                Vec::new()
            }
            // the last moment to notice a stall: after the intent is durable, before the effect
            _ if inbox.is_some_and(|inbox| !inbox.may_act()) => {
                return Err(Error::HoldLapsed { run, call_id });
            }
            _ => self.run_tool(run, state, &call_id, &tool, &args).await?,
        }))
    }

    /// A hook's new arguments `args` for a call of `tool`, if the policy allows them
    /// outright; else a denial saying why (a human approved the arguments the model
    /// proposed, not these).
    fn allowed_after_rewrite(
        &self,
        run: RunId,
        tool: &str,
        args: &BlobId,
    ) -> Result<hooked::Before, Error> {
        let value: Value = self.blob_json(run, args)?;
        let subject = retrace_events::reply::call_subject(tool, &value);
        let Some(meta) = self.agent.tools.get(tool) else {
            return Ok(hooked::Before::Deny(format!("there is no tool `{tool}`")));
        };
        let verdict = self.agent.policy.check(tool, meta.tier, subject.as_deref());
        Ok(if verdict.action == crate::spec::Action::Allow {
            hooked::Before::Run(*args)
        } else {
            hooked::Before::Deny(format!(
                "a hook rewrote the arguments to ones the policy does not allow without asking ({})",
                verdict.reason
            ))
        })
    }

    /// What the tool source says of a call of `tool` with `args` (asked once per call,
    /// before its intent is recorded); [`Served::Live`] without a source.
    fn served(&self, tool: &str, args: &BlobId) -> Served {
        match &self.source {
            Some(source) => source.serve(tool, args),
            None => Served::Live,
        }
    }

    /// For a call served from a recording: record the recorded before-hooks' decisions and
    /// take the arguments the call was requested with after them; the after-hooks'
    /// decisions, to record with its result.
    fn recorded_before(
        served: &Served,
        state: &mut State,
        journal: &mut Journal,
        call: &mut ToolCall,
    ) -> Result<Vec<EventKind>, Error> {
        let Served::Recorded {
            around: Some(around),
            ..
        } = served
        else {
            return Ok(Vec::new());
        };
        let (before, after): (Vec<EventKind>, Vec<EventKind>) =
            around.hooks.iter().cloned().partition(|k| {
                matches!(k, EventKind::HookDecided { stage, .. } if *stage == retrace_events::HookStage::BeforeTool)
            });
        journal.record(state, before)?;
        if let Some(args) = around.args {
            call.args = args;
        }
        Ok(after)
    }

    /// Record the inbox's letters; whether the drive should stop here.
    fn read_inbox(
        inbox: Option<&Inbox>,
        state: &mut State,
        journal: &mut Journal,
    ) -> Result<bool, Error> {
        let Some(inbox) = inbox else {
            return Ok(false);
        };
        let letters = inbox.take();
        if !letters.is_empty() && !state.is_finished() {
            journal.record(state, letters)?;
        }
        Ok(inbox.is_stopping() && !state.is_finished())
    }

    /// Record a new model call's intent and make it (after the backoff a failure asks
    /// for); the outcome events, or none if the inbox interrupted it. With a token budget,
    /// a request that would not fit is preceded by a compaction (a summary call, or a
    /// drop), which is what this returns instead.
    async fn ask_model(
        &self,
        state: &mut State,
        journal: &mut Journal,
        progress: &mut (dyn FnMut(Progress) + Send),
        inbox: Option<&Inbox>,
        step: u64,
    ) -> Result<Vec<EventKind>, Error> {
        let run = journal.run;
        let route = self.route(run, state)?;
        // a fallback to another model asks at once
        let same_model = route
            .as_ref()
            .is_none_or(|r| state.models.current.as_ref() == Some(&r.model));
        if state.model_failure_streak > 0 && same_model && !self.overflowed(run, state)? {
            // the failure is durable; wait before asking again
            journal.flush(self.store, progress)?;
            let wait = tokio::time::sleep(self.backoff(run, state)?);
            if until_interrupted(inbox, wait).await.is_none() {
                return Ok(Vec::new());
            }
        }
        let model = match &route {
            Some(route) => self.model_named(&route.model)?,
            None => &self.spec.model,
        };
        // recording the call delivers users' waiting messages: ask with them
        let asked = if state.deferred_messages.is_empty() {
            self.new_request(run, state, step, model)?
        } else {
            let mut delivered = state.clone();
            delivered.deliver_deferred();
            self.new_request(run, &delivered, step, model)?
        };
        let (request, blob, purpose) = match asked {
            Asked::Request(request, blob, purpose) => (request, blob, purpose),
            Asked::Events(mut kinds) => {
                // a drop applies before the deferred messages join: evict only what the
                // state holds (they come after it, so the cut stays valid)
                for kind in &mut kinds {
                    if let EventKind::ContextCompacted {
                        evicted, summary, ..
                    } = kind
                    {
                        *evicted = (*evicted).min(state.conversation.len() as u64);
                        // the model is told what left, after what earlier summaries said
                        let previous = self.summary_text(run, state)?;
                        let total = state.earlier_messages + *evicted;
                        let shown = compaction::dropped_text(previous.as_deref(), *evicted, total);
                        *summary = Some(self.put_json(&json!(shown))?);
                    }
                }
                return Ok(kinds);
            }
        };
        // a retry of the same step after failures is its next attempt
        let intent = EventKind::ModelRequested {
            request: blob,
            attempt: state.model_failure_streak + 1,
        };
        let kinds = match route {
            Some(route) => vec![
                EventKind::ModelRouted {
                    model: route.model,
                    rule: route.rule,
                    reason: route.reason,
                },
                intent,
            ],
            None => vec![intent],
        };
        journal.record(state, kinds)?;
        journal.flush(self.store, progress)?;
        // boxed: the provider's future is large, and this one is inside every drive's
        let call = Box::pin(self.call_model(run, &request, purpose, state, progress));
        // interrupted: the intent is durable, a resumed run asks again
        Ok(until_interrupted(inbox, call)
            .await
            .transpose()?
            .unwrap_or_default())
    }

    /// Whether the run's last model call failed because its request overflowed the
    /// model's window (what compaction answers, at once).
    fn overflowed(&self, run: RunId, state: &State) -> Result<bool, Error> {
        Ok(match state.last_model_error {
            Some(blob) if self.spec.context.is_some() => {
                self.blob_json::<Value>(run, &blob)?
                    .get("class")
                    .and_then(Value::as_str)
                    == Some("context_overflow")
            }
            _ => false,
        })
    }

    /// What a finished run's detail blob says: the final answer, or why it ended (with the
    /// model's last error when the model gave up).
    fn finish_detail(
        &self,
        run: RunId,
        state: &State,
        outcome: Outcome,
        reason: &str,
    ) -> Result<BlobId, Error> {
        if let (Outcome::Cancelled, Some(cancel)) = (outcome, state.cancel_requested) {
            let cancel: Value = self.blob_json(run, &cancel)?;
            let by = cancel
                .get("by")
                .and_then(Value::as_str)
                .unwrap_or("someone");
            let reason = match cancel.get("reason").and_then(Value::as_str) {
                Some(why) => format!("cancelled by {by}: {why}"),
                None => format!("cancelled by {by}"),
            };
            return self.put_json(&json!({"reason": reason, "cancel": cancel}));
        }
        match (outcome, state.conversation.back()) {
            (Outcome::Succeeded, Some(last)) if last.role == Role::Assistant => {
                let reply: ModelReply = self.blob_json(run, &last.content)?;
                self.put_json(&json!({"output": reply.text}))
            }
            _ => match state.last_model_error {
                Some(error) if outcome == Outcome::Failed => {
                    let error: Value = self.blob_json(run, &error)?;
                    let reason =
                        if error.get("class").and_then(Value::as_str) == Some("context_overflow") {
                            if state.last_failure_permanent {
                                // a run without a token budget fails at the first overflow
                                overflow_reason(&error)
                            } else {
                                format!("{}; {reason}", overflow_reason(&error))
                            }
                        } else {
                            reason.to_owned()
                        };
                    // the provider's own words belong in the reason a person reads first
                    let reason = match error.get("error").and_then(Value::as_str) {
                        Some(said) => format!("{reason}: {said}"),
                        None => reason,
                    };
                    self.put_json(&json!({"reason": reason, "model_error": error}))
                }
                _ => self.put_json(&json!({"reason": reason})),
            },
        }
    }

    /// Perform a model call whose intent is recorded; the outcome events to append.
    #[tracing::instrument(name = "model_call", skip_all, fields(step = request.step, model = state.models.current.as_deref().unwrap_or(crate::routing::MAIN)))]
    async fn call_model(
        &self,
        run: RunId,
        request: &ModelRequest,
        purpose: Purpose,
        state: &State,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Vec<EventKind>, Error> {
        // The pending call's seq (events such as signals may have arrived after it).
        let request_seq = match state.pending.get(retrace_replay::MODEL_CALL) {
            Some(retrace_replay::Pending::Model { seq, .. }) => *seq,
            _ => state.seq.unwrap_or(0),
        };
        // The reply is appended next, so it takes the next seq.
        let response_seq = state.len();
        let started = Instant::now();
        let mut sink = |d: Delta| {
            let Delta::Text(text) = d;
            progress(Progress::Text(text));
        };
        let (provider, settings) = self.client_for(state)?;
        let result = provider.complete(request, &mut sink).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(reply) => tracing::info!(
                latency_ms,
                tool_calls = reply.tool_calls.len(),
                "model replied"
            ),
            Err(e) => {
                let overflow = matches!(e, retrace_providers::Error::ContextOverflow { .. });
                let retried = e.is_transient() || (overflow && self.spec.context.is_some());
                tracing::warn!(latency_ms, retried, overflow, error = %e, "model call failed");
            }
        }
        Ok(match result {
            Ok(reply) => {
                let response =
                    self.put_json(&serde_json::to_value(&reply).map_err(|e| payload(run, &e))?)?;
                let usage = Usage {
                    input_tokens: reply.usage.input_tokens,
                    output_tokens: reply.usage.output_tokens,
                    cost_micro_usd: settings.price.map_or(0, |p| p.micro_usd(&reply.usage)),
                    latency_ms,
                };
                if let Purpose::Summary { evict } = purpose {
                    let total = state.earlier_messages + evict;
                    let previous = self.summary_text(run, state)?;
                    let shown = compaction::summary_text(&reply, previous.as_deref(), evict, total);
                    return Ok(vec![EventKind::ContextCompacted {
                        request_seq: Some(request_seq),
                        summary: Some(self.put_json(&json!(shown))?),
                        response: Some(response),
                        evicted: evict,
                        usage,
                    }]);
                }
                let mut kinds = vec![EventKind::ModelResponded {
                    request_seq,
                    response,
                    usage,
                }];
                let calls = reply.proposed_calls(|args| self.put_json(args))?;
                if !calls.is_empty() {
                    kinds.push(EventKind::ToolCallsProposed {
                        response_seq,
                        calls,
                    });
                }
                kinds
            }
            Err(e) => {
                let retry_after_ms = match &e {
                    retrace_providers::Error::Transient {
                        retry_after: Some(after),
                        ..
                    } => Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
                    _ => None,
                };
                let mut error = json!({
                    "provider": provider.name(),
                    "error": e.to_string(),
                    "retry_after_ms": retry_after_ms,
                });
                // with a token budget an overflow is answered by compacting and asking
                // again (so it is worth retrying); without one the run fails, saying why
                let mut transient = e.is_transient();
                if let retrace_providers::Error::ContextOverflow {
                    limit, requested, ..
                } = &e
                {
                    error["class"] = json!("context_overflow");
                    error["limit"] = json!(limit);
                    error["requested"] = json!(requested);
                    transient = self.spec.context.is_some();
                }
                let error = self.put_json(&error)?;
                vec![EventKind::ModelFailed {
                    request_seq,
                    error,
                    transient,
                }]
            }
        })
    }

    /// How long to wait after the run's last model failure (see [`crate::model::backoff`]).
    fn backoff(&self, run: RunId, state: &State) -> Result<std::time::Duration, Error> {
        let retry_after = match state.last_model_error {
            Some(blob) => self
                .blob_json::<Value>(run, &blob)?
                .get("retry_after_ms")
                .and_then(Value::as_u64)
                .map(std::time::Duration::from_millis),
            None => None,
        };
        Ok(crate::model::backoff(
            state.model_failure_streak,
            crate::entropy::jitter(),
            retry_after,
        ))
    }

    /// Run a tool whose intent is recorded; its after-hooks' decisions and its outcome
    /// event.
    #[tracing::instrument(name = "tool_call", skip(self, run, args))]
    async fn run_tool(
        &self,
        run: RunId,
        state: &State,
        call_id: &str,
        tool: &str,
        args: &BlobId,
    ) -> Result<Vec<EventKind>, Error> {
        let args: Value = self.blob_json(run, args)?;
        // after-hooks are shown the arguments too
        let shown = (!self.spec.hooks.is_empty()).then(|| args.clone());
        let started = Instant::now();
        let result = match &self.spec.context {
            // the plan tools change the plan the state holds
            _ if retrace_replay::plan::PLAN_TOOLS.contains(&tool) => {
                self.plan_call(run, state, tool, &args)?
            }
            // a question whose arguments do not parse is answered at once, with why (a
            // well-formed one parks the run instead of coming here)
            _ if tool == tools::ask::TOOL => Err(tools::ToolError::Invalid {
                message: Question::from_args(&args)
                    .err()
                    .unwrap_or_else(|| "a question is answered by a human".into()),
            }),
            // the built-in that pages through artifacts reads the store, not the workspace;
            // its pages stay under half the inline limit, so they are never artifacts
            // a delegate call the tool source sent here has no recorded answer to stand in
            _ if tool == crate::delegate::TOOL => Err(tools::ToolError::Failed {
                message: "a delegate call is answered by its child run, which this drive does not start (an eval serves delegate calls from the recording only)".into(),
            }),
            Some(context) if tool == artifact::TOOL => {
                artifact::read(self.store, &args, context.inline_bytes() / 2).map(|value| {
                    tools::Output {
                        value,
                        attachments: Vec::new(),
                    }
                })
            }
            _ => self.toolbox.call(tool, args).await,
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(duration_ms, ok = result.is_ok(), "tool returned");
        let (output, is_error) = match result {
            Ok(output) => {
                for whole in &output.attachments {
                    self.store.put_blob(whole)?;
                }
                (output.value, false)
            }
            Err(e) => (json!({"error": e.to_string()}), true),
        };
        let (mut kinds, notes) = match &shown {
            None => (Vec::new(), Vec::new()),
            Some(args) => {
                self.after_hooks(run, call_id, tool, args, &output, is_error)
                    .await?
            }
        };
        kinds.push(EventKind::ToolReturned {
            call_id: call_id.to_owned(),
            output: self.put_json(&crate::hooks::with_notes(output, &notes))?,
            is_error,
            duration_ms,
        });
        Ok(kinds)
    }

    /// Perform `task.set` or `task.update` on the plan `state` holds: the new plan is the
    /// result (what `apply` keeps as the plan), or the error says what is wrong.
    fn plan_call(
        &self,
        run: RunId,
        state: &State,
        tool: &str,
        args: &Value,
    ) -> Result<Result<tools::Output, tools::ToolError>, Error> {
        let before = match &state.plan {
            Some(blob) => PlanState::from_value(&self.blob_json(run, blob)?),
            None => None,
        };
        let after = if tool == tools::plan::SET {
            retrace_replay::plan::set(args)
        } else {
            retrace_replay::plan::update(before.as_ref(), args)
        };
        Ok(after
            .map(|plan| tools::Output {
                value: plan.to_value(),
                attachments: Vec::new(),
            })
            .map_err(|message| tools::ToolError::Invalid { message }))
    }

    /// A refused call, recorded as requested-then-failed so the model is told why, with the
    /// decider's `note` (a JSON string blob) after the reason.
    fn denial(
        &self,
        run: RunId,
        call: &ProposedCall,
        reason: &str,
        note: Option<BlobId>,
    ) -> Result<Vec<EventKind>, Error> {
        let note = match note {
            Some(note) => request::text_of(&self.blob_json(run, &note)?),
            None => String::new(),
        };
        let told = if note.trim().is_empty() {
            format!("not run: {reason}")
        } else {
            format!("not run: {reason}: {note}")
        };
        let output = self.put_json(&json!({ "error": told }))?;
        Ok(vec![
            EventKind::ToolRequested {
                call_id: call.call_id.clone(),
                tool: call.tool.clone(),
                args: call.args,
                idempotent: true,
            },
            EventKind::ToolReturned {
                call_id: call.call_id.clone(),
                output,
                is_error: true,
                duration_ms: 0,
            },
        ])
    }

    /// The next model call for the conversation in `state` (deferred messages delivered):
    /// a request and its stored record — an agent step's, or, when the step's would not
    /// fit the token budget, a summary request's — or the events that stand for it (a
    /// compaction by dropping, or the end of a run that cannot fit at all).
    fn new_request(
        &self,
        run: RunId,
        state: &State,
        step: u64,
        model: &crate::spec::Model,
    ) -> Result<Asked, Error> {
        let pinned = request::pinned(state);
        let conversation = request::window(state);
        let context = self.spec.context.as_ref();
        let artifacts = context.map(|c| c.inline_bytes() as u64);
        let (system, tools, header_tokens) = self.header_blobs(run)?;
        let known = state.last_request.and_then(|blob| {
            self.tips
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&blob)
                .copied()
        });
        let mut header = request::Header {
            model: &model.name,
            system,
            tools,
            params: &model.params,
            step,
            pinned,
            artifacts,
            budget: None,
        };
        let pinned_built = self
            .built(&header.pinned, artifacts)
            .map_err(|e| request_error(run, &e))?;
        let built = self
            .built(&conversation, artifacts)
            .map_err(|e| request_error(run, &e))?;
        let messages: Vec<Arc<ChatMessage>> = pinned_built
            .iter()
            .chain(&built)
            .map(|(m, _)| Arc::clone(m))
            .collect();
        if let (Some(context), Some(tokenizer)) = (context, self.tokenizer) {
            let measure = Measure {
                fixed: header_tokens + pinned_built.iter().map(|(_, t)| t).sum::<u64>(),
                messages: conversation
                    .iter()
                    .zip(&built)
                    .map(|(r, (_, t))| (r.role, *t))
                    .collect(),
            };
            let (scale, limit) = self.calibration(run, state, known, context)?;
            let summarize = context.compaction == Compaction::Summarize;
            // the state keeps at most this many messages; compact before it would drop any
            let cap = retrace_replay::CONTEXT_MESSAGES - 8;
            let mut budget = request::Budget {
                tokenizer: tokenizer.name().to_owned(),
                measured: measure.total(),
                scale,
                limit,
            };
            match layout::plan(&measure, limit, scale, cap, summarize) {
                Plan::Send => {}
                Plan::TooLarge { fixed } => {
                    let reason = too_large(fixed, limit, context.window_tokens);
                    let detail = self.finish_detail(run, state, Outcome::Failed, &reason)?;
                    return Ok(Asked::Events(vec![EventKind::RunFinished {
                        outcome: Outcome::Failed,
                        detail,
                    }]));
                }
                Plan::Compact { evict } if !summarize => {
                    return Ok(Asked::Events(vec![EventKind::ContextCompacted {
                        request_seq: None,
                        summary: None,
                        response: None,
                        evicted: evict as u64,
                        usage: Usage::default(),
                    }]));
                }
                Plan::Compact { evict } => {
                    let summarized = &built[..evict];
                    budget.measured = header_tokens
                        + pinned_built.iter().map(|(_, t)| t).sum::<u64>()
                        + summarized.iter().map(|(_, t)| t).sum::<u64>()
                        + tokenizer.count(&self.instruction())
                        + crate::context::tokens::PER_MESSAGE;
                    header.budget = Some(budget);
                    if let Some(model) = &context.compaction_model {
                        header.model = model;
                    }
                    let messages = pinned_built.iter().chain(summarized);
                    return self.summary_request(run, state, &header, messages, evict);
                }
            }
            header.budget = Some(budget);
        }
        let (blob, tip) = request::record(self.store, state, &header, known)
            .map_err(|e| request_error(run, &e))?;
        self.remember_tip(blob, tip);
        Ok(Asked::Request(
            self.request_of(header.model, header.params, messages, step, Purpose::Step),
            blob,
            Purpose::Step,
        ))
    }

    /// A summary request of `messages` (the pinned ones, then the conversation's first
    /// `evict`), then the instruction, with its stored record.
    fn summary_request<'m>(
        &self,
        run: RunId,
        state: &State,
        header: &request::Header<'_>,
        messages: impl Iterator<Item = &'m (Arc<ChatMessage>, u64)>,
        evict: usize,
    ) -> Result<Asked, Error> {
        let text = self.instruction();
        let instruction = self.put_json(&json!(text))?;
        let (blob, tip) = request::record_compaction(self.store, state, header, evict, instruction)
            .map_err(|e| request_error(run, &e))?;
        self.remember_tip(blob, tip);
        let mut messages: Vec<Arc<ChatMessage>> = messages.map(|(m, _)| Arc::clone(m)).collect();
        messages.push(Arc::new(ChatMessage::User { content: text }));
        let purpose = Purpose::Summary {
            evict: evict as u64,
        };
        let request = self.request_of(header.model, header.params, messages, header.step, purpose);
        Ok(Asked::Request(request, blob, purpose))
    }

    /// The text of the run's latest compaction summary, if it has one.
    fn summary_text(&self, run: RunId, state: &State) -> Result<Option<String>, Error> {
        Ok(match state.summary {
            Some(blob) => Some(request::text_of(&self.blob_json(run, &blob)?)),
            None => None,
        })
    }

    /// The instruction ending this spec's summary requests ([`compaction::instruction`]).
    fn instruction(&self) -> String {
        compaction::instruction(self.spec.model.max_reply())
    }

    /// The scale (per mille) this request's counts take and the tokens it may hold: from
    /// the previous request's record and what the provider said of it — its reply's usage,
    /// or the overflow it was refused with ([`layout::calibrate`],
    /// [`layout::after_overflow`], [`layout::limit_after_overflow`]).
    fn calibration(
        &self,
        run: RunId,
        state: &State,
        known: Option<request::Tip>,
        context: &crate::context::Context,
    ) -> Result<(u64, u64), Error> {
        let fresh = (layout::UNIT, context.limit());
        let Some(last) = state.last_request else {
            return Ok(fresh);
        };
        let tip = match known {
            Some(tip) => Some(tip),
            None => request::tip(self.store, &last).map_err(|e| request_error(run, &e))?,
        };
        let Some(previous) = tip.and_then(|t| t.measured) else {
            return Ok(fresh);
        };
        let limit = previous.limit.min(context.limit());
        let Some(error) = state.last_model_error else {
            let scale =
                layout::calibrate(previous.scale, previous.measured, state.last_input_tokens);
            return Ok((scale, limit));
        };
        let error: Value = self.blob_json(run, &error)?;
        if error.get("class").and_then(Value::as_str) != Some("context_overflow") {
            return Ok((previous.scale, limit));
        }
        let number = |key: &str| error.get(key).and_then(Value::as_u64);
        let scale = layout::after_overflow(
            previous.scale,
            previous.measured,
            number("requested"),
            number("limit"),
        );
        let limit = layout::limit_after_overflow(
            limit,
            layout::scaled(previous.measured, scale),
            number("limit"),
            context.limit(),
            context.window_tokens,
        );
        Ok((scale, limit))
    }

    fn remember_tip(&self, blob: BlobId, tip: request::Tip) {
        let mut tips = self
            .tips
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tips.len() >= MESSAGE_CACHE {
            tips.clear();
        }
        tips.insert(blob, tip);
    }

    /// The system prompt and tool catalog as stored blobs, and their tokens.
    fn header_blobs(&self, run: RunId) -> Result<(BlobId, BlobId, u64), Error> {
        if let Some(blobs) = self.header_blobs.get() {
            return Ok(*blobs);
        }
        let defs = self.tool_defs();
        let tools = serde_json::to_value(&defs).map_err(|e| payload(run, &e))?;
        let tokens = self
            .tokenizer
            .map_or(0, |t| t.header(&self.spec.system, &defs));
        let blobs = (
            self.put_json(&json!(self.spec.system))?,
            self.put_json(&tools)?,
            tokens,
        );
        Ok(*self.header_blobs.get_or_init(|| blobs))
    }

    /// Exactly the request recorded in `blob` (for re-issuing a call in flight at a crash),
    /// and what it was for.
    fn recorded_request(
        &self,
        run: RunId,
        blob: &BlobId,
    ) -> Result<(ModelRequest, Purpose), Error> {
        let (request, record) = request::rebuild_record(self.store, blob, |refs, artifacts| {
            Ok(self
                .built(refs, artifacts)?
                .into_iter()
                .map(|(m, _)| m)
                .collect())
        })
        .map_err(|e| request_error(run, &e))?;
        let purpose = match record.compacts {
            Some(evict) => Purpose::Summary { evict },
            None => Purpose::Step,
        };
        Ok((request, purpose))
    }

    /// The tools offered to the model: the toolbox's, and `artifact.read` when the run has
    /// a token budget (its results can be artifacts).
    fn tool_defs(&self) -> Vec<ToolDef> {
        let imported = self
            .spec
            .imported
            .iter()
            .flat_map(|i| i.tools.iter().cloned());
        self.toolbox
            .offered(&self.spec)
            .iter()
            .map(tools::ToolInfo::def)
            .chain(imported)
            .collect()
    }

    /// A request of `model` with this runner's system prompt, tools and parameters.
    fn request_of(
        &self,
        model: &str,
        params: &std::collections::BTreeMap<String, Value>,
        messages: Vec<Arc<ChatMessage>>,
        step: u64,
        purpose: Purpose,
    ) -> ModelRequest {
        ModelRequest {
            model: model.to_owned(),
            system: self.spec.system.clone(),
            messages,
            tools: self.tool_defs(),
            params: params.clone(),
            step,
            compaction: purpose != Purpose::Step,
        }
    }

    /// The messages `refs` as sent, each built once by [`request::message`] (the one
    /// builder: fresh requests and requests rebuilt from their records go through here),
    /// with their tokens when the run has a token budget.
    fn built(
        &self,
        refs: &[request::MessageRef],
        artifacts: Option<u64>,
    ) -> Result<Vec<(Arc<ChatMessage>, u64)>, request::Error> {
        let mut messages = Vec::with_capacity(refs.len());
        let mut cache = self
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for message in refs {
            let key = (message.clone(), artifacts);
            let built = if let Some((built, tokens)) = cache.get(&key) {
                (Arc::clone(built), *tokens)
            } else {
                let built = Arc::new(request::message(self.store, message, artifacts)?);
                let tokens = self.tokenizer.map_or(0, |t| t.message(&built));
                if cache.len() >= MESSAGE_CACHE {
                    cache.clear();
                }
                cache.insert(key, (Arc::clone(&built), tokens));
                (built, tokens)
            };
            messages.push(built);
        }
        Ok(messages)
    }

    fn put_json(&self, value: &Value) -> Result<BlobId, Error> {
        Ok(self.store.put_blob(&canonical_json(value))?)
    }

    fn blob_json<T: serde::de::DeserializeOwned>(
        &self,
        run: RunId,
        blob: &BlobId,
    ) -> Result<T, Error> {
        let bytes = self.store.blob(blob)?.ok_or_else(|| Error::Payload {
            run,
            what: format!("blob {blob} is missing"),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Payload {
            run,
            what: format!("blob {blob} does not decode: {e}"),
        })
    }
}

/// The events of a drive not yet appended. Events are folded into the state as soon as
/// they are decided (so the next decision sees them) and appended, in one atomic append,
/// before anything leaves the process: a model call, a tool run, or the drive returning.
/// An effect's outcome and the next effect's intent thus become durable together, with one
/// sync, before that next effect starts; the log is never behind what the world saw.
///
/// It also stores a snapshot of the state at each boundary of the default
/// [`SnapshotPolicy`] the run passes, so resuming any run is one snapshot and a short tail.
struct Journal {
    run: RunId,
    /// The run's head as stored.
    durable: Option<Head>,
    /// Decided, applied, not yet appended.
    batch: Vec<Event>,
    /// Snapshots of states the batch reaches, stored once it is appended.
    snapshots: Vec<(retrace_events::EventId, Vec<u8>)>,
}

impl Journal {
    /// Chain `kinds` after the last event and fold them into `state`.
    fn record(&mut self, state: &mut State, kinds: Vec<EventKind>) -> Result<(), Error> {
        for kind in kinds {
            let prev = self.batch.last().map(Event::head).or(self.durable);
            let event = Event::after(prev, now(), kind);
            apply(state, &event).map_err(|source| retrace_replay::Error::Apply {
                run: self.run,
                seq: event.seq,
                source,
            })?;
            if state.len().is_multiple_of(SnapshotPolicy::default().every) {
                let id = event.head().id;
                self.snapshots.push((id, encode_snapshot(&id, state)));
            }
            self.batch.push(event);
        }
        Ok(())
    }

    /// Append what is pending (durable when this returns) and report it.
    fn flush(
        &mut self,
        store: &dyn Store,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let expected = self.durable.map(|h| h.id);
        self.durable = Some(store.append(&self.run, expected, &self.batch)?);
        for event in self.batch.drain(..) {
            progress(Progress::Appended(event));
        }
        for (id, snapshot) in self.snapshots.drain(..) {
            store.put_snapshot(&id, &snapshot)?;
        }
        Ok(())
    }
}

/// The spec `run` follows: the one it was started with, or the last a `spec` signal gave
/// it (an eval case's overrides), as recorded.
pub fn recorded_spec(store: &dyn Store, run: &RunId) -> Result<Spec, Error> {
    let state = state_at_head(store, run, SnapshotPolicy::default())?.state;
    let spec = state.spec.ok_or_else(|| Error::Payload {
        run: *run,
        what: "the run has no events, so no spec".into(),
    })?;
    let bytes = store.blob(&spec)?.ok_or_else(|| Error::Payload {
        run: *run,
        what: format!("the spec blob {spec} is missing"),
    })?;
    let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| Error::Payload {
        run: *run,
        what: format!("the recorded spec does not decode: {e}"),
    })?;
    if let Some((what, path)) = spec.relative_paths().into_iter().next() {
        return Err(Error::Payload {
            run: *run,
            what: format!(
                "the run recorded its {what} as the relative path `{}` (it was started by an \
                 older retrace), so where it lives depends on who resumes it; retrace will not \
                 guess and act in another directory. Start the task again with `retrace run`",
                path.display()
            ),
        });
    }
    Ok(spec)
}

/// `work`'s output, or `None` if `inbox` is interrupted first (a cancel or a stop).
async fn until_interrupted<T>(inbox: Option<&Inbox>, work: impl Future<Output = T>) -> Option<T> {
    match inbox {
        None => Some(work.await),
        Some(inbox) => tokio::select! {
            out = work => Some(out),
            () = inbox.interrupted() => None,
        },
    }
}

/// Why a run whose fixed request parts alone (`fixed` tokens) are over its `limit` ends.
fn too_large(fixed: u64, limit: u64, window: u64) -> String {
    format!(
        "compacting cannot make the request fit: what cannot be compacted away (the system \
         prompt, tool catalog, task and summary, or with them a message too large to \
         summarize) takes about {fixed} tokens, more than a request may hold ({limit} tokens \
         of the {window}-token window); shorten them, or raise window_tokens if the model allows"
    )
}

/// Why a run whose request overflowed the model's context window failed, with the numbers
/// the `model_failed` blob (`limit`, `requested`) has.
fn overflow_reason(error: &Value) -> String {
    let number = |key: &str| error.get(key).and_then(Value::as_u64);
    let numbers = match (number("requested"), number("limit")) {
        (Some(requested), Some(limit)) => format!(" ({requested} > {limit} tokens)"),
        (None, Some(limit)) => format!(" (limit {limit} tokens)"),
        (Some(requested), None) => format!(" ({requested} tokens)"),
        (None, None) => String::new(),
    };
    format!("the request exceeded the model's context window{numbers}")
}

fn payload(run: RunId, e: &serde_json::Error) -> Error {
    Error::Payload {
        run,
        what: e.to_string(),
    }
}

fn request_error(run: RunId, e: &request::Error) -> Error {
    Error::Payload {
        run,
        what: e.to_string(),
    }
}

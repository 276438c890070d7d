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
use retrace_replay::{Role, SnapshotPolicy, State, apply, encode_snapshot, state_at_head};
use retrace_store::{NewRun, Store};
use serde_json::{Value, json};

use crate::decide::{Agent, LOOP_WARNING, Next, decide};
use crate::entropy::now;
use crate::inbox::Inbox;
use crate::request;
use crate::spec::Spec;
use crate::tools::{Toolbox, Workspace};

/// Tool output longer than this reaches the model as a preview (the full output is the
/// recorded blob).
pub const PREVIEW_BYTES: usize = 8 * 1024;

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
    },
    /// Run the tool.
    Live,
    /// Stop the drive before the call ([`Error::ToolRefused`]).
    Refuse(String),
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
    /// Messages as sent, by reference: blobs never change, so each message is read and
    /// parsed once instead of at every model call (a window holds up to 256), and a
    /// request shares them instead of copying.
    messages: std::sync::Mutex<std::collections::HashMap<request::MessageRef, Arc<ChatMessage>>>,
    /// The system prompt and tool definitions as stored blobs: the same for every request.
    header_blobs: std::sync::OnceLock<(BlobId, BlobId)>,
    /// Tips of the request records this runner wrote, by blob, so the next record of a
    /// run chains to its predecessor without reading it back.
    tips: std::sync::Mutex<std::collections::HashMap<BlobId, request::Tip>>,
}

/// Entries kept in the message cache before it starts over.
const MESSAGE_CACHE: usize = 4_096;

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("agent", &self.spec.name)
            .field("tools", &self.toolbox)
            .finish_non_exhaustive()
    }
}

impl<'a> Runner<'a> {
    /// Set up `spec` over `store`, with `provider` as its model.
    pub fn new(
        store: &'a dyn Store,
        spec: Spec,
        provider: Box<dyn Provider>,
    ) -> Result<Self, Error> {
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
        Ok(Self {
            store,
            agent,
            spec,
            toolbox,
            provider,
            source: None,
            messages: std::sync::Mutex::default(),
            header_blobs: std::sync::OnceLock::new(),
            tips: std::sync::Mutex::default(),
        })
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
        runs.retain(|r| r.origin.is_none() && !r.is_empty());
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
                    let request = self.recorded_request(run, &request)?;
                    journal.flush(self.store, progress)?;
                    let call = self.call_model(run, &request, &state, progress);
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
                } => {
                    let served = match &self.source {
                        Some(source) => source.serve(&tool, &args),
                        None => Served::Live,
                    };
                    if let Served::Refuse(why) = served {
                        journal.flush(self.store, progress)?;
                        return Err(Error::ToolRefused { call_id, tool, why });
                    }
                    if !rerun {
                        let idempotent = self.agent.tools.get(&tool).is_some_and(|t| t.idempotent);
                        let intent = EventKind::ToolRequested {
                            call_id: call_id.clone(),
                            tool: tool.clone(),
                            args,
                            idempotent,
                        };
                        journal.record(&mut state, vec![intent])?;
                    }
                    journal.flush(self.store, progress)?;
                    match served {
                        Served::Recorded { output, is_error } => vec![EventKind::ToolReturned {
                            call_id,
                            output,
                            is_error,
                            duration_ms: 0,
                        }],
                        _ => vec![self.run_tool(run, &call_id, &tool, &args).await?],
                    }
                }
                Next::AskApproval { call, reason } => {
                    let args: Value = self.blob_json(run, &call.args)?;
                    let request =
                        self.put_json(&json!({"tool": call.tool, "args": args, "reason": reason}))?;
                    vec![EventKind::ApprovalRequested {
                        call_id: call.call_id,
                        request,
                    }]
                }
                Next::Deny { call, reason, note } => self.denial(run, &call, &reason, note)?,
                Next::MarkOutcomeUnknown { call_id } => {
                    let reason = self.put_json(&json!({"reason": "the process stopped while this non-idempotent tool ran; it may or may not have taken effect"}))?;
                    vec![EventKind::ToolOutcomeUnknown { call_id, reason }]
                }
                Next::WarnLoop { message } => vec![EventKind::SignalReceived {
                    name: LOOP_WARNING.into(),
                    payload: self.put_json(&json!(message))?,
                }],
                Next::Finish { outcome, reason } => vec![EventKind::RunFinished {
                    outcome,
                    detail: self.finish_detail(run, &state, outcome, &reason)?,
                }],
            };
            journal.record(&mut state, kinds)?;
        }
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
    /// for); the outcome events, or none if the inbox interrupted it.
    async fn ask_model(
        &self,
        state: &mut State,
        journal: &mut Journal,
        progress: &mut (dyn FnMut(Progress) + Send),
        inbox: Option<&Inbox>,
        step: u64,
    ) -> Result<Vec<EventKind>, Error> {
        let run = journal.run;
        if state.model_failure_streak > 0 {
            // the failure is durable; wait before asking again
            journal.flush(self.store, progress)?;
            let wait = tokio::time::sleep(self.backoff(run, state)?);
            if until_interrupted(inbox, wait).await.is_none() {
                return Ok(Vec::new());
            }
        }
        let (request, blob) = if state.deferred_messages.is_empty() {
            self.new_request(run, state, step)?
        } else {
            // recording the call delivers users' waiting messages: ask with them
            let mut delivered = state.clone();
            delivered.deliver_deferred();
            self.new_request(run, &delivered, step)?
        };
        // a retry of the same step after failures is its next attempt
        let intent = EventKind::ModelRequested {
            request: blob,
            attempt: state.model_failure_streak + 1,
        };
        journal.record(state, vec![intent])?;
        journal.flush(self.store, progress)?;
        let call = self.call_model(run, &request, state, progress);
        // interrupted: the intent is durable, a resumed run asks again
        Ok(until_interrupted(inbox, call)
            .await
            .transpose()?
            .unwrap_or_default())
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
                    let reason = if state.last_failure_permanent
                        && error.get("class").and_then(Value::as_str) == Some("context_overflow")
                    {
                        overflow_reason(&error)
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
    #[tracing::instrument(name = "model_call", skip_all, fields(step = request.step, provider = self.provider.name()))]
    async fn call_model(
        &self,
        run: RunId,
        request: &ModelRequest,
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
        let result = self.provider.complete(request, &mut sink).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(reply) => tracing::info!(
                latency_ms,
                tool_calls = reply.tool_calls.len(),
                "model replied"
            ),
            Err(e) => {
                tracing::warn!(latency_ms, transient = e.is_transient(), error = %e, "model call failed");
            }
        }
        Ok(match result {
            Ok(reply) => {
                let response =
                    self.put_json(&serde_json::to_value(&reply).map_err(|e| payload(run, &e))?)?;
                let usage = Usage {
                    input_tokens: reply.usage.input_tokens,
                    output_tokens: reply.usage.output_tokens,
                    cost_micro_usd: self.spec.model.price.map_or(0, |p| {
                        p.micro_usd(reply.usage.input_tokens, reply.usage.output_tokens)
                    }),
                    latency_ms,
                };
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
                    "provider": self.provider.name(),
                    "error": e.to_string(),
                    "retry_after_ms": retry_after_ms,
                });
                // until compaction exists (issue 20) the run still fails, saying why
                if let retrace_providers::Error::ContextOverflow {
                    limit, requested, ..
                } = &e
                {
                    error["class"] = json!("context_overflow");
                    error["limit"] = json!(limit);
                    error["requested"] = json!(requested);
                }
                let error = self.put_json(&error)?;
                vec![EventKind::ModelFailed {
                    request_seq,
                    error,
                    transient: e.is_transient(),
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

    /// Run a tool whose intent is recorded; its outcome event.
    #[tracing::instrument(name = "tool_call", skip(self, run, args))]
    async fn run_tool(
        &self,
        run: RunId,
        call_id: &str,
        tool: &str,
        args: &BlobId,
    ) -> Result<EventKind, Error> {
        let args: Value = self.blob_json(run, args)?;
        let started = Instant::now();
        let result = self.toolbox.call(tool, args).await;
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
        Ok(EventKind::ToolReturned {
            call_id: call_id.to_owned(),
            output: self.put_json(&output)?,
            is_error,
            duration_ms,
        })
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

    /// A request for the conversation in `state`, and its stored record.
    fn new_request(
        &self,
        run: RunId,
        state: &State,
        step: u64,
    ) -> Result<(ModelRequest, BlobId), Error> {
        let request = self.request_from(run, &request::window(state), step)?;
        let (system, tools) = if let Some(blobs) = self.header_blobs.get() {
            *blobs
        } else {
            let tools = serde_json::to_value(&request.tools).map_err(|e| payload(run, &e))?;
            let blobs = (
                self.put_json(&json!(request.system))?,
                self.put_json(&tools)?,
            );
            *self.header_blobs.get_or_init(|| blobs)
        };
        let header = request::Header {
            model: &request.model,
            system,
            tools,
            params: &request.params,
            step,
        };
        let known = state.last_request.and_then(|blob| {
            self.tips
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&blob)
                .copied()
        });
        let (blob, tip) =
            request::record(self.store, state, &header, known).map_err(|e| Error::Payload {
                run,
                what: e.to_string(),
            })?;
        let mut tips = self
            .tips
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tips.len() >= MESSAGE_CACHE {
            tips.clear();
        }
        tips.insert(blob, tip);
        Ok((request, blob))
    }

    /// Exactly the request recorded in `blob` (for re-issuing a call in flight at a crash).
    fn recorded_request(&self, run: RunId, blob: &BlobId) -> Result<ModelRequest, Error> {
        request::rebuild_record(self.store, blob, |refs| self.messages(refs))
            .map_err(|e| request_error(run, &e))
    }

    /// The model request for the messages `refs` with this runner's spec and tools.
    fn request_from(
        &self,
        run: RunId,
        refs: &[request::MessageRef],
        step: u64,
    ) -> Result<ModelRequest, Error> {
        Ok(ModelRequest {
            model: self.spec.model.name.clone(),
            system: self.spec.system.clone(),
            messages: self.messages(refs).map_err(|e| request_error(run, &e))?,
            tools: self
                .toolbox
                .infos()
                .into_iter()
                .map(|i| ToolDef {
                    name: i.name,
                    description: i.description,
                    parameters: i.schema,
                })
                .collect(),
            params: self.spec.model.params.clone(),
            step,
        })
    }

    /// The messages `refs` as sent, each built once by [`request::message`] (the one
    /// builder: fresh requests and requests rebuilt from their records go through here).
    fn messages(
        &self,
        refs: &[request::MessageRef],
    ) -> Result<Vec<Arc<ChatMessage>>, request::Error> {
        let mut messages = Vec::with_capacity(refs.len());
        let mut cache = self
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for message in refs {
            let built = if let Some(built) = cache.get(message) {
                Arc::clone(built)
            } else {
                let built = Arc::new(request::message(self.store, message)?);
                if cache.len() >= MESSAGE_CACHE {
                    cache.clear();
                }
                cache.insert(message.clone(), Arc::clone(&built));
                built
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

/// Why a run whose request overflowed the model's context window failed, with the numbers
/// the `model_failed` blob (`limit`, `requested`) has. Compaction (issue 20) will retry
/// with less instead.
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

//! Delegate calls: child runs started, driven and answered (see [`crate::delegate`]).
//!
//! The calls of one reply that delegate, up to `[delegation] max_parallel`, are requested
//! together: each call's `tool_requested` and `child_started` (the child's derived id) go in
//! one append before any child exists. The children are then created (or found, after a
//! crash: the id is the call's), driven concurrently to their end, and answered together:
//! each call's `child_finished` (the child's totals and last event) and `tool_returned` (its
//! answer) in one append. A parent resumed after a crash re-attaches to the children of its
//! pending calls and drives them on; a finished child is answered at once.

use futures::future::join_all;
use retrace_events::{BlobId, Event, EventKind, Outcome, RunId, Usage, canonical_json};
use retrace_replay::{SnapshotPolicy, State, state_at_head};
use retrace_store::NewRun;
use serde_json::{Value, json};

use super::{Error, Journal, Progress, Runner, Served, Stop, ToolCall};
use crate::decide::{Next, handle_proposal};
use crate::delegate::{self, Brief};
use crate::entropy::now;
use crate::inbox::Inbox;
use crate::spec::Spec;

/// How a batch of delegate calls ended for the parent's drive.
pub(super) enum Delegated {
    /// Every call answered: record these.
    Answered(Vec<EventKind>),
    /// A child waits for a human; so does the parent (it re-attaches when resumed).
    Parked(String),
    /// The host asked the drive to stop.
    Interrupted,
}

/// One delegate call of the batch, its child named.
struct Delegation {
    call_id: String,
    child: RunId,
    /// The sub-agent and the brief, or why the call cannot start one.
    brief: Result<(String, String), String>,
    /// What a tool source served for it (an eval of a recording): the recorded outcome,
    /// and the recorded child's `child_finished`, which stand in for a new child.
    served: Option<(BlobId, bool, Option<EventKind>)>,
    /// Its `child_finished` is recorded already (a fork cut just after it): only its
    /// result is missing.
    finished: bool,
}

impl Runner<'_> {
    /// Perform `first` (a delegate call) with the delegate calls that can run beside it:
    /// after a crash, every pending one; else the reply's next proposals that delegate and
    /// are allowed, up to `max_parallel`.
    pub(super) async fn delegate(
        &self,
        state: &mut State,
        journal: &mut Journal,
        progress: &mut (dyn FnMut(Progress) + Send),
        inbox: Option<&Inbox>,
        first: ToolCall,
        served: Served,
    ) -> Result<Delegated, Error> {
        let run = journal.run;
        let calls = if first.rerun {
            self.pending_delegations(run, state, journal)?
        } else {
            self.request_delegations(run, state, journal, first, served)?
        };
        journal.flush(self.store, progress)?;
        let stops = self
            .drive_children(run, state, &calls, progress, inbox)
            .await?;
        let mut answers = Vec::new();
        for (call, stop) in calls.iter().zip(stops) {
            let outcome = match stop {
                Ok(None) => None,
                Ok(Some(Stop::Finished(outcome))) => Some(outcome),
                Ok(Some(Stop::Parked(reason))) => {
                    return Ok(Delegated::Parked(format!(
                        "child run {} waits: {reason}",
                        call.child.short()
                    )));
                }
                Ok(Some(Stop::Interrupted)) => return Ok(Delegated::Interrupted),
                // the store failing, or this host losing its hold, is the drive's to report
                Err(e @ (Error::Store(_) | Error::HoldLapsed { .. })) => return Err(e),
                // a child that cannot be set up or go on ends as failed, saying why
                Err(e) => {
                    let Some(outcome) = self.fail_child(call.child, &e)? else {
                        let why = format!("the child run {} could not start: {e}", call.child);
                        answers.extend(self.failed_call(&call.call_id, &why)?);
                        continue;
                    };
                    Some(outcome)
                }
            };
            match (outcome, &call.served) {
                (_, Some((output, is_error, finished))) => {
                    answers.extend(finished.iter().cloned());
                    answers.push(EventKind::ToolReturned {
                        call_id: call.call_id.clone(),
                        output: *output,
                        is_error: *is_error,
                        duration_ms: 0,
                    });
                }
                (None, None) => {
                    let why = call.brief.as_ref().err().cloned().unwrap_or_default();
                    answers.extend(self.failed_call(&call.call_id, &why)?);
                }
                (Some(outcome), None) => answers.extend(self.answer(call, outcome)?),
            }
        }
        Ok(Delegated::Answered(answers))
    }

    /// Drive the children of `calls` at once, each with an inbox of its own: a cancel of
    /// the parent is passed on to each (a tool call in flight finishes, then the child ends
    /// as cancelled), and so is a stop. What each came to (`None`: no child to drive).
    async fn drive_children(
        &self,
        run: RunId,
        state: &State,
        calls: &[Delegation],
        progress: &mut (dyn FnMut(Progress) + Send),
        inbox: Option<&Inbox>,
    ) -> Result<Vec<Result<Option<Stop>, Error>>, Error> {
        let inboxes: Vec<Inbox> = calls.iter().map(|_| Inbox::default()).collect();
        let progress = std::sync::Mutex::new(progress);
        let drives = calls.iter().zip(&inboxes).map(|(call, child_inbox)| {
            let progress = &progress;
            Box::pin(async move {
                if let Some((_, _, finished)) = &call.served {
                    // the recorded child ended as its `child_finished` says
                    let outcome = match finished {
                        Some(EventKind::ChildFinished { outcome, .. }) => *outcome,
                        _ => Outcome::Succeeded,
                    };
                    return Ok(Some(Stop::Finished(outcome)));
                }
                let Ok((agent, brief)) = &call.brief else {
                    return Ok(None);
                };
                let mut show = |p: Progress| {
                    let mut progress = progress
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    (*progress)(Progress::Child(call.child, Box::new(p)));
                };
                self.drive_child(
                    run,
                    state,
                    (call.child, agent, brief),
                    &mut show,
                    Some(child_inbox),
                )
                .await
                .map(Some)
            })
        });
        let mut all = std::pin::pin!(join_all(drives));
        let Some(parent) = inbox else {
            return Ok(all.await);
        };
        // the children act only while the parent's host holds the tree (its lease): they
        // follow the parent's deadline as the host renews it
        let follow = || {
            if let Some(deadline) = parent.deadline() {
                for child in &inboxes {
                    child.act_before(deadline);
                }
            }
        };
        follow();
        let mut renewals = tokio::time::interval(std::time::Duration::from_millis(250));
        let mut passed_on = false;
        loop {
            tokio::select! {
                stops = &mut all => return Ok(stops),
                _ = renewals.tick() => follow(),
                () = parent.interrupted(), if !passed_on => {
                    passed_on = true;
                    if parent.is_stopping() {
                        for child in &inboxes {
                            child.stop();
                        }
                    } else {
                        let cancel = self.put_json(&json!({
                            "by": format!("its parent run {}", run.short()),
                            "reason": "the parent run was cancelled",
                        }))?;
                        for child in &inboxes {
                            child.post(crate::inbox::CANCEL, cancel);
                        }
                    }
                }
            }
        }
    }

    /// End `child`, which could not be set up or go on, as failed with `why` (unless it
    /// ended meanwhile); how it ended. `None`: the child has no events (it was never
    /// started), so there is nothing to end.
    fn fail_child(&self, child: RunId, why: &Error) -> Result<Option<Outcome>, Error> {
        let Some(info) = self.store.run(&child)? else {
            return Ok(None);
        };
        if info.is_empty() {
            return Ok(None);
        }
        let state = state_at_head(self.store, &child, SnapshotPolicy::default())?.state;
        if let retrace_replay::Status::Finished { outcome, .. } = state.status {
            return Ok(Some(outcome));
        }
        let detail = self.put_json(&json!({
            "reason": format!("the child run could not go on: {why}"),
        }))?;
        let finished = Event::after(
            info.head,
            now(),
            EventKind::RunFinished {
                outcome: Outcome::Failed,
                detail,
            },
        );
        self.store
            .append(&child, info.head.map(|h| h.id), &[finished])?;
        Ok(Some(Outcome::Failed))
    }

    /// Before the run ends with delegate calls pending (a cancel, say, while a child
    /// waits for a human): end each unfinished child the same way, by a cancel posted to
    /// its drive, and answer the calls, so no child is left behind and the tree's totals
    /// hold every child's spending.
    pub(super) async fn end_children(
        &self,
        state: &mut State,
        journal: &mut Journal,
        progress: &mut (dyn FnMut(Progress) + Send),
        reason: &str,
    ) -> Result<(), Error> {
        let run = journal.run;
        let calls = self.pending_delegations(run, state, journal)?;
        if calls.is_empty() {
            return Ok(());
        }
        journal.flush(self.store, progress)?;
        let cancel = self.put_json(&json!({
            "by": format!("its parent run {}", run.short()),
            "reason": reason,
        }))?;
        let mut answers = Vec::new();
        for call in &calls {
            // each child reads the cancel at its first step
            let inbox = Inbox::default();
            inbox.post(crate::inbox::CANCEL, cancel);
            let ended = match super::recorded_spec(self.store, &call.child)
                .and_then(|spec| self.child_runner(spec))
            {
                Ok(runner) => runner
                    .drive_with(call.child, &mut |_| {}, Some(&inbox))
                    .await
                    .map(|stop| match stop {
                        Stop::Finished(outcome) => Some(outcome),
                        _ => Some(Outcome::Cancelled),
                    }),
                Err(e) => Err(e),
            };
            let outcome = match ended {
                Ok(outcome) => outcome,
                // the store failing, or this host losing its hold, is the drive's to report
                Err(e @ (Error::Store(_) | Error::HoldLapsed { .. })) => return Err(e),
                Err(e) => self.fail_child(call.child, &e)?,
            };
            match outcome {
                Some(outcome) => answers.extend(self.answer(call, outcome)?),
                // never started: nothing ran
                None => answers.extend(self.failed_call(&call.call_id, reason)?),
            }
        }
        journal.record(state, answers)?;
        Ok(())
    }

    /// Record the intents of `first` (which `served` says how to answer) and of the
    /// delegate proposals after it that the agent allows, up to `max_parallel`; the calls.
    fn request_delegations(
        &self,
        run: RunId,
        state: &mut State,
        journal: &mut Journal,
        first: ToolCall,
        served: Served,
    ) -> Result<Vec<Delegation>, Error> {
        let limit = self.spec.delegation.unwrap_or_default().max_parallel as usize;
        let mut calls = Vec::new();
        let mut next = Some((first.call_id, first.args, served));
        while let Some((call_id, args, served)) = next.take() {
            let mut call = self.delegation(run, state.len(), &call_id, &args)?;
            let mut started = None;
            if let Served::Recorded {
                output,
                is_error,
                around,
            } = served
            {
                let (was_started, finished) = match around.and_then(|a| a.child) {
                    Some(pair) => (Some(pair.0), Some(pair.1)),
                    None => (None, None),
                };
                started = was_started;
                call.served = Some((output, is_error, finished));
            } else if let Ok((agent, _)) = &call.brief {
                started = Some(EventKind::ChildStarted {
                    call_id: call_id.clone(),
                    child: call.child,
                    agent: agent.clone(),
                });
            }
            let mut kinds = vec![EventKind::ToolRequested {
                call_id,
                tool: delegate::TOOL.into(),
                args,
                idempotent: true,
            }];
            kinds.extend(started);
            journal.record(state, kinds)?;
            calls.push(call);
            if calls.len() >= limit {
                break;
            }
            if let Some(proposal) = state.proposed.front()
                && proposal.tool == delegate::TOOL
                // a hook on delegate calls sees one at a time
                && !self
                    .spec
                    .hooks
                    .iter()
                    .any(|h| h.applies(retrace_events::HookStage::BeforeTool, delegate::TOOL))
                && let Next::RunTool { call_id, args, .. } =
                    handle_proposal(&self.agent, state, proposal)
            {
                let served = self.served(delegate::TOOL, &args);
                if let Served::Refuse(why) = served {
                    return Err(Error::ToolRefused {
                        call_id,
                        tool: delegate::TOOL.into(),
                        why,
                    });
                }
                next = Some((call_id, args, served));
            }
        }
        Ok(calls)
    }

    /// The delegate calls pending in `state` (a drive stopped while their children ran), in
    /// the order they were requested, each with the child its `child_started` named. A call
    /// without one (a fork cut between the two) gets it now, its child's id derived from the
    /// run that recorded the call.
    fn pending_delegations(
        &self,
        run: RunId,
        state: &mut State,
        journal: &mut Journal,
    ) -> Result<Vec<Delegation>, Error> {
        let pending: Vec<(u64, String, BlobId)> = delegate::pending(state)
            .into_iter()
            .map(|(seq, call_id, args)| (seq, call_id.to_owned(), args))
            .collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let recorded = retrace_store::tree::children(self.store, &run)?;
        let mut calls = Vec::new();
        for (seq, call_id, args) in pending {
            let holder = holder_of(self.store, run, seq)?;
            let mut call = self.delegation(holder, seq, &call_id, &args)?;
            match recorded
                .iter()
                .rev()
                .find(|c| c.call_id == call_id && c.requested_seq == seq)
            {
                Some(c) => {
                    call.child = c.child;
                    call.finished = c.finished.is_some();
                }
                None => {
                    if let Ok((agent, _)) = &call.brief {
                        let started = EventKind::ChildStarted {
                            call_id: call_id.clone(),
                            child: call.child,
                            agent: agent.clone(),
                        };
                        journal.record(state, vec![started])?;
                    }
                }
            }
            calls.push(call);
        }
        Ok(calls)
    }

    /// Delegate call `call_id` of `run`, requested at `seq` with `args`.
    fn delegation(
        &self,
        run: RunId,
        seq: u64,
        call_id: &str,
        args: &BlobId,
    ) -> Result<Delegation, Error> {
        let args: Value = self.blob_json(run, args)?;
        Ok(Delegation {
            call_id: call_id.to_owned(),
            child: RunId::child(&run, seq, call_id),
            brief: Brief::parse(&args, &self.spec.agents).map(|(b, _)| (b.agent, b.brief)),
            served: None,
            finished: false,
        })
    }

    /// Create the child run (unless it exists: this call made it before a crash) and drive
    /// it until it finishes or parks. (A plain function returning a boxed future: a child's
    /// drive holds its own children's, and the declared `Send` ends that recursion.)
    fn drive_child<'s>(
        &'s self,
        parent: RunId,
        state: &'s State,
        (child, agent, brief): (RunId, &'s str, &'s str),
        progress: &'s mut (dyn FnMut(Progress) + Send),
        inbox: Option<&'s Inbox>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Stop, Error>> + Send + 's>> {
        Box::pin(async move {
            let spec = match self.store.run(&child)? {
                Some(info) if !info.is_empty() => super::recorded_spec(self.store, &child)?,
                existing => {
                    let sub = self
                        .spec
                        .agents
                        .iter()
                        .find(|a| a.name == agent)
                        .ok_or_else(|| Error::Setup(format!("there is no sub-agent `{agent}`")))?;
                    let spent = (state.totals.tokens(), state.totals.cost_micro_usd);
                    let elapsed = state.timing.elapsed_ms() / 1_000;
                    let spec = delegate::child_spec(&self.spec, sub, spent, elapsed);
                    self.create_child(parent, child, &spec, agent, brief, existing.is_some())?;
                    spec
                }
            };
            self.child_runner(spec)?
                .drive_with(child, progress, inbox)
                .await
        })
    }

    /// A runner of a child run's `spec` on this runner's store, its model client (and its
    /// own children's) made as this runner's are.
    fn child_runner(&self, spec: Spec) -> Result<Runner<'_>, Error> {
        let provider = (self.providers)(&spec).map_err(Error::Setup)?;
        Ok(Runner::new(self.store, spec, provider)?
            .with_providers(std::sync::Arc::clone(&self.providers)))
    }

    /// Create child run `child` of call `parent`'s delegation: its ref (meta `parent`,
    /// `agent`), then its first event. `exists`: a crash came between the two.
    fn create_child(
        &self,
        parent: RunId,
        child: RunId,
        spec: &Spec,
        agent: &str,
        brief: &str,
        exists: bool,
    ) -> Result<(), Error> {
        let spec_blob = self.store.put_blob(&spec.to_canonical_bytes())?;
        let input = self.store.put_blob(&canonical_json(&json!(brief)))?;
        if !exists {
            let mut new = NewRun::new(child, now());
            new.meta.insert("name".into(), spec.name.clone());
            new.meta.insert("parent".into(), parent.to_string());
            new.meta.insert("agent".into(), agent.to_owned());
            self.store.create_run(new)?;
        }
        let first = Event::root(
            now(),
            EventKind::RunStarted {
                run: child,
                spec: spec_blob,
                input,
            },
        );
        self.store.append(&child, None, &[first])?;
        Ok(())
    }

    /// The events answering `call` whose child ended with `outcome`: the child's totals and
    /// last event, then its answer (or why it did not succeed) as the call's result.
    fn answer(&self, call: &Delegation, outcome: Outcome) -> Result<Vec<EventKind>, Error> {
        let child = state_at_head(self.store, &call.child, SnapshotPolicy::default())?.state;
        let head = self
            .store
            .require_run(&call.child)?
            .head
            .map(|h| h.id)
            .ok_or_else(|| Error::Payload {
                run: call.child,
                what: "a finished child run has no events".into(),
            })?;
        let detail = match &child.status {
            retrace_replay::Status::Finished { detail, .. } => {
                self.blob_json::<Value>(call.child, detail)?
            }
            _ => Value::Null,
        };
        let agent = call
            .brief
            .as_ref()
            .map(|(a, _)| a.clone())
            .unwrap_or_default();
        // the child's id is in `child_started`; the result holds only what the model needs,
        // so two trees that did the same work end in the same state whatever their ids
        let mut result = json!({
            "agent": agent,
            "outcome": retrace_replay::describe::outcome_word(outcome),
        });
        let ok = outcome == Outcome::Succeeded;
        if ok {
            result["answer"] = detail.get("output").cloned().unwrap_or(Value::Null);
        } else {
            result["error"] = detail.get("reason").cloned().unwrap_or(Value::Null);
        }
        let t = child.totals;
        let wall_ms = child.timing.elapsed_ms();
        let returned = EventKind::ToolReturned {
            call_id: call.call_id.clone(),
            output: self.put_json(&result)?,
            is_error: !ok,
            // the child's wall time (never 0 for an answer: 0 marks a call not run)
            duration_ms: wall_ms.max(1),
        };
        if call.finished {
            return Ok(vec![returned]);
        }
        Ok(vec![
            EventKind::ChildFinished {
                call_id: call.call_id.clone(),
                child: call.child,
                head,
                outcome,
                usage: Usage {
                    input_tokens: t.input_tokens,
                    output_tokens: t.output_tokens,
                    cost_micro_usd: t.cost_micro_usd,
                    latency_ms: wall_ms,
                },
            },
            returned,
        ])
    }

    /// A delegate call that started no child (or whose child cannot go on), answered with
    /// why.
    fn failed_call(&self, call_id: &str, why: &str) -> Result<Vec<EventKind>, Error> {
        Ok(vec![EventKind::ToolReturned {
            call_id: call_id.to_owned(),
            output: self.put_json(&json!({ "error": why }))?,
            is_error: true,
            duration_ms: 0,
        }])
    }
}

/// The run of `run`'s lineage whose own events hold `seq` (a fork's shared prefix is its
/// origin's).
fn holder_of(store: &dyn retrace_store::Store, run: RunId, seq: u64) -> Result<RunId, Error> {
    let mut at = run;
    while let Some(origin) = store.require_run(&at)?.origin {
        if seq > origin.at.seq {
            break;
        }
        at = origin.run;
    }
    Ok(at)
}

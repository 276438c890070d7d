//! A [`Transcript`] written as a run: the events the executor would have written had it run
//! the recording, folded as they are built (so the log applies cleanly), chained, and
//! appended to the store.
//!
//! | transcript | events |
//! |---|---|
//! | task | `run_started` (its spec records the import: [`retrace_runtime::spec::Imported`]) |
//! | model call | `model_requested` (a request record rebuilt from the conversation so far), `model_responded`, `tool_calls_proposed` |
//! | failed model call | `model_requested`, `model_failed` |
//! | tool result | `tool_requested`, `tool_returned`, in the order the reply proposed the calls |
//! | rejected call | `approval_requested`, `approval_decided` (denied, by `user`), `tool_requested`, `tool_returned` (error) |
//! | call with no result | `tool_requested`, `tool_returned` (error: no result recorded) |
//! | user message | `signal_received` `user_message` |
//! | compaction | `context_compacted` (every message so far evicted, the summary kept) |
//! | end | `run_finished` |
//!
//! Event times are the source's (never earlier than the event before: sources write some
//! lines out of order). The run's id is derived from the format, the files' BLAKE3 and the
//! name, so importing the same recording again finds the run already there, and an import
//! that was interrupted appends the rest of the same events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use retrace_events::chat::ToolDef;
use retrace_events::{
    BlobId, Decision, Event, EventKind, Outcome, ProposedCall, RunId, Timestamp, Usage,
    canonical_json,
};
use retrace_replay::{State, apply, request};
use retrace_runtime::spec::{Budgets, Imported as Origin, ImportedFile, Model, Provider, Spec};
use retrace_store::{NewRun, Store};
use serde_json::{Value, json};

use crate::transcript::{Entry, ModelCall, Step, ToolResult, Transcript};
use crate::{Report, Source};

/// Events appended at a time.
const BATCH: usize = 4_096;

/// What [`write`] did.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The run.
    pub run: RunId,
    /// `false`: the run was already in the store (the same recording imported before);
    /// nothing was written.
    pub created: bool,
    /// Events the run has.
    pub events: u64,
    /// What was read, kept, skipped and written.
    pub report: Report,
}

/// Why a transcript could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] retrace_store::Error),
    /// A request record could not be made.
    #[error("request record: {0}")]
    Request(#[from] request::Error),
    /// A run of this id exists with other events (imported from these files by an older
    /// retrace, or written otherwise).
    #[error(
        "run {run} exists with {events} other events; import this recording as another run with --name"
    )]
    Conflict {
        /// The run.
        run: RunId,
        /// Its events.
        events: u64,
    },
    /// The events built do not fold: an importer bug, named with the event.
    #[error(
        "the imported events do not fold at seq {seq} ({kind}): {source}; please report this with the recording"
    )]
    Fold {
        /// Where.
        seq: u64,
        /// The event kind.
        kind: &'static str,
        /// Why.
        #[source]
        source: retrace_replay::ApplyError,
    },
}

/// The run id an import of `sources` as `format` named `name` gets.
pub fn run_id(t: &Transcript, sources: &[Source], name: &str) -> RunId {
    let mut h = blake3::Hasher::new();
    h.update(b"retrace import-run\0");
    h.update(t.format.name().as_bytes());
    for s in sources {
        h.update(b"\0");
        h.update(blake3::hash(&s.bytes).as_bytes());
    }
    h.update(b"\0");
    h.update(name.as_bytes());
    let mut id = [0; RunId::LEN];
    id.copy_from_slice(&h.finalize().as_bytes()[..RunId::LEN]);
    RunId::from_bytes(id)
}

/// Write `t`, read from `sources`, as a run named `name` (default: the transcript's).
/// `now` stamps the run's creation.
///
/// # Errors
/// [`WriteError`]: the store failed, or (a bug) the events built do not fold. A failure
/// before the first append leaves the store without the run.
pub fn write(
    store: &dyn Store,
    t: &Transcript,
    sources: &[Source],
    name: Option<&str>,
    now: Timestamp,
) -> Result<Imported, WriteError> {
    // a name read from a recording is shown in terminals: no control characters
    let name: String = name
        .unwrap_or(&t.name)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let run = run_id(t, sources, &name);
    let mut report = t.report.clone();
    let existing = store.run(&run)?;
    let mut b = Builder {
        store,
        state: State::default(),
        tip: None,
        kinds: Vec::new(),
        extras: BTreeMap::new(),
        at: Timestamp(t.started_at.unwrap_or(now.0)),
        system: put(store, &json!(t.system))?,
        tools: put(
            store,
            &serde_json::to_value(tool_defs(t)).unwrap_or_default(),
        )?,
        proposed: Vec::new(),
        answers: HashMap::new(),
        report: &mut report,
    };
    let input = put(store, &json!(t.task))?;
    // the spec names the extras, known once every event is built: a stand-in until then
    b.push(
        t.started_at,
        EventKind::RunStarted {
            run,
            spec: input,
            input,
        },
    )?;
    for entry in &t.entries {
        b.entry(entry)?;
    }
    b.flush()?;
    let detail = match t.finish.outcome {
        Outcome::Succeeded => json!({ "output": t.finish.text }),
        _ => json!({ "reason": t.finish.text }),
    };
    let detail = put(store, &detail)?;
    b.push(
        t.finish.at,
        EventKind::RunFinished {
            outcome: t.finish.outcome,
            detail,
        },
    )?;
    let Builder {
        kinds,
        extras,
        report,
        ..
    } = b;
    report.events = kinds.len() as u64;
    let extras: BTreeMap<String, BlobId> = extras
        .into_iter()
        .map(|(seq, lines)| Ok((seq.to_string(), put(store, &Value::Array(lines))?)))
        .collect::<Result<_, WriteError>>()?;
    let spec = spec(t, sources, &name, report, store, &extras)?;
    let mut new = NewRun::new(run, now);
    new.meta.insert("name".into(), name);
    new.meta.insert("imported".into(), t.format.name().into());
    let mut events = Vec::with_capacity(kinds.len());
    let mut head = None;
    for (i, (at, mut kind)) in kinds.into_iter().enumerate() {
        if i == 0
            && let EventKind::RunStarted { spec: s, .. } = &mut kind
        {
            *s = spec;
        }
        let event = Event::after(head, at, kind);
        head = Some(event.head());
        events.push(event);
    }
    append_events(store, run, existing, new, &events, report)
}

/// Append `events` to `run`: a new run (`existing` is `None`), or the rest of the same
/// events after an interrupted import.
fn append_events(
    store: &dyn Store,
    run: RunId,
    existing: Option<retrace_store::RunInfo>,
    new: NewRun,
    events: &[Event],
    report: &Report,
) -> Result<Imported, WriteError> {
    // the same recording imported before: nothing to do, or (an import interrupted after
    // some appends) the rest of the same events to append
    let (mut tip, mut start) = match existing {
        None => {
            store.create_run(new)?;
            (None, 0)
        }
        Some(info) => {
            let have = usize::try_from(info.len()).unwrap_or(usize::MAX);
            let same = info.head.is_none_or(|h| {
                events
                    .get(have.wrapping_sub(1))
                    .is_some_and(|e| e.id() == h.id)
            });
            if !same || have > events.len() {
                return Err(WriteError::Conflict {
                    run,
                    events: info.len(),
                });
            }
            if have == events.len() {
                return Ok(Imported {
                    run,
                    created: false,
                    events: info.len(),
                    report: report.clone(),
                });
            }
            (info.head.map(|h| h.id), have)
        }
    };
    while start < events.len() {
        let mut end = (start + BATCH).min(events.len());
        // a reply and its proposals go in one append, as the executor writes them
        while end < events.len() && matches!(events[end].kind, EventKind::ToolCallsProposed { .. })
        {
            end += 1;
        }
        tip = Some(store.append(&run, tip, &events[start..end])?.id);
        start = end;
    }
    Ok(Imported {
        run,
        created: true,
        events: events.len() as u64,
        report: report.clone(),
    })
}

/// The spec an imported run records: the source's system prompt and model (a scripted
/// model: nothing can call the source's), no tools of retrace's, and where it came from.
fn spec(
    t: &Transcript,
    sources: &[Source],
    name: &str,
    report: &Report,
    store: &dyn Store,
    extras: &BTreeMap<String, BlobId>,
) -> Result<BlobId, WriteError> {
    let spec = Spec {
        name: name.to_owned(),
        system: t.system.clone(),
        workspace: PathBuf::from("/"),
        model: Model {
            provider: Provider::Scripted,
            name: t.model.clone(),
            cassette: None,
            base_url: None,
            api_key_env: None,
            timeout_secs: None,
            price: None,
            params: BTreeMap::new(),
        },
        tools: Vec::new(),
        wasm: Vec::new(),
        mcp: Vec::new(),
        policy: Vec::new(),
        budgets: Budgets::default(),
        context: None,
        exec: None,
        web: None,
        imported: Some(Origin {
            format: t.format.name().to_owned(),
            files: sources
                .iter()
                .map(|s| ImportedFile {
                    name: s.name.clone(),
                    blake3: blake3::hash(&s.bytes).to_hex().to_string(),
                    bytes: s.bytes.len() as u64,
                })
                .collect(),
            session: put(store, &Value::Array(t.session.clone()))?,
            extras: put(store, &serde_json::to_value(extras).unwrap_or_default())?,
            report: serde_json::to_value(report).unwrap_or_default(),
            tools: tool_defs(t),
        }),
        agents: Vec::new(),
        delegation: None,
        skills: Vec::new(),
        hooks: Vec::new(),
        models: Vec::new(),
        routing: None,
        autonomy: Vec::new(),
    };
    Ok(store.put_blob(&spec.to_canonical_bytes())?)
}

/// The tools an imported run's requests offer (and its spec records): each tool its replies
/// call, sorted by name, as the source described it, or with an open schema when it did
/// not.
fn tool_defs(t: &Transcript) -> Vec<ToolDef> {
    let called: std::collections::BTreeSet<&str> = t
        .entries
        .iter()
        .filter_map(|e| match &e.step {
            Step::Model(call) => Some(&call.reply.tool_calls),
            _ => None,
        })
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    called
        .into_iter()
        .map(|name| {
            t.tools
                .iter()
                .find(|d| d.name == name)
                .cloned()
                .unwrap_or_else(|| ToolDef {
                    name: name.to_owned(),
                    description: format!(
                        "{name}, a tool of the {} agent this run was imported from",
                        t.format
                    ),
                    parameters: json!({"type": "object"}),
                })
        })
        .collect()
}

fn put(store: &dyn Store, value: &Value) -> Result<BlobId, WriteError> {
    Ok(store.put_blob(&canonical_json(value))?)
}

struct Builder<'a> {
    store: &'a dyn Store,
    state: State,
    /// The tip of the last request record made (the one `state.last_request` names).
    tip: Option<request::Tip>,
    kinds: Vec<(Timestamp, EventKind)>,
    /// seq → the source's lines or fields for it
    extras: BTreeMap<u64, Vec<Value>>,
    at: Timestamp,
    system: BlobId,
    tools: BlobId,
    /// the calls of the last reply not answered yet, and when they were proposed
    proposed: Vec<(ProposedCall, Timestamp)>,
    /// results that arrived for them, by call id
    answers: HashMap<String, (ToolResult, Vec<Value>)>,
    report: &'a mut Report,
}

impl Builder<'_> {
    /// Add an event at `at` (or the time of the one before); its seq.
    fn push(&mut self, at: Option<u64>, kind: EventKind) -> Result<u64, WriteError> {
        self.at = Timestamp(at.map_or(self.at.0, |t| t.max(self.at.0)));
        let seq = self.kinds.len() as u64;
        let event = Event {
            parent: None,
            seq,
            at: self.at,
            kind,
        };
        apply(&mut self.state, &event).map_err(|source| WriteError::Fold {
            seq,
            kind: event.kind.name(),
            source,
        })?;
        self.kinds.push((event.at, event.kind));
        Ok(seq)
    }

    fn extra(&mut self, seq: u64, extra: &[Value]) {
        if !extra.is_empty() {
            self.extras
                .entry(seq)
                .or_default()
                .extend(extra.iter().cloned());
        }
    }

    fn entry(&mut self, entry: &Entry) -> Result<(), WriteError> {
        match &entry.step {
            Step::Result(r) => {
                let proposed = self.proposed.iter().any(|(p, _)| p.call_id == r.call_id);
                if proposed && !self.answers.contains_key(&r.call_id) {
                    self.answers
                        .insert(r.call_id.clone(), (r.clone(), entry.extra.clone()));
                } else {
                    // a result no reply asked for: what it said stays with the event before
                    self.report.orphan_results += 1;
                    let last = self.kinds.len() as u64 - 1;
                    let mut kept = vec![json!({"orphan_result": r.call_id, "output": r.output})];
                    kept.extend(entry.extra.iter().cloned());
                    self.extra(last, &kept);
                }
                return Ok(());
            }
            Step::Model(call) => {
                self.flush()?;
                self.model(call, &entry.extra)?;
            }
            Step::ModelError {
                requested_at,
                at,
                model,
                message,
            } => {
                self.flush()?;
                let request_seq = self.request(*requested_at, model)?;
                let error = put(self.store, &json!({ "error": message, "model": model }))?;
                let seq = self.push(
                    *at,
                    EventKind::ModelFailed {
                        request_seq,
                        error,
                        transient: false,
                    },
                )?;
                self.extra(seq, &entry.extra);
            }
            Step::User { at, text } => {
                self.flush()?;
                let payload = put(self.store, &json!(text))?;
                let seq = self.push(
                    *at,
                    EventKind::SignalReceived {
                        name: "user_message".into(),
                        payload,
                    },
                )?;
                self.extra(seq, &entry.extra);
            }
            Step::Compaction { at, summary } => {
                self.flush()?;
                let evicted = self.state.conversation.len() as u64;
                let summary = put(self.store, &json!(summary))?;
                let seq = self.push(
                    *at,
                    EventKind::ContextCompacted {
                        request_seq: None,
                        summary: Some(summary),
                        response: None,
                        evicted,
                        usage: Usage::default(),
                    },
                )?;
                self.extra(seq, &entry.extra);
            }
        }
        Ok(())
    }

    /// A `model_requested` for the conversation so far; its seq.
    fn request(&mut self, at: Option<u64>, model: &str) -> Result<u64, WriteError> {
        // the user's messages join the conversation with this call (as `apply` does)
        let delivered;
        let next = if self.state.deferred_messages.is_empty() {
            &self.state
        } else {
            let mut next = self.state.clone();
            next.deliver_deferred();
            delivered = next;
            &delivered
        };
        let params = BTreeMap::new();
        let header = request::Header {
            model,
            system: self.system,
            tools: self.tools,
            params: &params,
            step: next.totals.steps + next.totals.model_failures,
            pinned: request::pinned(next),
            artifacts: None,
            budget: None,
        };
        // the previous record's tip, kept rather than read back from the store
        let (blob, tip) = request::record(self.store, next, &header, self.tip)?;
        self.tip = Some(tip);
        self.push(
            at,
            EventKind::ModelRequested {
                request: blob,
                attempt: 1,
            },
        )
    }

    fn model(&mut self, call: &ModelCall, extra: &[Value]) -> Result<(), WriteError> {
        let request_seq = self.request(call.requested_at, &call.model)?;
        let requested = self.at;
        let response = self
            .store
            .put_blob(&retrace_events::to_canonical_json(&call.reply).unwrap_or_default())?;
        let latency = call.latency_ms.unwrap_or_else(|| {
            call.responded_at
                .map_or(0, |t| t.saturating_sub(requested.0))
        });
        let seq = self.push(
            call.responded_at,
            EventKind::ModelResponded {
                request_seq,
                response,
                usage: Usage {
                    input_tokens: call.reply.usage.input_tokens,
                    output_tokens: call.reply.usage.output_tokens,
                    cost_micro_usd: call.cost_micro_usd,
                    latency_ms: latency,
                },
            },
        )?;
        self.extra(seq, extra);
        let calls = call.reply.proposed_calls(|args| put(self.store, args))?;
        if !calls.is_empty() {
            self.push(
                call.responded_at,
                EventKind::ToolCallsProposed {
                    response_seq: seq,
                    calls: calls.clone(),
                },
            )?;
            let at = self.at;
            self.proposed = calls.into_iter().map(|c| (c, at)).collect();
        }
        Ok(())
    }

    /// The open calls' events, in the order the reply proposed them.
    fn flush(&mut self) -> Result<(), WriteError> {
        for (call, proposed_at) in std::mem::take(&mut self.proposed) {
            let Some((result, extra)) = self.answers.remove(&call.call_id) else {
                self.report.unanswered_calls += 1;
                self.push(None, requested(&call))?;
                let output = put(
                    self.store,
                    &json!({"error": "not run: the recording has no result for this call"}),
                )?;
                self.push(
                    None,
                    EventKind::ToolReturned {
                        call_id: call.call_id.clone(),
                        output,
                        is_error: true,
                        duration_ms: 0,
                    },
                )?;
                continue;
            };
            if result.rejected {
                let asked = put(
                    self.store,
                    &json!({"tool": call.tool, "args": call.args, "reason": "the user was asked (imported)"}),
                )?;
                self.push(
                    Some(proposed_at.0),
                    EventKind::ApprovalRequested {
                        call_id: call.call_id.clone(),
                        request: asked,
                    },
                )?;
                self.push(
                    result.at,
                    EventKind::ApprovalDecided {
                        call_id: call.call_id.clone(),
                        decision: Decision::Denied,
                        by: "user".into(),
                        note: None,
                    },
                )?;
            }
            let started = result.started_at.unwrap_or(proposed_at.0);
            self.push(Some(started), requested(&call))?;
            let output = match &result.value {
                Some(value) => put(self.store, value)?,
                None => put(self.store, &json!(result.output))?,
            };
            let duration_ms = result
                .duration_ms
                .unwrap_or_else(|| result.at.map_or(0, |t| t.saturating_sub(self.at.0)));
            let seq = self.push(
                result.at,
                EventKind::ToolReturned {
                    call_id: call.call_id.clone(),
                    output,
                    is_error: result.is_error,
                    duration_ms,
                },
            )?;
            self.extra(seq, &extra);
        }
        // results for calls of another reply: nothing asked for them here
        for (call_id, (result, extra)) in std::mem::take(&mut self.answers) {
            self.report.orphan_results += 1;
            let last = self.kinds.len() as u64 - 1;
            let mut kept = vec![json!({"orphan_result": call_id, "output": result.output})];
            kept.extend(extra);
            self.extra(last, &kept);
        }
        Ok(())
    }
}

fn requested(call: &ProposedCall) -> EventKind {
    EventKind::ToolRequested {
        call_id: call.call_id.clone(),
        tool: call.tool.clone(),
        args: call.args,
        idempotent: false,
    }
}

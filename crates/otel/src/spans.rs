//! A run's log as OpenTelemetry spans following the GenAI semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/> and
//! `gen-ai-agent-spans`):
//!
//! | span | from | attributes |
//! |---|---|---|
//! | `invoke_agent {name}` (root) | `run_started` … `run_finished` | `gen_ai.operation.name`, `gen_ai.agent.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.conversation.id`, `gen_ai.input.messages` (the task), `gen_ai.system_instructions`, total `gen_ai.usage.*` |
//! | `chat {model}` | `model_requested` … `model_responded` / `model_failed` | `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_creation.input_tokens`, `gen_ai.response.finish_reasons`, `gen_ai.output.messages` |
//! | `execute_tool {tool}` | `tool_requested` … `tool_returned` | `gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.tool.type`, `gen_ai.tool.call.arguments`, `gen_ai.tool.call.result` |
//!
//! Approvals, signals and compactions without a model call are events of the root span.
//! Errors set the span's status (`error.type` names the kind). Every span carries
//! `retrace.run.id`, `retrace.event.id` and `retrace.seq` of the event that started it
//! (and `retrace.end.event.id` of the one that ended it), so a trace links back to the log.
//!
//! Ids are derived, so exporting twice gives the same trace: the trace id is the run id
//! (both 128 bits), a span id the first 8 bytes of the id of the event that started the
//! span. Times are the events' (milliseconds). A span still open (a running run) ends at
//! the newest event and says `retrace.open = true`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value as OtelValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use retrace_events::{BlobId, Decision, Event, EventId, EventKind, Outcome, RunId, Timestamp};
use retrace_store::Store;
use serde_json::{Value, json};

/// What to put in the spans.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Message contents (the task, replies, tool arguments and results). The conventions
    /// make content opt-in: off, only shapes, names, ids, usage and errors are sent.
    pub content: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { content: true }
    }
}

/// Why a run could not be turned into spans.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] retrace_store::Error),
    /// The run has no events.
    #[error("run {0} has no events")]
    Empty(RunId),
}

#[derive(Debug)]
struct Open {
    span_id: SpanId,
    start: Timestamp,
    seq: u64,
    event: EventId,
    name: String,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
}

/// The spans of `run`: the root first, then every call in the order it started. Calls
/// still open (a running run) end at the newest event.
///
/// # Errors
/// [`Error`]: the store failed, or the run has no events.
pub fn run_spans(store: &dyn Store, run: &RunId, options: Options) -> Result<Vec<SpanData>, Error> {
    let info = store.require_run(run)?;
    let head = info.head.ok_or(Error::Empty(*run))?;
    let mut tracer = Tracer::new(*run, options);
    let mut spans = Vec::new();
    for (id, event) in store.events(run, 0..=head.seq)? {
        spans.extend(tracer.push(store, &id, &event)?);
    }
    spans.extend(tracer.close());
    let root = spans
        .iter()
        .position(|s| s.parent_span_id == SpanId::INVALID)
        .map(|i| spans.remove(i));
    // in the order the calls started in the log (times tie within a millisecond)
    spans.sort_by_key(|s| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "retrace.seq")
            .and_then(|kv| match kv.value {
                OtelValue::I64(seq) => Some(seq),
                _ => None,
            })
    });
    spans.splice(0..0, root);
    Ok(spans)
}

/// Spans built event by event: [`Tracer::push`] gives the spans an event completes (a
/// call's when its outcome is appended, the root when the run finishes), so a live run's
/// spans can be sent as it goes (`retrace serve --otlp-endpoint`).
#[derive(Debug)]
pub struct Tracer {
    run: RunId,
    options: Options,
    scope: InstrumentationScope,
    root: Option<Open>,
    /// The root span's id, once the run has started (the parent of every other span).
    root_id: SpanId,
    root_events: Vec<opentelemetry::trace::Event>,
    root_status: Status,
    finished: bool,
    end: Timestamp,
    end_event: Option<EventId>,
    input_tokens: u64,
    output_tokens: u64,
    provider: String,
    models: HashMap<u64, Open>,
    tools: HashMap<String, Open>,
}

impl Tracer {
    /// A tracer for `run`, before its first event.
    pub fn new(run: RunId, options: Options) -> Self {
        Self {
            run,
            options,
            scope: InstrumentationScope::builder("retrace")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            root: None,
            root_id: SpanId::INVALID,
            root_events: Vec::new(),
            root_status: Status::Unset,
            finished: false,
            end: Timestamp(0),
            end_event: None,
            input_tokens: 0,
            output_tokens: 0,
            provider: String::new(),
            models: HashMap::new(),
            tools: HashMap::new(),
        }
    }

    fn span(
        &self,
        open: Open,
        at: Timestamp,
        by: EventId,
        status: Status,
        mut extra: Vec<KeyValue>,
    ) -> SpanData {
        let root_id = self.root_id;
        let mut attributes = open.attributes;
        attributes.extend(ids(&self.run, open.seq, &open.event));
        attributes.push(KeyValue::new("retrace.end.event.id", by.to_hex()));
        attributes.append(&mut extra);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(*self.run.as_bytes()),
                open.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: if open.span_id == root_id {
                SpanId::INVALID
            } else {
                root_id
            },
            parent_span_is_remote: false,
            span_kind: open.kind,
            name: open.name.into(),
            start_time: time(open.start),
            end_time: time(at.max(open.start)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// The root span, closed at `at` by `by`.
    fn root_span(&mut self, at: Timestamp, by: EventId) -> Option<SpanData> {
        let mut root = self.root.take()?;
        root.attributes.extend([
            KeyValue::new("gen_ai.usage.input_tokens", to_i64(self.input_tokens)),
            KeyValue::new("gen_ai.usage.output_tokens", to_i64(self.output_tokens)),
        ]);
        let status = std::mem::replace(&mut self.root_status, Status::Unset);
        let mut span = self.span(root, at, by, status, Vec::new());
        span.events.events = std::mem::take(&mut self.root_events);
        Some(span)
    }

    /// Feed `run`'s next event (`id`, `event`), reading its payloads from `store`; the spans
    /// it completes.
    ///
    /// # Errors
    /// [`Error::Store`]: a payload could not be read.
    pub fn push(
        &mut self,
        store: &dyn Store,
        id: &EventId,
        event: &Event,
    ) -> Result<Vec<SpanData>, Error> {
        let blob = |b: &BlobId| -> Result<Value, Error> {
            Ok(store
                .blob(b)?
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or(Value::Null))
        };
        self.end = event.at;
        self.end_event = Some(*id);
        let at = event.at;
        let mut done = Vec::new();
        match &event.kind {
            EventKind::RunStarted { spec, input, .. } => {
                self.started(id, event, &blob(spec)?, &blob(input)?);
            }
            EventKind::ModelRequested { request, attempt } => {
                self.model_requested(id, event, &blob(request)?, *attempt);
            }
            EventKind::ModelResponded {
                request_seq,
                response,
                usage,
            }
            | EventKind::ContextCompacted {
                request_seq: Some(request_seq),
                response: Some(response),
                usage,
                ..
            } => {
                if let Some(open) = self.models.remove(request_seq) {
                    self.input_tokens += usage.input_tokens;
                    self.output_tokens += usage.output_tokens;
                    let extra = reply_attributes(&open, &blob(response)?, usage, self.options);
                    done.push(self.span(open, at, *id, Status::Ok, extra));
                }
            }
            EventKind::ModelFailed {
                request_seq,
                error,
                transient,
            } => {
                if let Some(open) = self.models.remove(request_seq) {
                    let error = blob(error)?;
                    let message = error["error"]
                        .as_str()
                        .or_else(|| error["message"].as_str())
                        .map_or_else(|| error.to_string(), str::to_owned);
                    let kind = if *transient { "transient" } else { "permanent" };
                    let extra = vec![KeyValue::new("error.type", kind)];
                    done.push(self.span(open, at, *id, Status::error(message), extra));
                }
            }
            EventKind::ToolRequested {
                call_id,
                tool,
                args,
                ..
            } => self.tool_requested(id, event, call_id, tool, &blob(args)?),
            EventKind::ToolReturned {
                call_id,
                output,
                is_error,
                duration_ms,
            } => {
                if let Some(open) = self.tools.remove(call_id) {
                    let (status, extra) =
                        result_attributes(&blob(output)?, *is_error, *duration_ms, self.options);
                    done.push(self.span(open, at, *id, status, extra));
                }
            }
            EventKind::ToolOutcomeUnknown { call_id, .. } => {
                if let Some(open) = self.tools.remove(call_id) {
                    let status =
                        Status::error("outcome unknown: the process stopped while the tool ran");
                    let extra = vec![KeyValue::new("error.type", "outcome_unknown")];
                    done.push(self.span(open, at, *id, status, extra));
                }
            }
            EventKind::RunFinished { outcome, detail } => {
                self.finishing(*outcome, &blob(detail)?);
                // calls the finish left open end with it
                done.extend(self.close_calls());
                done.extend(self.root_span(at, *id));
                self.finished = true;
            }
            EventKind::SignalReceived { name, payload } if name == "user_message" => {
                let mut attributes = vec![KeyValue::new("retrace.signal", name.clone())];
                if self.options.content {
                    attributes.push(KeyValue::new("retrace.message", text(&blob(payload)?)));
                }
                attributes.push(KeyValue::new("retrace.seq", to_i64(event.seq)));
                self.root_events
                    .push(span_event("retrace.signal", at, attributes));
            }
            other => {
                if let Some((name, mut attributes)) = root_event(other) {
                    attributes.push(KeyValue::new("retrace.seq", to_i64(event.seq)));
                    self.root_events.push(span_event(name, at, attributes));
                }
            }
        }
        Ok(done)
    }

    fn started(&mut self, id: &EventId, event: &Event, spec: &Value, input: &Value) {
        let name = spec["name"].as_str().unwrap_or("agent").to_owned();
        let model = spec["model"]["name"].as_str().unwrap_or("").to_owned();
        spec["model"]["provider"]
            .as_str()
            .unwrap_or("")
            .clone_into(&mut self.provider);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", name.clone()),
            KeyValue::new("gen_ai.provider.name", self.provider.clone()),
            KeyValue::new("gen_ai.request.model", model),
            KeyValue::new("gen_ai.conversation.id", self.run.to_hex()),
        ];
        if let Some(format) = spec["imported"]["format"].as_str() {
            attributes.push(KeyValue::new("retrace.imported.format", format.to_owned()));
        }
        if self.options.content {
            attributes.push(KeyValue::new(
                "gen_ai.input.messages",
                json!([{"role": "user", "parts": [{"type": "text", "content": text(input)}]}])
                    .to_string(),
            ));
            if let Some(system) = spec["system"].as_str().filter(|s| !s.is_empty()) {
                attributes.push(KeyValue::new(
                    "gen_ai.system_instructions",
                    json!([{"type": "text", "content": system}]).to_string(),
                ));
            }
        }
        self.root_id = span_id(id);
        self.root = Some(Open {
            span_id: self.root_id,
            start: event.at,
            seq: event.seq,
            event: *id,
            name: format!("invoke_agent {name}"),
            kind: SpanKind::Internal,
            attributes,
        });
    }

    fn model_requested(&mut self, id: &EventId, event: &Event, record: &Value, attempt: u32) {
        let model = record["model"].as_str().unwrap_or("").to_owned();
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", self.provider.clone()),
            KeyValue::new("gen_ai.request.model", model.clone()),
            KeyValue::new("retrace.attempt", i64::from(attempt)),
        ];
        if record.get("compacts").is_some() {
            attributes.push(KeyValue::new("retrace.compaction", true));
        }
        self.models.insert(
            event.seq,
            Open {
                span_id: span_id(id),
                start: event.at,
                seq: event.seq,
                event: *id,
                name: format!("chat {model}"),
                kind: SpanKind::Client,
                attributes,
            },
        );
    }

    fn tool_requested(
        &mut self,
        id: &EventId,
        event: &Event,
        call_id: &str,
        tool: &str,
        args: &Value,
    ) {
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", tool.to_owned()),
            KeyValue::new("gen_ai.tool.call.id", call_id.to_owned()),
            KeyValue::new("gen_ai.tool.type", "function"),
        ];
        if self.options.content {
            attributes.push(KeyValue::new(
                "gen_ai.tool.call.arguments",
                args.to_string(),
            ));
        }
        self.tools.insert(
            call_id.to_owned(),
            Open {
                span_id: span_id(id),
                start: event.at,
                seq: event.seq,
                event: *id,
                name: format!("execute_tool {tool}"),
                kind: SpanKind::Internal,
                attributes,
            },
        );
    }

    /// The run finished: the root's status and outcome.
    fn finishing(&mut self, outcome: Outcome, detail: &Value) {
        self.root_status = match outcome {
            Outcome::Succeeded => Status::Ok,
            Outcome::Failed | Outcome::Cancelled => Status::error(
                detail["reason"]
                    .as_str()
                    .map_or_else(|| detail.to_string(), str::to_owned),
            ),
        };
        let content = self.options.content;
        if let Some(root) = &mut self.root {
            root.attributes.push(KeyValue::new(
                "retrace.outcome",
                match outcome {
                    Outcome::Succeeded => "succeeded",
                    Outcome::Failed => "failed",
                    Outcome::Cancelled => "cancelled",
                },
            ));
            if content && let Some(output) = detail["output"].as_str() {
                root.attributes
                    .push(KeyValue::new("retrace.output", output.to_owned()));
            }
        }
    }

    /// Calls still open, ended at the newest event and marked `retrace.open`.
    fn close_calls(&mut self) -> Vec<SpanData> {
        let Some(by) = self.end_event else {
            return Vec::new();
        };
        let at = self.end;
        let open: Vec<Open> = std::mem::take(&mut self.models)
            .into_values()
            .chain(std::mem::take(&mut self.tools).into_values())
            .collect();
        open.into_iter()
            .map(|o| {
                self.span(
                    o,
                    at,
                    by,
                    Status::Unset,
                    vec![KeyValue::new("retrace.open", true)],
                )
            })
            .collect()
    }

    /// What is still open (a run that has not finished): its calls and the root, ended at
    /// the newest event.
    pub fn close(mut self) -> Vec<SpanData> {
        if self.finished {
            return Vec::new();
        }
        let mut spans = self.close_calls();
        if let Some(by) = self.end_event {
            if let Some(root) = &mut self.root {
                root.attributes.push(KeyValue::new("retrace.open", true));
            }
            spans.extend(self.root_span(self.end, by));
        }
        spans
    }
}

/// An event that is an event of the root span (approvals, signals, compactions, fork
/// markers): its name and attributes.
fn root_event(kind: &EventKind) -> Option<(&'static str, Vec<KeyValue>)> {
    Some(match kind {
        EventKind::ContextCompacted { evicted, .. } => (
            "retrace.context.compacted",
            vec![KeyValue::new("retrace.evicted", to_i64(*evicted))],
        ),
        EventKind::ApprovalRequested { call_id, .. } => (
            "retrace.approval.requested",
            vec![KeyValue::new("gen_ai.tool.call.id", call_id.clone())],
        ),
        EventKind::ApprovalDecided {
            call_id,
            decision,
            by,
            ..
        } => (
            "retrace.approval.decided",
            vec![
                KeyValue::new("gen_ai.tool.call.id", call_id.clone()),
                KeyValue::new(
                    "retrace.decision",
                    if *decision == Decision::Approved {
                        "approved"
                    } else {
                        "denied"
                    },
                ),
                KeyValue::new("retrace.decided_by", by.clone()),
            ],
        ),
        EventKind::SignalReceived { name, .. } => (
            "retrace.signal",
            vec![KeyValue::new("retrace.signal", name.clone())],
        ),
        EventKind::Forked {
            from_run, from_seq, ..
        } => (
            "retrace.forked",
            vec![
                KeyValue::new("retrace.forked.from_run", from_run.to_hex()),
                KeyValue::new("retrace.forked.from_seq", to_i64(*from_seq)),
            ],
        ),
        _ => return None,
    })
}

/// A tool result's status and attributes on its `execute_tool` span.
fn result_attributes(
    value: &Value,
    is_error: bool,
    duration_ms: u64,
    options: Options,
) -> (Status, Vec<KeyValue>) {
    let output = text(value);
    let mut extra = vec![KeyValue::new("retrace.duration_ms", to_i64(duration_ms))];
    if options.content {
        extra.push(KeyValue::new("gen_ai.tool.call.result", output.clone()));
        // a structured result (retrace's own tools) is sent as JSON text
        if !value.is_string() {
            extra.push(KeyValue::new("retrace.result.json", true));
        }
    }
    let status = if is_error {
        extra.push(KeyValue::new("error.type", "tool_error"));
        Status::error(first_line(&output))
    } else {
        Status::Ok
    };
    (status, extra)
}

/// A reply's attributes on its `chat` span.
#[allow(clippy::cast_precision_loss)] // millionths of a dollar: far below 2^52
fn reply_attributes(
    open: &Open,
    reply: &Value,
    usage: &retrace_events::Usage,
    options: Options,
) -> Vec<KeyValue> {
    let mut extra = vec![
        KeyValue::new("gen_ai.response.model", model_of(open)),
        KeyValue::new("gen_ai.usage.input_tokens", to_i64(usage.input_tokens)),
        KeyValue::new("gen_ai.usage.output_tokens", to_i64(usage.output_tokens)),
        KeyValue::new("retrace.cost_usd", usage.cost_micro_usd as f64 / 1e6),
        KeyValue::new("retrace.latency_ms", to_i64(usage.latency_ms)),
    ];
    for (key, pointer) in [
        (
            "gen_ai.usage.cache_read.input_tokens",
            "/usage/cache_read_tokens",
        ),
        (
            "gen_ai.usage.cache_creation.input_tokens",
            "/usage/cache_write_tokens",
        ),
        ("retrace.usage.reasoning_tokens", "/usage/reasoning_tokens"),
    ] {
        if let Some(n) = reply.pointer(pointer).and_then(Value::as_u64) {
            extra.push(KeyValue::new(key, to_i64(n)));
        }
    }
    if let Some(stop) = reply["stop_reason"].as_str() {
        extra.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            OtelValue::Array(vec![opentelemetry::StringValue::from(stop.to_owned())].into()),
        ));
    }
    if options.content {
        extra.push(KeyValue::new(
            "gen_ai.output.messages",
            output_messages(reply).to_string(),
        ));
    }
    extra
}

/// The span id of the span an event starts: the event id's first 8 bytes.
fn span_id(event: &EventId) -> SpanId {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&event.as_bytes()[..8]);
    SpanId::from_bytes(bytes)
}

fn ids(run: &RunId, seq: u64, event: &EventId) -> [KeyValue; 3] {
    [
        KeyValue::new("retrace.run.id", run.to_hex()),
        KeyValue::new("retrace.event.id", event.to_hex()),
        KeyValue::new("retrace.seq", to_i64(seq)),
    ]
}

fn span_event(
    name: &'static str,
    at: Timestamp,
    attributes: Vec<KeyValue>,
) -> opentelemetry::trace::Event {
    opentelemetry::trace::Event::new(name, time(at), attributes, 0)
}

fn time(at: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(at.0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn model_of(open: &Open) -> String {
    open.name.strip_prefix("chat ").unwrap_or("").to_owned()
}

/// A JSON value as text: a string as it is, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    line.chars().take(200).collect()
}

/// A recorded reply as the conventions' `gen_ai.output.messages`: one assistant message
/// with its text, reasoning and tool-call parts.
fn output_messages(reply: &Value) -> Value {
    let mut parts = Vec::new();
    for r in reply["reasoning"].as_array().into_iter().flatten() {
        if let Some(t) = r["text"].as_str().filter(|t| !t.is_empty()) {
            parts.push(json!({"type": "reasoning", "content": t}));
        }
    }
    if let Some(t) = reply["text"].as_str().filter(|t| !t.is_empty()) {
        parts.push(json!({"type": "text", "content": t}));
    }
    for call in reply["tool_calls"].as_array().into_iter().flatten() {
        parts.push(json!({
            "type": "tool_call",
            "id": call["id"],
            "name": call["name"],
            "arguments": call["arguments"],
        }));
    }
    let mut message = json!({"role": "assistant", "parts": parts});
    if let Some(stop) = reply["stop_reason"].as_str() {
        message["finish_reason"] = json!(stop);
    }
    json!([message])
}

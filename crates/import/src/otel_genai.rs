//! OpenTelemetry GenAI spans, following the GenAI semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/>), in two containers:
//!
//! - any-agent's `AgentTrace` JSON: `{spans: [...], final_output}`, each span `{name,
//!   context{trace_id, span_id}, parent, start_time, end_time (ns), status{status_code,
//!   description}, attributes}`;
//! - OTLP JSON (`{resourceSpans: [{scopeSpans: [{spans: [...]}]}]}`, the body of an
//!   OTLP/HTTP JSON export and what `retrace export-otel` writes), read into the same shape.
//!
//! - `gen_ai.operation.name` says what a span is: `invoke_agent` (the run: agent name),
//!   `call_llm` or `chat` (a model call), `execute_tool` (a tool call).
//! - A model call's reply is `gen_ai.output.messages` (the conventions' parts: `text`,
//!   `reasoning`, `tool_call{id, name, arguments}`) or any-agent's `gen_ai.output`: with
//!   `gen_ai.output.type = json` and a list of `{"tool.name", "tool.args"}` it proposes those
//!   calls, otherwise it is the reply's text. The task and system prompt come from the
//!   first `gen_ai.input.messages` (on the agent span or the first call) and
//!   `gen_ai.system_instructions`.
//! - A tool span's arguments and result: `gen_ai.tool.call.arguments` and
//!   `gen_ai.tool.call.result`, or any-agent's `gen_ai.tool.args` and `gen_ai.output`.
//! - retrace's own span events on the agent span (`retrace.signal` with a user's message,
//!   `retrace.approval.decided` denying a call) become user messages and rejections.
//! - Proposed calls are paired, by name and in order, with the `execute_tool` spans that
//!   follow before the next model call; a call takes the span's `gen_ai.tool.call.id`, or
//!   `span-<span_id>`.
//! - Usage: `gen_ai.usage.input_tokens`/`output_tokens`; cost: any-agent's
//!   `gen_ai.usage.input_cost`/`output_cost` (US dollars). Numbers may be strings.
//! - A span whose `status.status_code` is `error` is a failed call (its `description` the
//!   message). Attributes an event does not hold stay in the extra.

use retrace_events::Outcome;
use retrace_events::chat::ToolDef;
use retrace_events::reply::{ModelReply, TokenUsage, ToolCall};
use serde_json::{Value, json};

use crate::jsonl::str_at;
use crate::transcript::{Entry, ModelCall, Report, Step, ToolResult, Transcript};
use crate::{Format, ImportError, Source, micro, number, raw_number, usd};

/// Attributes the events carry (the rest go to the extra).
const CARRIED: [&str; 17] = [
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.input.messages",
    "gen_ai.output",
    "gen_ai.output.type",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.input_cost",
    "gen_ai.usage.output_cost",
    "gen_ai.tool.name",
    "gen_ai.tool.args",
    "gen_ai.tool.call.id",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.response.model",
    "gen_ai.system_instructions",
];

/// Read an any-agent trace.
///
/// # Errors
/// Not JSON, or no `spans` list.
pub fn parse(source: &Source) -> Result<Transcript, ImportError> {
    let not = |why: String| ImportError::NotFormat {
        file: source.name.clone(),
        format: Format::OtelGenai,
        why,
    };
    let doc: Value = serde_json::from_slice(&source.bytes).map_err(|e| {
        not(format!(
            "not JSON ({e}); expected {{\"spans\": [...]}} as any-agent writes"
        ))
    })?;
    let otlp = doc.get("resourceSpans").map(from_otlp);
    let spans = match &otlp {
        Some(spans) => spans,
        None => doc.get("spans").and_then(Value::as_array).ok_or_else(|| {
            not("no `spans` list (any-agent) or `resourceSpans` (OTLP) at the top".into())
        })?,
    };
    one_trace(spans).map_err(not)?;
    let mut report = Report {
        bytes: source.bytes.len() as u64,
        lines: spans.len() as u64,
        ..Report::default()
    };
    let spans = ordered(spans);
    let mut t = Transcript::new(Format::OtelGenai, Report::default());
    t.started_at = spans.first().map(|s| ms(s, "start_time"));
    // calls a user refused (retrace's own approval events)
    let mut rejected: Vec<String> = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        let attrs = span.get("attributes").cloned().unwrap_or_else(|| json!({}));
        let op = str_at(&attrs, "/gen_ai.operation.name");
        let status = str_at(span, "/status/status_code");
        match op {
            "invoke_agent" => agent_span(span, &attrs, status, &mut t, &mut rejected),
            "call_llm" | "chat" | "text_completion" | "generate_content" => {
                if t.task.is_empty() {
                    inputs(&attrs, &mut t);
                }
                let model = str_at(&attrs, "/gen_ai.request.model").to_owned();
                if t.model.is_empty() {
                    t.model.clone_from(&model);
                }
                let step = if status == "error" {
                    Step::ModelError {
                        requested_at: Some(ms(span, "start_time")),
                        at: Some(ms(span, "end_time")),
                        model,
                        message: str_at(span, "/status/description").to_owned(),
                    }
                } else {
                    Step::Model(model_call(span, &attrs, &spans[i + 1..], model))
                };
                t.entries.push(Entry {
                    step,
                    extra: vec![rest(span)],
                    seq: seq_of(&attrs),
                });
            }
            "execute_tool" => tool_span(span, &attrs, status, &mut t, &mut report, &rejected),
            other => {
                report.keep(&format!("span {other:?}"));
                t.keep_after(None, (*span).clone());
            }
        }
    }
    // user messages (retrace's signal events) in their place: by the log's order when every
    // entry has it (a retrace export), else in time
    if t.entries.iter().all(|e| e.seq.is_some()) {
        t.entries.sort_by_key(|e| e.seq);
    } else {
        sort_by_time(&mut t.entries);
    }
    match doc.get("final_output") {
        Some(Value::Null) | None => {}
        Some(out) if t.finish.outcome == Outcome::Succeeded => t.finish.text = text_of(Some(out)),
        Some(_) => {}
    }
    if t.name.is_empty() {
        t.name.clone_from(&source.name);
    }
    t.report = report;
    Ok(t)
}

/// The agent span: the run's name, task, model, outcome, and retrace's own events.
fn agent_span(
    span: &Value,
    attrs: &Value,
    status: &str,
    t: &mut Transcript,
    rejected: &mut Vec<String>,
) {
    str_at(attrs, "/gen_ai.agent.name").clone_into(&mut t.name);
    if t.task.is_empty() {
        inputs(attrs, t);
    }
    if let Some(output) = attrs.get("retrace.output").and_then(Value::as_str) {
        output.clone_into(&mut t.finish.text);
    }
    agent_events(span, t, rejected);
    if t.model.is_empty() {
        str_at(attrs, "/gen_ai.request.model").clone_into(&mut t.model);
    }
    if status == "error" {
        t.finish.outcome = match str_at(attrs, "/retrace.outcome") {
            "cancelled" => Outcome::Cancelled,
            _ => Outcome::Failed,
        };
        str_at(span, "/status/description").clone_into(&mut t.finish.text);
    }
    t.finish.at = Some(ms(span, "end_time"));
    t.session.push((*span).clone());
}

/// A tool span: the result of a call a model call proposed (else kept as an extra).
fn tool_span(
    span: &Value,
    attrs: &Value,
    status: &str,
    t: &mut Transcript,
    report: &mut Report,
    rejected: &[String],
) {
    let call_id = call_id(span, attrs);
    let proposed = t.entries.iter().any(
        |e| matches!(&e.step, Step::Model(c) if c.reply.tool_calls.iter().any(|k| k.id == call_id)),
    );
    let name = str_at(attrs, "/gen_ai.tool.name");
    if !t.tools.iter().any(|d| d.name == name) {
        t.tools.push(ToolDef {
            name: name.to_owned(),
            description: str_at(attrs, "/gen_ai.tool.description").to_owned(),
            parameters: json!({"type": "object"}),
        });
    }
    if !proposed {
        report.orphan_results += 1;
        report.keep("execute_tool span no model call proposed");
        t.keep_after(None, (*span).clone());
        return;
    }
    let output = attrs
        .get("gen_ai.tool.call.result")
        .or_else(|| attrs.get("gen_ai.output"));
    t.entries.push(Entry {
        step: Step::Result(ToolResult {
            rejected: rejected.contains(&call_id),
            call_id,
            started_at: Some(ms(span, "start_time")),
            at: Some(ms(span, "end_time")),
            value: (attrs.get("retrace.result.json") == Some(&Value::Bool(true)))
                .then(|| output.and_then(Value::as_str))
                .flatten()
                .and_then(|s| serde_json::from_str(s).ok()),
            output: text_of(output),
            is_error: status == "error",
            duration_ms: attrs.get("retrace.duration_ms").map(|v| number(Some(v))),
        }),
        extra: vec![rest(span)],
        seq: seq_of(attrs),
    });
}

/// `spans` in the log's order when every span says it (a retrace export's `retrace.seq`),
/// else in time.
fn ordered(spans: &[Value]) -> Vec<&Value> {
    let mut spans: Vec<&Value> = spans.iter().collect();
    // in the log's order when every span says it (a retrace export), else in time
    let seqs: Option<Vec<u64>> = spans
        .iter()
        .map(|s| s.get("attributes").and_then(seq_of))
        .collect();
    match seqs {
        Some(_) => spans.sort_by_key(|s| s.get("attributes").and_then(seq_of)),
        None => spans.sort_by_key(|s| {
            (
                raw_number(s.get("start_time")),
                raw_number(s.get("end_time")),
            )
        }),
    }
    spans
}

/// Entries ordered by when they began (stable: ties keep the order of the spans).
fn sort_by_time(entries: &mut [Entry]) {
    entries.sort_by_key(|e| match &e.step {
        Step::Model(c) => c.requested_at,
        Step::ModelError { requested_at, .. } => *requested_at,
        Step::Result(r) => r.started_at,
        Step::User { at, .. } | Step::Compaction { at, .. } => *at,
    });
}

/// A span's or span event's `retrace.seq` (a retrace export's log position).
fn seq_of(attrs: &Value) -> Option<u64> {
    attrs.get("retrace.seq").map(|v| raw_number(Some(v)))
}

/// `Ok` when `spans` are of one trace (a run is one trace).
fn one_trace(spans: &[Value]) -> Result<(), String> {
    let traces: std::collections::BTreeSet<String> = spans
        .iter()
        .filter_map(|s| s.pointer("/context/trace_id"))
        .map(Value::to_string)
        .collect();
    if traces.len() > 1 {
        return Err(format!(
            "it holds {} traces, and a run is one trace: export or split them one trace per file",
            traces.len()
        ));
    }
    Ok(())
}

/// The task and system prompt from a model call's `gen_ai.input.messages`.
fn inputs(attrs: &Value, t: &mut Transcript) {
    let messages: Value = attrs
        .get("gen_ai.input.messages")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    if t.system.is_empty()
        && let Some(parts) = attrs
            .get("gen_ai.system_instructions")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    {
        t.system = parts_text(&parts);
    }
    for m in messages.as_array().into_iter().flatten() {
        let text = match m.get("parts") {
            Some(parts) => parts_text(parts),
            None => text_of(m.get("content")),
        };
        match str_at(m, "/role") {
            "system" if t.system.is_empty() => t.system = text,
            "user" if t.task.is_empty() => t.task = text,
            _ => {}
        }
    }
}

/// A model span's reply, its calls paired with the tool spans in `after`.
fn model_call(span: &Value, attrs: &Value, after: &[&Value], model: String) -> ModelCall {
    let output = attrs.get("gen_ai.output");
    let listed: Option<Vec<Value>> = (str_at(attrs, "/gen_ai.output.type") == "json")
        .then(|| output.and_then(Value::as_str))
        .flatten()
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .filter(|calls| !calls.is_empty() && calls.iter().all(|c| c.get("tool.name").is_some()));
    let mut reply = ModelReply::default();
    let messages: Option<Value> = attrs
        .get("gen_ai.output.messages")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok());
    if let Some(messages) = messages {
        output_messages(&messages, &mut reply);
    } else {
        any_agent_output(&mut reply, listed, after, span, output);
    }
    reply.usage = TokenUsage {
        input_tokens: number(attrs.get("gen_ai.usage.input_tokens")),
        output_tokens: number(attrs.get("gen_ai.usage.output_tokens")),
        reasoning_tokens: number(attrs.get("retrace.usage.reasoning_tokens")),
        cache_read_tokens: number(attrs.get("gen_ai.usage.cache_read.input_tokens")),
        cache_write_tokens: number(attrs.get("gen_ai.usage.cache_creation.input_tokens")),
    };
    let cost = match attrs.get("retrace.cost_usd") {
        Some(cost) => micro(usd(Some(cost))),
        None => micro(
            usd(attrs.get("gen_ai.usage.input_cost")) + usd(attrs.get("gen_ai.usage.output_cost")),
        ),
    };
    ModelCall {
        requested_at: Some(ms(span, "start_time")),
        responded_at: Some(ms(span, "end_time")),
        model,
        reply,
        cost_micro_usd: cost,
        latency_ms: attrs.get("retrace.latency_ms").map(|v| number(Some(v))),
    }
}

/// any-agent's `gen_ai.output`: the calls `listed` (paired with the tool spans in `after`),
/// or the reply's text.
fn any_agent_output(
    reply: &mut ModelReply,
    listed: Option<Vec<Value>>,
    after: &[&Value],
    span: &Value,
    output: Option<&Value>,
) {
    match listed {
        Some(calls) => {
            // the tool spans up to the next model call, to pair with by name
            let mut tools: Vec<&Value> = after
                .iter()
                .take_while(|s| str_at(s, "/attributes/gen_ai.operation.name") == "execute_tool")
                .copied()
                .collect();
            for (n, c) in calls.iter().enumerate() {
                let name = str_at(c, "/tool.name").to_owned();
                let id = match tools
                    .iter()
                    .position(|s| str_at(s, "/attributes/gen_ai.tool.name") == name)
                {
                    Some(k) => {
                        let span = tools.remove(k);
                        call_id(span, &span["attributes"])
                    }
                    None => format!("span-{}-{n}", span_id(span)),
                };
                let arguments = match c.get("tool.args") {
                    Some(Value::String(s)) => {
                        serde_json::from_str(s).unwrap_or_else(|_| json!({ "raw": s }))
                    }
                    Some(v) => v.clone(),
                    None => json!({}),
                };
                reply.tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
        }
        None => reply.text = text_of(output),
    }
}

/// The conventions' `gen_ai.output.messages`: the assistant message's parts.
fn output_messages(messages: &Value, reply: &mut ModelReply) {
    let mut texts = Vec::new();
    for m in messages.as_array().into_iter().flatten() {
        if let Some(reason) = m.get("finish_reason").and_then(Value::as_str) {
            reply.stop_reason = Some(reason.to_owned());
        }
        for part in m
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match str_at(part, "/type") {
                "text" => texts.push(text_of(part.get("content"))),
                "reasoning" => reply.reasoning.push(retrace_events::reply::Reasoning {
                    text: text_of(part.get("content")),
                    ..Default::default()
                }),
                "tool_call" => reply.tool_calls.push(ToolCall {
                    id: str_at(part, "/id").to_owned(),
                    name: str_at(part, "/name").to_owned(),
                    arguments: match part.get("arguments") {
                        Some(Value::String(s)) => {
                            serde_json::from_str(s).unwrap_or_else(|_| json!({ "raw": s }))
                        }
                        Some(v) => v.clone(),
                        None => json!({}),
                    },
                }),
                _ => {}
            }
        }
    }
    reply.text = texts.join("\n\n");
}

/// The text parts of a conventions message (`[{type: "text", content}]`), joined.
fn parts_text(parts: &Value) -> String {
    parts
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| matches!(str_at(p, "/type"), "text" | ""))
        .map(|p| text_of(p.get("content")))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// retrace's span events on the agent span: user messages, refused calls.
fn agent_events(span: &Value, t: &mut Transcript, rejected: &mut Vec<String>) {
    for event in span
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let attrs = event.get("attributes").cloned().unwrap_or_default();
        match str_at(event, "/name") {
            "retrace.signal" if str_at(&attrs, "/retrace.signal") == "user_message" => {
                let mut entry = Entry::new(Step::User {
                    at: crate::plausible_ms(raw_number(event.get("timestamp")) / 1_000_000),
                    text: str_at(&attrs, "/retrace.message").to_owned(),
                });
                entry.seq = seq_of(&attrs);
                t.entries.push(entry);
            }
            "retrace.approval.decided" if str_at(&attrs, "/retrace.decision") == "denied" => {
                rejected.push(str_at(&attrs, "/gen_ai.tool.call.id").to_owned());
            }
            _ => {}
        }
    }
}

/// OTLP JSON's spans in any-agent's shape: attributes as a map, times as numbers, the
/// status as `ok`/`error`/`unset`.
fn from_otlp(resource_spans: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for rs in resource_spans.as_array().into_iter().flatten() {
        let scopes = rs
            .get("scopeSpans")
            .or_else(|| rs.get("instrumentationLibrarySpans"));
        for scope in scopes.and_then(Value::as_array).into_iter().flatten() {
            for span in scope
                .get("spans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let parent = str_at(span, "/parentSpanId");
                let code = match span.pointer("/status/code") {
                    Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                    Some(Value::String(s)) if s.ends_with("OK") => 1,
                    Some(Value::String(s)) if s.ends_with("ERROR") => 2,
                    _ => 0,
                };
                let events: Vec<Value> = span
                    .get("events")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        json!({
                            "name": e.get("name"),
                            "timestamp": raw_number(e.get("timeUnixNano")),
                            "attributes": otlp_attributes(e.get("attributes")),
                        })
                    })
                    .collect();
                let status = match code {
                    1 => "ok",
                    2 => "error",
                    _ => "unset",
                };
                out.push(json!({
                    "name": span.get("name"),
                    "context": {"trace_id": span.get("traceId"), "span_id": span.get("spanId")},
                    "parent": if parent.is_empty() { Value::Null } else { json!({"span_id": parent}) },
                    "start_time": raw_number(span.get("startTimeUnixNano")),
                    "end_time": raw_number(span.get("endTimeUnixNano")),
                    "status": {
                        "status_code": status,
                        "description": span.pointer("/status/message"),
                    },
                    "attributes": otlp_attributes(span.get("attributes")),
                    "events": events,
                }));
            }
        }
    }
    out
}

/// OTLP `[{key, value: {stringValue | intValue | doubleValue | boolValue | arrayValue}}]`
/// as a JSON object.
fn otlp_attributes(list: Option<&Value>) -> Value {
    let mut map = serde_json::Map::new();
    for kv in list.and_then(Value::as_array).into_iter().flatten() {
        map.insert(str_at(kv, "/key").to_owned(), any_value(kv.get("value")));
    }
    Value::Object(map)
}

fn any_value(value: Option<&Value>) -> Value {
    let Some(Value::Object(v)) = value else {
        return Value::Null;
    };
    if let Some(s) = v.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = v.get("intValue") {
        return json!(raw_number(Some(i)));
    }
    if let Some(d) = v.get("doubleValue") {
        return d.clone();
    }
    if let Some(b) = v.get("boolValue") {
        return b.clone();
    }
    if let Some(a) = v
        .get("arrayValue")
        .and_then(|a| a.get("values"))
        .and_then(Value::as_array)
    {
        return Value::Array(a.iter().map(|x| any_value(Some(x))).collect());
    }
    Value::Null
}

fn call_id(span: &Value, attrs: &Value) -> String {
    match str_at(attrs, "/gen_ai.tool.call.id") {
        "" => format!("span-{}", span_id(span)),
        id => id.to_owned(),
    }
}

fn span_id(span: &Value) -> String {
    match span.pointer("/context/span_id") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// A span time (ns) in ms (0 when implausible, see [`crate::LATEST_MS`]).
fn ms(span: &Value, key: &str) -> u64 {
    crate::plausible_ms(raw_number(span.get(key)) / 1_000_000).unwrap_or(0)
}

/// Text of a value: a string as it is, anything else as JSON.
fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// The span without the attributes the events carry.
fn rest(span: &Value) -> Value {
    let mut span = span.clone();
    if let Some(attrs) = span.get_mut("attributes").and_then(Value::as_object_mut) {
        for key in CARRIED {
            attrs.remove(key);
        }
    }
    span
}

//! Codex CLI rollouts (JSONL, CLI 0.40–0.12x): every line `{timestamp, type, payload}`
//! with `type` `session_meta`, `turn_context`, `response_item`, `event_msg` (`compacted`
//! in some versions).
//!
//! - `response_item`s are what went to and from the model: a model call is a run of
//!   `reasoning`, assistant `message`, `function_call`, `custom_tool_call` and
//!   `web_search_call` items, ended by the next input item (`function_call_output`,
//!   `custom_tool_call_output`, a user or developer `message`).
//! - `function_call.arguments` is a JSON string (kept as `{"raw": …}` when it is not
//!   JSON); a `custom_tool_call`'s raw `input` becomes `{"input": …}`. A web search runs on
//!   the server: its call gets the id `web_search_N` and a result naming the query.
//! - Usage comes from `event_msg`/`token_count` after each call (`last_token_usage`;
//!   `input_tokens` includes `cached_input_tokens`, as in OpenAI's usage); a repeated
//!   count (same cumulative `total_token_usage`) is not counted twice.
//! - A result is an error when its output says `Process exited with code N` (N ≠ 0), or
//!   the matching `exec_command_end` has a non-zero `exit_code`, or `patch_apply_end` has
//!   `success: false`; those events go to the result's extra.
//! - `event_msg`s that repeat response items (`user_message`, `agent_message`,
//!   `agent_reasoning`) and turn markers are kept as extras. `session_meta` gives the
//!   system prompt (`base_instructions.text`, or `instructions`); developer messages and
//!   the context Codex injects as user messages (AGENTS.md, `<environment_context>`)
//!   before the typed task join it.

use std::collections::HashMap;

use retrace_events::reply::{ModelReply, Reasoning, TokenUsage, ToolCall};
use serde_json::{Value, json};

use crate::jsonl::{objects, str_at};
use crate::transcript::{Entry, ModelCall, Report, Step, ToolResult, Transcript};
use crate::{Format, ImportError, Source, number, rfc3339_ms};

/// Read a rollout.
///
/// # Errors
/// A broken line, or lines that are not `{timestamp, type, payload}` rollout lines.
pub fn parse(source: &Source) -> Result<Transcript, ImportError> {
    let mut report = Report::default();
    let lines = objects(source, Format::Codex, &mut report)?;
    if !lines
        .iter()
        .any(|(_, l)| str_at(l, "/type") == "response_item" && l.get("payload").is_some())
    {
        return Err(ImportError::NotFormat {
            file: source.name.clone(),
            format: Format::Codex,
            why: "no line is a `response_item` with a `payload`".into(),
        });
    }
    let mut r = Reader {
        t: Transcript::new(Format::Codex, report),
        open: None,
        model: String::new(),
        last_at: None,
        results: HashMap::new(),
        exec: HashMap::new(),
        last_total: None,
        searches: 0,
        pending_searches: Vec::new(),
    };
    for (_, line) in lines {
        r.line(line);
    }
    r.close();
    // command ends whose call never got an output line: kept all the same
    let stashed: Vec<Value> = std::mem::take(&mut r.exec)
        .into_values()
        .flatten()
        .collect();
    for event in stashed {
        r.t.keep_after(None, event);
    }
    let mut t = r.t;
    if t.name.is_empty() {
        t.name.clone_from(&source.name);
    }
    if t.finish.text.is_empty() {
        t.finish.text = t
            .entries
            .iter()
            .rev()
            .find_map(|e| match &e.step {
                Step::Model(c) if !c.reply.text.is_empty() => Some(c.reply.text.clone()),
                _ => None,
            })
            .unwrap_or_default();
    }
    Ok(t)
}

struct Open {
    call: ModelCall,
    texts: Vec<String>,
    extra: Vec<Value>,
}

struct Reader {
    t: Transcript,
    open: Option<Open>,
    model: String,
    last_at: Option<u64>,
    /// call id → index of its result entry
    results: HashMap<String, usize>,
    /// `exec_command_end`/`patch_apply_end` seen before their result
    exec: HashMap<String, Vec<Value>>,
    last_total: Option<Value>,
    searches: u64,
    /// web searches of the open call, answered when it closes
    pending_searches: Vec<(String, Value)>,
}

impl Reader {
    fn line(&mut self, mut line: Value) {
        let at = rfc3339_ms(str_at(&line, "/timestamp"));
        if self.t.started_at.is_none() {
            self.t.started_at = at;
        }
        let payload = line.get_mut("payload").map(Value::take).unwrap_or_default();
        match str_at(&line, "/type") {
            "session_meta" => {
                str_at(&payload, "/id").clone_into(&mut self.t.name);
                let system = match str_at(&payload, "/base_instructions/text") {
                    "" => str_at(&payload, "/instructions"),
                    text => text,
                };
                system.clone_into(&mut self.t.system);
                self.t.report.keep("session_meta");
                self.t
                    .session
                    .push(json!({"line": line, "payload": payload}));
            }
            "turn_context" => {
                let model = str_at(&payload, "/model");
                if !model.is_empty() {
                    model.clone_into(&mut self.model);
                    if self.t.model.is_empty() {
                        model.clone_into(&mut self.t.model);
                    }
                }
                self.t.report.keep("turn_context");
                self.keep(json!({"line": line, "payload": payload}));
            }
            "response_item" => self.item(payload, at),
            "event_msg" => self.event(&line, payload),
            other => {
                self.t.report.keep(&format!("unknown line type {other:?}"));
                self.keep(json!({"line": line, "payload": payload}));
            }
        }
    }

    fn keep(&mut self, value: Value) {
        self.t
            .keep_after(self.open.as_mut().map(|o| &mut o.extra), value);
    }

    fn open(&mut self, at: Option<u64>) -> &mut Open {
        let model = self.model.clone();
        let requested_at = self.last_at;
        let open = self.open.get_or_insert_with(|| Open {
            call: ModelCall {
                requested_at,
                responded_at: at,
                model,
                reply: ModelReply::default(),
                cost_micro_usd: 0,
                latency_ms: None,
            },
            texts: Vec::new(),
            extra: Vec::new(),
        });
        open.call.responded_at = at.or(open.call.responded_at);
        open
    }

    fn item(&mut self, item: Value, at: Option<u64>) {
        let kind = str_at(&item, "/type").to_owned();
        match kind.as_str() {
            "message" if str_at(&item, "/role") == "assistant" => {
                let text = texts(&item);
                let open = self.open(at);
                open.texts.push(text);
                open.extra.push(without(item, &["content", "type", "role"]));
            }
            "message" => {
                self.close();
                self.last_at = at.or(self.last_at);
                let role = str_at(&item, "/role").to_owned();
                let text = texts(&item);
                let rest = without(item, &["content", "type"]);
                if self.t.task.is_empty() && self.t.entries.is_empty() {
                    if role == "user" && !injected(&text) {
                        self.t.task = text;
                    } else {
                        if !self.t.system.is_empty() {
                            self.t.system.push_str("\n\n");
                        }
                        self.t.system.push_str(&text);
                    }
                    self.t.session.push(rest);
                } else {
                    self.t.entries.push(Entry {
                        step: Step::User { at, text },
                        extra: vec![rest],
                        seq: None,
                    });
                }
            }
            "reasoning" => {
                let summary: Vec<&str> = item
                    .get("summary")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|s| str_at(s, "/text"))
                    .collect();
                let text = summary.join("\n\n");
                let open = self.open(at);
                open.call.reply.reasoning.push(Reasoning {
                    text,
                    signature: None,
                    redacted: None,
                });
                open.extra.push(without(item, &["summary", "type"]));
            }
            "function_call" | "custom_tool_call" => {
                let arguments = if kind == "function_call" {
                    let raw = match item.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    serde_json::from_str::<Value>(&raw)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({ "raw": raw }))
                } else {
                    json!({ "input": str_at(&item, "/input") })
                };
                let call = ToolCall {
                    id: str_at(&item, "/call_id").to_owned(),
                    name: str_at(&item, "/name").to_owned(),
                    arguments,
                };
                let open = self.open(at);
                open.call.reply.tool_calls.push(call);
                open.extra.push(without(
                    item,
                    &["arguments", "input", "call_id", "name", "type"],
                ));
            }
            "web_search_call" => {
                self.searches += 1;
                let id = format!("web_search_{}", self.searches);
                let action = item.get("action").cloned().unwrap_or_else(|| json!({}));
                let call = ToolCall {
                    id: id.clone(),
                    name: "web_search".into(),
                    arguments: action.clone(),
                };
                let open = self.open(at);
                open.call.reply.tool_calls.push(call);
                open.extra.push(without(item, &["action", "type"]));
                self.pending_searches.push((id, action));
            }
            "function_call_output" | "custom_tool_call_output" => self.output(item, at),
            _ => {
                self.t.report.keep(&format!("response_item/{kind}"));
                self.keep(item);
            }
        }
    }

    /// A tool's output item: the call's result.
    fn output(&mut self, item: Value, at: Option<u64>) {
        self.close();
        self.last_at = at.or(self.last_at);
        let call_id = str_at(&item, "/call_id").to_owned();
        let output = match item.get("output") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) if o.get("content").is_some_and(Value::is_string) => {
                str_at(&item, "/output/content").to_owned()
            }
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let is_error = exit_code(&output).is_some_and(|c| c != 0);
        let mut entry = Entry::new(Step::Result(ToolResult {
            call_id: call_id.clone(),
            started_at: None,
            at,
            output,
            is_error,
            rejected: false,
            value: None,
            duration_ms: None,
        }));
        entry
            .extra
            .push(without(item, &["output", "call_id", "type"]));
        for event in self.exec.remove(&call_id).into_iter().flatten() {
            if failed(&event)
                && let Step::Result(r) = &mut entry.step
            {
                r.is_error = true;
            }
            entry.extra.push(event);
        }
        self.results.insert(call_id, self.t.entries.len());
        self.t.entries.push(entry);
    }

    fn event(&mut self, line: &Value, payload: Value) {
        let kind = str_at(&payload, "/type").to_owned();
        match kind.as_str() {
            "token_count" if !payload["info"].is_null() => {
                let total = payload.pointer("/info/total_token_usage").cloned();
                if total.is_some() && total == self.last_total {
                    self.t.report.keep("event_msg/token_count (repeated)");
                    self.keep(payload);
                    return;
                }
                self.last_total = total;
                let last = payload.pointer("/info/last_token_usage");
                let n = |key: &str| number(last.and_then(|l| l.get(key)));
                let usage = TokenUsage {
                    input_tokens: n("input_tokens"),
                    output_tokens: n("output_tokens"),
                    reasoning_tokens: n("reasoning_output_tokens"),
                    cache_read_tokens: n("cached_input_tokens"),
                    cache_write_tokens: 0,
                };
                // the call it counts: the open one, or the newest one not yet counted
                if let Some(open) = &mut self.open {
                    open.call.reply.usage = usage;
                    open.extra.push(payload);
                } else if let Some(entry) = self.t.entries.iter_mut().rev().find(
                    |e| matches!(&e.step, Step::Model(c) if c.reply.usage == TokenUsage::default()),
                ) {
                    if let Step::Model(c) = &mut entry.step {
                        c.reply.usage = usage;
                    }
                    entry.extra.push(payload);
                } else {
                    self.t.report.keep("event_msg/token_count (no call)");
                    self.keep(payload);
                }
            }
            "exec_command_end" | "patch_apply_end" | "web_search_end" => {
                self.t.report.keep(&format!("event_msg/{kind}"));
                let call_id = str_at(&payload, "/call_id").to_owned();
                match self.results.get(&call_id) {
                    // after its result (a command still running when its call returned):
                    // the exit code belongs to a later `write_stdin` result, which says it
                    Some(&i) => self.t.entries[i].extra.push(payload),
                    None if kind == "web_search_end" => self.keep(payload),
                    None => self.exec.entry(call_id).or_default().push(payload),
                }
            }
            "task_complete" => {
                let last = str_at(&payload, "/last_agent_message");
                if !last.is_empty() {
                    last.clone_into(&mut self.t.finish.text);
                }
                self.t.finish.at = rfc3339_ms(str_at(line, "/timestamp"));
                self.t.report.keep("event_msg/task_complete");
                self.keep(payload);
            }
            _ => {
                self.t.report.keep(&format!("event_msg/{kind}"));
                self.keep(payload);
            }
        }
    }

    fn close(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        open.call.reply.text = open
            .texts
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n");
        let at = open.call.responded_at;
        // the next call is asked after what comes back: not after lines in between
        self.last_at = at.or(self.last_at);
        self.t.entries.push(Entry {
            step: Step::Model(open.call),
            extra: open.extra,
            seq: None,
        });
        for (call_id, action) in std::mem::take(&mut self.pending_searches) {
            let query = action
                .get("query")
                .and_then(Value::as_str)
                .map_or_else(|| action.to_string(), str::to_owned);
            self.results.insert(call_id.clone(), self.t.entries.len());
            self.t.entries.push(Entry::new(Step::Result(ToolResult {
                call_id,
                started_at: at,
                at,
                output: format!("searched the web for: {query}"),
                is_error: false,
                rejected: false,
                value: None,
                duration_ms: None,
            })));
        }
    }
}

/// Whether a user message before the task is context Codex adds (AGENTS.md, the
/// environment), not the typed prompt: it joins the system prompt.
fn injected(text: &str) -> bool {
    let start = text.trim_start();
    start.starts_with("# AGENTS.md instructions")
        || start.starts_with("<environment_context>")
        || start.starts_with("<user_instructions>")
        || start.starts_with("<INSTRUCTIONS>")
}

/// The texts of a message item's `content` blocks, joined.
fn texts(item: &Value) -> String {
    item.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `value` without the fields an event carries.
fn without(mut value: Value, keys: &[&str]) -> Value {
    // (an item with nothing left is still kept: it says the item was there)
    if let Some(map) = value.as_object_mut() {
        for key in keys {
            map.remove(*key);
        }
    }
    value
}

/// The exit code an `exec_command` output reports (`Process exited with code N`), or
/// a 0.40 `shell` output's `metadata.exit_code`.
fn exit_code(output: &str) -> Option<i64> {
    if let Some(rest) = output.split("Process exited with code ").nth(1) {
        let digits: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        return digits.parse().ok();
    }
    let value: Value = serde_json::from_str(output).ok()?;
    value.pointer("/metadata/exit_code").and_then(Value::as_i64)
}

/// Whether an `exec_command_end`/`patch_apply_end` says the call failed.
fn failed(event: &Value) -> bool {
    event
        .get("exit_code")
        .and_then(Value::as_i64)
        .is_some_and(|c| c != 0)
        || event.get("success").and_then(Value::as_bool) == Some(false)
}

//! Claude Code session transcripts (JSONL, CLI 2.0–2.1): one JSON object per line, `type`
//! `user`, `assistant`, `system`, `progress`, `summary`, `file-history-snapshot`,
//! `queue-operation`.
//!
//! - One API response is written as several `assistant` lines, one per content block,
//!   sharing `message.id` and repeating `usage`: they are one model call, whose usage is
//!   the last line's. Anthropic's `input_tokens` excludes cached prompt tokens, so the call's
//!   input is `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`
//!   (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>).
//! - A `user` line holding `tool_result` blocks answers the `tool_use` blocks of the
//!   reply (`tool_use_id`); `is_error` marks failures, and a `toolUseResult` of
//!   `"User rejected tool use"` (or a result text starting "The user doesn't want to
//!   proceed") a call the user refused. The structured `toolUseResult` goes to the extra.
//! - The first typed prompt is the task; later ones are user messages (slash commands and
//!   their output, which the CLI writes as user lines, are kept as extras). A session whose
//!   last line says the user interrupted it ends cancelled. A
//!   `system`/`compact_boundary` line and the `isCompactSummary` user line after it are a
//!   compaction.
//! - Lines are taken in file order (which the CLI appends in); `uuid`/`parentUuid` and every
//!   other envelope field stay in the extras.
//! - Sub-agent transcripts (`isSidechain: true`, `agent-*.jsonl`) are counted and left out.

use std::collections::HashMap;

use retrace_events::reply::{ModelReply, Reasoning, TokenUsage, ToolCall};
use serde_json::{Map, Value, json};

use crate::jsonl::{objects, str_at};
use crate::transcript::{Entry, Finish, ModelCall, Report, Step, ToolResult, Transcript};
use crate::{Format, ImportError, Source, rfc3339_ms};

/// What a refused call's result says.
const REJECTED: &str = "User rejected tool use";
const REJECTED_TEXT: &str = "The user doesn't want to proceed";
/// What the CLI writes as a user line when the user stops the model.
const INTERRUPTED: &str = "[Request interrupted by user";

/// Read a session transcript (the first source; sub-agent files are counted, not read).
///
/// # Errors
/// A broken line, or no `user`/`assistant` line at all.
pub fn parse(sources: &[Source]) -> Result<Transcript, ImportError> {
    let mut report = Report::default();
    let main = &sources[0];
    let lines = objects(main, Format::ClaudeCode, &mut report)?;
    if !lines
        .iter()
        .any(|(_, l)| matches!(str_at(l, "/type"), "user" | "assistant"))
    {
        return Err(ImportError::NotFormat {
            file: main.name.clone(),
            format: Format::ClaudeCode,
            why: "no line has `type` user or assistant".into(),
        });
    }
    let session = lines
        .iter()
        .map(|(_, l)| str_at(l, "/sessionId"))
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_owned();
    for extra in &sources[1..] {
        sub_agent_file(extra, &session)?;
        report.bytes += extra.bytes.len() as u64;
        report.skip("sub-agent file (sub-agents are not imported yet)");
    }
    let mut reader = Reader {
        t: Transcript::new(Format::ClaudeCode, report),
        open: None,
        last_at: None,
        models: HashMap::new(),
    };
    for (_, line) in lines {
        reader.line(line);
    }
    reader.close();
    let mut t = reader.t;
    t.model = reader
        .models
        .into_iter()
        .max_by_key(|(name, n)| (*n, name.clone()))
        .map(|(name, _)| name)
        .unwrap_or_default();
    t.finish.text = t
        .entries
        .iter()
        .rev()
        .find_map(|e| match &e.step {
            Step::Model(call) if !call.reply.text.trim().is_empty() => {
                Some(call.reply.text.clone())
            }
            _ => None,
        })
        .unwrap_or_default();
    // a session the user interrupted last ends cancelled
    if let Some(Entry {
        step: Step::User { text, at },
        ..
    }) = t.entries.last()
        && text.starts_with(INTERRUPTED)
    {
        t.finish = Finish {
            outcome: retrace_events::Outcome::Cancelled,
            text: text.clone(),
            at: *at,
        };
    }
    if t.name.is_empty() {
        t.name.clone_from(&main.name);
    }
    Ok(t)
}

/// Check that `file` is a sub-agent transcript of `session`: its lines are side chains
/// (`isSidechain: true`) of the same `sessionId`.
fn sub_agent_file(file: &Source, session: &str) -> Result<(), ImportError> {
    let mut report = Report::default();
    let lines = objects(file, Format::ClaudeCode, &mut report)?;
    let extra = |why: String| ImportError::Extra {
        file: file.name.clone(),
        format: Format::ClaudeCode,
        why,
    };
    let chat = lines
        .iter()
        .filter(|(_, l)| matches!(str_at(l, "/type"), "user" | "assistant"));
    for (n, line) in chat {
        if line.get("isSidechain").and_then(Value::as_bool) != Some(true) {
            return Err(extra(format!(
                "line {n} is not a sub-agent's (no `isSidechain: true`); import each session on its own"
            )));
        }
        let other = str_at(line, "/sessionId");
        if other != session {
            return Err(extra(format!(
                "line {n} belongs to session {other}, not {session}; import each session on its own"
            )));
        }
    }
    Ok(())
}

/// The model call being assembled from its lines.
struct Open {
    id: String,
    call: ModelCall,
    usage: Option<Value>,
    texts: Vec<String>,
    extra: Vec<Value>,
}

struct Reader {
    t: Transcript,
    open: Option<Open>,
    last_at: Option<u64>,
    models: HashMap<String, u64>,
}

impl Reader {
    fn line(&mut self, line: Value) {
        let at = rfc3339_ms(str_at(&line, "/timestamp"));
        if self.t.started_at.is_none() {
            self.t.started_at = at;
        }
        if self.t.name.is_empty() {
            str_at(&line, "/sessionId").clone_into(&mut self.t.name);
        }
        match str_at(&line, "/type") {
            "assistant" => self.assistant(line, at),
            "user" => {
                self.close();
                // a model call is asked after what the user (or a tool) said last
                self.last_at = at.or(self.last_at);
                self.user(line, at);
            }
            "system" if str_at(&line, "/subtype") == "compact_boundary" => {
                self.close();
                let mut entry = Entry::new(Step::Compaction {
                    at,
                    summary: String::new(),
                });
                entry.extra.push(line);
                self.t.entries.push(entry);
            }
            other => {
                let kind = match other {
                    "system" => format!("system/{}", str_at(&line, "/subtype")),
                    "progress" => format!("progress/{}", str_at(&line, "/data/type")),
                    "" => "(no type)".to_owned(),
                    _ => other.to_owned(),
                };
                self.t.report.keep(&kind);
                self.keep(line);
            }
        }
    }

    /// Keep `line` as an extra of the newest entry (or of the session before any).
    fn keep(&mut self, line: Value) {
        self.t
            .keep_after(self.open.as_mut().map(|o| &mut o.extra), line);
    }

    fn assistant(&mut self, mut line: Value, at: Option<u64>) {
        let id = match str_at(&line, "/message/id") {
            "" => str_at(&line, "/uuid").to_owned(),
            id => id.to_owned(),
        };
        if self.open.as_ref().is_some_and(|o| o.id != id) {
            self.close();
        }
        let model = str_at(&line, "/message/model").to_owned();
        let open = self.open.get_or_insert_with(|| Open {
            id,
            call: ModelCall {
                requested_at: self.last_at,
                responded_at: at,
                model: model.clone(),
                reply: ModelReply::default(),
                cost_micro_usd: 0,
                latency_ms: None,
            },
            usage: None,
            texts: Vec::new(),
            extra: Vec::new(),
        });
        open.call.responded_at = at.or(open.call.responded_at);
        let message = line.get_mut("message").map(Value::take).unwrap_or_default();
        if let Some(usage) = message.get("usage") {
            open.usage = Some(usage.clone());
        }
        if let Some(stop) = message.get("stop_reason").and_then(Value::as_str) {
            open.call.reply.stop_reason = Some(stop.to_owned());
        }
        let mut left = Vec::new();
        for block in message
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match str_at(block, "/type") {
                "text" => open.texts.push(str_at(block, "/text").to_owned()),
                "thinking" => open.call.reply.reasoning.push(Reasoning {
                    text: str_at(block, "/thinking").to_owned(),
                    signature: block
                        .get("signature")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    redacted: None,
                }),
                "redacted_thinking" => open.call.reply.reasoning.push(Reasoning {
                    text: String::new(),
                    signature: None,
                    redacted: Some(str_at(block, "/data").to_owned()),
                }),
                "tool_use" => open.call.reply.tool_calls.push(ToolCall {
                    id: str_at(block, "/id").to_owned(),
                    name: str_at(block, "/name").to_owned(),
                    arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
                }),
                _ => left.push(block.clone()),
            }
        }
        // the line without what the events hold: its envelope, and blocks of other types
        let mut rest: Map<String, Value> = match message {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        rest.remove("content");
        if !left.is_empty() {
            rest.insert("content".into(), Value::Array(left));
        }
        line["message"] = Value::Object(rest);
        open.extra.push(line);
    }

    /// Finish the model call being assembled.
    fn close(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        open.call.reply.text = open
            .texts
            .iter()
            .filter(|t| !t.trim().is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n");
        open.call.reply.usage = usage(open.usage.as_ref());
        self.last_at = open.call.responded_at.or(self.last_at);
        if open.call.model == "<synthetic>" {
            // the CLI's own stand-in for a reply it did not get (an API error, an
            // interruption): not a model call
            self.t.report.keep("assistant/<synthetic>");
            self.t.entries.push(Entry {
                step: Step::ModelError {
                    requested_at: open.call.requested_at,
                    at: open.call.responded_at,
                    model: open.call.model,
                    message: open.call.reply.text,
                },
                extra: open.extra,
                seq: None,
            });
            return;
        }
        *self.models.entry(open.call.model.clone()).or_default() += 1;
        self.t.entries.push(Entry {
            step: Step::Model(open.call),
            extra: open.extra,
            seq: None,
        });
    }

    fn user(&mut self, mut line: Value, at: Option<u64>) {
        let content = line
            .pointer_mut("/message/content")
            .map(Value::take)
            .unwrap_or_default();
        let mut texts = Vec::new();
        let mut results = Vec::new();
        match content {
            Value::String(s) => texts.push(s),
            Value::Array(blocks) => {
                for block in blocks {
                    match str_at(&block, "/type") {
                        "tool_result" => results.push(block),
                        "text" => texts.push(str_at(&block, "/text").to_owned()),
                        _ => texts.push(format!("[{}]", str_at(&block, "/type"))),
                    }
                }
            }
            _ => {}
        }
        let structured = line.get("toolUseResult").cloned();
        for block in results {
            let output = result_text(block.get("content"));
            let rejected = structured.as_ref().and_then(Value::as_str) == Some(REJECTED)
                || output.starts_with(REJECTED_TEXT);
            let mut entry = Entry::new(Step::Result(ToolResult {
                call_id: str_at(&block, "/tool_use_id").to_owned(),
                started_at: None,
                at,
                is_error: block
                    .get("is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    || rejected,
                output,
                rejected,
                value: None,
                duration_ms: None,
            }));
            entry.extra.push(line.clone());
            self.t.entries.push(entry);
        }
        let text = texts.join("\n\n");
        if text.is_empty() {
            return;
        }
        let flag = |key: &str| line.get(key).and_then(Value::as_bool).unwrap_or(false);
        if flag("isCompactSummary") {
            if let Some(Entry {
                step: Step::Compaction { summary, .. },
                extra,
                ..
            }) = self.t.entries.last_mut()
                && summary.is_empty()
            {
                *summary = text;
                extra.push(line);
                return;
            }
            self.t.entries.push(Entry {
                step: Step::Compaction { at, summary: text },
                extra: vec![line],
                seq: None,
            });
        } else if flag("isMeta") || local_command(&text) {
            // the CLI's own lines (a slash command, its output): not said to the model
            self.t.report.keep(if flag("isMeta") {
                "user/isMeta"
            } else {
                "user/local command"
            });
            line["message"]["content"] = Value::String(text);
            self.keep(line);
        } else if self.t.task.is_empty() && self.t.entries.is_empty() {
            self.t.task = text;
            self.t.session.push(line);
        } else {
            self.t.entries.push(Entry {
                step: Step::User { at, text },
                extra: vec![line],
                seq: None,
            });
        }
    }
}

/// Whether a user line is a local slash command or its output, which the CLI writes as a
/// user line (`<command-name>/compact</command-name>…`, `<local-command-stdout>…`).
fn local_command(text: &str) -> bool {
    let start = text.trim_start();
    [
        "<command-name>",
        "<command-message>",
        "<local-command-stdout>",
        "<local-command-stderr>",
        "<local-command-caveat>",
    ]
    .iter()
    .any(|tag| start.starts_with(tag))
}

/// A `tool_result`'s content as the model read it: a string, or text blocks joined (other
/// blocks, such as images, named in brackets).
fn result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match str_at(b, "/type") {
                "text" => str_at(b, "/text").to_owned(),
                other => format!("[{other}]"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) if !other.is_null() => other.to_string(),
        _ => String::new(),
    }
}

/// Anthropic usage as retrace counts it: input includes the cached prompt tokens.
fn usage(usage: Option<&Value>) -> TokenUsage {
    let n = |key: &str| usage.map_or(0, |u| crate::number(u.get(key)));
    let read = n("cache_read_input_tokens");
    let write = n("cache_creation_input_tokens");
    TokenUsage {
        input_tokens: n("input_tokens").saturating_add(read).saturating_add(write),
        output_tokens: n("output_tokens"),
        reasoning_tokens: 0,
        cache_read_tokens: read,
        cache_write_tokens: write,
    }
}

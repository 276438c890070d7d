//! mini-swe-agent trajectories (`*.traj.json`, `trajectory_format: "mini-swe-agent-1"`):
//! `{info, messages, trajectory_format, instance_id}`.
//!
//! - `messages` are plain chat messages. The system message is the system prompt, the
//!   first user message the task.
//! - Each assistant message is a model call; `extra.response` is the raw completion
//!   (LiteLLM/OpenRouter): `model`, `created` (epoch seconds, the only time in the file),
//!   `usage{prompt_tokens, completion_tokens, cost, prompt_tokens_details.cached_tokens,
//!   completion_tokens_details.reasoning_tokens}`, `choices[0].message.reasoning`.
//! - The action is text: the one fenced `bash` block of the reply, here a call of the tool
//!   `bash` with `{"command": …}` and the id `call-N` (N counts the calls from 1). The next
//!   user message is its result: `<returncode>N</returncode>` (non-zero: an error). A
//!   reply without a block gets the next user message as a user message (the agent's
//!   format-error feedback).
//! - `info.exit_status` `Submitted` ends the run as succeeded with `info.submission`; any
//!   other status as failed.

use retrace_events::Outcome;
use retrace_events::reply::{ModelReply, Reasoning, TokenUsage, ToolCall};
use serde_json::{Value, json};

use crate::jsonl::str_at;
use crate::transcript::{Entry, Finish, ModelCall, Report, Step, ToolResult, Transcript};
use crate::{Format, ImportError, Source, micro, number, usd};

/// Read a trajectory.
///
/// # Errors
/// Not JSON, or no `messages` list.
pub fn parse(source: &Source) -> Result<Transcript, ImportError> {
    let not = |why: String| ImportError::NotFormat {
        file: source.name.clone(),
        format: Format::MiniSweAgent,
        why,
    };
    let mut doc: Value = serde_json::from_slice(&source.bytes)
        .map_err(|e| not(format!("not JSON ({e}); expected a .traj.json trajectory")))?;
    let Some(Value::Array(messages)) = doc.get_mut("messages").map(Value::take) else {
        return Err(not("no `messages` list at the top".into()));
    };
    let info = doc.get("info").cloned().unwrap_or_default();
    let mut t = Transcript::new(
        Format::MiniSweAgent,
        Report {
            bytes: source.bytes.len() as u64,
            lines: messages.len() as u64,
            ..Report::default()
        },
    );
    t.name = match str_at(&doc, "/instance_id") {
        "" => source.name.clone(),
        id => id.to_owned(),
    };
    str_at(&info, "/config/model/model_name").clone_into(&mut t.model);
    t.session.push(doc.clone());
    let mut calls = 0u64;
    let mut last_at: Option<u64> = None;
    // the call id the next user message answers
    let mut awaiting: Option<String> = None;
    for message in messages {
        let content = text(message.get("content"));
        match str_at(&message, "/role") {
            "system" if t.system.is_empty() => t.system = content,
            "user" if t.task.is_empty() && t.entries.is_empty() => t.task = content,
            "assistant" => {
                let (entry, call, at) = model_call(&message, content, &t.model, last_at, calls + 1);
                if t.started_at.is_none() {
                    t.started_at = at;
                }
                calls += u64::from(call.is_some());
                awaiting = call;
                t.entries.push(entry);
                last_at = at.or(last_at);
            }
            "user" => {
                let step = match awaiting.take() {
                    Some(call_id) => Step::Result(ToolResult {
                        call_id,
                        started_at: last_at,
                        at: last_at,
                        is_error: returncode(&content).is_some_and(|c| c != 0),
                        output: content,
                        rejected: false,
                        value: None,
                        duration_ms: None,
                    }),
                    None => Step::User {
                        at: last_at,
                        text: content,
                    },
                };
                t.entries.push(Entry::new(step));
            }
            other => {
                t.report.keep(&format!("message role {other:?}"));
                t.keep_after(None, message);
            }
        }
    }
    // the model the calls went to (the config's name may carry a router's prefix)
    if let Some(Step::Model(c)) = t.entries.iter().map(|e| &e.step).next()
        && !c.model.is_empty()
    {
        t.model.clone_from(&c.model);
    }
    let status = str_at(&info, "/exit_status");
    t.finish = Finish {
        outcome: if status == "Submitted" {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        },
        text: if status == "Submitted" {
            str_at(&info, "/submission").to_owned()
        } else {
            format!("exit status: {status}")
        },
        at: last_at,
    };
    Ok(t)
}

/// An assistant message as a model call: the entry, the id of the call it makes (`call-N`,
/// N = `number`), and when it was made.
fn model_call(
    message: &Value,
    content: String,
    default_model: &str,
    last_at: Option<u64>,
    number: u64,
) -> (Entry, Option<String>, Option<u64>) {
    let response = message
        .pointer("/extra/response")
        .cloned()
        .unwrap_or_default();
    let at = response
        .get("created")
        .and_then(Value::as_u64)
        .and_then(|s| s.checked_mul(1000))
        .and_then(crate::plausible_ms);
    let mut reply = ModelReply {
        usage: usage(response.get("usage")),
        stop_reason: response
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..ModelReply::default()
    };
    if let Some(r) = response
        .pointer("/choices/0/message/reasoning")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        reply.reasoning.push(Reasoning {
            text: r.to_owned(),
            ..Reasoning::default()
        });
    }
    let call = action(&content).map(|command| {
        let id = format!("call-{number}");
        reply.tool_calls.push(ToolCall {
            id: id.clone(),
            name: "bash".into(),
            arguments: json!({ "command": command }),
        });
        id
    });
    reply.text = content;
    let model = match str_at(&response, "/model") {
        "" => default_model.to_owned(),
        m => m.to_owned(),
    };
    let entry = Entry {
        step: Step::Model(ModelCall {
            requested_at: last_at,
            responded_at: at,
            model,
            reply,
            cost_micro_usd: micro(usd(response.pointer("/usage/cost"))),
            latency_ms: None,
        }),
        extra: vec![json!({ "extra": message.get("extra") })],
        seq: None,
    };
    (entry, call, at)
}

/// The command of a reply's fenced bash block (exactly one is the agent's protocol; the
/// first is taken).
fn action(reply: &str) -> Option<String> {
    let start = reply.find("```bash")?;
    let body = &reply[start + "```bash".len()..];
    let body = body.strip_prefix('\n').unwrap_or(body);
    let end = body.find("```")?;
    Some(body[..end].trim_end_matches('\n').to_owned())
}

/// The `<returncode>` a result starts with.
fn returncode(result: &str) -> Option<i64> {
    let start = result.find("<returncode>")? + "<returncode>".len();
    let end = result[start..].find("</returncode>")? + start;
    result[start..end].trim().parse().ok()
}

/// A message content: a string, or text parts joined.
fn text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// OpenAI-style usage (prompt tokens include the cached ones).
fn usage(usage: Option<&Value>) -> TokenUsage {
    let at = |p: &str| number(usage.and_then(|u| u.pointer(p)));
    TokenUsage {
        input_tokens: at("/prompt_tokens"),
        output_tokens: at("/completion_tokens"),
        reasoning_tokens: at("/completion_tokens_details/reasoning_tokens"),
        cache_read_tokens: at("/prompt_tokens_details/cached_tokens"),
        cache_write_tokens: 0,
    }
}

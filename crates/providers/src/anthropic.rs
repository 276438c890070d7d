//! Anthropic messages (`POST {base_url}/v1/messages`), streamed over SSE.
//!
//! The system prompt is the top-level `system`. Messages are content blocks: a reply's text
//! and `tool_use` blocks, and tool results as `tool_result` blocks of a user message
//! (consecutive user-side messages merged, as the format requires turns to alternate).
//! The stream's `content_block_*` events build the reply block by block: text deltas are
//! passed on as they arrive, `input_json_delta` pieces are concatenated and parsed at the
//! block's end. Usage comes from `message_start` (input) and `message_delta` (output).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::{Http, HttpSettings, SetupError, parse_arguments, tool_name, wire_name};
use crate::{
    BoxFuture, ChatMessage, Delta, Error, ModelReply, ModelRequest, Provider, TokenUsage, ToolCall,
};

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the spec sets none (the format requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4_096;

/// An Anthropic provider.
#[derive(Clone, Debug)]
pub struct Anthropic {
    http: Http,
}

impl Anthropic {
    /// A client for `settings` (the key, if any, is read from its variable now).
    pub fn new(settings: HttpSettings) -> Result<Self, SetupError> {
        Ok(Self {
            http: Http::new("anthropic", settings)?,
        })
    }
}

/// The request body for `request`.
pub fn body(request: &ModelRequest) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    let mut push = |role: &str, block: Value| match messages.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(content) = last["content"].as_array_mut() {
                content.push(block);
            }
        }
        _ => messages.push(json!({"role": role, "content": [block]})),
    };
    for message in &request.messages {
        match &**message {
            ChatMessage::User { content } => push("user", json!({"type": "text", "text": content})),
            ChatMessage::Assistant {
                text, tool_calls, ..
            } => {
                if !text.is_empty() {
                    push("assistant", json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    let input = if call.arguments.is_object() {
                        call.arguments.clone()
                    } else {
                        json!({})
                    };
                    push(
                        "assistant",
                        json!({"type": "tool_use", "id": call.id, "name": wire_name(&call.name), "input": input}),
                    );
                }
                if text.is_empty() && tool_calls.is_empty() {
                    push("assistant", json!({"type": "text", "text": "(no reply)"}));
                }
            }
            ChatMessage::Tool {
                call_id,
                content,
                is_error,
            } => push(
                "user",
                json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error}),
            ),
        }
    }
    let mut body = json!({
        "model": request.model,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": messages,
        "stream": true,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"name": wire_name(&t.name), "description": t.description, "input_schema": t.parameters})
            })
            .collect();
    }
    for (key, value) in &request.params {
        body[key] = value.clone();
    }
    body
}

/// One content block being streamed.
enum Block {
    Text,
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
}

/// The reply being assembled from the stream's events.
#[derive(Default)]
struct Assembly {
    text: String,
    blocks: BTreeMap<u64, Block>,
    /// Finished tool calls by block index: the reply lists them in the model's order.
    calls: BTreeMap<u64, ToolCall>,
    usage: TokenUsage,
    stop_reason: Option<String>,
}

impl Assembly {
    /// Fold one event in; whether the message is complete.
    fn event(
        &mut self,
        http: &Http,
        request: &ModelRequest,
        name: &str,
        data: &str,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<bool, Error> {
        let event: Value = serde_json::from_str(data).map_err(|e| {
            http.permanent(format!(
                "malformed response: the data of a `{name}` event is not JSON ({e})"
            ))
        })?;
        let kind = event.get("type").and_then(Value::as_str).unwrap_or(name);
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        let count = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
        match kind {
            "message_start" => {
                if let Some(usage) = event.pointer("/message/usage") {
                    self.usage.input_tokens = count(usage, "input_tokens").unwrap_or(0)
                        + count(usage, "cache_read_input_tokens").unwrap_or(0)
                        + count(usage, "cache_creation_input_tokens").unwrap_or(0);
                    self.usage.output_tokens = count(usage, "output_tokens").unwrap_or(0);
                }
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                let started = match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => Block::ToolUse {
                        id: block["id"].as_str().unwrap_or_default().to_owned(),
                        name: block["name"].as_str().unwrap_or_default().to_owned(),
                        json: String::new(),
                    },
                    _ => Block::Text,
                };
                self.blocks.insert(index, started);
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match (
                    self.blocks.get_mut(&index),
                    delta.get("type").and_then(Value::as_str),
                ) {
                    (Some(Block::Text), Some("text_delta")) => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        self.text.push_str(text);
                        on_delta(Delta::Text(text.to_owned()));
                    }
                    (Some(Block::ToolUse { json, .. }), Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    (None, _) => {
                        return Err(http.permanent(format!(
                            "malformed response: a delta for content block {index}, which never started"
                        )));
                    }
                    _ => {} // thinking, signatures and other deltas are not part of the reply
                }
            }
            "content_block_stop" => {
                if let Some(Block::ToolUse { id, name, json }) = self.blocks.remove(&index) {
                    let name = tool_name(&request.tools, &name);
                    let arguments = parse_arguments(http, &name, &json)?;
                    self.calls.insert(
                        index,
                        ToolCall {
                            id,
                            name,
                            arguments,
                        },
                    );
                }
            }
            "message_delta" => {
                if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(output) = event.get("usage").and_then(|u| count(u, "output_tokens")) {
                    self.usage.output_tokens = output;
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let kind = event
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                let message = format!("the server reported mid-stream: {kind}: {message}");
                return Err(
                    if matches!(kind, "overloaded_error" | "api_error" | "rate_limit_error") {
                        http.transient(message)
                    } else {
                        http.permanent(message)
                    },
                );
            }
            _ => {} // ping, and events added to the format later
        }
        Ok(false)
    }

    fn finish(self) -> ModelReply {
        ModelReply {
            text: self.text,
            tool_calls: self.calls.into_values().collect(),
            usage: self.usage,
            stop_reason: self.stop_reason,
            reasoning: Vec::new(),
        }
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        on_delta: &'a mut (dyn FnMut(Delta) + Send),
    ) -> BoxFuture<'a, Result<ModelReply, Error>> {
        Box::pin(async move {
            let http = &self.http;
            let call = async {
                let mut builder = http
                    .stream_request("v1/messages", &body(request))
                    .header("anthropic-version", API_VERSION);
                if let Some(key) = &http.key {
                    let mut value = reqwest::header::HeaderValue::from_str(key.expose())
                        .map_err(|_| http.permanent("the API key is not a valid header value"))?;
                    value.set_sensitive(true);
                    builder = builder.header("x-api-key", value);
                }
                let response = http.send(builder).await?;
                let mut assembly = Assembly::default();
                let done = http
                    .events(response, |name, data| {
                        assembly.event(http, request, name, data, on_delta)
                    })
                    .await?;
                if !done {
                    return Err(http.cut_short());
                }
                Ok(assembly.finish())
            };
            http.within_total(call).await
        })
    }
}

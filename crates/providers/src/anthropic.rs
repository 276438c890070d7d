//! Anthropic messages (`POST {base_url}/v1/messages`), streamed over SSE.
//!
//! The system prompt is the top-level `system`. Messages are content blocks: a reply's text
//! and `tool_use` blocks, and tool results as `tool_result` blocks of a user message
//! (consecutive user-side messages merged, as the format requires turns to alternate).
//! The stream's `content_block_*` events build the reply block by block: text deltas are
//! passed on as they arrive, `input_json_delta` pieces are concatenated and parsed at the
//! block's end. Usage comes from `message_start` (input) and `message_delta` (output, and
//! updated input counts when the server sends them). A server that answers one JSON
//! `message` instead of a stream is read as the same reply.
//!
//! Prompt caching (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>):
//! the cache is a prefix of `tools`, `system`, `messages` in that order, up to a block marked
//! `cache_control: {"type": "ephemeral"}`; a request may mark at most four. Each request marks
//! the last tool definition, the system prompt (sent as one text block for that), the
//! run's task (the first user message, pinned first in every request) and the last block of
//! the last turn, so a step reads the previous step's whole prefix from the cache and
//! writes its own. Thinking blocks and empty text blocks cannot carry a mark (the API
//! says so); the nearest block before them in the turn that can takes it. The usage's
//! `input_tokens` leaves out `cache_read_input_tokens` and `cache_creation_input_tokens`;
//! the recorded `input_tokens` is their sum, with the two kept as `cache_read_tokens` and
//! `cache_write_tokens`.
//!
//! Extended thinking (<https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking>):
//! `thinking` blocks (text from `thinking_delta`, `signature` from `signature_delta`) and
//! `redacted_thinking` blocks (opaque `data`) are recorded as the reply's reasoning, never as
//! its text. The API requires them back, unchanged and before the `tool_use` blocks, in the
//! assistant turn that called tools, so each request puts a reply's signed or redacted
//! blocks first in its turn. Reasoning without a signature (another provider's) is not sent:
//! the API would refuse it. Turn thinking on with `thinking = { type = "enabled",
//! budget_tokens = N }` in the spec's `[model]` (passed through).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::WireNames;
use crate::http::{Http, HttpSettings, SetupError, decode_arguments, is_json, tool_name};
use crate::{
    BoxFuture, ChatMessage, Delta, Error, ModelReply, ModelRequest, Provider, Reasoning,
    TokenUsage, ToolCall,
};

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the spec sets none (the format requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4_096;

/// The most `cache_control` breakpoints the API accepts in one request.
pub const MAX_CACHE_BREAKPOINTS: usize = 4;

/// The mark that ends a cached prefix (the default five-minute cache).
fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// Whether `block` may carry `cache_control`: not a thinking block (cached only with the
/// turn around it) and not an empty text block.
fn cacheable(block: &Value) -> bool {
    match block.get("type").and_then(Value::as_str) {
        Some("thinking" | "redacted_thinking") => false,
        Some("text") => block
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty()),
        _ => true,
    }
}

/// The last block of `turn` that may carry `cache_control`.
fn last_cacheable(turn: &mut Value) -> Option<&mut Value> {
    turn.get_mut("content")?
        .as_array_mut()?
        .iter_mut()
        .rev()
        .find(|b| cacheable(b))
}

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
    // one mapping for the tools offered and the calls sent back (http::WireNames)
    let names = WireNames::new(&request.tools);
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
                text,
                tool_calls,
                reasoning,
            } => {
                for block in reasoning {
                    match (&block.redacted, &block.signature) {
                        (Some(data), _) => {
                            push(
                                "assistant",
                                json!({"type": "redacted_thinking", "data": data}),
                            );
                        }
                        (None, Some(signature)) => push(
                            "assistant",
                            json!({"type": "thinking", "thinking": block.text, "signature": signature}),
                        ),
                        (None, None) => {} // unsigned: not Anthropic's, and it would be refused
                    }
                }
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
                        json!({"type": "tool_use", "id": call.id, "name": names.wire(&call.name), "input": input}),
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
        // one text block, to carry a cache breakpoint
        body["system"] = json!([{"type": "text", "text": request.system}]);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"name": names.wire(&t.name), "description": t.description, "input_schema": t.parameters})
            })
            .collect();
    }
    let task_first = matches!(
        request.messages.first().map(|m| &**m),
        Some(ChatMessage::User { .. })
    );
    mark_breakpoints(&mut body, task_first);
    for (key, value) in &request.params {
        body[key] = value.clone();
    }
    body
}

/// Mark the cache breakpoints of `body`, most stable first (module docs), at most
/// [`MAX_CACHE_BREAKPOINTS`]: the last tool, the system prompt, the last turn's last block
/// (the whole request, read back by the next step) and, when `task_first` (the first
/// message is the run's task), the block that opens the first turn.
fn mark_breakpoints(body: &mut Value, task_first: bool) {
    let mut marks = 0;
    for key in ["tools", "system"] {
        if let Some(last) = body
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .and_then(|items| items.last_mut())
        {
            last["cache_control"] = ephemeral();
            marks += 1;
        }
    }
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    if let Some(block) = messages.last_mut().and_then(last_cacheable) {
        block["cache_control"] = ephemeral();
        marks += 1;
    }
    if !task_first || marks >= MAX_CACHE_BREAKPOINTS {
        return;
    }
    if let Some(block) = messages
        .first_mut()
        .and_then(|turn| turn["content"].get_mut(0))
        .filter(|b| cacheable(b) && b.get("cache_control").is_none())
    {
        block["cache_control"] = ephemeral();
    }
}

/// One content block being streamed.
enum Block {
    Text,
    Thinking {
        text: String,
        signature: String,
    },
    Redacted {
        data: String,
    },
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
    /// Finished thinking blocks by block index, in the model's order.
    reasoning: BTreeMap<u64, Reasoning>,
    /// Usage as the API counts it: `input_tokens` without the cached tokens (see
    /// [`Assembly::usage`]).
    usage: TokenUsage,
    stop_reason: Option<String>,
}

impl Block {
    /// The block a `content_block_start` opens.
    fn started(block: &Value) -> Self {
        let field = |k: &str| block[k].as_str().unwrap_or_default().to_owned();
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => Self::Thinking {
                text: field("thinking"),
                signature: field("signature"),
            },
            Some("redacted_thinking") => Self::Redacted {
                data: field("data"),
            },
            Some("tool_use") => Self::ToolUse {
                id: field("id"),
                name: field("name"),
                json: String::new(),
            },
            _ => Self::Text,
        }
    }
}

impl Assembly {
    /// A `content_block_delta` for block `index`.
    fn delta(
        &mut self,
        http: &Http,
        index: u64,
        delta: &Value,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<(), Error> {
        let piece = |k: &str| delta[k].as_str().unwrap_or_default();
        match (
            self.blocks.get_mut(&index),
            delta.get("type").and_then(Value::as_str),
        ) {
            (Some(Block::Text), Some("text_delta")) => {
                self.text.push_str(piece("text"));
                on_delta(Delta::Text(piece("text").to_owned()));
            }
            (Some(Block::ToolUse { json, .. }), Some("input_json_delta")) => {
                json.push_str(piece("partial_json"));
            }
            (Some(Block::Thinking { text, .. }), Some("thinking_delta")) => {
                text.push_str(piece("thinking"));
            }
            (Some(Block::Thinking { signature, .. }), Some("signature_delta")) => {
                signature.push_str(piece("signature"));
            }
            (None, _) => {
                return Err(http.permanent(format!(
                    "malformed response: a delta for content block {index}, which never started"
                )));
            }
            _ => {} // deltas added to the format later
        }
        Ok(())
    }

    /// A `content_block_stop`: block `index` is whole.
    fn stop(&mut self, request: &ModelRequest, index: u64) {
        match self.blocks.remove(&index) {
            Some(Block::ToolUse { id, name, json }) => {
                let name = tool_name(&request.tools, &name);
                // not JSON: kept raw, so the tool refuses it and the model is told
                let arguments = decode_arguments(&json);
                self.calls.insert(
                    index,
                    ToolCall {
                        id,
                        name,
                        arguments,
                    },
                );
            }
            Some(Block::Thinking { text, signature }) => {
                let signature = (!signature.is_empty()).then_some(signature);
                self.reasoning.insert(
                    index,
                    Reasoning {
                        text,
                        signature,
                        redacted: None,
                    },
                );
            }
            Some(Block::Redacted { data }) => {
                self.reasoning.insert(
                    index,
                    Reasoning {
                        redacted: Some(data),
                        ..Reasoning::default()
                    },
                );
            }
            Some(Block::Text) | None => {}
        }
    }

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
        match kind {
            "message_start" => {
                if let Some(usage) = event.pointer("/message/usage") {
                    self.usage(usage);
                }
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                self.blocks.insert(index, Block::started(block));
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                self.delta(http, index, delta, on_delta)?;
            }
            "content_block_stop" => self.stop(request, index),
            "message_delta" => {
                if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(usage) = event.get("usage") {
                    self.usage(usage);
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

    /// Fold a `usage` object in: the counts it gives replace those before (`message_delta`'s
    /// are cumulative), those it leaves out or sends as `null` stay.
    fn usage(&mut self, usage: &Value) {
        let u = &mut self.usage;
        for (key, field) in [
            ("input_tokens", &mut u.input_tokens),
            ("output_tokens", &mut u.output_tokens),
            ("cache_read_input_tokens", &mut u.cache_read_tokens),
            ("cache_creation_input_tokens", &mut u.cache_write_tokens),
        ] {
            if let Some(n) = usage.get(key).and_then(Value::as_u64) {
                *field = n;
            }
        }
    }

    /// A whole `message` object (a server that did not stream), folded in as its stream
    /// would have been: text passed on at once, each block whole.
    fn whole(
        &mut self,
        http: &Http,
        request: &ModelRequest,
        body: &str,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<(), Error> {
        let message: Value = serde_json::from_str(body).map_err(|e| {
            http.permanent(format!(
                "malformed response: a JSON reply (the server did not stream) is not JSON ({e})"
            ))
        })?;
        if let Some(usage) = message.get("usage") {
            self.usage(usage);
        }
        let blocks = message.get("content").and_then(Value::as_array);
        for (index, block) in (0u64..).zip(blocks.into_iter().flatten()) {
            let mut started = Block::started(block);
            match &mut started {
                Block::Text => {
                    let text = block["text"].as_str().unwrap_or_default();
                    if !text.is_empty() {
                        self.text.push_str(text);
                        on_delta(Delta::Text(text.to_owned()));
                    }
                }
                Block::ToolUse { json, .. } => {
                    *json = block
                        .get("input")
                        .map_or_else(String::new, Value::to_string);
                }
                // thinking text, signature and redacted data are whole in the block
                Block::Thinking { .. } | Block::Redacted { .. } => {}
            }
            self.blocks.insert(index, started);
            self.stop(request, index);
        }
        self.stop_reason = message
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(())
    }

    fn finish(self) -> ModelReply {
        // TokenUsage counts every prompt token; Anthropic's `input_tokens` are the uncached
        // ones only
        let usage = TokenUsage {
            input_tokens: self.usage.input_tokens
                + self.usage.cache_read_tokens
                + self.usage.cache_write_tokens,
            ..self.usage
        };
        ModelReply {
            text: self.text,
            tool_calls: self.calls.into_values().collect(),
            usage,
            stop_reason: self.stop_reason,
            reasoning: self.reasoning.into_values().collect(),
        }
    }
}

/// The reply in a whole `message` object (a server that ignored `stream: true`).
fn whole_reply(
    http: &Http,
    request: &ModelRequest,
    body: &str,
    on_delta: &mut (dyn FnMut(Delta) + Send),
) -> Result<ModelReply, Error> {
    let mut assembly = Assembly::default();
    assembly.whole(http, request, body, on_delta)?;
    Ok(assembly.finish())
}

/// The reply in a stream of Messages API events.
async fn streamed_reply<B: AsRef<[u8]>, E: std::fmt::Display>(
    http: &Http,
    request: &ModelRequest,
    body: impl futures::Stream<Item = Result<B, E>>,
    on_delta: &mut (dyn FnMut(Delta) + Send),
) -> Result<ModelReply, Error> {
    let mut assembly = Assembly::default();
    let done = http
        .events(body, |name, data| {
            assembly.event(http, request, name, data, on_delta)
        })
        .await?;
    if !done {
        return Err(http.cut_short());
    }
    Ok(assembly.finish())
}

/// Read a reply to `request` from a response body as [`Anthropic`] does on the wire:
/// `body` whole as JSON (`json`), or as server-sent events arriving in `pieces` (the body
/// cut at those offsets). For fuzzing and for tests of recorded bodies.
///
/// # Errors
/// As [`Provider::complete`] reports a malformed or incomplete reply.
pub fn decode_reply(
    request: &ModelRequest,
    body: &[u8],
    json: bool,
    cuts: &[usize],
) -> Result<ModelReply, Error> {
    crate::http::decode_reply(
        "anthropic",
        body,
        json,
        cuts,
        |http, text| whole_reply(http, request, text, &mut |_| {}),
        |http, pieces| {
            futures::executor::block_on(streamed_reply(http, request, pieces, &mut |_| {}))
        },
    )
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
                if is_json(&response) {
                    // the server ignored `stream: true`: one `message` object
                    let body = response.text().await.map_err(|e| {
                        http.transient(format!("the reply broke off while being read: {e}"))
                    })?;
                    return whole_reply(http, request, &body, on_delta);
                }
                streamed_reply(http, request, response.bytes_stream(), on_delta).await
            };
            http.within_total(call).await
        })
    }
}

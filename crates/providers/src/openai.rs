//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`), streamed over
//! SSE: OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio, OpenRouter.
//!
//! The request carries the system prompt as the first message, tools as functions (names
//! mapped to what the format accepts and back), the spec's parameters passed through, and
//! `stream_options.include_usage` so the last chunk reports tokens (prompt tokens read from
//! the provider's prompt cache, which OpenAI applies by itself, from
//! `prompt_tokens_details.cached_tokens`). Text deltas are passed on
//! as they arrive; tool calls are assembled from their deltas by `index`, arguments
//! concatenated and parsed once the stream is done.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::WireNames;
use crate::http::{Http, HttpSettings, SetupError, decode_arguments, is_json, tool_name};
use crate::{
    BoxFuture, ChatMessage, Delta, Error, ModelReply, ModelRequest, Provider, Reasoning,
    TokenUsage, ToolCall,
};

/// An OpenAI-compatible provider.
#[derive(Clone, Debug)]
pub struct OpenAi {
    http: Http,
}

impl OpenAi {
    /// A client for `settings` (the key, if any, is read from its variable now).
    pub fn new(settings: HttpSettings) -> Result<Self, SetupError> {
        Ok(Self {
            http: Http::new("openai", settings)?,
        })
    }
}

/// The request body for `request`.
pub fn body(request: &ModelRequest) -> Value {
    // one mapping for the tools offered and the calls sent back (http::WireNames)
    let names = WireNames::new(&request.tools);
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        messages.push(match &**message {
            ChatMessage::User { content } => json!({"role": "user", "content": content}),
            ChatMessage::Assistant {
                text,
                tool_calls,
                reasoning,
            } => {
                let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                // DeepSeek's thinking mode refuses a turn with tool calls whose reasoning
                // is not sent back; servers that never sent reasoning never get it
                let thought: String = reasoning.iter().map(|r| r.text.as_str()).collect();
                if !thought.is_empty() {
                    m["reasoning_content"] = json!(thought);
                }
                if !tool_calls.is_empty() {
                    m["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function", "function": {
                                "name": names.wire(&c.name),
                                "arguments": c.arguments.to_string(),
                            }})
                        })
                        .collect();
                }
                m
            }
            ChatMessage::Tool {
                call_id, content, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
        });
    }
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": names.wire(&t.name),
                    "description": t.description,
                    "parameters": t.parameters,
                }})
            })
            .collect();
    }
    for (key, value) in &request.params {
        body[key] = value.clone();
    }
    body
}

/// A tool call being assembled from its deltas.
#[derive(Default)]
struct Partial {
    id: String,
    name: String,
    /// The `arguments` string fragments, concatenated.
    arguments: String,
    /// `arguments` sent as a JSON value instead of a string (llama.cpp's server).
    value: Option<Value>,
}

impl Partial {
    /// Whether its arguments already form a whole JSON value (cheap test first: only a
    /// text ending in `}` or `]` is parsed).
    fn is_whole(&self) -> bool {
        let text = self.arguments.trim_end();
        self.value.is_some()
            || ((text.ends_with('}') || text.ends_with(']'))
                && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
    }

    /// Whether a tool-call delta with these (non-blank) `id` and `name` and these
    /// `arguments` continues this call rather than starting a new one. An id never
    /// concatenates with itself: the same id continues, a different one starts a new call.
    /// Without an id, a different name starts a new call, and so does the same name with
    /// fresh arguments once this call's arguments are whole (servers that send every call
    /// whole at one index, without ids).
    fn continued_by(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&Value>,
    ) -> bool {
        if let Some(id) = id {
            return if self.id.is_empty() {
                !self.is_whole()
            } else {
                id == self.id
            };
        }
        let fresh_arguments = arguments.is_some_and(|a| match a {
            Value::String(s) => !s.is_empty(),
            Value::Null => false,
            _ => true,
        });
        match name {
            Some(name) if !self.name.is_empty() && name != self.name => false,
            Some(_) if fresh_arguments && self.is_whole() => false,
            _ => true,
        }
    }

    /// Fold a delta in: id and name are taken once (a repeat is not appended), argument
    /// strings are concatenated, an argument object replaces them.
    fn absorb(&mut self, id: Option<&str>, name: Option<&str>, arguments: Option<&Value>) {
        if let (true, Some(id)) = (self.id.is_empty(), id) {
            id.clone_into(&mut self.id);
        }
        if let (true, Some(name)) = (self.name.is_empty(), name) {
            name.clone_into(&mut self.name);
        }
        match arguments {
            Some(Value::String(text)) => self.arguments.push_str(text),
            None | Some(Value::Null) => {}
            Some(value) => self.value = Some(value.clone()),
        }
    }
}

/// The reply being assembled from the stream's chunks.
#[derive(Default)]
struct Assembly {
    text: String,
    /// `reasoning_content` / `reasoning` deltas and thinking parts, concatenated.
    reasoning: String,
    /// `refusal` deltas and refusal parts, concatenated.
    refusal: String,
    /// Calls in the order they started.
    calls: Vec<Partial>,
    /// For each wire `index`, the position in `calls` of the call streaming there now.
    at_index: BTreeMap<u64, usize>,
    usage: Option<TokenUsage>,
    stop_reason: Option<String>,
}

/// A string field of `value` that is present and not blank.
fn given<'v>(value: Option<&'v Value>, key: &str) -> Option<&'v str> {
    value
        .and_then(|v| v.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

impl Assembly {
    /// Fold one stream chunk (the `data` of an SSE event) in; text deltas go to `on_delta`.
    fn chunk(
        &mut self,
        http: &Http,
        data: &str,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<(), Error> {
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            http.permanent(format!(
                "malformed response: a stream chunk is not JSON ({e})"
            ))
        })?;
        self.fold(http, &chunk, on_delta)
    }

    /// Fold a whole `chat.completion` object in, as one chunk whose choices' `delta` is
    /// their `message` (a server that ignored `stream: true`).
    fn whole(
        &mut self,
        http: &Http,
        body: &str,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<(), Error> {
        let mut reply: Value = serde_json::from_str(body).map_err(|e| {
            http.permanent(format!(
                "malformed response: a JSON reply (the server did not stream) is not JSON ({e})"
            ))
        })?;
        for choice in reply
            .get_mut("choices")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(message) = choice.get_mut("message").map(Value::take) {
                choice["delta"] = message;
            }
        }
        self.fold(http, &reply, on_delta)
    }

    /// Fold a parsed chunk in. Only choice `index` 0 is the reply (others, from `n` > 1,
    /// are ignored); an empty `choices` (the usage chunk) is fine.
    fn fold(
        &mut self,
        http: &Http,
        chunk: &Value,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<(), Error> {
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(http.transient(format!("the server reported mid-stream: {message}")));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            // absent or null (servers without the details) is 0
            let tokens = |at: &str| usage.pointer(at).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(TokenUsage {
                input_tokens: tokens("/prompt_tokens"),
                output_tokens: tokens("/completion_tokens"),
                reasoning_tokens: tokens("/completion_tokens_details/reasoning_tokens"),
                // part of `prompt_tokens`, as TokenUsage counts it; OpenAI caches prompts
                // of 1024 tokens and more by itself and writes to the cache at no charge
                cache_read_tokens: tokens("/prompt_tokens_details/cached_tokens"),
                cache_write_tokens: 0,
            });
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        else {
            return Ok(());
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            return Ok(());
        };
        // DeepSeek, Qwen and vLLM send `reasoning_content`; OpenRouter and newer vLLM and
        // Ollama `reasoning` (some both, with the same text: taken once)
        if let Some(thought) =
            given(Some(delta), "reasoning_content").or_else(|| given(Some(delta), "reasoning"))
        {
            self.reasoning.push_str(thought);
        }
        if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
            self.refusal.push_str(refusal);
        }
        match delta.get("content") {
            Some(Value::String(text)) => self.push_text(text, on_delta),
            Some(Value::Array(parts)) => {
                for part in parts {
                    self.part(part, on_delta);
                }
            }
            _ => {}
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.tool_call(call);
        }
        Ok(())
    }

    fn push_text(&mut self, text: &str, on_delta: &mut (dyn FnMut(Delta) + Send)) {
        if !text.is_empty() {
            self.text.push_str(text);
            on_delta(Delta::Text(text.to_owned()));
        }
    }

    /// One part of a `content` array: `{"type": "text", "text": …}` is answer text,
    /// `{"type": "refusal", "refusal": …}` a refusal, and Mistral's
    /// `{"type": "thinking", "thinking": [{"type": "text", "text": …}]}` (or a plain string)
    /// reasoning. Other parts (images, audio) carry no text and are left out.
    fn part(&mut self, part: &Value, on_delta: &mut (dyn FnMut(Delta) + Send)) {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    self.push_text(text, on_delta);
                }
            }
            Some("refusal") => {
                if let Some(refusal) = part.get("refusal").and_then(Value::as_str) {
                    self.refusal.push_str(refusal);
                }
            }
            Some("thinking" | "reasoning") => {
                match part.get("thinking").or_else(|| part.get("text")) {
                    Some(Value::String(thought)) => self.reasoning.push_str(thought),
                    Some(Value::Array(pieces)) => {
                        for piece in pieces {
                            if let Some(thought) = piece.get("text").and_then(Value::as_str) {
                                self.reasoning.push_str(thought);
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// One element of a delta's `tool_calls`. The call it belongs to: with an `index`, the
    /// call streaming at that index, without one the last call, unless the delta starts a
    /// new call ([`Partial::continued_by`]). Blank `id`, `type` and `name` are absent.
    fn tool_call(&mut self, call: &Value) {
        let id = given(Some(call), "id");
        let function = call.get("function");
        let name = given(function, "name");
        let arguments = function.and_then(|f| f.get("arguments"));
        let index = call.get("index").and_then(Value::as_u64);
        let slot = match index {
            Some(index) => self.at_index.get(&index).copied(),
            None => self.calls.len().checked_sub(1),
        };
        let position = match slot {
            Some(at) if self.calls[at].continued_by(id, name, arguments) => at,
            _ => {
                self.calls.push(Partial::default());
                self.calls.len() - 1
            }
        };
        if let Some(index) = index {
            self.at_index.insert(index, position);
        }
        self.calls[position].absorb(id, name, arguments);
    }

    /// The reply, or why there is none: a refusal, a reply cut at the token limit
    /// (`finish_reason` `length`, even in the middle of a call's arguments: no half call
    /// is proposed), or a content filter that left nothing, are permanent errors carrying
    /// what the model said.
    fn finish(self, http: &Http, request: &ModelRequest) -> Result<ModelReply, Error> {
        if !self.refusal.trim().is_empty() {
            return Err(http.permanent(format!("the model refused: {}", self.refusal.trim())));
        }
        match self.stop_reason.as_deref() {
            Some("length") => {
                let calls = if self.calls.is_empty() {
                    String::new()
                } else {
                    format!(" and {} tool call(s) in progress", self.calls.len())
                };
                return Err(http.permanent(format!(
                    "the reply was cut at the token limit (finish_reason \"length\"); raise max_tokens in the spec's [model]; it had {} characters of text{calls}: {}",
                    self.text.chars().count(),
                    shortened(&self.text)
                )));
            }
            Some("content_filter") if self.text.is_empty() && self.calls.is_empty() => {
                return Err(http.permanent(
                    "the provider's content filter stopped the reply before any text (finish_reason \"content_filter\")",
                ));
            }
            _ => {}
        }
        let mut tool_calls: Vec<ToolCall> = Vec::with_capacity(self.calls.len());
        for (position, call) in self.calls.into_iter().enumerate() {
            if call.name.is_empty() {
                return Err(http.permanent(format!(
                    "malformed response: tool call {position} has no function name"
                )));
            }
            let mut id = if call.id.is_empty() {
                format!("call_{position}")
            } else {
                call.id
            };
            // ids must tell the results apart; a server that repeats one gets it suffixed
            while tool_calls.iter().any(|c| c.id == id) {
                id = format!("{id}_{position}");
            }
            tool_calls.push(ToolCall {
                id,
                name: tool_name(&request.tools, &call.name),
                arguments: call
                    .value
                    .unwrap_or_else(|| decode_arguments(&call.arguments)),
            });
        }
        let reasoning = if self.reasoning.is_empty() {
            Vec::new()
        } else {
            vec![Reasoning {
                text: self.reasoning,
                ..Reasoning::default()
            }]
        };
        Ok(ModelReply {
            text: self.text,
            tool_calls,
            usage: self.usage.unwrap_or_default(),
            stop_reason: self.stop_reason,
            reasoning,
        })
    }
}

/// At most 1000 characters of `text`, with `…` when cut.
fn shortened(text: &str) -> String {
    let mut short: String = text.chars().take(1000).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// The reply in a whole `chat.completion` object (a server that ignored `stream: true`).
fn whole_reply(
    http: &Http,
    request: &ModelRequest,
    body: &str,
    on_delta: &mut (dyn FnMut(Delta) + Send),
) -> Result<ModelReply, Error> {
    let mut assembly = Assembly::default();
    assembly.whole(http, body, on_delta)?;
    assembly.finish(http, request)
}

/// The reply in a stream of `chat.completion.chunk` events.
async fn streamed_reply<B: AsRef<[u8]>, E: std::fmt::Display>(
    http: &Http,
    request: &ModelRequest,
    body: impl futures::Stream<Item = Result<B, E>>,
    on_delta: &mut (dyn FnMut(Delta) + Send),
) -> Result<ModelReply, Error> {
    let mut assembly = Assembly::default();
    let done = http
        .events(body, |_, data| {
            if data.trim() == "[DONE]" {
                return Ok(true);
            }
            assembly.chunk(http, data, on_delta)?;
            Ok(false)
        })
        .await?;
    // some servers end without `[DONE]`; a finish reason says the reply is whole
    if !done && assembly.stop_reason.is_none() {
        return Err(http.cut_short());
    }
    assembly.finish(http, request)
}

/// Read a reply to `request` from a response body as [`OpenAi`] does on the wire: `body`
/// whole as JSON (`json`), or as server-sent events arriving in `pieces` (the body cut at
/// those offsets, as the network may cut it). For fuzzing and for tests of recorded bodies.
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
        "openai",
        body,
        json,
        cuts,
        |http, text| whole_reply(http, request, text, &mut |_| {}),
        |http, pieces| {
            futures::executor::block_on(streamed_reply(http, request, pieces, &mut |_| {}))
        },
    )
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        on_delta: &'a mut (dyn FnMut(Delta) + Send),
    ) -> BoxFuture<'a, Result<ModelReply, Error>> {
        Box::pin(async move {
            let http = &self.http;
            let call = async {
                let mut builder = http.stream_request("chat/completions", &body(request));
                if let Some(key) = &http.key {
                    builder = builder.bearer_auth(key.expose());
                }
                let response = http.send(builder).await?;
                if is_json(&response) {
                    // the server ignored `stream: true`: one `chat.completion` object
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

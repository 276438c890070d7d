//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`), streamed over
//! SSE: OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio, OpenRouter.
//!
//! The request carries the system prompt as the first message, tools as functions (names
//! mapped to what the format accepts and back), the spec's parameters passed through, and
//! `stream_options.include_usage` so the last chunk reports tokens. Text deltas are passed on
//! as they arrive; tool calls are assembled from their deltas by `index`, arguments
//! concatenated and parsed once the stream is done.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::{Http, HttpSettings, SetupError, parse_arguments, tool_name, wire_name};
use crate::{
    BoxFuture, ChatMessage, Delta, Error, ModelReply, ModelRequest, Provider, TokenUsage, ToolCall,
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
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        messages.push(match &**message {
            ChatMessage::User { content } => json!({"role": "user", "content": content}),
            ChatMessage::Assistant {
                text, tool_calls, ..
            } => {
                let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !tool_calls.is_empty() {
                    m["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function", "function": {
                                "name": wire_name(&c.name),
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
                    "name": wire_name(&t.name),
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
    arguments: String,
}

/// The reply being assembled from the stream's chunks.
#[derive(Default)]
struct Assembly {
    text: String,
    calls: BTreeMap<u64, Partial>,
    usage: Option<TokenUsage>,
    stop_reason: Option<String>,
}

impl Assembly {
    /// Fold one chunk in; text deltas go to `on_delta`.
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
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(http.transient(format!("the server reported mid-stream: {message}")));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            let tokens = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(TokenUsage {
                input_tokens: tokens("prompt_tokens"),
                output_tokens: tokens("completion_tokens"),
                reasoning_tokens: usage
                    .pointer("/completion_tokens_details/reasoning_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            });
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(());
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            return Ok(());
        };
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            self.text.push_str(text);
            on_delta(Delta::Text(text.to_owned()));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(self.calls.len() as u64);
            let partial = self.calls.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                partial.id.push_str(id);
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                partial.name.push_str(name);
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                partial.arguments.push_str(args);
            }
        }
        Ok(())
    }

    fn finish(self, http: &Http, request: &ModelRequest) -> Result<ModelReply, Error> {
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (index, call) in self.calls {
            if call.name.is_empty() {
                return Err(http.permanent(format!(
                    "malformed response: tool call {index} has no function name"
                )));
            }
            let name = tool_name(&request.tools, &call.name);
            let arguments = parse_arguments(http, &name, &call.arguments)?;
            tool_calls.push(ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                },
                name,
                arguments,
            });
        }
        Ok(ModelReply {
            text: self.text,
            tool_calls,
            usage: self.usage.unwrap_or_default(),
            stop_reason: self.stop_reason,
            reasoning: Vec::new(),
        })
    }
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
                let mut assembly = Assembly::default();
                let done = http
                    .events(response, |_, data| {
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
            };
            http.within_total(call).await
        })
    }
}

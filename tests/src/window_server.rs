//! A loopback OpenAI-compatible chat-completions server that behaves like a real model
//! server with a context window (issue 20's acceptance runs): real HTTP/1.1 with keep-alive,
//! `POST …/chat/completions` answered as a stream (SSE in chunked transfer encoding,
//! `data: {…}\n\n` events, a usage chunk when `stream_options.include_usage` is set, then
//! `data: [DONE]`) or, without `stream: true`, as one JSON object.
//!
//! **Its own token count.** Each request's prompt is counted with a rule of the server's
//! own, deliberately *not* retrace's tokenizer, as a real server's count is not the
//! client's: `ceil(b / 4)` where `b` is the number of UTF-8 bytes of the compact JSON of the
//! request's `tools` (when present) followed by the compact JSON of its `messages` (both
//! re-serialized by `serde_json` from the parsed body; see [`count_tokens`]). A request over
//! the window is refused with HTTP 400 and OpenAI's real `context_length_exceeded` body
//! ([`overflow_body`]), and the refusal is recorded.
//!
//! **What it answers** (see [`Config`]):
//! - a request whose *last* message is a user message containing "summar"
//!   (case-insensitive): a plain-text summary saying how many messages it saw (and, on
//!   purpose, neither repeating the task, so a summary cannot carry the task for the
//!   runtime, nor saying "summar…" itself);
//! - otherwise, until `steps` requests have been answered with a tool call: one call of
//!   `fs.read` (under the wire name the request's tool catalog gives it, `fs__read`) with
//!   `{"path": "file-<k % 10>.txt"}`, `k` counting the calls made before;
//! - after that: the final text `done`.
//!
//! A request byte-identical to one answered before (a retry after a crash, say) gets the
//! same answer again and does not count as a new step, so a killed-and-resumed run sees the
//! same replies as an uninterrupted one.
//!
//! Usage reports `prompt_tokens` = the server's count, a small `completion_tokens`, and
//! `prompt_tokens_details.cached_tokens` as OpenAI's prompt cache would: the prefix (of the
//! counted text: tools, then messages) shared with the previous accepted request, in tokens,
//! when at least 1,024, rounded down to a multiple of 128.
//!
//! **Held summaries.** With [`WindowServer::delay_summaries`] set, a summary request is held
//! that long before its reply is written (its answer is decided, and recorded, on arrival);
//! [`WindowServer::held_summaries`] says which are held right now, so a kill test can kill
//! the runtime while a compaction is in flight and know that it did.
//!
//! Every request is recorded ([`Record`]); [`WindowServer::stats`] gives them for a test to
//! assert on, and `GET /stats` (`GET /stats?full` with every record) gives the same as JSON
//! for scripts (the `window-server` binary).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server enforces and answers.
#[derive(Clone, Debug)]
pub struct Config {
    /// The context window in the server's own tokens ([`count_tokens`]); a request above it
    /// is refused with the 400.
    pub window: u64,
    /// How many requests are answered with a tool call before the final answer.
    pub steps: u64,
    /// The run's task: each request is checked for it (in any message's text).
    pub task: String,
}

/// The server's token count of a chat-completions request `body`: `ceil(b / 4)` with `b` the
/// UTF-8 bytes of the compact JSON of `tools` (when present) then of `messages`.
pub fn count_tokens(body: &Value) -> u64 {
    (counted_text(body).len() as u64).div_ceil(4)
}

/// The text [`count_tokens`] counts (and the prompt cache compares): tools, then messages.
fn counted_text(body: &Value) -> String {
    let mut text = match body.get("tools") {
        Some(tools) if !tools.is_null() => tools.to_string(),
        _ => String::new(),
    };
    text.push_str(
        &body
            .get("messages")
            .map_or_else(String::new, Value::to_string),
    );
    text
}

/// OpenAI's error body for a request of `tokens` over a window of `window` tokens.
pub fn overflow_body(window: u64, tokens: u64) -> Value {
    json!({"error": {
        "message": format!("This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }})
}

/// What a request was answered with.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The 400 `context_length_exceeded`.
    Refused,
    /// A call of `fs.read`; `k` is the number of calls made before it.
    ToolCall {
        /// Calls made before.
        k: u64,
    },
    /// A summary (the request asked for one).
    Summary,
    /// The final answer `done`.
    Done,
    /// A malformed request (not JSON, no `messages`): a 400 `invalid_request_error`.
    Invalid,
}

/// One request as the server saw it.
#[allow(clippy::struct_excessive_bools)] // a record of facts, each a yes or no
#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    /// The server's token count ([`count_tokens`]).
    pub tokens: u64,
    /// Whether it was refused for exceeding the window.
    pub refused: bool,
    /// Whether some message's text contains the run's task.
    pub has_task: bool,
    /// Whether it asked for a summary.
    pub summary: bool,
    /// The size of the request body in bytes.
    pub body_bytes: usize,
    /// How many messages it had.
    pub messages: usize,
    /// Prompt tokens a prompt cache would have served (0 when refused).
    pub cached_tokens: u64,
    /// Whether it repeated an earlier request byte for byte (and got the same answer).
    pub repeat: bool,
    /// Whether it asked for a stream.
    pub stream: bool,
    /// What it got.
    pub answer: Answer,
}

/// Everything the server saw, in order, with the figures the acceptance runs ask for.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// The window the server enforced.
    pub window: u64,
    /// Every request (chat completions only), in arrival order.
    pub requests: Vec<Record>,
}

impl Stats {
    fn chat(&self) -> impl Iterator<Item = &Record> {
        self.requests.iter().filter(|r| r.answer != Answer::Invalid)
    }

    fn accepted(&self) -> impl Iterator<Item = &Record> {
        self.chat().filter(|r| !r.refused)
    }

    /// The largest request the server accepted, in its tokens (never above the window).
    pub fn max_accepted_tokens(&self) -> u64 {
        self.accepted().map(|r| r.tokens).max().unwrap_or(0)
    }

    /// The largest request sent, accepted or not: above the window exactly when a request
    /// was refused.
    pub fn max_request_tokens(&self) -> u64 {
        self.chat().map(|r| r.tokens).max().unwrap_or(0)
    }

    /// Chat-completions requests received (refused and repeated ones included).
    pub fn chat_requests(&self) -> usize {
        self.chat().count()
    }

    /// Requests refused for exceeding the window.
    pub fn refusals(&self) -> usize {
        self.chat().filter(|r| r.refused).count()
    }

    /// Requests (refused ones included) in which no message contains the task.
    pub fn missing_task(&self) -> usize {
        self.chat().filter(|r| !r.has_task).count()
    }

    /// Requests that asked for a summary.
    pub fn summaries(&self) -> usize {
        self.chat().filter(|r| r.summary).count()
    }

    /// Requests answered with a tool call (repeats included).
    pub fn tool_calls(&self) -> usize {
        self.chat()
            .filter(|r| matches!(r.answer, Answer::ToolCall { .. }))
            .count()
    }

    /// Whether the final answer `done` was given.
    pub fn finished(&self) -> bool {
        self.chat().any(|r| r.answer == Answer::Done)
    }

    /// Prompt tokens of all accepted requests (what the run was billed for).
    pub fn total_prompt_tokens(&self) -> u64 {
        self.accepted().map(|r| r.tokens).sum()
    }

    /// Of [`Stats::total_prompt_tokens`], those a prompt cache would have served.
    pub fn cached_prompt_tokens(&self) -> u64 {
        self.accepted().map(|r| r.cached_tokens).sum()
    }

    /// The largest request body in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.chat().map(|r| r.body_bytes).max().unwrap_or(0)
    }

    /// The figures as JSON (what `GET /stats` answers); with every record when `full`.
    pub fn summary_json(&self, full: bool) -> Value {
        let mut out = json!({
            "window": self.window,
            "requests": self.chat().count(),
            "accepted": self.accepted().count(),
            "refusals": self.refusals(),
            "missing_task": self.missing_task(),
            "summaries": self.summaries(),
            "tool_calls": self.tool_calls(),
            "finished": self.finished(),
            "max_request_tokens": self.max_request_tokens(),
            "max_accepted_tokens": self.max_accepted_tokens(),
            "total_prompt_tokens": self.total_prompt_tokens(),
            "cached_prompt_tokens": self.cached_prompt_tokens(),
            "max_body_bytes": self.max_body_bytes(),
        });
        if full {
            out["records"] = serde_json::to_value(&self.requests).expect("records serialize");
        }
        out
    }
}

/// A response to write.
enum Response {
    /// A whole JSON body with this status line.
    Json(&'static str, Value),
    /// An event stream: each item one `data:` event (and one HTTP chunk).
    Sse(Vec<String>),
}

/// The model's side: what it has answered so far.
struct Model {
    config: Config,
    stats: Stats,
    /// Tool calls made (distinct requests answered with one).
    calls: u64,
    /// Distinct answers given (the reply ids count them).
    answers: u64,
    /// Answers by request body hash, for repeats: the answer, its id and the cached tokens
    /// it reported (a repeat reports them again, so its reply is the same bytes).
    answered: HashMap<u64, (Answer, u64, u64)>,
    /// How long a summary request is held before its reply ([`WindowServer::delay_summaries`]).
    summary_delay: Duration,
    /// Summary requests held right now, by their index in `stats.requests`.
    held: std::collections::BTreeSet<usize>,
    /// The counted text of the previous accepted request (the prompt cache).
    previous: String,
}

const CREATED: u64 = 1_750_000_000;

impl Model {
    fn new(config: Config) -> Self {
        Self {
            stats: Stats {
                window: config.window,
                requests: Vec::new(),
            },
            config,
            calls: 0,
            answers: 0,
            answered: HashMap::new(),
            summary_delay: Duration::ZERO,
            held: std::collections::BTreeSet::new(),
            previous: String::new(),
        }
    }

    fn invalid(&mut self, bytes: usize, message: &str) -> Response {
        self.stats.requests.push(Record {
            tokens: 0,
            refused: false,
            has_task: false,
            summary: false,
            body_bytes: bytes,
            messages: 0,
            cached_tokens: 0,
            repeat: false,
            stream: false,
            answer: Answer::Invalid,
        });
        Response::Json(
            "400 Bad Request",
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
        )
    }

    /// [`Model::complete`], and whether to hold the reply: a summary request answered while
    /// a delay is set is held for that long (the index of its record and the delay).
    fn complete_or_hold(&mut self, raw: &[u8]) -> (Response, Option<(usize, Duration)>) {
        let before = self.stats.requests.len();
        let response = self.complete(raw);
        let index = self.stats.requests.len() - 1;
        let hold = (self.stats.requests.len() > before
            && self.stats.requests[index].answer == Answer::Summary
            && !self.summary_delay.is_zero())
        .then_some((index, self.summary_delay));
        if hold.is_some() {
            self.held.insert(index);
        }
        (response, hold)
    }

    /// Answer one chat-completions request body.
    fn complete(&mut self, raw: &[u8]) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(raw) else {
            return self.invalid(
                raw.len(),
                "We could not parse the JSON body of your request.",
            );
        };
        let Some(messages) = body.get("messages").and_then(Value::as_array) else {
            return self.invalid(raw.len(), "Missing required parameter: 'messages'.");
        };
        let text = counted_text(&body);
        let tokens = (text.len() as u64).div_ceil(4);
        let has_task = messages
            .iter()
            .any(|m| message_text(m).contains(&self.config.task));
        let last = messages.last();
        let summary = last.is_some_and(|m| {
            m["role"] == "user" && message_text(m).to_lowercase().contains("summar")
        });
        let stream = body["stream"] == true;
        let mut record = Record {
            tokens,
            refused: false,
            has_task,
            summary,
            body_bytes: raw.len(),
            messages: messages.len(),
            cached_tokens: 0,
            repeat: false,
            stream,
            answer: Answer::Refused,
        };
        if tokens > self.config.window {
            record.refused = true;
            self.stats.requests.push(record);
            return Response::Json("400 Bad Request", overflow_body(self.config.window, tokens));
        }

        let common = text
            .bytes()
            .zip(self.previous.bytes())
            .take_while(|(a, b)| a == b)
            .count() as u64
            / 4;
        record.cached_tokens = if common >= 1024 {
            common / 128 * 128
        } else {
            0
        };
        self.previous = text;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        raw.hash(&mut hasher);
        let key = hasher.finish();
        let (answer, id) = if let Some((answer, id, cached)) = self.answered.get(&key) {
            record.repeat = true;
            record.cached_tokens = *cached;
            (answer.clone(), *id)
        } else {
            let answer = if summary {
                Answer::Summary
            } else if self.calls < self.config.steps {
                self.calls += 1;
                Answer::ToolCall { k: self.calls - 1 }
            } else {
                Answer::Done
            };
            self.answers += 1;
            self.answered
                .insert(key, (answer.clone(), self.answers, record.cached_tokens));
            (answer, self.answers)
        };
        record.answer = answer.clone();
        let cached = record.cached_tokens;
        self.stats.requests.push(record);

        render(&body, &answer, messages.len(), tokens, cached, id)
    }
}

/// The reply for `answer` to the request `body` (of `messages` messages, `tokens` of them by
/// the server's count, `cached` served by the prompt cache): a stream or one JSON object, as
/// the request asked. `id` numbers the distinct answers.
fn render(
    body: &Value,
    answer: &Answer,
    messages: usize,
    tokens: u64,
    cached: u64,
    id: u64,
) -> Response {
    let stream = body["stream"] == true;
    let usage_chunk = stream && body["stream_options"]["include_usage"] == true;
    let model = body["model"].as_str().unwrap_or("test-model").to_owned();
    let (content, call, finish) = match answer {
        Answer::ToolCall { k } => {
            let name = read_tool_name(body);
            let arguments = json!({"path": format!("file-{}.txt", k % 10)}).to_string();
            (
                None,
                Some((format!("call_{k:05}"), name, arguments)),
                "tool_calls",
            )
        }
        Answer::Summary => (
            // never the word the server looks for: placed last in a later request (the
            // runtime's layout may), it must not read as another compaction request
            Some(format!(
                "Progress so far ({messages} messages seen): the files of the workspace are being read one at a time with fs.read. Next step: read the next file."
            )),
            None,
            "stop",
        ),
        Answer::Done => (Some("done".to_owned()), None, "stop"),
        Answer::Refused | Answer::Invalid => unreachable!("answered above"),
    };
    let completion = content
        .as_ref()
        .map_or(24, |t| (t.len() as u64).div_ceil(4));
    let usage = json!({
        "prompt_tokens": tokens,
        "completion_tokens": completion,
        "total_tokens": tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    });
    let id = format!("chatcmpl-ws{id:06}");
    if stream {
        Response::Sse(stream_events(
            &id,
            &model,
            content.as_deref(),
            call.as_ref(),
            finish,
            usage_chunk.then_some(usage),
        ))
    } else {
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if let Some((call_id, name, arguments)) = call {
            message["tool_calls"] = json!([{"id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}}]);
        }
        Response::Json(
            "200 OK",
            json!({
                "id": id, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": usage, "system_fingerprint": null,
            }),
        )
    }
}

/// The SSE events of one streamed answer, as OpenAI sends them: a role chunk, the content
/// in pieces or the call (name first, arguments in fragments), the finish chunk, the usage
/// chunk (empty `choices`) when asked for, `[DONE]`.
fn stream_events(
    id: &str,
    model: &str,
    content: Option<&str>,
    call: Option<&(String, String, String)>,
    finish: &str,
    usage: Option<Value>,
) -> Vec<String> {
    let with_usage = usage.is_some();
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if with_usage {
            c["usage"] = Value::Null;
        }
        c.to_string()
    };
    let mut events = Vec::new();
    if let Some(text) = content {
        events.push(chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        ));
        for piece in text.split_inclusive(' ') {
            events.push(chunk(json!({"content": piece}), None));
        }
    }
    if let Some((call_id, name, arguments)) = call {
        events.push(chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": call_id,
                "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        let cut = arguments.len() / 2;
        let cut = (cut..=arguments.len())
            .find(|&i| arguments.is_char_boundary(i))
            .unwrap_or(arguments.len());
        for piece in [&arguments[..cut], &arguments[cut..]] {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(chunk(json!({}), Some(finish)));
    if let Some(usage) = usage {
        events.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                "system_fingerprint": null, "choices": [], "usage": usage})
            .to_string(),
        );
    }
    events.push("[DONE]".to_owned());
    events
}

/// The text of a message: its `content` string, or the `text` of its content parts.
fn message_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The wire name of `fs.read` in the request's catalog (`fs__read` from retrace), or
/// `fs__read` when the request offers none.
fn read_tool_name(body: &Value) -> String {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .find(|n| *n == "fs__read" || *n == "fs.read" || *n == "fs_read")
        .unwrap_or("fs__read")
        .to_owned()
}

/// A running server. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct WindowServer {
    /// Where it listens.
    pub addr: SocketAddr,
    model: Arc<Mutex<Model>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("requests", &self.stats.requests.len())
            .finish_non_exhaustive()
    }
}

impl WindowServer {
    /// Start on a loopback port of its own, served by a thread of its own (so it works from
    /// plain and async tests alike).
    pub fn spawn(config: Config) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the window server");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback");
                let addr = listener.local_addr().expect("address");
                let model = Arc::new(Mutex::new(Model::new(config)));
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
                let _ = tx.send((addr, Arc::clone(&model), stop_tx));
                accept(listener, model, stop_rx).await;
            });
        });
        let (addr, model, stop) = rx.recv().expect("the window server started");
        Self {
            addr,
            model,
            stop: Some(stop),
        }
    }

    /// Start listening on `addr` on the current tokio runtime (the `window-server` binary).
    pub async fn bind(addr: SocketAddr, config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let model = Arc::new(Mutex::new(Model::new(config)));
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(accept(listener, Arc::clone(&model), stop_rx));
        Ok(Self {
            addr,
            model,
            stop: Some(stop),
        })
    }

    /// The URL of `path` on this server (`http://127.0.0.1:PORT{path}`); the spec's
    /// `base_url` is `url("/v1")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Hold every summary reply `delay` from now on (zero: answer at once), as a slow
    /// model would; the answer is decided and recorded when the request arrives.
    pub fn delay_summaries(&self, delay: Duration) {
        self.model.lock().expect("lock").summary_delay = delay;
    }

    /// The summary requests held right now (received, reply not yet written), by their
    /// index in [`Stats::requests`].
    pub fn held_summaries(&self) -> Vec<usize> {
        self.model
            .lock()
            .expect("lock")
            .held
            .iter()
            .copied()
            .collect()
    }

    /// Start over as a fresh server with `config` on the same address (so a second run can
    /// be given the same spec, `base_url` included); call it between runs, with no request
    /// in flight.
    pub fn reset(&self, config: Config) {
        *self.model.lock().expect("lock") = Model::new(config);
    }

    /// How many requests (chat completions, any answer) have arrived so far.
    pub fn request_count(&self) -> usize {
        self.model.lock().expect("lock").stats.requests.len()
    }

    /// What it saw so far.
    pub fn stats(&self) -> Stats {
        self.model.lock().expect("lock").stats.clone()
    }
}

impl Drop for WindowServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn accept(
    listener: TcpListener,
    model: Arc<Mutex<Model>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let _ = socket.set_nodelay(true);
                tokio::spawn(connection(socket, Arc::clone(&model)));
            }
        }
    }
}

/// Serve requests on one connection until the client closes it (or asks to).
async fn connection(mut socket: TcpStream, model: Arc<Mutex<Model>>) {
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut socket, &mut buf).await {
        let line = head.lines().next().unwrap_or_default();
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let response = match (method, path) {
            ("POST", p) if p.ends_with("/chat/completions") => {
                let (response, hold) = model.lock().expect("lock").complete_or_hold(&body);
                if let Some((index, delay)) = hold {
                    tokio::time::sleep(delay).await;
                    model.lock().expect("lock").held.remove(&index);
                }
                response
            }
            ("POST", "/delay") => {
                // `POST /delay?summary_ms=N`: hold summary replies N ms from now on
                let ms = target
                    .split_once("summary_ms=")
                    .and_then(|(_, v)| v.split('&').next()?.parse().ok())
                    .unwrap_or(0);
                model.lock().expect("lock").summary_delay = Duration::from_millis(ms);
                Response::Json("200 OK", json!({"summary_delay_ms": ms}))
            }
            ("GET", "/stats") => {
                let model = model.lock().expect("lock");
                let mut stats = model.stats.summary_json(target.contains("full"));
                stats["held_summaries"] = json!(model.held);
                Response::Json("200 OK", stats)
            }
            ("GET", "/health") => Response::Json("200 OK", json!({"status": "ok"})),
            _ => Response::Json(
                "404 Not Found",
                json!({"error": {"message": format!("Unknown request URL: {method} {path}."), "type": "invalid_request_error", "param": null, "code": "unknown_url"}}),
            ),
        };
        let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if write_response(&mut socket, response, close).await.is_err() || close {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

async fn write_response(
    socket: &mut TcpStream,
    response: Response,
    close: bool,
) -> std::io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    match response {
        Response::Json(status, body) => {
            let body = body.to_string();
            let out = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\nx-request-id: req_window_server\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(out.as_bytes()).await?;
        }
        Response::Sse(events) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\ncache-control: no-cache\r\nconnection: {connection}\r\nx-request-id: req_window_server\r\n\r\n"
            );
            socket.write_all(head.as_bytes()).await?;
            for event in events {
                let data = format!("data: {event}\n\n");
                socket
                    .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
                    .await?;
                socket.flush().await?;
            }
            socket.write_all(b"0\r\n\r\n").await?;
        }
    }
    socket.flush().await
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Read more bytes into `buf`; false at the end of the stream.
async fn fill(socket: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(64 * 1024);
    matches!(socket.read_buf(buf).await, Ok(n) if n > 0)
}

/// The next request on the connection (head, body), consumed from `buf`; `None` when the
/// client closed it. Bodies framed by `content-length` or chunked transfer encoding.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if !fill(socket, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let chunked = header(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                if !fill(socket, buf).await {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !fill(socket, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Some((head, body));
            }
        }
    }
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        if !fill(socket, buf).await {
            return None;
        }
    }
    let body = buf.drain(..len).collect();
    Some((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    fn config(window: u64, steps: u64) -> Config {
        Config {
            window,
            steps,
            task: "Read the ten files and report TASK-7F3A".into(),
        }
    }

    /// POST `body` to the server with `connection: close`; the raw response.
    fn post(server: &WindowServer, body: &Value) -> String {
        let body = body.to_string();
        let mut socket = std::net::TcpStream::connect(server.addr).expect("connect");
        write!(
            socket,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut out = String::new();
        socket.read_to_string(&mut out).expect("read");
        out
    }

    /// The JSON events of a raw SSE response (`[DONE]` left out).
    fn sse_events(raw: &str) -> Vec<Value> {
        raw.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("JSON event"))
            .collect()
    }

    /// The streamed call's arguments, fragments joined.
    fn call_arguments(events: &[Value]) -> String {
        events
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect()
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[test]
    fn a_request_over_the_window_gets_openai_s_400_and_is_recorded() {
        let server = WindowServer::spawn(config(100, 3));
        let body = json!({"model": "m", "messages": [user(&"x".repeat(1000))]});
        let tokens = count_tokens(&body);
        assert_eq!(
            tokens,
            (body["messages"].to_string().len() as u64).div_ceil(4)
        );
        assert!(tokens > 100);
        let raw = post(&server, &body);
        assert!(raw.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{raw}");
        let (_, json_body) = raw.split_once("\r\n\r\n").expect("a body");
        let parsed: Value = serde_json::from_str(json_body).expect("JSON");
        assert_eq!(
            parsed,
            json!({"error": {
                "message": format!("This model's maximum context length is 100 tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."),
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
        );
        let stats = server.stats();
        assert_eq!(stats.refusals(), 1);
        assert_eq!(stats.missing_task(), 1);
        assert_eq!(stats.max_request_tokens(), tokens);
        assert_eq!(stats.max_accepted_tokens(), 0);
        assert_eq!(stats.total_prompt_tokens(), 0);
    }

    #[test]
    fn a_stream_is_sse_in_http_chunks_with_usage_only_when_asked() {
        let server = WindowServer::spawn(config(10_000, 3));
        let task = server.model.lock().expect("lock").config.task.clone();
        let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [user(&task)],
            "tools": [{"type": "function", "function": {"name": "fs__read", "parameters": {}}}]});
        let raw = post(&server, &body);
        assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
        assert!(raw.contains("content-type: text/event-stream"), "{raw}");
        let events = sse_events(&raw);
        assert!(raw.ends_with("data: [DONE]\n\n\r\n0\r\n\r\n"), "{raw}");
        let arguments = call_arguments(&events);
        assert_eq!(arguments, r#"{"path":"file-0.txt"}"#);
        assert_eq!(
            events[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "fs__read"
        );
        let last = events.last().expect("events");
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], count_tokens(&body));
        assert_eq!(
            events[events.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );

        // no include_usage: no usage chunk, no usage field
        let mut plain = body.clone();
        plain["stream_options"] = Value::Null;
        plain["messages"] = json!([user(&task), user("next")]);
        let raw = post(&server, &plain);
        assert!(!raw.contains("usage"), "{raw}");
        assert_eq!(
            call_arguments(&sse_events(&raw)),
            r#"{"path":"file-1.txt"}"#
        );

        let stats = server.stats();
        assert_eq!(stats.tool_calls(), 2);
        assert_eq!(stats.missing_task(), 0);
        assert_eq!(stats.refusals(), 0);
    }

    #[test]
    fn summary_then_done_after_the_steps_and_a_repeat_gets_the_same_answer() {
        let server = WindowServer::spawn(config(10_000, 1));
        let first = json!({"model": "m", "messages": [user("go")]});
        let a = post(&server, &first);
        assert!(a.contains("file-0.txt"), "{a}");
        let again = post(&server, &first);
        let body = |r: &str| r.split_once("\r\n\r\n").expect("body").1.to_owned();
        assert_eq!(body(&a), body(&again), "a repeat is answered the same");
        let summary = post(
            &server,
            &json!({"model": "m", "messages": [user("go"), json!({"role": "assistant", "content": "x"}), user("Please SUMMARIZE the above.")]}),
        );
        let reply: Value = serde_json::from_str(&body(&summary)).expect("json");
        let text = reply["choices"][0]["message"]["content"]
            .as_str()
            .expect("text");
        assert!(text.contains("3 messages"), "{text}");
        let done = post(
            &server,
            &json!({"model": "m", "messages": [user("go"), user("more")]}),
        );
        let reply: Value = serde_json::from_str(&body(&done)).expect("json");
        assert_eq!(reply["choices"][0]["message"]["content"], "done");
        assert_eq!(reply["choices"][0]["finish_reason"], "stop");
        let stats = server.stats();
        assert_eq!(stats.summaries(), 1);
        assert_eq!(stats.requests.iter().filter(|r| r.repeat).count(), 1);
        assert!(stats.finished());
    }

    #[test]
    fn a_held_summary_is_listed_until_answered_and_a_repeat_reports_the_same_cache() {
        let server = WindowServer::spawn(config(100_000, 3));
        // long enough for the prompt cache: a repeat must report what the first one did
        let first = json!({"model": "m", "messages": [user(&"w".repeat(8000))]});
        let body = |r: &str| r.split_once("\r\n\r\n").expect("body").1.to_owned();
        let a = post(&server, &first);
        let again = post(&server, &first);
        assert_eq!(body(&a), body(&again), "a repeat is the same bytes");
        assert_eq!(server.stats().requests[1].cached_tokens, 0);

        server.delay_summaries(Duration::from_millis(300));
        let summary = json!({"model": "m", "messages": [user("go"), user("Summarize it.")]});
        let held = std::thread::scope(|s| {
            let reply = s.spawn(|| post(&server, &summary));
            let began = std::time::Instant::now();
            while server.held_summaries().is_empty() {
                assert!(began.elapsed() < Duration::from_secs(5), "never held");
                std::thread::sleep(Duration::from_millis(1));
            }
            let held = server.held_summaries();
            assert!(reply.join().expect("reply").contains("messages seen"));
            held
        });
        assert_eq!(held, vec![2]);
        assert!(server.held_summaries().is_empty(), "released once written");
        server.delay_summaries(Duration::ZERO);
        let began = std::time::Instant::now();
        post(&server, &summary);
        assert!(began.elapsed() < Duration::from_millis(300));
        let stats = server.stats();
        assert_eq!(stats.summaries(), 2);
        assert!(stats.requests[3].repeat);
        server.reset(config(100_000, 3));
        assert_eq!(server.request_count(), 0);
    }

    #[test]
    fn stats_are_served_as_json() {
        let server = WindowServer::spawn(config(50, 1));
        post(
            &server,
            &json!({"model": "m", "messages": [user(&"y".repeat(400))]}),
        );
        let mut socket = std::net::TcpStream::connect(server.addr).expect("connect");
        socket
            .write_all(b"GET /stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .expect("send");
        let mut out = String::new();
        socket.read_to_string(&mut out).expect("read");
        let stats: Value =
            serde_json::from_str(out.split_once("\r\n\r\n").expect("body").1).expect("json");
        assert_eq!(stats["refusals"], 1);
        assert_eq!(stats["window"], 50);
        assert!(stats.get("records").is_none());
    }

    /// retrace's own OpenAI client against the server: the call, the usage, the refusal
    /// classified as a context overflow.
    #[tokio::test(flavor = "multi_thread")]
    async fn retrace_s_openai_client_reads_its_streams_and_its_refusal() {
        use retrace_providers::{
            ChatMessage, Error, HttpSettings, ModelRequest, OpenAi, Provider, ToolDef,
        };
        let server = WindowServer::spawn(config(400, 2));
        let provider = OpenAi::new(HttpSettings::new(server.url("/v1"))).expect("provider");
        let mut request = ModelRequest {
            model: "test-model".into(),
            system: "be brief".into(),
            messages: vec![Arc::new(ChatMessage::User {
                content: "Read the ten files and report TASK-7F3A".into(),
            })],
            tools: vec![ToolDef {
                name: "fs.read".into(),
                description: "read a file".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            }],
            step: 1,
            compaction: false,
            ..ModelRequest::default()
        };
        let reply = provider
            .complete(&request, &mut |_| {})
            .await
            .expect("a reply");
        assert_eq!(reply.tool_calls.len(), 1);
        assert_eq!(reply.tool_calls[0].name, "fs.read");
        assert_eq!(reply.tool_calls[0].arguments, json!({"path": "file-0.txt"}));
        let stats = server.stats();
        assert_eq!(reply.usage.input_tokens, stats.requests[0].tokens);
        assert!(stats.requests[0].stream);

        request.messages.push(Arc::new(ChatMessage::User {
            content: "z".repeat(2000),
        }));
        let err = provider
            .complete(&request, &mut |_| {})
            .await
            .expect_err("refused");
        let tokens = server.stats().requests[1].tokens;
        assert!(
            matches!(err, Error::ContextOverflow { limit: Some(400), requested: Some(r), .. } if r == tokens),
            "{err:?}"
        );
    }
}

//! What the HTTP providers share: settings, the API key (read from the environment, never
//! shown), the client with its timeouts, status classification, SSE reading, and the
//! mapping between retrace's tool names (`fs.read`) and the names wire formats accept
//! (`^[a-zA-Z0-9_-]{1,64}$`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::{Error, ToolDef};

/// Settings of an HTTP provider (from the agent spec's `[model]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Base URL, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key (`None`: send no key, as for
    /// a local server).
    pub api_key_env: Option<String>,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time from sending the request to the response's headers.
    pub first_byte_timeout: Duration,
    /// Longest silence while the response streams.
    pub idle_timeout: Duration,
    /// Time for the whole call.
    pub total_timeout: Duration,
}

impl HttpSettings {
    /// Defaults for `base_url`: 10 s to connect, 60 s to the first byte, 60 s of silence,
    /// 10 min in all.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key_env: None,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_mins(1),
            idle_timeout: Duration::from_mins(1),
            total_timeout: Duration::from_mins(10),
        }
    }
}

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key itself, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why a provider could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The key's environment variable is not set (or empty).
    #[error(
        "the environment variable `{0}` named by `api_key_env` is not set; export the API key in it"
    )]
    MissingKey(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// A reqwest client builder for everything retrace sends over HTTP (model providers, MCP
/// servers): TLS through rustls with the ring provider, retrace's user agent.
pub fn client_builder() -> reqwest::ClientBuilder {
    static TLS: std::sync::Once = std::sync::Once::new();
    // reqwest builds its TLS config from the process's default provider; an application
    // that installed its own keeps it (`install_default` fails and changes nothing)
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().user_agent(concat!("retrace/", env!("CARGO_PKG_VERSION")))
}

/// An HTTP client and what it talks to.
#[derive(Clone, Debug)]
pub struct Http {
    pub(crate) provider: &'static str,
    pub(crate) client: reqwest::Client,
    pub(crate) settings: HttpSettings,
    pub(crate) key: Option<ApiKey>,
}

impl Http {
    /// A client for `settings`, reading the key from its variable now.
    pub fn new(provider: &'static str, settings: HttpSettings) -> Result<Self, SetupError> {
        let key = match &settings.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(ApiKey(key.trim().to_owned())),
                _ => return Err(SetupError::MissingKey(var.clone())),
            },
            None => None,
        };
        let client = client_builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.idle_timeout)
            .build()
            .map_err(|e| SetupError::Client(e.to_string()))?;
        Ok(Self {
            provider,
            client,
            settings,
            key,
        })
    }

    /// `base_url` joined with `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{}", self.settings.base_url.trim_end_matches('/'), path)
    }

    /// A streaming `POST` of the JSON `body` to `path` (authentication is the caller's:
    /// each format sends the key its own way).
    pub(crate) fn stream_request(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("accept", "text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    pub(crate) fn transient(&self, message: impl Into<String>) -> Error {
        Error::Transient {
            provider: self.provider.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn permanent(&self, message: impl Into<String>) -> Error {
        Error::Permanent {
            provider: self.provider.to_owned(),
            message: message.into(),
        }
    }

    /// Send `request`; the response once its headers are in and its status is a success,
    /// or the failure classified.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let sent = tokio::time::timeout(self.settings.first_byte_timeout, request.send()).await;
        let response = match sent {
            Err(_) => {
                return Err(self.transient(format!(
                    "no response within {} s",
                    self.settings.first_byte_timeout.as_secs_f64()
                )));
            }
            Ok(Err(e)) => return Err(self.transient(describe(&e))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        let body = tokio::time::timeout(Duration::from_secs(5), response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = format!("HTTP {}: {}", status.as_u16(), error_message(&body));
        // 408 timeout, 409 conflict (retryable per OpenAI), 429 rate limit, 5xx and
        // Anthropic's 529 overloaded
        if matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error() {
            Err(Error::Transient {
                provider: self.provider.to_owned(),
                message,
                retry_after,
            })
        } else if let Some(window) = crate::error::overflow(status.as_u16(), &body, &message) {
            Err(Error::ContextOverflow {
                provider: self.provider.to_owned(),
                message,
                limit: window.limit,
                requested: window.requested,
            })
        } else {
            Err(self.permanent(message))
        }
    }

    /// The server-sent events of `response`, each as `(event name, data)`, passed to
    /// `on_event` until it returns `Ok(true)` (done). Whether that happened before the
    /// stream ended; a stream that breaks is a transient error.
    ///
    /// Framing follows the SSE standard (WHATWG HTML, "Server-sent events"): comments,
    /// `event:` lines, `data:` with or without its space, CR, LF or CRLF line ends. One
    /// leniency: a last event the body ends without its blank line (servers that close
    /// right after `data: [DONE]` or `message_stop`) is still read, if its data is whole
    /// JSON or `[DONE]`; a last event cut in the middle is a stream that ended early.
    pub(crate) async fn events<B, E>(
        &self,
        body: impl futures::Stream<Item = Result<B, E>>,
        mut on_event: impl FnMut(&str, &str) -> Result<bool, Error>,
    ) -> Result<bool, Error>
    where
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let ended = Arc::new(AtomicBool::new(false));
        let at_end = Arc::clone(&ended);
        let body = body.map(|chunk| chunk.map(Piece::Body));
        // at the body's end, a blank line dispatches an event left without one
        let end = futures::stream::once(async move {
            at_end.store(true, Ordering::Relaxed);
            Ok(Piece::End)
        });
        let mut stream = std::pin::pin!(body.chain(end).eventsource());
        while let Some(event) = stream.next().await {
            let event = event.map_err(|e| self.transient(format!("the stream broke: {e}")))?;
            if ended.load(Ordering::Relaxed)
                && event.data.trim() != "[DONE]"
                && serde_json::from_str::<serde::de::IgnoredAny>(&event.data).is_err()
            {
                return Ok(false);
            }
            if on_event(&event.event, &event.data)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `call`, bounded by the total timeout.
    pub(crate) async fn within_total<T>(
        &self,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout(self.settings.total_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(self.transient(format!(
                    "no complete reply within {} s",
                    self.settings.total_timeout.as_secs_f64()
                )))
            })
    }

    /// The error for a stream that ended before its reply was complete.
    pub(crate) fn cut_short(&self) -> Error {
        self.transient("the stream ended before the reply was complete")
    }
}

/// The pieces of a body the network delivered: `body` cut at `cuts` (offsets, any order,
/// out-of-range ones ignored).
type Pieces = futures::stream::Iter<std::vec::IntoIter<Result<Vec<u8>, std::convert::Infallible>>>;

/// A reply read from `body` by a provider's `whole` (JSON) or `streamed` (SSE) reader, with
/// an [`Http`] of `provider` that sends nothing (for the readers' errors).
pub(crate) fn decode_reply<T>(
    provider: &'static str,
    body: &[u8],
    json: bool,
    cuts: &[usize],
    whole: impl FnOnce(&Http, &str) -> Result<T, Error>,
    streamed: impl FnOnce(&Http, Pieces) -> Result<T, Error>,
) -> Result<T, Error> {
    // one per provider and process: building an HTTP client costs more than a read
    static OFFLINE: std::sync::Mutex<Vec<(&str, &Http)>> = std::sync::Mutex::new(Vec::new());
    let http = {
        let mut made = OFFLINE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, http)) = made.iter().find(|(p, _)| *p == provider) {
            *http
        } else {
            let http =
                Http::new(provider, HttpSettings::new("http://127.0.0.1:9")).map_err(|e| {
                    Error::Permanent {
                        provider: provider.to_owned(),
                        message: e.to_string(),
                    }
                })?;
            let http: &'static Http = Box::leak(Box::new(http));
            made.push((provider, http));
            http
        }
    };
    if json {
        // as `reqwest::Response::text` reads a body: lossy UTF-8
        return whole(http, &String::from_utf8_lossy(body));
    }
    let mut at: Vec<usize> = cuts.iter().copied().filter(|&c| c < body.len()).collect();
    at.sort_unstable();
    at.dedup();
    let mut pieces = Vec::with_capacity(at.len() + 1);
    let mut from = 0;
    for cut in at.into_iter().chain([body.len()]) {
        pieces.push(Ok(body[from..cut].to_vec()));
        from = cut;
    }
    streamed(http, futures::stream::iter(pieces))
}

/// A piece of a response body as the SSE reader takes it: the bytes received, or the
/// blank line added at the end.
enum Piece<B> {
    Body(B),
    End,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Piece<B> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Body(bytes) => bytes.as_ref(),
            Self::End => b"\n\n",
        }
    }
}

/// A `Retry-After` value, in seconds or as an HTTP date (then measured from `now`).
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(secs)),
        Ok(_) => None,
        Err(_) => httpdate::parse_http_date(value)
            .ok()
            .map(|at| at.duration_since(now).unwrap_or_default()),
    }
}

/// A reqwest error in words (never with headers, so never with the key).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    message
}

/// The provider's own message from an error body (`{"error": {"message": …}}` in both
/// formats), else the body itself, shortened.
fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
        })
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| body.trim().to_owned(), str::to_owned);
    let mut short: String = message.chars().take(500).collect();
    if short.len() < message.len() {
        short.push('…');
    }
    if short.is_empty() {
        "(no body)".to_owned()
    } else {
        short
    }
}

/// Longest tool name the model APIs accept (OpenAI and Anthropic: `^[a-zA-Z0-9_-]{1,64}$`).
pub const MAX_WIRE_NAME: usize = 64;

/// Hex digits of the name's hash a wire name ends with when sanitizing alone is not enough
/// (grown for the few names that still collide, see [`WireNames::new`]).
const HASH_HEX: usize = 8;

/// A tool name sanitized for the wire, as retrace always has: `.` becomes `__`, anything
/// else outside `[a-zA-Z0-9_-]` becomes `_` (`mcp.work.docs.getText` is
/// `mcp__work__docs__getText`). Not always unique, and not bounded: [`WireNames`] makes it so.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        match c {
            '.' => out.push_str("__"),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => out.push(c),
            _ => out.push('_'),
        }
    }
    out
}

/// `sanitize(name)` cut so that `_` and `hex` digits of the BLAKE3 of `name` fit in
/// [`MAX_WIRE_NAME`], then those appended: `mcp__work__docs__getText_1a2b3c4d`.
fn hashed(name: &str, sanitized: &str, hex: usize) -> String {
    let digest = blake3::hash(name.as_bytes()).to_hex();
    let keep = MAX_WIRE_NAME - 1 - hex;
    // `sanitize` writes ASCII only: any byte is a character boundary
    format!(
        "{}_{}",
        &sanitized[..sanitized.len().min(keep)],
        &digest[..hex]
    )
}

/// The names the tools of one request go by on the wire, both ways.
///
/// Every model API refuses a tool name outside `^[a-zA-Z0-9_-]{1,64}$`; retrace's names are
/// `fs.read`, `mcp.<server>.<tool as the server names it>` (the server's name may hold dots,
/// spaces, any Unicode). A tool's wire name is its sanitized name ([`sanitize`]: what every
/// retrace version sent, so old runs' requests are rebuilt byte for byte) unless that is
/// longer than 64 characters or shared with another tool of the request
/// (`docs.getText` → `docs__getText`, like a tool really named `docs__getText`); then it is the
/// sanitized name cut, `_`, and the first 8 hex digits of the BLAKE3 of the full name. The
/// rare hashed name still equal to another wire name gets more digits, and so does the other.
///
/// The mapping is a function of the set of the request's tool names only (not their
/// order), and those come from the run's recorded spec (MCP catalogs included), so a
/// resumed run, a replay and `retrace check` see the same wire names the run sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireNames {
    to_wire: std::collections::BTreeMap<String, String>,
    to_tool: std::collections::BTreeMap<String, String>,
}

impl WireNames {
    /// The wire names of `tools`, each unique and within `^[a-zA-Z0-9_-]{1,64}$`.
    pub fn new(tools: &[ToolDef]) -> Self {
        use std::collections::{BTreeMap, BTreeSet};
        let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        let sanitized: BTreeMap<&str, String> = names.iter().map(|n| (*n, sanitize(n))).collect();
        let mut shared: BTreeMap<&str, usize> = BTreeMap::new();
        for wire in sanitized.values() {
            *shared.entry(wire.as_str()).or_default() += 1;
        }
        // how many hex digits each name's hash gets (0: none, the sanitized name as is)
        let mut digits: BTreeMap<&str, usize> = sanitized
            .iter()
            .map(|(name, wire)| {
                let plain =
                    !wire.is_empty() && wire.len() <= MAX_WIRE_NAME && shared[wire.as_str()] == 1;
                (*name, if plain { 0 } else { HASH_HEX })
            })
            .collect();
        loop {
            let wires: BTreeMap<&str, String> = digits
                .iter()
                .map(|(name, &hex)| {
                    let wire = if hex == 0 {
                        sanitized[name].clone()
                    } else {
                        hashed(name, &sanitized[name], hex)
                    };
                    (*name, wire)
                })
                .collect();
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for wire in wires.values() {
                *count.entry(wire.as_str()).or_default() += 1;
            }
            let clashing: Vec<&str> = wires
                .iter()
                .filter(|(_, wire)| count[wire.as_str()] > 1)
                .map(|(name, _)| *name)
                .collect();
            // 62 digits leave one character of the name: past that, only a BLAKE3
            // collision could clash
            if clashing.is_empty() || clashing.iter().all(|n| digits[n] >= MAX_WIRE_NAME - 2) {
                let to_tool = wires
                    .iter()
                    .map(|(name, wire)| (wire.clone(), (*name).to_owned()))
                    .collect();
                let to_wire = wires
                    .into_iter()
                    .map(|(name, wire)| (name.to_owned(), wire))
                    .collect();
                return Self { to_wire, to_tool };
            }
            for name in clashing {
                let hex = digits.get_mut(name).expect("a name of the request");
                *hex = (*hex * 2).clamp(HASH_HEX, MAX_WIRE_NAME - 2);
            }
        }
    }

    /// The wire name of tool `name`. A name not among the request's tools (a call in the
    /// conversation to a tool no longer offered) gets its sanitized name, hashed if too long.
    pub fn wire(&self, name: &str) -> String {
        if let Some(wire) = self.to_wire.get(name) {
            return wire.clone();
        }
        let wire = sanitize(name);
        if wire.is_empty() || wire.len() > MAX_WIRE_NAME {
            hashed(name, &wire, HASH_HEX)
        } else {
            wire
        }
    }

    /// The tool a wire name stands for; a name that is none of them, as given (the call is
    /// then to an unknown tool, which the model is told).
    pub fn tool(&self, wire: &str) -> String {
        self.to_tool
            .get(wire)
            .cloned()
            .unwrap_or_else(|| wire.to_owned())
    }
}

/// Whether `response` is one JSON body (`Content-Type: application/json`) rather than an
/// event stream (a server that ignored `stream: true`).
pub(crate) fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json") && !v.contains("event-stream"))
}

/// The tool a wire name stands for among the request's `tools` ([`WireNames::tool`]).
pub(crate) fn tool_name(tools: &[ToolDef], wire: &str) -> String {
    WireNames::new(tools).tool(wire)
}

/// Tool-call arguments as an OpenAI-compatible server sent them, as the JSON value
/// recorded in the call. The format's `function.arguments` is a string holding a JSON
/// object (OpenAI chat completions reference); what servers really send, and what is kept:
///
/// - blank: `{}` (a call of a tool without parameters);
/// - a JSON text: its value; a JSON string that itself holds a JSON object (arguments
///   encoded twice) is that object;
/// - anything else (`{"path": ` cut short, prose): the raw text as a JSON string, so the
///   call is recorded as the model made it, and the tool refuses it with "arguments are not
///   a JSON object", which the model reads as the call's result and can retry.
///
/// Arguments sent as a JSON object rather than a string (llama.cpp's server) are taken as
/// they are by the caller and never reach here.
pub(crate) fn decode_arguments(text: &str) -> serde_json::Value {
    if text.trim().is_empty() {
        return serde_json::json!({});
    }
    match serde_json::from_str(text) {
        Ok(serde_json::Value::String(inner)) => match serde_json::from_str(&inner) {
            Ok(object @ serde_json::Value::Object(_)) => object,
            _ => serde_json::Value::String(inner),
        },
        Ok(value) => value,
        Err(_) => serde_json::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(names: &[&str]) -> Vec<ToolDef> {
        names
            .iter()
            .map(|n| ToolDef {
                name: (*n).to_owned(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object"}),
            })
            .collect()
    }

    fn valid(wire: &str) -> bool {
        (1..=MAX_WIRE_NAME).contains(&wire.len())
            && wire
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    /// Every name maps to a valid wire name, no two alike, and back to itself.
    fn round_trip(names: &[&str]) -> WireNames {
        let wire = WireNames::new(&tools(names));
        let mut seen = std::collections::BTreeSet::new();
        for name in names {
            let w = wire.wire(name);
            assert!(valid(&w), "{name} -> {w}");
            assert!(seen.insert(w.clone()), "{w} twice");
            assert_eq!(wire.tool(&w), *name, "{w}");
        }
        wire
    }

    #[test]
    fn names_that_needed_no_hash_keep_the_wire_names_they_always_had() {
        let wire = round_trip(&[
            "fs.read",
            "fs.write",
            "text.count",
            "mcp.everything.get-sum",
        ]);
        assert_eq!(wire.wire("fs.read"), "fs__read");
        assert_eq!(
            wire.wire("mcp.everything.get-sum"),
            "mcp__everything__get-sum"
        );
        assert_eq!(wire.tool("fs__read"), "fs.read");
        assert_eq!(wire.tool("no_such_tool"), "no_such_tool");
    }

    #[test]
    fn names_that_sanitize_alike_get_a_stable_hash_each() {
        let names = [
            "mcp.work.docs.getText",
            "mcp.work.docs__getText",
            "mcp.work.docs_getText",
            "mcp.work.calendar.respondToEvent",
        ];
        let wire = round_trip(&names);
        let a = wire.wire("mcp.work.docs.getText");
        let b = wire.wire("mcp.work.docs__getText");
        assert!(
            a.starts_with("mcp__work__docs__getText_") && a.len() == 24 + 1 + 8,
            "{a}"
        );
        assert!(b.starts_with("mcp__work__docs__getText_") && a != b, "{b}");
        // fixed for good: runs record the requests these names are sent in
        assert_eq!(a, "mcp__work__docs__getText_82923e3a");
        // the others collide with nothing and keep their sanitized names
        assert_eq!(
            wire.wire("mcp.work.docs_getText"),
            "mcp__work__docs_getText"
        );
        // the same set in another order: the same names
        let mut reversed = names;
        reversed.reverse();
        assert_eq!(WireNames::new(&tools(&reversed)), wire);
    }

    #[test]
    fn long_and_foreign_names_are_cut_and_hashed_into_the_wire_alphabet() {
        let long = format!("mcp.work.{}", "a".repeat(80));
        let longer = format!("{long}b");
        let wire = round_trip(&[
            &long,
            &longer,
            "mcp.work.send mail",
            "mcp.work.send/mail",
            "mcp.work.послать",
            "mcp.work.送信",
        ]);
        assert_eq!(wire.wire(&long).len(), MAX_WIRE_NAME);
        assert_ne!(wire.wire(&long), wire.wire(&longer));
        // a name not offered in the request still gets a valid wire name
        assert!(valid(&wire.wire(&format!("{long}c"))));
    }

    #[test]
    fn a_name_equal_to_a_hashed_one_pushes_both_to_more_digits() {
        let first = WireNames::new(&tools(&["a.b", "a__b"]));
        let taken = first.wire("a.b");
        let wire = round_trip(&["a.b", "a__b", &taken]);
        assert_ne!(wire.wire(&taken), taken);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Mon, 23 Nov 2026 03:00:00 GMT").expect("date");
        assert_eq!(retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after("0.5", now), Some(Duration::from_millis(500)));
        assert_eq!(
            retry_after("Mon, 23 Nov 2026 03:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Mon, 23 Nov 2026 02:59:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("soon", now), None);
    }
}

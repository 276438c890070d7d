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
    pub(crate) async fn events(
        &self,
        response: reqwest::Response,
        mut on_event: impl FnMut(&str, &str) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let ended = Arc::new(AtomicBool::new(false));
        let at_end = Arc::clone(&ended);
        let body = response.bytes_stream().map(|chunk| chunk.map(Piece::Body));
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

/// A tool name as wire formats accept it: `.` becomes `__`, anything else outside
/// `[a-zA-Z0-9_-]` becomes `_`.
pub(crate) fn wire_name(name: &str) -> String {
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

/// The tool a wire name stands for (by the request's tools), else the name as given.
pub(crate) fn tool_name(tools: &[ToolDef], wire: &str) -> String {
    tools
        .iter()
        .find(|t| wire_name(&t.name) == wire)
        .map_or_else(|| wire.to_owned(), |t| t.name.clone())
}

/// Tool-call arguments as streamed (a JSON text, possibly empty) as a JSON value.
pub(crate) fn parse_arguments(
    http: &Http,
    tool: &str,
    text: &str,
) -> Result<serde_json::Value, Error> {
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(text).map_err(|e| {
        http.permanent(format!(
            "malformed response: the arguments of the call to `{tool}` are not JSON ({e})"
        ))
    })
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

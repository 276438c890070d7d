//! `providers::Error`: every failure says whether retrying may help, and whether the request
//! was too long for the model's context window ([`Error::ContextOverflow`], recognized by
//! [`overflow`] from the error bodies each server documents). Messages never contain
//! credentials.

use std::time::Duration;

use serde_json::Value;

/// A failed model call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Retrying may help: rate limits, server errors, dropped connections, timeouts.
    #[error("{provider}: {message} (transient; retrying may help)")]
    Transient {
        /// Which provider.
        provider: String,
        /// What happened.
        message: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Retrying will not help: bad request, bad credentials, unknown model, malformed reply.
    #[error("{provider}: {message}")]
    Permanent {
        /// Which provider.
        provider: String,
        /// What happened.
        message: String,
    },
    /// Retrying the same request will not help, a shorter one may: the request exceeded the
    /// model's context window (prompt plus room for the reply). A permanent error of its own
    /// kind so the runtime can tell it from a bad request.
    #[error("{provider}: {message}")]
    ContextOverflow {
        /// Which provider.
        provider: String,
        /// What happened, in the provider's words.
        message: String,
        /// The window in tokens, if the provider said.
        limit: Option<u64>,
        /// The tokens the request needed, if the provider said.
        requested: Option<u64>,
    },
}

impl Error {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// What an overflow error said about the window: the limit and the tokens the request
/// needed, each when the provider named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Overflow {
    pub(crate) limit: Option<u64>,
    pub(crate) requested: Option<u64>,
}

/// Phrases that, in a 400 or 413 body's message, mean the request did not fit the window.
const OVERFLOW_WORDS: &[&str] = &[
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "context limit",
    "context size",
    "too many tokens",
    "prompt is too long",
];

/// Whether a failed response (`status`, raw `body`, and the `message` read from it) says the
/// request exceeded the model's context window, and the numbers it gave. Each server's form:
///
/// - OpenAI: `400` with `error.code == "context_length_exceeded"` and the message "This
///   model's maximum context length is 128000 tokens. However, your messages resulted in
///   130415 tokens..." (or "...you requested N tokens (X in the messages, Y in the
///   completion)").
/// - Anthropic: `400 invalid_request_error`, "prompt is too long: 210000 tokens > 200000
///   maximum", or "input length and `max_tokens` exceed context limit: 199759 + 8192 >
///   200000, ...".
/// - vLLM (OpenAI-compatible server): `400`, `type: "BadRequestError"`, numeric `code: 400`,
///   "This model's maximum context length is 4096 tokens. However, you requested 5000
///   tokens (...)", at the top level (`object: "error"`) or under `error`.
/// - llama.cpp server: `400`, `error.type == "exceed_context_size_error"`, with
///   `n_prompt_tokens` and `n_ctx`.
/// - Ollama: `400`, "the input length exceeds the context length" (no numbers).
/// - Others (OpenRouter, gateways): a `400` or `413` whose message names the context length,
///   window, limit or size, the maximum context, or too many tokens.
///
/// Other `400`s (unknown model, bad JSON, `max_tokens` too large) are not overflow.
pub(crate) fn overflow(status: u16, body: &str, message: &str) -> Option<Overflow> {
    if !(400..500).contains(&status) {
        return None;
    }
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed
        .as_ref()
        .map(|v| v.get("error").filter(|e| e.is_object()).unwrap_or(v));
    let field = |name: &str| error.and_then(|e| e.get(name));
    if field("type").and_then(Value::as_str) == Some("exceed_context_size_error") {
        return Some(Overflow {
            limit: field("n_ctx").and_then(Value::as_u64),
            requested: field("n_prompt_tokens").and_then(Value::as_u64),
        });
    }
    let lower = message.to_lowercase();
    let coded = field("code").and_then(Value::as_str) == Some("context_length_exceeded");
    let worded = matches!(status, 400 | 413) && OVERFLOW_WORDS.iter().any(|w| lower.contains(w));
    (coded || worded).then(|| numbers(&lower))
}

/// The window and the request's size as an overflow message (lowercased) states them.
fn numbers(lower: &str) -> Overflow {
    let mut found = Overflow {
        limit: ["maximum context length is", "context length of"]
            .iter()
            .find_map(|m| number_after(lower, m)),
        requested: ["you requested", "resulted in"]
            .iter()
            .find_map(|m| number_after(lower, m)),
    };
    // Anthropic: "...: 210000 tokens > 200000 maximum", "...: 199759 + 8192 > 200000, ..."
    if let Some(at) = lower.find(" > ") {
        let (before, after) = (&lower[..at], &lower[at + 3..]);
        let terms: Option<Vec<u64>> = before
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .split('+')
            .map(|t| leading_number(t.trim_start()))
            .collect();
        found.requested = found
            .requested
            .or_else(|| terms.map(|t| t.iter().sum::<u64>()));
        found.limit = found.limit.or_else(|| leading_number(after));
    }
    found
}

/// The number that follows `marker` in `text`, a word or two after it at most ("about",
/// "over"); thousands separators ignored.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    if start > 8 {
        return None;
    }
    leading_number(&rest[start..])
}

/// The number `text` starts with.
fn leading_number(text: &str) -> Option<u64> {
    let digits: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{Overflow, overflow};

    /// The message `http` reads from a body (`error.message`, `message`, or `error`).
    fn message(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(serde_json::Value::as_str)
            .expect("a message")
            .to_owned()
    }

    fn classify(status: u16, body: &str) -> Option<Overflow> {
        overflow(status, body, &message(body))
    }

    #[test]
    fn real_overflow_bodies_are_classified_with_their_numbers() {
        // server, status, body, limit, requested
        type Case = (&'static str, u16, &'static str, Option<u64>, Option<u64>);
        let cases: &[Case] = &[
            (
                "OpenAI, messages",
                400,
                r#"{"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130415 tokens. Please reduce the length of the messages.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
                Some(128_000),
                Some(130_415),
            ),
            (
                "OpenAI, messages and completion",
                400,
                r#"{"error": {"message": "This model's maximum context length is 4097 tokens. However, you requested 4120 tokens (3120 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
                Some(4097),
                Some(4120),
            ),
            (
                "OpenAI's code with another wording (synthetic)",
                400,
                r#"{"error": {"message": "Input is too long for this model.", "type": "invalid_request_error", "param": "input", "code": "context_length_exceeded"}}"#,
                None,
                None,
            ),
            (
                "Anthropic, prompt too long",
                400,
                r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                Some(200_000),
                Some(210_000),
            ),
            (
                "Anthropic, input plus max_tokens",
                400,
                r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "input length and `max_tokens` exceed context limit: 199759 + 8192 > 200000, decrease input length or `max_tokens` and try again"}}"#,
                Some(200_000),
                Some(207_951),
            ),
            (
                "vLLM, top level",
                400,
                r#"{"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.", "type": "BadRequestError", "param": null, "code": 400}"#,
                Some(4096),
                Some(5000),
            ),
            (
                "vLLM, under error",
                400,
                r#"{"error": {"message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.", "type": "BadRequestError", "param": null, "code": 400}}"#,
                Some(4096),
                Some(5000),
            ),
            (
                "llama.cpp server",
                400,
                r#"{"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 5120, "n_ctx": 4096}}"#,
                Some(4096),
                Some(5120),
            ),
            (
                "Ollama, OpenAI-compatible",
                400,
                r#"{"error": {"message": "the input length exceeds the context length", "type": "invalid_request_error", "param": null, "code": null}}"#,
                None,
                None,
            ),
            (
                "Ollama, native",
                400,
                r#"{"error": "the input length exceeds the context length"}"#,
                None,
                None,
            ),
            (
                "OpenRouter",
                400,
                r#"{"error": {"message": "This endpoint's maximum context length is 16384 tokens. However, you requested about 94307 tokens (94307 of text input). Please reduce the length of either one.", "code": 400}}"#,
                Some(16_384),
                Some(94_307),
            ),
            (
                "a gateway's 413",
                413,
                r#"{"error": {"message": "Request has too many tokens for the context window"}}"#,
                None,
                None,
            ),
        ];
        for (server, status, body, limit, requested) in cases {
            assert_eq!(
                classify(*status, body),
                Some(Overflow {
                    limit: *limit,
                    requested: *requested
                }),
                "{server}"
            );
        }
    }

    #[test]
    fn other_failures_are_not_overflow() {
        let cases: &[(&str, u16, &str)] = &[
            (
                "unknown model",
                404,
                r#"{"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}"#,
            ),
            (
                "invalid model, 400",
                400,
                r#"{"error": {"message": "invalid model ID", "type": "invalid_request_error", "param": null, "code": null}}"#,
            ),
            (
                "bad JSON",
                400,
                r#"{"error": {"message": "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)", "type": "invalid_request_error", "param": null, "code": null}}"#,
            ),
            (
                "max_tokens too large",
                400,
                r#"{"error": {"message": "max_tokens is too large: 100000. This model supports at most 16384 completion tokens, whereas you provided 100000.", "type": "invalid_request_error", "param": "max_tokens", "code": null}}"#,
            ),
            (
                "vLLM negative max_tokens",
                400,
                r#"{"object": "error", "message": "max_tokens must be at least 1, got -186.", "type": "BadRequestError", "param": null, "code": 400}"#,
            ),
            (
                "Anthropic bad request",
                400,
                r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "messages: roles must alternate between \"user\" and \"assistant\""}}"#,
            ),
            (
                "rate limit naming tokens",
                429,
                r#"{"error": {"message": "Rate limit reached: too many tokens per minute", "type": "tokens", "code": "rate_limit_exceeded"}}"#,
            ),
            (
                "server error naming the context",
                500,
                r#"{"error": {"message": "context length computation failed"}}"#,
            ),
        ];
        for (what, status, body) in cases {
            assert_eq!(classify(*status, body), None, "{what}");
        }
    }
}

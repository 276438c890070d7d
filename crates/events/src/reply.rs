//! The recorded form of a model's reply: what a `model_responded` event's `response` blob
//! holds (canonical JSON), and the tool calls it proposes.
//!
//! Providers assemble a [`ModelReply`]; the executor records it and turns its calls into a
//! `tool_calls_proposed` event with [`ModelReply::proposed_calls`]. A fork whose edited reply
//! replaces a recorded one goes through the same function, so an edited reply is followed
//! exactly as a recorded one would be. Edits written by people are checked first with
//! [`ModelReply::from_edit`], which refuses what a reply cannot be.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::ProposedCall;
use crate::id::BlobId;

/// A tool call in a model reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The model's id for the call (unique within the reply).
    pub id: String,
    /// Tool name, e.g. `fs.read`.
    pub name: String,
    /// Arguments: a JSON object (`{}` when the tool takes none).
    #[serde(default)]
    pub arguments: Value,
}

/// Tokens billed for one call.
///
/// `input_tokens` counts every prompt token of the request, those served from or written to
/// the provider's prompt cache included; `cache_read_tokens` and `cache_write_tokens` say how
/// many of them were, so uncached input is `input_tokens - cache_read_tokens -
/// cache_write_tokens`. Providers report this differently and are brought to this form:
/// OpenAI's `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`;
/// Anthropic's `input_tokens` excludes `cache_read_input_tokens` and
/// `cache_creation_input_tokens`, which are added to it
/// (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUsage {
    /// Prompt tokens, all of them (cached ones included).
    pub input_tokens: u64,
    /// Completion tokens (reasoning included, as providers bill them).
    pub output_tokens: u64,
    /// Of the completion tokens, those spent reasoning, when the provider says (OpenAI
    /// `completion_tokens_details.reasoning_tokens`); absent from the blob when 0, so replies
    /// recorded before it existed keep their bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// Of the prompt tokens, those read from the provider's prompt cache (billed at a
    /// discount): OpenAI `usage.prompt_tokens_details.cached_tokens`
    /// (<https://platform.openai.com/docs/guides/prompt-caching>), Anthropic
    /// `usage.cache_read_input_tokens`. Tokens; absent from the blob when 0, so replies
    /// recorded before it existed keep their bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    /// Of the prompt tokens, those written to the provider's prompt cache (Anthropic
    /// `usage.cache_creation_input_tokens`, billed above the input price; OpenAI caches
    /// without charging for it and never reports this). Tokens; absent from the blob when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One block of a model's reasoning, kept as the provider gave it so it can be shown apart
/// from the answer and sent back unchanged where the API requires it (Anthropic: thinking
/// blocks before `tool_use` in the assistant turn; DeepSeek thinking mode: the assistant
/// turn's `reasoning_content`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reasoning {
    /// The thinking text (empty for a redacted block).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Anthropic's `signature` of a `thinking` block, returned verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Anthropic's `redacted_thinking` `data`: encrypted, returned verbatim, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
}

/// A model's assembled reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelReply {
    /// Text.
    #[serde(default)]
    pub text: String,
    /// Tool calls, in order.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Tokens.
    #[serde(default)]
    pub usage: TokenUsage,
    /// Why the model stopped, as the provider said it.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The model's reasoning, in order (absent from the blob when there is none, so replies
    /// recorded before it existed keep their bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<Reasoning>,
}

/// Why an edited reply was refused: the JSON path of the fault and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a model reply: {0}; a reply is {{\"text\": \"…\", \"tool_calls\": [{{\"id\": \"…\", \"name\": \"…\", \"arguments\": {{…}}}}]}} (both optional, at least one given; also `usage` and `stop_reason`)"
)]
pub struct ReplyError(pub String);

impl ModelReply {
    /// Check `value`, written by a person (a fork's edit), as a reply: an object with only
    /// the reply's fields (`text`, `tool_calls`, `usage`, `stop_reason`), some text or at
    /// least one call, each call with a non-empty `id` (unique in the reply) and `name`, and
    /// `arguments` a JSON object (absent means `{}`).
    pub fn from_edit(value: &Value) -> Result<Self, ReplyError> {
        if !value.is_object() {
            return Err(ReplyError(format!(
                "it must be a JSON object, found {}",
                kind_of(value)
            )));
        }
        let mut reply: Self =
            serde_json::from_value(value.clone()).map_err(|e| ReplyError(e.to_string()))?;
        if reply.text.is_empty() && reply.tool_calls.is_empty() {
            return Err(ReplyError(
                "it has neither `text` nor `tool_calls`: the model would have said nothing"
                    .to_owned(),
            ));
        }
        for (i, call) in reply.tool_calls.iter_mut().enumerate() {
            if call.id.trim().is_empty() {
                return Err(ReplyError(format!("tool_calls[{i}].id is empty")));
            }
            // what model APIs accept as a call id (Anthropic: `^[a-zA-Z0-9_-]+$`), so an
            // edited call can be sent back, and prints as one word
            let well_formed = call.id.len() <= 128
                && call
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !well_formed {
                return Err(ReplyError(format!(
                    "tool_calls[{i}].id {:?}: use 1–128 of a-z, A-Z, 0-9, `_` and `-`",
                    call.id
                )));
            }
            if call.name.trim().is_empty() {
                return Err(ReplyError(format!("tool_calls[{i}].name is empty")));
            }
            match &call.arguments {
                Value::Null => call.arguments = Value::Object(serde_json::Map::new()),
                Value::Object(_) => {}
                other => {
                    return Err(ReplyError(format!(
                        "tool_calls[{i}].arguments must be a JSON object, found {}",
                        kind_of(other)
                    )));
                }
            }
        }
        for (i, call) in reply.tool_calls.iter().enumerate() {
            if reply.tool_calls[..i].iter().any(|c| c.id == call.id) {
                return Err(ReplyError(format!(
                    "tool_calls[{i}].id `{}` is used twice",
                    call.id
                )));
            }
        }
        Ok(reply)
    }

    /// The calls this reply proposes, in order, each with its arguments stored by `put`
    /// (which stores canonical JSON and returns its blob id). What `tool_calls_proposed`
    /// records after the reply; empty when the reply calls no tool.
    pub fn proposed_calls<E>(
        &self,
        mut put: impl FnMut(&Value) -> Result<BlobId, E>,
    ) -> Result<Vec<ProposedCall>, E> {
        self.tool_calls
            .iter()
            .map(|call| {
                Ok(ProposedCall {
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    args: put(&call.arguments)?,
                    path: call_subject(&call.name, &call.arguments),
                })
            })
            .collect()
    }
}

/// Longest subject ([`ProposedCall::path`]) a proposal carries, in bytes: the event holding
/// the proposals stays small (a heredoc command can be megabytes; its arguments are a blob).
pub const SUBJECT_LIMIT: usize = 1024;
/// The subject policy rules see in a call of `tool` with `arguments` ([`ProposedCall::path`]):
/// its [`subject_key`] argument, normalised ([`policy_subject`]).
pub fn call_subject(tool: &str, arguments: &Value) -> Option<String> {
    arguments
        .get(subject_key(tool))
        .and_then(Value::as_str)
        .map(|subject| policy_subject(tool, subject))
}

/// The subject of a call whose argument is longer than [`SUBJECT_LIMIT`]: no rule matches
/// it, and the policy asks a human (NUL cannot be in a path, URL or command line).
pub const OVERLONG_SUBJECT: &str = "\u{0}overlong";

/// A call's subject as policy rules see it: a URL in its normalised form (what
/// `web.fetch` will request: scheme and host lower-cased, `.`/`..` segments resolved, IPv4
/// written out), anything longer than [`SUBJECT_LIMIT`] as [`OVERLONG_SUBJECT`].
fn policy_subject(tool: &str, subject: &str) -> String {
    let subject = match subject_key(tool) {
        "url" => url::Url::parse(subject).map_or_else(|_| subject.to_owned(), String::from),
        _ => subject.to_owned(),
    };
    if subject.len() > SUBJECT_LIMIT {
        OVERLONG_SUBJECT.to_owned()
    } else {
        subject
    }
}

/// The argument a call's policy rules look at ([`ProposedCall::path`]): `command` for
/// `exec.run`, `url` for `web.fetch`, `path` for every other tool.
pub fn subject_key(tool: &str) -> &'static str {
    match tool {
        "exec.run" => "command",
        "web.fetch" => "url",
        _ => "path",
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_proposal_carries_its_subject_normalised_and_bounded() {
        let reply = ModelReply::from_edit(&json!({"tool_calls": [
            {"id": "a", "name": "exec.run", "arguments": {"command": "cargo test"}},
            {"id": "b", "name": "web.fetch", "arguments": {"url": "HTTP://127.1:8080/public/../secret/./a"}},
            {"id": "c", "name": "exec.run", "arguments": {"command": "x".repeat(SUBJECT_LIMIT + 1)}},
            {"id": "d", "name": "fs.read", "arguments": {"path": "src/lib.rs"}}]}))
        .unwrap();
        let calls = reply
            .proposed_calls(|_| Ok::<_, ()>(BlobId::of(b"args")))
            .unwrap();
        let subjects: Vec<Option<&str>> = calls.iter().map(|c| c.path.as_deref()).collect();
        assert_eq!(
            subjects,
            [
                Some("cargo test"),
                Some("http://127.0.0.1:8080/secret/a"),
                Some(OVERLONG_SUBJECT),
                Some("src/lib.rs")
            ]
        );
    }

    #[test]
    fn edits_that_are_not_replies_are_refused_with_what_is_wrong() {
        let cases = [
            (
                json!("just a string"),
                "must be a JSON object, found a string",
            ),
            (json!({"txt": "I am done"}), "unknown field `txt`"),
            (json!({"entries": []}), "unknown field `entries`"),
            (json!({}), "neither `text` nor `tool_calls`"),
            (
                json!({"tool_calls": [{"id": "", "name": "fs.read"}]}),
                "tool_calls[0].id is empty",
            ),
            (
                json!({"tool_calls": [{"id": "a", "name": "fs.read", "arguments": "x"}]}),
                "tool_calls[0].arguments must be a JSON object, found a string",
            ),
            (
                json!({"tool_calls": [{"id": "a", "name": "x"}, {"id": "a", "name": "y"}]}),
                "tool_calls[1].id `a` is used twice",
            ),
            (
                json!({"tool_calls": [{"id": "x\ny\u{1b}[31m", "name": "fs.read"}]}),
                "use 1–128 of a-z",
            ),
            (
                json!({"text": "hi", "tool_calls": [{"id": "a", "name": "x", "args": {}}]}),
                "unknown field `args`",
            ),
        ];
        for (value, expected) in cases {
            let err = ModelReply::from_edit(&value).expect_err(&value.to_string());
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn a_good_edit_is_a_reply_and_proposes_its_calls_in_order() {
        let reply = ModelReply::from_edit(&json!({
            "text": "Let me read the calc.",
            "tool_calls": [
                {"id": "c9", "name": "fs.read", "arguments": {"path": "src/calc.txt"}},
                {"id": "c10", "name": "fs.list"}
            ],
            "stop_reason": "tool_use"
        }))
        .expect("a reply");
        assert_eq!(reply.tool_calls[1].arguments, json!({}));
        let mut stored = Vec::new();
        let calls = reply
            .proposed_calls(|v| {
                stored.push(v.clone());
                Ok::<_, ()>(crate::json_blob_id(v))
            })
            .expect("no store error");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].call_id, "c9");
        assert_eq!(calls[0].tool, "fs.read");
        assert_eq!(calls[0].path.as_deref(), Some("src/calc.txt"));
        assert_eq!(
            calls[0].args,
            crate::json_blob_id(&json!({"path": "src/calc.txt"}))
        );
        assert_eq!(calls[1].path, None);
        assert_eq!(stored, vec![json!({"path": "src/calc.txt"}), json!({})]);
    }

    #[test]
    fn cache_counts_are_kept_and_absent_from_the_blob_when_zero() {
        // a reply recorded before the cache counts existed keeps its bytes
        let old = r#"{"input_tokens":1200,"output_tokens":40}"#;
        let usage: TokenUsage = serde_json::from_str(old).expect("old usage");
        assert_eq!((usage.cache_read_tokens, usage.cache_write_tokens), (0, 0));
        assert_eq!(serde_json::to_string(&usage).expect("json"), old);
        let cached = TokenUsage {
            input_tokens: 1200,
            output_tokens: 40,
            cache_read_tokens: 1024,
            cache_write_tokens: 150,
            ..TokenUsage::default()
        };
        let json = serde_json::to_string(&cached).expect("json");
        assert_eq!(
            json,
            r#"{"input_tokens":1200,"output_tokens":40,"cache_read_tokens":1024,"cache_write_tokens":150}"#
        );
        assert_eq!(
            serde_json::from_str::<TokenUsage>(&json).expect("back"),
            cached
        );
    }
}

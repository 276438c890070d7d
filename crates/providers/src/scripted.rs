//! The scripted provider: plays a cassette of replies, offline and deterministically. The
//! default for demos and tests.
//!
//! A cassette is JSON: `{"replies": [REPLY, ...]}`. The reply for a request is the one at
//! `request.step`, so a resumed run gets the same reply it would have got. A REPLY is:
//!
//! ```json
//! {"text": "…", "tool_calls": [{"id": "call_1", "name": "fs.read", "arguments": {"path": "README.md"}}],
//!  "reasoning": [{"text": "The README says what it is.", "signature": "…"}],
//!  "usage": {"input_tokens": 120, "output_tokens": 30},
//!  "latency_ms": 40,
//!  "error": {"transient": true, "message": "overloaded"}}
//! ```
//!
//! Every field is optional. Without `usage`, tokens are estimated as characters ÷ 4. With
//! `error`, the call fails instead (to rehearse retries).
//!
//! A reply may branch on what the run saw last: `"branches": [REPLY, …]`, each with
//! `"when": "text"`; the first branch whose `when` occurs in the request's last message
//! (a tool result, say a human's answer) is played instead of the reply. So a fork that
//! changes an answer continues differently, as a real model would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::types::{ChatMessage, Delta, ModelReply, ModelRequest, Reasoning, TokenUsage, ToolCall};
use crate::{BoxFuture, Provider};

/// A cassette: the replies to play, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cassette {
    /// Replies, one per model call.
    pub replies: Vec<ScriptedReply>,
}

/// One scripted reply (or failure).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    /// Reply text.
    #[serde(default)]
    pub text: String,
    /// Tool calls.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Reasoning blocks (as a thinking model's reply carries them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<Reasoning>,
    /// Tokens to report (estimated when absent).
    #[serde(default)]
    pub usage: Option<TokenUsage>,
    /// Simulated latency.
    #[serde(default)]
    pub latency_ms: u64,
    /// Why the model stopped: absent, `tool_use` when the reply calls tools, else
    /// `end_turn`; `null`, no reason (as some providers and recordings have it); a string,
    /// that. A cassette made from a recorded run (`retrace cassette`) keeps the recorded one.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_reason: Option<Option<String>>,
    /// Fail this call instead.
    #[serde(default)]
    pub error: Option<ScriptedError>,
    /// In a branch: the text the request's last message must contain for it to be played.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Replies played instead of this one when their `when` matches (the first that does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<ScriptedReply>,
}

impl ScriptedReply {
    /// The reply to play for `request`: the first branch whose `when` occurs in the last
    /// message, else this one.
    fn for_request(&self, request: &ModelRequest) -> &Self {
        let last = match request.messages.last().map(AsRef::as_ref) {
            Some(ChatMessage::User { content } | ChatMessage::Tool { content, .. }) => {
                content.as_str()
            }
            Some(ChatMessage::Assistant { text, .. }) => text.as_str(),
            None => "",
        };
        self.branches
            .iter()
            .find(|b| b.when.as_deref().is_some_and(|w| last.contains(w)))
            .unwrap_or(self)
    }
}

/// A field that is there, even as `null` (`Some(None)`), told from one that is not (`None`,
/// by `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A scripted failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedError {
    /// Transient (retry) or permanent.
    pub transient: bool,
    /// Message.
    pub message: String,
}

/// Why a cassette could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    /// The file could not be read.
    #[error("cannot read cassette {}: {source}", path.display())]
    Read {
        /// The cassette file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid cassette.
    #[error("{}:{line}:{column}: not a valid cassette: {message}", path.display())]
    Invalid {
        /// The cassette file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Plays a cassette.
#[derive(Clone, Debug)]
pub struct Scripted {
    origin: String,
    cassette: Cassette,
}

impl Scripted {
    /// Load the cassette at `path`.
    pub fn load(path: &Path) -> Result<Self, CassetteError> {
        let text = std::fs::read(path).map_err(|source| CassetteError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cassette = serde_json::from_slice(&text).map_err(|e| CassetteError::Invalid {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Ok(Self {
            origin: path.display().to_string(),
            cassette,
        })
    }

    /// The cassette played.
    pub fn cassette(&self) -> &Cassette {
        &self.cassette
    }

    /// Play `cassette` (named `origin` in errors).
    pub fn new(origin: impl Into<String>, cassette: Cassette) -> Self {
        Self {
            origin: origin.into(),
            cassette,
        }
    }

    /// The reply this cassette plays for `request` and its simulated latency (ms), at once.
    ///
    /// # Errors
    /// The cassette has no reply for the request's step, or scripts a failure there.
    pub fn reply(&self, request: &ModelRequest) -> Result<(ModelReply, u64), Error> {
        let permanent = |message: String| Error::Permanent {
            provider: "scripted".into(),
            message,
        };
        if request.compaction {
            return Ok((summary(request), 0));
        }
        let step = usize::try_from(request.step).unwrap_or(usize::MAX);
        let Some(scripted) = self
            .cassette
            .replies
            .get(step)
            .map(|r| r.for_request(request))
        else {
            return Err(permanent(format!(
                "cassette {} has {} replies; the run asked for reply {} (step {})",
                self.origin,
                self.cassette.replies.len(),
                request.step + 1,
                request.step
            )));
        };
        if let Some(error) = &scripted.error {
            return Err(if error.transient {
                Error::Transient {
                    provider: "scripted".into(),
                    message: error.message.clone(),
                    retry_after: None,
                }
            } else {
                permanent(error.message.clone())
            });
        }
        let usage = scripted.usage.unwrap_or_else(|| TokenUsage {
            input_tokens: estimate_tokens(request),
            output_tokens: (scripted.text.len() as u64
                + serde_json::to_string(&scripted.tool_calls).map_or(0, |s| s.len() as u64))
                / 4,
            ..TokenUsage::default()
        });
        Ok((
            ModelReply {
                text: scripted.text.clone(),
                tool_calls: scripted.tool_calls.clone(),
                usage,
                stop_reason: scripted.stop_reason.clone().unwrap_or_else(|| {
                    Some(
                        if scripted.tool_calls.is_empty() {
                            "end_turn"
                        } else {
                            "tool_use"
                        }
                        .into(),
                    )
                }),
                reasoning: scripted.reasoning.clone(),
            },
            scripted.latency_ms,
        ))
    }
}

/// A summary request's reply: deterministic, from the request alone (how many messages,
/// which tools they called), so scripted runs compact like real ones without a cassette
/// having to foresee when.
fn summary(request: &ModelRequest) -> ModelReply {
    let summarized = request.messages.len().saturating_sub(1);
    let mut tools: Vec<&str> = request
        .messages
        .iter()
        .flat_map(|m| match &**m {
            ChatMessage::Assistant { tool_calls, .. } => {
                tool_calls.iter().map(|c| c.name.as_str()).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    tools.sort_unstable();
    tools.dedup();
    let text = format!(
        "Scripted summary of {summarized} messages; tools called: {}.",
        if tools.is_empty() {
            "none".to_owned()
        } else {
            tools.join(", ")
        }
    );
    ModelReply {
        usage: TokenUsage {
            input_tokens: estimate_tokens(request),
            output_tokens: text.len() as u64 / 4,
            ..TokenUsage::default()
        },
        text,
        stop_reason: Some("end_turn".into()),
        ..ModelReply::default()
    }
}

/// Characters ÷ 4 over the system prompt and messages: a stable stand-in for real counts.
fn estimate_tokens(request: &ModelRequest) -> u64 {
    let chars: usize = request.system.len()
        + request
            .messages
            .iter()
            .map(|m| match &**m {
                ChatMessage::User { content } | ChatMessage::Tool { content, .. } => content.len(),
                ChatMessage::Assistant {
                    text, tool_calls, ..
                } => {
                    text.len()
                        + tool_calls
                            .iter()
                            .map(|c| c.id.len() + c.name.len() + json_chars(&c.arguments))
                            .sum::<usize>()
                }
            })
            .sum::<usize>();
    chars as u64 / 4
}

/// About how many characters `value` takes as JSON, without writing it out (this runs
/// over the whole conversation on every call).
fn json_chars(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_chars(v) + 1).sum::<usize>(),
        Value::Object(fields) => {
            2 + fields
                .iter()
                .map(|(k, v)| k.len() + 4 + json_chars(v))
                .sum::<usize>()
        }
    }
}

impl Provider for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        on_delta: &'a mut (dyn FnMut(Delta) + Send),
    ) -> BoxFuture<'a, Result<ModelReply, Error>> {
        Box::pin(async move {
            let (reply, latency_ms) = self.reply(request)?;
            // Stream the text word by word over the simulated latency.
            let words: Vec<&str> = reply.text.split_inclusive(' ').collect();
            let pause =
                Duration::from_millis(latency_ms) / u32::try_from(words.len().max(1)).unwrap_or(1);
            for word in words {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                on_delta(Delta::Text(word.to_owned()));
            }
            if reply.text.is_empty() && latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(latency_ms)).await;
            }
            Ok(reply)
        })
    }
}

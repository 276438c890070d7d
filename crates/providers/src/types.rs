//! Provider-neutral request and reply types. Both are stored as canonical-JSON blobs (the
//! request before a call, the reply after), so their serde form is part of the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What is sent to a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// Model name as the provider knows it.
    pub model: String,
    /// System prompt.
    pub system: String,
    /// The conversation so far (shared: a runner builds each message once and every
    /// later request of the run points at it).
    pub messages: Vec<Arc<ChatMessage>>,
    /// Tools the model may call.
    pub tools: Vec<ToolDef>,
    /// Other parameters (temperature, max_tokens, ...), passed through.
    pub params: BTreeMap<String, Value>,
    /// Which model reply of the run this asks for (0 = first). Comes from the run's state,
    /// so a resumed process asks for the same step; the scripted provider plays by it.
    pub step: u64,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ChatMessage {
    /// The task, or a user message.
    User {
        /// Text.
        content: String,
    },
    /// A model reply.
    Assistant {
        /// Text.
        #[serde(default)]
        text: String,
        /// Tool calls.
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// A tool result.
    Tool {
        /// The call answered.
        call_id: String,
        /// Output (or error text).
        content: String,
        /// Whether the tool failed (or was denied).
        #[serde(default)]
        is_error: bool,
    },
}

/// A tool as offered to a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Name, e.g. `fs.read`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of its arguments.
    pub parameters: Value,
}

/// A tool call in a model reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for the call.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments.
    #[serde(default)]
    pub arguments: Value,
}

/// Tokens billed for one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A model's assembled reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
}

/// A piece of a reply as it streams in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// More reply text.
    Text(String),
}

//! What is sent to a model, provider-neutral: the [`ModelRequest`] and its
//! [`ChatMessage`]s and [`ToolDef`]s. Their serde form is what `retrace show --request
//! --json` prints and what request records rebuild into, so they live beside the events
//! (like the reply's types in [`crate::reply`]); the providers turn them into wire bodies.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::reply::{Reasoning, ToolCall};

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
    /// A summary request (context compaction), not an agent step: its last message asks
    /// for a summary of the messages before it. The scripted provider answers it without
    /// playing a reply of its cassette.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compaction: bool,
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
        /// The reasoning the reply carried, sent back where the provider's API requires it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reasoning: Vec<Reasoning>,
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

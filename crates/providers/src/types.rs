//! Provider-neutral request and reply types. Their serde form is part of the log, so they
//! live in `retrace_events` (`chat` for the request, `reply` for the reply), beside the
//! events that record them; re-exported here with the streaming [`Delta`].

pub use retrace_events::chat::{ChatMessage, ModelRequest, ToolDef};
pub use retrace_events::reply::{ModelReply, Reasoning, TokenUsage, ToolCall};

/// A piece of a reply as it streams in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// More reply text.
    Text(String),
}

//! `--format auto`: a recording's format told from its first bytes.

use serde_json::Value;

use crate::{Format, ImportError, Source};

/// The format of `source`: a JSON document with `spans` or `resourceSpans` (OpenTelemetry
/// GenAI, any-agent or OTLP JSON) or
/// `messages` and `info`/`trajectory_format` (mini-swe-agent); JSON lines with `payload`
/// and a rollout `type` (Codex) or a `sessionId`/Claude Code line `type` (Claude Code).
///
/// # Errors
/// [`ImportError::Empty`], or [`ImportError::Undetected`] saying what was seen.
pub fn detect(source: &Source) -> Result<Format, ImportError> {
    let text = String::from_utf8_lossy(&source.bytes);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ImportError::Empty {
            file: source.name.clone(),
        });
    }
    if let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(trimmed) {
        if doc.contains_key("spans") || doc.contains_key("resourceSpans") {
            return Ok(Format::OtelGenai);
        }
        if doc.contains_key("messages")
            && (doc.contains_key("trajectory_format") || doc.contains_key("info"))
        {
            return Ok(Format::MiniSweAgent);
        }
    }
    // JSON lines: the first few that parse decide
    for line in trimmed.lines().take(50) {
        let Ok(Value::Object(line)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let kind = line.get("type").and_then(Value::as_str).unwrap_or("");
        if line.contains_key("payload")
            && matches!(
                kind,
                "session_meta" | "turn_context" | "response_item" | "event_msg" | "compacted"
            )
        {
            return Ok(Format::Codex);
        }
        if line.contains_key("sessionId")
            || matches!(
                kind,
                "user" | "assistant" | "summary" | "file-history-snapshot" | "queue-operation"
            )
        {
            return Ok(Format::ClaudeCode);
        }
    }
    let start: String = trimmed.chars().take(60).collect();
    Err(ImportError::Undetected {
        file: source.name.clone(),
        why: format!("it starts {start:?}"),
    })
}

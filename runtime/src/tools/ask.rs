//! `user.ask`: a question to a human. The executor records the call and the run parks
//! (nothing held) until someone answers with `retrace answer`, the daemon's API or the
//! inspector; the answer is the call's result ([`retrace_replay::question`] has the
//! argument and result shapes).
//!
//! | tier | idempotent | performed by |
//! |---|---|---|
//! | read (asking changes nothing) | yes | the executor: it parks the run |

use serde_json::json;

use super::{OnError, Tier, ToolInfo};

pub use retrace_replay::question::ASK_TOOL as TOOL;

/// What `user.ask` declares.
pub fn info() -> ToolInfo {
    ToolInfo {
        name: TOOL.into(),
        description: "Ask the human a question and wait for the answer (the run pauses until \
                      they reply). Give choices when the answer is one of a few options."
            .into(),
        schema: json!({
            "type": "object",
            "properties": {
                "question": {"type": "string"},
                "choices": {"type": "array", "items": {"type": "string"}, "maxItems": retrace_replay::question::MAX_CHOICES},
                "allow_text": {"type": "boolean", "default": false, "description": "with choices: also accept a free-text answer"}
            },
            "required": ["question"],
            "additionalProperties": false
        }),
        tier: Tier::Read,
        idempotent: true,
        on_error: OnError::Continue,
        origin: super::fs::BUILT_IN.into(),
    }
}

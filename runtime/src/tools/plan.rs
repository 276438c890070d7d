//! `task.set` and `task.update`: the agent's plan as structured state. The executor
//! performs them with the pure functions of [`retrace_replay::plan`] (the plan before the
//! call comes from the state), and the new plan is the call's result, which `apply` keeps
//! as the state's plan.
//!
//! | tool | does | tier | idempotent |
//! |---|---|---|---|
//! | `task.set` | replaces the plan with a list of items | read | yes |
//! | `task.update` | changes one item's status, note or title | read | yes |

use serde_json::json;

use super::{OnError, Tier, ToolInfo};

pub use retrace_replay::plan::{SET_TOOL as SET, UPDATE_TOOL as UPDATE};

const STATUS: [&str; 4] = ["pending", "in_progress", "done", "blocked"];

/// What `task.set` (`SET`) or `task.update` (`UPDATE`) declares; `None` for another name.
pub fn info(name: &str) -> Option<ToolInfo> {
    let (description, schema) = match name {
        SET => (
            "Set your plan for the task: the whole list of items, in order (ids 1, 2, … are \
             given). Keep it current with task.update.",
            json!({
                "type": "object",
                "properties": {
                    "items": {"type": "array", "maxItems": retrace_replay::plan::MAX_ITEMS, "items": {
                        "type": "object",
                        "properties": {
                            "title": {"type": "string"},
                            "status": {"enum": STATUS, "default": "pending"},
                            "note": {"type": "string"}
                        },
                        "required": ["title"],
                        "additionalProperties": false
                    }}
                },
                "required": ["items"],
                "additionalProperties": false
            }),
        ),
        UPDATE => (
            "Update one item of your plan: its status (pending, in_progress, done, blocked), \
             note or title. Returns the whole plan.",
            json!({
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "status": {"enum": STATUS},
                    "note": {"type": "string"},
                    "title": {"type": "string"}
                },
                "required": ["id"],
                "additionalProperties": false
            }),
        ),
        _ => return None,
    };
    Some(ToolInfo {
        name: name.into(),
        description: description.into(),
        schema,
        tier: Tier::Read,
        idempotent: true,
        on_error: OnError::Continue,
        origin: super::fs::BUILT_IN.into(),
    })
}

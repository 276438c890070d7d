//! The agent's plan: a list of items with a status, set whole by `task.set` and changed one
//! item at a time by `task.update`. Pure: [`set`] and [`update`] turn a call's arguments
//! (and the plan before it) into the new plan, which the executor records as the call's
//! result and [`crate::apply`] keeps in [`crate::State::plan`]. So the plan at any event is
//! a fact of the log, and `show`, the inspector and a fork all read the same one.
//!
//! Arguments (JSON):
//!
//! - `task.set`: `{"items": [{"title": "…", "status"?: "pending", "note"?: "…"}, …]}`
//!   (at most [`MAX_ITEMS`]; ids are given 1, 2, … in order);
//! - `task.update`: `{"id": 2, "status"?: "done", "note"?: "…", "title"?: "…"}` (at
//!   least one change).
//!
//! Result (and the blob [`crate::State::plan`] names):
//! `{"items": [{"id": 1, "title": "…", "status": "in_progress", "note": "…"}, …]}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tool that sets the whole plan.
pub const SET_TOOL: &str = "task.set";
/// The tool that changes one item.
pub const UPDATE_TOOL: &str = "task.update";
/// The tools whose successful results are the plan.
pub const PLAN_TOOLS: [&str; 2] = [SET_TOOL, UPDATE_TOOL];
/// Most items a plan holds.
pub const MAX_ITEMS: usize = 100;
/// Longest title or note, in bytes.
pub const MAX_TEXT: usize = 2_000;

/// Where an item stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Not started.
    #[default]
    Pending,
    /// Being worked on.
    InProgress,
    /// Finished.
    Done,
    /// Cannot go on (the note says why).
    Blocked,
}

impl ItemStatus {
    /// A mark for text output: `[ ]`, `[~]`, `[x]`, `[!]`.
    pub fn mark(self) -> &'static str {
        match self {
            Self::Pending => "[ ]",
            Self::InProgress => "[~]",
            Self::Done => "[x]",
            Self::Blocked => "[!]",
        }
    }
}

/// One item of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// 1-based position given by `task.set`.
    pub id: u32,
    /// What to do.
    pub title: String,
    /// Where it stands.
    pub status: ItemStatus,
    /// Anything worth keeping (why blocked, what was found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its items, in order.
    pub items: Vec<Item>,
}

impl Plan {
    /// The plan a recorded result holds (`None` if it is not one).
    pub fn from_value(value: &Value) -> Option<Self> {
        serde_json::from_value(value.clone()).ok()
    }

    /// As JSON (the recorded result).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a plan always serialises")
    }

    /// One line per item: `[x] 2. title — note`.
    pub fn lines(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|item| {
                let note = item
                    .note
                    .as_deref()
                    .map(|n| format!(" — {n}"))
                    .unwrap_or_default();
                format!("{} {}. {}{note}", item.status.mark(), item.id, item.title)
            })
            .collect()
    }

    /// How many items are done, of how many.
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Done)
            .count();
        (done, self.items.len())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    title: String,
    #[serde(default)]
    status: ItemStatus,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetArgs {
    items: Vec<NewItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateArgs {
    id: u32,
    status: Option<ItemStatus>,
    note: Option<String>,
    title: Option<String>,
}

fn text(what: &str, value: &str) -> Result<String, String> {
    let value = value.trim().to_owned();
    if value.len() > MAX_TEXT {
        return Err(format!(
            "{what} is {} bytes; at most {MAX_TEXT}",
            value.len()
        ));
    }
    Ok(value)
}

/// The plan `task.set`'s `args` declare. Errors say what is wrong, for the model.
pub fn set(args: &Value) -> Result<Plan, String> {
    let args: SetArgs = serde_json::from_value(args.clone()).map_err(|e| e.to_string())?;
    if args.items.len() > MAX_ITEMS {
        return Err(format!(
            "{} items; a plan holds at most {MAX_ITEMS}",
            args.items.len()
        ));
    }
    let mut items = Vec::with_capacity(args.items.len());
    for (n, item) in (1..).zip(args.items) {
        let title = text(&format!("item {n}'s title"), &item.title)?;
        if title.is_empty() {
            return Err(format!("item {n} has an empty title"));
        }
        items.push(Item {
            id: n,
            title,
            status: item.status,
            note: item.note.map(|n| text("a note", &n)).transpose()?,
        });
    }
    Ok(Plan { items })
}

/// `plan` after `task.update`'s `args`. Errors say what is wrong, for the model.
pub fn update(plan: Option<&Plan>, args: &Value) -> Result<Plan, String> {
    let Some(plan) = plan else {
        return Err("there is no plan yet; make one with task.set first".to_owned());
    };
    let args: UpdateArgs = serde_json::from_value(args.clone()).map_err(|e| e.to_string())?;
    if args.status.is_none() && args.note.is_none() && args.title.is_none() {
        return Err("nothing to change: give `status`, `note` or `title`".to_owned());
    }
    let mut plan = plan.clone();
    let ids = plan.items.len();
    let Some(item) = plan.items.iter_mut().find(|i| i.id == args.id) else {
        return Err(match ids {
            0 => format!(
                "no item {}; the plan has no items (task.set makes them)",
                args.id
            ),
            _ => format!("no item {}; the plan has items 1 to {ids}", args.id),
        });
    };
    if let Some(status) = args.status {
        item.status = status;
    }
    if let Some(note) = args.note {
        let note = text("the note", &note)?;
        item.note = (!note.is_empty()).then_some(note);
    }
    if let Some(title) = args.title {
        let title = text("the title", &title)?;
        if title.is_empty() {
            return Err("the title is empty".to_owned());
        }
        item.title = title;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_then_update_gives_the_plan_and_bad_arguments_say_why() {
        let plan = set(
            &json!({"items": [{"title": "run tests"}, {"title": "fix", "status": "in_progress"}]}),
        )
        .unwrap();
        assert_eq!(plan.items[1].id, 2);
        assert_eq!(plan.items[1].status, ItemStatus::InProgress);
        let plan = update(
            Some(&plan),
            &json!({"id": 1, "status": "done", "note": "2 failed"}),
        )
        .unwrap();
        assert_eq!(plan.lines()[0], "[x] 1. run tests — 2 failed");
        assert_eq!(plan.progress(), (1, 2));
        assert_eq!(Plan::from_value(&plan.to_value()), Some(plan.clone()));
        let no_item = update(Some(&plan), &json!({"id": 9, "status": "done"})).unwrap_err();
        assert!(
            no_item.contains("no item 9; the plan has items 1 to 2"),
            "{no_item}"
        );
        assert!(
            update(None, &json!({"id": 1}))
                .unwrap_err()
                .contains("task.set first")
        );
        assert!(
            update(Some(&plan), &json!({"id": 1}))
                .unwrap_err()
                .contains("nothing to change")
        );
        let status = set(&json!({"items": [{"title": "a", "status": "finished"}]})).unwrap_err();
        assert!(status.contains("unknown variant `finished`"), "{status}");
        assert!(
            set(&json!({"items": [{"title": " "}]}))
                .unwrap_err()
                .contains("empty title")
        );
    }
}

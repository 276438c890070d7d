//! Hooks: commands run around tool calls that allow, deny, rewrite or annotate them.
//!
//! ```toml
//! [[hooks]]
//! name = "writes-in-out"                 # names its decisions in the log
//! stage = "before_tool"                  # before_tool | after_tool
//! tools = ["fs.write", "fs.edit"]        # globs over tool names (default: every tool)
//! command = "python3 hooks/out_only.py"  # run by /bin/sh -c, in the exec.run sandbox
//! timeout_secs = 10                      # default 10
//! ```
//!
//! The command runs like `exec.run` (the spec's `[exec]` settings, the workspace writable),
//! with its working directory the spec's directory (readable), and reads the call as JSON on
//! standard input:
//!
//! ```json
//! {"stage": "before_tool", "run": "…", "agent": "…", "call_id": "…", "tool": "fs.write",
//!  "args": {…}}
//! ```
//!
//! (after the call also `"result"` and `"is_error"`). It answers on standard output with one
//! JSON object, or nothing, which allows:
//!
//! | answer | before_tool | after_tool |
//! |---|---|---|
//! | `{"decision": "allow"}` or no output | the call runs | the result stands |
//! | `{"decision": "deny", "reason": "…"}` | the call is refused; the model reads the reason | — |
//! | `{"decision": "rewrite", "args": {…}}` | the call runs with these arguments | — |
//! | `{"decision": "note", "note": "…"}` | — | the note is added to the result (`hook_notes`) |
//!
//! Exit status 2 denies with the standard error as the reason (as Claude Code's hooks do).
//! A hook that fails otherwise (another status, a timeout, output that is not such an
//! object) denies too: a guard that cannot run must not let calls through.
//!
//! Every decision is recorded (`hook_decided`) before what it caused, so a replay, an eval
//! served from a recording and the inspector read the decision; the hook is never run again
//! for a call that has it.

use globset::{Glob, GlobSet, GlobSetBuilder};
use retrace_events::HookStage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Exit status by which a hook denies (its standard error is the reason).
pub const DENY_STATUS: i32 = 2;

/// A hook's default time limit, seconds.
pub const TIMEOUT_SECS: u64 = 10;

/// A hook, as recorded in the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Its name.
    pub name: String,
    /// When it runs.
    pub stage: HookStage,
    /// Globs over the tool names it runs for (empty: every tool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The command (`/bin/sh -c`).
    pub command: String,
    /// Its wall-time limit, seconds.
    #[serde(default = "timeout_secs")]
    pub timeout_secs: u64,
    /// The directory it runs in (the spec's; resolved when the spec is loaded).
    #[serde(default)]
    pub dir: std::path::PathBuf,
}

fn timeout_secs() -> u64 {
    TIMEOUT_SECS
}

impl Hook {
    /// Refuse a hook that cannot work, saying why.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("a hook needs a `name`".into());
        }
        if self.command.trim().is_empty() || self.command.contains('\0') {
            return Err(format!(
                "hook `{}`: `command` is empty or holds a NUL byte",
                self.name
            ));
        }
        if self.timeout_secs == 0 {
            return Err(format!(
                "hook `{}`: timeout_secs must be at least 1",
                self.name
            ));
        }
        self.globs().map(|_| ())
    }

    fn globs(&self) -> Result<GlobSet, String> {
        let mut set = GlobSetBuilder::new();
        for pattern in &self.tools {
            set.add(
                Glob::new(pattern)
                    .map_err(|e| format!("hook `{}`: tool glob `{pattern}`: {e}", self.name))?,
            );
        }
        set.build()
            .map_err(|e| format!("hook `{}`: {e}", self.name))
    }

    /// Whether it runs at `stage` for calls of `tool`.
    pub fn applies(&self, stage: HookStage, tool: &str) -> bool {
        self.stage == stage
            && (self.tools.is_empty() || self.globs().is_ok_and(|g| g.is_match(tool)))
    }
}

/// What a hook decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// Refuse the call (before it runs).
    Deny {
        /// Why, as the model is told.
        reason: String,
    },
    /// Run the call with these arguments instead.
    Rewrite {
        /// The arguments.
        args: Value,
    },
    /// Add this to the result.
    Note {
        /// The note.
        note: String,
    },
}

impl Decision {
    /// As recorded in `hook_decided` (canonical JSON, with the hook's name).
    pub fn to_value(&self, hook: &str) -> Value {
        match self {
            Self::Allow => json!({"hook": hook, "decision": "allow"}),
            Self::Deny { reason } => json!({"hook": hook, "decision": "deny", "reason": reason}),
            Self::Rewrite { args } => json!({"hook": hook, "decision": "rewrite", "args": args}),
            Self::Note { note } => json!({"hook": hook, "decision": "note", "note": note}),
        }
    }

    /// A recorded decision read back; `None` if it is not one.
    pub fn from_value(value: &Value) -> Option<Self> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(match value.get("decision")?.as_str()? {
            "allow" => Self::Allow,
            "deny" => Self::Deny {
                reason: text("reason")?,
            },
            "rewrite" => Self::Rewrite {
                args: value.get("args")?.clone(),
            },
            "note" => Self::Note {
                note: text("note")?,
            },
            _ => return None,
        })
    }
}

/// What the hook's process ended with.
#[derive(Debug)]
pub struct Ran<'a> {
    /// Exit status (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// It ran out of time.
    pub timed_out: bool,
    /// Its standard output.
    pub stdout: &'a str,
    /// Its standard error.
    pub stderr: &'a str,
}

/// The decision of `hook`, at `stage`, from how its process ended (see the module docs).
pub fn decision(hook: &Hook, stage: HookStage, ran: &Ran<'_>) -> Decision {
    let deny = |why: String| Decision::Deny {
        reason: format!("hook `{}` {why}", hook.name),
    };
    if ran.timed_out {
        return deny(format!("did not answer within {} s", hook.timeout_secs));
    }
    match ran.exit_code {
        Some(0) => {}
        Some(DENY_STATUS) => {
            let said = ran.stderr.trim();
            return deny(if said.is_empty() {
                "refused the call".into()
            } else {
                format!("refused the call: {said}")
            });
        }
        Some(code) => {
            return deny(format!(
                "failed (exit status {code}): {}",
                ran.stderr.trim()
            ));
        }
        None => return deny("was killed by a signal".into()),
    }
    let out = ran.stdout.trim();
    if out.is_empty() {
        return Decision::Allow;
    }
    let answer = serde_json::from_str::<Value>(out)
        .ok()
        .and_then(|v| Decision::from_value(&v));
    match (answer, stage) {
        (Some(Decision::Allow), _) => Decision::Allow,
        (
            Some(
                d @ (Decision::Deny { .. }
                | Decision::Rewrite {
                    args: Value::Object(_),
                }),
            ),
            HookStage::BeforeTool,
        )
        | (Some(d @ Decision::Note { .. }), HookStage::AfterTool) => d,
        (Some(Decision::Deny { reason }), HookStage::AfterTool) => Decision::Note { note: reason },
        _ => deny(format!(
            "answered what is not a decision for {}: {}",
            match stage {
                HookStage::BeforeTool =>
                    "before a call (allow, deny with a reason, rewrite with an args object)",
                HookStage::AfterTool => "after a call (allow, or note with a note)",
            },
            retrace_replay::preview::cut(out, 500)
        )),
    }
}

/// The input a hook reads for a call.
pub fn input(
    stage: HookStage,
    run: &str,
    agent: &str,
    call_id: &str,
    tool: &str,
    args: &Value,
    result: Option<(&Value, bool)>,
) -> Value {
    let mut input = json!({
        "stage": match stage { HookStage::BeforeTool => "before_tool", HookStage::AfterTool => "after_tool" },
        "run": run,
        "agent": agent,
        "call_id": call_id,
        "tool": tool,
        "args": args,
    });
    if let Some((result, is_error)) = result {
        input["result"] = result.clone();
        input["is_error"] = json!(is_error);
    }
    input
}

/// `output` with the hooks' notes added: `hook_notes` in an object, else the value
/// wrapped as `{"result": …, "hook_notes": […]}`.
pub fn with_notes(output: Value, notes: &[String]) -> Value {
    if notes.is_empty() {
        return output;
    }
    match output {
        Value::Object(mut map) => {
            map.insert("hook_notes".into(), json!(notes));
            Value::Object(map)
        }
        other => json!({"result": other, "hook_notes": notes}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(stage: HookStage) -> Hook {
        Hook {
            name: "h".into(),
            stage,
            tools: vec!["fs.*".into()],
            command: "true".into(),
            timeout_secs: 10,
            dir: std::path::PathBuf::new(),
        }
    }

    fn ran<'a>(code: i32, stdout: &'a str, stderr: &'a str) -> Ran<'a> {
        Ran {
            exit_code: Some(code),
            timed_out: false,
            stdout,
            stderr,
        }
    }

    #[test]
    fn answers_read_as_decisions_and_anything_else_denies() {
        let before = hook(HookStage::BeforeTool);
        let after = hook(HookStage::AfterTool);
        assert_eq!(
            decision(&before, HookStage::BeforeTool, &ran(0, "", "")),
            Decision::Allow
        );
        assert_eq!(
            decision(
                &before,
                HookStage::BeforeTool,
                &ran(0, r#"{"decision":"deny","reason":"no"}"#, "")
            ),
            Decision::Deny {
                reason: "no".into()
            }
        );
        assert_eq!(
            decision(
                &before,
                HookStage::BeforeTool,
                &ran(0, r#"{"decision":"rewrite","args":{"path":"out/a"}}"#, "")
            ),
            Decision::Rewrite {
                args: json!({"path": "out/a"})
            }
        );
        assert_eq!(
            decision(
                &after,
                HookStage::AfterTool,
                &ran(0, r#"{"decision":"note","note":"n"}"#, "")
            ),
            Decision::Note { note: "n".into() }
        );
        assert_eq!(
            decision(
                &before,
                HookStage::BeforeTool,
                &ran(2, "", "outside out/\n")
            ),
            Decision::Deny {
                reason: "hook `h` refused the call: outside out/".into()
            }
        );
        for bad in [
            ran(1, "", "boom"),
            ran(0, "not json", ""),
            ran(0, r#"{"decision":"rewrite","args":3}"#, ""),
        ] {
            assert!(matches!(
                decision(&before, HookStage::BeforeTool, &bad),
                Decision::Deny { .. }
            ));
        }
        assert!(matches!(
            decision(&before, HookStage::BeforeTool, &Ran { exit_code: None, timed_out: true, stdout: "", stderr: "" }),
            Decision::Deny { reason } if reason.contains("within 10 s")
        ));
        assert!(before.applies(HookStage::BeforeTool, "fs.write"));
        assert!(!before.applies(HookStage::BeforeTool, "exec.run"));
        assert!(!before.applies(HookStage::AfterTool, "fs.write"));
    }

    #[test]
    fn notes_join_the_result() {
        assert_eq!(
            with_notes(json!({"a": 1}), &["n".into()]),
            json!({"a": 1, "hook_notes": ["n"]})
        );
        assert_eq!(
            with_notes(json!("text"), &["n".into()]),
            json!({"result": "text", "hook_notes": ["n"]})
        );
        assert_eq!(with_notes(json!(1), &[]), json!(1));
    }
}

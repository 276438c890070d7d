//! The decisions a run's log records, as audit entries: a pure walk over its events (with a
//! way to read their blobs), no store and no clock.
//!
//! | event | `what` | who |
//! |---|---|---|
//! | `approval_decided` | `approve` / `deny` | its `by` |
//! | … on a call of unknown outcome | `resolve-retry` | its `by` |
//! | … by `autonomy` | `auto-allow` (evidence: the request's `autonomy.evidence`) | `autonomy` |
//! | … on an `escalation:` call | `escalation` (details: the request's `escalation`) | its `by` |
//! | `tool_returned` of a `user.ask` call | `answer` | the result's `by` |
//! | … of a call of unknown outcome | `resolve-skip` | not recorded |
//! | `run_finished` whose detail has a `by` | `resolve-fail` | the detail's `by` |
//! | `signal_received` `cancel`, or any with a `by` | `cancel` / `signal` | the payload's `by` |
//! | `hook_decided` | `hook` | the hook's name |

use std::collections::{BTreeMap, BTreeSet};

use retrace_events::{BlobId, Decision, Event, EventId, EventKind};
use serde::Serialize;
use serde_json::Value;

/// Who decides automatically: a graduated-autonomy allow.
pub use retrace_runtime::autonomy::BY as AUTONOMY;

/// A reference to an event that stands as evidence (for an automatic allow: a human's
/// approval in an earlier run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The run, as recorded (hex).
    pub run: String,
    /// The event id, as recorded (hex).
    pub event: String,
    /// Whether the event is there and is a human's approval (set by the verification).
    pub verified: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// When it was recorded (ms since the Unix epoch).
    pub time_ms: u64,
    /// Who decided; `None` when the log does not say (a skipped call of unknown outcome).
    pub who: Option<String>,
    /// Whether no human decided (an automatic allow, a hook, a parent run's cancel).
    pub automatic: bool,
    /// What: `approve`, `deny`, `auto-allow`, `escalation`, `answer`, `cancel`, `signal`,
    /// `resolve-retry`, `resolve-skip`, `resolve-fail`, `hook`.
    pub what: &'static str,
    /// `approved`/`denied` for approvals and escalations, a hook's `allow`/`deny`/….
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The run (hex).
    pub run: String,
    /// The event's seq in the run.
    pub seq: u64,
    /// The event's id (hex).
    pub event: String,
    /// The tool call decided, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Its tool, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The decider's note, the reason, or the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Events that stand as evidence for an automatic decision.
    pub evidence: Vec<Evidence>,
    /// What the decision rested on, as recorded: an automatic allow's `autonomy`, an
    /// escalation's `escalation` (budget, soft limit, spent), a hook's decision, a signal's
    /// payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Whether the run's hash chain and every evidence reference verified.
    pub verified: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What the walk remembers about a run's calls.
#[derive(Default)]
struct Calls {
    /// Tool of each call (from `tool_requested` and approval requests).
    tools: BTreeMap<String, String>,
    /// Each call's pending approval request (its blob, parsed).
    requests: BTreeMap<String, Value>,
    /// Calls whose outcome is unknown, not yet settled.
    unknown: BTreeSet<String>,
}

/// The decisions among `events` (a run's log from seq 0, in order; `run` its id), listed
/// from seq `own_from` (a fork's events before it belong to the run it was forked from).
/// `blob` reads a blob as JSON (`None` when missing or not JSON). Entries come unverified.
pub fn decisions(
    run: &str,
    own_from: u64,
    events: &[(EventId, Event)],
    blob: &dyn Fn(&BlobId) -> Option<Value>,
) -> Vec<Entry> {
    let mut calls = Calls::default();
    let mut out = Vec::new();
    for (id, event) in events {
        let entry = decision(&mut calls, event, blob);
        if event.seq < own_from {
            continue;
        }
        if let Some(mut entry) = entry {
            entry.time_ms = event.at.unix_ms();
            run.clone_into(&mut entry.run);
            entry.seq = event.seq;
            entry.event = id.to_string();
            out.push(entry);
        }
    }
    out
}

fn blank(what: &'static str) -> Entry {
    Entry {
        time_ms: 0,
        who: None,
        automatic: false,
        what,
        decision: None,
        run: String::new(),
        seq: 0,
        event: String::new(),
        call_id: None,
        tool: None,
        note: None,
        evidence: Vec::new(),
        details: None,
        verified: false,
        problem: None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// The entry `event` makes (times, run and ids are filled in by [`decisions`]), after
/// updating what is known of the run's calls.
fn decision(
    calls: &mut Calls,
    event: &Event,
    blob: &dyn Fn(&BlobId) -> Option<Value>,
) -> Option<Entry> {
    match &event.kind {
        EventKind::ToolRequested { call_id, tool, .. } => {
            calls.tools.insert(call_id.clone(), tool.clone());
            calls.unknown.remove(call_id);
            None
        }
        EventKind::ToolOutcomeUnknown { call_id, .. } => {
            calls.unknown.insert(call_id.clone());
            None
        }
        EventKind::ApprovalRequested { call_id, request } => {
            let request = blob(request).unwrap_or(Value::Null);
            if let Some(tool) = text(request.get("tool")) {
                calls.tools.insert(call_id.clone(), tool);
            }
            calls.requests.insert(call_id.clone(), request);
            None
        }
        EventKind::ApprovalDecided {
            call_id,
            decision,
            by,
            note,
        } => Some(approval(calls, call_id, *decision, by, note.as_ref(), blob)),
        EventKind::ToolReturned {
            call_id, output, ..
        } => returned(calls, call_id, output, blob),
        EventKind::SignalReceived { name, payload } => signal(name, payload, blob),
        EventKind::RunFinished { detail, .. } => {
            let detail = blob(detail)?;
            let by = text(detail.get("by"))?;
            let call = calls.unknown.iter().next().cloned();
            Some(Entry {
                who: Some(by),
                tool: call.as_ref().and_then(|c| calls.tools.get(c).cloned()),
                call_id: call,
                note: text(detail.get("note")).or_else(|| text(detail.get("reason"))),
                ..blank("resolve-fail")
            })
        }
        EventKind::HookDecided {
            call_id,
            hook,
            decision,
            ..
        } => {
            let decided = blob(decision);
            let field = |k: &str| decided.as_ref().and_then(|d| text(d.get(k)));
            Some(Entry {
                who: Some(hook.clone()),
                automatic: true,
                decision: field("decision"),
                call_id: Some(call_id.clone()),
                tool: calls.tools.get(call_id).cloned(),
                note: field("reason").or_else(|| field("note")),
                details: decided,
                ..blank("hook")
            })
        }
        _ => None,
    }
}

fn approval(
    calls: &mut Calls,
    call_id: &str,
    decision: Decision,
    by: &str,
    note: Option<&BlobId>,
    blob: &dyn Fn(&BlobId) -> Option<Value>,
) -> Entry {
    let request = calls.requests.remove(call_id).unwrap_or(Value::Null);
    let word = match decision {
        Decision::Approved => "approved",
        Decision::Denied => "denied",
    };
    let note = note.and_then(blob).map(|n| match n {
        Value::String(s) => s,
        other => other.to_string(),
    });
    let mut problem = None;
    let (what, automatic, details, evidence) = if by == AUTONOMY {
        let autonomy = request.get("autonomy").cloned();
        // only the runtime decides as `autonomy`, and only to allow, with its evidence
        if decision != Decision::Approved || autonomy.is_none() {
            problem = Some(
                "recorded as `autonomy`, but not an automatic allow with its evidence".to_owned(),
            );
        }
        let evidence = autonomy
            .as_ref()
            .and_then(|a| a.get("evidence"))
            .and_then(Value::as_array)
            .map(|refs| refs.iter().map(evidence_ref).collect())
            .unwrap_or_default();
        ("auto-allow", true, autonomy, evidence)
    } else if call_id.starts_with("escalation:") {
        (
            "escalation",
            false,
            request.get("escalation").cloned(),
            Vec::new(),
        )
    } else if calls.unknown.remove(call_id) {
        ("resolve-retry", false, None, Vec::new())
    } else if decision == Decision::Approved {
        ("approve", false, None, Vec::new())
    } else {
        ("deny", false, None, Vec::new())
    };
    Entry {
        who: Some(by.to_owned()),
        automatic,
        decision: Some(word.into()),
        call_id: Some(call_id.to_owned()),
        tool: calls.tools.get(call_id).cloned(),
        note,
        evidence,
        details,
        problem,
        ..blank(what)
    }
}

/// One `{"run", "event"}` of an automatic allow's evidence (a malformed one keeps what it
/// has, and fails verification).
fn evidence_ref(value: &Value) -> Evidence {
    Evidence {
        run: text(value.get("run")).unwrap_or_default(),
        event: text(value.get("event")).unwrap_or_default(),
        verified: false,
        problem: None,
    }
}

/// An answer to a question, or a call of unknown outcome settled with a given result.
fn returned(
    calls: &mut Calls,
    call_id: &str,
    output: &BlobId,
    blob: &dyn Fn(&BlobId) -> Option<Value>,
) -> Option<Entry> {
    let tool = calls.tools.get(call_id).cloned();
    if calls.unknown.remove(call_id) {
        return Some(Entry {
            call_id: Some(call_id.to_owned()),
            tool,
            ..blank("resolve-skip")
        });
    }
    if tool.as_deref() != Some("user.ask") {
        return None;
    }
    let result = blob(output)?;
    let by = text(result.get("by"))?;
    Some(Entry {
        who: Some(by),
        call_id: Some(call_id.to_owned()),
        tool,
        note: text(result.get("answer")),
        ..blank("answer")
    })
}

/// A cancel, or another signal that says who sent it.
fn signal(name: &str, payload: &BlobId, blob: &dyn Fn(&BlobId) -> Option<Value>) -> Option<Entry> {
    let payload = blob(payload)?;
    let by = text(payload.get("by"))?;
    let (what, note) = if name == retrace_runtime::inbox::CANCEL {
        ("cancel", text(payload.get("reason")))
    } else {
        ("signal", Some(name.to_owned()))
    };
    Some(Entry {
        // a parent run cancels its children itself
        automatic: by.starts_with("its parent run"),
        who: Some(by),
        note,
        details: (what == "signal").then_some(payload),
        ..blank(what)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use retrace_events::{Outcome, RunId, Timestamp, canonical_json};
    use serde_json::json;

    use super::*;

    /// A run's log built by hand, with its blobs.
    #[derive(Default)]
    struct Log {
        events: Vec<(EventId, Event)>,
        blobs: HashMap<BlobId, Value>,
    }

    impl Log {
        fn blob(&mut self, value: &Value) -> BlobId {
            let id = BlobId::of(&canonical_json(value));
            self.blobs.insert(id, value.clone());
            id
        }

        fn push(&mut self, kind: EventKind) -> EventId {
            let head = self.events.last().map(|(_, e)| e.head());
            let seq = head.map_or(0, |h| h.seq + 1);
            let event = Event::after(head, Timestamp(1_000 + seq), kind);
            let id = event.id();
            self.events.push((id, event));
            id
        }

        fn entries(&self) -> Vec<Entry> {
            decisions("r", 0, &self.events, &|id| self.blobs.get(id).cloned())
        }
    }

    fn started(log: &mut Log) {
        let spec = log.blob(&json!({}));
        let input = log.blob(&json!("task"));
        log.push(EventKind::RunStarted {
            run: RunId::from_bytes([1; 16]),
            spec,
            input,
        });
    }

    #[test]
    fn an_automatic_allow_carries_its_evidence_and_an_escalation_its_figures() {
        let mut log = Log::default();
        started(&mut log);
        let request = log.blob(&json!({
            "tool": "exec.run", "args": {"cmd": "cargo test"}, "reason": "exec asks",
            "autonomy": {"rule": 0, "tool": "exec.run", "pattern": "cargo test*",
                "approvals": 2, "evidence": [
                    {"run": "aa", "event": "bb"}, {"run": "cc", "event": "dd"}]}
        }));
        log.push(EventKind::ApprovalRequested {
            call_id: "c1".into(),
            request,
        });
        let note = log.blob(&json!("2 approvals of exec.run `cargo test*`, no denial"));
        log.push(EventKind::ApprovalDecided {
            call_id: "c1".into(),
            decision: Decision::Approved,
            by: AUTONOMY.into(),
            note: Some(note),
        });
        let request =
            log.blob(&json!({"escalation": {"budget": "tokens", "soft": 1000, "spent": 1200}}));
        log.push(EventKind::ApprovalRequested {
            call_id: "escalation:1".into(),
            request,
        });
        log.push(EventKind::ApprovalDecided {
            call_id: "escalation:1".into(),
            decision: Decision::Approved,
            by: "alice".into(),
            note: None,
        });
        let entries = log.entries();
        assert_eq!(entries.len(), 2, "{entries:#?}");
        let auto = &entries[0];
        assert_eq!(
            (auto.what, auto.who.as_deref(), auto.automatic),
            ("auto-allow", Some(AUTONOMY), true)
        );
        assert_eq!(auto.tool.as_deref(), Some("exec.run"));
        assert_eq!(auto.seq, 2);
        assert_eq!(auto.time_ms, 1_002);
        let refs: Vec<(&str, &str)> = auto
            .evidence
            .iter()
            .map(|e| (e.run.as_str(), e.event.as_str()))
            .collect();
        assert_eq!(refs, [("aa", "bb"), ("cc", "dd")]);
        assert_eq!(
            auto.details.as_ref().map(|d| &d["approvals"]),
            Some(&json!(2))
        );
        assert!(
            auto.note
                .as_deref()
                .is_some_and(|n| n.contains("2 approvals"))
        );
        let escalation = &entries[1];
        assert_eq!(
            (
                escalation.what,
                escalation.who.as_deref(),
                escalation.automatic
            ),
            ("escalation", Some("alice"), false)
        );
        assert_eq!(
            escalation.details,
            Some(json!({"budget": "tokens", "soft": 1000, "spent": 1200}))
        );
    }

    #[test]
    fn humans_hooks_and_resolutions_are_told_apart() {
        let mut log = Log::default();
        started(&mut log);
        let args = log.blob(&json!({}));
        for (call, tool) in [("w1", "fs.write"), ("q1", "user.ask"), ("x1", "exec.run")] {
            log.push(EventKind::ToolRequested {
                call_id: call.into(),
                tool: tool.into(),
                args,
                idempotent: false,
            });
        }
        let hook = log.blob(&json!({"decision": "deny", "reason": "no rm"}));
        log.push(EventKind::HookDecided {
            call_id: "w1".into(),
            hook: "guard".into(),
            stage: retrace_events::HookStage::BeforeTool,
            decision: hook,
        });
        let answer = log.blob(&json!({"answer": "sled", "choice": 2, "by": "bob"}));
        log.push(EventKind::ToolReturned {
            call_id: "q1".into(),
            output: answer,
            is_error: false,
            duration_ms: 0,
        });
        let reason = log.blob(&json!("killed"));
        log.push(EventKind::ToolOutcomeUnknown {
            call_id: "x1".into(),
            reason,
        });
        log.push(EventKind::ApprovalDecided {
            call_id: "x1".into(),
            decision: Decision::Approved,
            by: "carol".into(),
            note: None,
        });
        let cancel = log.blob(&json!({"by": "dave", "reason": "enough"}));
        log.push(EventKind::SignalReceived {
            name: "cancel".into(),
            payload: cancel,
        });
        let message = log.blob(&json!("hello"));
        log.push(EventKind::SignalReceived {
            name: "user_message".into(),
            payload: message,
        });
        let detail = log.blob(&json!({"reason": "cancelled by dave"}));
        log.push(EventKind::RunFinished {
            outcome: Outcome::Cancelled,
            detail,
        });
        let entries = log.entries();
        let got: Vec<(&str, Option<&str>, bool)> = entries
            .iter()
            .map(|e| (e.what, e.who.as_deref(), e.automatic))
            .collect();
        assert_eq!(
            got,
            [
                ("hook", Some("guard"), true),
                ("answer", Some("bob"), false),
                ("resolve-retry", Some("carol"), false),
                ("cancel", Some("dave"), false),
            ]
        );
        assert_eq!(entries[0].decision.as_deref(), Some("deny"));
        assert_eq!(entries[0].tool.as_deref(), Some("fs.write"));
        assert_eq!(entries[1].note.as_deref(), Some("sled"));
        assert_eq!(entries[3].note.as_deref(), Some("enough"));
        // a fork lists only its own events
        let own = decisions("r", 8, &log.events, &|id| log.blobs.get(id).cloned());
        assert_eq!(own.len(), 1);
    }
}

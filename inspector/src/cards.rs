//! A step's card: what the step view shows of one step, read from the store on the
//! background thread for the steps on screen (a model call's reply text, reasoning, calls
//! and usage; a tool call's arguments and the start of its result; an approval's request,
//! decision, who decided and the note; …), and the human forms of times and durations the
//! cards use.

use retrace_events::{BlobId, Decision, EventKind, HookStage, Outcome, RunId, Usage};
use retrace_replay::Question;
use retrace_replay::question::ASK_TOOL;
use retrace_store::Store;
use serde_json::Value;

use crate::steps::{StepHead, StepKind};

/// Lines of a tool result a card shows before "show all".
pub const RESULT_LINES: usize = 12;

/// Lines one page of "show all" holds.
pub const PAGE_LINES: usize = 200;

/// Most bytes of a reply's text a card holds (the detail panel has the whole event).
pub const TEXT_BYTES: usize = 16 * 1024;

/// Most bytes of one string in a call's arguments a card holds.
pub const ARG_BYTES: usize = 2 * 1024;

/// One step as the step view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// Its position in the run's [`crate::steps::StepIndex`].
    pub step: usize,
    /// The step.
    pub head: StepHead,
    /// What it holds.
    pub body: Body,
}

/// A tool call of a model reply, as the card shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    /// The call's id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments, pretty-printed JSON.
    pub args: String,
}

/// The start of a tool result and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The blob it is stored as (what "show all" pages through).
    pub blob: BlobId,
    /// Its first [`RESULT_LINES`] lines ([`readable`]).
    pub head: String,
    /// Lines in all ([`retrace_replay::preview::lines`] of the [`readable`] text).
    pub lines: usize,
    /// Bytes of text in all.
    pub bytes: usize,
    /// The tool reported an error.
    pub is_error: bool,
}

/// What a card holds, by kind of step.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A model call.
    Model {
        /// Model name, from the request.
        model: String,
        /// For a routed call: the spec's model it was routed to, and why (its
        /// `model_routed`).
        route: Option<String>,
        /// Which try of its step.
        attempt: u32,
        /// Seq of its `model_requested`.
        request_seq: u64,
        /// The reply's text (Markdown as the model wrote it).
        text: String,
        /// Reasoning blocks (`(redacted by the provider)` for an encrypted one).
        reasoning: Vec<String>,
        /// Tool calls the reply asked for.
        calls: Vec<CallView>,
        /// Tokens, cost and latency (`None` while in flight or after a failure).
        usage: Option<Usage>,
        /// The provider's error, for a failed call.
        error: Option<String>,
        /// For a summary request: how many messages it compacted.
        compacted: Option<u64>,
    },
    /// A tool call.
    Tool {
        /// The call's id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Arguments, strings longer than [`ARG_BYTES`] cut ([`shortened`]).
        args: Value,
        /// The result (`None` while running or in doubt).
        output: Option<Output>,
        /// Why the outcome is unknown, if it is.
        unknown: Option<String>,
        /// How long the tool ran (ms).
        duration_ms: Option<u64>,
        /// For `user.ask`: the question.
        question: Option<Question>,
        /// For `agent.delegate`: the child run it started and its sub-agent.
        child: Option<(RunId, String)>,
    },
    /// A wait for a human.
    Approval {
        /// The call waiting.
        call_id: String,
        /// What is asked, in a line or two ([`asked`]).
        request: String,
        /// The decision, who made it and the note (`None` while waiting).
        decision: Option<(Decision, String, Option<String>)>,
    },
    /// A fork's mark: where its own history begins.
    Fork {
        /// The run forked from.
        from_run: RunId,
        /// Last shared seq.
        from_seq: u64,
        /// Why, or what was edited.
        note: Option<String>,
    },
    /// Anything else: a title and its text (the task, a signal, a compaction, the end).
    Text {
        /// A few words.
        title: String,
        /// The text.
        text: String,
        /// Shown in red.
        error: bool,
    },
}

/// The card of `head` (at position `step` of its run's index; `name` its tool name).
pub fn card(
    store: &dyn Store,
    run: &RunId,
    step: usize,
    head: StepHead,
) -> Result<Card, retrace_store::Error> {
    let first = event(store, run, head.seq)?;
    let last = match head.end {
        Some(end) if end != head.seq => Some(event(store, run, end)?),
        _ => None,
    };
    // a reply's step ends with the calls it proposed; the card shows the reply
    let last = match last {
        Some(EventKind::ToolCallsProposed { response_seq, .. }) => {
            Some(event(store, run, response_seq)?)
        }
        other => other,
    };
    let body = match (&first, head.kind) {
        (EventKind::ModelRequested { request, attempt }, _) => {
            routed_model_body(store, run, head.seq, request, *attempt, last.as_ref())?
        }
        (
            EventKind::ToolRequested {
                call_id,
                tool,
                args,
                ..
            },
            _,
        ) => tool_body(store, (run, &head), call_id, tool, args, last.as_ref())?,
        (EventKind::ApprovalRequested { call_id, request }, _) => {
            approval_body(store, call_id, request, last.as_ref())
        }
        (
            EventKind::Forked {
                from_run,
                from_seq,
                note,
                ..
            },
            _,
        ) => Body::Fork {
            from_run: *from_run,
            from_seq: *from_seq,
            note: note.map(|n| pretty(&value(store, &n))),
        },
        // the result of a call that never ran (its approval was denied)
        (
            EventKind::ToolReturned {
                call_id,
                output,
                is_error,
                ..
            },
            _,
        ) => Body::Text {
            title: format!("{call_id} not run"),
            text: output_head(store, output, *is_error).head,
            error: *is_error,
        },
        (EventKind::RunStarted { input, .. }, _) => Body::Text {
            title: "task".into(),
            text: text_of(&value(store, input)),
            error: false,
        },
        (EventKind::SignalReceived { name, payload }, _) => Body::Text {
            title: format!("signal {name}"),
            text: text_of(&value(store, payload)),
            error: false,
        },
        (EventKind::RunFinished { outcome, detail }, _) => Body::Text {
            title: match outcome {
                Outcome::Succeeded => "end of the run: succeeded",
                Outcome::Failed => "end of the run: failed",
                Outcome::Cancelled => "end of the run: cancelled",
            }
            .into(),
            text: text_of(&value(store, detail)),
            error: *outcome == Outcome::Failed,
        },
        (
            EventKind::ContextCompacted {
                summary, evicted, ..
            },
            StepKind::Compaction,
        ) => Body::Text {
            title: format!("compaction: {evicted} messages dropped"),
            text: summary
                .map(|s| text_of(&value(store, &s)))
                .unwrap_or_default(),
            error: false,
        },
        (other, _) => Body::Text {
            title: other.name().replace('_', " "),
            text: String::new(),
            error: false,
        },
    };
    Ok(Card { step, head, body })
}

fn approval_body(
    store: &dyn Store,
    call_id: &str,
    request: &BlobId,
    last: Option<&EventKind>,
) -> Body {
    Body::Approval {
        call_id: call_id.to_owned(),
        request: asked(&value(store, request)),
        decision: match last {
            Some(EventKind::ApprovalDecided {
                decision, by, note, ..
            }) => Some((
                *decision,
                by.clone(),
                note.map(|n| text_of(&value(store, &n))),
            )),
            _ => None,
        },
    }
}

fn tool_body(
    store: &dyn Store,
    (run, head): (&RunId, &StepHead),
    call_id: &str,
    tool: &str,
    args: &BlobId,
    last: Option<&EventKind>,
) -> Result<Body, retrace_store::Error> {
    let args = value(store, args);
    let question = (tool == ASK_TOOL)
        .then(|| Question::from_args(&args).ok())
        .flatten();
    let (output, unknown, duration_ms) = match last {
        Some(EventKind::ToolReturned {
            output,
            is_error,
            duration_ms,
            ..
        }) => (
            Some(output_head(store, output, *is_error)),
            None,
            Some(*duration_ms),
        ),
        Some(EventKind::ToolOutcomeUnknown { reason, .. }) => {
            (None, Some(text_of(&value(store, reason))), None)
        }
        Some(EventKind::RunFinished { .. }) => (
            None,
            Some("no result: the run ended first".to_owned()),
            None,
        ),
        _ => (None, None, None),
    };
    Ok(Body::Tool {
        call_id: call_id.to_owned(),
        tool: tool.to_owned(),
        args: shortened(&args),
        output,
        unknown,
        duration_ms,
        question,
        child: child_started(store, run, head, call_id)?,
    })
}

/// The child run a call started (`agent.delegate`): its `child_started` is recorded with
/// the call's `tool_requested`, right after it.
fn child_started(
    store: &dyn Store,
    run: &RunId,
    head: &StepHead,
    call: &str,
) -> Result<Option<(RunId, String)>, retrace_store::Error> {
    let next = head.seq + 1;
    if head.end.is_some_and(|end| end < next) {
        return Ok(None);
    }
    Ok(match store.event_at(run, next)?.map(|(_, e)| e.kind) {
        Some(EventKind::ChildStarted {
            call_id,
            child,
            agent,
        }) if call_id == call => Some((child, agent)),
        _ => None,
    })
}

/// What a hook decided (its decision as recorded: `{"decision", "reason" | "args" |
/// "note"}`), in a line: `hook NAME before the call: deny — REASON`.
pub fn hook_decision(hook: &str, stage: HookStage, decision: &Value) -> String {
    let stage = match stage {
        HookStage::BeforeTool => "before the call",
        HookStage::AfterTool => "after the call",
    };
    let word = decision
        .get("decision")
        .and_then(Value::as_str)
        .unwrap_or("(no decision)");
    let why = match (
        decision.get("reason").and_then(Value::as_str),
        decision.get("note").and_then(Value::as_str),
        decision.get("args"),
    ) {
        (Some(reason), ..) => format!(" — {reason}"),
        (None, Some(note), _) => format!(" — {note}"),
        (None, None, Some(args)) => {
            format!(" — arguments now {}", cut(&args.to_string(), ASKED_BYTES))
        }
        _ => String::new(),
    };
    format!("hook {hook} {stage}: {word}{why}")
}

/// A model call's body, with where it was routed and why when its run routes (the
/// `model_routed` appended just before its intent at `seq`).
fn routed_model_body(
    store: &dyn Store,
    run: &RunId,
    seq: u64,
    request: &BlobId,
    attempt: u32,
    last: Option<&EventKind>,
) -> Result<Body, retrace_store::Error> {
    let model = value(store, request)
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut body = model_body(store, model, attempt, seq, last);
    if let (Body::Model { route, .. }, Some(before)) = (&mut body, seq.checked_sub(1))
        && let EventKind::ModelRouted { model, reason, .. } = event(store, run, before)?
    {
        *route = Some(format!("{model}: {reason}"));
    }
    Ok(body)
}

fn model_body(
    store: &dyn Store,
    model: String,
    attempt: u32,
    request_seq: u64,
    last: Option<&EventKind>,
) -> Body {
    let mut body = Body::Model {
        model,
        route: None,
        attempt,
        request_seq,
        text: String::new(),
        reasoning: Vec::new(),
        calls: Vec::new(),
        usage: None,
        error: None,
        compacted: None,
    };
    let Body::Model {
        text,
        reasoning,
        calls,
        usage,
        error,
        compacted,
        ..
    } = &mut body
    else {
        return body;
    };
    let reply = |blob: &BlobId| {
        serde_json::from_value::<retrace_events::reply::ModelReply>(value(store, blob)).ok()
    };
    match last {
        Some(EventKind::ModelResponded {
            response, usage: u, ..
        }) => {
            *usage = Some(*u);
            if let Some(r) = reply(response) {
                *text = cut(&r.text, TEXT_BYTES);
                *reasoning = crate::source::ReplyView::reasoning_of(&r.reasoning);
                *calls = r
                    .tool_calls
                    .iter()
                    .map(|c| CallView {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        args: pretty(&shortened(&c.arguments)),
                    })
                    .collect();
            }
        }
        Some(EventKind::ModelFailed { error: e, .. }) => {
            let v = value(store, e);
            *error = Some(
                v.get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| text_of(&v), str::to_owned),
            );
        }
        Some(EventKind::RunFinished { .. }) => {
            *error = Some("no answer: the run ended first".to_owned());
        }
        Some(EventKind::ContextCompacted {
            response,
            evicted,
            usage: u,
            ..
        }) => {
            *usage = Some(*u);
            *compacted = Some(*evicted);
            if let Some(r) = response.as_ref().and_then(reply) {
                *text = cut(&r.text, TEXT_BYTES);
            }
        }
        _ => {}
    }
    body
}

fn event(store: &dyn Store, run: &RunId, seq: u64) -> Result<EventKind, retrace_store::Error> {
    store
        .event_at(run, seq)?
        .map(|(_, e)| e.kind)
        .ok_or_else(|| retrace_store::Error::Corrupt {
            what: format!("run {run} has no event at {seq}"),
        })
}

/// A tool output's text as a person reads it: as the model reads it
/// ([`retrace_replay::preview::text`]), except that JSON without multi-line text is laid
/// out one field per line rather than on one long line.
pub fn readable(output: &Value) -> String {
    let multiline = |v: &Value| v.as_str().is_some_and(|s| s.contains('\n'));
    match output {
        Value::Object(fields) if !fields.values().any(multiline) => pretty(output),
        Value::Array(_) => pretty(output),
        other => retrace_replay::preview::text(other),
    }
}

fn output_head(store: &dyn Store, blob: &BlobId, is_error: bool) -> Output {
    let text = readable(&value(store, blob));
    let lines = retrace_replay::preview::lines(&text);
    Output {
        blob: *blob,
        head: lines
            .iter()
            .take(RESULT_LINES)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
        lines: lines.len(),
        bytes: text.len(),
        is_error,
    }
}

/// Lines `from..from + PAGE_LINES` of the [`readable`] text of the tool output stored as
/// `blob`, and how many lines it has in all.
pub fn page_of(store: &dyn Store, blob: &BlobId, from: usize) -> (String, usize) {
    let text = readable(&value(store, blob));
    let lines = retrace_replay::preview::lines(&text);
    let page = lines
        .iter()
        .skip(from)
        .take(PAGE_LINES)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    (page, lines.len())
}

/// A blob as JSON: parsed if it is JSON, else its text, else a note of its size or why it
/// could not be read.
pub fn value(store: &dyn Store, blob: &BlobId) -> Value {
    match store.blob(blob) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            String::from_utf8(bytes.clone()).map_or_else(
                |_| Value::String(format!("({} bytes of binary data)", bytes.len())),
                Value::String,
            )
        }),
        Ok(None) => Value::String(format!("(blob {blob} is missing)")),
        Err(e) => Value::String(format!("(blob {blob} could not be read: {e})")),
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with a note of what was
/// left out.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let kept = retrace_replay::preview::cut(text, max);
    format!(
        "{kept}… ({} more bytes; the detail panel shows the whole event)",
        text.len() - kept.len()
    )
}

/// `value` with every string longer than [`ARG_BYTES`] cut ([`cut`]), for showing.
pub fn shortened(value: &Value) -> Value {
    match value {
        Value::String(s) if s.len() > ARG_BYTES => Value::String(cut(s, ARG_BYTES)),
        Value::Array(items) => Value::Array(items.iter().map(shortened).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), shortened(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Most bytes of what an approval asks a card shows.
pub const ASKED_BYTES: usize = 400;

/// What an approval asks (the request as the runtime records it: `{"tool", "args",
/// "reason"}`) on a line or two: the tool and its arguments as compact JSON, then why it
/// asks; another shape as pretty JSON. At most [`ASKED_BYTES`] bytes.
pub fn asked(request: &Value) -> String {
    let text = match (
        request.get("tool").and_then(Value::as_str),
        request.get("args"),
    ) {
        (Some(tool), Some(args)) => {
            let reason = request.get("reason").and_then(Value::as_str);
            let call = cut(&format!("{tool} {args}"), ASKED_BYTES);
            match reason {
                Some(reason) => format!("{call}\n({reason})"),
                None => call,
            }
        }
        _ => pretty(request),
    };
    cut(&text, ASKED_BYTES)
}

/// A JSON value as a person reads it: a string's text, else pretty JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => pretty(other),
    }
}

/// Pretty-printed JSON.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// The time of day of `ms` (since the Unix epoch), UTC, to the millisecond:
/// `14:02:31.204`.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// A duration in milliseconds as a person says it: `840 ms`, `1.3 s`, `2 min 05 s`,
/// `3 h 02 min`, `2 d 03 h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", s, ms % 1000 / 100),
        60_000..3_600_000 => format!("{} min {:02} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {:02} min", s / 3600, s / 60 % 60),
        _ => format!("{} d {:02} h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::StepIndex;
    use retrace_store::{MemoryStore, NewRun};

    /// Every step of runs with every kind of event (failed and retried model calls,
    /// outcomes in doubt, approvals, compactions, runs that end with calls open) has a card,
    /// and each card says what its step's events say — even with every payload missing.
    #[test]
    fn every_step_of_any_run_has_a_card_that_says_what_happened() {
        for seed in 0..20 {
            let run = RunId::from_bytes([seed; 16]);
            let store = MemoryStore::new();
            store
                .create_run(NewRun::new(run, retrace_events::Timestamp(0)))
                .unwrap();
            let events = retrace_replay::testkit::valid_run(u64::from(seed), run, 400, true);
            store.append(&run, None, &events).unwrap();
            let mut index = StepIndex::new(run);
            for e in &events {
                index.push(e).unwrap();
            }
            for (i, head) in index.steps.iter().enumerate() {
                let card = card(&store, &run, i, *head).unwrap();
                let last = head
                    .end
                    .map(|end| &events[usize::try_from(end).unwrap()].kind);
                match (&card.body, last) {
                    (Body::Model { error, .. }, Some(EventKind::ModelFailed { .. })) => {
                        assert!(error.is_some(), "step {i}");
                    }
                    (Body::Model { error, usage, .. }, Some(EventKind::RunFinished { .. })) => {
                        assert!(error.is_some() && usage.is_none(), "step {i}");
                    }
                    (Body::Model { usage, .. }, Some(EventKind::ModelResponded { .. })) => {
                        assert!(usage.is_some(), "step {i}");
                    }
                    (Body::Tool { unknown, .. }, Some(EventKind::ToolOutcomeUnknown { .. })) => {
                        assert!(unknown.is_some(), "step {i}");
                    }
                    (Body::Tool { output, .. }, Some(EventKind::ToolReturned { .. })) => {
                        assert!(output.is_some(), "step {i}");
                    }
                    (Body::Approval { decision, .. }, Some(EventKind::ApprovalDecided { .. })) => {
                        assert!(decision.is_some(), "step {i}");
                    }
                    (Body::Model { .. } | Body::Tool { .. } | Body::Approval { .. }, None) => {
                        assert!(head.end.is_none(), "step {i} is open");
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn times_read_as_a_person_says_them() {
        // 2026-11-30T14:02:31.204Z
        assert_eq!(clock(1_796_047_351_204), "14:02:31.204");
        assert_eq!(duration(840), "840 ms");
        assert_eq!(duration(1_340), "1.3 s");
        assert_eq!(duration(125_000), "2 min 05 s");
        assert_eq!(duration(3 * 3_600_000 + 120_000), "3 h 02 min");
        assert_eq!(duration(2 * 86_400_000 + 3 * 3_600_000), "2 d 03 h");
    }
}

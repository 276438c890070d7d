//! How events, statuses, amounts and times read to a person: one wording for the CLI and
//! the inspector. (Formatting a recorded timestamp reads no clock.)

use std::time::{Duration, UNIX_EPOCH};

use retrace_events::{Decision, Event, EventKind, HookStage, Outcome, Timestamp};

use crate::Status;

/// RFC 3339 UTC with milliseconds.
pub fn time(at: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.unix_ms())).to_string()
}

/// A run status in a few words.
pub fn status(status: &Status) -> String {
    match status {
        Status::NotStarted => "not started".to_owned(),
        Status::Running => "running".to_owned(),
        Status::AwaitingApproval { call_id } => format!("awaiting {call_id}"),
        Status::OutcomeUnknown { call_id } => format!("in doubt: {call_id}"),
        Status::AwaitingAnswer { call_id } => format!("asking {call_id}"),
        Status::Finished { outcome, .. } => outcome_word(*outcome).to_owned(),
    }
}

/// Where a run stands, for a person deciding what to do about it: `running` (`driven`: a
/// process or `retrace serve` works on it now), `parked: approval of C` or `parked: outcome
/// of C unknown` (a human must act), `needs resume` (unfinished, and nobody drives it: a
/// fresh fork, an approval given without a resume, a stopped process), or how it finished.
pub fn standing(status: &Status, driven: bool) -> String {
    match status {
        Status::Running if driven => "running".to_owned(),
        Status::Running => "needs resume".to_owned(),
        Status::AwaitingApproval { call_id } => format!("parked: approval of {call_id}"),
        Status::OutcomeUnknown { call_id } => format!("parked: outcome of {call_id} unknown"),
        Status::AwaitingAnswer { call_id } => format!("parked: question {call_id}"),
        Status::NotStarted | Status::Finished { .. } => self::status(status),
    }
}

/// Millionths of a dollar as `$D.DDDDDD` (integer arithmetic: exact).
pub fn usd(micro: u64) -> String {
    format!("${}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// One-line human summary of an event (payloads are shown by id; `retrace show` resolves them).
pub fn summary(event: &Event) -> String {
    match &event.kind {
        EventKind::RunStarted { run, .. } => format!("run {} started", run.short()),
        EventKind::ModelRequested { attempt, .. } => format!("model call (attempt {attempt})"),
        EventKind::ModelResponded {
            request_seq, usage, ..
        } => format!(
            "reply to #{request_seq}: {} in / {} out tokens, {} ms",
            usage.input_tokens, usage.output_tokens, usage.latency_ms
        ),
        EventKind::ModelFailed {
            request_seq,
            transient,
            ..
        } => format!(
            "call #{request_seq} failed ({})",
            if *transient { "transient" } else { "permanent" }
        ),
        EventKind::ToolRequested {
            call_id,
            tool,
            idempotent,
            ..
        } => format!(
            "{tool} [{call_id}]{}",
            if *idempotent { "" } else { " (not idempotent)" }
        ),
        EventKind::ToolReturned {
            call_id,
            is_error,
            duration_ms,
            ..
        } => format!(
            "[{call_id}] {} in {duration_ms} ms",
            if *is_error { "error" } else { "ok" }
        ),
        EventKind::ToolOutcomeUnknown { call_id, .. } => format!("[{call_id}] outcome unknown"),
        EventKind::ApprovalRequested { call_id, .. } => format!("[{call_id}] awaiting approval"),
        EventKind::ApprovalDecided {
            call_id,
            decision,
            by,
            ..
        } => {
            let verb = match decision {
                Decision::Approved => "approved",
                Decision::Denied => "denied",
            };
            format!("[{call_id}] {verb} by {by}")
        }
        EventKind::SignalReceived { name, .. } => format!("signal {name}"),
        EventKind::Forked {
            from_run, from_seq, ..
        } => {
            format!("forked from {}@{from_seq}", from_run.short())
        }
        EventKind::ToolCallsProposed { calls, .. } => format!(
            "proposed {}",
            calls
                .iter()
                .map(|c| format!("{} [{}]", c.tool, c.call_id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        EventKind::ContextCompacted {
            request_seq,
            evicted,
            ..
        } => match request_seq {
            Some(seq) => format!("compacted: {evicted} messages summarized (call #{seq})"),
            None => format!("compacted: {evicted} messages dropped"),
        },
        EventKind::RunFinished { outcome, .. } => format!("finished: {}", outcome_word(*outcome)),
        EventKind::ChildStarted { .. }
        | EventKind::ChildFinished { .. }
        | EventKind::HookDecided { .. } => delegation_summary(&event.kind),
        EventKind::ModelRouted { model, reason, .. } => format!("model {model}: {reason}"),
    }
}

/// The summary of a child run's start or end, or a hook's decision.
fn delegation_summary(kind: &EventKind) -> String {
    match kind {
        EventKind::ChildStarted {
            call_id,
            child,
            agent,
        } => format!("[{call_id}] child run {} ({agent}) started", child.short()),
        EventKind::ChildFinished {
            call_id,
            child,
            outcome,
            usage,
            ..
        } => format!(
            "[{call_id}] child run {} {}: {} in / {} out tokens, {}",
            child.short(),
            outcome_word(*outcome),
            usage.input_tokens,
            usage.output_tokens,
            usd(usage.cost_micro_usd)
        ),
        EventKind::HookDecided {
            call_id,
            hook,
            stage,
            ..
        } => format!(
            "[{call_id}] hook {hook} decided ({})",
            match stage {
                HookStage::BeforeTool => "before the call",
                HookStage::AfterTool => "after the call",
            }
        ),
        _ => String::new(),
    }
}

/// How a run ended, in one word.
pub fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Cancelled => "cancelled",
    }
}

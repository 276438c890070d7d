//! Judging a case's run by its expectations: each one that does not hold becomes a failure
//! saying what was expected and what the run did.

use std::collections::BTreeSet;

use retrace_events::{Decision, Event, EventId, EventKind};
use retrace_replay::{State, Status};
use retrace_store::Store;

use crate::case::{CaseReport, final_output};
use crate::suite::Expect;

/// Add to `report.failures` every expectation of `expect` that the run (its final `state`
/// and all its `events`) does not meet.
pub fn judge(
    store: &dyn Store,
    expect: &Expect,
    state: &State,
    events: &[(EventId, Event)],
    report: &mut CaseReport,
) {
    let fail = &mut report.failures;
    if expect.identical
        && let Some(seq) = report.first_divergence
    {
        fail.push(format!(
            "differs from the recording from seq {seq} (expect.identical = false allows it)"
        ));
    }
    match &state.status {
        Status::Finished { outcome, .. } if *outcome == expect.outcome => {}
        Status::Finished { outcome, .. } => fail.push(format!(
            "ended {}, expected {}",
            word(outcome),
            word(&expect.outcome)
        )),
        other => fail.push(format!(
            "did not finish ({}), expected it to end {}",
            word(other),
            word(&expect.outcome)
        )),
    }
    judge_output(store, expect, state, fail);
    let called: Vec<&str> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            EventKind::ToolRequested { tool, .. } => Some(tool.as_str()),
            _ => None,
        })
        .collect();
    judge_tools(expect, &called, fail);
    if expect.no_denied_approvals {
        let denied = events.iter().filter(|(_, e)| {
            matches!(
                e.kind,
                EventKind::ApprovalDecided {
                    decision: Decision::Denied,
                    ..
                }
            )
        });
        if let Some((_, e)) = denied.into_iter().next() {
            fail.push(format!("an approval was denied at seq {}", e.seq));
        }
    }
    let t = &state.totals;
    if let Some(max) = expect.max_steps
        && t.steps > max
    {
        fail.push(format!("took {} steps, at most {max} expected", t.steps));
    }
    let tokens = t.input_tokens + t.output_tokens;
    if let Some(max) = expect.max_tokens
        && tokens > max
    {
        fail.push(format!("used {tokens} tokens, at most {max} expected"));
    }
    #[allow(clippy::cast_precision_loss)]
    let cost = t.cost_micro_usd as f64 / 1e6;
    if let Some(max) = expect.max_cost_usd
        && cost > max
    {
        fail.push(format!("cost ${cost:.6}, at most ${max} expected"));
    }
}

fn word(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(o)) => o
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("?")
            .to_owned(),
        _ => "?".into(),
    }
}

fn judge_output(store: &dyn Store, expect: &Expect, state: &State, fail: &mut Vec<String>) {
    let wants_output = !expect.output_contains.is_empty()
        || expect.output_regex.is_some()
        || !expect.output_json.is_empty();
    if !wants_output {
        return;
    }
    let Some(output) = final_output(store, state) else {
        fail.push("has no final output to check".into());
        return;
    };
    for text in &expect.output_contains {
        if !output.contains(text.as_str()) {
            fail.push(format!("the output does not contain {text:?}"));
        }
    }
    if let Some(regex) = &expect.output_regex
        && !regex.is_match(&output)
    {
        fail.push(format!("the output does not match /{regex}/"));
    }
    if expect.output_json.is_empty() {
        return;
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&output) else {
        fail.push("the output is not JSON, so output_json cannot hold".into());
        return;
    };
    for (pointer, want) in &expect.output_json {
        match json.pointer(pointer) {
            Some(found) if found == want => {}
            Some(found) => fail.push(format!("output {pointer} is {found}, expected {want}")),
            None => fail.push(format!(
                "the output has nothing at {pointer}, expected {want}"
            )),
        }
    }
}

fn judge_tools(expect: &Expect, called: &[&str], fail: &mut Vec<String>) {
    if let Some(want) = &expect.tools
        && called != want.iter().map(String::as_str).collect::<Vec<_>>()
    {
        fail.push(format!("called {called:?}, expected {want:?}"));
    }
    let set: BTreeSet<&str> = called.iter().copied().collect();
    if let Some(want) = &expect.tool_set {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        if set != want {
            fail.push(format!("called the tools {set:?}, expected {want:?}"));
        }
    }
    for tool in &expect.must_call {
        if !set.contains(tool.as_str()) {
            fail.push(format!("never called {tool}"));
        }
    }
    for tool in &expect.must_not_call {
        if set.contains(tool.as_str()) {
            fail.push(format!("called {tool}, which it must not"));
        }
    }
}

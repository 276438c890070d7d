//! `retrace demo`: record a short sample agent run and verify it.
//!
//! The sample is what a job that reads a file, asks to write one and gets approval would
//! log. Each event is appended on its own, with its payload blobs stored first, exactly the
//! order the runtime will use (blobs, then the event that refers to them, durable before the
//! next step).

use std::path::Path;
use std::process::ExitCode;

use retrace_events::{
    BlobId, Decision, Event, EventKind, Head, Outcome, RunId, Usage, canonical_json,
};
use retrace_runtime::entropy::{new_run_id, now};
use retrace_store::{NewRun, Store, VerifyOptions, verify_run};
use serde_json::{Value, json};

use crate::output;
use crate::store_access;

/// Appends one event at a time to a run and echoes it.
struct Recorder<'a> {
    store: &'a dyn Store,
    run: RunId,
    head: Option<Head>,
}

impl Recorder<'_> {
    fn blob(&self, value: &Value) -> anyhow::Result<BlobId> {
        Ok(self.store.put_blob(&canonical_json(value))?)
    }

    /// Append `kind` after the head; returns its seq.
    fn record(&mut self, kind: EventKind) -> anyhow::Result<u64> {
        let event = Event::after(self.head, now(), kind);
        let head = self.store.append(
            &self.run,
            self.head.map(|h| h.id),
            std::slice::from_ref(&event),
        )?;
        println!(
            "{:>4}  {:<20}  {}",
            head.seq,
            event.kind.name(),
            output::summary(&event)
        );
        self.head = Some(head);
        Ok(head.seq)
    }
}

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let store = store_access::open_or_create(dir)?;
    let run = new_run_id();
    let mut new = NewRun::new(run, now());
    new.meta
        .insert("name".into(), "demo: summarise README".into());
    store.create_run(new)?;
    println!("recording run {run} into {}", dir.display());

    let mut rec = Recorder {
        store: &store,
        run,
        head: None,
    };
    let spec = rec.blob(&json!({
        "name": "demo",
        "model": {"provider": "scripted", "name": "demo-cassette"},
        "system": SYSTEM,
        "tools": ["fs.read", "fs.write"],
        "policy": {"fs.read": "allow", "fs.write": "ask"},
    }))?;
    let input = rec.blob(&json!(TASK))?;
    rec.record(EventKind::RunStarted { run, spec, input })?;
    let mut messages = vec![
        json!({"role": "system", "content": SYSTEM}),
        json!({"role": "user", "content": TASK}),
    ];
    read_readme(&mut rec, &mut messages)?;
    write_summary(&mut rec, &mut messages)?;
    finish(&mut rec, &messages)?;

    let report = verify_run(&store, &run, VerifyOptions::default())?;
    if let Some(problem) = report.problem {
        anyhow::bail!("the run just recorded does not verify: {problem}");
    }
    println!(
        "verified {} events and {} blobs; try `retrace runs` and `retrace verify {}`",
        report.events,
        report.blobs,
        run.short()
    );
    Ok(ExitCode::SUCCESS)
}

const SYSTEM: &str = "You are a careful assistant working in a repository.";
const TASK: &str = "Summarise README.md into SUMMARY.md.";
const README: &str =
    "# retrace\nDurable agent runs on an append-only, content-addressed event log.";
const SUMMARY: &str = "retrace records agent runs as a verifiable event log.";

/// Record a model call (request, then `reply`).
fn model_call(
    rec: &mut Recorder<'_>,
    messages: &[Value],
    reply: &Value,
    usage: Usage,
) -> anyhow::Result<()> {
    let request = rec.blob(&json!({ "messages": messages }))?;
    let asked = rec.record(EventKind::ModelRequested {
        request,
        attempt: 1,
    })?;
    let response = rec.blob(reply)?;
    rec.record(EventKind::ModelResponded {
        request_seq: asked,
        response,
        usage,
    })?;
    Ok(())
}

/// Record a tool call the model made (`call` as in its reply) and its output.
fn tool_call(
    rec: &mut Recorder<'_>,
    call: &Value,
    idempotent: bool,
    output: &Value,
) -> anyhow::Result<()> {
    let call_id = call["id"].as_str().unwrap_or_default().to_owned();
    let args = rec.blob(&call["arguments"])?;
    rec.record(EventKind::ToolRequested {
        call_id: call_id.clone(),
        tool: call["name"].as_str().unwrap_or_default().to_owned(),
        args,
        idempotent,
    })?;
    let output = rec.blob(output)?;
    rec.record(EventKind::ToolReturned {
        call_id,
        output,
        is_error: false,
        duration_ms: 1,
    })?;
    Ok(())
}

/// Step 1: the model asks to read the README; the read-tier tool runs without asking.
fn read_readme(rec: &mut Recorder<'_>, messages: &mut Vec<Value>) -> anyhow::Result<()> {
    let call = json!({"id": "call_1", "name": "fs.read", "arguments": {"path": "README.md"}});
    let usage = Usage {
        input_tokens: 52,
        output_tokens: 18,
        cost_micro_usd: 0,
        latency_ms: 40,
    };
    model_call(
        rec,
        messages,
        &json!({"text": "", "tool_calls": [call]}),
        usage,
    )?;
    tool_call(rec, &call, true, &json!({ "content": README }))?;
    messages.push(json!({"role": "assistant", "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": README}));
    Ok(())
}

/// Step 2: the model wants to write; the policy says ask, and a human approves.
fn write_summary(rec: &mut Recorder<'_>, messages: &mut Vec<Value>) -> anyhow::Result<()> {
    let call = json!({"id": "call_2", "name": "fs.write", "arguments": {"path": "SUMMARY.md", "content": SUMMARY}});
    let usage = Usage {
        input_tokens: 97,
        output_tokens: 31,
        cost_micro_usd: 0,
        latency_ms: 55,
    };
    model_call(
        rec,
        messages,
        &json!({"text": "", "tool_calls": [call]}),
        usage,
    )?;
    let ask =
        rec.blob(&json!({"tool": "fs.write", "args": call["arguments"], "rule": "fs.write: ask"}))?;
    rec.record(EventKind::ApprovalRequested {
        call_id: "call_2".into(),
        request: ask,
    })?;
    let note = rec.blob(&json!("looks right"))?;
    rec.record(EventKind::ApprovalDecided {
        call_id: "call_2".into(),
        decision: Decision::Approved,
        by: "demo".into(),
        note: Some(note),
    })?;
    tool_call(rec, &call, false, &json!({ "written": SUMMARY.len() }))?;
    messages.push(json!({"role": "assistant", "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": "call_2", "content": "written"}));
    Ok(())
}

/// Step 3: the final answer ends the run.
fn finish(rec: &mut Recorder<'_>, messages: &[Value]) -> anyhow::Result<()> {
    let usage = Usage {
        input_tokens: 140,
        output_tokens: 6,
        cost_micro_usd: 0,
        latency_ms: 30,
    };
    model_call(
        rec,
        messages,
        &json!({"text": "Wrote SUMMARY.md.", "tool_calls": []}),
        usage,
    )?;
    let detail = rec.blob(&json!({"output": "Wrote SUMMARY.md."}))?;
    rec.record(EventKind::RunFinished {
        outcome: Outcome::Succeeded,
        detail,
    })?;
    Ok(())
}

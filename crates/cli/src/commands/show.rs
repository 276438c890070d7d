//! `retrace show RUN[@SEQ] [--json]`: one event in full (payloads resolved) and the state of
//! the run after it.

use std::path::Path;
use std::process::ExitCode;

use retrace_events::reply::ModelReply;
use retrace_events::{BlobId, EventKind};
use retrace_replay::{Role, SnapshotPolicy, state_at};
use retrace_store::Store;
use serde_json::{Value, json};

use crate::{output, store_access, target};

pub fn run(dir: &Path, what: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let at = target::resolve(&store, what)?;
    let (id, event) = store
        .event_at(&at.run, at.seq)?
        .ok_or_else(|| anyhow::anyhow!("run {} has no seq {}", at.run, at.seq))?;
    let derived = state_at(&store, &at.run, at.seq, SnapshotPolicy::default())?;
    for bypassed in &derived.bypassed {
        eprintln!(
            "warning: snapshot at seq {} ignored ({}); state re-derived",
            bypassed.seq, bypassed.reason
        );
    }
    let state = &derived.state;
    let payloads: serde_json::Map<String, Value> = event
        .kind
        .blobs()
        .into_iter()
        .map(|b| Ok((b.to_string(), blob_value(&store, &b)?)))
        .collect::<anyhow::Result<_>>()?;
    if json_out {
        let mut event_json = serde_json::to_value(&event)?;
        event_json["id"] = json!(id);
        let out = json!({
            "run": at.run,
            "seq": at.seq,
            "event": event_json,
            "payloads": payloads,
            "state": state.to_json(),
            "state_hash": state.hash().to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("run {}  seq {}  event {}", at.run, at.seq, id);
    print_event(&event, &payloads);
    println!();
    print_state(&store, at.seq, state)?;
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: &retrace_events::Event, payloads: &serde_json::Map<String, Value>) {
    println!(
        "{}  {}  {}",
        output::time(event.at),
        event.kind.name(),
        output::summary(event)
    );
    for (blob, value) in payloads {
        println!("  payload {}:", &blob[..12]);
        let reply = matches!(event.kind, EventKind::ModelResponded { .. })
            .then(|| serde_json::from_value::<ModelReply>(value.clone()).ok())
            .flatten();
        match reply {
            Some(reply) => print_reply(&reply),
            None => {
                for line in pretty(value).lines() {
                    println!("    {line}");
                }
            }
        }
    }
}

/// A model reply as a person reads it: the reasoning apart from the answer, then the calls.
fn print_reply(reply: &ModelReply) {
    for block in &reply.reasoning {
        match (&block.redacted, &block.signature) {
            (Some(data), _) => println!(
                "    reasoning (redacted by the provider, {} bytes)",
                data.len()
            ),
            (None, signed) => {
                println!(
                    "    reasoning{}:",
                    if signed.is_some() { " (signed)" } else { "" }
                );
                for line in block.text.lines() {
                    println!("      │ {line}");
                }
            }
        }
    }
    if !reply.text.is_empty() || reply.tool_calls.is_empty() {
        println!("    answer:");
        for line in reply.text.lines() {
            println!("      {line}");
        }
    }
    for call in &reply.tool_calls {
        println!("    calls {} {} {}", call.id, call.name, call.arguments);
    }
    let usage = &reply.usage;
    let reasoning = if usage.reasoning_tokens > 0 {
        format!(" ({} reasoning)", usage.reasoning_tokens)
    } else {
        String::new()
    };
    println!(
        "    usage {} in / {} out tokens{reasoning}, stop: {}",
        usage.input_tokens,
        usage.output_tokens,
        reply.stop_reason.as_deref().unwrap_or("-")
    );
}

fn print_state(store: &dyn Store, seq: u64, state: &retrace_replay::State) -> anyhow::Result<()> {
    println!(
        "state after seq {seq} (hash {})",
        &state.hash().to_string()[..12]
    );
    let status = output::status(&state.status);
    let t = &state.totals;
    println!("  status    {status}");
    println!(
        "  totals    {} steps, {} tool calls, {} in / {} out tokens, {}, model {} ms, tools {} ms",
        t.steps,
        t.tool_calls,
        t.input_tokens,
        t.output_tokens,
        output::usd(t.cost_micro_usd),
        state.timing.model_ms,
        state.timing.tool_ms
    );
    if !state.pending.is_empty() {
        println!(
            "  pending   {}",
            state.pending.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !state.approvals_pending.is_empty() {
        println!(
            "  approvals {}",
            state
                .approvals_pending
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "  conversation ({} messages{}):",
        state.conversation.len(),
        if state.earlier_messages > 0 {
            format!(", {} earlier ones in the log", state.earlier_messages)
        } else {
            String::new()
        }
    );
    for message in &state.conversation {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let content = preview(&blob_value(store, &message.content)?);
        let call = message
            .call_id
            .as_deref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        println!("    #{:<5} {role:<9}{call} {content}", message.seq);
    }
    Ok(())
}

/// A blob as JSON if it is JSON, else as a string (lossy UTF-8), or a note if missing.
fn blob_value(store: &dyn Store, blob: &BlobId) -> anyhow::Result<Value> {
    Ok(match store.blob(blob)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        None => json!(format!("<blob {} missing>", blob.short())),
    })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// One line, at most 100 characters.
fn preview(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let line = text.replace('\n', " ");
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(99).collect::<String>())
    } else {
        line
    }
}

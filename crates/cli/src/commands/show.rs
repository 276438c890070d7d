//! `retrace show RUN[@SEQ] [--json]`: one event in full (payloads resolved) and the state of
//! the run after it; `retrace show RUN@SEQ --request [--json]`: the exact request of the
//! model call at SEQ, rebuilt from the log by the runtime's one request builder.

use std::path::Path;
use std::process::ExitCode;

use retrace_events::reply::ModelReply;
use retrace_events::{BlobId, EventKind};
use retrace_providers::ChatMessage;
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
    // only the imported run's own events (a fork of it shares the spec, not the seqs)
    let imported = store.require_run(&at.run)?.meta.contains_key("imported");
    let source = if imported {
        source_extra(&store, state, at.seq)?
    } else {
        None
    };
    let child = delegated_child(&store, &at.run, &event)?;
    if json_out {
        let mut event_json = serde_json::to_value(&event)?;
        event_json["id"] = json!(id);
        let mut out = json!({
            "run": at.run,
            "seq": at.seq,
            "event": event_json,
            "payloads": payloads,
            "state": state.to_json(),
            "state_hash": state.hash().to_string(),
        });
        if let Some(extra) = source {
            out["source_extra"] = extra;
        }
        if let Some(c) = &child {
            out["child"] = json!({"run": c.child, "agent": c.agent, "call_id": c.call_id});
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("run {}  seq {}  event {}", at.run, at.seq, id);
    print_event(&event, &payloads);
    if let Some(c) = &child {
        println!(
            "  child run: {} ({}), started by this delegate call: retrace log {} · retrace show {}",
            c.child,
            c.agent,
            c.child.short(),
            c.child.short()
        );
    }
    if let Some(extra) = source {
        println!("  from the imported recording, beyond the event's fields:");
        for line in pretty(&extra).lines() {
            println!("    {line}");
        }
    }
    println!();
    print_state(&store, at.seq, state)?;
    Ok(ExitCode::SUCCESS)
}

pub fn request(dir: &Path, what: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let at = target::resolve(&store, what)?;
    let rebuilt = retrace_replay::request::rebuild(&store, &at.run, at.seq)?;
    let request = &rebuilt.request;
    if json_out {
        // the request as sent, with how it was measured beside its fields
        let mut out = serde_json::to_value(request)?;
        if let Some(budget) = &rebuilt.budget {
            out["budget"] = serde_json::to_value(budget)?;
        }
        if let Some(evict) = rebuilt.compacts {
            out["compacts"] = json!(evict);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "run {}  seq {}  model_requested (step {}, attempt {})  record {}",
        at.run,
        rebuilt.seq,
        request.step,
        rebuilt.attempt,
        rebuilt.record.short()
    );
    println!("model   {}", request.model);
    if let Some(evict) = rebuilt.compacts {
        println!(
            "purpose summary request (context compaction): summarizes the conversation's first \
             {evict} messages"
        );
    }
    if let Some(budget) = &rebuilt.budget {
        println!(
            "budget  {} of {} tokens ({} counted {}, scaled ×{}.{:03} to what the provider \
             reported)",
            budget.tokens(),
            budget.limit,
            budget.tokenizer,
            budget.measured,
            budget.scale / 1_000,
            budget.scale % 1_000
        );
    }
    if !request.params.is_empty() {
        println!("params  {}", serde_json::to_string(&request.params)?);
    }
    println!("system:");
    for line in request.system.lines() {
        println!("  │ {line}");
    }
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    println!(
        "tools   {}",
        if names.is_empty() {
            "(none)".to_owned()
        } else {
            names.join(", ")
        }
    );
    let first_new = request.messages.len() - rebuilt.new;
    println!(
        "messages ({} as sent; {} new since the previous model call, marked +):",
        request.messages.len(),
        rebuilt.new
    );
    for (i, message) in request.messages.iter().enumerate() {
        let mark = if i >= first_new { '+' } else { ' ' };
        print_message(mark, i + 1, message);
    }
    Ok(ExitCode::SUCCESS)
}

/// One message of a request, whole, as the provider was sent it.
fn print_message(mark: char, n: usize, message: &ChatMessage) {
    let body = |text: &str| {
        for line in text.lines() {
            println!("      │ {line}");
        }
    };
    match message {
        ChatMessage::User { content } => {
            println!("{mark} {n:>3} user");
            body(content);
        }
        ChatMessage::Assistant {
            text,
            tool_calls,
            reasoning,
        } => {
            println!("{mark} {n:>3} assistant");
            print_reasoning(reasoning, "      ");
            body(text);
            for call in tool_calls {
                println!("      calls {} {} {}", call.id, call.name, call.arguments);
            }
        }
        ChatMessage::Tool {
            call_id,
            content,
            is_error,
        } => {
            println!(
                "{mark} {n:>3} tool [{call_id}]{}",
                if *is_error { " (error)" } else { "" }
            );
            body(content);
        }
    }
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

/// Reasoning blocks, each marked signed or redacted, their text under `│`, at `indent`.
fn print_reasoning(reasoning: &[retrace_events::reply::Reasoning], indent: &str) {
    for block in reasoning {
        match (&block.redacted, &block.signature) {
            (Some(data), _) => println!(
                "{indent}reasoning (redacted by the provider, {} bytes)",
                data.len()
            ),
            (None, signed) => {
                println!(
                    "{indent}reasoning{}:",
                    if signed.is_some() { " (signed)" } else { "" }
                );
                for line in block.text.lines() {
                    println!("{indent}  │ {line}");
                }
            }
        }
    }
}

/// A model reply as a person reads it: the reasoning apart from the answer, then the calls.
fn print_reply(reply: &ModelReply) {
    print_reasoning(&reply.reasoning, "    ");
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

/// A routed run's accounting by model, and the soft budgets a human extended.
fn print_models_and_escalations(state: &retrace_replay::State) {
    for (name, m) in &state.models.by_model {
        println!(
            "  model     {name}: {} replies, {} failures, {} in / {} out tokens, {}",
            m.replies,
            m.failures,
            m.input_tokens,
            m.output_tokens,
            output::usd(m.cost_micro_usd)
        );
    }
    if !state.escalations.is_empty() {
        println!(
            "  escalated {}",
            state
                .escalations
                .iter()
                .map(|(budget, e)| format!("{budget} ×{} (from {})", e.approved, e.from))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
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
    print_models_and_escalations(state);
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
    if let Some(plan) = &state.plan
        && let Some(plan) = retrace_replay::plan::Plan::from_value(&blob_value(store, plan)?)
    {
        let (done, all) = plan.progress();
        println!("  plan      {done} of {all} done");
        for line in plan.lines() {
            println!("    {line}");
        }
    }
    if let retrace_replay::Status::AwaitingAnswer { call_id } = &state.status
        && let Some(retrace_replay::Pending::Tool { args, .. }) = state.pending.get(call_id)
        && let Ok(question) = retrace_replay::Question::from_args(&blob_value(store, args)?)
    {
        println!("  question  [{call_id}] {}", question.question);
        for (n, choice) in (1..).zip(&question.choices) {
            println!("    {n}. {choice}");
        }
        println!(
            "    answer with: retrace answer {} {}",
            state.run.map(|r| r.short()).unwrap_or_default(),
            if question.choices.is_empty() {
                "--text TEXT"
            } else if question.takes_text() {
                "--choice N | --text TEXT"
            } else {
                "--choice N"
            }
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
/// The child run of the delegate call `event` belongs to, if it is one's.
fn delegated_child(
    store: &(impl Store + ?Sized),
    run: &retrace_events::RunId,
    event: &retrace_events::Event,
) -> anyhow::Result<Option<retrace_store::tree::Child>> {
    use retrace_events::EventKind as K;
    let call = match &event.kind {
        K::ToolRequested { call_id, tool, .. } if tool == retrace_runtime::delegate::TOOL => {
            call_id
        }
        K::ToolReturned { call_id, .. }
        | K::ChildStarted { call_id, .. }
        | K::ChildFinished { call_id, .. } => call_id,
        _ => return Ok(None),
    };
    Ok(retrace_store::tree::children(store, run)?
        .into_iter()
        .rev()
        .find(|c| c.call_id == *call))
}

/// For a run imported from another agent's recording: what the source said of the event at
/// `seq` that no field of it holds (the spec's `imported.extras` names a blob per seq).
fn source_extra(
    store: &dyn Store,
    state: &retrace_replay::State,
    seq: u64,
) -> anyhow::Result<Option<Value>> {
    let Some(spec) = state.spec else {
        return Ok(None);
    };
    let spec = blob_value(store, &spec)?;
    let Some(extras) = spec
        .pointer("/imported/extras")
        .and_then(Value::as_str)
        .and_then(|hex| hex.parse::<BlobId>().ok())
    else {
        return Ok(None);
    };
    let extras = blob_value(store, &extras)?;
    match extras
        .get(seq.to_string())
        .and_then(Value::as_str)
        .and_then(|hex| hex.parse::<BlobId>().ok())
    {
        Some(blob) => Ok(Some(blob_value(store, &blob)?)),
        None => Ok(None),
    }
}

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

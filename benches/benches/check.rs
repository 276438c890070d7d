//! Throughput of the determinism check (`retrace check`): a 100,000-step run on a sled
//! store, every step a model call proposing one `fs.read` that the policy allows (5 events
//! per step, two decisions), checked against today's `decide`. Reports decisions and events
//! per second; a plain fold of the same events (no decisions) is the baseline.
//! `cargo bench -p retrace-benches --bench check`.

use std::time::Instant;

use retrace_eval::check::check_run;
use retrace_events::{
    Event, EventKind, Outcome, ProposedCall, RunId, Timestamp, Usage, canonical_json,
};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_runtime::decide::decide;
use retrace_runtime::spec::Spec;
use retrace_store::{NewRun, Store};
use retrace_store_sled::SledStore;
use serde_json::json;

const STEPS: u64 = 100_000;
const APPEND: usize = 10_000;

/// The run: steps of model call, reply, proposal, tool call, result; then the answer.
fn record(store: &SledStore, dir: &std::path::Path) -> RunId {
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    std::fs::write(dir.join("c.json"), r#"{"replies": []}"#).expect("cassette");
    let spec_path = dir.join("agent.toml");
    std::fs::write(
        &spec_path,
        "name = \"long\"\nsystem = \"s\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\nname = \"d\"\ncassette = \"c.json\"\n[tools]\nallow = [\"fs.read\"]\n[budgets]\nmax_steps = 1000000\n",
    )
    .expect("spec");
    let spec = Spec::load(&spec_path).expect("spec");
    let blob = |v: serde_json::Value| store.put_blob(&canonical_json(&v)).expect("blob");
    let run = RunId::from_bytes([42; 16]);
    store
        .create_run(NewRun::new(run, Timestamp(0)))
        .expect("create");
    let usage = Usage {
        input_tokens: 100,
        output_tokens: 10,
        cost_micro_usd: 0,
        latency_ms: 5,
    };
    let request = blob(json!({"step": "any"}));
    let reply = blob(json!({"text": "", "tool_calls": [{"id": "x"}]}));
    let output = blob(json!({"content": "ok"}));
    // two argument blobs, alternating, so the loop guard never sees three equal calls
    let args = [blob(json!({"path": "a.md"})), blob(json!({"path": "b.md"}))];
    let mut kinds = vec![EventKind::RunStarted {
        run,
        spec: store.put_blob(&spec.to_canonical_bytes()).expect("spec"),
        input: blob(json!("read on")),
    }];
    for step in 0..STEPS {
        let seq = kinds.len() as u64;
        let call_id = format!("c{step}");
        let args = args[usize::try_from(step % 2).expect("0 or 1")];
        kinds.push(EventKind::ModelRequested {
            request,
            attempt: 1,
        });
        kinds.push(EventKind::ModelResponded {
            request_seq: seq,
            response: reply,
            usage,
        });
        kinds.push(EventKind::ToolCallsProposed {
            response_seq: seq + 1,
            calls: vec![ProposedCall {
                call_id: call_id.clone(),
                tool: "fs.read".into(),
                args,
                path: None,
            }],
        });
        kinds.push(EventKind::ToolRequested {
            call_id: call_id.clone(),
            tool: "fs.read".into(),
            args,
            idempotent: true,
        });
        kinds.push(EventKind::ToolReturned {
            call_id,
            output,
            is_error: false,
            duration_ms: 1,
        });
    }
    let seq = kinds.len() as u64;
    kinds.push(EventKind::ModelRequested {
        request,
        attempt: 1,
    });
    kinds.push(EventKind::ModelResponded {
        request_seq: seq,
        response: blob(json!({"text": "done"})),
        usage,
    });
    kinds.push(EventKind::RunFinished {
        outcome: Outcome::Succeeded,
        detail: blob(json!({"output": "done"})),
    });
    let mut head = None;
    let mut batch = Vec::with_capacity(APPEND);
    for (i, kind) in kinds.into_iter().enumerate() {
        let event = Event::after(head, Timestamp(1_000 + i as u64), kind);
        head = Some(event.head());
        batch.push(event);
        if batch.len() == APPEND {
            store.append(&run, batch[0].parent, &batch).expect("append");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.append(&run, batch[0].parent, &batch).expect("append");
    }
    run
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path().join("store")).expect("store");
    let t = Instant::now();
    let run = record(&store, dir.path());
    println!(
        "recorded {STEPS} steps in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for round in 1..=3 {
        let t = Instant::now();
        let check = check_run(&store, &run, &decide).expect("checks");
        let secs = t.elapsed().as_secs_f64();
        assert!(check.passed(), "{:?}", check.divergence);
        #[allow(clippy::cast_precision_loss)]
        let (decisions, events) = (check.decisions as f64, check.events as f64);
        println!(
            "check round {round}: {} decisions over {} events in {secs:.2} s: {:.0} decisions/s, {:.0} events/s",
            check.decisions,
            check.events,
            decisions / secs,
            events / secs
        );
    }
    let t = Instant::now();
    let policy = SnapshotPolicy {
        every: u64::MAX,
        write: false,
    };
    let state = state_at_head(&store, &run, policy).expect("fold").state;
    let secs = t.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per_sec = state.len() as f64 / secs;
    println!(
        "baseline: folding the {} events without deciding takes {secs:.2} s ({per_sec:.0} events/s)",
        state.len()
    );
}

//! Context benchmark (issue 20). Prints:
//!
//! 1. **Request building at N steps**: a scripted run of N steps (tiny messages, so the
//!    state's 256-message window is full and compactions come by count), then the cost of
//!    laying out the next request at the head as a process that has cached nothing would:
//!    every message built from its blob and counted (`o200k_base`), the plan, and the stored
//!    record. It must not grow with N. Also the median wall time per step of the whole run.
//! 2. **Input tokens with and without compaction**: a 300-step run against the
//!    window-enforcing loopback server (`retrace_tests::window_server`: ~7 KiB file read per
//!    step), once with `window_tokens = 128000` and once with a window no run reaches (only
//!    the state's 248-message cap compacts; the server enforces nothing). Total input tokens as the server counted
//!    them, per step, the share a prompt cache would serve, and the compactions.
//!
//! Run: `cargo bench -p retrace-benches --bench context` (N from `RETRACE_BENCH_STEPS`,
//! comma-separated, default 1000,10000,100000; the token runs' steps from
//! `RETRACE_BENCH_TOKEN_STEPS`, default 300).

// Rates and ratios of counts far below 2^52: the cast loses nothing.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::time::Instant;

use retrace_benches::{Samples, bench_dir, env_u64};
use retrace_events::RunId;
use retrace_providers::{Cassette, Scripted, ScriptedReply, ToolCall};
use retrace_replay::request;
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_runtime::context::layout::{self, Measure};
use retrace_runtime::context::tokens::Tokenizer;
use retrace_runtime::executor::{Progress, Runner, Stop};
use retrace_runtime::spec::Spec;
use retrace_store::Store;
use retrace_store_sled::SledStore;
use retrace_tests::window_server::{Config, WindowServer};

fn main() {
    let steps: Vec<usize> = std::env::var("RETRACE_BENCH_STEPS")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = bench_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("retrace context benchmark in {}", dir.path().display());
    println!("1. laying out the next request at the head of a run of N steps (nothing cached)");
    for n in steps {
        request_building(&runtime, dir.path(), n);
    }
    let token_steps = env_u64("RETRACE_BENCH_TOKEN_STEPS", 300);
    println!("2. input tokens of a {token_steps}-step run, ~7 KiB read per step");
    for (label, window, server_window) in [
        ("window_tokens = 128000", 128_000, 128_000),
        // no token pressure: only the state's 248-message cap compacts
        ("no token limit", 100_000_000, u64::MAX),
    ] {
        tokens(
            &runtime,
            dir.path(),
            token_steps,
            label,
            window,
            server_window,
        );
    }
}

fn request_building(runtime: &tokio::runtime::Runtime, dir: &std::path::Path, n: usize) {
    let agent = dir.join(format!("agent-{n}"));
    std::fs::create_dir_all(agent.join("ws")).expect("mkdir");
    std::fs::write(agent.join("ws/a.txt"), "a short file\n").expect("write");
    let spec_text = "name = \"bench\"\nsystem = \"bench\"\nworkspace = \"ws\"\n[model]\n\
                     provider = \"scripted\"\nname = \"bench\"\ncassette = \"unused.json\"\n\
                     [tools]\nallow = [\"fs.read\"]\n";
    let spec = Spec::parse(&agent.join("agent.toml"), spec_text).expect("spec");
    let context = spec.context.clone().expect("a resolved [context]");
    let replies = (0..n / 2)
        .map(|i| ScriptedReply {
            text: format!("step {i}"),
            tool_calls: vec![ToolCall {
                id: format!("c{i}"),
                name: "fs.read".into(),
                arguments: serde_json::json!({"path": "a.txt"}),
            }],
            ..ScriptedReply::default()
        })
        .chain(std::iter::once(ScriptedReply {
            text: "done".into(),
            ..ScriptedReply::default()
        }))
        .collect();
    let store = SledStore::open(dir.join(format!("store-{n}"))).expect("store");
    let runner = Runner::new(
        &store,
        spec,
        Box::new(Scripted::new("bench", Cassette { replies })),
    )
    .expect("runner");
    let run = RunId::from_bytes([2; 16]);
    runner.start(run, "bench").expect("start");
    let mut per_step = Samples::default();
    let mut last = Instant::now();
    let stop = runtime.block_on(runner.drive(run, &mut |p| {
        if let Progress::Appended(e) = p
            && matches!(e.kind.name(), "model_responded" | "tool_returned")
        {
            per_step.push(last.elapsed());
            last = Instant::now();
        }
    }));
    assert_eq!(
        stop.expect("drive"),
        Stop::Finished(retrace_events::Outcome::Succeeded)
    );
    let state = state_at_head(&store, &run, SnapshotPolicy::default())
        .expect("state")
        .state;
    let (layout_time, messages) = layout_at_head(&store, &state, &context);
    println!(
        "  N = {n:>6}: {messages} messages in the window, {} compactions so far; layout {:.3} ms \
         median (p99 {:.3}); whole step {:.3} ms median",
        state.totals.compactions,
        layout_time.median_ms(),
        layout_time.p99_ms(),
        per_step.median_ms()
    );
}

/// Lay out the next request at `state` as a process with nothing cached would, 30 times:
/// the times, and how many messages the window held.
fn layout_at_head(
    store: &SledStore,
    state: &retrace_replay::State,
    context: &retrace_runtime::context::Context,
) -> (Samples, usize) {
    let tokenizer = Tokenizer::O200k;
    let params = std::collections::BTreeMap::new();
    let put = |v: serde_json::Value| {
        store
            .put_blob(&retrace_events::canonical_json(&v))
            .expect("blob")
    };
    let (system, tools) = (put(serde_json::json!("bench")), put(serde_json::json!([])));
    let mut layout_time = Samples::default();
    let mut messages = 0;
    for _ in 0..30 {
        let t = Instant::now();
        let pinned = request::pinned(state);
        let window = request::window(state);
        let count = |refs: &[request::MessageRef]| -> Vec<u64> {
            refs.iter()
                .map(|r| {
                    let built = request::message(store, r, Some(context.inline_bytes() as u64))
                        .expect("message");
                    tokenizer.message(&built)
                })
                .collect()
        };
        let fixed: u64 = count(&pinned).iter().sum();
        let measure = Measure {
            fixed,
            messages: window
                .iter()
                .zip(count(&window))
                .map(|(r, t)| (r.role, t))
                .collect(),
        };
        let plan = layout::plan(&measure, context.limit(), layout::UNIT, 248, true);
        std::hint::black_box(plan);
        let header = request::Header {
            model: "bench",
            system,
            tools,
            params: &params,
            step: state.totals.steps,
            pinned,
            artifacts: Some(context.inline_bytes() as u64),
            budget: None,
        };
        request::record(store, state, &header, None).expect("record");
        layout_time.push(t.elapsed());
        messages = window.len();
    }
    (layout_time, messages)
}

fn tokens(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    steps: u64,
    label: &str,
    window: u64,
    server_window: u64,
) {
    let task = "Read the files one by one and report what they say.";
    let agent = dir.join(format!("tokens-{window}"));
    std::fs::create_dir_all(agent.join("ws")).expect("mkdir");
    for k in 0..10 {
        let mut text = String::new();
        for line in 0..110 {
            let _ = writeln!(
                text,
                "file {k} line {line:03}: the quick brown fox {}",
                k * line
            );
        }
        std::fs::write(agent.join(format!("ws/file-{k}.txt")), text).expect("write");
    }
    let server = runtime.block_on(async {
        WindowServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            Config {
                window: server_window,
                steps,
                task: task.into(),
            },
        )
        .await
        .expect("server")
    });
    // a server of one's own needs no key (`api_key_env` left out)
    let spec_text = format!(
        "name = \"reader\"\nsystem = \"Read.\"\nworkspace = \"ws\"\n[model]\nprovider = \"openai\"\n\
         name = \"test-model\"\nbase_url = \"{}\"\n[tools]\nallow = [\"fs.read\"]\n\
         [context]\nwindow_tokens = {window}\n",
        server.url("/v1"),
    );
    let spec = Spec::parse(&agent.join("agent.toml"), &spec_text).expect("spec");
    let provider = retrace_runtime::model::provider(&spec).expect("provider");
    let store = SledStore::open(agent.join("store")).expect("store");
    let runner = Runner::new(&store, spec, provider).expect("runner");
    let run = RunId::from_bytes([3; 16]);
    runner.start(run, task).expect("start");
    let started = Instant::now();
    let stop = runtime.block_on(runner.drive(run, &mut |_| {}));
    assert_eq!(
        stop.expect("drive"),
        Stop::Finished(retrace_events::Outcome::Succeeded)
    );
    let figures = server.stats();
    let state = state_at_head(&store, &run, SnapshotPolicy::default())
        .expect("state")
        .state;
    let total = figures.total_prompt_tokens();
    println!(
        "  {label:<24} {:>6.2} M input tokens ({:>6.0} per step), {:>4.1} % cacheable prefix, \
         largest request {}, {} compactions, {} refusals, {} requests without the task, {:.1} s",
        total as f64 / 1e6,
        total as f64 / steps as f64,
        100.0 * figures.cached_prompt_tokens() as f64 / total.max(1) as f64,
        figures.max_request_tokens(),
        state.totals.compactions,
        figures.refusals(),
        figures.missing_task(),
        started.elapsed().as_secs_f64()
    );
}

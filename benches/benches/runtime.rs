//! Runtime benchmark: an agent run of N steps, alternating a model reply and a tool result
//! of ~1 KiB each (deterministic text), every step durable before the next. Prints, per N:
//! median time per step, durable writes (fsyncs) per step, time per step beyond those
//! fsyncs, bytes on disk per step, and the time for a fresh process to open the store and
//! derive the state at the head (what `retrace resume` does first).
//!
//! Run: `cargo bench -p retrace-benches --bench runtime` (N from `RETRACE_BENCH_STEPS`,
//! comma-separated; default 1000,10000,100000).

// Rates and ratios of counts far below 2^52: the cast loses nothing.
#![allow(clippy::cast_precision_loss)]

use std::io::Write;
use std::time::Instant;

use retrace_benches::{Samples, bench_dir};
use retrace_events::RunId;
use retrace_providers::{Cassette, Scripted, ScriptedReply, ToolCall};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_runtime::executor::{Progress, Runner, Stop};
use retrace_runtime::spec::Spec;
use retrace_store_sled::SledStore;

fn fsync_median_ms(dir: &std::path::Path) -> f64 {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).expect("probe");
    let mut samples = Samples::default();
    for _ in 0..200 {
        let t = Instant::now();
        file.write_all(&[7u8; 1024]).expect("write");
        file.sync_data().expect("sync");
        samples.push(t.elapsed());
    }
    samples.median_ms()
}

fn main() {
    let steps: Vec<usize> = std::env::var("RETRACE_BENCH_STEPS")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = bench_dir();
    let fsync = fsync_median_ms(dir.path());
    println!(
        "retrace runtime benchmark in {}; fsync median {fsync:.3} ms",
        dir.path().display()
    );
    for n in steps {
        let agent = dir.path().join(format!("agent-{n}"));
        std::fs::create_dir_all(agent.join("ws")).expect("mkdir");
        // each tool result is ~1 KiB: fs.read of a 1 KiB file; each reply ~1 KiB of text
        std::fs::write(agent.join("ws/page.txt"), "retrace ".repeat(128)).expect("write");
        let spec_text = "name = \"bench\"\nsystem = \"bench\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\n\
                         name = \"bench\"\ncassette = \"unused.json\"\n[tools]\nallow = [\"fs.read\"]\n";
        let spec = Spec::parse(&agent.join("agent.toml"), spec_text).expect("spec");
        // n steps = n/2 model replies that each call fs.read, then a final reply
        let replies = (0..n / 2)
            .map(|i| ScriptedReply {
                text: format!("step {i}: {}", "thinking ".repeat(110)),
                tool_calls: vec![ToolCall {
                    id: format!("c{i}"),
                    name: "fs.read".into(),
                    arguments: serde_json::json!({"path": "page.txt"}),
                }],
                ..ScriptedReply::default()
            })
            .chain(std::iter::once(ScriptedReply {
                text: "done".into(),
                ..ScriptedReply::default()
            }))
            .collect();
        let provider = Scripted::new("bench", Cassette { replies });
        let store_dir = dir.path().join(format!("store-{n}"));
        let store = SledStore::open(&store_dir).expect("store");
        let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
        let run = RunId::from_bytes([1; 16]);
        runner.start(run, "bench").expect("start");

        // time between successive outcome events = one step (a reply or a tool result)
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut last = Instant::now();
        let mut per_step = Samples::default();
        let syncs_before = store.syncs();
        let started = Instant::now();
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
        let total = started.elapsed();
        let syncs = (store.syncs() - syncs_before) as f64 / n as f64;
        drop(runner);
        drop(store);
        let bytes = dir_size(&store_dir) as f64 / n as f64;

        let mut resume = Samples::default();
        for _ in 0..5 {
            let t = Instant::now();
            let store = SledStore::open(&store_dir).expect("open");
            let state = state_at_head(&store, &run, SnapshotPolicy::default()).expect("state");
            resume.push(t.elapsed());
            assert!(state.state.is_finished());
        }
        let median = per_step.median_ms();
        println!(
            "N = {n:>6}: {median:.3} ms per step (median; {:.1} s in all), {syncs:.2} fsyncs per step, \
             {:.3} ms per step beyond them, {bytes:.0} bytes on disk per step; open + state at head {:.1} ms",
            total.as_secs_f64(),
            (median - syncs * fsync).max(0.0),
            resume.median_ms()
        );
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    dir_size(&path)
                } else {
                    e.metadata().map_or(0, |m| m.len())
                }
            })
            .sum()
    })
}

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

use retrace_benches::{Samples, bench_dir, dir_size, drive_steps, step_agent};
use retrace_events::RunId;
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_runtime::executor::Runner;
use retrace_store_sled::SledStore;

/// The floor: median time to make 1 KiB durable on this filesystem, written the cheapest
/// way there is (over preallocated space, as the store's WAL does) and, for reference,
/// appended to a growing file.
fn fsync_median_ms(dir: &std::path::Path) -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(dir.join("fsync-probe")).expect("probe");
    file.write_all_at(&vec![0u8; 1 << 20], 0)
        .expect("preallocate");
    file.sync_all().expect("sync");
    let mut over = Samples::default();
    for i in 0..200 {
        let t = Instant::now();
        file.write_all_at(&[7u8; 1024], i * 1024).expect("write");
        file.sync_data().expect("sync");
        over.push(t.elapsed());
    }
    let mut file = std::fs::File::create(dir.join("fsync-probe-append")).expect("probe");
    let mut append = Samples::default();
    for _ in 0..200 {
        let t = Instant::now();
        file.write_all(&[7u8; 1024]).expect("write");
        file.sync_data().expect("sync");
        append.push(t.elapsed());
    }
    (over.median_ms(), append.median_ms())
}

fn main() {
    let steps: Vec<usize> = std::env::var("RETRACE_BENCH_STEPS")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = bench_dir();
    let (fsync, fsync_append) = fsync_median_ms(dir.path());
    println!(
        "retrace runtime benchmark in {}; durable 1 KiB write median {fsync:.3} ms \
         ({fsync_append:.3} ms appending to a growing file)",
        dir.path().display()
    );
    for n in steps {
        let (spec, provider) = step_agent(&dir.path().join(format!("agent-{n}")), n);
        let store_dir = dir.path().join(format!("store-{n}"));
        let store = SledStore::open(&store_dir).expect("store");
        let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
        let run = RunId::from_bytes([1; 16]);
        runner.start(run, "bench").expect("start");

        let syncs_before = store.syncs();
        let started = Instant::now();
        let timed = drive_steps(&runner, run);
        let total = started.elapsed();
        let syncs = (store.syncs() - syncs_before) as f64 / n as f64;
        drop(runner);
        drop(store);
        let bytes = dir_size(&store_dir) as f64 / n as f64;
        let segment_bytes = dir_size(&store_dir.join("segments")) as f64 / n as f64;

        let mut resume = Samples::default();
        for _ in 0..5 {
            let t = Instant::now();
            let store = SledStore::open(&store_dir).expect("open");
            let state = state_at_head(&store, &run, SnapshotPolicy::default()).expect("state");
            resume.push(t.elapsed());
            assert!(state.state.is_finished());
        }
        let median = timed.per_step.median_ms();
        println!(
            "N = {n:>6}: {median:.3} ms per step (median; {:.1} s in all), {syncs:.2} fsyncs per step, \
             {:.3} ms per step beyond them, {bytes:.0} bytes on disk per step; open + state at head {:.1} ms\n    \
             model steps {:.3} ms, tool steps {:.3} ms (medians); of the bytes, {segment_bytes:.0} in segment files",
            total.as_secs_f64(),
            (median - syncs * fsync).max(0.0),
            resume.median_ms(),
            timed.replies.median_ms(),
            timed.results.median_ms(),
        );
    }
}

//! Store benchmarks on the sled backend, printing this machine's numbers:
//!
//! 1. fsync latency of a 1 KiB write on the same filesystem (the floor for a durable append);
//! 2. durable append of one event with a 1 KiB payload blob to one run: median and p99;
//! 3. appends across 100 concurrent runs (group commit): durable events/s, appends per fsync;
//! 4. sequential read + hash-verify of a 1M-event run: events/s;
//! 5. bytes on disk per event.
//!
//! Run: `cargo bench -p retrace-benches --bench store`. Scale with `RETRACE_BENCH_EVENTS`
//! (default 1,000,000 for step 4) and `RETRACE_BENCH_DIR` (default: a temp dir under the
//! current directory, so it measures the project's disk rather than a tmpfs).

// Rates and ratios of counts far below 2^52: the cast loses nothing.
#![allow(clippy::cast_precision_loss)]

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use retrace_benches::{Samples, bench_dir, dir_size, env_u64};
use retrace_events::{BlobId, Event, EventKind, Head, RunId, Timestamp};
use retrace_store::{NewRun, Store, VerifyOptions, verify_run};
use retrace_store_sled::SledStore;

const PAYLOAD: usize = 1024;

fn run_id(n: u64) -> RunId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    RunId::from_bytes(b)
}

fn payload(run: u64, seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&run.to_le_bytes());
    p[8..16].copy_from_slice(&seq.to_le_bytes());
    p
}

fn tool_event(head: Option<Head>, output: BlobId) -> Event {
    let seq = head.map_or(0, |h| h.seq + 1);
    Event::after(
        head,
        Timestamp(1_767_225_600_000 + seq),
        EventKind::ToolReturned {
            call_id: format!("call_{seq}"),
            output,
            is_error: false,
            duration_ms: 3,
        },
    )
}

/// Append one event whose 1 KiB payload is a new blob; returns the new head.
fn append_one(store: &SledStore, n: u64, run: &RunId, head: Option<Head>) -> Head {
    let seq = head.map_or(0, |h| h.seq + 1);
    let blob = store.put_blob(&payload(n, seq)).expect("put blob");
    store
        .append(run, head.map(|h| h.id), &[tool_event(head, blob)])
        .expect("append")
}

fn fsync_latency(dir: &std::path::Path) -> Samples {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync-probe"))
        .expect("probe file");
    let block = [0x5a_u8; PAYLOAD];
    let mut samples = Samples::default();
    for _ in 0..300 {
        let t = Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("fsync");
        samples.push(t.elapsed());
    }
    samples
}

fn single_run_appends(dir: &std::path::Path) -> (Samples, u64) {
    let store = SledStore::open(dir.join("single")).expect("open");
    let run = run_id(1);
    store
        .create_run(NewRun::new(run, Timestamp(0)))
        .expect("create");
    let mut head = None;
    for _ in 0..50 {
        head = Some(append_one(&store, 1, &run, head)); // warm-up
    }
    let mut samples = Samples::default();
    for _ in 0..500 {
        let t = Instant::now();
        head = Some(append_one(&store, 1, &run, head));
        samples.push(t.elapsed());
    }
    drop(store); // closed: without the space preallocated ahead of the records
    (samples, dir_size(&dir.join("single")) / 550)
}

fn concurrent_runs(
    dir: &std::path::Path,
    runs: u64,
    per_run: u64,
    new_blobs: bool,
) -> (f64, f64, Samples) {
    let store = SledStore::open(dir.join(format!("concurrent-{new_blobs}"))).expect("open");
    let shared = store.put_blob(&payload(u64::MAX, 0)).expect("blob");
    for n in 0..runs {
        store
            .create_run(NewRun::new(run_id(n), Timestamp(0)))
            .expect("create");
    }
    let barrier = Barrier::new(usize::try_from(runs).expect("runs") + 1);
    let syncs_before = store.syncs();
    let (elapsed, latencies) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..runs)
            .map(|n| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    let run = run_id(n);
                    let mut head = None;
                    let mut lat = Samples::default();
                    barrier.wait();
                    for _ in 0..per_run {
                        let t = Instant::now();
                        head = Some(if new_blobs {
                            append_one(store, n, &run, head)
                        } else {
                            store
                                .append(&run, head.map(|h| h.id), &[tool_event(head, shared)])
                                .expect("append")
                        });
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all = Samples::default();
        for h in handles {
            all.extend(h.join().expect("writer"));
        }
        (start.elapsed(), all)
    });
    let appends = runs * per_run;
    let flushes = store.syncs() - syncs_before;
    (
        appends as f64 / elapsed.as_secs_f64(),
        appends as f64 / flushes.max(1) as f64,
        latencies,
    )
}

fn long_run(dir: &std::path::Path, events: u64) -> (Duration, Duration, Duration, u64) {
    let store = SledStore::open(dir.join("long")).expect("open");
    let run = run_id(7);
    store
        .create_run(NewRun::new(run, Timestamp(0)))
        .expect("create");
    // events share one payload blob, so this measures the event log, not blob storage
    let blob = store.put_blob(&payload(7, 0)).expect("blob");
    let t = Instant::now();
    let mut head: Option<Head> = None;
    let mut left = events;
    while left > 0 {
        let n = left.min(10_000);
        let mut batch = Vec::with_capacity(usize::try_from(n).expect("batch"));
        let mut prev = head;
        for _ in 0..n {
            let e = tool_event(prev, blob);
            prev = Some(e.head());
            batch.push(e);
        }
        head = Some(
            store
                .append(&run, head.map(|h| h.id), &batch)
                .expect("append"),
        );
        left -= n;
    }
    let write = t.elapsed();
    drop(store);
    let bytes = dir_size(&dir.join("long"));

    // a fresh open, as a verifier or resuming process would
    let store = SledStore::open(dir.join("long")).expect("reopen");
    let t = Instant::now();
    let report = verify_run(&store, &run, VerifyOptions { blobs: false }).expect("verify");
    let verify = t.elapsed();
    assert!(report.is_ok() && report.events == events, "{report:?}");
    let t = Instant::now();
    let report = verify_run(&store, &run, VerifyOptions { blobs: false }).expect("verify");
    let warm = t.elapsed();
    assert!(report.is_ok());
    (write, verify, warm, bytes / events)
}

fn main() {
    let dir = bench_dir();
    let events = env_u64("RETRACE_BENCH_EVENTS", 1_000_000);
    println!(
        "retrace store benchmarks (sled) in {}",
        dir.path().display()
    );

    let only = std::env::var("RETRACE_BENCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    let fsync = fsync_latency(dir.path());
    println!(
        "fsync of a 1 KiB write:            median {:>8.3} ms   p99 {:>8.3} ms",
        fsync.median_ms(),
        fsync.p99_ms()
    );

    let (append, per_event_disk) = if want("single") {
        single_run_appends(dir.path())
    } else {
        (Samples::default(), 0)
    };
    println!(
        "durable append, 1 run, 1 KiB blob: median {:>8.3} ms   p99 {:>8.3} ms   ({:.2}x fsync median)",
        append.median_ms(),
        append.p99_ms(),
        append.median_ms() / fsync.median_ms()
    );

    if want("concurrent") {
        for (new_blobs, what) in [
            (true, "each with a new 1 KiB blob"),
            (false, "payload already stored"),
        ] {
            let (rate, per_sync, lat) = concurrent_runs(dir.path(), 100, 200, new_blobs);
            println!(
                "100 concurrent runs x 200 appends, {what}: {rate:>8.0} durable events/s, {per_sync:.1} appends per fsync, \
                 latency median {:.3} ms p99 {:.3} ms",
                lat.median_ms(),
                lat.p99_ms()
            );
        }
    }

    if !want("long") {
        return;
    }
    let (write, cold, warm, per_event) = long_run(dir.path(), events);
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "{events}-event run: batched write {:>9.0} events/s; read + hash-verify {:>9.0} events/s cold open, \
         {:>9.0} warm",
        rate(write),
        rate(cold),
        rate(warm)
    );
    println!(
        "bytes on disk per event: {per_event} (event + index, payload shared); {per_event_disk} with its own 1 KiB blob"
    );
}

//! Replay benchmarks on the sled store, printing this machine's numbers:
//!
//! 1. fold throughput over a 1M-event run, without and with hash verification;
//! 2. state at seq N/2 of that run with snapshots every 1,000 events;
//! 3. "open store + state at head" for runs of 10k and 1M events (a resuming process).
//!
//! Run: `cargo bench -p retrace-benches --bench replay` (scale with `RETRACE_BENCH_EVENTS`).

// Rates and ratios of counts far below 2^52: the cast loses nothing.
#![allow(clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use retrace_benches::{Samples, bench_dir, env_u64, write_run};
use retrace_events::{RunId, decode_verified};
use retrace_replay::{SnapshotPolicy, State, apply, fold_stored, state_at, state_at_head};
use retrace_store::{MAX_RANGE, Store};
use retrace_store_sled::SledStore;

fn fold_plain(store: &SledStore, run: &RunId, upto: u64) -> (State, Duration) {
    let t = Instant::now();
    let mut state = State::default();
    fold_stored(store, run, &mut state, upto, |_, _| Ok(())).expect("fold");
    (state, t.elapsed())
}

fn fold_verified(store: &SledStore, run: &RunId, upto: u64) -> (State, Duration) {
    let t = Instant::now();
    let mut state = State::default();
    let mut next = 0;
    while next <= upto {
        let page = store
            .stored_events(run, next..=upto.min(next + MAX_RANGE - 1))
            .expect("read");
        for stored in &page {
            let event = decode_verified(&stored.id, &stored.bytes).expect("verifies");
            apply(&mut state, &event).expect("applies");
        }
        next = page.last().map_or(upto + 1, |e| e.seq + 1);
    }
    (state, t.elapsed())
}

fn main() {
    let dir = bench_dir();
    let events = env_u64("RETRACE_BENCH_EVENTS", 1_000_000);
    let (long, short) = (RunId::from_bytes([1; 16]), RunId::from_bytes([2; 16]));
    println!(
        "retrace replay benchmarks (sled) in {}",
        dir.path().display()
    );
    {
        let store = SledStore::open(dir.path()).expect("open");
        let t = Instant::now();
        write_run(&store, long, events);
        write_run(&store, short, 10_000);
        println!(
            "setup: wrote {events} + 10,000 events in {:.1} s",
            t.elapsed().as_secs_f64()
        );

        let (plain_state, plain) = fold_plain(&store, &long, events - 1);
        let (verified_state, verified) = fold_verified(&store, &long, events - 1);
        assert_eq!(plain_state.hash(), verified_state.hash());
        let rate = |d: Duration| events as f64 / d.as_secs_f64();
        println!(
            "fold {events} events from the store: {:>9.0} events/s without hash verification, {:>9.0} with",
            rate(plain),
            rate(verified)
        );

        // snapshots every 1,000 events, written by one pass
        let policy = SnapshotPolicy {
            every: 1_000,
            write: true,
        };
        let t = Instant::now();
        state_at_head(&store, &long, policy).expect("snapshots");
        state_at_head(&store, &short, policy).expect("snapshots");
        println!(
            "writing snapshots every 1,000 events: {:.1} s",
            t.elapsed().as_secs_f64()
        );

        let read_only = SnapshotPolicy {
            write: false,
            ..policy
        };
        let mut samples = Samples::default();
        for i in 0..50 {
            let seq = events / 2 + i * 17;
            let t = Instant::now();
            let at = state_at(&store, &long, seq, read_only).expect("state");
            samples.push(t.elapsed());
            assert!(at.from_snapshot.is_some() && at.applied < 1_000);
        }
        println!(
            "state at seq ~N/2 of the {events}-event run: median {:.3} ms, p99 {:.3} ms",
            samples.median_ms(),
            samples.p99_ms()
        );
    }
    for (run, len) in [(short, 10_000u64), (long, events)] {
        let mut samples = Samples::default();
        for _ in 0..5 {
            let t = Instant::now();
            let store = SledStore::open(dir.path()).expect("open");
            let at = state_at_head(
                &store,
                &run,
                SnapshotPolicy {
                    every: 1_000,
                    write: false,
                },
            )
            .expect("state");
            samples.push(t.elapsed());
            assert_eq!(at.state.len(), len);
            drop(store);
        }
        println!(
            "open store + state at head, {len}-event run: median {:.1} ms, p99 {:.1} ms",
            samples.median_ms(),
            samples.p99_ms()
        );
    }
}

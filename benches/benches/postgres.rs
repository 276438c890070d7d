//! The PostgreSQL store against the embedded store, on this machine:
//!
//! 1. **Steps.** The runtime bench's workload (N steps alternating a ~1 KiB model reply and
//!    a ~1 KiB tool result, each durable before the next): per-step median and p99 on
//!    PostgreSQL and on the embedded store.
//! 2. **Workers.** 300 runs of 5 steps (a model reply calling `fs.append`, its result;
//!    then the answer), submitted at once: on PostgreSQL to 3 workers, 100 to each (the
//!    workers are in this process, each with its own runtime, connection pool and socket);
//!    on the embedded store to one daemon with 300 worker slots. Runs/s, durable events/s,
//!    step latency p50/p99 (between a run's successive outcome events, from their
//!    millisecond timestamps) and submit-to-finish p50/p99.
//!
//! Run: `.ci/with-postgres cargo bench -p retrace-benches --bench postgres`
//! (`RETRACE_TEST_PG` names the database; the bench uses a fresh schema and drops it;
//! `RETRACE_BENCH_STEPS` sets N, default 1000).

#![allow(clippy::cast_precision_loss)]

use std::path::Path;
use std::time::{Duration, Instant};

use retrace_benches::{
    Samples, append_agent, bench_dir, drive_steps, env_u64, now_ms, step_agent, submit_runs,
};
use retrace_events::{EventKind, RunId};
use retrace_runtime::executor::Runner;
use retrace_serve::server::Config;
use retrace_store::Store;
use retrace_store_postgres::testing::Schema;
use retrace_store_sled::SledStore;
use retrace_tests::daemon::Served;

const RUNS: usize = 300;
const WORKERS: usize = 3;
const STEPS: usize = 4;
const SUBMITTERS: usize = 8;

fn steps(dir: &Path, n: usize, store: &dyn Store) -> Samples {
    let (spec, provider) = step_agent(dir, n);
    let runner = Runner::new(store, spec, Box::new(provider)).expect("runner");
    let run = RunId::from_bytes([1; 16]);
    runner.start(run, "bench").expect("start");
    drive_steps(&runner, run).per_step
}

/// Wait until every run finished; then report.
fn report(what: &str, store: &dyn Store, submitted: &[(RunId, u64)], first_submit: u64) {
    let began = Instant::now();
    let mut events = 0;
    let mut last_finish = 0;
    let mut step = Samples::default();
    let mut latency = Samples::default();
    for (run, at) in submitted {
        let info = loop {
            let info = store.require_run(run).expect("run");
            let done = info.head.is_some()
                && store
                    .event_at(run, info.len() - 1)
                    .expect("read")
                    .is_some_and(|(_, e)| matches!(e.kind, EventKind::RunFinished { .. }));
            if done {
                break info;
            }
            assert!(
                began.elapsed() < Duration::from_mins(10),
                "run {run} did not finish"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        events += info.len();
        let all = store.events(run, 0..=info.len() - 1).expect("events");
        let mut previous = None;
        for (_, e) in &all {
            if matches!(
                e.kind.name(),
                "model_responded" | "tool_returned" | "run_started"
            ) {
                if let Some(p) = previous {
                    step.push(Duration::from_millis(e.at.0.saturating_sub(p)));
                }
                previous = Some(e.at.0);
            }
        }
        let finished = all.last().map_or(0, |(_, e)| e.at.0);
        last_finish = last_finish.max(finished);
        latency.push(Duration::from_millis(finished.saturating_sub(*at)));
    }
    let span = (last_finish.saturating_sub(first_submit)).max(1) as f64 / 1000.0;
    println!(
        "  {what}: {RUNS} runs, {events} events in {span:.2} s: {:.0} runs/s, {:.0} durable events/s; \
         step p50 {:.0} ms, p99 {:.0} ms; submit to finish p50 {:.0} ms, p99 {:.0} ms",
        RUNS as f64 / span,
        events as f64 / span,
        step.median_ms(),
        step.p99_ms(),
        latency.median_ms(),
        latency.p99_ms(),
    );
}

fn main() {
    let Some(schema) = Schema::fresh("postgres bench") else {
        return;
    };
    let n = usize::try_from(env_u64("RETRACE_BENCH_STEPS", 1000)).expect("N");
    let dir = bench_dir();
    println!(
        "retrace PostgreSQL benchmark in {} (schema {})",
        dir.path().display(),
        schema.name()
    );

    // 1. steps
    let pg = schema.store();
    let on_pg = steps(&dir.path().join("steps-pg"), n, &pg);
    drop(pg);
    let sled = SledStore::open(dir.path().join("steps-sled")).expect("sled");
    let on_sled = steps(&dir.path().join("steps-sled-agent"), n, &sled);
    drop(sled);
    println!("steps (N = {n}, ~1 KiB each, each durable before the next):");
    for (what, s) in [("PostgreSQL", &on_pg), ("embedded", &on_sled)] {
        println!(
            "  {what}: median {:.3} ms, p99 {:.3} ms per step",
            s.median_ms(),
            s.p99_ms()
        );
    }

    // 2. workers
    println!("workers ({RUNS} runs of {STEPS} tool steps each, submitted at once):");
    let spec = append_agent(&dir.path().join("agent"), STEPS);
    let url = schema.url();
    let workers: Vec<Served> = (0..WORKERS)
        .map(|w| {
            Served::with_config(Config {
                workers: RUNS / WORKERS,
                socket: Some(dir.path().join(format!("w{w}.sock"))),
                worker: Some(format!("w{w}")),
                grace: Duration::from_secs(10),
                ..Config::new(url.clone())
            })
        })
        .collect();
    let first = now_ms();
    let clients: Vec<_> = workers.iter().map(Served::client).collect();
    let submitted = submit_runs(&clients, RUNS, SUBMITTERS, &spec);
    let pg = schema.store();
    report("PostgreSQL, 3 workers × 100", &pg, &submitted, first);
    drop(workers);

    let local = dir.path().join("store");
    let daemon = Served::start(&local, RUNS);
    let first = now_ms();
    let submitted = submit_runs(&[daemon.client()], RUNS, SUBMITTERS, &spec);
    let remote = retrace_serve::RemoteStore::new(daemon.client());
    report("embedded, 1 daemon × 300", &remote, &submitted, first);
}

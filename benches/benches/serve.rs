//! Load on `retrace serve` over its unix socket: 1,000 short runs (scripted model, one
//! allowed tool call each, 9 events) submitted at once by 32 client threads to a daemon
//! with 16 workers over a sled store on disk. Reports runs/s, durable events/s,
//! submit-to-finish latency (p50, p99, max) and the process's peak RSS (the daemon and its
//! clients share this process; the clients hold little).
//! `cargo bench -p retrace-benches --bench serve`.

use std::time::{Duration, Instant};

use retrace_benches::{append_agent, now_ms, submit_runs};
use retrace_events::EventKind;
use retrace_serve::RemoteStore;
use retrace_store::Store;
use retrace_tests::daemon::Served;

const RUNS: usize = 1_000;
const CLIENTS: usize = 32;
const WORKERS: usize = 16;

/// Peak resident set of this process (kB), from /proc.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = append_agent(dir.path(), 1);
    let served = Served::start(&dir.path().join("store"), WORKERS);
    let client = served.client();
    let rss_idle = peak_rss_kb();
    let began = Instant::now();
    let first_submit = now_ms();
    let submitted = submit_runs(std::slice::from_ref(&client), RUNS, CLIENTS, &spec);
    let submit_took = began.elapsed();
    // done when no run is active any more
    loop {
        let health = client.health().expect("health");
        if health.active == 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_mins(10),
            "the load did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = began.elapsed();
    let store = RemoteStore::new(client.clone());
    let mut latencies = Vec::with_capacity(RUNS);
    let mut events = 0;
    let mut last_finish = 0;
    for (run, at) in &submitted {
        let info = store.require_run(run).expect("run");
        events += info.len();
        let (_, last) = store
            .event_at(run, info.len() - 1)
            .expect("read")
            .expect("event");
        assert!(
            matches!(last.kind, EventKind::RunFinished { .. }),
            "run {run} did not finish: {:?}",
            last.kind
        );
        last_finish = last_finish.max(last.at.0);
        latencies.push(last.at.0.saturating_sub(*at));
    }
    latencies.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let span = (last_finish.saturating_sub(first_submit)).max(1) as f64 / 1000.0;
    #[allow(clippy::cast_precision_loss)]
    let (runs_s, events_s) = (RUNS as f64 / span, events as f64 / span);
    println!(
        "serve load: {RUNS} runs ({events} events) from {CLIENTS} clients to {WORKERS} workers"
    );
    println!(
        "  submitted in {:.2} s; all finished {:.2} s after the first submit (polled: {:.2} s)",
        submit_took.as_secs_f64(),
        span,
        wall.as_secs_f64()
    );
    println!("  throughput: {runs_s:.0} runs/s, {events_s:.0} durable events/s");
    println!(
        "  submit to finish: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );
    println!(
        "  peak RSS: {} MiB (after start-up: {} MiB)",
        peak_rss_kb() / 1024,
        rss_idle / 1024
    );
    drop(store);
    drop(client);
    drop(served);
}

//! Import and export benchmark (issue 25). Prints, for the largest recording in
//! `shared/cases/traces/` (the Codex rollout, 0.75 MB) repeated to ~100 MB:
//!
//! 1. **Reading** (`retrace_import::parse`, no store): lines/s and MB/s.
//! 2. **Writing** the run into the embedded store (`retrace_import::write`: request
//!    records, blobs, events, one fsync per 4,096 events): events/s and MB/s of the source.
//! 3. **Exporting** it as OpenTelemetry spans (`retrace_otel::run_spans`, then the OTLP JSON
//!    body): spans/s.
//!
//! Run: `cargo bench -p retrace-benches --bench import` (size from
//! `RETRACE_BENCH_IMPORT_MB`, default 100).

// Rates of counts far below 2^52: the casts lose nothing.
#![allow(clippy::cast_precision_loss)]

use std::path::Path;
use std::time::Instant;

use retrace_benches::{bench_dir, env_u64};
use retrace_events::Timestamp;
use retrace_import::{Format, Source};
use retrace_store_sled::SledStore;

fn main() {
    let target_mb = env_u64("RETRACE_BENCH_IMPORT_MB", 100);
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/cases/traces/codex/rollout-0.125.jsonl");
    let one = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let copies = ((target_mb * 1_000_000) / one.len() as u64).max(1);
    let mut bytes = Vec::with_capacity(one.len() * usize::try_from(copies).unwrap_or(1));
    for _ in 0..copies {
        bytes.extend_from_slice(&one);
    }
    let mb = bytes.len() as f64 / 1e6;
    println!(
        "retrace import benchmark: {} repeated {copies} times = {mb:.1} MB",
        file.display()
    );
    let source = Source {
        name: "rollout-x100.jsonl".into(),
        bytes,
    };

    let started = Instant::now();
    let transcript =
        retrace_import::parse(Format::Codex, std::slice::from_ref(&source)).expect("parse");
    let parse = started.elapsed().as_secs_f64();
    let lines = transcript.report.lines;
    println!(
        "1. read:   {lines} lines in {parse:.2} s: {:.0} lines/s, {:.1} MB/s",
        lines as f64 / parse,
        mb / parse
    );

    let dir = bench_dir();
    let store = SledStore::open(dir.path()).expect("store");
    let started = Instant::now();
    let done = retrace_import::write(
        &store,
        &transcript,
        std::slice::from_ref(&source),
        None,
        Timestamp(1),
    )
    .expect("write");
    let write = started.elapsed().as_secs_f64();
    println!(
        "2. write:  {} events in {write:.2} s: {:.0} events/s, {:.1} MB/s of source",
        done.events,
        done.events as f64 / write,
        mb / write
    );
    println!(
        "   whole import: {:.1} MB/s, {:.0} lines/s",
        mb / (parse + write),
        lines as f64 / (parse + write)
    );

    let started = Instant::now();
    let spans = retrace_otel::run_spans(&store, &done.run, retrace_otel::Options::default())
        .expect("spans");
    let count = spans.len();
    let body = retrace_otel::to_otlp_json(spans).to_string();
    let export = started.elapsed().as_secs_f64();
    println!(
        "3. export: {count} spans ({:.1} MB of OTLP JSON) in {export:.2} s: {:.0} spans/s",
        body.len() as f64 / 1e6,
        count as f64 / export
    );
}

//! Inspector benchmark, driven headlessly through egui_kittest (no GPU: a frame here is
//! egui's whole UI pass — layout of every panel — without painting):
//! - open a store holding a 1,000,000-event run and show it: time until the first frame
//!   with the newest event's detail and the state after it on screen;
//! - scrub across the whole run: the cursor moved to 200 points spread over it (as a
//!   scrubber drag does), one frame each: median, p99 and worst frame time, and how long the
//!   detail at a new point takes to arrive from the background thread;
//! - the step view (the default view) scrolled across the whole run: the cursor put on 200
//!   steps spread over it, the cards there read and drawn, every frame timed;
//! - the time view (waterfall and the token and cost curves) on the whole run: its step
//!   index is built off the UI thread (timed from opening), then frames drawn while
//!   scrolling the waterfall and moving the cursor.
//!
//! Run: `cargo bench -p retrace-benches --bench inspector` (`RETRACE_BENCH_EVENTS` sets the
//! run's length).

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use retrace_benches::{Samples, bench_dir, env_u64, write_run};
use retrace_events::{RunId, Timestamp};
use retrace_inspector::{Command, Host, Inspector, Target, View};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_store::Store;
use retrace_store_sled::SledStore;

/// The bench only reads: nothing is forked, decided or resumed.
struct ReadOnly;

impl Host for ReadOnly {
    fn now(&self) -> Timestamp {
        Timestamp(0)
    }

    fn new_run_id(&self) -> RunId {
        RunId::from_bytes([0xee; 16])
    }

    fn resume(&self, _run: RunId) -> Result<(), String> {
        Err("the benchmark runs nothing".into())
    }
}

/// Step until the background data has arrived; the frames it took.
fn settle(harness: &mut Harness<'_, Inspector>) -> usize {
    let deadline = Instant::now() + Duration::from_mins(2);
    let mut frames = 0;
    loop {
        harness.step();
        frames += 1;
        if !harness.state().busy() {
            return frames;
        }
        assert!(Instant::now() < deadline, "the inspector never settled");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn main() {
    let events = env_u64("RETRACE_BENCH_EVENTS", 1_000_000);
    let dir = bench_dir();
    let run = RunId::from_bytes([1; 16]);
    {
        let store = SledStore::open(dir.path()).expect("open");
        let t = Instant::now();
        write_run(&store, run, events);
        // as the runtime leaves a run: a snapshot every 1,000 events
        state_at_head(&store, &run, SnapshotPolicy::default()).expect("snapshots");
        println!(
            "retrace inspector benchmark in {}; setup: {events} events and their snapshots in {:.1} s",
            dir.path().display(),
            t.elapsed().as_secs_f64()
        );
    }

    // open: a fresh store handle, the inspector, frames until the head is shown
    let t = Instant::now();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("reopen"));
    let inspector = Inspector::new(
        Arc::clone(&store),
        Arc::new(ReadOnly),
        Target {
            run: Some(run),
            seq: None,
        },
        || {},
    );
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .build_ui_state(|ui, app: &mut Inspector| app.ui(ui), inspector);
    let first_frame = t.elapsed();
    // the head's detail on screen (the density strip may still be counting: it fills in
    // when ready and holds nothing up)
    let heading = format!("seq {} · ", events - 1);
    let mut frames = 0;
    while harness.query_by_label_contains(&heading).is_none() {
        harness.step();
        frames += 1;
        assert!(
            t.elapsed() < Duration::from_mins(2),
            "the head never showed"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let shown = t.elapsed();
    // the step view's cards at the head: the step index of the whole run built, and the
    // cards on screen read
    while !harness.state().steps_ready() {
        harness.step();
        assert!(
            t.elapsed() < Duration::from_mins(2),
            "the steps never showed"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    settle(&mut harness);
    let strip = t.elapsed();
    assert_eq!(harness.state().position(), Some((run, events - 1)));
    println!(
        "open a {events}-event run: first frame {:.1} ms; head event and its state shown after {:.1} ms ({frames} frames); step index, density strip and the step cards at the head after {:.0} ms",
        first_frame.as_secs_f64() * 1e3,
        shown.as_secs_f64() * 1e3,
        strip.as_secs_f64() * 1e3
    );

    // scrub: one frame per new cursor position, spread over the whole run
    let mut frame = Samples::default();
    let mut arrive = Samples::default();
    let points = 200u64;
    for i in 0..points {
        let seq = (i * 7_919 + i * (events / points)) % events;
        harness.state_mut().apply(Command::MoveTo(seq));
        let t = Instant::now();
        harness.step();
        frame.push(t.elapsed());
        // then wait for that point's detail and rows, timing each frame meanwhile
        let t = Instant::now();
        loop {
            let f = Instant::now();
            harness.step();
            frame.push(f.elapsed());
            if !harness.state().busy() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        arrive.push(t.elapsed());
    }
    println!(
        "scrub over {points} points: frame time median {:.2} ms, p99 {:.2} ms, worst {:.2} ms ({} frames); detail and rows at a new point arrive in {:.1} ms median, {:.1} ms p99",
        frame.median_ms(),
        frame.p99_ms(),
        frame.quantile_ms(1.0),
        frame.len(),
        arrive.median_ms(),
        arrive.p99_ms()
    );

    stories(&mut harness, events, points);
}

/// Page Down ×300, then the step view and the time view over the whole run, `points`
/// cursor moves each.
fn stories(harness: &mut Harness<'_, Inspector>, events: u64, points: u64) {
    // keyboard: 300 presses of Page Down, one frame each
    let mut keys = Samples::default();
    harness.state_mut().apply(Command::Home);
    settle(harness);
    for _ in 0..300 {
        harness.key_press(egui::Key::PageDown);
        let t = Instant::now();
        harness.step();
        keys.push(t.elapsed());
    }
    settle(harness);
    println!(
        "Page Down x300: frame time median {:.2} ms, worst {:.2} ms; cursor at {:?}",
        keys.median_ms(),
        keys.quantile_ms(1.0),
        harness.state().position().map(|(_, seq)| seq)
    );

    // the step view scrolled across the whole run: the cursor on 200 steps spread over it,
    // frames until their cards are drawn
    let mut cards = Samples::default();
    let mut arrive = Samples::default();
    for i in 0..points {
        let seq = (i * 7_919 + i * (events / points)) % events;
        harness.state_mut().apply(Command::MoveTo(seq));
        let t = Instant::now();
        loop {
            let f = Instant::now();
            harness.step();
            cards.push(f.elapsed());
            if !harness.state().busy() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        arrive.push(t.elapsed());
    }
    println!(
        "step view over {points} points: frame time median {:.2} ms, p99 {:.2} ms, worst {:.2} ms ({} frames); cards at a new point drawn after {:.1} ms median, {:.1} ms p99",
        cards.median_ms(),
        cards.p99_ms(),
        cards.quantile_ms(1.0),
        cards.len(),
        arrive.median_ms(),
        arrive.p99_ms()
    );

    // the time view: the waterfall and the curves of the whole run
    harness.state_mut().apply(Command::View(View::Time));
    settle(harness);
    let mut time = Samples::default();
    for i in 0..points {
        let seq = (i * 7_919 + i * (events / points)) % events;
        harness.state_mut().apply(Command::MoveTo(seq));
        let t = Instant::now();
        harness.step();
        time.push(t.elapsed());
    }
    println!(
        "time view (waterfall and curves of {} steps) over {points} points: frame time median {:.2} ms, p99 {:.2} ms, worst {:.2} ms",
        harness.state().step_count(),
        time.median_ms(),
        time.p99_ms(),
        time.quantile_ms(1.0)
    );
}

//! Soak of `retrace serve` (a bench binary, not in CI): the real daemon as a child process,
//! `SOAK_RUNS` runs in flight at all times for `SOAK_SECS` of wall time, on the scripted
//! provider with random latencies; one run in five asks a human, who approves after a
//! random delay; the daemon is SIGKILLed at random moments and started again. Every run
//! appends one numbered line per step to a file of its own, so a lost or repeated effect
//! shows; calls left in doubt by a kill are settled as an operator would (the line is there:
//! skip with its result; it is not: retry).
//!
//! Reports runs finished per second, events per second, step latency (p50, p99, max: from
//! one `model_requested` to the next of a run), the daemon's RSS and open file descriptors
//! over time (CSV and an SVG plot), kills survived, effects checked, and verification of
//! every run in the store at the end.
//!
//! ```sh
//! cargo build --release -p retrace-cli
//! SOAK_SECS=3600 cargo bench -p retrace-benches --bench soak
//! ```
//! Settings (environment): `SOAK_SECS` (3600), `SOAK_RUNS` (1000), `SOAK_STEPS` (12),
//! `SOAK_KILL_SECS` (mean seconds between kills, 120), `SOAK_OUT` (where the CSV and SVG
//! go, `target/soak`), `RETRACE_BIN` (the `retrace` binary; default: beside this bench's
//! `target/<profile>/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use retrace_events::EventKind;
use retrace_serve::Client;
use retrace_serve::api::{Approve, Resolve, RunView, Submit};
use retrace_store::{Store, VerifyOptions, verify_run};
use retrace_store_sled::SledStore;
use serde_json::json;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn line(i: u64) -> String {
    format!("line {i:04}\n")
}

fn retrace_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RETRACE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("this bench's path");
    // target/<profile>/deps/soak-… → target/<profile>/retrace
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("retrace");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --release -p retrace-cli` first, or set RETRACE_BIN",
        bin.display()
    );
    bin
}

/// Slot `k`'s agent in `dir/slots/k`: `steps` replies with random latencies, each
/// appending line N to `log.txt`; with `ask`, a write of `done.md` that needs approval.
fn slot(dir: &Path, k: usize, steps: u64, ask: bool, rng: &mut Rng) -> PathBuf {
    let home = dir.join("slots").join(k.to_string());
    std::fs::create_dir_all(home.join("ws")).expect("mkdir");
    let mut replies: Vec<serde_json::Value> = (0..steps)
        .map(|i| {
            json!({"text": format!("step {i}"), "latency_ms": rng.below(200),
                "tool_calls": [{"id": format!("call-{i}"), "name": "fs.append",
                "arguments": {"path": "log.txt", "text": line(i)}}]})
        })
        .collect();
    if ask {
        replies.push(
            json!({"text": "marking it done", "tool_calls": [{"id": "done",
            "name": "fs.write", "arguments": {"path": "done.md", "content": "done\n"}}]}),
        );
    }
    replies.push(json!({"text": "all lines appended", "latency_ms": rng.below(200)}));
    std::fs::write(
        home.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("cassette");
    let spec = home.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"soak-{k}\"\nsystem = \"append the lines\"\nworkspace = \"ws\"\n\
             [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
             [tools]\nallow = [\"fs.append\", \"fs.write\"]\n\
             [[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n\
             [budgets]\nmax_steps = {}\n",
            steps + 10
        ),
    )
    .expect("spec");
    spec
}

struct Daemon {
    child: Child,
    started: Instant,
}

fn start(store: &Path, workers: u64) -> Daemon {
    let mut child = Command::new(retrace_bin())
        .arg("--store")
        .arg(store)
        .args(["serve", "--workers", &workers.to_string()])
        .env_remove("RETRACE_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn retrace serve");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if l.starts_with("listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_mins(5))
        .expect("retrace serve listens");
    Daemon {
        child,
        started: Instant::now(),
    }
}

/// `(VmRSS kB, open fds)` of process `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

/// One run in flight in a slot.
struct InFlight {
    run: String,
    ask: bool,
    approve_after: Option<Instant>,
}

#[derive(Default)]
struct Tally {
    finished: u64,
    events: u64,
    effects: u64,
    approvals: u64,
    resolved: u64,
    step_ms: Vec<u64>,
}

/// Retry `call` while the daemon is down (killed a moment ago, starting again); any other
/// error ends the soak.
fn patient<T, E: std::fmt::Display>(what: &str, mut call: impl FnMut() -> Result<T, E>) -> T {
    let began = Instant::now();
    loop {
        match call() {
            Ok(v) => return v,
            Err(e) => {
                let message = e.to_string();
                let down = message.contains("cannot reach retrace serve")
                    || message.contains("a call to retrace serve");
                assert!(
                    down && began.elapsed() < Duration::from_mins(5),
                    "{what}: {message}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// [`patient`] for a decision: an error other than the daemon being down (the decision was
/// made, and its answer lost to a kill) is reported and left to the next look at the run.
fn decide<T, E: std::fmt::Display>(what: &str, mut call: impl FnMut() -> Result<T, E>) -> bool {
    let mut first = None;
    let outcome = patient(what, || match call() {
        Ok(_) => Ok(true),
        Err(e) => {
            let message = e.to_string();
            if message.contains("cannot reach retrace serve") {
                Err(message)
            } else {
                first.get_or_insert(message);
                Ok(false)
            }
        }
    });
    if let Some(message) = first {
        eprintln!("soak: {what}: {message} (looked at again next pass)");
    }
    outcome
}

/// A finished run in slot `home`: its outcome, its effects (exactly `steps` lines, each
/// once), its events and step latencies; then the slot is emptied for the next run.
fn harvest(store: &Client, home: &Path, view: &RunView, steps: u64, ask: bool, tally: &mut Tally) {
    assert_eq!(
        view.outcome,
        Some(retrace_events::Outcome::Succeeded),
        "run {} ended {:?}: {:?}",
        view.id,
        view.outcome,
        view.reason
    );
    let ws = home.join("ws");
    let written = std::fs::read_to_string(ws.join("log.txt")).unwrap_or_default();
    let expected: String = (0..steps).map(line).collect();
    assert_eq!(
        written, expected,
        "run {}: each effect exactly once",
        view.id
    );
    assert_eq!(ws.join("done.md").exists(), ask, "run {}", view.id);
    tally.effects += steps;
    let remote = retrace_serve::RemoteStore::new(store.clone());
    let run: retrace_events::RunId = view.id.parse().expect("run id");
    let len = patient("read the run", || remote.require_run(&run)).len();
    let mut events = Vec::new();
    let mut from = 0;
    while from < len {
        let to = (from + retrace_store::MAX_RANGE - 1).min(len - 1);
        events.extend(patient("read the run", || remote.events(&run, from..=to)));
        from = to + 1;
    }
    let requested: Vec<u64> = events
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::ModelRequested { .. }))
        .map(|(_, e)| e.at.0)
        .collect();
    tally
        .step_ms
        .extend(requested.windows(2).map(|w| w[1].saturating_sub(w[0])));
    tally.events += events.len() as u64;
    tally.finished += 1;
    let _ = std::fs::remove_file(ws.join("log.txt"));
    let _ = std::fs::remove_file(ws.join("done.md"));
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len().max(1) as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

/// A plotted series: name, colour, `(seconds, value)` points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// An SVG plot of series, each scaled to its own maximum.
fn svg(series: &[Series<'_>], secs: f64) -> String {
    use std::fmt::Write as _;
    let (w, h) = (900.0, 300.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        h + 40.0
    );
    for ((name, color, points), x) in series.iter().zip([10.0, 310.0, 610.0]) {
        let max = points.iter().map(|p| p.1).fold(1.0, f64::max);
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| {
                format!(
                    "{:.1},{:.1}",
                    t / secs.max(1.0) * w,
                    h - v / max * (h - 10.0)
                )
            })
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" points=\"{}\"/>\n<text x=\"{x}\" y=\"{}\" fill=\"{color}\">{name} (max {max:.0})</text>\n",
            path.join(" "),
            h + 30.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[allow(clippy::too_many_lines)] // one soak, start to report
fn main() {
    let secs = setting("SOAK_SECS", 3600);
    let runs = usize::try_from(setting("SOAK_RUNS", 1000)).expect("runs");
    let steps = setting("SOAK_STEPS", 12);
    let kill_secs = setting("SOAK_KILL_SECS", 120);
    let out_dir = PathBuf::from(std::env::var("SOAK_OUT").unwrap_or_else(|_| "target/soak".into()));
    std::fs::create_dir_all(&out_dir).expect("mkdir out");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let mut rng = Rng(0x50a6_2026);
    let slots: Vec<(PathBuf, bool)> = (0..runs)
        .map(|k| {
            let ask = k % 5 == 0;
            let spec = slot(dir.path(), k, steps, ask, &mut rng);
            (spec, ask)
        })
        .collect();
    let mut daemon = start(&store, u64::try_from(runs).expect("runs"));
    let client = Client::unix(&store.join("serve.sock")).expect("client");
    let submit = |spec: &Path, n: u64| {
        patient("submit", || {
            client.submit(&Submit {
                spec: None,
                spec_path: Some(spec.to_path_buf()),
                input: format!("soak {n}"),
                new: true,
            })
        })
        .run
    };
    let mut flight: Vec<Option<InFlight>> = Vec::with_capacity(runs);
    for (n, (spec, ask)) in slots.iter().enumerate() {
        flight.push(Some(InFlight {
            run: submit(spec, n as u64),
            ask: *ask,
            approve_after: None,
        }));
    }
    let began = Instant::now();
    let deadline = began + Duration::from_secs(secs);
    let mut next_kill = began + Duration::from_secs(kill_secs / 2 + rng.below(kill_secs));
    let mut next_sample = began;
    let mut samples: Vec<(f64, u64, u64, u64)> = Vec::new(); // secs, rss kB, fds, finished
    let mut kills = 0u64;
    let mut submitted = runs as u64;
    let mut tally = Tally::default();
    let mut cursor = 0usize;
    loop {
        let now = Instant::now();
        if now >= next_sample {
            let (rss, fds) = usage(daemon.child.id());
            samples.push((began.elapsed().as_secs_f64(), rss, fds, tally.finished));
            next_sample = now + Duration::from_secs(10);
        }
        if now >= next_kill && now < deadline {
            let _ = daemon.child.kill(); // SIGKILL
            let _ = daemon.child.wait();
            kills += 1;
            let lived = daemon.started.elapsed().as_secs();
            daemon = start(&store, u64::try_from(runs).expect("runs"));
            eprintln!(
                "soak: kill {kills} after {lived} s; {} runs finished so far",
                tally.finished
            );
            next_kill = Instant::now() + Duration::from_secs(kill_secs / 2 + rng.below(kill_secs));
        }
        if flight.iter().all(Option::is_none) {
            break;
        }
        // look at fifty slots per pass (every run about every two seconds at 1,000)
        for _ in 0..50 {
            cursor = (cursor + 1) % runs;
            let Some(inflight) = &mut flight[cursor] else {
                continue;
            };
            let view = patient("run", || client.run(&inflight.run));
            if view.finished {
                let (spec, ask) = &slots[cursor];
                harvest(
                    &client,
                    spec.parent().expect("slot"),
                    &view,
                    steps,
                    *ask,
                    &mut tally,
                );
                flight[cursor] = (Instant::now() < deadline).then(|| {
                    submitted += 1;
                    InFlight {
                        run: submit(spec, submitted),
                        ask: *ask,
                        approve_after: None,
                    }
                });
            } else if !view.awaiting_approval.is_empty() {
                assert!(
                    inflight.ask,
                    "run {} asks though its agent does not",
                    view.id
                );
                let due = *inflight
                    .approve_after
                    .get_or_insert_with(|| Instant::now() + Duration::from_millis(rng.below(5000)));
                if Instant::now() >= due
                    && decide("approve", || {
                        client.approve(
                            &view.id,
                            &Approve {
                                note: Some("soak".into()),
                                ..Approve::default()
                            },
                        )
                    })
                {
                    tally.approvals += 1;
                }
            } else if let Some(call) = &view.outcome_unknown {
                let i: u64 = call
                    .strip_prefix("call-")
                    .and_then(|n| n.parse().ok())
                    .expect("an append's call id");
                let log = slots[cursor].0.with_file_name("ws").join("log.txt");
                let written = std::fs::read_to_string(&log).unwrap_or_default();
                let how = if written.ends_with(&line(i)) {
                    retrace_serve::resolve::How::Skip(
                        json!({"path": "log.txt", "bytes_appended": line(i).len()}),
                    )
                } else {
                    retrace_serve::resolve::How::Retry
                };
                if decide("resolve", || {
                    client.resolve(
                        &view.id,
                        &Resolve {
                            call: Some(call.clone()),
                            how: how.clone(),
                            note: Some("soak".into()),
                            by: None,
                        },
                    )
                }) {
                    tally.resolved += 1;
                    decide("resume", || client.resume(&view.id));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = began.elapsed().as_secs_f64();
    let (rss, fds) = usage(daemon.child.id());
    samples.push((wall, rss, fds, tally.finished));
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();

    // every run in the store verifies
    let opened = SledStore::open(&store).expect("open the store");
    let all = opened.runs().expect("runs");
    let mut verified = 0;
    for info in &all {
        let report = verify_run(&opened, &info.id, VerifyOptions::default()).expect("verify");
        assert!(
            report.is_ok(),
            "run {} fails verification: {:?}",
            info.id,
            report.problem
        );
        verified += 1;
    }
    assert_eq!(
        verified as u64, submitted,
        "every submitted run is in the store"
    );

    tally.step_ms.sort_unstable();
    let csv: String = std::iter::once("secs,rss_kb,fds,finished\n".to_owned())
        .chain(
            samples
                .iter()
                .map(|(t, r, f, n)| format!("{t:.0},{r},{f},{n}\n")),
        )
        .collect();
    std::fs::write(out_dir.join("soak.csv"), csv).expect("csv");
    let points = |pick: fn(&(f64, u64, u64, u64)) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.0, pick(s))).collect()
    };
    #[allow(clippy::cast_precision_loss)]
    let plot = svg(
        &[
            ("daemon RSS kB", "#c03030", points(|s| s.1 as f64)),
            ("open fds", "#3060c0", points(|s| s.2 as f64)),
        ],
        wall,
    );
    std::fs::write(out_dir.join("soak.svg"), plot).expect("svg");
    // the trend: mean RSS and fds over the first and the last fifth of the samples
    let fifth = (samples.len() / 5).max(1);
    let mean = |xs: &[(f64, u64, u64, u64)], f: fn(&(f64, u64, u64, u64)) -> u64| {
        xs.iter().map(f).sum::<u64>() / xs.len().max(1) as u64
    };
    let (first, last) = (&samples[..fifth], &samples[samples.len() - fifth..]);
    let by_outcome: BTreeMap<&str, usize> = BTreeMap::from([("verified", verified)]);
    #[allow(clippy::cast_precision_loss)]
    {
        println!(
            "soak: {wall:.0} s, {runs} runs in flight, {steps} steps each, {kills} daemon SIGKILLs survived"
        );
        println!(
            "  runs finished {} ({:.2}/s), events {} ({:.0}/s), effects checked {} (0 lost, 0 repeated)",
            tally.finished,
            tally.finished as f64 / wall,
            tally.events,
            tally.events as f64 / wall,
            tally.effects
        );
        println!(
            "  approvals {}, calls in doubt settled {}",
            tally.approvals, tally.resolved
        );
        println!(
            "  step latency p50 {} ms, p99 {} ms, max {} ms ({} steps)",
            percentile(&tally.step_ms, 0.5),
            percentile(&tally.step_ms, 0.99),
            tally.step_ms.last().copied().unwrap_or(0),
            tally.step_ms.len()
        );
        println!(
            "  daemon RSS first fifth {} kB, last fifth {} kB; open fds {} → {}",
            mean(first, |s| s.1),
            mean(last, |s| s.1),
            mean(first, |s| s.2),
            mean(last, |s| s.2)
        );
        println!(
            "  store: {} runs, {by_outcome:?}; {} and {} written",
            all.len(),
            out_dir.join("soak.csv").display(),
            out_dir.join("soak.svg").display()
        );
    }
}

//! Helpers for the bench binaries: latency samples and environment knobs.

use std::time::Duration;

use retrace_events::{RunId, Timestamp};
use retrace_store::{NewRun, Store};

/// Latency samples with percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Record one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Absorb another set.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The `q` quantile (0.0..=1.0) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i].as_secs_f64() * 1e3
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Median in milliseconds.
    pub fn median_ms(&self) -> f64 {
        self.quantile_ms(0.5)
    }

    /// 99th percentile in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }
}

/// A numeric environment variable, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where benchmarks put their stores: `RETRACE_BENCH_DIR`, else a temp dir in the current
/// directory (the disk the project lives on, not a tmpfs).
pub fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("RETRACE_BENCH_DIR")
        .map_or_else(|| std::path::PathBuf::from("."), Into::into);
    tempfile::Builder::new()
        .prefix("retrace-bench-")
        .tempdir_in(base)
        .expect("bench dir")
}

/// Bytes of every file under `dir` (a closed store's size on disk).
pub fn dir_size(dir: &std::path::Path) -> u64 {
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

/// Create `run` in `store` with `len` valid events (the replay test kit's random walk), in
/// appends of 10,000.
pub fn write_run(store: &dyn Store, run: RunId, len: u64) {
    store
        .create_run(NewRun::new(run, Timestamp(0)))
        .expect("create");
    let events = retrace_replay::testkit::valid_run(7, run, len, false);
    let mut head = None;
    for batch in events.chunks(10_000) {
        head = Some(
            store
                .append(&run, head.map(|h: retrace_events::Head| h.id), batch)
                .expect("append"),
        );
    }
}

/// The runtime bench's agent in `dir`: `n` steps alternating a ~1 KiB model reply and a
/// ~1 KiB tool result (each `fs.read` of its own file), all distinct prose-like text; the
/// spec and its scripted model.
pub fn step_agent(
    dir: &std::path::Path,
    n: usize,
) -> (retrace_runtime::spec::Spec, retrace_providers::Scripted) {
    use retrace_providers::{Cassette, Scripted, ScriptedReply, ToolCall};
    std::fs::create_dir_all(dir.join("ws/pages")).expect("mkdir");
    for i in 0..n / 2 {
        std::fs::write(
            dir.join(format!("ws/pages/{i}.txt")),
            prose(2 * i as u64, 960),
        )
        .expect("write");
    }
    let spec_text = "name = \"bench\"\nsystem = \"bench\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\n\
                     name = \"bench\"\ncassette = \"unused.json\"\n[tools]\nallow = [\"fs.read\"]\n";
    let spec =
        retrace_runtime::spec::Spec::parse(&dir.join("agent.toml"), spec_text).expect("spec");
    // n steps = n/2 model replies that each call fs.read, then a final reply
    let replies = (0..n / 2)
        .map(|i| ScriptedReply {
            text: format!("step {i}: {}", prose(2 * i as u64 + 1, 1000)),
            tool_calls: vec![ToolCall {
                id: format!("c{i}"),
                name: "fs.read".into(),
                arguments: serde_json::json!({"path": format!("pages/{i}.txt")}),
            }],
            ..ScriptedReply::default()
        })
        .chain(std::iter::once(ScriptedReply {
            text: "done".into(),
            ..ScriptedReply::default()
        }))
        .collect();
    (spec, Scripted::new("bench", Cassette { replies }))
}

/// Times of a drive's steps: each the time from one outcome event (a reply or a tool
/// result) being durable to the next.
#[derive(Debug, Default)]
pub struct StepTimes {
    /// Every step.
    pub per_step: Samples,
    /// Steps ending in a model reply.
    pub replies: Samples,
    /// Steps ending in a tool result.
    pub results: Samples,
}

/// Drive `run` (started) to its successful end, timing each step.
pub fn drive_steps(runner: &retrace_runtime::executor::Runner<'_>, run: RunId) -> StepTimes {
    use retrace_runtime::executor::{Progress, Stop};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut last = std::time::Instant::now();
    let mut times = StepTimes::default();
    let stop = runtime.block_on(runner.drive(run, &mut |p| {
        if let Progress::Appended(e) = p
            && matches!(e.kind.name(), "model_responded" | "tool_returned")
        {
            let took = last.elapsed();
            times.per_step.push(took);
            if e.kind.name() == "model_responded" {
                times.replies.push(took);
            } else {
                times.results.push(took);
            }
            last = std::time::Instant::now();
        }
    }));
    assert_eq!(
        stop.expect("drive"),
        Stop::Finished(retrace_events::Outcome::Succeeded)
    );
    times
}

/// About `bytes` of deterministic English-like text, different for every `seed`.
pub fn prose(seed: u64, bytes: usize) -> String {
    const WORDS: [&str; 48] = [
        "the",
        "model",
        "reads",
        "a",
        "file",
        "and",
        "then",
        "writes",
        "summary",
        "of",
        "its",
        "findings",
        "into",
        "workspace",
        "while",
        "checking",
        "each",
        "function",
        "for",
        "errors",
        "tests",
        "pass",
        "after",
        "change",
        "review",
        "shows",
        "two",
        "issues",
        "in",
        "parser",
        "module",
        "which",
        "handles",
        "input",
        "from",
        "users",
        "next",
        "step",
        "is",
        "to",
        "refactor",
        "code",
        "so",
        "that",
        "it",
        "stays",
        "clear",
        "fast",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(WORDS[(x % 48) as usize]);
        out.push(if x.is_multiple_of(11) { '\n' } else { ' ' });
    }
    out
}

/// Milliseconds since the Unix epoch (what event timestamps hold).
pub fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

/// Submit `runs` runs of `spec` (new ones, inputs `task N`), spread evenly over `clients`,
/// from `threads` threads per client; each run with the time it was submitted (ms).
pub fn submit_runs(
    clients: &[retrace_serve::Client],
    runs: usize,
    threads: usize,
    spec: &serde_json::Value,
) -> Vec<(RunId, u64)> {
    let submitted = std::sync::Mutex::new(Vec::with_capacity(runs));
    let per = runs / clients.len();
    std::thread::scope(|s| {
        for (c, client) in clients.iter().enumerate() {
            for t in 0..threads {
                let submitted = &submitted;
                s.spawn(move || {
                    for i in (t..per).step_by(threads) {
                        let at = now_ms();
                        let answer = client
                            .submit(&retrace_serve::api::Submit {
                                spec: Some(spec.clone()),
                                spec_path: None,
                                input: format!("task {}", c * per + i),
                                new: true,
                            })
                            .expect("submit");
                        let run: RunId = answer.run.parse().expect("run id");
                        submitted.lock().expect("lock").push((run, at));
                    }
                });
            }
        }
    });
    submitted.into_inner().expect("lock")
}

/// The daemon benches' agent in `dir`: `steps` replies each calling `fs.append` (allowed),
/// then the answer; as the spec JSON a client submits.
pub fn append_agent(dir: &std::path::Path, steps: usize) -> serde_json::Value {
    use serde_json::json;
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    let mut replies: Vec<serde_json::Value> = (0..steps)
        .map(|i| {
            json!({"text": format!("step {i}"), "tool_calls": [{"id": format!("c{i}"),
                "name": "fs.append", "arguments": {"path": "log.txt", "text": "x\n"}}]})
        })
        .collect();
    replies.push(json!({"text": "done"}));
    std::fs::write(
        dir.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("cassette");
    let spec_path = dir.join("agent.toml");
    std::fs::write(
        &spec_path,
        "name = \"short\"\nsystem = \"s\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\nname = \"d\"\ncassette = \"cassette.json\"\n[tools]\nallow = [\"fs.append\"]\n[[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n",
    )
    .expect("spec");
    let spec = retrace_runtime::spec::Spec::load(&spec_path).expect("spec");
    serde_json::from_slice(&spec.to_canonical_bytes()).expect("spec json")
}

//! Failover with real processes: three `retrace serve` workers on one PostgreSQL store
//! drive 50 runs whose every step appends a line to a file with a non-idempotent tool
//! (`fs.append`). Mid-way one worker is SIGKILLed and another SIGSTOPped past its lease,
//! then continued. The survivors take every run over from the log; the stalled worker,
//! once continued, appends nothing (its appends are fenced by the leases it lost and it
//! starts no tool call past its lease). Each run must end exactly like an uninterrupted run
//! of the same agent: every line once, in order, a verifying log, the same state hash.
//!
//! A run stopped between a tool's intent and its recorded result is in doubt ("outcome
//! unknown"); the test resolves it as an operator would, by looking at the file once no
//! process can still be in the middle of that append.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{line, ok, resolve_append, text};
use retrace_serve::Client;
use retrace_serve::api::Submit;
use retrace_store_postgres::testing::Schema;
use serde_json::{Value, json};

const RUNS: usize = 50;
const STEPS: usize = 12;
const TTL: Duration = Duration::from_secs(3);
const TOKEN: &str = "failover-test-token";

/// Agent `k`: its own workspace; a cassette of one `fs.append` per step, then an answer.
fn agent(dir: &Path, k: usize) -> PathBuf {
    let home = dir.join(format!("agent-{k:02}"));
    std::fs::create_dir_all(home.join("ws")).expect("mkdir");
    let spec = home.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"appender-{k:02}\"\nsystem = \"append the lines\"\nworkspace = \"ws\"\n\
             [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
             [tools]\nallow = [\"fs.append\"]\n\
             [[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n\
             [budgets]\nmax_steps = {}\n",
            STEPS + 10
        ),
    )
    .expect("write spec");
    let mut replies: Vec<Value> = (0..STEPS)
        .map(|i| {
            json!({"text": format!("step {i}"), "latency_ms": 60, "tool_calls": [{
                "id": format!("call-{i}"), "name": "fs.append",
                "arguments": {"path": "log.txt", "text": line(i)}}]})
        })
        .collect();
    replies.push(json!({"text": "all lines appended"}));
    std::fs::write(
        home.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("write cassette");
    spec
}

struct Worker {
    name: String,
    child: Child,
    client: Client,
    log: PathBuf,
}

impl Drop for Worker {
    /// A failing test leaves no worker behind.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn start_worker(store: &str, name: &str, dir: &Path) -> Worker {
    let addr = free_addr();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args([
            "--store",
            store,
            "serve",
            "--workers",
            "64",
            "--lease-ttl",
            "3s",
        ])
        .args(["--worker", name, "--http", &addr.to_string()])
        .env("RETRACE_API_TOKEN", TOKEN)
        .env("RUST_LOG", "retrace=info,retrace_serve=info")
        .env_remove("RETRACE_STORE")
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).expect("out"))
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn retrace serve");
    let client = Client::tcp(addr, TOKEN.to_owned()).expect("client");
    let began = Instant::now();
    while client.health().is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "worker {name} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Worker {
        name: name.to_owned(),
        child,
        client,
        log,
    }
}

fn signal(worker: &Worker, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &worker.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {}", worker.name);
}

/// Every run's standing in the store, by run id (`retrace runs --json`).
fn standings(store: &Path) -> BTreeMap<String, Value> {
    let out = ok(store, &["runs", "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .map(|r| (r["run"].as_str().expect("id").to_owned(), r))
        .collect()
}

fn state_hash(store: &Path, run: &str) -> String {
    let shown: Value =
        serde_json::from_slice(&ok(store, &["show", run, "--json"]).stdout).expect("show --json");
    shown["state_hash"].as_str().expect("state_hash").to_owned()
}

fn submit_all(workers: &[&Worker], specs: &[PathBuf], new: bool) -> Vec<String> {
    specs
        .iter()
        .enumerate()
        .map(|(k, spec)| {
            let worker = workers[k % workers.len()];
            worker
                .client
                .submit(&Submit {
                    spec: None,
                    spec_path: Some(spec.clone()),
                    input: "append the lines".into(),
                    new,
                })
                .unwrap_or_else(|e| panic!("submit to {}: {e}", worker.name))
                .run
        })
        .collect()
}

fn lines_written(specs: &[PathBuf]) -> usize {
    specs
        .iter()
        .map(|spec| {
            std::fs::read_to_string(spec.with_file_name("ws").join("log.txt"))
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum()
}

/// The reference: every agent once, uninterrupted, on the same workers; their final state
/// hashes. The files are emptied after.
fn reference(store: &Path, workers: &[Worker], specs: &[PathBuf], expected: &str) -> Vec<String> {
    let reference = submit_all(&workers.iter().collect::<Vec<_>>(), specs, false);
    let began = Instant::now();
    loop {
        let all = standings(store);
        if reference
            .iter()
            .all(|r| all[r]["status"]["status"] == "finished")
        {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_mins(2),
            "reference runs did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let hashes: Vec<String> = reference.iter().map(|r| state_hash(store, r)).collect();
    for spec in specs {
        let log = spec.with_file_name("ws").join("log.txt");
        assert_eq!(std::fs::read_to_string(&log).expect("log"), expected);
        std::fs::remove_file(log).expect("reset");
    }
    hashes
}

/// Watch every run end on a survivor, continuing the stalled worker after 2 × TTL + 1 s
/// and resolving calls in doubt as an operator would; when each run finished (after the
/// kill), and the runs resolved.
fn until_all_end(
    store: &Path,
    specs: &[PathBuf],
    runs: &[String],
    stalled: &Worker,
    kill: Instant,
) -> (BTreeMap<String, Duration>, BTreeSet<String>) {
    let mut finished_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut resolved: BTreeSet<String> = BTreeSet::new();
    let mut continued = false;
    loop {
        if !continued && kill.elapsed() > 2 * TTL + Duration::from_secs(1) {
            // w2 wakes long after its leases expired and others took its runs
            signal(stalled, "-CONT");
            continued = true;
        }
        let all = standings(store);
        for run in runs {
            let status = &all[run]["status"];
            match status["status"].as_str() {
                Some("finished") => {
                    finished_at
                        .entry(run.clone())
                        .or_insert_with(|| kill.elapsed());
                }
                // resolved once the stalled worker is continued: a process frozen in the
                // middle of an append finishes it when it wakes, so until then the file
                // cannot tell whether the line will be there (an operator waits for the
                // stalled process to die or wake before settling its calls)
                Some("outcome_unknown")
                    if continued && kill.elapsed() > 2 * TTL + Duration::from_secs(2) =>
                {
                    let k = runs.iter().position(|r| r == run).expect("ours");
                    let call = status["call_id"].as_str().expect("call id");
                    resolve_append(
                        store,
                        &specs[k].with_file_name("ws").join("log.txt"),
                        run,
                        call,
                        |i| json!({"path": "log.txt", "bytes_appended": line(i).len()}),
                    );
                    resolved.insert(run.clone());
                }
                _ => {}
            }
        }
        if finished_at.len() == RUNS && continued {
            break;
        }
        assert!(
            kill.elapsed() < Duration::from_mins(2),
            "{} of {RUNS} runs finished 120 s after the kill",
            finished_at.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (finished_at, resolved)
}

/// Every file holds each line once, in order, and every run ends in its reference's state.
fn assert_like_reference(
    store: &Path,
    specs: &[PathBuf],
    runs: &[String],
    reference_hashes: &[String],
    expected: &str,
) {
    for (k, spec) in specs.iter().enumerate() {
        let log = spec.with_file_name("ws").join("log.txt");
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            expected,
            "run {} ({}): every line exactly once, in order",
            runs[k],
            spec.display()
        );
        assert_eq!(
            state_hash(store, &runs[k]),
            reference_hashes[k],
            "run {} ends in the state of an uninterrupted run",
            runs[k]
        );
    }
}

/// On a failure to come: what the workers said of each run that finished late.
fn explain_late(
    workers: &[Worker],
    finished_at: &BTreeMap<String, Duration>,
    resolved: &BTreeSet<String>,
) {
    for (run, at) in finished_at {
        if *at > 2 * TTL && !resolved.contains(run) {
            let short = &run[..12];
            eprintln!("late run {run} finished {at:.1?} after the kill:");
            for worker in workers {
                for l in std::fs::read_to_string(&worker.log)
                    .unwrap_or_default()
                    .lines()
                {
                    if l.contains(short) {
                        eprintln!("  {}: {l}", worker.name);
                    }
                }
            }
        }
    }
}

#[test]
fn a_killed_and_a_stalled_worker_lose_their_runs_to_the_survivor_and_nothing_is_done_twice() {
    let Some(schema) = Schema::fresh("failover") else {
        return;
    };
    let url = schema.url();
    let store = PathBuf::from(&url);
    let dir = tempfile::tempdir().expect("temp dir");
    let specs: Vec<PathBuf> = (0..RUNS).map(|k| agent(dir.path(), k)).collect();
    let expected: String = (0..STEPS).map(line).collect();

    let mut workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| start_worker(&url, name, dir.path()))
        .collect();

    let reference_hashes = reference(&store, &workers, &specs, &expected);

    // the same agents again; a third of the way in, w1 dies and w2 stalls
    let runs = submit_all(&workers.iter().collect::<Vec<_>>(), &specs, true);
    let third = RUNS * STEPS / 3;
    let began = Instant::now();
    while lines_written(&specs) < third {
        assert!(
            began.elapsed() < Duration::from_mins(1),
            "the runs do not progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let leases = |worker: &str| -> usize {
        schema.sql(&format!(
            "SELECT count(*)::text FROM retrace_leases WHERE worker = '{worker}' AND expires_at > now()"
        ))[0]
            .as_deref()
            .unwrap_or("0")
            .parse()
            .expect("a count")
    };
    let (held_by_w1, held_by_w2) = (leases("w1"), leases("w2"));
    signal(&workers[0], "-KILL");
    signal(&workers[1], "-STOP");
    let kill = Instant::now();
    let _ = workers[0].child.wait();

    let (finished_at, resolved) = until_all_end(&store, &specs, &runs, &workers[1], kill);
    // let the continued worker try what it would, then look
    std::thread::sleep(TTL);

    let slowest = finished_at
        .iter()
        .filter(|(run, _)| !resolved.contains(*run))
        .map(|(_, at)| *at)
        .max()
        .unwrap_or_default();
    let mut times: Vec<Duration> = finished_at.values().copied().collect();
    times.sort();
    eprintln!("finish times after the kill: {times:.1?}");
    eprintln!(
        "w1 held {held_by_w1} leases when killed, w2 {held_by_w2} when stopped; \
         {} runs resolved by the operator; the last other run finished {slowest:.1?} after the kill (TTL {TTL:?})",
        resolved.len()
    );
    explain_late(&workers, &finished_at, &resolved);
    assert!(
        held_by_w1 > 0 && held_by_w2 > 0,
        "the kill and the stop landed mid-run"
    );
    assert!(
        slowest <= 2 * TTL,
        "every run not in doubt finished within 2 × TTL of the kill: the slowest took {slowest:?}"
    );

    assert_like_reference(&store, &specs, &runs, &reference_hashes, &expected);
    let verified = text(&ok(&store, &["verify"]));
    assert_eq!(
        verified.lines().filter(|l| l.starts_with("ok ")).count(),
        2 * RUNS,
        "{verified}"
    );

    // the stalled worker found its leases gone and stopped those drives
    let said = std::fs::read_to_string(&workers[1].log).unwrap_or_default();
    eprintln!(
        "w2 after waking:\n{}",
        said.lines()
            .filter(|l| l.contains("WARN"))
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        said.contains("lease") || said.contains("hold on the run lapsed"),
        "w2 said nothing of its lost leases:\n{said}"
    );
    for worker in &mut workers[1..] {
        signal(worker, "-TERM");
        let _ = worker.child.wait();
    }
}

//! Kill test: a 200-step run whose every step appends one line to a file with a
//! non-idempotent tool (`fs.append`, or `exec.run` in the sandbox) is
//! SIGKILLed at 30+ random moments, restarted each time by a new
//! `retrace` process, and must end exactly like an uninterrupted run of the same script:
//! every line once, in order, the same final state hash, a verifying log.
//!
//! A kill between an append's intent and its recorded result leaves the run in doubt
//! ("outcome unknown"); the test resolves it through the CLI the way an operator would:
//! look at the file, then `resolve --skip-with` the result if the line is there, or
//! `resolve --retry` if it is not. That is the only interruption the run may show.
//!
//! The seed is printed; `RETRACE_KILL_SEED=N` replays a schedule.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{line, resolve_append, the_run};
use retrace_replay::testkit::Rng;
use serde_json::{Value, json};

const KILLS: usize = 30;

/// The non-idempotent tool each step appends its line with.
#[derive(Clone, Copy, Debug)]
enum Appender {
    /// `fs.append`, 200 steps.
    File,
    /// `exec.run` of `printf … >> log.txt` in the sandbox, 200 steps.
    Shell,
}

impl Appender {
    fn steps(self) -> usize {
        match self {
            Self::File | Self::Shell => 200,
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Self::File => "fs.append",
            Self::Shell => "exec.run",
        }
    }

    fn arguments(self, i: usize) -> Value {
        match self {
            Self::File => json!({"path": "log.txt", "text": line(i)}),
            Self::Shell => json!({"command": format!("printf 'line {i:04}\\n' >> log.txt")}),
        }
    }

    /// What the tool returns for line `i` (what a skip records, as an operator who saw
    /// the line in the file would give it).
    fn result(self, i: usize) -> Value {
        match self {
            Self::File => json!({"path": "log.txt", "bytes_appended": line(i).len()}),
            Self::Shell => {
                json!({"exit_code": 0, "stdout": "", "stdout_bytes": 0, "stderr": "", "stderr_bytes": 0})
            }
        }
    }
}

fn output(store: &Path, args: &[&str]) -> Output {
    let out = common::retrace(store, args);
    assert!(
        out.status.success(),
        "retrace {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Lines in the file so far.
fn lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

/// The agent: a cassette of one reply per step, each asking to append line `i`, then an
/// answer.
fn agent(dir: &Path, appender: Appender) -> PathBuf {
    let steps = appender.steps();
    let tool = appender.tool();
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"appender\"\nsystem = \"append the lines\"\nworkspace = \"ws\"\n\
             [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
             [tools]\nallow = [\"{tool}\"]\n\
             [[policy]]\ntool = \"{tool}\"\naction = \"allow\"\n\
             [budgets]\nmax_steps = {}\n",
            steps + 10
        ),
    )
    .expect("write spec");
    let mut replies: Vec<Value> = (0..steps)
        .map(|i| {
            json!({"text": format!("step {i}"), "latency_ms": 2, "tool_calls": [{
                "id": format!("call-{i}"), "name": tool,
                "arguments": appender.arguments(i)}]})
        })
        .collect();
    replies.push(json!({"text": "all lines appended"}));
    std::fs::write(
        dir.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("write cassette");
    spec
}

fn start(store: &Path, spec: &Path) -> Child {
    common::command(store)
        .arg("run")
        .arg(spec)
        .args(["--input", "append the lines"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn retrace run")
}

fn state_hash(store: &Path, run: &str) -> String {
    let out = output(store, &["show", run, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).expect("show --json");
    shown["state_hash"].as_str().expect("state_hash").to_owned()
}

/// The reference: the same script in its own store, never interrupted; the store, the run
/// and how long it took.
fn uninterrupted(dir: &Path, spec: &Path, expected: &str) -> (PathBuf, String, Duration) {
    let store = dir.join("reference");
    let began = Instant::now();
    let out = start(&store, spec).wait_with_output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = the_run(&store).expect("the reference run");
    assert_eq!(run["status"]["status"], "finished");
    let log = dir.join("ws/log.txt");
    assert_eq!(std::fs::read_to_string(&log).expect("log"), expected);
    std::fs::remove_file(&log).expect("reset the file");
    (
        store,
        run["run"].as_str().expect("run id").to_owned(),
        began.elapsed(),
    )
}

/// Equal state hashes; if not, the state fields that differ.
fn assert_same_state(a: (&Path, &str), b: (&Path, &str)) {
    if state_hash(a.0, a.1) == state_hash(b.0, b.1) {
        return;
    }
    let state = |(store, run): (&Path, &str)| -> Value {
        let out = output(store, &["show", run, "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).expect("show --json")["state"].take()
    };
    let (a, b) = (state(a), state(b));
    let differing: Vec<&String> = a
        .as_object()
        .expect("a state object")
        .iter()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, _)| k)
        .collect();
    panic!("the final state differs from the uninterrupted run's in {differing:?}");
}

#[test]
fn a_run_killed_30_times_at_random_ends_exactly_like_an_uninterrupted_one() {
    killed_30_times(Appender::File);
}

/// The same with `exec.run`: each kill may land while the sandboxed shell appends (the
/// command dies with retrace: the sandbox sets the parent-death signal) or between its
/// end and its recorded result.
#[test]
fn an_exec_run_job_killed_30_times_ends_exactly_like_an_uninterrupted_one() {
    killed_30_times(Appender::Shell);
}

fn killed_30_times(appender: Appender) {
    let steps = appender.steps();
    let seed = common::kill_seed();
    eprintln!("kill schedule seed: {seed} (RETRACE_KILL_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), appender);
    let expected: String = (0..steps).map(line).collect();

    let (reference, reference_run, took) = uninterrupted(dir.path(), &spec, &expected);
    let log = dir.path().join("ws/log.txt");

    // The same script, killed again and again.
    let store = dir.path().join("store");
    let (mut kills, mut starts, mut resolutions) = (0, 0, Vec::new());
    // lines in the file at each kill: where in the run the kills landed
    let mut killed_at = std::collections::BTreeSet::new();
    let began = Instant::now();
    let run = loop {
        assert!(
            began.elapsed() < Duration::from_mins(10),
            "no end after {starts} starts and {kills} kills"
        );
        let known = the_run(&store);
        if let Some(run) = &known {
            let id = run["run"].as_str().expect("run id").to_owned();
            match run["status"]["status"].as_str() {
                Some("finished") => break id,
                Some("outcome_unknown") => {
                    let call = run["status"]["call_id"].as_str().expect("call id");
                    resolutions.push(resolve_append(&store, &log, &id, call, |i| {
                        appender.result(i)
                    }));
                    continue;
                }
                _ => {}
            }
        }
        // Restart: `run` again (it continues the unfinished run) or `resume` it by id.
        let mut child = match &known {
            Some(run) if rng.below(2) == 0 => common::command(&store)
                .args(["resume", run["run"].as_str().expect("run id")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn retrace resume"),
            _ => start(&store, &spec),
        };
        starts += 1;
        // A random moment, paced by the run's own progress so the kills spread over the
        // whole run on any machine: a few lines further on, plus a random 0-6 ms (landing
        // anywhere in a step: the append, its recording, the next model call); one start
        // in six is killed during start-up and recovery instead.
        if rng.below(6) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        } else {
            let target = lines(&log) + 1 + usize::try_from(rng.below(8)).expect("small");
            while lines(&log) < target && child.try_wait().expect("poll child").is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.below(7)));
        }
        if child.try_wait().expect("poll child").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
            killed_at.insert(lines(&log));
        }
        let out = child.wait_with_output().expect("wait");
        let killed = out.status.code().is_none();
        assert!(
            killed || out.status.success(),
            "retrace failed on its own: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    eprintln!(
        "reference run {took:.1?}; {kills} kills over {starts} starts, after these many lines: {killed_at:?}; \
         unknown outcomes resolved: {resolutions:?}; {:.1?}",
        began.elapsed()
    );
    assert!(kills >= KILLS);
    assert!(
        killed_at.len() >= KILLS / 2 && killed_at.last() >= Some(&(steps * 3 / 4)),
        "the kills should land all over the run, not at a few points: {killed_at:?}"
    );

    let written = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        written,
        expected,
        "every line exactly once, in order (got {} lines)",
        written.lines().count()
    );
    output(&store, &["verify", &run]);
    let shown = the_run(&store).expect("the run");
    assert_eq!(shown["status"]["outcome"], "succeeded");
    assert_eq!(shown["totals"]["tool_calls"].as_u64(), Some(steps as u64));
    assert_same_state((&reference, &reference_run), (&store, &run));
}

/// An MCP run SIGKILLed while its second MCP call is in flight: the server goes away with
/// it, and the resumed run neither calls the completed `echo` again nor rediscovers the
/// catalog (the recorded one is used). The server's stdin is teed to a file, so the test
/// counts what the server was really asked.
#[test]
fn a_killed_mcp_run_resumes_without_repeating_a_completed_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let calls = dir.path().join("calls.jsonl");
    let marker = format!("RETRACE_TEST_MARK={}", uuid_like());
    let spec = mcp_agent(dir.path(), &calls, &marker);
    let asked = |what: &str| {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .matches(what)
            .count()
    };

    let mut child = common::command(&store)
        .arg("run")
        .arg(&spec)
        .args(["--input", "go"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn retrace run");
    let started = Instant::now();
    while asked("trigger-long-running-operation\"") == 0 {
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "the long call never reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // the server is not left behind: its stdin closed with the runtime
    let started = Instant::now();
    while !retrace_tests::pids_with_env(&marker).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "MCP server left behind after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let run = the_run(&store).expect("the run exists")["run"]
        .as_str()
        .expect("id")
        .to_owned();
    let out = common::retrace(&store, &["resume", &run]);
    assert!(
        common::text(&out).contains("outcome") || common::text(&out).contains("doubt"),
        "{}",
        common::text(&out)
    );
    let result = dir.path().join("result.json");
    std::fs::write(&result, r#"{"note": "abandoned after the kill"}"#).expect("write");
    output(
        &store,
        &[
            "resolve",
            &run,
            "--skip-with",
            result.to_str().expect("utf-8"),
        ],
    );
    let out = output(&store, &["resume", &run]);
    assert!(
        common::text(&out).contains("succeeded"),
        "{}",
        common::text(&out)
    );
    assert_eq!(
        asked("\"tools/list\""),
        1,
        "the catalog was discovered once"
    );
    assert_eq!(asked("\"name\":\"echo\""), 1, "echo ran once");
    assert_eq!(asked("trigger-long-running-operation\""), 1);
    output(&store, &["verify"]);
}

/// The MCP kill test's agent in `dir`: server-everything behind a `tee` into `calls`, its
/// processes marked with `marker` in their environment.
fn mcp_agent(dir: &Path, calls: &Path, marker: &str) -> PathBuf {
    let (key, value) = marker.split_once('=').expect("k=v");
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            r#"name = "mcp-kill"
system = "s"
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[[mcp]]
name = "everything"
command = "sh"
args = ["-c", "tee -a '{}' | exec node '{}' stdio"]
env = {{ {key} = "{value}" }}
timeout_secs = 60
[[policy]]
tool = "mcp.everything.*"
action = "allow"
"#,
            calls.display(),
            retrace_tests::mcp_server_everything().display()
        ),
    )
    .expect("spec");
    let cassette = json!({"replies": [
        {"tool_calls": [{"id": "c1", "name": "mcp.everything.echo", "arguments": {"message": "once"}}]},
        {"tool_calls": [{"id": "c2", "name": "mcp.everything.trigger-long-running-operation",
                         "arguments": {"duration": 60, "steps": 60}}]},
        {"text": "done"}
    ]});
    std::fs::write(dir.join("cassette.json"), cassette.to_string()).expect("cassette");
    spec
}

fn uuid_like() -> String {
    format!(
        "{:x}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    )
}

//! `retrace serve` with the real binary: runs submitted to a daemon, inspected and approved
//! from the CLI while it holds the store, a SIGKILL of the daemon mid-way, a SIGTERM, the
//! API's answers to malformed requests, signals and cancel, the loopback listener's token,
//! and a record damaged after a kill failing `verify`. Every agent appends lines to a file of
//! its own, so a repeated effect shows.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{command, example, line, log_json, resolve_append, retrace, run_agent, text};
use retrace_store_sled::segments::HEADER;
use serde_json::{Value, json};

/// A running `retrace serve`; killed (SIGKILL) when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    stdout: std::sync::mpsc::Receiver<String>,
    /// Unfinished runs it took up on start, as it said.
    taken_up: usize,
}

impl Daemon {
    fn start(store: &Path, extra: &[&str]) -> Self {
        Self::start_in(store, extra, Path::new("."))
    }

    /// [`Daemon::start`] with `cwd` as the daemon's working directory.
    fn start_in(store: &Path, extra: &[&str], cwd: &Path) -> Self {
        let mut child = command(store)
            .current_dir(cwd)
            .args(["serve", "--workers", "8"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn retrace serve");
        let out = child.stdout.take().expect("stdout");
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(out);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
                let _ = tx.send(std::mem::take(&mut line));
            }
        });
        let socket = store.join("serve.sock");
        let mut daemon = Self {
            child,
            socket,
            stdout,
            taken_up: 0,
        };
        let began = Instant::now();
        loop {
            let line = daemon
                .stdout
                .recv_timeout(Duration::from_mins(1))
                .expect("retrace serve says where it listens");
            if let Some(n) = line
                .split(" runs at once, ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
            {
                daemon.taken_up = n;
            }
            if line.starts_with("listening on") {
                break;
            }
            assert!(began.elapsed() < Duration::from_mins(1));
        }
        daemon
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGTERM, then wait: the exit status and how long it took.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let began = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, began.elapsed());
            }
            assert!(
                began.elapsed() < Duration::from_mins(1),
                "retrace serve did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Agent `n` in `dir/agents/n`: `steps` model replies, each appending one line to its own
/// `log.txt` (allowed), then (with `approval`) a write of `done.md` that asks a human,
/// then a final answer.
fn agent(dir: &Path, n: usize, steps: usize, latency_ms: u64, approval: bool) -> PathBuf {
    let home = dir.join("agents").join(n.to_string());
    std::fs::create_dir_all(home.join("ws")).expect("mkdir");
    let spec = home.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"appender-{n}\"\nsystem = \"append the lines\"\nworkspace = \"ws\"\n\
             [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
             [tools]\nallow = [\"fs.append\", \"fs.write\"]\n\
             [[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n\
             [budgets]\nmax_steps = {}\n",
            steps + 10
        ),
    )
    .expect("write spec");
    let mut replies: Vec<Value> = (0..steps)
        .map(|i| {
            json!({"text": format!("step {i}"), "latency_ms": latency_ms, "tool_calls": [{
                "id": format!("call-{i}"), "name": "fs.append",
                "arguments": {"path": "log.txt", "text": line(i)}}]})
        })
        .collect();
    if approval {
        replies.push(json!({"text": "marking it done", "tool_calls": [{
            "id": "done", "name": "fs.write",
            "arguments": {"path": "done.md", "content": "done\n"}}]}));
    }
    replies.push(json!({"text": "all lines appended"}));
    std::fs::write(
        home.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("write cassette");
    spec
}

/// `retrace runs --json`, through whoever holds the store.
fn runs(store: &Path) -> Vec<Value> {
    let out = retrace(store, &["runs", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn status(run: &Value) -> &str {
    run["status"]["status"].as_str().unwrap_or("")
}

/// Settle a call in doubt as an operator would (the line is in the file or it is not),
/// then continue the run.
fn resolve(store: &Path, ws: &Path, run: &str, call_id: &str) {
    resolve_append(
        store,
        &ws.join("log.txt"),
        run,
        call_id,
        |i| json!({"path": "log.txt", "bytes_appended": line(i).len()}),
    );
    let out = retrace(store, &["resume", run]);
    assert!(out.status.success(), "{}", text(&out));
}

fn submit(store: &Path, spec: &Path) -> String {
    let out = retrace(
        store,
        &[
            "run",
            spec.to_str().expect("utf-8"),
            "--input",
            "append the lines",
            "--detach",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8(out.stdout).expect("utf-8");
    let id = id.trim();
    assert_eq!(id.len(), 32, "--detach prints the run id alone: {id:?}");
    id.to_owned()
}

/// What `log`, `show --json` and `diff` print for runs `a` and `b`.
fn outputs(store: &Path, a: &str, b: &str) -> Vec<String> {
    [
        vec!["log", a],
        vec!["show", b, "--json"],
        vec!["diff", a, b],
    ]
    .iter()
    .map(|args| text(&retrace(store, args)))
    .collect()
}

/// Until every run has finished: approve the parked ones and settle calls in doubt, from
/// the CLI. How many approvals and resolutions it took.
fn settle_all(store: &Path, dir: &Path, ids: &[(String, usize)]) -> (usize, usize) {
    let (mut approvals, mut resolutions) = (0, 0);
    let began = Instant::now();
    loop {
        let now = runs(store);
        let unfinished: Vec<&Value> = now.iter().filter(|r| status(r) != "finished").collect();
        if unfinished.is_empty() {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_mins(3),
            "runs still unfinished: {unfinished:?}"
        );
        for run in unfinished {
            let id = run["run"].as_str().expect("run id");
            let n = ids
                .iter()
                .find(|(r, _)| r == id)
                .expect("a submitted run")
                .1;
            match status(run) {
                "awaiting_approval" => {
                    let out = retrace(store, &["approve", id, "--note", "fine"]);
                    assert!(out.status.success(), "{}", text(&out));
                    assert!(text(&out).contains("retrace serve continues it"));
                    approvals += 1;
                }
                "outcome_unknown" => {
                    let call = run["status"]["call_id"].as_str().expect("call id");
                    let ws = dir.join("agents").join(n.to_string()).join("ws");
                    resolve(store, &ws, id, call);
                    resolutions += 1;
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (approvals, resolutions)
}

#[test]
fn fifty_runs_with_approvals_finish_once_across_a_daemon_sigkill() {
    const RUNS: usize = 50;
    const STEPS: usize = 6;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let first = Daemon::start(&store, &[]);
    // one in five asks a human before its last write
    let mut ids = Vec::new();
    for n in 0..RUNS {
        let spec = agent(dir.path(), n, STEPS, 150, n % 5 == 0);
        ids.push((submit(&store, &spec), n));
    }
    // the CLI reads the store through the daemon while it runs them
    let listed = runs(&store);
    assert_eq!(listed.len(), RUNS);
    let out = retrace(&store, &["log", &ids[RUNS - 1].0]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("run_started"), "{}", text(&out));

    // SIGKILL once a third has finished or parked
    let began = Instant::now();
    loop {
        let settled = runs(&store)
            .iter()
            .filter(|r| matches!(status(r), "finished" | "awaiting_approval"))
            .count();
        if settled >= RUNS / 3 {
            break;
        }
        assert!(began.elapsed() < Duration::from_mins(2), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first);
    assert!(
        !store.join("serve.sock").exists()
            || UnixStream::connect(store.join("serve.sock")).is_err(),
        "the killed daemon no longer answers"
    );

    // a new daemon takes the unfinished runs up; the CLI approves the parked ones
    let second = Daemon::start(&store, &[]);
    assert!(
        second.taken_up > 0,
        "the kill left unfinished runs for the new daemon to take up"
    );
    eprintln!("the new daemon took up {} unfinished runs", second.taken_up);
    let (approvals, resolutions) = settle_all(&store, dir.path(), &ids);
    assert_eq!(approvals, RUNS / 5, "each parked run was approved once");
    eprintln!("approved {approvals}, resolved {resolutions} calls in doubt after the kill");

    // every run succeeded, its log verifies, and each effect happened exactly once
    let expected: String = (0..STEPS).map(line).collect();
    for (id, n) in &ids {
        let ws = dir.path().join("agents").join(n.to_string()).join("ws");
        let written = std::fs::read_to_string(ws.join("log.txt")).expect("log.txt");
        assert_eq!(
            written, expected,
            "run {id} (agent {n}) appended exactly once each"
        );
        assert_eq!(ws.join("done.md").exists(), n % 5 == 0);
        let out = retrace(&store, &["verify", id]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        runs(&store)
            .iter()
            .all(|r| r["status"]["outcome"] == "succeeded")
    );

    // the same output through the daemon and from the files
    let served = outputs(&store, &ids[0].0, &ids[1].0);
    let (exit, took) = second.terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    assert!(!store.join("serve.sock").exists(), "the socket is removed");
    let direct = outputs(&store, &ids[0].0, &ids[1].0);
    assert_eq!(served, direct);
}

#[test]
fn sigterm_stops_drives_at_a_step_boundary_and_a_restart_finishes_them() {
    const STEPS: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let daemon = Daemon::start(&store, &[]);
    let ids: Vec<(String, usize)> = (0..4)
        .map(|n| {
            let spec = agent(dir.path(), n, STEPS, 150, false);
            (submit(&store, &spec), n)
        })
        .collect();
    // a few steps in, each run is mid-way: most likely waiting for its model
    let began = Instant::now();
    while runs(&store)
        .iter()
        .any(|r| r["totals"]["steps"].as_u64().unwrap_or(0) < 2)
    {
        assert!(began.elapsed() < Duration::from_mins(1));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (exit, took) = daemon.terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM should stop drives at their next step, took {took:?}"
    );
    // the runs stopped unfinished and clean: nothing in doubt, every log verifies
    for run in runs(&store) {
        assert_eq!(status(&run), "running", "{run}");
        let out = retrace(&store, &["verify", run["run"].as_str().expect("id")]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let daemon = Daemon::start(&store, &[]);
    assert_eq!(daemon.taken_up, ids.len(), "every stopped run is taken up");
    let began = Instant::now();
    while runs(&store).iter().any(|r| status(r) != "finished") {
        assert!(began.elapsed() < Duration::from_mins(2), "not finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected: String = (0..STEPS).map(line).collect();
    for (id, n) in &ids {
        let ws = dir.path().join("agents").join(n.to_string()).join("ws");
        let written = std::fs::read_to_string(ws.join("log.txt")).expect("log.txt");
        assert_eq!(written, expected, "run {id}");
    }
    drop(daemon);
}

/// A raw HTTP/1.1 request over the daemon's socket: the status and the JSON body.
fn http(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let stream = UnixStream::connect(socket).expect("connect");
    let headers: Vec<String> = content_type
        .map(|ct| format!("Content-Type: {ct}"))
        .into_iter()
        .collect();
    exchange(stream, method, path, &headers, body)
}

/// One request on `stream` (closed after the answer).
fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> (u16, Value) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: retrace\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    // the daemon may answer (413) before taking a large body in
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Submissions the daemon refuses, each with a 4xx naming what is wrong.
fn bad_submissions(socket: &Path, dir: &Path) {
    let json = Some("application/json");
    let (s, b) = http(socket, "POST", "/v1/runs", json, b"{\"input\": ");
    assert_eq!((s, code(&b)), (400, "bad_request"), "{b}");
    assert!(message(&b).contains("JSON"), "{b}");

    let (s, b) = http(
        socket,
        "POST",
        "/v1/runs",
        json,
        br#"{"input": "x", "bogus": 1}"#,
    );
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("bogus"), "{b}");

    let (s, b) = http(socket, "POST", "/v1/runs", json, br#"{"input": "x"}"#);
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("spec_path"), "{b}");

    let missing = format!(
        r#"{{"input": "x", "spec_path": "{}/nope.toml"}}"#,
        dir.display()
    );
    let (s, b) = http(socket, "POST", "/v1/runs", json, missing.as_bytes());
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("nope.toml"), "{b}");

    // the daemon does not know the client's directory: relative paths are refused by name
    let (s, b) = http(
        socket,
        "POST",
        "/v1/runs",
        json,
        br#"{"input": "x", "spec_path": "agents/0/agent.toml"}"#,
    );
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("is relative"), "{b}");
}

#[test]
fn malformed_requests_get_clear_errors_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let daemon = Daemon::start(&store, &[]);
    let spec = agent(dir.path(), 0, 1, 1, false);
    let run = submit(&store, &spec);
    let socket = &daemon.socket;
    let json = Some("application/json");

    bad_submissions(socket, dir.path());

    let (s, b) = http(
        socket,
        "GET",
        "/v1/runs/0123456789abcdef0123456789abcdef",
        None,
        b"",
    );
    assert_eq!((s, code(&b)), (404, "not_found"), "{b}");

    let (s, b) = http(
        socket,
        "POST",
        "/v1/runs/abc/approve",
        Some("text/plain"),
        b"{}",
    );
    assert_eq!(s, 415, "{b}");

    let big = vec![b' '; 5 * 1024 * 1024];
    let (s, b) = http(socket, "POST", "/v1/runs", json, &big);
    assert_eq!((s, code(&b)), (413, "too_large"), "{b}");

    let (s, b) = http(socket, "GET", "/v2/everything", None, b"");
    assert_eq!((s, code(&b)), (404, "not_found"), "{b}");

    let path = format!("/v1/runs/{run}/signal");
    let (s, b) = http(socket, "POST", &path, json, br#"{"name": "Bad Name!"}"#);
    assert_eq!(s, 400, "{b}");
    let (s, b) = http(
        socket,
        "POST",
        &path,
        json,
        br#"{"name": "user_message", "payload": 3}"#,
    );
    assert_eq!(s, 400, "{b}");
    let (s, b) = http(socket, "POST", &path, json, br#"{"name": "spec"}"#);
    assert_eq!(s, 400, "{b}");

    let (s, b) = http(
        socket,
        "POST",
        "/v1/store",
        Some("application/octet-stream"),
        b"\xff\xff\xff",
    );
    assert_eq!(s, 400, "{b}");

    // once the run has finished, a signal to it is a conflict
    let began = Instant::now();
    while status(&runs(&store)[0]) != "finished" {
        assert!(began.elapsed() < Duration::from_mins(1));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (s, b) = http(socket, "POST", &path, json, br#"{"name": "nudge"}"#);
    assert_eq!((s, code(&b)), (409, "conflict"), "{b}");
    let (s, b) = http(
        socket,
        "POST",
        &format!("/v1/runs/{run}/approve"),
        json,
        b"{}",
    );
    assert_eq!((s, code(&b)), (409, "conflict"), "{b}");

    // still serving, and nothing was written by the bad requests
    let (s, b) = http(socket, "GET", "/v1/health", None, b"");
    assert_eq!(s, 200, "{b}");
    assert_eq!(runs(&store).len(), 1);
    let out = retrace(&store, &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_user_message_joins_a_running_run_and_a_cancel_ends_one_mid_model_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let _daemon = Daemon::start(&store, &[]);
    let talker = submit(&store, &agent(dir.path(), 0, 4, 300, false));
    let slow = submit(&store, &agent(dir.path(), 1, 3, 60_000, false));

    let out = retrace(
        &store,
        &["signal", &talker, "--message", "please also say hello"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // a minute-long model call: the cancel interrupts it
    let began = Instant::now();
    let out = retrace(&store, &["cancel", &slow, "--reason", "taking too long"]);
    assert!(out.status.success(), "{}", text(&out));
    loop {
        let shown = retrace(&store, &["show", &slow, "--json"]);
        let shown: Value = serde_json::from_slice(&shown.stdout).expect("show --json");
        if shown["state"]["status"]["status"] == "finished" {
            assert_eq!(shown["state"]["status"]["outcome"], "cancelled");
            let detail = serde_json::to_string(&shown["payloads"]).expect("json");
            assert!(
                detail.contains("cancelled by") && detail.contains("taking too long"),
                "{detail}"
            );
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the cancel was not acted on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(began.elapsed() < Duration::from_secs(30));

    let began = Instant::now();
    while runs(&store)
        .iter()
        .any(|r| r["run"] == talker.as_str() && status(r) != "finished")
    {
        assert!(began.elapsed() < Duration::from_mins(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = text(&retrace(&store, &["show", &talker]));
    assert!(shown.contains("succeeded"), "{shown}");
    assert!(
        shown.contains("user      please also say hello"),
        "the message is in the conversation: {shown}"
    );
    let out = retrace(&store, &["log", &talker]);
    let log = text(&out);
    assert!(log.contains("signal_received"), "{log}");
}

#[test]
fn the_loopback_listener_wants_its_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let daemon = Daemon::start(&store, &["--http", "127.0.0.1:0"]);
    let line = daemon
        .stdout
        .recv_timeout(Duration::from_secs(10))
        .expect("the loopback address");
    let addr: std::net::SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let token = std::fs::read_to_string(store.join("serve.token")).expect("serve.token");
    assert_eq!(token.len(), 64);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.join("serve.token"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner reads the token");
    }
    let tcp = || std::net::TcpStream::connect(addr).expect("connect");
    let (s, b) = exchange(tcp(), "GET", "/v1/runs", &[], b"");
    assert_eq!((s, code(&b)), (401, "unauthorized"), "{b}");
    let wrong = vec!["Authorization: Bearer 0000".to_owned()];
    let (s, _) = exchange(tcp(), "GET", "/v1/runs", &wrong, b"");
    assert_eq!(s, 401);
    let right = vec![format!("Authorization: Bearer {token}")];
    let (s, b) = exchange(tcp(), "GET", "/v1/health", &right, b"");
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["store"], store.display().to_string());

    // anything but loopback is refused
    let (exit, _) = daemon.terminate();
    assert!(exit.success());
    let out = retrace(&store, &["serve", "--http", "0.0.0.0:0"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("only loopback"), "{}", text(&out));
}

/// Wait until `run` has finished (as `runs --json` says).
fn finished(store: &Path, run: &str) -> Value {
    let began = Instant::now();
    loop {
        if let Some(line) = runs(store).into_iter().find(|r| r["run"] == run)
            && status(&line) == "finished"
        {
            return line;
        }
        assert!(
            began.elapsed() < Duration::from_mins(1),
            "{run} never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The examples under `dir` (the test's copy), the daemon started in another directory.
fn examples_in(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("project");
    example("tidy", &root);
    example("approval", &root);
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("approval/workspace")).expect("mkdir");
    (root, elsewhere)
}

#[test]
fn through_the_daemon_an_edited_reply_s_calls_run_bad_edits_are_refused_and_paths_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let (root, elsewhere) = examples_in(dir.path());
    let daemon = Daemon::start_in(&store, &[], &elsewhere);
    let socket = &daemon.socket;
    let json_type = Some("application/json");

    // submitted with a relative spec path from the project: the daemon runs it there
    let out = command(&store)
        .current_dir(&root)
        .args([
            "run",
            "tidy/agent.toml",
            "--input",
            "Summarise this project",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let run = runs(&store)[0]["run"].as_str().expect("id").to_owned();
    finished(&store, &run);
    assert!(root.join("tidy/workspace/out/SUMMARY.md").exists());
    let last_reply = log_json(&store, &run)
        .into_iter()
        .rfind(|e| e["kind"] == "model_responded")
        .expect("a reply")["seq"]
        .as_u64()
        .expect("seq");

    // edits that are not a reply: 400, and no run
    let path = format!("/v1/runs/{run}/fork");
    for bad in [
        json!("just a string"),
        json!({"txt": "I am done"}),
        json!({"entries": []}),
    ] {
        let body = json!({"at": last_reply, "edit": bad, "continue": true}).to_string();
        let (s, b) = http(socket, "POST", &path, json_type, body.as_bytes());
        assert_eq!((s, code(&b)), (400, "bad_request"), "{bad}: {b}");
        assert!(message(&b).contains("not a model reply"), "{b}");
    }
    assert_eq!(runs(&store).len(), 1, "a refused edit created a run");

    // an edited reply that calls a tool: the continued fork proposes and runs it
    let body = json!({
        "at": last_reply,
        "edit": {"text": "Let me read the calc.",
                 "tool_calls": [{"id": "c9", "name": "fs.read", "arguments": {"path": "src/calc.txt"}}]},
        "continue": true
    })
    .to_string();
    let (s, b) = http(socket, "POST", &path, json_type, body.as_bytes());
    assert_eq!(s, 201, "{b}");
    let fork = b["run"].as_str().expect("the fork").to_owned();
    finished(&store, &fork);
    let events = log_json(&store, &fork);
    let after: Vec<&str> = events
        .iter()
        .skip(usize::try_from(last_reply).expect("seq") + 1)
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        after[..3],
        ["tool_calls_proposed", "tool_requested", "tool_returned"],
        "{after:?}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "tool_requested"
            && e["call_id"] == "c9"
            && e["tool"] == "fs.read"),
        "{events:?}"
    );

    an_approval_from_another_directory_writes_in_the_run_s_workspace(&store, &root, &elsewhere);
}

/// The approval example submitted from `root`, approved from `elsewhere` (which has an
/// `approval/workspace` of its own): the write lands in the run's workspace only.
fn an_approval_from_another_directory_writes_in_the_run_s_workspace(
    store: &Path,
    root: &Path,
    elsewhere: &Path,
) {
    let out = command(store)
        .current_dir(root)
        .args([
            "run",
            "approval/agent.toml",
            "--input",
            "Note the release date",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let parked = runs(store)
        .into_iter()
        .find(|r| r["status"]["status"] == "awaiting_approval")
        .expect("the parked run")["run"]
        .as_str()
        .expect("id")
        .to_owned();
    let out = command(store)
        .current_dir(elsewhere)
        .args(["approve", &parked])
        .output()
        .expect("approve");
    assert!(out.status.success(), "{}", text(&out));
    finished(store, &parked);
    assert!(root.join("approval/workspace/out/NOTES.md").exists());
    assert!(!elsewhere.join("approval/workspace/out").exists());
}

/// The tidy example (spec, cassette, workspace) copied to `dir/name`; its spec.
fn tidy(dir: &Path, name: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tidy");
    copy(&example, &dir.join(name));
    dir.join(name).join("agent.toml")
}

/// `retrace run SPEC --input …` to its end: the run's id, its stdout and exit code.
fn run_to_end(store: &Path, spec: &Path, input: &str) -> (String, String, Option<i32>) {
    let out = retrace(
        store,
        &["run", spec.to_str().expect("utf-8"), "--input", input],
    );
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let id = stdout
        .split_whitespace()
        .nth(1)
        .filter(|id| id.len() == 32)
        .unwrap_or_else(|| panic!("no run id first: {}", text(&out)))
        .to_owned();
    (id, stdout, out.status.code())
}

/// `out` with run `id` (and its short form) as `RUN` and durations as `N ms`.
fn normalise(out: &str, id: &str) -> String {
    let out = out.replace(id, "RUN").replace(&id[..8], "RUN");
    let words: Vec<&str> = out.split(' ').collect();
    words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let timed = words.get(i + 1).is_some_and(|w| w.starts_with("ms"));
            if timed && !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
                "N"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_run_prints_the_same_timeline_and_streamed_text_through_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = "Summarise this project";
    let direct_store = dir.path().join("direct");
    let (direct_id, direct, code) = run_to_end(&direct_store, &tidy(dir.path(), "a"), input);
    assert_eq!(code, Some(0), "{direct}");

    let served_store = dir.path().join("served");
    let _daemon = Daemon::start(&served_store, &[]);
    let (served_id, served, code) = run_to_end(&served_store, &tidy(dir.path(), "b"), input);
    assert_eq!(code, Some(0), "{served}");

    // the first line says who drives the run; every line after it is the same
    let (direct_head, direct) = direct.split_once('\n').expect("lines");
    let (served_head, served) = served.split_once('\n').expect("lines");
    assert_eq!(
        direct_head,
        format!(
            "run {direct_id} (tidy) started in {}",
            direct_store.display()
        )
    );
    assert_eq!(
        served_head,
        format!("run {served_id} (tidy) started by retrace serve")
    );
    assert_eq!(
        normalise(served, &served_id),
        normalise(direct, &direct_id),
        "through the daemon:\n{served}\nwithout it:\n{direct}"
    );
    // the model's text streamed between the events, whole
    for line in [
        "     1  model_requested       model call (attempt 1)\n        │ Let me see what is in the project.\n     2  model_responded",
        "        │ Done. The summary is in out/SUMMARY.md: a tiny calculator library with one open TODO.\n    19  model_responded",
    ] {
        assert!(served.contains(line), "{line:?} in:\n{served}");
    }
}

#[test]
fn resuming_a_finished_run_prints_its_report_the_same_with_and_without_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let (succeeded, _, code) = run_to_end(&store, &tidy(dir.path(), "a"), "Summarise it");
    assert_eq!(code, Some(0));
    let failing = tidy(dir.path(), "b");
    std::fs::write(
        failing.with_file_name("cassette.json"),
        json!({"replies": [{"error": {"transient": false, "message": "the model is gone"}}]})
            .to_string(),
    )
    .expect("write cassette");
    let (failed, out, code) = run_to_end(&store, &failing, "Summarise it");
    assert_eq!(code, Some(2), "{out}");

    let resume = |id: &str| {
        let out = retrace(&store, &["resume", id]);
        (text(&out), out.status.code())
    };
    let direct = [resume(&succeeded), resume(&failed)];
    assert_eq!(direct[0].1, Some(0), "{}", direct[0].0);
    assert_eq!(direct[1].1, Some(2), "{}", direct[1].0);
    for ((out, _), (id, outcome)) in direct
        .iter()
        .zip([(&succeeded, "succeeded"), (&failed, "failed")])
    {
        assert!(
            out.starts_with(&format!(
                "run {id} (tidy) has already finished: nothing to resume\nusage: "
            )),
            "{out}"
        );
        assert!(out.contains(&format!("run {id}: {outcome}\n")), "{out}");
    }

    let _daemon = Daemon::start(&store, &[]);
    let served = [resume(&succeeded), resume(&failed)];
    assert_eq!(served, direct, "through the daemon, then without it");
}

/// Run the tidy example through a daemon on `store`, SIGKILL the daemon (no closing
/// checkpoint: the next open scans the segment from its start), and flip one bit of the
/// body of record `pick` (given the offsets of all records) of the first segment; the
/// segment's bytes as damaged, and the damaged record's offset.
fn damage_after_a_kill(
    dir: &Path,
    store: &Path,
    pick: impl Fn(&[usize]) -> usize,
) -> (Vec<u8>, usize) {
    let daemon = Daemon::start(store, &[]);
    let spec = example("tidy", dir);
    let out = run_agent(store, &spec, "Summarise this project");
    assert!(out.status.success(), "{}", text(&out));
    drop(daemon);
    let segment = store.join("segments").join("00000000.seg");
    let mut bytes = std::fs::read(&segment).expect("segment");
    // records: a 4-byte length and an 8-byte check (HEADER), the body; zeros after the last
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        records.push(at);
        at += HEADER + len;
    }
    let victim = pick(&records);
    bytes[victim + HEADER + 2] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("damage the segment");
    (bytes, victim)
}

/// `retrace verify` on `store`: its exit code 1 and what it printed, which names the kept
/// file `kept` and `why`.
fn verify_fails_naming(store: &Path, kept: &Path, why: &str) {
    let out = retrace(store, &["verify"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("FAIL store  segment 0: the record at offset ")
            && printed.contains(why)
            && printed.contains(&kept.display().to_string()),
        "{printed}"
    );
    assert!(
        printed.contains("damaged segment record(s) were cut"),
        "{printed}"
    );
}

#[test]
fn a_damaged_record_recovery_cuts_fails_verify_until_the_kept_bytes_are_dealt_with() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");

    // the first record, which others follow
    let (bytes, at) = damage_after_a_kill(dir.path(), &store, |records| records[0]);
    let kept = store
        .join("segments")
        .join(format!("00000000.seg.cut-at-{at}"));
    for _ in 0..2 {
        verify_fails_naming(&store, &kept, "is damaged: bytes follow the ");
    }
    // the damaged record and all after it, byte for byte
    let cut = std::fs::read(&kept).expect("the kept bytes");
    assert_eq!(cut, bytes[..cut.len()], "kept as they were");
    assert!(
        bytes[cut.len()..].iter().all(|&b| b == 0),
        "only zeros are not kept"
    );
    // dealt with: moved out of the segments directory
    std::fs::rename(&kept, dir.path().join("kept")).expect("move the kept bytes");
    let out = retrace(&store, &["verify"]);
    assert!(out.status.success(), "{}", text(&out));

    // the last record, whole: a kill leaves a record only to a page boundary
    let fresh = dir.path().join("fresh");
    let store = fresh.join("store");
    let (_, at) = damage_after_a_kill(&fresh, &store, |records| records[records.len() - 1]);
    let kept = store
        .join("segments")
        .join(format!("00000000.seg.cut-at-{at}"));
    verify_fails_naming(&store, &kept, "is damaged: its bytes reach byte ");
}

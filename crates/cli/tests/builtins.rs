//! The built-ins for real jobs, through the `retrace` binary: `exec.run`'s sandbox against a
//! catalogue of escapes (each attempt is a recorded tool call whose result shows it was
//! refused or contained), the coder and research examples (`exec.run`, `task.*`,
//! `user.ask`, `web.fetch`), answers through the CLI and the daemon, a fork with another
//! answer that continues differently, `check` and bundles on such runs.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{example, fork_id_of, log_json, ok, retrace, run_agent, run_id_of, text};
use retrace_store::Store;
use serde_json::{Value, json};

/// The result of every tool call of `run`, by call id: the output and whether it failed.
fn results(store: &Path, run: &str) -> BTreeMap<String, (Value, bool)> {
    let mut found = BTreeMap::new();
    for event in log_json(store, run) {
        if event["kind"] != "tool_returned" {
            continue;
        }
        let seq = event["seq"].as_u64().expect("seq");
        let shown = ok(store, &["show", &format!("{run}@{seq}"), "--json"]);
        let shown: Value = serde_json::from_slice(&shown.stdout).expect("show --json");
        let blob = event["output"].as_str().expect("output blob");
        found.insert(
            event["call_id"].as_str().expect("call id").to_owned(),
            (
                shown["payloads"][blob].clone(),
                event["is_error"].as_bool().expect("is_error"),
            ),
        );
    }
    found
}

/// An agent whose every reply runs one of `commands` (by call id) with `exec.run`, allowed
/// by policy, in workspace `dir/ws`.
fn exec_agent(dir: &Path, commands: &[(&str, Value)]) -> PathBuf {
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        "name = \"escapes\"\nsystem = \"get out\"\nworkspace = \"ws\"\n\
         [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
         [tools]\nallow = [\"exec.run\"]\n\
         [exec]\ntimeout_secs = 10\nmax_processes = 32\n\
         [[policy]]\ntool = \"exec.run\"\naction = \"allow\"\n",
    )
    .expect("spec");
    let mut replies: Vec<Value> = commands
        .iter()
        .map(|(id, args)| {
            json!({"text": format!("trying {id}"), "tool_calls": [
                {"id": id, "name": "exec.run", "arguments": args}]})
        })
        .collect();
    replies.push(json!({"text": "done"}));
    std::fs::write(
        dir.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("cassette");
    spec
}

fn stdout_of(result: &(Value, bool)) -> &str {
    result.0["stdout"].as_str().unwrap_or_default()
}

fn failed(result: &(Value, bool)) -> bool {
    result.0["exit_code"].as_i64() != Some(0)
}

/// The escapes tried, by call id: each command, with the paths and port it aims at.
fn catalogue(outside: &Path, home: &Path, port: u16) -> Vec<(&'static str, Value)> {
    let outside_s = outside.display().to_string();
    let home_s = home.display().to_string();
    vec![
        (
            "absolute",
            json!({"command": format!("echo escaped > {outside_s}/absolute.txt")}),
        ),
        ("dotdot", json!({"command": "echo escaped > ../dotdot.txt"})),
        (
            "symlink",
            json!({"command": "echo escaped > link/symlink.txt"}),
        ),
        ("shadow", json!({"command": "cat /etc/shadow"})),
        (
            "home",
            json!({"command": format!("cat {home_s}/secret.txt; ls -a /root")}),
        ),
        (
            "tcp",
            json!({"command": format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected")}),
        ),
        (
            "fork_bomb",
            json!({"command": "bash -c ':(){ :|:& };:'; echo survived", "timeout_secs": 5}),
        ),
        (
            "sigterm",
            json!({"command": "trap '' TERM; while true; do sleep 1; done", "timeout_secs": 1}),
        ),
        (
            "flood",
            json!({"command": "head -c 100000000 /dev/zero | tr '\\0' a"}),
        ),
        ("environment", json!({"command": "env"})),
        (
            "unix_socket",
            json!({"command": "/usr/bin/python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('daemon.sock'); print('connected')\""}),
        ),
        (
            "inside",
            json!({"command": "echo fine > inside.txt && cat inside.txt"}),
        ),
    ]
}

#[test]
fn the_sandbox_contains_every_escape_in_the_catalogue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outside = dir.path().join("outside");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(home.join("secret.txt"), "top-secret-home\n").expect("write");
    std::fs::create_dir_all(dir.path().join("ws")).expect("mkdir");
    std::os::unix::fs::symlink(&outside, dir.path().join("ws/link")).expect("symlink");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let unix = std::os::unix::net::UnixListener::bind(dir.path().join("ws/daemon.sock"))
        .expect("unix listener");
    unix.set_nonblocking(true).expect("nonblocking");
    let commands = catalogue(&outside, &home, port);
    let spec = exec_agent(dir.path(), &commands);
    let store = dir.path().join("store");
    let out = common::command(&store)
        .args(["run", spec.to_str().expect("utf-8"), "--input", "go"])
        .env("OPENAI_API_KEY", "sk-test-secret-4242")
        .env("RETRACE_TEST_TOKEN", "tok-secret-4242")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let run = run_id_of(&out);
    let got = results(&store, &run);
    let result = |id: &str| {
        got.get(id)
            .unwrap_or_else(|| panic!("no result for {id}: {got:?}"))
    };

    // writes outside the workspace: refused, nothing written
    for id in ["absolute", "dotdot", "symlink"] {
        assert!(failed(result(id)), "{id}: {:?}", result(id));
    }
    assert_eq!(
        std::fs::read_dir(&outside).expect("outside").count(),
        0,
        "nothing may be written outside"
    );
    assert!(!dir.path().join("dotdot.txt").exists());
    // reads of denied paths
    assert!(failed(result("shadow")), "{:?}", result("shadow"));
    assert_eq!(stdout_of(result("shadow")), "");
    assert!(
        !stdout_of(result("home")).contains("top-secret-home"),
        "{:?}",
        result("home")
    );
    assert!(failed(result("home")));
    // no network: refused, and the listener saw nobody
    assert!(failed(result("tcp")), "{:?}", result("tcp"));
    assert!(!stdout_of(result("tcp")).contains("connected"));
    assert!(
        listener.accept().is_err(),
        "the command reached the loopback listener"
    );
    // a fork bomb is bounded: the call came back and the run went on
    assert!(got.contains_key("fork_bomb"));
    // a process that ignores SIGTERM is killed at the timeout
    let sigterm = &result("sigterm").0;
    assert!(sigterm["timed_out"].is_string(), "{sigterm}");
    assert_eq!(sigterm["signal"], 9, "{sigterm}");
    // 100 MB of output: counted, cut for the model, whole (up to keep_bytes) as an artifact
    let flood = &result("flood").0;
    assert_eq!(
        flood["stdout_bytes"], 100_000_000,
        "{}",
        &flood["stdout_bytes"]
    );
    assert!(flood["stdout"].as_str().expect("stdout").len() < 20_000);
    let artifact = flood["stdout_artifact"].as_str().expect("artifact id");
    // the environment is scrubbed: no secret of retrace's reaches the command
    let env = stdout_of(result("environment"));
    for secret in ["sk-test-secret-4242", "OPENAI_API_KEY", "tok-secret-4242"] {
        assert!(!env.contains(secret), "{secret} leaked: {env}");
    }
    assert!(
        env.contains(&format!("HOME={}", dir.path().join("ws").display())),
        "{env}"
    );
    // and the workspace itself is writable
    assert_eq!(stdout_of(result("inside")), "fine\n");
    assert!(
        !log_json(&store, &run)
            .iter()
            .any(|e| e.to_string().contains("sk-test-secret")),
        "a secret reached the log"
    );

    assert!(failed(result("unix_socket")), "{:?}", result("unix_socket"));
    assert!(unix.accept().is_err(), "the command reached a unix socket");
    verifies_checks_and_travels(dir.path(), &store, &run, artifact);
}

/// The run verifies and replays, and a bundle of it carries the artifact `artifact`.
fn verifies_checks_and_travels(dir: &Path, store: &Path, run: &str, artifact: &str) {
    ok(store, &["verify", run]);
    ok(store, &["check", run]);
    let bundle = dir.join("escapes.bundle");
    ok(
        store,
        &["export", run, "--output", bundle.to_str().expect("utf-8")],
    );
    let other = dir.join("other");
    ok(&other, &["import", bundle.to_str().expect("utf-8")]);
    ok(&other, &["verify", run]);
    let imported = retrace_store_sled::SledStore::open(&other).expect("store");
    let id: retrace_events::BlobId = artifact.parse().expect("blob id");
    let whole = imported
        .blob(&id)
        .expect("read")
        .expect("the artifact is in the bundle");
    assert!(whole.len() <= 8 << 20 && whole.iter().all(|b| *b == b'a'));
}

/// A store the agent's tools could reach is refused before anything is recorded.
#[test]
fn a_store_inside_the_workspace_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = exec_agent(dir.path(), &[("x", json!({"command": "true"}))]);
    let store = dir.path().join("ws/.retrace");
    let out = run_agent(&store, &spec, "go");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("could rewrite its own log"),
        "{}",
        text(&out)
    );
    assert_eq!(common::the_run(&store), None, "nothing recorded");
}

#[test]
fn the_coder_example_fixes_the_test_keeps_a_plan_and_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("coder", dir.path());
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "Make the tests pass");
    assert!(out.status.success(), "{}", text(&out));
    let run = run_id_of(&out);
    let got = results(&store, &run);
    assert_eq!(got["test_1"].0["exit_code"], 1, "{:?}", got["test_1"]);
    assert!(stdout_of(&got["test_1"]).contains("FAIL: mul 2 3: expected 6, got 5"));
    assert_eq!(got["test_2"].0["exit_code"], 0, "{:?}", got["test_2"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("coder/workspace/work/calc.sh"))
            .expect("fixed file")
            .lines()
            .nth(2),
        Some("mul() { echo $(($1 * $2)); }")
    );
    // the original project is untouched
    assert!(
        std::fs::read_to_string(dir.path().join("coder/workspace/project/calc.sh"))
            .expect("original")
            .contains("$(($1 + $2)); }\n")
    );
    let shown = text(&ok(&store, &["show", &run]));
    assert!(shown.contains("plan      4 of 4 done"), "{shown}");
    assert!(
        shown.contains("[x] 2. Find the bug — mul uses + instead of *"),
        "{shown}"
    );
    // the plan at an earlier event: only the first item done
    let early = text(&ok(&store, &["show", &format!("{run}@17")]));
    assert!(early.contains("plan      1 of 4 done"), "{early}");
    ok(&store, &["check", &run]);
    ok(&store, &["verify", &run]);
}

/// A loopback HTTP server for the research example's pages, serving `site/` until the
/// test ends; its port. (The example's spec and cassette name port 47811, which the test
/// rewrites to this one, so a busy port cannot fail it.)
fn serve_site(site: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request_line = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // the rest of the head
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line.split(' ').nth(1).unwrap_or("/");
            let file = site.join(path.trim_start_matches('/'));
            let (status, body) = match std::fs::read(&file) {
                Ok(body) if file.starts_with(&site) => ("200 OK", body),
                _ => ("404 Not Found", b"not here".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    port
}

#[test]
fn the_research_example_asks_fetches_writes_and_a_fork_with_the_other_answer_writes_the_other_report()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("research", dir.path());
    let port = serve_site(dir.path().join("research/site"));
    for file in ["agent.toml", "cassette.json"] {
        let path = dir.path().join("research").join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("127.0.0.1:47811"),
            "{file} names the example's port"
        );
        std::fs::write(
            &path,
            text.replace("127.0.0.1:47811", &format!("127.0.0.1:{port}")),
        )
        .expect("write");
    }
    let store = dir.path().join("store");
    let reports = dir.path().join("research/workspace/reports");

    // the run parks at the question
    let out = run_agent(&store, &spec, "Write a short report");
    assert!(out.status.success(), "{}", text(&out));
    let run = run_id_of(&out);
    assert!(
        text(&out).contains("answer: retrace answer"),
        "{}",
        text(&out)
    );
    let shown = text(&ok(&store, &["show", &run]));
    assert!(shown.contains("status    asking topic"), "{shown}");
    assert!(
        shown.contains("1. sled") && shown.contains("2. wasmtime"),
        "{shown}"
    );

    // a wrong answer is refused with why, and nothing is recorded
    let events = log_json(&store, &run).len();
    let wrong = retrace(&store, &["answer", &run, "--choice", "3"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("choice 3 does not exist; pick 1 to 2"),
        "{}",
        text(&wrong)
    );
    let wrong = retrace(&store, &["answer", &run, "--text", "rust"]);
    assert!(text(&wrong).contains("not free text"), "{}", text(&wrong));
    assert_eq!(log_json(&store, &run).len(), events);

    // answered through the CLI: the answer is the call's result, the run continues
    ok(&store, &["answer", &run, "topic", "--choice", "1"]);
    let answer = log_json(&store, &run).pop().expect("the answer");
    assert_eq!(answer["kind"], "tool_returned");
    let answer_seq = answer["seq"].as_u64().expect("seq");
    ok(&store, &["resume", &run]);
    assert!(reports.join("sled.md").exists());
    assert!(!reports.join("wasmtime.md").exists());
    let fetched = &results(&store, &run)["fetch"].0;
    assert_eq!(fetched["status"], 200, "{fetched}");
    let page = fetched["text"].as_str().expect("text");
    assert!(
        page.contains("untrusted") && page.contains("embedded database"),
        "{page}"
    );
    assert!(
        !page.contains("<b>") && !page.contains("console.log"),
        "{page}"
    );
    ok(&store, &["check", &run]);

    // a fork at the answer with the other choice fetches the other page, writes the other
    // report
    let edit = dir.path().join("answer.json");
    std::fs::write(
        &edit,
        json!({"answer": "wasmtime", "choice": 2, "by": "reviewer"}).to_string(),
    )
    .expect("edit");
    let forked = ok(
        &store,
        &[
            "fork",
            &format!("{run}@{answer_seq}"),
            "--edit",
            edit.to_str().expect("utf-8"),
        ],
    );
    let fork = fork_id_of(&forked);
    ok(&store, &["resume", &fork]);
    assert!(reports.join("wasmtime.md").exists());
    let fork_results = results(&store, &fork);
    assert!(
        fork_results["fetch"].0["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/wasmtime.html")),
        "{:?}",
        fork_results["fetch"]
    );
    ok(&store, &["check", &fork]);
    ok(&store, &["verify", &fork]);
}

/// `user.ask` answered through the daemon's API: `retrace serve` drives the run to the
/// question, `POST /v1/runs/{run}/answer` answers it, and serve continues the run.
#[test]
fn a_question_is_answered_through_the_daemon_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    std::fs::create_dir_all(dir.path().join("ws")).expect("mkdir");
    let spec = dir.path().join("agent.toml");
    std::fs::write(
        &spec,
        "name = \"asker\"\nsystem = \"ask\"\nworkspace = \"ws\"\n\
         [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
         [tools]\nallow = [\"user.ask\"]\n",
    )
    .expect("spec");
    std::fs::write(
        dir.path().join("cassette.json"),
        json!({"replies": [
            {"text": "asking", "tool_calls": [{"id": "why", "name": "user.ask",
                "arguments": {"question": "Why?"}}]},
            {"text": "thanks"}]})
        .to_string(),
    )
    .expect("cassette");
    let mut daemon = common::command(&store)
        .args(["serve", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(daemon.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("serve prints where it listens")
            .expect("a line");
        if let Some(address) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break address.trim_end_matches(['/', ',', ';']).to_owned();
        }
    };
    let token = std::fs::read_to_string(store.join("serve.token")).unwrap_or_default();
    let call = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        http(&base, method, path, token.trim(), body)
    };
    let (status, submitted) = call(
        "POST",
        "/v1/runs",
        Some(json!({"spec_path": spec.display().to_string(), "input": "go"})),
    );
    assert!(status < 300, "{status} {submitted}");
    let run = submitted["run"].as_str().expect("run").to_owned();
    let view = wait_for(&|| call("GET", &format!("/v1/runs/{run}"), None).1, &|v| {
        v["awaiting_answer"] == "why"
    });
    assert_eq!(view["parked"], true);
    let (status, refused) = call(
        "POST",
        &format!("/v1/runs/{run}/answer"),
        Some(json!({"choice": 1})),
    );
    assert_eq!(status, 409, "{refused}");
    assert!(refused.to_string().contains("no choices"), "{refused}");
    let (status, answered) = call(
        "POST",
        &format!("/v1/runs/{run}/answer"),
        Some(json!({"text": "because", "by": "ops"})),
    );
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["call_id"], "why");
    let view = wait_for(&|| call("GET", &format!("/v1/runs/{run}"), None).1, &|v| {
        v["finished"] == true
    });
    assert_eq!(view["outcome"], "succeeded", "{view}");
    daemon.kill().expect("stop serve");
    daemon.wait().expect("reap");
    let got = results(&store, &run);
    assert_eq!(got["why"].0, json!({"answer": "because", "by": "ops"}));
}

fn wait_for(get: &dyn Fn() -> Value, done: &dyn Fn(&Value) -> bool) -> Value {
    let began = std::time::Instant::now();
    loop {
        let value = get();
        if done(&value) {
            return value;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "waited 30 s; last: {value}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request over loopback; the status and the JSON body.
fn http(base: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("authorization: Bearer {token}\r\n")
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

//! MCP tools against the reference server `@modelcontextprotocol/server-everything`, a real
//! Node.js process speaking MCP over stdio and over streamable HTTP: the catalog is
//! discovered and recorded with the run; tools run through an agent run with the scripted
//! provider; a server killed mid-call, one that cannot start, and one that times out are
//! recorded tool errors after which the run goes on, or fails when the server's errors stop
//! it; servers are cleaned up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use retrace_events::{EventKind, Outcome, RunId};
use retrace_providers::Scripted;
use retrace_runtime::executor::{Runner, Stop};
use retrace_runtime::spec::Spec;
use retrace_store::{Store, VerifyOptions, verify_run};
use retrace_store_sled::SledStore;
use retrace_tests::mcp_http::{HttpServer, free_port};
use retrace_tests::{mcp_server_everything, pids_with_env};
use serde_json::{Value, json};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A marker for the environment of the server processes a test starts.
fn marker() -> String {
    format!("RETRACE_TEST_MARK={}", uuid::Uuid::new_v4())
}

/// An agent using server-everything over stdio as `everything`, with `extra` appended to the
/// spec; the spec's path and the marker its server processes carry in their environment.
fn agent(dir: &Path, cassette: &Value, extra: &str) -> (PathBuf, String) {
    let marker = marker();
    let (key, value) = marker.split_once('=').expect("k=v");
    let server = format!(
        "command = \"node\"\nargs = [\"{}\", \"stdio\"]\nenv = {{ {key} = \"{value}\" }}",
        mcp_server_everything().display()
    );
    (agent_reaching(dir, cassette, &server, extra), marker)
}

/// An agent whose server `everything` is reached as `server` says (its TOML lines).
fn agent_reaching(dir: &Path, cassette: &Value, server: &str, extra: &str) -> PathBuf {
    write(
        &dir.join("agent.toml"),
        &format!(
            r#"
name = "mcp"
system = "You use MCP tools."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[[mcp]]
name = "everything"
{server}
{extra}
"#
        ),
    );
    write(&dir.join("cassette.json"), &cassette.to_string());
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    dir.join("agent.toml")
}

const ALLOW: &str = "[[policy]]\ntool = \"mcp.everything.*\"\naction = \"allow\"";

async fn spec_with_catalog(path: &Path) -> Spec {
    let mut spec = Spec::load(path).expect("spec");
    retrace_runtime::tools::mcp::discover(&mut spec.mcp)
        .await
        .expect("catalog discovered");
    spec
}

/// Every tool result of `run`, by call id: (output JSON, is_error).
fn results(store: &SledStore, run: &RunId) -> std::collections::BTreeMap<String, (Value, bool)> {
    let mut out = std::collections::BTreeMap::new();
    for (_, event) in store.events(run, 0..=u64::MAX).expect("events") {
        if let EventKind::ToolReturned {
            call_id,
            output,
            is_error,
            ..
        } = event.kind
        {
            let value = serde_json::from_slice(&store.blob(&output).expect("read").expect("blob"))
                .expect("json");
            out.insert(call_id, (value, is_error));
        }
    }
    out
}

async fn wait_until_gone(marker: &str) {
    let started = Instant::now();
    while !pids_with_env(marker).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "MCP server processes left behind: {:?}",
            pids_with_env(marker)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_recorded_and_tools_run_through_an_agent_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = json!({"replies": [
        {"tool_calls": [
            {"id": "c1", "name": "mcp.everything.echo", "arguments": {"message": "hello from retrace"}},
            {"id": "c2", "name": "mcp.everything.get-sum", "arguments": {"a": 2, "b": 40}}
        ]},
        {"text": "Echoed and summed."}
    ]});
    let (path, marker) = agent(dir.path(), &cassette, ALLOW);
    let spec = spec_with_catalog(&path).await;
    let catalog = spec.mcp[0].catalog.clone().expect("catalog");
    assert!(catalog.iter().any(|t| t.name == "echo"));
    assert!(
        catalog
            .iter()
            .all(|t| t.description.starts_with("(from an MCP server; untrusted)"))
    );
    // discovery stops the server it started
    wait_until_gone(&marker).await;

    let store_dir = tempfile::tempdir().expect("store");
    let store = SledStore::open(store_dir.path()).expect("store");
    let run = RunId::from_bytes([9; 16]);
    {
        let provider = Scripted::load(&dir.path().join("cassette.json")).expect("cassette");
        let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
        runner.start(run, "echo and sum").expect("start");
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
        assert!(!pids_with_env(&marker).is_empty(), "the server runs");
    }
    // dropping the runner stops the server
    wait_until_gone(&marker).await;

    let results = results(&store, &run);
    let (echo, is_error) = &results["c1"];
    assert!(!is_error, "{echo}");
    assert!(echo.to_string().contains("hello from retrace"), "{echo}");
    let (sum, is_error) = &results["c2"];
    assert!(!is_error, "{sum}");
    assert!(sum.to_string().contains("42"), "{sum}");

    // the catalog is in the spec the run recorded
    let (_, first) = store.event_at(&run, 0).expect("read").expect("first");
    let EventKind::RunStarted { spec, .. } = first.kind else {
        panic!("first event is run_started")
    };
    let recorded: Spec =
        serde_json::from_slice(&store.blob(&spec).expect("read").expect("blob")).expect("spec");
    assert_eq!(recorded.mcp[0].catalog.as_ref(), Some(&catalog));
    verify_run(&store, &run, VerifyOptions::default()).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_ask_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = json!({"replies": [
        {"tool_calls": [{"id": "c1", "name": "mcp.everything.echo", "arguments": {"message": "x"}}]},
        {"text": "done"}
    ]});
    let (path, _) = agent(dir.path(), &cassette, "");
    let spec = spec_with_catalog(&path).await;
    let store_dir = tempfile::tempdir().expect("store");
    let store = SledStore::open(store_dir.path()).expect("store");
    let provider = Scripted::load(&dir.path().join("cassette.json")).expect("cassette");
    let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
    let run = RunId::from_bytes([10; 16]);
    runner.start(run, "echo").expect("start");
    let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
    assert!(matches!(stop, Stop::Parked(_)), "{stop:?}");
    assert!(
        store
            .events(&run, 0..=u64::MAX)
            .expect("events")
            .iter()
            .any(|(_, e)| matches!(e.kind, EventKind::ApprovalRequested { .. }))
    );
}

/// Run an agent (`extra` appended to its spec) whose first call, a long operation, loses its
/// server to SIGKILL; its second is an echo. The store, the run and how the run stopped.
async fn run_with_the_server_killed_mid_call(
    extra: &str,
) -> (tempfile::TempDir, SledStore, RunId, Stop) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = json!({"replies": [
        {"tool_calls": [{"id": "c1", "name": "mcp.everything.trigger-long-running-operation",
                         "arguments": {"duration": 20, "steps": 20}}]},
        {"tool_calls": [{"id": "c2", "name": "mcp.everything.echo", "arguments": {"message": "again"}}]},
        {"text": "The long operation failed; echo worked after the restart."}
    ]});
    let (path, marker) = agent(dir.path(), &cassette, &format!("{extra}\n{ALLOW}"));
    let spec = spec_with_catalog(&path).await;
    wait_until_gone(&marker).await;
    let store_dir = tempfile::tempdir().expect("store");
    let store = SledStore::open(store_dir.path()).expect("store");
    let provider = Scripted::load(&dir.path().join("cassette.json")).expect("cassette");
    let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
    let run = RunId::from_bytes([11; 16]);
    runner.start(run, "long").expect("start");
    let killer = {
        let marker = marker.clone();
        tokio::spawn(async move {
            // the server is up and the call under way: kill it
            let started = Instant::now();
            while pids_with_env(&marker).is_empty() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "server never started"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let pids = pids_with_env(&marker);
            for pid in &pids {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
            pids.len()
        })
    };
    let started = Instant::now();
    let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
    assert!(killer.await.expect("killer") > 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the call did not end with the server"
    );
    drop(runner);
    wait_until_gone(&marker).await;
    (store_dir, store, run, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_is_a_recorded_error_and_the_run_goes_on() {
    let (_dir, store, run, stop) = run_with_the_server_killed_mid_call("").await;
    assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    let results = results(&store, &run);
    let (long, is_error) = &results["c1"];
    assert!(is_error, "{long}");
    let message = long["error"].as_str().expect("message");
    assert!(message.contains("MCP server `everything`"), "{message}");
    let (echo, is_error) = &results["c2"];
    assert!(!is_error, "a fresh server answers: {echo}");
    assert!(echo.to_string().contains("again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_fails_the_run_when_its_errors_stop_it() {
    let (_dir, store, run, stop) = run_with_the_server_killed_mid_call("on_error = \"stop\"").await;
    assert_eq!(stop, Stop::Finished(Outcome::Failed));
    let results = results(&store, &run);
    assert!(results["c1"].1, "the killed call is a recorded error");
    assert!(!results.contains_key("c2"), "nothing runs after it");
    let events = store.events(&run, 0..=u64::MAX).expect("events");
    let (_, last) = events.last().expect("events");
    let EventKind::RunFinished { detail, .. } = &last.kind else {
        panic!("the run finished: {last:?}")
    };
    let reason =
        String::from_utf8(store.blob(detail).expect("read").expect("blob")).expect("utf-8");
    assert!(
        reason.contains("`mcp.everything.trigger-long-running-operation` failed"),
        "{reason}"
    );
    verify_run(&store, &run, VerifyOptions::default()).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_server_serves_the_run_and_a_killed_one_is_a_recorded_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = marker();
    let port = free_port();
    let mut server = HttpServer::start(port, &marker);
    // c2 loses the server mid-call; while the model thinks (5 s) it comes back, so c3 opens
    // a new session
    let cassette = json!({"replies": [
        {"tool_calls": [{"id": "c1", "name": "mcp.everything.echo", "arguments": {"message": "over http"}}]},
        {"tool_calls": [{"id": "c2", "name": "mcp.everything.trigger-long-running-operation",
                         "arguments": {"duration": 20, "steps": 20}}]},
        {"tool_calls": [{"id": "c3", "name": "mcp.everything.get-sum", "arguments": {"a": 40, "b": 2}}],
         "latency_ms": 5000},
        {"text": "done"}
    ]});
    let path = agent_reaching(
        dir.path(),
        &cassette,
        &format!("url = \"{}\"\ntimeout_secs = 10", server.url()),
        ALLOW,
    );
    let spec = spec_with_catalog(&path).await;
    let catalog = spec.mcp[0].catalog.as_ref().expect("catalog");
    assert!(catalog.iter().any(|t| t.name == "get-sum"));
    let store_dir = tempfile::tempdir().expect("store");
    let store = SledStore::open(store_dir.path()).expect("store");
    let provider = Scripted::load(&dir.path().join("cassette.json")).expect("cassette");
    let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
    let run = RunId::from_bytes([14; 16]);
    runner
        .start(run, "echo, lose the server, sum")
        .expect("start");
    let restarter = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(2500));
        server.kill();
        HttpServer::start(port, &marker)
    });
    let started = Instant::now();
    let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
    let _server = restarter.await.expect("restarted");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the call did not end with the server"
    );
    assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    let results = results(&store, &run);
    let (echo, is_error) = &results["c1"];
    assert!(!is_error, "{echo}");
    assert!(echo.to_string().contains("over http"), "{echo}");
    let (lost, is_error) = &results["c2"];
    assert!(is_error, "{lost}");
    let message = lost["error"].as_str().expect("message");
    assert!(message.contains("MCP server `everything`"), "{message}");
    let (sum, is_error) = &results["c3"];
    assert!(!is_error, "a new session answers: {sum}");
    assert!(sum.to_string().contains("42"), "{sum}");
    verify_run(&store, &run, VerifyOptions::default()).expect("verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_or_is_too_slow_is_a_recorded_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = json!({"replies": [
        {"tool_calls": [{"id": "c1", "name": "mcp.everything.trigger-long-running-operation",
                         "arguments": {"duration": 10, "steps": 10}}]},
        {"tool_calls": [{"id": "c2", "name": "mcp.everything.echo", "arguments": {"message": "x"}}]},
        {"text": "Both failed."}
    ]});
    let (path, marker) = agent(dir.path(), &cassette, &format!("timeout_secs = 2\n{ALLOW}"));
    let mut spec = spec_with_catalog(&path).await;
    let store_dir = tempfile::tempdir().expect("store");
    let store = SledStore::open(store_dir.path()).expect("store");
    let provider = Scripted::load(&dir.path().join("cassette.json")).expect("cassette");
    let runner = Runner::new(&store, spec.clone(), Box::new(provider)).expect("runner");
    let run = RunId::from_bytes([12; 16]);
    runner.start(run, "slow").expect("start");
    // the first call times out; then the server is gone for good
    let stop = {
        let started = Instant::now();
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "the timeout held"
        );
        stop
    };
    assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    let (slow, is_error) = &results(&store, &run)["c1"];
    assert!(is_error);
    assert!(
        slow["error"]
            .as_str()
            .expect("message")
            .contains("did not answer within 2 s"),
        "{slow}"
    );
    drop(runner);
    wait_until_gone(&marker).await;

    // a server whose command is gone: its calls are errors naming it, the run goes on
    spec.mcp[0].command = Some("/nonexistent/mcp-server".into());
    let provider = Scripted::load(&dir.path().join("cassette.json")).expect("cassette");
    let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
    let run = RunId::from_bytes([13; 16]);
    runner.start(run, "gone").expect("start");
    let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
    assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    let results = results(&store, &run);
    for call in ["c1", "c2"] {
        let (failed, is_error) = &results[call];
        assert!(is_error);
        let message = failed["error"].as_str().expect("message");
        assert!(
            message.contains("MCP server `everything`: cannot start `/nonexistent/mcp-server`"),
            "{message}"
        );
    }
}

#[test]
fn discovery_failure_names_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        &dir.path().join("agent.toml"),
        "name = \"m\"\nsystem = \"s\"\n[model]\nprovider = \"scripted\"\nname = \"d\"\ncassette = \"c.json\"\n[[mcp]]\nname = \"broken\"\ncommand = \"false\"\ntimeout_secs = 5\n",
    );
    let mut spec = Spec::load(&dir.path().join("agent.toml")).expect("spec");
    let err = retrace_runtime::tools::mcp::discover_now(&mut spec.mcp).expect_err("fails");
    let text = err.to_string();
    assert!(text.contains("MCP server `broken`"), "{text}");
    assert!(text.contains("`false`"), "{text}");
}

//! The `retrace` binary end to end: runs of the example agents, inspection, forks, approvals,
//! unknown outcomes, and clear errors for bad input.

mod common;

use std::path::Path;

use common::{example, retrace, run_agent, text, tidy_run};

#[test]
fn verify_exits_non_zero_and_names_run_and_seq_of_a_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = tidy_run(dir.path());
    // flip one byte of the event at seq 4 directly in the sled files
    let run_id: retrace_events::RunId = run.parse().unwrap();
    retrace_tests::tamper::flip_event_byte(&store, &run_id, 4, usize::MAX);
    let out = retrace(&store, &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains(&format!("run {run} seq 4")), "{msg}");
    assert!(msg.contains("hash to"), "{msg}");
}

#[test]
fn bad_input_gets_a_clear_error_and_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = retrace(&missing, &["runs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no retrace store at"), "{}", text(&out));
    assert!(!missing.exists(), "a read-only command created a store");

    let (store, _) = tidy_run(dir.path());
    let out = retrace(&store, &["verify", "zz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a valid run id"), "{}", text(&out));
    let out = retrace(&store, &["verify", "ffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no run id starts with `ffffffff`"),
        "{}",
        text(&out)
    );
}

#[test]
fn log_show_fork_with_edit_and_diff_work_end_to_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = tidy_run(dir.path());
    let short = &run[..8];

    let out = retrace(
        &store,
        &["log", short, "--from", "4", "--to", "5", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 4);
    assert_eq!(lines[0]["kind"], "tool_requested");
    assert_eq!(lines[0]["tool"], "fs.list");
    assert_eq!(lines[1]["parent"], lines[0]["id"]);

    let out = retrace(&store, &["show", &format!("{short}@7"), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["event"]["kind"], "model_responded");
    assert_eq!(shown["state"]["totals"]["steps"], 2);
    assert_eq!(shown["state"]["status"]["status"], "running");

    let edit = dir.path().join("reply.json");
    std::fs::write(
        &edit,
        r#"{"text": "I will not write anything.", "tool_calls": []}"#,
    )
    .expect("write");
    let out = retrace(
        &store,
        &[
            "fork",
            &format!("{short}@7"),
            "--edit",
            edit.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let forked = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .expect("fork prints the new run id")
        .to_owned();

    let out = retrace(&store, &["diff", &format!("{short}@7"), &forked, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(diff["runs"]["first_divergence"]["seq"], 7);
    let changes = diff["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0]["path"]
            .as_str()
            .expect("path")
            .ends_with("/content")
    );

    // bad input: an unknown seq, a non-editable event, a fork without @SEQ
    let out = retrace(&store, &["show", &format!("{short}@99")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("there is no seq 99"), "{}", text(&out));
    let out = retrace(
        &store,
        &[
            "fork",
            &format!("{short}@3"),
            "--edit",
            edit.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("only a model reply"), "{}", text(&out));
    let out = retrace(&store, &["fork", short]);
    assert_eq!(out.status.code(), Some(64), "a usage error");
    assert!(text(&out).contains("RUN@SEQ"), "{}", text(&out));
}

#[test]
fn the_unattended_example_runs_to_success_and_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("tidy", dir.path());
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "Summarise this project");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("succeeded"), "{}", text(&out));
    let summary = std::fs::read_to_string(dir.path().join("tidy/workspace/out/SUMMARY.md"))
        .expect("summary written");
    assert!(summary.contains("calculator"), "{summary}");
    let out = retrace(&store, &["runs", "--json"]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(line["events"], 21);
    assert_eq!(line["status"]["outcome"], "succeeded");
    assert_eq!(line["totals"]["tool_calls"], 4);
    let out = retrace(&store, &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("21 events"), "{}", text(&out));
}

#[test]
fn approval_parks_the_run_across_processes_and_a_denial_reaches_the_model() {
    for deny in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = example("approval", dir.path());
        let store = dir.path().join("store");
        let out = run_agent(&store, &spec, "Note the release date");
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("is parked: approval of call_1"),
            "{}",
            text(&out)
        );
        let line: serde_json::Value =
            serde_json::from_slice(&retrace(&store, &["runs", "--json"]).stdout).expect("json");
        let run = line["run"].as_str().expect("run id").to_owned();
        assert_eq!(line["status"]["status"], "awaiting_approval");

        let mut args = vec!["approve", &run[..8]];
        if deny {
            args.extend(["--deny", "--note", "not now"]);
        }
        let out = retrace(&store, &args);
        assert!(out.status.success(), "{}", text(&out));
        let out = retrace(&store, &["resume", &run[..8]]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("succeeded"), "{}", text(&out));
        let notes = dir.path().join("approval/workspace/out/NOTES.md");
        assert_eq!(notes.exists(), !deny, "the write happened only if approved");

        // what the model was told about its tool call
        let log = retrace(&store, &["log", &run[..8], "--json"]);
        let returned: serde_json::Value = String::from_utf8_lossy(&log.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .find(|e| e["kind"] == "tool_returned")
            .expect("a tool result");
        assert_eq!(returned["is_error"], deny);
        if deny {
            let seq = returned["seq"].as_u64().expect("seq").to_string();
            let shown = retrace(&store, &["show", &format!("{}@{seq}", &run[..8]), "--json"]);
            let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
            let payload = shown["payloads"]
                .as_object()
                .expect("payloads")
                .values()
                .next()
                .expect("one")
                .to_string();
            assert!(payload.contains("denied by"), "{payload}");
        }
        let out = retrace(&store, &["approve", &run[..8]]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out).contains("no pending approval"), "{}", text(&out));
    }
}

#[test]
fn several_inputs_start_concurrent_runs_that_all_finish() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("tidy", dir.path());
    let store = dir.path().join("store");
    let spec = spec.to_str().expect("utf-8");
    let out = retrace(
        &store,
        &["run", spec, "--input", "a", "--input", "b", "--input", "c"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches(": succeeded (4 steps)").count(),
        3,
        "{}",
        text(&out)
    );
    let listed = retrace(&store, &["runs", "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 3);
    assert!(retrace(&store, &["verify"]).status.success());
}

#[test]
fn rust_log_turns_on_spans_for_runs_and_effects_and_is_quiet_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("tidy", dir.path());
    let spec = spec.to_str().expect("utf-8");
    let quiet = retrace(&dir.path().join("a"), &["run", spec, "--input", "x"]);
    assert!(quiet.status.success());
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("INFO"),
        "{}",
        text(&quiet)
    );
    let traced = common::command(&dir.path().join("b"))
        .args(["run", spec, "--input", "x"])
        .env("RUST_LOG", "retrace_runtime=info")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(
        stderr.contains("model_call{step=0") && stderr.contains("model replied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tool_call{") && stderr.contains("tool returned"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal"
    );
}

/// A run whose process "died" while a non-idempotent append was running: its intent is
/// recorded, its result is not. Returns the run id.
fn run_stuck_in_an_append(dir: &Path) -> retrace_events::RunId {
    use retrace_events::{Event, EventKind, ProposedCall, canonical_json};
    use retrace_store::Store;
    let agent = dir.join("agent");
    std::fs::create_dir_all(agent.join("ws")).expect("mkdir");
    std::fs::write(
        agent.join("agent.toml"),
        "name = \"logger\"\nsystem = \"log\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\nname = \"demo\"\n\
         cassette = \"cassette.json\"\n[tools]\nallow = [\"fs.append\"]\n[[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n",
    )
    .expect("write");
    let call = serde_json::json!({"id": "a1", "name": "fs.append", "arguments": {"path": "log.txt", "text": "line 1\n"}});
    std::fs::write(
        agent.join("cassette.json"),
        serde_json::json!({"replies": [{"tool_calls": [call]}, {"text": "logged"}]}).to_string(),
    )
    .expect("write");
    let store = retrace_store_sled::SledStore::open(dir.join("store")).expect("store");
    let spec = retrace_runtime::spec::Spec::load(&agent.join("agent.toml")).expect("spec");
    let provider =
        retrace_providers::Scripted::load(&agent.join("cassette.json")).expect("cassette");
    let runner =
        retrace_runtime::executor::Runner::new(&store, spec, Box::new(provider)).expect("runner");
    let run = retrace_events::RunId::from_bytes([0xab; 16]);
    runner.start(run, "log a line").expect("start");
    let put = |v: serde_json::Value| store.put_blob(&canonical_json(&v)).expect("blob");
    let args = put(call["arguments"].clone());
    let mut head = store.require_run(&run).expect("run").head;
    let mut push = |kinds: Vec<EventKind>| {
        let mut events = Vec::new();
        let mut prev = head;
        for kind in kinds {
            let event = Event::after(prev, retrace_events::Timestamp(1), kind);
            prev = Some(event.head());
            events.push(event);
        }
        head = Some(
            store
                .append(&run, head.map(|h| h.id), &events)
                .expect("append"),
        );
    };
    push(vec![EventKind::ModelRequested {
        request: put(serde_json::json!({})),
        attempt: 1,
    }]);
    push(vec![
        EventKind::ModelResponded {
            request_seq: 1,
            response: put(serde_json::json!({"tool_calls": [call]})),
            usage: retrace_events::Usage::default(),
        },
        EventKind::ToolCallsProposed {
            response_seq: 2,
            calls: vec![ProposedCall {
                call_id: "a1".into(),
                tool: "fs.append".into(),
                args,
                path: Some("log.txt".into()),
            }],
        },
    ]);
    push(vec![EventKind::ToolRequested {
        call_id: "a1".into(),
        tool: "fs.append".into(),
        args,
        idempotent: false,
    }]);
    run
}

#[test]
fn an_unknown_outcome_parks_the_run_until_resolved_by_retry_or_skip() {
    for retry in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = run_stuck_in_an_append(dir.path()).to_hex();
        let store = dir.path().join("store");
        // resuming does not repeat the append blindly: the run parks in doubt
        let out = retrace(&store, &["resume", &run[..8]]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("tool_outcome_unknown"),
            "{}",
            text(&out)
        );
        assert!(
            text(&out).contains("is parked: outcome of a1 unknown"),
            "{}",
            text(&out)
        );
        // what to do next: resolve it (an approval would not help)
        assert!(
            text(&out).contains(&format!(
                "resolve: retrace resolve {} (--retry | --skip-with FILE | --fail)",
                &run[..8]
            )),
            "{}",
            text(&out)
        );
        assert!(!text(&out).contains("retrace approve"), "{}", text(&out));
        let log = dir.path().join("agent/ws/log.txt");
        assert!(!log.exists());

        let out = if retry {
            retrace(&store, &["resolve", &run[..8], "--retry"])
        } else {
            let result = dir.path().join("result.json");
            std::fs::write(&result, r#"{"path": "log.txt", "bytes_appended": 7}"#).expect("write");
            retrace(
                &store,
                &[
                    "resolve",
                    &run[..8],
                    "a1",
                    "--skip-with",
                    result.to_str().expect("utf-8"),
                ],
            )
        };
        assert!(out.status.success(), "{}", text(&out));
        let out = retrace(&store, &["resume", &run[..8]]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("succeeded"), "{}", text(&out));
        let written = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            written,
            if retry { "line 1\n" } else { "" },
            "the append ran exactly as resolved"
        );
        assert!(retrace(&store, &["verify"]).status.success());
        // nothing left to resolve
        let out = retrace(&store, &["resolve", &run[..8], "--fail"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out).contains("no tool call of unknown outcome"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn secrets_in_the_environment_reach_no_event_blob_store_file_or_log() {
    const SECRET: &str = "sk-retrace-test-0123456789abcdef";
    // a positive control: text that must be findable, so the scan is known to see content
    const VISIBLE: &str = "visible-marker-5150";
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let mut printed = String::new();
    let mut run_with_secrets = |args: &[&str]| {
        let out = common::command(&store)
            .args(args)
            .env("RUST_LOG", "trace")
            .env("OPENAI_API_KEY", SECRET)
            .env("ANTHROPIC_API_KEY", SECRET)
            .env("RETRACE_API_KEY", SECRET)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .output()
            .expect("run retrace");
        assert!(out.status.success(), "{}", text(&out));
        printed.push_str(&text(&out));
        out
    };
    for (example_name, input) in [("tidy", "Summarise"), ("approval", "Note the date")] {
        let spec = example(example_name, dir.path());
        let input = format!("{input} ({VISIBLE})");
        run_with_secrets(&["run", spec.to_str().expect("utf-8"), "--input", &input]);
    }
    let runs = run_with_secrets(&["runs", "--json"]);
    let runs: Vec<String> = String::from_utf8_lossy(&runs.stdout)
        .lines()
        .map(|l| {
            let run: serde_json::Value = serde_json::from_str(l).expect("json");
            run["run"].as_str().expect("run id").to_owned()
        })
        .collect();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        // the parked one is approved and finished; the other says so
        let _ = retrace(&store, &["approve", run]);
        run_with_secrets(&["resume", run]);
        let log = run_with_secrets(&["log", run, "--json"]);
        let events = String::from_utf8_lossy(&log.stdout).lines().count();
        // every event with its payload blobs resolved, and the state after it
        for seq in 0..events {
            run_with_secrets(&["show", &format!("{run}@{seq}"), "--json"]);
        }
    }
    assert!(printed.contains(VISIBLE), "the scan sees what runs print");
    assert!(
        !printed.contains(SECRET),
        "a secret reached the output or the trace log"
    );
    assert!(
        !retrace_tests::files_containing(&store, VISIBLE).is_empty(),
        "the raw scan sees what the store holds"
    );
    assert_eq!(
        retrace_tests::files_containing(&store, SECRET),
        Vec::<std::path::PathBuf>::new(),
        "a secret reached the store"
    );
}

/// The `wasm` example, copied into `dir` with its manifests pointing at the built tools.
fn wasm_example(dir: &Path) -> std::path::PathBuf {
    let spec = example("wasm", dir);
    let built = retrace_tests::wasm_tools();
    for manifest in ["count", "transform"] {
        let path = spec
            .parent()
            .expect("example dir")
            .join(format!("tools/{manifest}.toml"));
        let text = std::fs::read_to_string(&path).expect("manifest");
        let text = text.replace(
            "../../../target/wasm/wasm32-wasip2/release",
            built.to_str().expect("utf-8"),
        );
        std::fs::write(&path, text).expect("manifest");
    }
    spec
}

#[test]
fn the_wasm_example_runs_offline_and_tools_lists_what_the_agent_sees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = wasm_example(dir.path());
    let store = dir.path().join("store");
    let spec_arg = spec.to_str().expect("utf-8");

    let out = retrace(&store, &["tools", spec_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    for expected in [
        "text.count",
        "json.transform",
        "fs.write",
        "wasm ",
        "built-in",
        "\"required\":[\"path\"]",
    ] {
        assert!(listing.contains(expected), "{expected}: {listing}");
    }
    let out = retrace(&store, &["tools", spec_arg, "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "two built-ins, the WASM tool, artifact.read"
    );
    let count = lines
        .iter()
        .find(|l| l["name"] == "text.count")
        .expect("listed");
    assert_eq!(count["tier"], "read");
    assert_eq!(count["policy"]["action"], "allow");
    let write = lines
        .iter()
        .find(|l| l["name"] == "fs.write")
        .expect("listed");
    assert_eq!(write["policy"]["action"], "ask");

    let out = run_agent(&store, &spec, "Report on the docs");
    assert!(out.status.success(), "{}", text(&out));
    let report = std::fs::read_to_string(dir.path().join("wasm/workspace/out/REPORT.md"))
        .expect("report written");
    assert!(report.contains("86 words"), "{report}");
    let out = retrace(&store, &["runs", "--json"]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(line["status"]["outcome"], "succeeded");
    assert_eq!(line["totals"]["tool_calls"], 3);
    let run = line["run"].as_str().expect("run id").to_owned();
    // the sandboxed count is what the guest computed over the real files
    let out = retrace(&store, &["show", &format!("{run}@5"), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"words\": 86"), "{}", text(&out));
    let out = retrace(&store, &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn tools_of_a_spec_with_a_bad_manifest_fails_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = wasm_example(dir.path());
    let manifest = spec.parent().expect("dir").join("tools/count.toml");
    let text_before = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        text_before.replace("tier = \"read\"", "tier = \"reed\""),
    )
    .expect("write");
    let out = retrace(
        &dir.path().join("store"),
        &["tools", spec.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains("tools/count.toml:5:"), "{message}");
    assert!(message.contains("unknown variant `reed`"), "{message}");
}

#[test]
fn the_toolbelt_example_runs_a_wasm_tool_and_an_mcp_tool_offline() {
    let dir = tempfile::tempdir().expect("temp dir");
    wasm_example(dir.path()); // the manifest toolbelt borrows, pointing at the built tools
    let spec = example("toolbelt", dir.path());
    let server = retrace_tests::mcp_server_everything();
    let text_before = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(
        &spec,
        text_before.replace(
            "../../tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
            server.to_str().expect("utf-8"),
        ),
    )
    .expect("spec");
    let store = dir.path().join("store");
    let out = retrace(&store, &["tools", spec.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    for expected in [
        "text.count",
        "mcp.everything.get-sum",
        "mcp everything (node)",
        "network",
    ] {
        assert!(listing.contains(expected), "{expected}: {listing}");
    }
    let out = run_agent(&store, &spec, "Count the notes and add up");
    assert!(out.status.success(), "{}", text(&out));
    let report = std::fs::read_to_string(dir.path().join("toolbelt/workspace/out/REPORT.md"))
        .expect("report written");
    assert!(report.contains("28 words"), "{report}");
    let out = retrace(&store, &["runs", "--json"]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(line["status"]["outcome"], "succeeded");
    assert_eq!(line["totals"]["tool_calls"], 3);
    let run = line["run"].as_str().expect("run id").to_owned();
    // seq 10 is the MCP call's result: the server's own sum
    let out = retrace(&store, &["show", &format!("{run}@10"), "--json"]);
    assert!(text(&out).contains("tool_returned"), "{}", text(&out));
    assert!(text(&out).contains("28"), "{}", text(&out));
    let out = retrace(&store, &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A spec whose MCP server `remote` is at `url` over streamable HTTP, with a bearer token and
/// an API key from variables and a plain header; its cassette echoes once.
fn remote_agent(dir: &Path, url: &str) -> std::path::PathBuf {
    let spec = dir.join("remote.toml");
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    std::fs::write(
        dir.join("remote.json"),
        r#"{"replies": [
            {"tool_calls": [{"id": "c1", "name": "mcp.remote.echo", "arguments": {"message": "hi"}}]},
            {"text": "echoed"}]}"#,
    )
    .expect("cassette");
    std::fs::write(
        &spec,
        format!(
            r#"name = "remote"
system = "You echo."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "remote.json"
[[mcp]]
name = "remote"
url = "{url}"
bearer_token_env = "RETRACE_TEST_MCP_TOKEN"
headers = {{ X-Team = "agents" }}
headers_env = {{ X-Api-Key = "RETRACE_TEST_MCP_KEY" }}
[[policy]]
tool = "mcp.remote.*"
action = "allow"
"#
        ),
    )
    .expect("spec");
    spec
}

#[test]
fn an_http_mcp_server_gets_its_headers_and_the_secrets_stay_out_of_the_store() {
    const TOKEN: &str = "tok-5ecret-0f-the-test";
    const KEY: &str = "key-5ecret-0f-the-test";
    use retrace_tests::mcp_http::{HttpServer, Tap, free_port};
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = format!("RETRACE_TEST_MARK={}", dir.path().display());
    let server = HttpServer::start(free_port(), &marker);
    let tap = Tap::to(server.port);
    let spec = remote_agent(dir.path(), &format!("http://127.0.0.1:{}/mcp", tap.port));
    let spec_arg = spec.to_str().expect("utf-8");
    let store = dir.path().join("store");

    // without the token: a clear error naming the server and the variable, nothing run
    let out = common::command(&store)
        .args(["run", spec_arg, "--input", "echo"])
        .env_remove("RETRACE_TEST_MCP_TOKEN")
        .env("RETRACE_TEST_MCP_KEY", KEY)
        .output()
        .expect("run retrace");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains("MCP server `remote`"), "{message}");
    assert!(
        message.contains("`RETRACE_TEST_MCP_TOKEN`, which is not set"),
        "{message}"
    );
    assert!(!message.contains(KEY), "{message}");

    let out = common::command(&store)
        .args(["run", spec_arg, "--input", "echo"])
        .env("RETRACE_TEST_MCP_TOKEN", TOKEN)
        .env("RETRACE_TEST_MCP_KEY", KEY)
        .output()
        .expect("run retrace");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(TOKEN) && !text(&out).contains(KEY));
    let sent = tap.seen().to_ascii_lowercase();
    for header in [
        format!("authorization: bearer {TOKEN}"),
        format!("x-api-key: {KEY}"),
        "x-team: agents".to_owned(),
    ] {
        assert!(sent.contains(&header), "{header} not sent: {sent}");
    }
    drop(server);
    for secret in [TOKEN, KEY] {
        let holding = retrace_tests::files_containing(&store, secret);
        assert!(holding.is_empty(), "{secret} is in {holding:?}");
    }
    let out = retrace(&store, &["runs", "--json"]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(line["status"]["outcome"], "succeeded");
    let out = retrace(&store, &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_credential_header_written_into_an_mcp_server_is_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = remote_agent(dir.path(), "http://127.0.0.1:9/mcp");
    let text_before = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(
        &spec,
        text_before.replace(
            "X-Team = \"agents\"",
            "Authorization = \"Bearer zz-literal-5ecret\"",
        ),
    )
    .expect("write");
    let out = retrace(
        &dir.path().join("store"),
        &["tools", spec.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains("remote.toml:8:"), "{message}");
    assert!(
        message.contains("header `Authorization` would be recorded"),
        "{message}"
    );
    assert!(!message.contains("zz-literal-5ecret"), "{message}");
}

/// A run whose log an older `decide` wrote: it ran `fs.write` without asking, which today's
/// default policy (writes ask) would not. Built event by event into a real store.
fn run_written_by_an_older_decide(dir: &Path) -> std::path::PathBuf {
    use retrace_events::{Event, EventKind, Outcome, ProposedCall, RunId, Timestamp, Usage};
    use retrace_store::{NewRun, Store};
    let spec_path = dir.join("agent.toml");
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    std::fs::write(dir.join("c.json"), r#"{"replies": []}"#).expect("cassette");
    std::fs::write(
        &spec_path,
        "name = \"old\"\nsystem = \"s\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\nname = \"d\"\ncassette = \"c.json\"\n[tools]\nallow = [\"fs.write\"]\n",
    )
    .expect("spec");
    let spec = retrace_runtime::spec::Spec::load(&spec_path).expect("spec");
    let store_dir = dir.join("store");
    let store = retrace_store_sled::SledStore::open(&store_dir).expect("store");
    let blob = |v: serde_json::Value| {
        store
            .put_blob(&retrace_events::canonical_json(&v))
            .expect("blob")
    };
    let run = RunId::from_bytes([7; 16]);
    store
        .create_run(NewRun::new(run, Timestamp(1)))
        .expect("create");
    let usage = Usage {
        input_tokens: 10,
        output_tokens: 5,
        cost_micro_usd: 0,
        latency_ms: 1,
    };
    let kinds = vec![
        EventKind::RunStarted {
            run,
            spec: store.put_blob(&spec.to_canonical_bytes()).expect("spec"),
            input: blob(serde_json::json!("write a note")),
        },
        EventKind::ModelRequested {
            request: blob(serde_json::json!({"step": 0})),
            attempt: 1,
        },
        EventKind::ModelResponded {
            request_seq: 1,
            response: blob(serde_json::json!({"text": "", "tool_calls": []})),
            usage,
        },
        EventKind::ToolCallsProposed {
            response_seq: 2,
            calls: vec![ProposedCall {
                call_id: "w1".into(),
                tool: "fs.write".into(),
                args: blob(serde_json::json!({"path": "notes.md", "content": "hi"})),
                path: Some("notes.md".into()),
            }],
        },
        EventKind::ToolRequested {
            call_id: "w1".into(),
            tool: "fs.write".into(),
            args: blob(serde_json::json!({"path": "notes.md", "content": "hi"})),
            idempotent: true,
        },
        EventKind::ToolReturned {
            call_id: "w1".into(),
            output: blob(serde_json::json!({"written": 2})),
            is_error: false,
            duration_ms: 1,
        },
        EventKind::ModelRequested {
            request: blob(serde_json::json!({"step": 1})),
            attempt: 1,
        },
        EventKind::ModelResponded {
            request_seq: 6,
            response: blob(serde_json::json!({"text": "noted", "tool_calls": []})),
            usage,
        },
        EventKind::RunFinished {
            outcome: Outcome::Succeeded,
            detail: blob(serde_json::json!({"output": "noted"})),
        },
    ];
    let mut head = None;
    let mut events = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let event = Event::after(head, Timestamp(10 + i as u64), kind);
        head = Some(event.head());
        events.push(event);
    }
    store.append(&run, None, &events).expect("append");
    store_dir
}

#[test]
fn check_reports_a_run_whose_log_today_s_decide_would_not_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = tidy_run(dir.path());
    let out = retrace(&store, &["check", &run[..8]]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("decisions the same"), "{}", text(&out));

    let old = tempfile::tempdir().expect("temp dir");
    let store = run_written_by_an_older_decide(old.path());
    let out = retrace(&store, &["check", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("at seq 4 comes out otherwise"), "{report}");
    assert!(
        report.contains(r#"expected (today): {"action":"ask_approval","call_id":"w1"}"#),
        "{report}"
    );
    assert!(report.contains("because"), "{report}");
    assert!(
        report.contains(r#"actual (the run): {"action":"run_tool""#),
        "{report}"
    );
    assert!(report.contains("1 diverged"), "{report}");

    let out = retrace(&store, &["check", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0]["divergence"]["seq"], 4);
    assert_eq!(lines[0]["divergence"]["expected"]["action"], "ask_approval");
    assert_eq!(lines[0]["divergence"]["actual"]["tool"], "fs.write");
    assert_eq!(lines[1]["summary"]["diverged"], 1);

    let out = retrace(&store, &["check"]);
    assert_eq!(out.status.code(), Some(64), "a usage error: {}", text(&out));
    assert!(text(&out).contains("--all"), "{}", text(&out));
}

#[test]
fn export_then_import_into_an_empty_store_verifies_and_checks_and_a_tampered_bundle_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = tidy_run(dir.path());
    let out = retrace(&store, &["fork", &format!("{}@5", &run[..8])]);
    assert!(out.status.success(), "{}", text(&out));
    let file = dir.path().join("tidy.bundle");
    let out = retrace(
        &store,
        &[
            "export",
            &run[..8],
            "--with-forks",
            "-o",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 runs"), "{}", text(&out));

    let other = dir.path().join("other");
    let import =
        |store: &Path, file: &Path| retrace(store, &["import", file.to_str().expect("utf-8")]);
    let out = import(&other, &file);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 2 runs"), "{}", text(&out));
    let out = import(&other, &file);
    assert!(
        text(&out).contains("imported 0 runs (0 events)"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("2 already in the store"),
        "{}",
        text(&out)
    );
    for command in [&["verify"][..], &["check", "--all"][..]] {
        let out = retrace(&other, command);
        assert!(out.status.success(), "{command:?}: {}", text(&out));
    }
    let hash = |store: &Path| {
        let out = retrace(store, &["show", &run, "--json"]);
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        shown["state_hash"].as_str().expect("hash").to_owned()
    };
    assert_eq!(hash(&store), hash(&other));

    // one byte of the task changed inside the bundle
    let plain = retrace_tests::zstd_decode(&std::fs::read(&file).expect("bundle"));
    let at = plain
        .windows(b"Summarise this project".len())
        .position(|w| w == b"Summarise this project")
        .expect("the task is in the bundle");
    let mut bad = plain.clone();
    bad[at] = b's';
    let bad_file = dir.path().join("bad.bundle");
    std::fs::write(&bad_file, retrace_tests::zstd_encode(&bad)).expect("write");
    let fresh = dir.path().join("fresh");
    let out = import(&fresh, &bad_file);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains("refusing"), "{message}");
    assert!(message.contains("item "), "{message}");
    assert!(message.contains("nothing was imported"), "{message}");
    assert!(!fresh.exists(), "no store was created for a refused bundle");
}

#[test]
fn the_example_eval_suite_passes_offline_with_junit_and_json_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/evals/suite.toml");
    let store = dir.path().join("store");
    let (junit, json) = (dir.path().join("evals.xml"), dir.path().join("evals.json"));
    let out = retrace(
        &store,
        &[
            "eval",
            suite.to_str().expect("utf-8"),
            "--junit",
            junit.to_str().expect("utf-8"),
            "--json",
            json.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("examples: 3 passed, 0 failed"),
        "{}",
        text(&out)
    );
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(
        xml.contains(r#"tests="3""#) && xml.contains(r#"failures="0""#),
        "{xml}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    assert_eq!(report["passed"], 3);
    assert_eq!(report["cases"][2]["first_divergence"], 13);
    // the recordings came in with the bundle, and every case is a fork that verifies
    let out = retrace(&store, &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).lines().filter(|l| l.starts_with("ok")).count() == 5,
        "{}",
        text(&out)
    );
    let out = retrace(&store, &["check", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    // a second time: the bundle is already in, the cases run again as new forks
    let out = retrace(&store, &["eval", suite.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
}

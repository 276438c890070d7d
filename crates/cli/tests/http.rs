//! Full agent runs against loopback OpenAI-compatible and Anthropic servers, through the
//! `retrace` binary: failed attempts are recorded and retried (with `Retry-After`
//! honoured) or fail the run, tools run, cost comes from the spec's prices, a recorded
//! session replays as a cassette, and afterwards runs verify, show and resume with no
//! server at all. The API key is sent, and found nowhere in the store or the logs.

mod common;

use std::path::Path;
use std::process::Output;

use common::{retrace, text};
use std::time::Duration;

use retrace_tests::loopback::{
    KEY_ENV, Reply, Server, head, key, openai_chunk as chunk, openai_reply, split, sse,
};
use serde_json::{Value, json};

/// Run `retrace run SPEC --input INPUT` off the async threads (the server runs on them),
/// with every log on (`RUST_LOG=trace`, HTTP client included): the key must not show.
async fn run_agent(store: &Path, spec: &Path, input: &str) -> Output {
    let (store, spec, input) = (store.to_owned(), spec.to_owned(), input.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        common::command(&store)
            .args(["run", spec.to_str().expect("utf-8"), "--input", &input])
            .env("RUST_LOG", "trace")
            .output()
            .expect("run the retrace binary")
    })
    .await
    .expect("join");
    assert!(
        !text(&out).contains(&key()),
        "the API key reached the output or the logs"
    );
    out
}

fn error(status: &str, headers: &[(&str, &str)], message: &str) -> Reply {
    let mut bytes = head(
        status,
        &[&[("content-type", "application/json")], headers].concat(),
    );
    bytes.extend_from_slice(
        json!({"error": {"message": message}})
            .to_string()
            .as_bytes(),
    );
    Reply::Pieces(vec![bytes], Duration::ZERO)
}

/// The server's answers, one per connection: two 500s, a reply calling `fs.read` (in
/// 40-byte writes), a 429 asking for a second, and the final answer.
fn script() -> Vec<Reply> {
    let read_call = json!({"index": 0, "id": "call_1", "type": "function",
        "function": {"name": "fs__read", "arguments": "{\"path\": \"README.md\"}"}});
    vec![
        error("500 Internal Server Error", &[], "the server had an error"),
        error("500 Internal Server Error", &[], "the server had an error"),
        Reply::Pieces(
            split(
                &sse(&[
                    (None, chunk(&json!({"content": "Let me read it."}), None)),
                    (None, chunk(&json!({"tool_calls": [read_call]}), None)),
                    (None, chunk(&json!({}), Some("tool_calls"))),
                    (None, json!({"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 20}}).to_string()),
                    (None, "[DONE]".into()),
                ]),
                40,
            ),
            Duration::from_millis(1),
        ),
        error("429 Too Many Requests", &[("retry-after", "1")], "slow down"),
        Reply::Pieces(
            vec![sse(&[
                (None, chunk(&json!({"content": "The project says hello."}), Some("stop"))),
                (None, json!({"choices": [], "usage": {"prompt_tokens": 2000, "completion_tokens": 10}}).to_string()),
                (None, "[DONE]".into()),
            ])],
            Duration::ZERO,
        ),
    ]
}

/// An agent that reads files, on `provider` at `url`, with prices.
fn agent(dir: &Path, provider: &str, url: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    std::fs::write(dir.join("ws/README.md"), "# Hello\n").expect("write");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"reader\"\nsystem = \"Summarise.\"\nworkspace = \"ws\"\n\
             [model]\nprovider = \"{provider}\"\nname = \"test-model\"\nbase_url = \"{url}\"\n\
             api_key_env = \"{KEY_ENV}\"\ntemperature = 0\n\
             [model.price]\ninput_usd_per_mtok = 2.5\noutput_usd_per_mtok = 10.0\n\
             [context]\nwindow_tokens = 32000\n\
             [tools]\nallow = [\"fs.read\"]\n",
        ),
    )
    .expect("write spec");
    spec
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_runs_against_an_openai_compatible_server_and_replays_without_it() {
    let server = Server::start(script()).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), "openai", &server.url("/v1"));
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "Summarise the readme").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("succeeded"), "{}", text(&out));
    assert!(
        text(&out).contains("The project says hello."),
        "streamed text is shown"
    );

    // what the server saw: four requests, the key, and the tool result in the last one
    let requests = server.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {}", key()))
    );
    let last = requests[4].json();
    let messages = last["messages"].as_array().expect("messages");
    assert_eq!(messages.last().expect("one")["role"], "tool");
    assert!(
        messages.last().expect("one")["content"]
            .as_str()
            .expect("text")
            .contains("# Hello")
    );
    drop(server);

    // what was recorded: every failed attempt, then the replies
    let log = retrace(&store, &["runs", "--json"]);
    let listed: Value = serde_json::from_slice(&log.stdout).expect("json");
    let run = listed["run"].as_str().expect("run id").to_owned();
    let log = retrace(&store, &["log", &run, "--json"]);
    let events: Vec<Value> = String::from_utf8_lossy(&log.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "model_requested",
            "model_failed",
            "model_requested",
            "model_failed",
            "model_requested",
            "model_responded",
            "tool_calls_proposed",
            "tool_requested",
            "tool_returned",
            "model_requested",
            "model_failed",
            "model_requested",
            "model_responded",
            "run_finished"
        ]
    );
    assert_eq!(events[2]["transient"], true);
    assert_eq!(events[4]["transient"], true);
    let attempts: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "model_requested")
        .map(|e| &e["attempt"])
        .collect();
    assert_eq!(attempts, [1, 2, 3, 1, 2], "each retry is the next attempt");
    let shown = retrace(&store, &["show", &format!("{run}@4"), "--json"]);
    assert!(
        text(&shown).contains("HTTP 500: the server had an error"),
        "{}",
        text(&shown)
    );
    // Retry-After: 1 was honoured between the 429 and the next attempt
    let waited = events[12]["at"].as_u64().expect("at") - events[11]["at"].as_u64().expect("at");
    assert!(waited >= 1_000, "waited {waited} ms");
    let shown = retrace(&store, &["show", &format!("{run}@11"), "--json"]);
    assert!(
        text(&shown).contains("HTTP 429: slow down"),
        "{}",
        text(&shown)
    );
    // usage and cost from the spec's prices: 3000 in × 2.5 + 30 out × 10 µ$
    assert_eq!(listed["totals"]["input_tokens"], 3000);
    assert_eq!(listed["totals"]["cost_micro_usd"], 7_800);

    // offline: verify, show and resume need no server
    let out = retrace(&store, &["verify", &run]);
    assert!(out.status.success(), "{}", text(&out));
    let out = retrace(&store, &["resume", &run]);
    assert!(
        out.status.success() && text(&out).contains("succeeded"),
        "{}",
        text(&out)
    );
    assert_eq!(
        retrace_tests::files_containing(&store, &key()),
        Vec::<std::path::PathBuf>::new(),
        "the API key reached the store"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_key_fails_the_run_at_once_with_the_providers_message() {
    let server = Server::start(vec![error(
        "401 Unauthorized",
        &[],
        "Incorrect API key provided",
    )])
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), "openai", &server.url("/v1"));
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "go").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        server.requests().len(),
        1,
        "no retry of a permanent failure"
    );
    let listed: Value =
        serde_json::from_slice(&retrace(&store, &["runs", "--json"]).stdout).expect("json");
    assert_eq!(listed["status"]["outcome"], "failed");
    let run = listed["run"].as_str().expect("run id");
    let shown = text(&retrace(&store, &["show", run, "--json"]));
    assert!(shown.contains("retrying will not help"), "{shown}");
    assert!(
        shown.contains("HTTP 401: Incorrect API key provided"),
        "{shown}"
    );
    assert!(!shown.contains(&key()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overflow_compaction_cannot_help_fails_the_run_saying_so_and_is_recorded_as_such() {
    let server = Server::start(vec![error(
        "400 Bad Request",
        &[],
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130415 tokens. Please reduce the length of the messages.",
    )])
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), "openai", &server.url("/v1"));
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "go").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // the request held nothing but the task: nothing to compact, so no second request
    assert_eq!(server.requests().len(), 1, "not retried as it is");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.lines().any(|l| l.starts_with(
            "reason: the request exceeded the model's context window (130415 > 128000 tokens); \
             compacting cannot make the request fit: what cannot be compacted away (the system \
             prompt, tool catalog, task and summary, or with them a message too large to \
             summarize) takes about"
        ) && l
            .contains(": openai: HTTP 400: This model's maximum context length")),
        "{}",
        text(&out)
    );
    let listed: Value =
        serde_json::from_slice(&retrace(&store, &["runs", "--json"]).stdout).expect("json");
    let run = listed["run"].as_str().expect("run id");
    let log = retrace(&store, &["log", run, "--json"]);
    let failed = String::from_utf8_lossy(&log.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .find(|e| e["kind"] == "model_failed")
        .expect("a model_failed event");
    // with a token budget an overflow is worth retrying once compacted
    assert_eq!(failed["transient"], true);
    let seq = failed["seq"].as_u64().expect("seq");
    let shown: Value = serde_json::from_slice(
        &retrace(&store, &["show", &format!("{run}@{seq}"), "--json"]).stdout,
    )
    .expect("json");
    let blob = shown.to_string();
    assert!(
        blob.contains(r#""class":"context_overflow""#)
            && blob.contains(r#""limit":128000"#)
            && blob.contains(r#""requested":130415"#),
        "{shown:#}"
    );
}

/// The Anthropic messages stream of one reply: `text`, then a `tool_use` of `fs.read` if
/// `read` names a file, with the input JSON in two deltas.
fn anthropic_reply(text: &str, read: Option<&str>, usage: (u64, u64)) -> Reply {
    let ev = |name: &'static str, mut data: Value| {
        data["type"] = json!(name);
        (Some(name), data.to_string())
    };
    let mut events = vec![
        ev(
            "message_start",
            json!({"message": {"usage": {"input_tokens": usage.0, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        ev("content_block_stop", json!({"index": 0})),
    ];
    if let Some(path) = read {
        let input = json!({"path": path}).to_string();
        let (a, b) = input.split_at(5);
        events.extend([
            ev("content_block_start", json!({"index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "fs__read", "input": {}}})),
            ev("content_block_delta", json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": a}})),
            ev("content_block_delta", json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": b}})),
            ev("content_block_stop", json!({"index": 1})),
        ]);
    }
    let reason = if read.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    events.push(ev(
        "message_delta",
        json!({"delta": {"stop_reason": reason}, "usage": {"output_tokens": usage.1}}),
    ));
    events.push(ev("message_stop", json!({})));
    Reply::Pieces(split(&sse(&events), 64), Duration::from_millis(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_runs_against_an_anthropic_server_and_replays_without_it() {
    let server = Server::start(vec![
        error("529 Overloaded", &[], "Overloaded"),
        anthropic_reply("Let me read it.", Some("README.md"), (900, 15)),
        anthropic_reply("The project says hello.", None, (1000, 8)),
    ])
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), "anthropic", &server.url(""));
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "Summarise the readme").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("The project says hello."),
        "{}",
        text(&out)
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1].header("x-api-key"), Some(key()));
    let last = requests[2].json();
    let turn = &last["messages"]
        .as_array()
        .expect("messages")
        .last()
        .expect("one")["content"][0];
    assert_eq!(turn["type"], "tool_result");
    assert!(turn["content"].as_str().expect("text").contains("# Hello"));
    drop(server);

    let listed: Value =
        serde_json::from_slice(&retrace(&store, &["runs", "--json"]).stdout).expect("json");
    let run = listed["run"].as_str().expect("run id").to_owned();
    assert_eq!(listed["totals"]["model_failures"], 1);
    assert_eq!(listed["totals"]["tool_calls"], 1);
    // 1900 in × 2.5 + 23 out × 10 µ$
    assert_eq!(listed["totals"]["cost_micro_usd"], 4_980);
    for args in [vec!["verify", run.as_str()], vec!["resume", run.as_str()]] {
        let out = retrace(&store, &args);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(retrace_tests::files_containing(&store, &key()).is_empty());
}

/// Kinds and final output of the only run in `store`.
fn kinds_and_output(store: &Path) -> (Vec<String>, String) {
    let listed: Value =
        serde_json::from_slice(&retrace(store, &["runs", "--json"]).stdout).expect("json");
    let run = listed["run"].as_str().expect("run id");
    let log = retrace(store, &["log", run, "--json"]);
    let kinds = String::from_utf8_lossy(&log.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["kind"]
                .as_str()
                .expect("kind")
                .to_owned()
        })
        .collect();
    let shown: Value =
        serde_json::from_slice(&retrace(store, &["show", run, "--json"]).stdout).expect("json");
    let output = shown["payloads"].to_string();
    (kinds, output)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_live_session_replays_offline_as_a_cassette() {
    let server = Server::start(vec![
        error("503 Service Unavailable", &[], "try later"),
        script().remove(2),
        script().remove(4),
    ])
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let live = agent(dir.path(), "openai", &server.url("/v1"));
    let cassette = dir.path().join("recorded.json");
    let (store, spec, file) = (dir.path().join("live"), live.clone(), cassette.clone());
    let out = tokio::task::spawn_blocking(move || {
        let args = [
            "run",
            spec.to_str().expect("utf-8"),
            "--input",
            "Summarise the readme",
            "--record-cassette",
            file.to_str().expect("utf-8"),
        ];
        retrace(&store, &args)
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", text(&out));
    drop(server);

    let recorded: Value =
        serde_json::from_slice(&std::fs::read(&cassette).expect("cassette")).expect("json");
    let replies = recorded["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[0]["error"]["transient"], true);
    assert_eq!(replies[1]["tool_calls"][0]["name"], "fs.read");
    assert!(
        !std::fs::read_to_string(&cassette)
            .expect("text")
            .contains(&key())
    );

    // the same agent on the scripted provider, playing the cassette: no server
    let offline = dir.path().join("offline.toml");
    let spec = std::fs::read_to_string(&live).expect("spec");
    let spec = spec
        .lines()
        .map(|l| match l.split('=').next().map(str::trim) {
            Some("provider") => "provider = \"scripted\"\ncassette = \"recorded.json\"".to_owned(),
            Some("base_url" | "api_key_env") => String::new(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&offline, spec).expect("write");
    let out = run_agent(
        &dir.path().join("offline"),
        &offline,
        "Summarise the readme",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        kinds_and_output(&dir.path().join("live")),
        kinds_and_output(&dir.path().join("offline")),
        "the replay made the same calls and gave the same answer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_and_a_cut_stream_are_retried_and_a_malformed_reply_fails_the_run() {
    let cut = sse(&[(None, chunk(&json!({"content": "The readme"}), None))]);
    let mut malformed = head("200 OK", &[("content-type", "text/event-stream")]);
    malformed.extend_from_slice(b"data: {\"choices\": [\n\n");
    let server = Server::start(vec![
        Reply::Hang,
        Reply::Pieces(vec![cut], Duration::ZERO),
        Reply::Pieces(vec![malformed], Duration::ZERO),
    ])
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), "openai", &server.url("/v1"));
    let text_of_spec = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(
        &spec,
        text_of_spec.replace("temperature = 0\n", "temperature = 0\ntimeout_secs = 1\n"),
    )
    .expect("write");
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "go").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let listed: Value =
        serde_json::from_slice(&retrace(&store, &["runs", "--json"]).stdout).expect("json");
    let run = listed["run"].as_str().expect("run id").to_owned();
    let log = retrace(&store, &["log", &run, "--json"]);
    let failures: Vec<(bool, u64)> = String::from_utf8_lossy(&log.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|e| e["kind"] == "model_failed")
        .map(|e| {
            (
                e["transient"].as_bool().expect("bool"),
                e["seq"].as_u64().expect("seq"),
            )
        })
        .collect();
    let transient: Vec<bool> = failures.iter().map(|f| f.0).collect();
    assert_eq!(transient, [true, true, false]);
    let shown = |seq: u64| {
        text(&retrace(
            &store,
            &["show", &format!("{run}@{seq}"), "--json"],
        ))
    };
    assert!(shown(failures[0].1).contains("no complete reply within 1 s"));
    assert!(shown(failures[1].1).contains("ended before the reply was complete"));
    assert!(shown(failures[2].1).contains("malformed response"));
    assert_eq!(listed["status"]["outcome"], "failed");
}

/// Check the run in `store`: its first reply holds the case's thinking apart from its
/// (empty) text, and no model call failed. The run and the reply's seq.
fn the_thinking_reply_is_recorded(store: &Path) -> (String, u64) {
    let listed: Value =
        serde_json::from_slice(&retrace(store, &["runs", "--json"]).stdout).expect("json");
    let run = listed["run"].as_str().expect("run id").to_owned();
    assert_eq!(listed["totals"]["model_failures"], 0);
    let reply_seq = common::log_json(store, &run)
        .iter()
        .find(|e| e["kind"] == "model_responded")
        .expect("a reply")["seq"]
        .as_u64()
        .expect("seq");
    let shown = retrace(store, &["show", &format!("{run}@{reply_seq}"), "--json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("json");
    let reply = shown["payloads"]
        .as_object()
        .expect("payloads")
        .values()
        .next()
        .expect("the reply")
        .clone();
    assert_eq!(reply["text"], "");
    assert_eq!(
        reply["reasoning"][0]["text"],
        "The user wants the current time. I should call the tool."
    );
    assert!(
        reply["reasoning"][0]["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with(CASE_SIGNATURE)),
        "{reply}"
    );
    (run, reply_seq)
}

/// The thinking block's signature in `shared/cases/wire/anthropic-thinking-with-tool-use.sse`.
const CASE_SIGNATURE: &str = "EpYBCkYIBRgCKkBREPROSIGNATUREPLACEHOLDER";

/// As the Anthropic API does with thinking on: a 400 for a request whose assistant turn
/// that called a tool does not start with the signed thinking block it was given.
fn refuse_without_thinking(request: &retrace_tests::loopback::Request) -> Option<Vec<u8>> {
    let body = request.json();
    let turn = body["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "assistant")?
        .clone();
    let first = &turn["content"][0];
    let signed = first["type"] == "thinking"
        && first["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with(CASE_SIGNATURE));
    if signed {
        return None;
    }
    let mut bytes = head("400 Bad Request", &[("content-type", "application/json")]);
    bytes.extend_from_slice(
        json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks)."}})
        .to_string()
        .as_bytes(),
    );
    Some(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_thinking_is_recorded_shown_apart_and_sent_back_so_the_second_call_passes() {
    let case = retrace_tests::wire_case_bytes("anthropic-thinking-with-tool-use.sse");
    let mut first = head("200 OK", &[("content-type", "text/event-stream")]);
    first.extend_from_slice(&case);
    let dir = tempfile::tempdir().expect("temp dir");
    // the case served whole, then in writes of 1 to 7 bytes
    let mut last = None;
    for size in [first.len(), 1, 2, 3, 4, 5, 6, 7] {
        let server = Server::start(vec![
            Reply::Pieces(split(&first, size), Duration::ZERO),
            Reply::Gate(
                refuse_without_thinking,
                Box::new(anthropic_reply("It is noon.", None, (700, 5))),
            ),
        ])
        .await;
        let home = dir.path().join(size.to_string());
        let spec = agent(&home, "anthropic", &server.url(""));
        let store = home.join("store");
        let out = run_agent(&store, &spec, "What time is it?").await;
        assert!(out.status.success(), "{size}-byte writes: {}", text(&out));
        assert!(text(&out).contains("It is noon."), "{}", text(&out));
        assert_eq!(
            server.requests().len(),
            2,
            "no call was refused and retried"
        );
        let recorded = the_thinking_reply_is_recorded(&store);
        last = Some((store, recorded));
    }
    let (store, (run, reply_seq)) = last.expect("served");
    // shown to a person: reasoning apart from the answer
    let shown = text(&retrace(&store, &["show", &format!("{run}@{reply_seq}")]));
    let reasoning_at = shown.find("reasoning (signed):").expect("reasoning shown");
    let thought_at = shown
        .find("│ The user wants the current time.")
        .expect("the thought");
    let call_at = shown
        .find("calls toolu_repro12a current_date_time")
        .expect("the call");
    assert!(reasoning_at < thought_at && thought_at < call_at, "{shown}");
    // and the run replays offline with the same request rebuilt
    for args in [vec!["verify", run.as_str()], vec!["check", run.as_str()]] {
        let out = retrace(&store, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn show_request_rebuilds_exactly_the_body_each_model_call_sent() {
    // a failed attempt, two replies reading files (the second output too long to send
    // whole), then the answer: four requests, three model calls that were answered
    let server = Server::start(vec![
        error("500 Internal Server Error", &[], "the server had an error"),
        openai_reply("Let me read it.", Some(("call_1", "README.md")), None),
        openai_reply("And the big one.", Some(("call_2", "big.txt")), None),
        openai_reply("Done.", None, None),
    ])
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), "openai", &server.url("/v1"));
    std::fs::write(dir.path().join("ws/big.txt"), "x".repeat(20_000)).expect("write");
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "Summarise the readme").await;
    assert!(out.status.success(), "{}", text(&out));
    let received = server.requests();
    drop(server);
    let run = common::run_id_of(&out);

    let events = common::log_json(&store, &run);
    let seq_of = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| format!("{run}@{}", e["seq"]))
            .collect()
    };
    let asked = seq_of("model_requested");
    assert_eq!((asked.len(), received.len()), (4, 4));
    let rebuilt = |at: &str| -> (String, retrace_providers::ModelRequest) {
        let out = retrace(&store, &["show", at, "--request", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let json = String::from_utf8(out.stdout).expect("utf-8");
        let request = serde_json::from_str(&json).expect("a ModelRequest");
        (json, request)
    };
    for (at, got) in asked.iter().zip(&received) {
        let (_, request) = rebuilt(at);
        let body = retrace_providers::openai::body(&request);
        assert_eq!(body, got.json(), "{at}: the rebuilt request differs");
        assert_eq!(body.to_string(), got.body, "{at}: not byte for byte");
    }

    // the last call: the task, both replies' calls, their results (the long one as the
    // preview the model saw)
    let (_, last) = rebuilt(&asked[3]);
    assert_eq!(last.system, "Summarise.");
    let roles: Vec<String> = last
        .messages
        .iter()
        .map(|m| serde_json::to_value(&**m).expect("json")["role"].to_string())
        .collect();
    assert_eq!(
        roles,
        [
            "\"user\"",
            "\"assistant\"",
            "\"tool\"",
            "\"assistant\"",
            "\"tool\""
        ]
    );
    let json = serde_json::to_string(&last).expect("json");
    for needle in [
        "Summarise the readme",
        "call_1",
        "call_2",
        "# Hello",
        "20075 bytes, 21 lines; shown: lines 1-5.",
        "Read more: artifact.read {\\\"handle\\\":",
    ] {
        assert!(json.contains(needle), "{needle} missing from {json}");
    }

    // a reply or failure shows its call's request
    let (failed, _) = rebuilt(&seq_of("model_failed")[0]);
    assert_eq!(failed, rebuilt(&asked[0]).0);
    let (answered, _) = rebuilt(&seq_of("model_responded")[2]);
    assert_eq!(answered, rebuilt(&asked[3]).0);

    // for people: system, tool names, and what is new since the call before marked +
    let out = retrace(&store, &["show", &asked[3], "--request"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("tools   fs.read"), "{shown}");
    assert!(shown.contains("│ Summarise."), "{shown}");
    assert!(
        shown.contains("2 new since the previous model call"),
        "{shown}"
    );
    assert!(shown.contains("    3 tool [call_1]"), "{shown}");
    assert!(shown.contains("+   4 assistant"), "{shown}");
    assert!(shown.contains("+   5 tool [call_2]"), "{shown}");
    assert!(shown.contains("calls call_2 fs.read"), "{shown}");
    let out = retrace(&store, &["show", &asked[1], "--request"]);
    assert!(
        text(&out).contains("0 new since the previous model call"),
        "a retry adds nothing: {}",
        text(&out)
    );

    // any other event is an error naming it and the nearest model call
    let returned = &seq_of("tool_returned")[0];
    let out = retrace(&store, &["show", returned, "--request"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("is a tool_returned event, not a model call")
            && said.contains("the nearest model call is at seq")
            && said.contains("--request`"),
        "{said}"
    );
}

//! What real OpenAI-compatible servers send (issue 21), through the `retrace` binary against
//! a loopback server: the case files of `shared/cases/wire/` (beside the clone), served in
//! 1-7 byte writes, and what the run records from each (`retrace log --json`,
//! `retrace show --json`), not only how it ends.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{retrace, text};
use retrace_tests::loopback::{KEY_ENV, Reply, Request, Server, head, key, sse, varied_split};
use serde_json::{Value, json};

/// An event-stream response with `body`, in writes of 1, 2, … 7 bytes.
fn small_writes(body: &[u8]) -> Reply {
    let mut bytes = head("200 OK", &[("content-type", "text/event-stream")]);
    bytes.extend_from_slice(body);
    Reply::Pieces(varied_split(&bytes), Duration::ZERO)
}

/// A final answer `text`, streamed.
fn answer(text: &str) -> Reply {
    Reply::Pieces(
        vec![sse(&[
            (
                None,
                json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]})
                    .to_string(),
            ),
            (None, "[DONE]".into()),
        ])],
        Duration::ZERO,
    )
}

/// An agent with `fs.read` on the `openai` provider at `url`.
fn agent(dir: &Path, url: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    std::fs::write(dir.join("ws/README.md"), "# Hello\n").expect("write");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"wire\"\nsystem = \"Help.\"\nworkspace = \"ws\"\n\
             [model]\nprovider = \"openai\"\nname = \"test-model\"\nbase_url = \"{url}\"\n\
             api_key_env = \"{KEY_ENV}\"\n[context]\nwindow_tokens = 32000\n[tools]\nallow = [\"fs.read\"]\n",
        ),
    )
    .expect("write spec");
    spec
}

/// Run the agent against `replies`; the store, the run id, the output and the requests.
async fn run(replies: Vec<Reply>) -> (tempfile::TempDir, PathBuf, String, Output, Vec<Request>) {
    let server = Server::start(replies).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = agent(dir.path(), &server.url("/v1"));
    let store = dir.path().join("store");
    let (s, p) = (store.clone(), spec.clone());
    let out = tokio::task::spawn_blocking(move || {
        common::command(&s)
            .args(["run", p.to_str().expect("utf-8"), "--input", "go"])
            .output()
            .expect("run the retrace binary")
    })
    .await
    .expect("join");
    assert!(!text(&out).contains(&key()), "the key leaked");
    let listed: Value =
        serde_json::from_slice(&retrace(&store, &["runs", "--json"]).stdout).expect("json");
    let id = listed["run"].as_str().expect("run id").to_owned();
    let requests = server.requests();
    (dir, store, id, out, requests)
}

/// The payload `show RUN@SEQ --json` gives for the event of `kind` (the first, or `nth`).
fn payload(store: &Path, run: &str, kind: &str, nth: usize) -> Value {
    let log = common::log_json(store, run);
    let seq = log
        .iter()
        .filter(|e| e["kind"] == kind)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {kind} #{nth} in {log:?}"))["seq"]
        .as_u64()
        .expect("seq");
    let shown = retrace(store, &["show", &format!("{run}@{seq}"), "--json"]);
    assert!(shown.status.success(), "{}", text(&shown));
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("json");
    shown["payloads"]
        .as_object()
        .expect("payloads")
        .values()
        .next()
        .expect("a payload")
        .clone()
}

fn kinds(store: &Path, run: &str) -> Vec<String> {
    common::log_json(store, run)
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}

/// The calls a recorded reply proposed, as `(id, name, arguments)`.
fn calls(reply: &Value) -> Vec<(String, String, Value)> {
    reply["tool_calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c["name"].as_str().expect("name").to_owned(),
                c["arguments"].clone(),
            )
        })
        .collect()
}

fn verifies(store: &Path, run: &str) {
    let out = retrace(store, &["verify", run]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn case_parallel_calls_at_one_index_are_recorded_as_two_calls() {
    let (_dir, store, run, out, requests) = run(vec![
        small_writes(&retrace_tests::wire_case_bytes(
            "openai-parallel-calls-same-index.sse",
        )),
        answer("Both written."),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let reply = payload(&store, &run, "model_responded", 0);
    assert_eq!(
        calls(&reply),
        [
            (
                "call_repro02a".to_owned(),
                "file_write".to_owned(),
                json!({"filePath": "hello.py", "content": "print(\"hello\")"})
            ),
            (
                "call_repro02b".to_owned(),
                "file_write".to_owned(),
                json!({"filePath": "world.py", "content": "print(\"world\")"})
            ),
        ]
    );
    assert_eq!(reply["stop_reason"], "stop");
    // both calls were answered (there is no such tool here: the model is told, per call)
    let second = requests[1].json();
    let results: Vec<&Value> = second["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| &m["tool_call_id"])
        .collect();
    assert_eq!(results, [&json!("call_repro02a"), &json!("call_repro02b")]);
    verifies(&store, &run);
}

#[tokio::test(flavor = "multi_thread")]
async fn case_arguments_as_an_object_are_recorded_as_given() {
    let (_dir, store, run, out, _) = run(vec![
        small_writes(&retrace_tests::wire_case_bytes(
            "openai-arguments-as-object.sse",
        )),
        answer("It is mild."),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let reply = payload(&store, &run, "model_responded", 0);
    assert_eq!(
        calls(&reply),
        [(
            "call_repro03a".to_owned(),
            "get_weather".to_owned(),
            json!({"location": "Paris", "unit": "celsius"})
        )]
    );
    assert!(kinds(&store, &run).contains(&"tool_calls_proposed".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_that_are_not_json_reach_the_model_as_a_tool_error_and_it_retries() {
    let call = |args: &str| {
        Reply::Pieces(
            vec![sse(&[
                (
                    None,
                    json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "fs__read", "arguments": args}}]}, "finish_reason": "tool_calls"}]})
                    .to_string(),
                ),
                (None, "[DONE]".into()),
            ])],
            Duration::ZERO,
        )
    };
    let (_dir, store, run, out, requests) = run(vec![
        call("path=README.md"),
        call("{\"path\": \"README.md\"}"),
        answer("It says hello."),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // recorded as the model sent it, and refused by the tool with a reason
    let reply = payload(&store, &run, "model_responded", 0);
    assert_eq!(reply["tool_calls"][0]["arguments"], "path=README.md");
    let failed = payload(&store, &run, "tool_returned", 0);
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("arguments are not a JSON object: path=README.md")),
        "{failed}"
    );
    let told = requests[1].json();
    let told = told["messages"]
        .as_array()
        .expect("messages")
        .last()
        .expect("a message")
        .clone();
    assert_eq!(told["role"], "tool");
    assert!(
        told["content"]
            .as_str()
            .expect("text")
            .contains("arguments are not a JSON object"),
        "{told}"
    );
    // the retry with good arguments read the file
    let read = payload(&store, &run, "tool_returned", 1);
    assert!(read.to_string().contains("# Hello"), "{read}");
    verifies(&store, &run);
}

/// DeepSeek's reasoning in the case file.
const CASE_REASONING: &str = "The user wants the weather in San Francisco.";

/// As DeepSeek's API does in thinking mode: a 400 for a request whose assistant turn with
/// tool calls does not carry its `reasoning_content`.
fn refuse_without_reasoning(request: &Request) -> Option<Vec<u8>> {
    let body = request.json();
    let turn = body["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "assistant" && m.get("tool_calls").is_some())?
        .clone();
    if turn["reasoning_content"] == CASE_REASONING {
        return None;
    }
    let mut bytes = head("400 Bad Request", &[("content-type", "application/json")]);
    bytes.extend_from_slice(
        json!({"error": {"message": "Missing `reasoning_content` field in the assistant message at message index 2. For more information, please refer to https://api-docs.deepseek.com/guides/thinking_mode#tool-calls",
            "type": "invalid_request_error", "param": null, "code": "invalid_request_error"}})
        .to_string()
        .as_bytes(),
    );
    Some(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn case_deepseek_reasoning_is_recorded_and_sent_back_so_the_second_call_passes() {
    let (_dir, store, run, out, requests) = run(vec![
        small_writes(&retrace_tests::wire_case_bytes(
            "openai-reasoning-content-tool-call.sse",
        )),
        Reply::Gate(refuse_without_reasoning, Box::new(answer("It is foggy."))),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("It is foggy."));
    assert!(
        !text(&out).contains("The user wants"),
        "reasoning is not streamed as the answer"
    );
    assert_eq!(requests.len(), 2, "the second call was not refused");
    let log = kinds(&store, &run);
    assert!(!log.contains(&"model_failed".to_owned()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("run_finished"));
    // recorded: reasoning apart from the (empty) answer, with its tokens
    let reply = payload(&store, &run, "model_responded", 0);
    assert_eq!(reply["text"], "");
    assert_eq!(reply["reasoning"], json!([{"text": CASE_REASONING}]));
    assert_eq!(reply["usage"]["reasoning_tokens"], 39);
    assert_eq!(
        calls(&reply),
        [(
            "call_00_repro09abc".to_owned(),
            "weather".to_owned(),
            json!({"location": "San Francisco"})
        )]
    );
    // the request rebuilt from the log is the one sent
    verifies(&store, &run);
    let out = retrace(&store, &["check", &run]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn case_refusal_fails_the_run_with_the_refusal_recorded() {
    let (_dir, store, run, out, requests) = run(vec![small_writes(
        &retrace_tests::wire_case_bytes("openai-refusal.sse"),
    )])
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(requests.len(), 1, "a refusal is not retried");
    let log = kinds(&store, &run);
    assert_eq!(
        log,
        [
            "run_started",
            "model_requested",
            "model_failed",
            "run_finished"
        ]
    );
    let failed = payload(&store, &run, "model_failed", 0);
    assert!(
        failed["error"].as_str().is_some_and(
            |e| e.contains("the model refused: I'm sorry, but I can't help with that.")
        ),
        "{failed}"
    );
    let listed: Value =
        serde_json::from_slice(&retrace(&store, &["runs", "--json"]).stdout).expect("json");
    assert_eq!(listed["status"]["outcome"], "failed");
    let finished = payload(&store, &run, "run_finished", 0);
    assert!(
        finished.to_string().contains("the model refused"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_cut_at_the_token_limit_fails_the_run_with_its_text() {
    let cut = Reply::Pieces(
        vec![sse(&[
            (
                None,
                json!({"choices": [{"index": 0, "delta": {"content": "The summary is"}, "finish_reason": "length"}]})
                    .to_string(),
            ),
            (None, "[DONE]".into()),
        ])],
        Duration::ZERO,
    );
    let (_dir, store, run, out, _) = run(vec![cut]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let failed = payload(&store, &run, "model_failed", 0);
    let error = failed["error"].as_str().expect("error");
    assert!(
        error.contains("finish_reason \"length\"") && error.contains("The summary is"),
        "{error}"
    );
}

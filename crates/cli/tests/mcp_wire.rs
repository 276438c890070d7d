//! What real MCP servers send (issue 21, kinds 6 and 7), through the `retrace` binary: a
//! fake stdio server (`tests/fake_mcp_server.py`) replays the case files of
//! `shared/cases/wire/` (beside the clone) and variants of the same kinds, and what the run
//! records from each is asserted (`retrace tools --json`, `retrace log --json`,
//! `retrace show --json`), with the names the OpenAI-compatible and Anthropic request bodies
//! carry for the tools.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use common::{retrace, text};
use retrace_providers::http::WireNames;
use retrace_providers::{ChatMessage, ModelRequest, ToolCall, ToolDef};
use retrace_tests::loopback::{KEY_ENV, Reply, Server, sse};
use serde_json::{Value, json};

/// `lines` (JSON-RPC responses, in the case files' format) as a case file in `dir`.
fn variant(dir: &Path, lines: &[Value]) -> PathBuf {
    let path = dir.join("variant.jsonl");
    let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    std::fs::write(&path, text).expect("write");
    path
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-06-18",
        "capabilities": {"tools": {}}, "serverInfo": {"name": "variant", "version": "0"}}})
}

fn listing(names: &[&str]) -> Value {
    let tools: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "description": format!("tool {n}"), "inputSchema": {"type": "object"}}))
        .collect();
    json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})
}

fn call_result(content: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "result": {"content": content, "isError": false}})
}

/// An agent whose MCP server `work` replays `jsonl` (logging what it is sent to `dir/sent`),
/// its model as `model` says (TOML lines of `[model]`), every `mcp.work.*` call allowed.
fn agent(dir: &Path, jsonl: &Path, model: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fake_mcp_server.py");
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    let spec = dir.join("agent.toml");
    let args = json!([script, jsonl, dir.join("sent")]);
    std::fs::write(
        &spec,
        format!(
            "name = \"mcp-wire\"\nsystem = \"Use the tools.\"\nworkspace = \"ws\"\n\
             [model]\n{model}\n\
             [[mcp]]\nname = \"work\"\ncommand = \"python3\"\nargs = {args}\n\
             [[policy]]\ntool = \"mcp.work.*\"\naction = \"allow\"\n"
        ),
    )
    .expect("write spec");
    spec
}

/// A scripted model playing `replies`.
fn scripted(dir: &Path, replies: &Value) -> String {
    std::fs::write(
        dir.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("cassette");
    "provider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"".to_owned()
}

/// Every tool `retrace tools SPEC --json` lists, as sent to a model (name, description,
/// schema), and the `wire` name it reports for each.
fn offered(store: &Path, spec: &Path) -> (Vec<ToolDef>, Vec<String>) {
    let out = retrace(store, &["tools", spec.to_str().expect("utf-8"), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).expect("a JSON line");
            (
                ToolDef {
                    name: line["name"].as_str().expect("name").to_owned(),
                    description: line["description"].as_str().expect("text").to_owned(),
                    parameters: line["schema"].clone(),
                },
                line["wire"].as_str().expect("wire").to_owned(),
            )
        })
        .unzip()
}

fn run(store: &Path, spec: &Path) -> (Output, String) {
    let out = common::command(store)
        .args(["run", spec.to_str().expect("utf-8"), "--input", "go"])
        .output()
        .expect("run the retrace binary");
    let listed: Value =
        serde_json::from_slice(&retrace(store, &["runs", "--json"]).stdout).expect("json");
    let run = listed["run"].as_str().expect("run id").to_owned();
    (out, run)
}

/// Every event of `kind` in `run` (`retrace log --json`), with the payload `show RUN@SEQ
/// --json` gives for its blob `field`.
fn payloads(store: &Path, run: &str, kind: &str, field: &str) -> Vec<(Value, Value)> {
    common::log_json(store, run)
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| {
            let seq = e["seq"].as_u64().expect("seq");
            let shown = retrace(store, &["show", &format!("{run}@{seq}"), "--json"]);
            assert!(shown.status.success(), "{}", text(&shown));
            let shown: Value = serde_json::from_slice(&shown.stdout).expect("json");
            let blob = e[field].as_str().expect("a blob id");
            let payload = shown["payloads"][blob].clone();
            assert!(!payload.is_null(), "no payload {blob} in {shown}");
            (e, payload)
        })
        .collect()
}

/// The tool results of `run`, in order: (the `tool_returned` event, its output).
fn results(store: &Path, run: &str) -> Vec<(Value, Value)> {
    payloads(store, run, "tool_returned", "output")
}

fn is_error(result: &(Value, Value)) -> bool {
    result.0["is_error"] == true
}

/// The catalog recorded with the run's spec: its tools' names.
fn recorded_catalog(store: &Path, run: &str) -> Vec<String> {
    let (_, spec) = payloads(store, run, "run_started", "spec").remove(0);
    spec["mcp"][0]["catalog"]
        .as_array()
        .expect("catalog")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The model was sent `result` whole: a later request of `run` appends it as the tool
/// message answering its call (a tool message's content is the output's blob; the model
/// reads that JSON).
fn model_saw(store: &Path, run: &str, result: &(Value, Value)) {
    let (event, _) = result;
    let requests = payloads(store, run, "model_requested", "request");
    let sent = requests.iter().any(|(_, request)| {
        request["append"].as_array().is_some_and(|messages| {
            messages.iter().any(|m| {
                m["role"] == "tool"
                    && m["call_id"] == event["call_id"]
                    && m["content"] == event["output"]
            })
        })
    });
    assert!(
        sent,
        "the result of {event} was not sent to the model: {requests:?}"
    );
}

/// What the fake server was sent by `method`, in order.
fn sent(dir: &Path, method: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("sent"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|r| r["method"] == method)
        .collect()
}

fn valid_wire(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The names of `tools` in the OpenAI-compatible and Anthropic request bodies (tools offered
/// and a call of each sent back in the conversation) are valid, distinct, the ones
/// `retrace tools` reported, and map back to their tools exactly.
fn wire_names_hold(tools: &[ToolDef], reported: &[String]) {
    let calls: Vec<ToolCall> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| ToolCall {
            id: format!("c{i}"),
            name: t.name.clone(),
            arguments: json!({}),
        })
        .collect();
    let request = ModelRequest {
        model: "m".into(),
        system: "s".into(),
        messages: vec![
            Arc::new(ChatMessage::User {
                content: "go".into(),
            }),
            Arc::new(ChatMessage::Assistant {
                text: String::new(),
                tool_calls: calls,
                reasoning: Vec::new(),
            }),
        ],
        tools: tools.to_vec(),
        ..ModelRequest::default()
    };
    let names = WireNames::new(tools);
    let openai = retrace_providers::openai::body(&request);
    let anthropic = retrace_providers::anthropic::body(&request);
    let bodies = [
        (
            "openai tools",
            openai["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .map(|t| t["function"]["name"].clone())
                .collect::<Vec<_>>(),
        ),
        (
            "openai calls",
            openai["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .filter_map(|m| m["tool_calls"].as_array())
                .flatten()
                .map(|c| c["function"]["name"].clone())
                .collect(),
        ),
        (
            "anthropic tools",
            anthropic["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .map(|t| t["name"].clone())
                .collect(),
        ),
        (
            "anthropic calls",
            anthropic["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| b["name"].clone())
                .collect(),
        ),
    ];
    for (what, wire) in bodies {
        let wire: Vec<String> = wire
            .iter()
            .map(|n| n.as_str().expect("a name").to_owned())
            .collect();
        assert_eq!(wire, reported, "{what}: the names `retrace tools` reports");
        let distinct: std::collections::BTreeSet<&String> = wire.iter().collect();
        assert_eq!(distinct.len(), wire.len(), "{what}: {wire:?}");
        for (name, tool) in wire.iter().zip(tools) {
            assert!(valid_wire(name), "{what}: `{name}` for `{}`", tool.name);
            assert_eq!(names.tool(name), tool.name, "{what}: `{name}` maps back");
        }
    }
}

/// All five tools of the case: offered, recorded with the spec, sent under valid distinct
/// names, and callable by the scripted model, each reaching the server by its own name.
#[test]
fn case_dotted_tool_names_are_offered_recorded_and_callable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tools = [
        "calendar.respondToEvent",
        "docs.getText",
        "docs_getText",
        "gmail.search",
        "time.getCurrentTime",
    ];
    let calls: Vec<Value> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("c{i}"), "name": format!("mcp.work.{t}"), "arguments": {"documentId": "d1"}}))
        .collect();
    let model = scripted(
        dir.path(),
        &json!([{"tool_calls": calls}, {"text": "It is ten."}]),
    );
    let spec = agent(
        dir.path(),
        &retrace_tests::wire_case("mcp-dotted-tool-names.jsonl"),
        &model,
    );
    let store = dir.path().join("store");
    // every agent with a token budget also has the built-in artifact reader, offered last
    let expected: Vec<String> = tools
        .iter()
        .map(|t| format!("mcp.work.{t}"))
        .chain(["artifact.read".to_owned()])
        .collect();

    let (offered, reported) = offered(&store, &spec);
    let names: Vec<&str> = offered.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, expected);
    wire_names_hold(&offered, &reported);

    let (out, run) = run(&store, &spec);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(recorded_catalog(&store, &run), tools);
    let results = results(&store, &run);
    assert_eq!(results.len(), 5, "{results:?}");
    for result in &results {
        assert!(!is_error(result), "{result:?}");
        model_saw(&store, &run, result);
        assert_eq!(
            &result.1,
            &json!({"content": [{"type": "text", "text": "2025-12-17T10:00:00Z"}]})
        );
    }
    let called: Vec<Value> = sent(dir.path(), "tools/call")
        .iter()
        .map(|r| r["params"]["name"].clone())
        .collect();
    assert_eq!(called, tools.map(Value::from));
    assert!(retrace(&store, &["verify", &run]).status.success());
}

/// Variant: names of 80 characters sharing their first 64, and names with spaces, slashes,
/// Unicode and `__` that sanitize alike: all offered under valid distinct wire names, all
/// callable.
#[test]
fn long_and_foreign_tool_names_get_distinct_wire_names_and_are_callable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let long_a = format!("{}A", "x".repeat(79));
    let long_b = format!("{}B", "x".repeat(79));
    let tools = [
        long_a.as_str(),
        long_b.as_str(),
        "send mail",
        "send/mail",
        "send_mail",
        "docs.getText",
        "docs__getText",
        "отправить",
        "gmail.search",
    ];
    let jsonl = variant(
        dir.path(),
        &[
            initialize(),
            listing(&tools),
            call_result(&json!([{"type": "text", "text": "done"}])),
        ],
    );
    let calls: Vec<Value> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("c{i}"), "name": format!("mcp.work.{t}"), "arguments": {}}))
        .collect();
    let model = scripted(dir.path(), &json!([{"tool_calls": calls}, {"text": "ok"}]));
    let spec = agent(dir.path(), &jsonl, &model);
    let store = dir.path().join("store");

    let (offered, reported) = offered(&store, &spec);
    assert_eq!(
        offered.len(),
        tools.len() + 1,
        "the MCP tools and artifact.read"
    );
    wire_names_hold(&offered, &reported);
    // names that needed no hash keep the wire names retrace always sent
    let wire = |name: &str| {
        let at = offered.iter().position(|t| t.name == name).expect(name);
        reported[at].clone()
    };
    assert_eq!(wire("mcp.work.gmail.search"), "mcp__work__gmail__search");
    let (a, b) = (
        wire(&format!("mcp.work.{long_a}")),
        wire(&format!("mcp.work.{long_b}")),
    );
    assert!(a.len() == 64 && b.len() == 64 && a != b, "{a} {b}");

    let (out, run) = run(&store, &spec);
    assert!(out.status.success(), "{}", text(&out));
    let results = results(&store, &run);
    assert_eq!(results.len(), tools.len());
    assert!(results.iter().all(|r| !is_error(r)), "{results:?}");
    let mut called: Vec<String> = sent(dir.path(), "tools/call")
        .iter()
        .map(|r| r["params"]["name"].as_str().expect("name").to_owned())
        .collect();
    called.sort();
    let mut expected: Vec<String> = tools.iter().map(|t| (*t).to_owned()).collect();
    expected.sort();
    assert_eq!(called, expected);
}

/// Through a real provider: an OpenAI-compatible loopback server is offered the dotted
/// tools under valid names, calls two by those names, and the calls are recorded under the
/// tools' own names and reach the server by them.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_calling_wire_names_reaches_the_right_dotted_tools() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    // the names the request will carry, from the same spec with a scripted model
    let probe = agent(
        dir.path(),
        &retrace_tests::wire_case("mcp-dotted-tool-names.jsonl"),
        &scripted(dir.path(), &json!([])),
    );
    let (offered, reported) = offered(&store, &probe);
    let wire = |name: &str| {
        let at = offered.iter().position(|t| t.name == name).expect(name);
        reported[at].clone()
    };
    let (a, b) = (wire("mcp.work.docs.getText"), wire("mcp.work.docs_getText"));
    let call = |index: u64, id: &str, name: &str| {
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, "id": id,
            "type": "function", "function": {"name": name, "arguments": "{\"documentId\":\"d1\"}"}}]}}]})
        .to_string()
    };
    let answer = json!({"choices": [{"index": 0, "delta": {"content": "Read both."}, "finish_reason": "stop"}]});
    let server = Server::start(vec![
        Reply::Pieces(
            vec![sse(&[
                (None, call(0, "call_a", &a)),
                (None, call(1, "call_b", &b)),
                (
                    None,
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
                        .to_string(),
                ),
                (None, "[DONE]".into()),
            ])],
            std::time::Duration::ZERO,
        ),
        Reply::Pieces(
            vec![sse(&[(None, answer.to_string()), (None, "[DONE]".into())])],
            std::time::Duration::ZERO,
        ),
    ])
    .await;
    let model = format!(
        "provider = \"openai\"\nname = \"test-model\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\n\
         [context]\nwindow_tokens = 32000",
        server.url("/v1")
    );
    let spec = agent(
        dir.path(),
        &retrace_tests::wire_case("mcp-dotted-tool-names.jsonl"),
        &model,
    );
    let (store2, spec2) = (store.clone(), spec.clone());
    let (out, run) = tokio::task::spawn_blocking(move || run(&store2, &spec2))
        .await
        .expect("join");
    assert!(out.status.success(), "{}", text(&out));
    let requests = server.requests();
    let sent_names: Vec<String> = requests[0].json()["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(sent_names, reported);
    let (_, reply) = &payloads(&store, &run, "model_responded", "response")[0];
    let names: Vec<&str> = reply["tool_calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["mcp.work.docs.getText", "mcp.work.docs_getText"]);
    let called: Vec<Value> = sent(dir.path(), "tools/call")
        .iter()
        .map(|r| r["params"]["name"].clone())
        .collect();
    assert_eq!(called, [json!("docs.getText"), json!("docs_getText")]);
    // the second request sends the calls back under the same wire names
    let back: Vec<Value> = requests[1].json()["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["tool_calls"].as_array())
        .flatten()
        .map(|c| c["function"]["name"].clone())
        .collect();
    assert_eq!(back, [json!(a), json!(b)]);
}

/// The case: the call succeeds, its text reaches the model, the resource link without a
/// name is kept in the recorded result.
#[test]
fn case_a_resource_link_without_name_is_kept_and_its_text_reaches_the_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = scripted(
        dir.path(),
        &json!([
            {"tool_calls": [{"id": "c1", "name": "mcp.work.fetch", "arguments": {"url": "https://example.com"}}]},
            {"text": "Fetched."}
        ]),
    );
    let spec = agent(
        dir.path(),
        &retrace_tests::wire_case("mcp-resource-link-without-name.jsonl"),
        &model,
    );
    let store = dir.path().join("store");
    let (out, run) = run(&store, &spec);
    assert!(out.status.success(), "{}", text(&out));
    let results = results(&store, &run);
    assert_eq!(results.len(), 1);
    let output = &results[0].1;
    assert!(!is_error(&results[0]), "{output}");
    assert_eq!(
        output,
        &json!({"content": [
            {"type": "text", "text": "result with a view"},
            {"type": "resource_link", "uri": "ui://demo/view/v1", "mimeType": "text/html;profile=mcp-app"}
        ]})
    );
    model_saw(&store, &run, &results[0]);
    assert!(retrace(&store, &["verify", &run]).status.success());
}

/// Variant: a future block type, an audience value and a priority rmcp cannot represent:
/// all kept whole, the text reaches the model; an error result with an unknown block is a
/// recorded tool error quoting it.
#[test]
fn unknown_blocks_audiences_and_priorities_are_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let content = json!([
        {"type": "text", "text": "for the robots", "annotations": {"audience": ["robot"]}},
        {"type": "text", "text": "very urgent", "annotations": {"priority": "high"}},
        {"type": "widget", "widget": {"kind": "chart", "series": [1, 2, 3]}}
    ]);
    let jsonl = variant(
        dir.path(),
        &[
            initialize(),
            listing(&["render"]),
            call_result(&content),
            json!({"jsonrpc": "2.0", "id": 3, "result": {"content": [
                {"type": "widget", "error": "no such chart"}], "isError": true}}),
        ],
    );
    let model = scripted(
        dir.path(),
        &json!([
            {"tool_calls": [{"id": "c1", "name": "mcp.work.render", "arguments": {}}]},
            {"tool_calls": [{"id": "c2", "name": "mcp.work.render", "arguments": {}}]},
            {"text": "Rendered."}
        ]),
    );
    let spec = agent(dir.path(), &jsonl, &model);
    let store = dir.path().join("store");
    let (out, run) = run(&store, &spec);
    assert!(out.status.success(), "{}", text(&out));
    let results = results(&store, &run);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].1, json!({ "content": content }));
    assert!(!is_error(&results[0]));
    assert!(is_error(&results[1]), "an error result: {:?}", results[1]);
    assert!(
        results[1].1.to_string().contains("no such chart"),
        "{:?}",
        results[1]
    );
    model_saw(&store, &run, &results[0]);
    model_saw(&store, &run, &results[1]);
}

/// Variant: a `tools/list` whose `nextCursor` repeats: the run starts with the tools
/// gathered, and the warning says why the listing stopped.
#[test]
fn a_repeating_cursor_ends_the_listing_with_a_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = listing(&["a.one", "b.two"]);
    first["result"]["nextCursor"] = json!("page-2");
    let mut again = listing(&["c.three"]);
    again["result"]["nextCursor"] = json!("page-2");
    let jsonl = variant(
        dir.path(),
        &[
            initialize(),
            first,
            again,
            call_result(&json!([{"type": "text", "text": "three"}])),
        ],
    );
    let model = scripted(
        dir.path(),
        &json!([
            {"tool_calls": [{"id": "c1", "name": "mcp.work.c.three", "arguments": {}}]},
            {"text": "ok"}
        ]),
    );
    let spec = agent(dir.path(), &jsonl, &model);
    let store = dir.path().join("store");
    let started = std::time::Instant::now();
    let (offered, _) = offered(&store, &spec);
    let names: Vec<&str> = offered.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "mcp.work.a.one",
            "mcp.work.b.two",
            "mcp.work.c.three",
            "artifact.read"
        ]
    );
    let (out, run) = run(&store, &spec);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("repeated a tools/list cursor"),
        "{}",
        text(&out)
    );
    assert_eq!(
        recorded_catalog(&store, &run),
        ["a.one", "b.two", "c.three"]
    );
    assert_eq!(results(&store, &run).len(), 1);
}

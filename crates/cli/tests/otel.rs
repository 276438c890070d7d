//! `retrace export-otel` against a collector-compatible receiver on loopback: OTLP/HTTP
//! protobuf decoded with `opentelemetry-proto`'s types, as a collector would. Checked: the
//! span tree (one `invoke_agent` root, every call its child), the GenAI attributes, the ids
//! linking each span to its event, the times. And the round trip: a run exported as OTLP
//! JSON and imported again has the same calls and results.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{example_run, import_run, log_json, retrace, text};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;

/// A loopback OTLP/HTTP receiver: what it was sent, decoded, and the content types.
#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>,
}

fn receiver() -> (String, Received, std::thread::JoinHandle<()>) {
    let received = Received::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = received.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fixture");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("fixture");
            tx.send(listener.local_addr().expect("fixture"))
                .expect("fixture");
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let kept = kept.clone();
                        async move {
                            let kind = headers
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let request = ExportTraceServiceRequest::decode(body.as_ref())
                                .expect("an OTLP protobuf body");
                            kept.requests.lock().expect("fixture").push((kind, request));
                            (
                                [("content-type", "application/x-protobuf")],
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                        }
                    },
                ),
            );
            axum::serve(listener, app).await.expect("fixture");
        });
    });
    let addr = rx.recv().expect("fixture");
    (format!("http://{addr}"), received, thread)
}

/// Every span of an export request.
fn spans_of(request: &ExportTraceServiceRequest) -> Vec<&Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Any::IntValue(n)) => *n,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

#[test]
fn a_run_reaches_a_collector_as_a_genai_span_tree() {
    let dir = tempfile::tempdir().expect("fixture");
    let (store, run) = example_run(dir.path(), "tidy", "Summarise this project");
    let (url, received, _server) = receiver();
    let out = retrace(&store, &["export-otel", &run, "--endpoint", &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("to {url}/v1/traces")),
        "{}",
        text(&out)
    );

    let requests = received.requests.lock().expect("fixture");
    assert_eq!(requests.len(), 1);
    let (kind, request) = &requests[0];
    assert_eq!(kind, "application/x-protobuf");
    let resource = request.resource_spans[0]
        .resource
        .as_ref()
        .expect("fixture");
    let service = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name");
    let service = service.and_then(|kv| kv.value.as_ref()?.value.as_ref());
    assert_eq!(service, Some(&Any::StringValue("retrace".into())));
    let spans = spans_of(request);

    // the log, to check every span against
    let log = log_json(&store, &run);
    let at_seq: HashMap<u64, &serde_json::Value> = log
        .iter()
        .map(|e| (e["seq"].as_u64().expect("fixture"), e))
        .collect();
    let kinds = |k: &str| log.iter().filter(|e| e["kind"] == k).count();

    // one root, the run: trace id = run id, no parent, covering every other span
    let roots: Vec<&&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1);
    let root = roots[0];
    assert_eq!(root.name, "invoke_agent tidy");
    assert_eq!(string(root, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(string(root, "gen_ai.agent.name"), "tidy");
    assert_eq!(string(root, "retrace.run.id"), run);
    assert_eq!(hex(&root.trace_id), run);
    assert_eq!(
        root.status.as_ref().expect("fixture").code,
        StatusCode::Ok as i32
    );
    let chats: Vec<&&Span> = spans
        .iter()
        .filter(|s| attr(s, "gen_ai.operation.name") == Some(&Any::StringValue("chat".into())))
        .collect();
    let tools: Vec<&&Span> = spans
        .iter()
        .filter(|s| {
            attr(s, "gen_ai.operation.name") == Some(&Any::StringValue("execute_tool".into()))
        })
        .collect();
    assert_eq!(chats.len(), kinds("model_responded"));
    assert_eq!(tools.len(), kinds("tool_returned"));
    assert_eq!(spans.len(), 1 + chats.len() + tools.len());
    for span in spans.iter().filter(|s| !s.parent_span_id.is_empty()) {
        // a child of the root, in its trace and time
        assert_eq!(span.parent_span_id, root.span_id, "{}", span.name);
        assert_eq!(span.trace_id, root.trace_id);
        assert!(root.start_time_unix_nano <= span.start_time_unix_nano);
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
        assert!(span.end_time_unix_nano <= root.end_time_unix_nano);
        // its event: the id at that seq, and the span's start is that event's time
        let seq = u64::try_from(int(span, "retrace.seq")).expect("fixture");
        let event = at_seq[&seq];
        assert_eq!(
            string(span, "retrace.event.id"),
            event["id"].as_str().expect("fixture")
        );
        assert_eq!(
            span.span_id,
            hex_bytes(event["id"].as_str().expect("fixture"))[..8]
        );
        assert_eq!(
            span.start_time_unix_nano,
            event["at"].as_u64().expect("fixture") * 1_000_000
        );
        assert_eq!(
            span.status.as_ref().expect("fixture").code,
            StatusCode::Ok as i32
        );
    }
    chat_spans_add_up(&chats, root);
    tool_spans_are_whole(&tools);
}

/// The tidy run's chat spans: the scripted model's, their tokens summing to the root's.
fn chat_spans_add_up(chats: &[&&Span], root: &Span) {
    let (mut input, mut output) = (0, 0);
    for chat in chats {
        assert_eq!(chat.name, "chat demo");
        assert_eq!(string(chat, "gen_ai.request.model"), "demo");
        assert_eq!(string(chat, "gen_ai.provider.name"), "scripted");
        input += int(chat, "gen_ai.usage.input_tokens");
        output += int(chat, "gen_ai.usage.output_tokens");
        let messages: serde_json::Value =
            serde_json::from_str(&string(chat, "gen_ai.output.messages")).expect("fixture");
        assert_eq!(messages[0]["role"], "assistant");
    }
    assert_eq!(
        (input, output),
        (
            int(root, "gen_ai.usage.input_tokens"),
            int(root, "gen_ai.usage.output_tokens")
        )
    );
    assert!(input > 0 && output > 0);
}

/// The tidy run's tool spans: its four tools, each with its id, arguments and result.
fn tool_spans_are_whole(tools: &[&&Span]) {
    let names: Vec<String> = tools
        .iter()
        .map(|t| string(t, "gen_ai.tool.name"))
        .collect();
    assert_eq!(names, ["fs.list", "fs.read", "fs.search", "fs.write"]);
    for tool in tools {
        assert!(!string(tool, "gen_ai.tool.call.id").is_empty());
        assert!(!string(tool, "gen_ai.tool.call.arguments").is_empty());
        assert!(!string(tool, "gen_ai.tool.call.result").is_empty());
    }
}

#[test]
fn errors_and_refusals_are_span_statuses() {
    let dir = tempfile::tempdir().expect("fixture");
    let store = dir.path().join("store");
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/cases/traces/claude-code/rejected-tool-use.jsonl");
    let run = import_run(&store, "auto", &file);
    let (url, received, _server) = receiver();
    let out = retrace(
        &store,
        &[
            "export-otel",
            &run,
            "--endpoint",
            &format!("{url}/v1/traces"),
            "--no-content",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let requests = received.requests.lock().expect("fixture");
    let spans = spans_of(&requests[0].1);
    let failed: Vec<&&Span> = spans
        .iter()
        .filter(|s| !s.parent_span_id.is_empty())
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        })
        .collect();
    assert_eq!(failed.len(), 2);
    for span in failed {
        assert_eq!(string(span, "error.type"), "tool_error");
        // --no-content: no result text, only the shape
        assert!(attr(span, "gen_ai.tool.call.result").is_none());
    }
    // the refusals are events of the root, by the user
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("fixture");
    let denials = root
        .events
        .iter()
        .filter(|e| e.name == "retrace.approval.decided")
        .count();
    assert_eq!(denials, 2);
    assert!(attr(root, "gen_ai.input.messages").is_none());

    // exported with content and imported back: the same events, in the same order, though
    // many share a millisecond (the log's order travels as `retrace.seq`)
    let file = dir.path().join("trace.json");
    let out = retrace(
        &store,
        &["export-otel", &run, "-o", file.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let back = import_run(&store, "auto", &file);
    let kinds = |run: &str| -> Vec<String> {
        log_json(&store, run)
            .iter()
            .map(|e| format!("{} {}", e["kind"], e["call_id"]))
            .collect()
    };
    assert_eq!(kinds(&run), kinds(&back));
}

#[test]
fn an_exported_run_imports_back_with_the_same_calls_and_results() {
    let dir = tempfile::tempdir().expect("fixture");
    let (store, run) = example_run(dir.path(), "tidy", "Summarise this project");
    let file = dir.path().join("trace.json");
    let out = retrace(
        &store,
        &["export-otel", &run, "-o", file.to_str().expect("fixture")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let back = import_run(&store, "auto", &file);
    // what the model said and what the tools returned: the same blobs, in the same order
    let calls = |run: &str| -> Vec<serde_json::Value> {
        log_json(&store, run)
            .into_iter()
            .filter(|e| {
                matches!(
                    e["kind"].as_str(),
                    Some(
                        "model_responded"
                            | "tool_calls_proposed"
                            | "tool_requested"
                            | "tool_returned"
                    )
                )
            })
            .map(|mut e| {
                // where and when, and `idempotent` (the policy's view of a tool, which an
                // import does not carry: imported runs are not resumed)
                for key in [
                    "id",
                    "parent",
                    "at",
                    "seq",
                    "request_seq",
                    "response_seq",
                    "idempotent",
                ] {
                    e.as_object_mut().expect("fixture").remove(key);
                }
                e
            })
            .collect()
    };
    let (original, imported) = (calls(&run), calls(&back));
    // four replies, three with calls, four calls and their results
    assert_eq!(original.len(), 15);
    assert_eq!(original, imported);
    // and the states differ only in who they are: run, spec, request records
    let diff = retrace(&store, &["diff", &run, &back, "--json"]);
    assert!(diff.status.success(), "{}", text(&diff));
    let diff: serde_json::Value = serde_json::from_slice(&diff.stdout).expect("fixture");
    let paths: Vec<&str> = diff["changes"]
        .as_array()
        .expect("fixture")
        .iter()
        .map(|c| c["path"].as_str().expect("fixture"))
        .collect();
    assert_eq!(paths, ["/last_request", "/run", "/spec"], "{diff}");
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("fixture"))
        .collect()
}

#[test]
fn serve_streams_the_spans_of_the_runs_it_drives() {
    let dir = tempfile::tempdir().expect("fixture");
    let spec = common::example("tidy", dir.path());
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("fixture");
    let (url, received, _server) = receiver();
    let served = retrace_tests::daemon::Served::with_config(retrace_serve::server::Config {
        workers: 2,
        otlp_endpoint: Some(url),
        ..retrace_serve::server::Config::new(&store)
    });
    let out = retrace(
        &store,
        &[
            "run",
            spec.to_str().expect("fixture"),
            "--input",
            "Summarise this project",
            "--detach",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let run = String::from_utf8(out.stdout)
        .expect("fixture")
        .trim()
        .to_owned();
    // until it has finished
    let began = std::time::Instant::now();
    while !log_json(&store, &run)
        .iter()
        .any(|e| e["kind"] == "run_finished")
    {
        assert!(
            began.elapsed() < std::time::Duration::from_mins(1),
            "the run does not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // a graceful stop sends what is left
    drop(served);
    let mut streamed: Vec<(Vec<u8>, String, u64, u64)> = received
        .requests
        .lock()
        .expect("fixture")
        .iter()
        .flat_map(|(_, r)| r.resource_spans.iter())
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| {
            (
                s.span_id.clone(),
                s.name.clone(),
                s.start_time_unix_nano,
                s.end_time_unix_nano,
            )
        })
        .collect();
    streamed.sort();
    // the same spans `export-otel` writes from the log afterwards
    let file = dir.path().join("trace.json");
    let out = retrace(
        &store,
        &["export-otel", &run, "-o", file.to_str().expect("fixture")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("fixture")).expect("fixture");
    let mut expected: Vec<(Vec<u8>, String, u64, u64)> = exported["resourceSpans"][0]["scopeSpans"]
        [0]["spans"]
        .as_array()
        .expect("fixture")
        .iter()
        .map(|s| {
            (
                hex_bytes(s["spanId"].as_str().expect("fixture")),
                s["name"].as_str().expect("fixture").to_owned(),
                s["startTimeUnixNano"]
                    .as_str()
                    .expect("fixture")
                    .parse()
                    .expect("fixture"),
                s["endTimeUnixNano"]
                    .as_str()
                    .expect("fixture")
                    .parse()
                    .expect("fixture"),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 9);
    assert_eq!(streamed, expected);
}

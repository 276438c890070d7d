//! The OpenAI-compatible provider against a loopback server speaking the wire format byte
//! for byte (SSE framing included): replies, tool calls split across chunks and writes,
//! parallel calls, usage, and every failure typed as it should be.

use std::sync::Arc;
use std::time::Duration;

use retrace_providers::{
    ChatMessage, Delta, Error, HttpSettings, ModelRequest, OpenAi, Provider, ToolCall, ToolDef,
};
use retrace_tests::loopback::{self as support, Reply, Server, head, key, split, sse};
use serde_json::json;

fn request() -> ModelRequest {
    ModelRequest {
        model: "gpt-test".into(),
        system: "be brief".into(),
        messages: vec![
            Arc::new(ChatMessage::User {
                content: "read the readme".into(),
            }),
            Arc::new(ChatMessage::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_0".into(),
                    name: "fs.list".into(),
                    arguments: json!({}),
                }],
                reasoning: vec![],
            }),
            Arc::new(ChatMessage::Tool {
                call_id: "call_0".into(),
                content: "{\"entries\":[\"README.md\"]}".into(),
                is_error: false,
            }),
        ],
        tools: vec![
            ToolDef {
                name: "fs.read".into(),
                description: "read a file".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            },
            ToolDef {
                name: "fs.list".into(),
                description: "list files".into(),
                parameters: json!({"type": "object"}),
            },
        ],
        params: [("temperature".to_owned(), json!(0.2))].into(),
        step: 1,
    }
}

fn provider(server: &Server) -> OpenAi {
    let mut settings = HttpSettings::new(server.url("/v1"));
    settings.api_key_env = Some(support::KEY_ENV.into());
    settings.first_byte_timeout = Duration::from_millis(500);
    settings.total_timeout = Duration::from_secs(5);
    OpenAi::new(settings).expect("provider")
}

fn chunk(delta: &serde_json::Value, finish: Option<&str>) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

fn usage(input: u64, output: u64) -> String {
    json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}}).to_string()
}

async fn complete(
    provider: &OpenAi,
    request: &ModelRequest,
) -> (Result<retrace_providers::ModelReply, Error>, Vec<String>) {
    let mut deltas = Vec::new();
    let result = provider
        .complete(request, &mut |d| {
            let Delta::Text(t) = d;
            deltas.push(t);
        })
        .await;
    (result, deltas)
}

#[tokio::test]
async fn a_streamed_reply_is_assembled_with_usage_and_the_request_is_well_formed() {
    let body = sse(&[
        (
            None,
            chunk(&json!({"role": "assistant", "content": ""}), None),
        ),
        (None, chunk(&json!({"content": "The readme "}), None)),
        (None, chunk(&json!({"content": "says hello."}), None)),
        (None, chunk(&json!({}), Some("stop"))),
        (None, usage(120, 7)),
        (None, "[DONE]".into()),
    ]);
    let server = Server::start(vec![Reply::Pieces(vec![body], Duration::ZERO)]).await;
    let (reply, deltas) = complete(&provider(&server), &request()).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.text, "The readme says hello.");
    assert_eq!(deltas, ["The readme ", "says hello."]);
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (120, 7)
    );
    assert_eq!(reply.stop_reason.as_deref(), Some("stop"));

    let sent = &server.requests()[0];
    assert!(
        sent.head.starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{}",
        sent.head
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {}", key()))
    );
    let body = sent.json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(body["messages"][1]["role"], "user");
    // tool names as the format allows, and the earlier call and its result in place
    assert_eq!(body["tools"][0]["function"]["name"], "fs__read");
    assert_eq!(
        body["messages"][2]["tool_calls"][0]["function"]["name"],
        "fs__list"
    );
    assert_eq!(
        body["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert_eq!(
        body["messages"][3],
        json!({"role": "tool", "tool_call_id": "call_0", "content": "{\"entries\":[\"README.md\"]}"})
    );
}

#[tokio::test]
async fn tool_calls_split_across_chunks_and_writes_are_assembled_and_parallel_calls_kept_apart() {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut function = json!({"arguments": args});
        if let Some(name) = name {
            function["name"] = json!(name);
        }
        let mut c = json!({"index": index, "function": function});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        chunk(&json!({"tool_calls": [c]}), None)
    };
    let body = sse(&[
        (None, chunk(&json!({"content": "Reading both."}), None)),
        (None, call(0, Some("call_a"), Some("fs__read"), "")),
        (None, call(0, None, None, "{\"pa")),
        (None, call(1, Some("call_b"), Some("fs__read"), "{\"path\"")),
        (None, call(0, None, None, "th\": \"READ")),
        (None, call(1, None, None, ": \"src/lib.rs\"}")),
        (None, call(0, None, None, "ME.md\"}")),
        (None, chunk(&json!({}), Some("tool_calls"))),
        (None, usage(50, 30)),
        (None, "[DONE]".into()),
    ]);
    // 7-byte writes: every event and most lines arrive in several reads
    let server = Server::start(vec![Reply::Pieces(split(&body, 7), Duration::ZERO)]).await;
    let (reply, _) = complete(&provider(&server), &request()).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.text, "Reading both.");
    assert_eq!(
        reply.tool_calls,
        vec![
            ToolCall {
                id: "call_a".into(),
                name: "fs.read".into(),
                arguments: json!({"path": "README.md"})
            },
            ToolCall {
                id: "call_b".into(),
                name: "fs.read".into(),
                arguments: json!({"path": "src/lib.rs"})
            },
        ]
    );
    assert_eq!(reply.stop_reason.as_deref(), Some("tool_calls"));
    assert_eq!(reply.usage.output_tokens, 30);
}

fn error_reply(status: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut bytes = head(
        status,
        &[&[("content-type", "application/json")], headers].concat(),
    );
    bytes.extend_from_slice(body.as_bytes());
    Reply::Pieces(vec![bytes], Duration::ZERO)
}

#[tokio::test]
async fn http_failures_are_typed_transient_or_permanent_with_the_providers_message() {
    let server = Server::start(vec![
        error_reply(
            "429 Too Many Requests",
            &[("retry-after", "2")],
            r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#,
        ),
        error_reply(
            "500 Internal Server Error",
            &[],
            r#"{"error": {"message": "boom"}}"#,
        ),
        error_reply(
            "401 Unauthorized",
            &[],
            r#"{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}"#,
        ),
        error_reply("404 Not Found", &[], "no such model"),
    ])
    .await;
    let provider = provider(&server);
    let (limited, _) = complete(&provider, &request()).await;
    match limited {
        Err(Error::Transient {
            message,
            retry_after,
            ..
        }) => {
            assert!(
                message.contains("HTTP 429: Rate limit reached"),
                "{message}"
            );
            assert_eq!(retry_after, Some(Duration::from_secs(2)));
        }
        other => panic!("429 must be transient: {other:?}"),
    }
    let (failed, _) = complete(&provider, &request()).await;
    assert!(
        matches!(&failed, Err(e @ Error::Transient { .. }) if e.to_string().contains("HTTP 500: boom")),
        "{failed:?}"
    );
    let (unauthorized, _) = complete(&provider, &request()).await;
    let e = unauthorized.expect_err("401 fails");
    assert!(!e.is_transient());
    assert!(
        e.to_string()
            .contains("HTTP 401: Incorrect API key provided"),
        "{e}"
    );
    assert!(
        !e.to_string().contains(&key()),
        "the key never appears in an error"
    );
    let (missing, _) = complete(&provider, &request()).await;
    let e = missing.expect_err("404 fails");
    assert!(
        !e.is_transient() && e.to_string().contains("HTTP 404: no such model"),
        "{e}"
    );
}

#[tokio::test]
async fn malformed_and_truncated_streams_are_clear_errors_not_panics() {
    let mut malformed = sse(&[(None, chunk(&json!({"content": "fine"}), None))]);
    malformed.extend_from_slice(b"data: {\"choices\": [{\"delta\": \n\n");
    let cut = sse(&[
        (None, chunk(&json!({"content": "The readme "}), None)),
        (None, chunk(&json!({"content": "says"}), None)),
    ]);
    let bad_args = sse(&[
        (
            None,
            chunk(
                &json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "fs__read", "arguments": "{\"path\": "}}]}),
                None,
            ),
        ),
        (None, chunk(&json!({}), Some("tool_calls"))),
        (None, "[DONE]".into()),
    ]);
    let server = Server::start(vec![
        Reply::Pieces(vec![malformed], Duration::ZERO),
        Reply::Pieces(split(&cut, 50), Duration::from_millis(5)),
        Reply::Pieces(vec![bad_args], Duration::ZERO),
    ])
    .await;
    let provider = provider(&server);
    let (malformed, _) = complete(&provider, &request()).await;
    let e = malformed.expect_err("malformed");
    assert!(
        !e.is_transient() && e.to_string().contains("malformed response"),
        "{e}"
    );
    let (cut, deltas) = complete(&provider, &request()).await;
    let e = cut.expect_err("cut");
    assert!(
        e.is_transient()
            && e.to_string()
                .contains("ended before the reply was complete"),
        "{e}"
    );
    assert_eq!(
        deltas,
        ["The readme ", "says"],
        "what streamed was still shown"
    );
    let (bad, _) = complete(&provider, &request()).await;
    let e = bad.expect_err("bad arguments");
    assert!(
        e.to_string()
            .contains("arguments of the call to `fs.read` are not JSON"),
        "{e}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_a_closed_port_fails_to_connect() {
    let server = Server::start(vec![Reply::Hang]).await;
    let started = std::time::Instant::now();
    let (hung, _) = complete(&provider(&server), &request()).await;
    let e = hung.expect_err("timeout");
    assert!(
        e.is_transient() && e.to_string().contains("no response within 0.5 s"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // a port nothing listens on
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let mut settings = HttpSettings::new(format!("http://{closed}/v1"));
    settings.first_byte_timeout = Duration::from_secs(2);
    let (refused, _) = complete(&OpenAi::new(settings).expect("provider"), &request()).await;
    let e = refused.expect_err("refused");
    assert!(
        e.is_transient() && e.to_string().contains("cannot connect"),
        "{e}"
    );
}

#[test]
fn a_missing_key_variable_is_named_and_no_key_is_needed_without_one() {
    let mut settings = HttpSettings::new("http://127.0.0.1:9/v1");
    settings.api_key_env = Some("RETRACE_SURELY_UNSET_KEY".into());
    let e = OpenAi::new(settings.clone()).expect_err("missing key");
    assert!(e.to_string().contains("`RETRACE_SURELY_UNSET_KEY`"), "{e}");
    settings.api_key_env = None;
    assert!(OpenAi::new(settings).is_ok(), "local servers need no key");
    // the key's Debug form never shows it
    let mut with_key = HttpSettings::new("http://127.0.0.1:9/v1");
    with_key.api_key_env = Some(support::KEY_ENV.into());
    let shown = format!("{:?}", OpenAi::new(with_key).expect("provider"));
    assert!(
        !shown.contains(&key()) && shown.contains("redacted"),
        "{shown}"
    );
}

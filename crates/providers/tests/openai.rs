//! The OpenAI-compatible provider against a loopback server speaking the wire format byte
//! for byte (SSE framing included): replies, tool calls split across chunks and writes,
//! parallel calls, usage, and every failure typed as it should be.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use retrace_providers::{
    ChatMessage, Delta, Error, HttpSettings, ModelRequest, OpenAi, Provider, ToolCall, ToolDef,
};
use retrace_tests::loopback::{self as support, Reply, Server, head, key, split, sse};
use serde_json::{Value, json};

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
        compaction: false,
    }
}

fn provider(server: &Server) -> OpenAi {
    let mut settings = HttpSettings::new(server.url("/v1"));
    settings.api_key_env = Some(support::KEY_ENV.into());
    settings.first_byte_timeout = Duration::from_millis(500);
    settings.total_timeout = Duration::from_secs(5);
    OpenAi::new(settings).expect("provider")
}

fn chunk(delta: &Value, finish: Option<&str>) -> String {
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
async fn a_context_window_overflow_is_its_own_permanent_error_with_the_numbers() {
    let server = Server::start(vec![
        error_reply(
            "400 Bad Request",
            &[],
            r#"{"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130415 tokens. Please reduce the length of the messages.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
        ),
        error_reply(
            "400 Bad Request",
            &[],
            r#"{"error": {"message": "We could not parse the JSON body of your request.", "type": "invalid_request_error", "param": null, "code": null}}"#,
        ),
    ])
    .await;
    let provider = provider(&server);
    let (overflowed, _) = complete(&provider, &request()).await;
    match overflowed {
        Err(
            ref e @ Error::ContextOverflow {
                limit, requested, ..
            },
        ) => {
            assert!(!e.is_transient());
            assert_eq!((limit, requested), (Some(128_000), Some(130_415)));
            assert!(
                e.to_string()
                    .contains("HTTP 400: This model's maximum context length"),
                "{e}"
            );
        }
        other => panic!("an overflow must be classified: {other:?}"),
    }
    let (bad, _) = complete(&provider, &request()).await;
    assert!(
        matches!(bad, Err(Error::Permanent { .. })),
        "other 400s stay permanent: {bad:?}"
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
    // arguments that are not JSON are kept as the raw text, for the tool to refuse and the
    // model to read (kind 2 of issue 21)
    let (bad, _) = complete(&provider, &request()).await;
    let reply = bad.expect("a reply whose call carries its raw arguments");
    assert_eq!(reply.tool_calls[0].arguments, json!("{\"path\": "));
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

// ---------------------------------------------------------------------------------------
// Issue 21: what real OpenAI-compatible servers send. The case files in
// `../shared/cases/wire/` (beside the clone) and variants of each kind, every body served
// whole and in 1-7 byte writes (lines, events and UTF-8 characters split).
// ---------------------------------------------------------------------------------------

/// A `200` response of `content_type` with `body`.
fn response(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = head("200 OK", &[("content-type", content_type)]);
    bytes.extend_from_slice(body);
    bytes
}

/// `body` answered (as `content_type`) whole, then in 1-7 byte writes: both replies, the
/// streamed text of each, and the requests the server saw.
async fn served(
    content_type: &str,
    body: &[u8],
) -> Vec<(Result<retrace_providers::ModelReply, Error>, Vec<String>)> {
    let bytes = response(content_type, body);
    let server = Server::start(vec![
        Reply::Pieces(vec![bytes.clone()], Duration::ZERO),
        Reply::Pieces(support::varied_split(&bytes), Duration::ZERO),
    ])
    .await;
    let provider = provider(&server);
    let mut results = Vec::new();
    for _ in 0..2 {
        results.push(complete(&provider, &request()).await);
    }
    results
}

/// `served` as an event stream, each reply required.
async fn replies(body: &[u8]) -> Vec<(retrace_providers::ModelReply, Vec<String>)> {
    served("text/event-stream", body)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (r, d))| (r.unwrap_or_else(|e| panic!("serving {i}: {e}")), d))
        .collect()
}

/// An SSE body (no head) of `data:` events.
fn events(chunks: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    for c in chunks {
        let _ = write!(out, "data: {c}\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn delta(delta: &Value, finish: Option<&str>) -> Value {
    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments,
    }
}

// kind 1: tool-call delta assembly

#[tokio::test]
async fn case_ollama_parallel_calls_at_one_index_are_two_calls_despite_finish_stop() {
    for (reply, _) in replies(&retrace_tests::wire_case_bytes(
        "openai-parallel-calls-same-index.sse",
    ))
    .await
    {
        assert_eq!(
            reply.tool_calls,
            vec![
                call(
                    "call_repro02a",
                    "file_write",
                    json!({"filePath": "hello.py", "content": "print(\"hello\")"})
                ),
                call(
                    "call_repro02b",
                    "file_write",
                    json!({"filePath": "world.py", "content": "print(\"world\")"})
                ),
            ]
        );
        assert_eq!(reply.stop_reason.as_deref(), Some("stop"));
        assert_eq!(reply.text, "");
    }
}

#[tokio::test]
async fn calls_without_index_with_id_type_and_name_repeated_in_every_chunk_are_kept_whole() {
    // no `index`, and every continuation repeats `id`, `type` and `name` (as some
    // OpenAI-compatible proxies do); a new id starts the next call
    let piece = |id: &str, args: &str| {
        delta(
            &json!({"tool_calls": [{"id": id, "type": "function", "function": {"name": "fs__read", "arguments": args}}]}),
            None,
        )
    };
    let body = events(&[
        piece("call_x", "{\"path\""),
        piece("call_x", ": \"a.txt\"}"),
        piece("call_y", "{\"path\": "),
        piece("call_y", "\"b.txt\"}"),
        delta(&json!({}), Some("tool_calls")),
    ]);
    for (reply, _) in replies(&body).await {
        assert_eq!(
            reply.tool_calls,
            vec![
                call("call_x", "fs.read", json!({"path": "a.txt"})),
                call("call_y", "fs.read", json!({"path": "b.txt"})),
            ]
        );
    }
}

#[tokio::test]
async fn blank_ids_and_names_in_continuations_continue_the_call() {
    // continuations with `"id": ""`, `"type": ""` and `"name": ""` (vLLM and Mistral-style
    // servers) continue the call streaming at their index
    let body = events(&[
        delta(
            &json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "fs__read", "arguments": ""}}]}),
            None,
        ),
        delta(
            &json!({"tool_calls": [{"index": 0, "id": "", "type": "", "function": {"name": "", "arguments": "{\"path\": \"é.txt\"}"}}]}),
            None,
        ),
        delta(
            &json!({"tool_calls": [{"index": 0, "id": null, "function": {"name": null, "arguments": ""}}]}),
            Some("tool_calls"),
        ),
    ]);
    for (reply, _) in replies(&body).await {
        assert_eq!(
            reply.tool_calls,
            vec![call("call_9", "fs.read", json!({"path": "é.txt"}))]
        );
    }
}

#[tokio::test]
async fn whole_calls_at_index_0_without_ids_are_told_apart_by_name_and_whole_arguments() {
    // each call whole in one chunk, all at index 0, no ids (older local servers): a new name,
    // or the same name with fresh arguments after whole ones, is a new call; ids are made
    let whole = |name: &str, args: &str| {
        delta(
            &json!({"tool_calls": [{"index": 0, "function": {"name": name, "arguments": args}}]}),
            None,
        )
    };
    let body = events(&[
        whole("fs__read", "{\"path\": \"a\"}"),
        whole("fs__read", "{\"path\": \"b\"}"),
        whole("fs__list", ""),
        delta(&json!({}), Some("stop")),
    ]);
    for (reply, _) in replies(&body).await {
        assert_eq!(
            reply.tool_calls,
            vec![
                call("call_0", "fs.read", json!({"path": "a"})),
                call("call_1", "fs.read", json!({"path": "b"})),
                call("call_2", "fs.list", json!({})),
            ]
        );
    }
}

// kind 2: argument decoding

#[tokio::test]
async fn case_llama_cpp_arguments_as_an_object_are_taken_as_they_are() {
    for (reply, _) in replies(&retrace_tests::wire_case_bytes(
        "openai-arguments-as-object.sse",
    ))
    .await
    {
        assert_eq!(
            reply.tool_calls,
            vec![call(
                "call_repro03a",
                "get_weather",
                json!({"location": "Paris", "unit": "celsius"})
            )]
        );
    }
}

#[tokio::test]
async fn arguments_that_are_not_json_are_kept_raw_and_twice_encoded_ones_decoded() {
    let whole = |index: u64, id: &str, args: &str| {
        delta(
            &json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": "fs__read", "arguments": args}}]}),
            None,
        )
    };
    let body = events(&[
        // prose where JSON belongs: kept as the raw text (the tool refuses it, the model is told)
        whole(0, "a", "path=README.md"),
        // a JSON string holding the object (encoded twice)
        whole(1, "b", &json!("{\"path\": \"b.txt\"}").to_string()),
        // a JSON value that is not an object: kept, refused by the tool
        whole(2, "c", "[\"README.md\"]"),
        delta(&json!({}), Some("tool_calls")),
    ]);
    for (reply, _) in replies(&body).await {
        assert_eq!(
            reply.tool_calls,
            vec![
                call("a", "fs.read", json!("path=README.md")),
                call("b", "fs.read", json!({"path": "b.txt"})),
                call("c", "fs.read", json!(["README.md"])),
            ]
        );
    }
}

// kind 3: reasoning

fn thought(reply: &retrace_providers::ModelReply) -> String {
    reply.reasoning.iter().map(|r| r.text.as_str()).collect()
}

#[tokio::test]
async fn case_deepseek_reasoning_is_recorded_apart_and_sent_back_as_reasoning_content() {
    for (reply, deltas) in replies(&retrace_tests::wire_case_bytes(
        "openai-reasoning-content-tool-call.sse",
    ))
    .await
    {
        assert_eq!(
            thought(&reply),
            "The user wants the weather in San Francisco."
        );
        assert!(reply.reasoning[0].signature.is_none() && reply.reasoning[0].redacted.is_none());
        assert_eq!(reply.text, "", "reasoning is not the answer");
        assert!(
            deltas.is_empty(),
            "reasoning is not streamed as text: {deltas:?}"
        );
        assert_eq!(
            reply.tool_calls,
            vec![call(
                "call_00_repro09abc",
                "weather",
                json!({"location": "San Francisco"})
            )]
        );
        assert_eq!(reply.usage.reasoning_tokens, 39);
        assert_eq!(reply.usage.output_tokens, 83);

        // the next request carries it on the assistant turn
        let mut next = request();
        next.messages = vec![
            Arc::new(ChatMessage::User {
                content: "weather?".into(),
            }),
            Arc::new(ChatMessage::Assistant {
                text: reply.text.clone(),
                tool_calls: reply.tool_calls.clone(),
                reasoning: reply.reasoning.clone(),
            }),
        ];
        let body = retrace_providers::openai::body(&next);
        assert_eq!(
            body["messages"][2]["reasoning_content"],
            "The user wants the weather in San Francisco."
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["id"],
            "call_00_repro09abc"
        );
    }
    // a turn without reasoning sends none
    let body = retrace_providers::openai::body(&request());
    assert!(body["messages"][2].get("reasoning_content").is_none());
}

#[tokio::test]
async fn openrouter_reasoning_and_vllm_duplicate_fields_are_reasoning_once_never_text() {
    // OpenRouter: `reasoning` (with `reasoning_details`); a vLLM build sending both
    // `reasoning` and `reasoning_content` with the same piece: taken once
    let body = events(&[
        delta(
            &json!({"role": "assistant", "content": "", "reasoning": "Two ", "reasoning_details": [{"type": "reasoning.text", "text": "Two "}]}),
            None,
        ),
        delta(
            &json!({"content": null, "reasoning": "plus two.", "reasoning_content": "plus two."}),
            None,
        ),
        delta(
            &json!({"content": "Four.", "reasoning": null}),
            Some("stop"),
        ),
    ]);
    for (reply, deltas) in replies(&body).await {
        assert_eq!(thought(&reply), "Two plus two.");
        assert_eq!(reply.text, "Four.");
        assert_eq!(deltas.concat(), "Four.");
    }
}

#[tokio::test]
async fn mistral_thinking_parts_are_reasoning_and_text_parts_the_answer() {
    // Magistral: `content` as typed parts, thinking parts holding text chunks
    let body = events(&[
        delta(
            &json!({"role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Check the "}]}]}),
            None,
        ),
        delta(
            &json!({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "file."}]}, {"type": "text", "text": "Done"}]}),
            None,
        ),
        delta(
            &json!({"content": [{"type": "text", "text": ", all good."}]}),
            Some("stop"),
        ),
    ]);
    for (reply, deltas) in replies(&body).await {
        assert_eq!(thought(&reply), "Check the file.");
        assert_eq!(reply.text, "Done, all good.");
        assert_eq!(deltas.concat(), "Done, all good.");
    }
}

// kind 4: every field that carries the answer

#[tokio::test]
async fn case_openai_refusal_is_a_permanent_error_carrying_its_text() {
    for (result, deltas) in served(
        "text/event-stream",
        &retrace_tests::wire_case_bytes("openai-refusal.sse"),
    )
    .await
    {
        let e = result.expect_err("a refusal is not an answer");
        assert!(!e.is_transient(), "{e}");
        assert!(
            e.to_string()
                .contains("the model refused: I'm sorry, but I can't help with that."),
            "{e}"
        );
        assert!(deltas.is_empty());
    }
}

#[tokio::test]
async fn other_choices_are_ignored_and_typed_text_parts_are_text() {
    // `n` = 2: chunks of choice 1 (even listed first) are not the reply
    let both = |a: &str, b: &str, finish: Option<&str>| {
        json!({"id": "c1", "choices": [
            {"index": 1, "delta": {"content": b}, "finish_reason": finish},
            {"index": 0, "delta": {"content": [{"type": "text", "text": a}]}, "finish_reason": finish}]})
    };
    let body = events(&[
        both("Hello", "Bonjour", None),
        json!({"id": "c1", "choices": [{"index": 1, "delta": {"content": " le monde"}, "finish_reason": null}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": null}]}),
        both("", "", Some("stop")),
    ]);
    for (reply, deltas) in replies(&body).await {
        assert_eq!(reply.text, "Hello world");
        assert_eq!(deltas.concat(), "Hello world");
    }
}

#[tokio::test]
async fn a_reply_cut_at_the_token_limit_is_an_error_with_the_cut_text_and_no_half_call() {
    let text = events(&[
        delta(&json!({"content": "The answer is"}), None),
        delta(&json!({}), Some("length")),
    ]);
    let in_call = events(&[
        delta(
            &json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "fs__read", "arguments": "{\"path\": \"REA"}}]}),
            None,
        ),
        delta(&json!({}), Some("length")),
    ]);
    let filtered = events(&[delta(&json!({}), Some("content_filter"))]);
    for (result, _) in served("text/event-stream", &text).await {
        let e = result.expect_err("cut");
        assert!(!e.is_transient());
        let e = e.to_string();
        assert!(
            e.contains("cut at the token limit (finish_reason \"length\")")
                && e.contains("raise max_tokens")
                && e.contains("The answer is"),
            "{e}"
        );
    }
    for (result, _) in served("text/event-stream", &in_call).await {
        let e = result.expect_err("a half call is not proposed").to_string();
        assert!(e.contains("1 tool call(s) in progress"), "{e}");
    }
    // Azure/OpenAI's content filter, with nothing said
    for (result, _) in served("text/event-stream", &filtered).await {
        let e = result.expect_err("filtered").to_string();
        assert!(e.contains("content_filter"), "{e}");
    }
}

// kind 5: framing

#[tokio::test]
async fn a_server_ignoring_stream_true_answers_one_json_body_which_is_a_normal_reply() {
    // vLLM / Ollama / llama.cpp with streaming off: one `chat.completion`
    let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Reading.", "reasoning_content": "Need the file.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "fs__read", "arguments": "{\"path\": \"README.md\"}"}}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}});
    for (result, deltas) in served(
        "application/json; charset=utf-8",
        body.to_string().as_bytes(),
    )
    .await
    {
        let reply = result.expect("a reply");
        assert_eq!(reply.text, "Reading.");
        assert_eq!(deltas, ["Reading."]);
        assert_eq!(thought(&reply), "Need the file.");
        assert_eq!(
            reply.tool_calls,
            vec![call("call_1", "fs.read", json!({"path": "README.md"}))]
        );
        assert_eq!(
            (reply.usage.input_tokens, reply.usage.output_tokens),
            (12, 5)
        );
        assert_eq!(reply.stop_reason.as_deref(), Some("tool_calls"));
    }
}

#[tokio::test]
async fn a_last_event_without_its_blank_line_is_read_and_a_cut_one_is_a_short_stream() {
    let chunks = [
        delta(&json!({"content": "Hi"}), None),
        delta(&json!({}), Some("stop")),
    ];
    // `[DONE]` with no line end at all, then a finish chunk ending the body with one `\n`
    let mut done = events(&chunks);
    done.truncate(done.len() - 2);
    let last = format!("data: {}\n\ndata: {}\n", chunks[0], chunks[1]).into_bytes();
    for body in [done, last] {
        for (reply, _) in replies(&body).await {
            assert_eq!(reply.text, "Hi");
            assert_eq!(reply.stop_reason.as_deref(), Some("stop"));
        }
    }
    // a last event cut in its middle is not read: the stream ended early (transient)
    let cut = format!("data: {}\n\ndata: {{\"choices\": [{{\"ind", chunks[0]).into_bytes();
    for (result, _) in served("text/event-stream", &cut).await {
        let e = result.expect_err("cut");
        assert!(
            e.is_transient() && e.to_string().contains("ended before"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn comments_event_lines_data_without_space_crlf_and_empty_choices_keep_working() {
    let body = format!(
        ": OPENROUTER PROCESSING\r\n\r\nevent: message\r\ndata:{}\r\n\r\nid: 7\r\nretry: 100\r\ndata: {}\r\n\r\ndata: {}\r\n\r\n: keep-alive\n\ndata: {}\r\n\r\ndata: [DONE]\r\n\r\n",
        delta(&json!({"role": "assistant", "content": "Grüße, "}), None),
        json!({"id": "c1", "choices": []}),
        delta(&json!({"content": "world"}), Some("stop")),
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    );
    for (reply, _) in replies(body.as_bytes()).await {
        assert_eq!(reply.text, "Grüße, world");
        assert_eq!(reply.usage.output_tokens, 2);
    }
}

// prompt caching: usage as OpenAI documents it
// (https://platform.openai.com/docs/guides/prompt-caching): `prompt_tokens` counts every
// prompt token, `prompt_tokens_details.cached_tokens` those read from the cache

/// OpenAI's usage with 1920 of 2006 prompt tokens read from the prompt cache.
fn cached_usage() -> Value {
    json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

#[tokio::test]
async fn cached_prompt_tokens_are_recorded_from_the_final_usage_chunk_and_a_whole_body() {
    let expected = retrace_providers::TokenUsage {
        input_tokens: 2006,
        output_tokens: 300,
        cache_read_tokens: 1920,
        ..Default::default()
    };
    // streamed: the last chunk before `[DONE]` (stream_options.include_usage)
    let streamed = events(&[
        delta(&json!({"role": "assistant", "content": "Hello."}), None),
        delta(&json!({}), Some("stop")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o",
            "system_fingerprint": "fp_1", "choices": [], "usage": cached_usage()}),
    ]);
    for (reply, _) in replies(&streamed).await {
        assert_eq!(reply.usage, expected);
    }
    // not streamed: one `chat.completion`
    let whole = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello."}}],
        "usage": cached_usage()});
    for (result, _) in served("application/json", whole.to_string().as_bytes()).await {
        assert_eq!(result.expect("a reply").usage, expected);
    }
    // servers without the details (vLLM sends `null`, others nothing): no cache reads
    for details in [json!(null), json!({"cached_tokens": null}), json!({})] {
        let body = events(&[
            delta(&json!({"content": "Hi"}), Some("stop")),
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 30,
                "completion_tokens": 2, "prompt_tokens_details": details}}),
        ]);
        for (reply, _) in replies(&body).await {
            assert_eq!(
                reply.usage,
                retrace_providers::TokenUsage {
                    input_tokens: 30,
                    output_tokens: 2,
                    ..Default::default()
                },
                "{details}"
            );
        }
    }
}

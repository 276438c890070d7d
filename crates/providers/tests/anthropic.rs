//! The Anthropic provider against a loopback server speaking the messages stream byte for
//! byte: text and `tool_use` blocks (input JSON split across deltas and writes), usage from
//! `message_start` and `message_delta`, mid-stream errors, HTTP failures, cut streams.

use std::sync::Arc;
use std::time::Duration;

use retrace_providers::{
    Anthropic, ChatMessage, Delta, Error, HttpSettings, ModelReply, ModelRequest, Provider,
    ToolCall, ToolDef,
};
use retrace_tests::loopback::{self as support, Reply, Server, head, key, split, sse};
use serde_json::{Value, json};

fn request() -> ModelRequest {
    ModelRequest {
        model: "claude-test".into(),
        system: "be brief".into(),
        messages: vec![
            Arc::new(ChatMessage::User {
                content: "read both files".into(),
            }),
            Arc::new(ChatMessage::Assistant {
                text: "Listing first.".into(),
                tool_calls: vec![ToolCall {
                    id: "toolu_0".into(),
                    name: "fs.list".into(),
                    arguments: json!({}),
                }],
                reasoning: vec![],
            }),
            Arc::new(ChatMessage::Tool {
                call_id: "toolu_0".into(),
                content: "[\"a.txt\"]".into(),
                is_error: false,
            }),
            Arc::new(ChatMessage::User {
                content: "also b.txt".into(),
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
        params: [("max_tokens".to_owned(), json!(512))].into(),
        step: 1,
        compaction: false,
    }
}

fn provider(server: &Server) -> Anthropic {
    let mut settings = HttpSettings::new(server.url(""));
    settings.api_key_env = Some(support::KEY_ENV.into());
    settings.first_byte_timeout = Duration::from_millis(500);
    settings.total_timeout = Duration::from_secs(5);
    Anthropic::new(settings).expect("provider")
}

fn ev(name: &'static str, data: &Value) -> (Option<&'static str>, String) {
    let mut data = data.clone();
    data["type"] = json!(name);
    (Some(name), data.to_string())
}

fn start(input: u64) -> (Option<&'static str>, String) {
    ev(
        "message_start",
        &json!({"message": {"id": "msg_1", "role": "assistant", "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}),
    )
}

fn stop(reason: &str, output: u64) -> Vec<(Option<&'static str>, String)> {
    vec![
        ev(
            "message_delta",
            &json!({"delta": {"stop_reason": reason}, "usage": {"output_tokens": output}}),
        ),
        ev("message_stop", &json!({})),
    ]
}

fn text_block(index: u64, pieces: &[&str]) -> Vec<(Option<&'static str>, String)> {
    let mut out = vec![ev(
        "content_block_start",
        &json!({"index": index, "content_block": {"type": "text", "text": ""}}),
    )];
    for piece in pieces {
        out.push(ev(
            "content_block_delta",
            &json!({"index": index, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.push(ev("content_block_stop", &json!({"index": index})));
    out
}

fn tool_start(index: u64, id: &str) -> (Option<&'static str>, String) {
    ev(
        "content_block_start",
        &json!({"index": index, "content_block": {"type": "tool_use", "id": id, "name": "fs__read", "input": {}}}),
    )
}

fn tool_json(index: u64, piece: &str) -> (Option<&'static str>, String) {
    ev(
        "content_block_delta",
        &json!({"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
    )
}

async fn complete(provider: &Anthropic) -> (Result<ModelReply, Error>, Vec<String>) {
    let mut deltas = Vec::new();
    let result = provider
        .complete(&request(), &mut |d| {
            let Delta::Text(t) = d;
            deltas.push(t);
        })
        .await;
    (result, deltas)
}

#[tokio::test]
async fn text_and_parallel_tool_use_blocks_are_assembled_and_the_request_is_well_formed() {
    let mut events = vec![start(321), ev("ping", &json!({}))];
    events.extend(text_block(0, &["Reading ", "both."]));
    events.push(tool_start(1, "toolu_a"));
    events.push(tool_start(2, "toolu_b"));
    events.push(tool_json(1, "{\"pa"));
    events.push(tool_json(2, "{\"path\": \"b.txt\"}"));
    events.push(tool_json(1, "th\": \"a.txt\"}"));
    events.push(ev("content_block_stop", &json!({"index": 2})));
    events.push(ev("content_block_stop", &json!({"index": 1})));
    events.extend(stop("tool_use", 44));
    let server = Server::start(vec![Reply::Pieces(
        split(&sse(&events), 11),
        Duration::ZERO,
    )])
    .await;
    let (reply, deltas) = complete(&provider(&server)).await;
    let reply = reply.expect("a reply");
    assert_eq!(reply.text, "Reading both.");
    assert_eq!(deltas, ["Reading ", "both."]);
    let calls: Vec<(&str, &str, Value)> = reply
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.clone()))
        .collect();
    // in the model's order (block index), whatever order the blocks completed in
    assert_eq!(
        calls,
        [
            ("toolu_a", "fs.read", json!({"path": "a.txt"})),
            ("toolu_b", "fs.read", json!({"path": "b.txt"}))
        ]
    );
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (321, 44)
    );
    assert_eq!(reply.stop_reason.as_deref(), Some("tool_use"));

    let sent = &server.requests()[0];
    assert!(
        sent.head.starts_with("POST /v1/messages HTTP/1.1"),
        "{}",
        sent.head
    );
    assert_eq!(sent.header("x-api-key"), Some(key()));
    assert_eq!(
        sent.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    let body = sent.json();
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]),
        "one text block, to carry the cache breakpoint"
    );
    assert_eq!(body["max_tokens"], 512, "the spec's max_tokens wins");
    assert_eq!(body["stream"], true);
    assert_eq!(body["tools"][0]["name"], "fs__read");
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 3, "turns alternate: user, assistant, user");
    assert_eq!(messages[1]["content"][1]["type"], "tool_use");
    assert_eq!(messages[1]["content"][1]["name"], "fs__list");
    // the tool result and the next user message share one user turn; its last block ends
    // the cached prefix
    assert_eq!(
        messages[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "toolu_0", "content": "[\"a.txt\"]", "is_error": false},
            {"type": "text", "text": "also b.txt", "cache_control": {"type": "ephemeral"}}
        ])
    );
}

fn error_reply(status: &str, body: &Value) -> Reply {
    let mut bytes = head(status, &[("content-type", "application/json")]);
    bytes.extend_from_slice(body.to_string().as_bytes());
    Reply::Pieces(vec![bytes], Duration::ZERO)
}

#[tokio::test]
async fn failures_are_typed_and_never_panics() {
    let mut overloaded = vec![start(5)];
    overloaded.extend(text_block(0, &["partial"]));
    overloaded.push(ev(
        "error",
        &json!({"error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let mut cut = vec![start(5)];
    cut.extend(text_block(0, &["no end"]));
    let mut bad_json = vec![
        start(5),
        tool_start(0, "toolu_x"),
        tool_json(0, "{\"path\": "),
    ];
    bad_json.push(ev("content_block_stop", &json!({"index": 0})));
    bad_json.extend(stop("tool_use", 3));
    let server = Server::start(vec![
        Reply::Pieces(vec![sse(&overloaded)], Duration::ZERO),
        error_reply(
            "529 Overloaded",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        error_reply(
            "401 Unauthorized",
            &json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        ),
        Reply::Pieces(vec![sse(&cut)], Duration::ZERO),
        Reply::Pieces(vec![sse(&bad_json)], Duration::ZERO),
        Reply::Pieces(
            vec![[head("200 OK", &[("content-type", "text/event-stream")]), b"event: message_start\ndata: {not json\n\n".to_vec()].concat()],
            Duration::ZERO,
        ),
    ])
    .await;
    let provider = provider(&server);
    let e = complete(&provider).await.0.expect_err("mid-stream error");
    assert!(
        e.is_transient() && e.to_string().contains("overloaded_error: Overloaded"),
        "{e}"
    );
    let e = complete(&provider).await.0.expect_err("529");
    assert!(
        e.is_transient() && e.to_string().contains("HTTP 529: Overloaded"),
        "{e}"
    );
    let e = complete(&provider).await.0.expect_err("401");
    assert!(
        !e.is_transient() && e.to_string().contains("HTTP 401: invalid x-api-key"),
        "{e}"
    );
    assert!(!e.to_string().contains(&key()));
    let e = complete(&provider).await.0.expect_err("cut");
    assert!(
        e.is_transient() && e.to_string().contains("ended before"),
        "{e}"
    );
    // input that is not JSON is kept as written: the tool refuses it and the model is told
    let reply = complete(&provider)
        .await
        .0
        .expect("a call with its raw input");
    assert_eq!(reply.tool_calls[0].arguments, json!("{\"path\": "));
    let e = complete(&provider).await.0.expect_err("malformed");
    assert!(
        !e.is_transient() && e.to_string().contains("malformed response"),
        "{e}"
    );
}

/// `body` served whole, then in writes of 1 to 7 bytes (splitting lines, events and UTF-8
/// characters): the same reply each time.
async fn served_every_way(body: &[u8]) -> ModelReply {
    let mut whole = head("200 OK", &[("content-type", "text/event-stream")]);
    whole.extend_from_slice(body);
    let mut replies = vec![Reply::Pieces(vec![whole.clone()], Duration::ZERO)];
    for size in 1..=7 {
        replies.push(Reply::Pieces(split(&whole, size), Duration::ZERO));
    }
    let count = replies.len();
    let server = Server::start(replies).await;
    let provider = provider(&server);
    let mut first: Option<ModelReply> = None;
    for _ in 0..count {
        let (reply, _) = complete(&provider).await;
        let reply = reply.expect("a reply");
        match &first {
            None => first = Some(reply),
            Some(first) => assert_eq!(&reply, first, "a split changed the reply"),
        }
    }
    first.expect("served")
}

#[tokio::test]
async fn extended_thinking_is_recorded_with_its_signature_and_sent_back_before_tool_use() {
    let reply = served_every_way(&retrace_tests::wire_case_bytes(
        "anthropic-thinking-with-tool-use.sse",
    ))
    .await;
    assert_eq!(reply.text, "", "thinking is not the answer");
    assert_eq!(reply.reasoning.len(), 1);
    assert_eq!(
        reply.reasoning[0].text,
        "The user wants the current time. I should call the tool."
    );
    let signature = reply.reasoning[0].signature.clone().expect("its signature");
    assert!(
        signature.starts_with("EpYBCkYIBRgCKkBREPROSIGNATURE"),
        "{signature}"
    );
    assert_eq!(reply.tool_calls.len(), 1);
    assert_eq!(reply.tool_calls[0].id, "toolu_repro12a");
    assert_eq!(reply.tool_calls[0].arguments, json!({}));
    assert_eq!(
        (reply.usage.input_tokens, reply.usage.output_tokens),
        (610, 71)
    );

    // the next request's assistant turn: the thinking block, unchanged, before the tool_use
    let mut next = request();
    next.messages = vec![
        Arc::new(ChatMessage::User {
            content: "what time is it?".into(),
        }),
        Arc::new(ChatMessage::Assistant {
            text: reply.text.clone(),
            tool_calls: reply.tool_calls.clone(),
            reasoning: reply.reasoning.clone(),
        }),
        Arc::new(ChatMessage::Tool {
            call_id: "toolu_repro12a".into(),
            content: "12:00".into(),
            is_error: false,
        }),
    ];
    let body = retrace_providers::anthropic::body(&next);
    let turn = &body["messages"][1];
    assert_eq!(turn["role"], "assistant");
    assert_eq!(
        turn["content"][0],
        json!({"type": "thinking",
               "thinking": "The user wants the current time. I should call the tool.",
               "signature": signature})
    );
    assert_eq!(turn["content"][1]["type"], "tool_use");
}

#[tokio::test]
async fn redacted_and_several_thinking_blocks_keep_their_order_and_bytes() {
    let mut events = vec![start(50)];
    events.push(ev(
        "content_block_start",
        &json!({"index": 0, "content_block": {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"}}),
    ));
    events.push(ev("content_block_stop", &json!({"index": 0})));
    events.push(ev(
        "content_block_start",
        &json!({"index": 1, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
    ));
    for piece in ["Two files: ", "read a.txt first — ", "then decide."] {
        events.push(ev(
            "content_block_delta",
            &json!({"index": 1, "delta": {"type": "thinking_delta", "thinking": piece}}),
        ));
    }
    for piece in ["Sig", "Part2=="] {
        events.push(ev(
            "content_block_delta",
            &json!({"index": 1, "delta": {"type": "signature_delta", "signature": piece}}),
        ));
    }
    events.push(ev("content_block_stop", &json!({"index": 1})));
    events.extend(text_block(2, &["Reading a.txt."]));
    events.push(tool_start(3, "toolu_r"));
    events.push(tool_json(3, "{\"path\": \"a.txt\"}"));
    events.push(ev("content_block_stop", &json!({"index": 3})));
    events.extend(stop("tool_use", 90));
    let mut bytes = sse(&events);
    // the body only, as a recorded file holds it
    let body_at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let reply = served_every_way(&bytes.split_off(body_at)).await;
    assert_eq!(reply.text, "Reading a.txt.");
    assert_eq!(reply.reasoning.len(), 2);
    assert_eq!(
        reply.reasoning[0].redacted.as_deref(),
        Some("EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP")
    );
    assert_eq!(
        reply.reasoning[0].text, "",
        "a redacted block shows no text"
    );
    assert_eq!(
        reply.reasoning[1].text,
        "Two files: read a.txt first — then decide."
    );
    assert_eq!(reply.reasoning[1].signature.as_deref(), Some("SigPart2=="));
    let mut next = request();
    next.messages = vec![Arc::new(ChatMessage::Assistant {
        text: reply.text.clone(),
        tool_calls: reply.tool_calls.clone(),
        reasoning: reply.reasoning.clone(),
    })];
    let body = retrace_providers::anthropic::body(&next);
    let kinds: Vec<&str> = body["messages"][0]["content"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| b["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["redacted_thinking", "thinking", "text", "tool_use"]);
    // reasoning recorded from another provider carries no signature: never sent here
    next.messages = vec![Arc::new(ChatMessage::Assistant {
        text: "ok".into(),
        tool_calls: vec![],
        reasoning: vec![retrace_providers::Reasoning {
            text: "deepseek thoughts".into(),
            ..retrace_providers::Reasoning::default()
        }],
    })];
    let body = retrace_providers::anthropic::body(&next);
    assert_eq!(
        body["messages"][0]["content"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_last_event_the_body_ends_without_its_blank_line_is_still_read() {
    // `message_stop` with a single `\n` (or none) before the server closes: the reply is
    // whole and must not be retried (and billed) again; the shared SSE reader reads it
    let mut events = vec![start(10)];
    events.extend(text_block(0, &["Done."]));
    events.extend(stop("end_turn", 2));
    let mut body = sse(&events);
    body.truncate(body.len() - 1); // one `\n` left after `message_stop`
    let mut bare = body.clone();
    bare.truncate(bare.len() - 1); // none left
    let server = Server::start(vec![
        Reply::Pieces(vec![body], Duration::ZERO),
        Reply::Pieces(split(&bare, 3), Duration::ZERO),
    ])
    .await;
    let provider = provider(&server);
    for _ in 0..2 {
        let (reply, _) = complete(&provider).await;
        let reply = reply.expect("a whole reply");
        assert_eq!(reply.text, "Done.");
        assert_eq!(reply.stop_reason.as_deref(), Some("end_turn"));
    }
    assert_eq!(
        server.requests().len(),
        2,
        "one request per reply, no retry"
    );
}

// prompt caching (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching)

/// The JSON pointers of every object in `value` that carries `cache_control`, each mark
/// checked to be the default ephemeral one.
fn breakpoints(value: &Value) -> Vec<String> {
    fn walk(value: &Value, at: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(mark) = map.get("cache_control") {
                    assert_eq!(mark, &json!({"type": "ephemeral"}), "at {at}");
                    out.push(at.to_owned());
                }
                for (k, v) in map {
                    walk(v, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out.sort();
    out
}

#[test]
fn requests_mark_tools_system_task_and_last_block_as_cache_breakpoints() {
    // tools, system, the task (first user message) and the last block: four, the most
    // the API accepts
    let body = retrace_providers::anthropic::body(&request());
    assert_eq!(
        breakpoints(&body),
        [
            "/messages/0/content/0",
            "/messages/2/content/1",
            "/system/0",
            "/tools/1"
        ]
    );
    assert_eq!(body["messages"][0]["content"][0]["text"], "read both files");
    assert_eq!(body["messages"][2]["content"][1]["text"], "also b.txt");
    assert_eq!(body["tools"][1]["name"], "fs__list");
    assert!(breakpoints(&body).len() <= retrace_providers::anthropic::MAX_CACHE_BREAKPOINTS);

    // the next step's request: the same prefix, with its marks, up to the new last block
    let mut next = request();
    next.messages.push(Arc::new(ChatMessage::Assistant {
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: "toolu_1".into(),
            name: "fs.read".into(),
            arguments: json!({"path": "b.txt"}),
        }],
        reasoning: vec![],
    }));
    next.messages.push(Arc::new(ChatMessage::Tool {
        call_id: "toolu_1".into(),
        content: "bee".into(),
        is_error: false,
    }));
    let after = retrace_providers::anthropic::body(&next);
    assert_eq!(
        breakpoints(&after),
        [
            "/messages/0/content/0",
            "/messages/4/content/0",
            "/system/0",
            "/tools/1"
        ]
    );
    assert_eq!(after["messages"][4]["content"][0]["type"], "tool_result");
    // everything before the previous request's last block is byte for byte the same, so
    // the server finds that prefix in its cache
    assert_eq!(after["system"], body["system"]);
    assert_eq!(after["tools"], body["tools"]);
    assert_eq!(after["messages"][0], body["messages"][0]);
    assert_eq!(after["messages"][1], body["messages"][1]);

    // the task alone is the last block too: one mark on it
    let mut first = request();
    first.messages.truncate(1);
    assert_eq!(
        breakpoints(&retrace_providers::anthropic::body(&first)),
        ["/messages/0/content/0", "/system/0", "/tools/1"]
    );

    // no system prompt, no tools: only the messages are marked
    let mut bare = request();
    bare.system = String::new();
    bare.tools.clear();
    let bare_body = retrace_providers::anthropic::body(&bare);
    assert_eq!(
        breakpoints(&bare_body),
        ["/messages/0/content/0", "/messages/2/content/1"]
    );
    assert!(bare_body.get("system").is_none() && bare_body.get("tools").is_none());

    // an empty text block cannot carry a mark: the block before it in the turn takes it
    let mut empty = request();
    empty.messages.pop();
    empty.messages.push(Arc::new(ChatMessage::User {
        content: String::new(),
    }));
    assert_eq!(
        breakpoints(&retrace_providers::anthropic::body(&empty)),
        [
            "/messages/0/content/0",
            "/messages/2/content/0",
            "/system/0",
            "/tools/1"
        ]
    );

    // nor can thinking blocks: an assistant turn ending the request is marked on its last
    // other block, its signed thinking sent back unchanged
    let mut thought = request();
    thought.messages.truncate(1);
    thought.messages.push(Arc::new(ChatMessage::Assistant {
        text: "Reading.".into(),
        tool_calls: vec![],
        reasoning: vec![retrace_providers::Reasoning {
            text: "think".into(),
            signature: Some("sig".into()),
            redacted: None,
        }],
    }));
    let thought_body = retrace_providers::anthropic::body(&thought);
    assert_eq!(
        breakpoints(&thought_body),
        [
            "/messages/0/content/0",
            "/messages/1/content/1",
            "/system/0",
            "/tools/1"
        ]
    );
    assert_eq!(
        thought_body["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "think", "signature": "sig"})
    );
}

/// A `message_start` with the usage the API reports under prompt caching.
fn start_cached(input: u64, read: u64, write: u64) -> (Option<&'static str>, String) {
    ev(
        "message_start",
        &json!({"message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-test", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": write,
                "cache_read_input_tokens": read, "output_tokens": 1}}}),
    )
}

#[tokio::test]
async fn cache_reads_and_writes_are_recorded_and_counted_in_the_input_tokens() {
    // first step: the prefix written to the cache (Anthropic's `input_tokens` are only
    // the uncached tokens after the last breakpoint)
    let mut written = vec![start_cached(21, 0, 188_086)];
    written.extend(text_block(0, &["Noted."]));
    written.extend(stop("end_turn", 393));
    // next step: read back; this `message_delta` repeats the (cumulative) input counts
    let mut read = vec![start_cached(35, 188_086, 0)];
    read.extend(text_block(0, &["Again."]));
    read.push(ev(
        "message_delta",
        &json!({"delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": 35, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 188_086, "output_tokens": 12}}),
    ));
    read.push(ev("message_stop", &json!({})));
    let body_of = |events: &[(Option<&str>, String)]| {
        let mut bytes = sse(events);
        let at = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        bytes.split_off(at)
    };
    let reply = served_every_way(&body_of(&written)).await;
    assert_eq!(
        reply.usage,
        retrace_providers::TokenUsage {
            input_tokens: 188_107,
            output_tokens: 393,
            cache_write_tokens: 188_086,
            ..Default::default()
        }
    );
    let reply = served_every_way(&body_of(&read)).await;
    assert_eq!(
        reply.usage,
        retrace_providers::TokenUsage {
            input_tokens: 188_121,
            output_tokens: 12,
            cache_read_tokens: 188_086,
            ..Default::default()
        }
    );
    // without the cache fields (servers that do not cache): input as given
    let mut plain = vec![start(40)];
    plain.extend(text_block(0, &["Hi."]));
    plain.extend(stop("end_turn", 3));
    let reply = served_every_way(&body_of(&plain)).await;
    assert_eq!(
        reply.usage,
        retrace_providers::TokenUsage {
            input_tokens: 40,
            output_tokens: 3,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn a_whole_json_message_is_read_as_the_reply_with_its_cache_usage() {
    // a server (or proxy) that answers one `message` although `stream: true` was sent
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-test", "stop_reason": "tool_use", "stop_sequence": null,
        "content": [
            {"type": "thinking", "thinking": "Need b.txt.", "signature": "SigWhole=="},
            {"type": "text", "text": "Reading b.txt."},
            {"type": "tool_use", "id": "toolu_w", "name": "fs__read", "input": {"path": "b.txt"}}
        ],
        "usage": {"input_tokens": 50, "cache_creation_input_tokens": 248,
            "cache_read_input_tokens": 1800, "output_tokens": 503}});
    let mut bytes = head("200 OK", &[("content-type", "application/json")]);
    bytes.extend_from_slice(message.to_string().as_bytes());
    let server = Server::start(vec![
        Reply::Pieces(vec![bytes.clone()], Duration::ZERO),
        Reply::Pieces(support::varied_split(&bytes), Duration::ZERO),
    ])
    .await;
    let provider = provider(&server);
    for _ in 0..2 {
        let (reply, deltas) = complete(&provider).await;
        let reply = reply.expect("a reply");
        assert_eq!(reply.text, "Reading b.txt.");
        assert_eq!(deltas, ["Reading b.txt."]);
        assert_eq!(reply.reasoning[0].text, "Need b.txt.");
        assert_eq!(reply.reasoning[0].signature.as_deref(), Some("SigWhole=="));
        assert_eq!(
            reply.tool_calls,
            [ToolCall {
                id: "toolu_w".into(),
                name: "fs.read".into(),
                arguments: json!({"path": "b.txt"}),
            }]
        );
        assert_eq!(reply.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            reply.usage,
            retrace_providers::TokenUsage {
                input_tokens: 2098,
                output_tokens: 503,
                cache_read_tokens: 1800,
                cache_write_tokens: 248,
                ..Default::default()
            }
        );
    }
}

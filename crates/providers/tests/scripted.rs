//! The scripted provider: replies by step, streams text, fails as scripted, explains an
//! exhausted or malformed cassette.

use retrace_providers::{ChatMessage, Delta, Error, ModelRequest, Provider, Scripted};

const CASSETTE: &str = r#"{"replies": [
  {"text": "Let me look.", "tool_calls": [{"id": "call_1", "name": "fs.read", "arguments": {"path": "README.md"}}],
   "usage": {"input_tokens": 10, "output_tokens": 5}},
  {"error": {"transient": true, "message": "overloaded"}},
  {"text": "All done here."}
]}"#;

fn request(step: u64) -> ModelRequest {
    ModelRequest {
        model: "demo".into(),
        system: "be brief".into(),
        messages: vec![std::sync::Arc::new(ChatMessage::User {
            content: "summarise the readme".into(),
        })],
        step,
        ..ModelRequest::default()
    }
}

fn cassette() -> (tempfile::TempDir, Scripted) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("demo.cassette.json");
    std::fs::write(&path, CASSETTE).expect("write");
    let scripted = Scripted::load(&path).expect("load");
    (dir, scripted)
}

#[tokio::test]
async fn replies_follow_the_step_and_stream_their_text() {
    let (_dir, provider) = cassette();
    let mut streamed = String::new();
    let mut sink = |d: Delta| {
        let Delta::Text(t) = d;
        streamed.push_str(&t);
    };
    let first = provider
        .complete(&request(0), &mut sink)
        .await
        .expect("reply");
    assert_eq!(first.tool_calls[0].name, "fs.read");
    assert_eq!(first.usage.input_tokens, 10);
    assert_eq!(first.stop_reason.as_deref(), Some("tool_use"));
    // the same step gives the same reply (a resumed run asks again)
    let again = provider
        .complete(&request(0), &mut |_| {})
        .await
        .expect("reply");
    assert_eq!(again, first);
    assert_eq!(streamed, "Let me look.");

    let third = provider
        .complete(&request(2), &mut |_| {})
        .await
        .expect("reply");
    assert_eq!(third.text, "All done here.");
    assert!(
        third.usage.input_tokens > 0,
        "usage is estimated when not scripted"
    );
}

#[tokio::test]
async fn scripted_failures_and_an_exhausted_cassette_are_typed_errors() {
    let (_dir, provider) = cassette();
    let err = provider
        .complete(&request(1), &mut |_| {})
        .await
        .expect_err("scripted failure");
    assert!(err.is_transient(), "{err}");
    let err = provider
        .complete(&request(3), &mut |_| {})
        .await
        .expect_err("no fourth reply");
    assert!(matches!(err, Error::Permanent { .. }));
    assert!(
        err.to_string()
            .contains("has 3 replies; the run asked for reply 4"),
        "{err}"
    );
}

#[test]
fn a_malformed_cassette_is_refused_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "{\"replies\": [\n  {\"txet\": \"typo\"}\n]}").expect("write");
    let err = Scripted::load(&path).expect_err("unknown field");
    let msg = err.to_string();
    assert!(
        msg.contains("bad.json:2:") && msg.contains("unknown field `txet`"),
        "{msg}"
    );
    let err = Scripted::load(&dir.path().join("missing.json")).expect_err("missing file");
    assert!(err.to_string().contains("cannot read cassette"), "{err}");
}

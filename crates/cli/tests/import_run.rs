//! `retrace import-run` through the real binary on the recordings in
//! `shared/cases/traces/` (beside the clone): the format told from the file, the run verified,
//! a tool result shown as the source recorded it, the request of a model call rebuilt, a
//! second import finding the run, and bad input refused with nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{log_json, retrace, text};

fn case(path: &str) -> PathBuf {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/cases/traces")
        .join(path);
    assert!(
        file.is_file(),
        "missing trace case {} (the `shared/` directory beside the clone)",
        file.display()
    );
    file
}

/// Import `file` as `format` into `store`; the run id printed.
fn import(store: &Path, format: &str, file: &Path) -> String {
    let out = retrace(store, &["import-run", format, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    printed
        .split(" as run ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {printed}"))
        .to_owned()
}

#[test]
fn a_codex_rollout_imports_verifies_and_shows_its_tool_output() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = case("codex/rollout-0.125.jsonl");
    let out = retrace(&store, &["import-run", "auto", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.starts_with("imported codex as run "), "{printed}");
    assert!(printed.contains("386 lines"), "{printed}");
    assert!(
        printed.contains("66 calls (0 failed), 6055836 tokens in, 9118 out"),
        "{printed}"
    );
    assert!(printed.contains("105 calls, 4 errors"), "{printed}");
    assert!(
        printed.contains("event_msg/exec_command_end 43"),
        "{printed}"
    );
    let run = import(&store, "codex", &file);
    let again = retrace(&store, &["import-run", "codex", file.to_str().unwrap()]);
    assert!(text(&again).starts_with("already imported codex as run "));

    let verify = retrace(&store, &["verify", &run]);
    assert!(verify.status.success(), "{}", text(&verify));

    // the write_stdin result that says stdin was closed, shown as recorded
    let log = log_json(&store, &run);
    let seq = log
        .iter()
        .find(|e| e["kind"] == "tool_returned" && e["call_id"] == "call_T8WFc2EjJV2QZKr07SfDPwmE")
        .and_then(|e| e["seq"].as_u64())
        .expect("the result");
    let show = retrace(&store, &["show", &format!("{run}@{seq}")]);
    assert!(show.status.success(), "{}", text(&show));
    assert!(
        text(&show).contains("write_stdin failed: stdin is closed for this session; rerun "),
        "{}",
        text(&show)
    );
    // what the model saw at its second call: the typed task after the injected context
    let asked = log
        .iter()
        .filter(|e| e["kind"] == "model_requested")
        .nth(1)
        .and_then(|e| e["seq"].as_u64())
        .unwrap();
    let request = retrace(&store, &["show", &format!("{run}@{asked}"), "--request"]);
    assert!(request.status.success(), "{}", text(&request));
    assert!(text(&request).contains("show tools"), "{}", text(&request));
}

#[test]
fn claude_code_sessions_import_with_rejections_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let run = import(&store, "auto", &case("claude-code/rejected-tool-use.jsonl"));
    let log = log_json(&store, &run);
    let denied: Vec<&str> = log
        .iter()
        .filter(|e| e["kind"] == "approval_decided")
        .map(|e| e["decision"].as_str().unwrap())
        .collect();
    assert_eq!(denied, ["denied", "denied"]);
    let compacted = import(
        &store,
        "claude-code",
        &case("claude-code/compact-and-errors.jsonl"),
    );
    let log = log_json(&store, &compacted);
    assert_eq!(
        log.iter()
            .filter(|e| e["kind"] == "context_compacted")
            .count(),
        1
    );
    let runs = retrace(&store, &["runs"]);
    assert!(runs.status.success(), "{}", text(&runs));
    let verify = retrace(&store, &["verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    // two imported runs diff like any two runs
    let diff = retrace(&store, &["diff", &run, &compacted]);
    assert!(
        diff.status.code().is_some_and(|c| c <= 1),
        "{}",
        text(&diff)
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let claude = case("claude-code/small-session.jsonl");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "hello world\n").unwrap();
    for (args, says) in [
        (
            vec!["import-run", "codex", claude.to_str().unwrap()],
            "is not a codex recording: no line is a `response_item` with a `payload`",
        ),
        (
            vec!["import-run", "auto", empty.to_str().unwrap()],
            "empty.jsonl is empty: there is nothing to import",
        ),
        (
            vec!["import-run", "auto", notes.to_str().unwrap()],
            "cannot tell the format of",
        ),
        (
            vec!["import-run", "langfuse", claude.to_str().unwrap()],
            "unknown format `langfuse`; one of: claude-code, codex, otel-genai, mini-swe-agent, auto",
        ),
    ] {
        let out = retrace(&store, &args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert!(!store.exists(), "a refused import created the store");
}

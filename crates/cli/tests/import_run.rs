//! `retrace import-run` through the real binary on the recordings in
//! `shared/cases/traces/` (beside the clone): the format told from the file, the run verified,
//! a tool result shown as the source recorded it, the request of a model call rebuilt, a
//! second import finding the run, and bad input refused with nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{import_run as import, log_json, retrace, text};

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

#[test]
fn a_codex_rollout_imports_verifies_and_shows_its_tool_output() {
    let dir = tempfile::tempdir().expect("fixture");
    let store = dir.path().join("store");
    let file = case("codex/rollout-0.125.jsonl");
    let out = retrace(
        &store,
        &["import-run", "auto", file.to_str().expect("fixture")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.starts_with("imported codex as run "), "{printed}");
    assert!(printed.contains("386 lines, 747877 bytes"), "{printed}");
    assert!(
        printed.contains("model calls  66 (failed 0), tokens 6055836 in / 9118 out"),
        "{printed}"
    );
    assert!(
        printed.contains("tool calls   105, errors 4 (rejected by the user 0), without a result 0"),
        "{printed}"
    );
    assert!(
        printed.contains("event_msg/exec_command_end 43"),
        "{printed}"
    );
    let run = import(&store, "codex", &file);
    let again = retrace(
        &store,
        &["import-run", "codex", file.to_str().expect("fixture")],
    );
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
    // what the rollout said beyond the event: the output item's envelope
    assert!(
        text(&show).contains("from the imported recording, beyond the event's fields:"),
        "{}",
        text(&show)
    );
    // a command's result keeps its exec_command_end (exit code, duration, output)
    let started = log
        .iter()
        .find(|e| e["kind"] == "tool_returned" && e["call_id"] == "call_NqXBF7JK4NH5M85YXgojxxmC")
        .and_then(|e| e["seq"].as_u64())
        .expect("fixture");
    let show = retrace(&store, &["show", &format!("{run}@{started}"), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("fixture");
    let ends: Vec<&serde_json::Value> = shown["source_extra"]
        .as_array()
        .expect("fixture")
        .iter()
        .filter(|x| x["type"] == "exec_command_end")
        .collect();
    assert_eq!(ends.len(), 1, "{shown}");
    assert_eq!(ends[0]["exit_code"], 2);
    // what the model saw at its second call: the typed task after the injected context
    let asked = log
        .iter()
        .filter(|e| e["kind"] == "model_requested")
        .nth(1)
        .and_then(|e| e["seq"].as_u64())
        .expect("fixture");
    let request = retrace(&store, &["show", &format!("{run}@{asked}"), "--request"]);
    assert!(request.status.success(), "{}", text(&request));
    assert!(text(&request).contains("show tools"), "{}", text(&request));
    // the tools the session called are offered (so a real model in an eval can call them)
    for tool in [
        "exec_command",
        "write_stdin",
        "apply_patch",
        "update_plan",
        "web_search",
    ] {
        assert!(text(&request).contains(tool), "{tool}: {}", text(&request));
    }
}

#[test]
fn claude_code_sessions_import_with_rejections_and_compactions() {
    let dir = tempfile::tempdir().expect("fixture");
    let store = dir.path().join("store");
    let run = import(&store, "auto", &case("claude-code/rejected-tool-use.jsonl"));
    let log = log_json(&store, &run);
    let denied: Vec<&str> = log
        .iter()
        .filter(|e| e["kind"] == "approval_decided")
        .map(|e| e["decision"].as_str().expect("fixture"))
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
    // another agent decided these runs: the determinism check has nothing to check
    let check = retrace(&store, &["check", "--all"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains(&format!("skip  {run}  imported from claude-code")),
        "{}",
        text(&check)
    );
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
    let dir = tempfile::tempdir().expect("fixture");
    let store = dir.path().join("store");
    let claude = case("claude-code/small-session.jsonl");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").expect("fixture");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "hello world\n").expect("fixture");
    for (args, says) in [
        (
            vec!["import-run", "codex", claude.to_str().expect("fixture")],
            "is not a recording of format codex: no line is a `response_item` with a `payload`",
        ),
        (
            vec!["import-run", "auto", empty.to_str().expect("fixture")],
            "empty.jsonl is empty: there is nothing to import",
        ),
        (
            vec!["import-run", "auto", notes.to_str().expect("fixture")],
            "cannot tell the format of",
        ),
        (
            vec!["import-run", "langfuse", claude.to_str().expect("fixture")],
            "unknown format `langfuse`; one of: claude-code, codex, otel-genai, mini-swe-agent, auto",
        ),
    ] {
        let out = retrace(&store, &args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert!(!store.exists(), "a refused import created the store");
}

/// Import `file`, write its replies as a cassette, and evaluate today's agent against the
/// recording with the scripted provider playing them: the eval's JSON report.
fn eval_against(dir: &Path, file: &Path, edit: Option<(usize, &str)>) -> (bool, serde_json::Value) {
    let store = dir.join("store");
    let run = import(&store, "auto", file);
    let cassette = dir.join("replies.json");
    let out = retrace(
        &store,
        &["cassette", &run, "-o", cassette.to_str().expect("fixture")],
    );
    assert!(out.status.success(), "{}", text(&out));
    if let Some((step, said)) = edit {
        let mut replies: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cassette).expect("fixture")).expect("fixture");
        replies["replies"][step]["text"] = said.into();
        std::fs::write(&cassette, replies.to_string()).expect("fixture");
    }
    let suite = dir.join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "name = \"baseline\"\n\n[[case]]\nname = \"today's agent against the recording\"\nrun = \"{run}\"\nfork_at = 0\n\n[case.override]\ncassette = \"replies.json\"\n"
        ),
    )
    .expect("fixture");
    let report = dir.join("report.json");
    let out = retrace(
        &store,
        &[
            "eval",
            suite.to_str().expect("fixture"),
            "--json",
            report.to_str().expect("fixture"),
        ],
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("fixture"))
            .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out.status.success(), report)
}

#[test]
fn imported_runs_are_eval_baselines() {
    for file in [
        case("codex/rollout-0.125.jsonl"),
        case("claude-code/small-session.jsonl"),
    ] {
        // the recorded replies played back: today's agent does what the recording did,
        // turn by turn (the recording's later prompts given back where they came)
        let dir = tempfile::tempdir().expect("fixture");
        let (passed, report) = eval_against(dir.path(), &file, None);
        let case = &report["cases"][0];
        assert!(passed, "{}: {report:#}", file.display());
        assert_eq!(
            case["first_divergence"],
            serde_json::Value::Null,
            "{report:#}"
        );

        // one reply said otherwise: the report names where the run parts from the recording
        let dir = tempfile::tempdir().expect("fixture");
        let (passed, report) = eval_against(dir.path(), &file, Some((1, "I would rather not.")));
        assert!(!passed, "{}: {report:#}", file.display());
        let store = dir.path().join("store");
        let recording = report["cases"][0]["recording"]
            .as_str()
            .expect("fixture")
            .to_owned();
        let divergence = report["cases"][0]["first_divergence"]
            .as_u64()
            .expect("a divergence");
        // the second reply is where it parts (a seq of the recording)
        let replies: Vec<u64> = log_json(&store, &recording)
            .iter()
            .filter(|e| e["kind"] == "model_responded")
            .map(|e| e["seq"].as_u64().expect("fixture"))
            .collect();
        assert_eq!(divergence, replies[1], "{}: {report:#}", file.display());
    }
}

//! Every recording in `shared/cases/traces/` (beside the clone) imported into a real store on
//! disk, the written run checked against figures derived by hand from each file (python
//! over the raw lines, following the format notes in that folder's README): model calls,
//! tool calls, errors, rejections, compactions, user messages, tokens, exact texts. Each run
//! verifies, folds, and every model call's request rebuilds.

use std::path::{Path, PathBuf};

use retrace_events::{Decision, Event, EventKind, Outcome, RunId};
use retrace_import::{Format, Source};
use retrace_replay::{fold, request};
use retrace_store::{Store, VerifyOptions, verify_run};
use retrace_store_sled::SledStore;
use serde_json::Value;

fn case(path: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/cases/traces");
    assert!(
        dir.is_dir(),
        "the trace cases are missing: expected {} (the `shared/` directory beside the clone)",
        dir.display()
    );
    dir.join(path)
}

fn source(path: &str) -> Source {
    let file = case(path);
    Source {
        name: path.to_owned(),
        bytes: std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
    }
}

/// What a written run holds, counted from its events.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    model_calls: u64,
    model_failures: u64,
    tool_calls: u64,
    tool_errors: u64,
    rejected: u64,
    compactions: u64,
    user_messages: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_micro_usd: u64,
}

struct Imported {
    _dir: tempfile::TempDir,
    store: SledStore,
    run: RunId,
    events: Vec<Event>,
}

impl Imported {
    fn blob(&self, id: &retrace_events::BlobId) -> Value {
        serde_json::from_slice(&self.store.blob(id).expect("fixture").expect("fixture"))
            .expect("fixture")
    }

    fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for e in &self.events {
            match &e.kind {
                EventKind::ModelResponded { usage, .. } => {
                    t.model_calls += 1;
                    t.input_tokens += usage.input_tokens;
                    t.output_tokens += usage.output_tokens;
                    t.cost_micro_usd += usage.cost_micro_usd;
                }
                EventKind::ModelFailed { .. } => t.model_failures += 1,
                EventKind::ToolRequested { .. } => t.tool_calls += 1,
                EventKind::ToolReturned { is_error: true, .. } => t.tool_errors += 1,
                EventKind::ApprovalDecided {
                    decision: Decision::Denied,
                    ..
                } => t.rejected += 1,
                EventKind::ContextCompacted { .. } => t.compactions += 1,
                EventKind::SignalReceived { name, .. } if name == "user_message" => {
                    t.user_messages += 1;
                }
                _ => {}
            }
        }
        t
    }

    /// The task the run started with.
    fn task(&self) -> String {
        match &self.events[0].kind {
            EventKind::RunStarted { input, .. } => {
                self.blob(input).as_str().expect("fixture").to_owned()
            }
            other => panic!("first event {other:?}"),
        }
    }

    /// The run's final output.
    fn finish(&self) -> (Outcome, Value) {
        match &self.events.last().expect("fixture").kind {
            EventKind::RunFinished { outcome, detail } => (*outcome, self.blob(detail)),
            other => panic!("last event {other:?}"),
        }
    }

    /// The output recorded for `call_id`, and whether it was an error.
    fn result(&self, call_id: &str) -> (String, bool) {
        self.events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::ToolReturned {
                    call_id: c,
                    output,
                    is_error,
                    ..
                } if c == call_id => Some((
                    self.blob(output).as_str().unwrap_or_default().to_owned(),
                    *is_error,
                )),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no result for {call_id}"))
    }

    /// The spec's import record.
    fn origin(&self) -> Value {
        match &self.events[0].kind {
            EventKind::RunStarted { spec, .. } => self.blob(spec)["imported"].clone(),
            other => panic!("first event {other:?}"),
        }
    }
}

fn import(format: Format, path: &str) -> Imported {
    let source = source(path);
    let transcript = retrace_import::parse(format, std::slice::from_ref(&source))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let dir = tempfile::tempdir().expect("fixture");
    let store = SledStore::open(dir.path()).expect("fixture");
    let done = retrace_import::write(
        &store,
        &transcript,
        std::slice::from_ref(&source),
        None,
        retrace_events::Timestamp(1),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(done.created);
    let head = store
        .run(&done.run)
        .expect("fixture")
        .expect("fixture")
        .head
        .expect("fixture");
    let events: Vec<Event> = store
        .events(&done.run, 0..=head.seq)
        .expect("fixture")
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(done.events, events.len() as u64);
    // it verifies (chain and blobs), folds to a finished run, and every request rebuilds
    let verified = verify_run(&store, &done.run, VerifyOptions { blobs: true }).expect("fixture");
    assert!(verified.problem.is_none(), "{path}: {:?}", verified.problem);
    let state = fold(events.iter()).unwrap_or_else(|(seq, e)| panic!("{path} @{seq}: {e}"));
    assert!(state.is_finished());
    for e in &events {
        if matches!(e.kind, EventKind::ModelRequested { .. }) {
            let rebuilt = request::rebuild(&store, &done.run, e.seq)
                .unwrap_or_else(|err| panic!("{path} @{}: {err}", e.seq));
            assert!(!rebuilt.request.messages.is_empty());
        }
    }
    // the spec says where the run came from
    let run = Imported {
        _dir: dir,
        store,
        run: done.run,
        events,
    };
    let origin = run.origin();
    assert_eq!(origin["format"], format.name());
    assert_eq!(
        origin["files"][0]["blake3"],
        blake3::hash(&source.bytes).to_hex().as_str()
    );
    assert_eq!(origin["files"][0]["bytes"], source.bytes.len() as u64);
    // the same file again: the run is already there
    let again = retrace_import::write(
        &run.store,
        &retrace_import::parse(format, std::slice::from_ref(&source)).expect("fixture"),
        std::slice::from_ref(&source),
        None,
        retrace_events::Timestamp(2),
    )
    .expect("fixture");
    assert!(!again.created);
    assert_eq!(again.run, run.run);
    run
}

#[test]
fn claude_code_small_session() {
    let run = import(Format::ClaudeCode, "claude-code/small-session.jsonl");
    assert_eq!(
        run.tally(),
        Tally {
            model_calls: 7,
            tool_calls: 6,
            user_messages: 2,
            // input + cache_creation + cache_read of the last line of each message id
            input_tokens: 251_832,
            output_tokens: 806,
            ..Tally::default()
        }
    );
    assert_eq!(run.task(), "create hello.py, md and js");
    assert_eq!(
        run.finish(),
        (
            Outcome::Succeeded,
            serde_json::json!({"output": "Done! I've deleted hello.js."})
        )
    );
    assert_eq!(
        run.result("toolu_bdrk_01QRsKSkDDpcbN5DcZGF6N69"),
        (
            "File created successfully at: /tmp/private/hello.py".to_owned(),
            false
        )
    );
    // one reply written as four lines (text + three Write calls) is one call proposing three
    let proposals: Vec<usize> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallsProposed { calls, .. } => Some(calls.len()),
            _ => None,
        })
        .collect();
    assert_eq!(proposals, [3, 1, 1, 1]);
    // the source's times: first and last event
    assert_eq!(run.events[0].at.0, 1_765_395_465_343); // 2025-12-10T19:37:45.343Z
    assert_eq!(run.events.last().expect("fixture").at.0, 1_765_395_511_216); // 19:38:31.216Z
    assert_eq!(run.origin()["report"]["kept"]["file-history-snapshot"], 6);
}

#[test]
fn claude_code_compaction_and_failing_commands() {
    let run = import(Format::ClaudeCode, "claude-code/compact-and-errors.jsonl");
    assert_eq!(
        run.tally(),
        Tally {
            model_calls: 12,
            tool_calls: 10,
            tool_errors: 2,
            compactions: 1,
            // four typed prompts (the /compact command and its output are the CLI's own)
            user_messages: 4,
            input_tokens: 231_864,
            output_tokens: 1_480,
            ..Tally::default()
        }
    );
    assert_eq!(run.task(), "can you run a command ls -la ");
    let (out, is_error) = run.result("toolu_019doGxDkQSYiVCqN4AXSfQW");
    assert!(is_error);
    assert!(out.starts_with("Exit code 1"), "{out}");
    assert!(run.result("toolu_018vFotHvxxm3NcDcXDk1wSh").1);
    let summary = run
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ContextCompacted {
                summary: Some(s), ..
            } => Some(run.blob(s)),
            _ => None,
        })
        .expect("fixture");
    assert!(
        summary
            .as_str()
            .expect("fixture")
            .starts_with("This session is being continued from a previous conversation"),
        "{summary}"
    );
    let (outcome, detail) = run.finish();
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(
        detail["output"]
            .as_str()
            .expect("fixture")
            .starts_with("Great! Here's what I did across multiple tool calls:"),
        "{detail}"
    );
    assert_eq!(
        run.origin()["report"]["kept"]["system/stop_hook_summary"],
        5
    );
    assert_eq!(run.origin()["report"]["kept"]["user/local command"], 2);
}

#[test]
fn claude_code_rejected_tool_uses_are_denials() {
    let run = import(Format::ClaudeCode, "claude-code/rejected-tool-use.jsonl");
    assert_eq!(
        run.tally(),
        Tally {
            model_calls: 1,
            tool_calls: 2,
            tool_errors: 2,
            rejected: 2,
            // "[Request interrupted by user for tool use]"
            user_messages: 1,
            input_tokens: 25_353,
            output_tokens: 13,
            ..Tally::default()
        }
    );
    assert_eq!(run.task(), "mix phx.server doesnt seem to start");
    let (out, is_error) = run.result("toolu_0116Hyi5v8ut7Ffb7d8qV1Sc");
    assert!(is_error);
    assert!(out.starts_with("The user doesn't want to proceed with this tool use."));
    // denied by the user, before the call's (error) result
    let decided: Vec<(&str, &str)> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ApprovalDecided { call_id, by, .. } => Some((call_id.as_str(), by.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(decided.len(), 2);
    assert!(decided.iter().all(|(_, by)| *by == "user"));
    // the reply's text and its thinking block
    let reply = run
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ModelResponded { response, .. } => Some(run.blob(response)),
            _ => None,
        })
        .expect("fixture");
    assert_eq!(
        reply["text"],
        "Let me check the project structure and try running the server to see the error."
    );
    assert_eq!(reply["reasoning"].as_array().expect("fixture").len(), 1);
    // the user stopped it
    assert_eq!(
        run.finish(),
        (
            Outcome::Cancelled,
            serde_json::json!({"reason": "[Request interrupted by user for tool use]"})
        )
    );
}

#[test]
fn codex_rollout() {
    let run = import(Format::Codex, "codex/rollout-0.125.jsonl");
    assert_eq!(
        run.tally(),
        Tally {
            model_calls: 66,
            // 99 function calls, 3 apply_patch, 3 web searches
            tool_calls: 105,
            // write_stdin polls that saw their command exit non-zero
            tool_errors: 4,
            // the second typed prompt
            user_messages: 1,
            input_tokens: 6_055_836,
            output_tokens: 9_118,
            ..Tally::default()
        }
    );
    // the AGENTS.md block Codex injects is context, not the task
    assert_eq!(run.task(), "show tools");
    for (call, code) in [
        ("call_6YhDEiPvTJjMNdn6h89qlZOC", 2),
        ("call_niqqK8Zis60Tze83ulvh2F6Q", 1),
        ("call_Bl9T10SnkFx3d7cIuJXmzy4Y", 1),
        ("call_PAoFGDC6cPakVp8JImcOm2uB", 1),
    ] {
        let (out, is_error) = run.result(call);
        assert!(is_error, "{call}");
        assert!(
            out.contains(&format!("Process exited with code {code}")),
            "{call}: {out}"
        );
    }
    let (out, is_error) = run.result("call_T8WFc2EjJV2QZKr07SfDPwmE");
    assert!(!is_error);
    assert!(out.starts_with("write_stdin failed: stdin is closed for this session; rerun "));
    assert!(
        run.finish().1["output"]
            .as_str()
            .expect("fixture")
            .starts_with("Implemented the default context compaction setting as `threshold: 0.9`")
    );
    let tools: std::collections::BTreeSet<&str> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolRequested { tool, .. } => Some(tool.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        tools.into_iter().collect::<Vec<_>>(),
        [
            "apply_patch",
            "exec_command",
            "update_plan",
            "web_search",
            "write_stdin"
        ]
    );
}

#[test]
fn otel_genai_openai_agents() {
    let run = import(Format::OtelGenai, "otel-genai/OPENAI_trace.json");
    assert_eq!(
        run.tally(),
        Tally {
            model_calls: 3,
            tool_calls: 2,
            input_tokens: 1_020,
            output_tokens: 76,
            // each call's input_cost + output_cost in millionths of a dollar, rounded:
            // 31.7 + 40.1 + 53.0 ($0.0001248 in all)
            cost_micro_usd: 125,
            ..Tally::default()
        }
    );
    assert!(run.task().starts_with(
        "Find what year it is in the America/New_York timezone and write the value (single "
    ));
    let calls: Vec<String> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolRequested { tool, .. } => Some(tool.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["get_current_time", "write_file"]);
    let out = run
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolReturned { output, .. } => Some(run.blob(output)),
            _ => None,
        })
        .expect("fixture");
    assert!(
        out.as_str()
            .expect("fixture")
            .contains("\"datetime\": \"2025-09-16T08:43:13-04:00\"")
    );
}

#[test]
fn otel_genai_langchain() {
    let run = import(Format::OtelGenai, "otel-genai/LANGCHAIN_trace.json");
    assert_eq!(
        run.tally(),
        Tally {
            model_calls: 4,
            tool_calls: 2,
            input_tokens: 1_262,
            output_tokens: 125,
            // per call, rounded: 29.3 + 37.3 + 46.49… + 50.59… ($0.0001637 in all)
            cost_micro_usd: 163,
            ..Tally::default()
        }
    );
}

#[test]
fn mini_swe_agent_trajectory() {
    let run = import(
        Format::MiniSweAgent,
        "mini-swe-agent/django__django-16255.traj.json",
    );
    assert_eq!(
        run.tally(),
        Tally {
            model_calls: 17,
            tool_calls: 17,
            input_tokens: 61_068,
            output_tokens: 2_317,
            // each call's usage.cost in millionths of a dollar, summed (the unrounded sum is
            // info.model_stats.instance_cost, $0.0893484)
            cost_micro_usd: 89_350,
            ..Tally::default()
        }
    );
    assert!(run.task().starts_with(
        "<pr_description>\nConsider the following PR description:\nSitemaps without items r"
    ));
    assert_eq!(
        run.result("call-14"),
        (
            "<returncode>0</returncode>\n<output>\ntests/runtests.py\n</output>".to_owned(),
            false
        )
    );
    let (outcome, detail) = run.finish();
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(
        detail["output"]
            .as_str()
            .expect("fixture")
            .starts_with("diff --git")
    );
    // created (epoch seconds) is the only time in the file
    assert_eq!(run.events.last().expect("fixture").at.0, 1_763_510_028_000);
}

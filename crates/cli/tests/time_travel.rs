//! Time travel and resume that are right everywhere, through the real binary: an edited
//! reply is followed exactly as a recorded one (its log compared event by event with a run
//! that got that reply), edits that are not of the event's kind are refused, a resume acts
//! only in the run's own workspace, and what the CLI prints tells a person what to do next.

mod common;

use std::path::{Path, PathBuf};

use common::{
    example, example_run, fork_id_of, log_json as log, normalised, retrace, run_agent, run_id_of,
    text,
};
use serde_json::{Value, json};

/// Undo what a run of the tidy example under `dir` wrote (its summary), so another run
/// sees the workspace the first one saw.
fn clean(dir: &Path) {
    let out = dir.join("tidy/workspace/out");
    if out.exists() {
        std::fs::remove_dir_all(out).expect("rm out/");
    }
}

/// The tidy example under `dir/name`, playing `replies` instead of its cassette.
fn tidy_with(dir: &Path, name: &str, replies: &[Value]) -> PathBuf {
    let spec = example("tidy", &dir.join(name));
    std::fs::write(
        spec.with_file_name("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("write cassette");
    spec
}

/// The tidy example's replies, each with fixed usage (so a reply's tokens do not depend on
/// the conversation before it).
fn tidy_replies() -> Vec<Value> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tidy/cassette.json"),
    )
    .expect("the tidy cassette");
    let cassette: Value = serde_json::from_str(&text).expect("JSON");
    cassette["replies"]
        .as_array()
        .expect("replies")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["usage"] = json!({"input_tokens": 100, "output_tokens": 10});
            r
        })
        .collect()
}

/// Fork the tidy run at its `step`-th reply with `edited` (a cassette reply), continue the
/// fork, and compare its log event by event with a run whose cassette had `edited` at that
/// step. `after` are the replies both cassettes hold after that step.
fn fork_matches_a_run_that_got_that_reply(step: usize, edited: &Value, after: &[Value]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let original = tidy_replies();
    // the original run: its cassette goes on with `after` past the replies it played
    let mut a = original[..=step].to_vec();
    a.extend_from_slice(after);
    let out = run_agent(
        &store,
        &tidy_with(dir.path(), "a", &a),
        "Summarise this project",
    );
    let run = run_id_of(&out);
    let events = log(&store, &run);
    let at = events
        .iter()
        .filter(|e| e["kind"] == "model_responded")
        .nth(step)
        .expect("the reply at that step")["seq"]
        .as_u64()
        .expect("seq");

    // the edit is the reply as a provider would have recorded it
    let mut reply = edited.clone();
    let calls = reply.get("tool_calls").cloned().unwrap_or(json!([]));
    reply["tool_calls"] = calls.clone();
    reply["stop_reason"] = json!(if calls.as_array().is_some_and(Vec::is_empty) {
        "end_turn"
    } else {
        "tool_use"
    });
    let edit = dir.path().join("reply.json");
    std::fs::write(&edit, reply.to_string()).expect("write edit");
    let out = retrace(
        &store,
        &[
            "fork",
            &format!("{run}@{at}"),
            "--edit",
            edit.to_str().expect("utf-8"),
        ],
    );
    let fork = fork_id_of(&out);
    // the world as it was before the original run wrote its summary
    clean(&dir.path().join("a"));
    let out = retrace(&store, &["resume", &fork]);
    assert!(out.status.success(), "{}", text(&out));

    // the same task, with a model that gave the edited reply in the first place
    let mut b = original[..step].to_vec();
    b.push(edited.clone());
    b.extend_from_slice(after);
    let out = run_agent(
        &store,
        &tidy_with(dir.path(), "b", &b),
        "Summarise this project",
    );
    assert!(out.status.success(), "{}", text(&out));
    let direct = run_id_of(&out);

    let forked: Vec<Value> = log(&store, &fork)
        .into_iter()
        .skip(1)
        .map(normalised)
        .collect();
    let direct: Vec<Value> = log(&store, &direct)
        .into_iter()
        .skip(1)
        .map(normalised)
        .collect();
    assert_eq!(
        forked.len(),
        direct.len(),
        "fork:\n{forked:#?}\ndirect:\n{direct:#?}"
    );
    for (f, d) in forked.iter().zip(&direct) {
        assert_eq!(f, d, "the fork and the direct run differ");
    }
    assert_eq!(forked.last().expect("events")["kind"], "run_finished");
}

#[test]
fn an_edited_reply_that_adds_a_tool_call_continues_as_a_run_with_that_reply() {
    // the final answer (step 3) becomes a call to read the calculator
    fork_matches_a_run_that_got_that_reply(
        3,
        &json!({
            "text": "Let me read the calc.",
            "tool_calls": [{"id": "c9", "name": "fs.read", "arguments": {"path": "src/calc.txt"}}],
            "usage": {"input_tokens": 100, "output_tokens": 10}
        }),
        &[json!({"text": "Done, having read the calculator.",
                 "usage": {"input_tokens": 100, "output_tokens": 10}})],
    );
}

#[test]
fn an_edited_reply_that_removes_or_changes_tool_calls_continues_as_a_run_with_that_reply() {
    // step 1 read the README and searched: now it answers at once
    fork_matches_a_run_that_got_that_reply(
        1,
        &json!({"text": "Nothing to read; done.",
                "usage": {"input_tokens": 100, "output_tokens": 10}}),
        &[],
    );
    // step 0 listed the files: now it reads the README instead, then goes on as recorded
    let rest = tidy_replies()[1..].to_vec();
    fork_matches_a_run_that_got_that_reply(
        0,
        &json!({
            "text": "Straight to the README.",
            "tool_calls": [{"id": "r1", "name": "fs.read", "arguments": {"path": "README.md"}}],
            "usage": {"input_tokens": 100, "output_tokens": 10}
        }),
        &rest,
    );
}

#[test]
fn a_fork_after_a_reply_with_calls_runs_those_calls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = example_run(dir.path(), "tidy", "Summarise this project");
    let events = log(&store, &run);
    let reply = events
        .iter()
        .find(|e| e["kind"] == "model_responded")
        .expect("a reply")["seq"]
        .as_u64()
        .expect("seq");
    let fork = fork_id_of(&retrace(&store, &["fork", &format!("{run}@{reply}")]));
    clean(dir.path());
    let out = retrace(&store, &["resume", &fork]);
    assert!(out.status.success(), "{}", text(&out));
    let forked = log(&store, &fork);
    let original: Vec<Value> = events.into_iter().map(normalised).collect();
    let forked: Vec<Value> = forked.into_iter().map(normalised).collect();
    assert_eq!(forked, original, "the fork did what the original did");
}

#[test]
fn an_edited_reply_s_event_and_blob_agree_on_its_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = example_run(dir.path(), "tidy", "Summarise this project");
    let last = log(&store, &run)
        .into_iter()
        .rfind(|e| e["kind"] == "model_responded")
        .expect("a reply");
    let at = format!("{run}@{}", last["seq"]);
    let edit = dir.path().join("edit.json");
    for (value, tokens) in [
        (
            json!({"text": "done", "usage": {"input_tokens": 1000, "output_tokens": 7}}),
            (json!(1000), json!(7)),
        ),
        (
            json!({"text": "done"}),
            (
                last["usage"]["input_tokens"].clone(),
                last["usage"]["output_tokens"].clone(),
            ),
        ),
    ] {
        std::fs::write(&edit, value.to_string()).expect("write");
        let fork = fork_id_of(&retrace(
            &store,
            &["fork", &at, "--edit", edit.to_str().expect("utf-8")],
        ));
        let shown = retrace(
            &store,
            &["show", &format!("{fork}@{}", last["seq"]), "--json"],
        );
        let shown: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
        let usage = &shown["event"]["usage"];
        let reply = shown["payloads"]
            .as_object()
            .expect("payloads")
            .values()
            .next()
            .expect("reply");
        assert_eq!(
            (&usage["input_tokens"], &usage["output_tokens"]),
            (&tokens.0, &tokens.1),
            "{shown}"
        );
        assert_eq!(
            (
                &reply["usage"]["input_tokens"],
                &reply["usage"]["output_tokens"]
            ),
            (&tokens.0, &tokens.1),
            "{shown}"
        );
    }
}

#[test]
fn edits_that_are_not_of_the_event_s_kind_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = example_run(dir.path(), "approval", "Note the release date");
    let events = log(&store, &run);
    let seq_of = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind}"))["seq"]
            .as_u64()
            .expect("seq")
    };
    let reply = seq_of("model_responded");
    let runs_before = retrace(&store, &["runs", "--json"]).stdout;
    let edit = dir.path().join("edit.json");
    for (value, expected) in [
        (
            r#""just a string""#,
            "must be a JSON object, found a string",
        ),
        (r#"{"txt": "I am done"}"#, "unknown field `txt`"),
        (r#"{"entries": []}"#, "unknown field `entries`"),
        ("{}", "neither `text` nor `tool_calls`"),
        (
            r#"{"tool_calls": [{"id": "x", "name": "fs.read", "arguments": "README.md"}]}"#,
            "arguments must be a JSON object",
        ),
    ] {
        std::fs::write(&edit, value).expect("write edit");
        let out = retrace(
            &store,
            &[
                "fork",
                &format!("{run}@{reply}"),
                "--edit",
                edit.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{value}: {}", text(&out));
        assert!(text(&out).contains(expected), "{value}: {}", text(&out));
        assert!(text(&out).contains("edit.json"), "{}", text(&out));
    }
    assert_eq!(
        retrace(&store, &["runs", "--json"]).stdout,
        runs_before,
        "a refused edit created a run"
    );
}

#[test]
fn a_run_resumed_from_another_directory_writes_only_in_its_own_workspace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("approval", dir.path());
    let store = dir.path().join("store");
    // started with a relative spec path from the example's parent directory
    let out = common::command(&store)
        .current_dir(dir.path())
        .args([
            "run",
            "approval/agent.toml",
            "--input",
            "Note the release date",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let run = run_id_of(&out);
    // the recorded spec holds absolute paths
    let shown = retrace(&store, &["show", &format!("{run}@0"), "--json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    let spec_json = shown["payloads"]
        .as_object()
        .expect("payloads")
        .values()
        .find(|p| p.get("workspace").is_some())
        .expect("the spec")
        .clone();
    let workspace = spec.parent().expect("dir").join("workspace");
    assert_eq!(
        spec_json["workspace"],
        json!(workspace.canonicalize().expect("exists")),
        "{spec_json}"
    );

    // approve and resume from a directory that has an `approval/workspace` of its own
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("approval/workspace")).expect("mkdir");
    for args in [vec!["approve", &run[..8]], vec!["resume", &run[..8]]] {
        let out = common::command(&store)
            .current_dir(&elsewhere)
            .args(&args)
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    assert!(
        workspace.join("out/NOTES.md").exists(),
        "written in the run's workspace"
    );
    assert!(
        !elsewhere.join("approval/workspace/out").exists(),
        "written in another directory"
    );
}

#[test]
fn a_symlink_changed_after_the_start_does_not_move_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let a = example("approval", &dir.path().join("a"));
    example("approval", &dir.path().join("b"));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("a"), &link).expect("symlink");
    let out = run_agent(
        &store,
        &link.join("approval/agent.toml"),
        "Note the release date",
    );
    let run = run_id_of(&out);
    // the link now leads to another copy: the run still acts where it started
    std::fs::remove_file(&link).expect("rm link");
    std::os::unix::fs::symlink(dir.path().join("b"), &link).expect("symlink");
    for args in [vec!["approve", &run[..8]], vec!["resume", &run[..8]]] {
        let out = retrace(&store, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let written = |copy: &str| {
        dir.path()
            .join(copy)
            .join("approval/workspace/out/NOTES.md")
            .exists()
    };
    assert!(
        written("a") && !written("b"),
        "the write moved with the link"
    );

    // a workspace replaced by a link to elsewhere is refused, not followed
    let out = run_agent(&store, &a, "Note the release date again");
    let second = run_id_of(&out);
    let workspace = a.with_file_name("workspace");
    std::fs::rename(&workspace, a.with_file_name("moved")).expect("mv");
    std::os::unix::fs::symlink(dir.path().join("b/approval/workspace"), &workspace)
        .expect("symlink");
    assert!(retrace(&store, &["approve", &second[..8]]).status.success());
    let out = retrace(&store, &["resume", &second[..8]]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("now leads to"), "{}", text(&out));
    assert!(!written("b"), "written through the link");
}

#[test]
fn a_deleted_workspace_is_a_clear_refusal_not_a_new_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("approval", dir.path());
    let store = dir.path().join("store");
    let out = run_agent(&store, &spec, "Note the release date");
    let run = run_id_of(&out);
    let workspace = spec.parent().expect("dir").join("workspace");
    std::fs::remove_dir_all(&workspace).expect("rm");
    let out = retrace(&store, &["approve", &run[..8]]);
    assert!(out.status.success(), "{}", text(&out));
    let out = retrace(&store, &["resume", &run[..8]]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains(&workspace.display().to_string()), "{msg}");
    assert!(!workspace.exists(), "a new workspace was created");
}

#[test]
fn usage_errors_exit_64_apart_from_a_failed_run_s_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    for args in [
        vec!["runz"],
        vec!["runs", "--jsn"],
        vec!["fork"],
        vec!["run", "x.toml", "--input"],
        vec!["run", "x.toml"],
        vec!["fork", "abc"],
        vec!["fork", "abc@x"],
        vec!["resolve", "abc"],
        vec!["resolve", "abc", "--retry", "--fail"],
        vec!["check"],
    ] {
        let out = retrace(&store, &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error:"),
            "{}",
            text(&out)
        );
    }
    for args in [vec!["--help"], vec!["--version"], vec!["runs", "--help"]] {
        let out = retrace(&store, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
}

#[test]
fn a_deny_note_reaches_the_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = example_run(dir.path(), "approval", "Note the release date");
    let out = retrace(
        &store,
        &[
            "approve",
            &run[..8],
            "--deny",
            "--note",
            "the date is not final",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = retrace(&store, &["resume", &run[..8]]);
    assert!(out.status.success(), "{}", text(&out));
    let returned = log(&store, &run)
        .into_iter()
        .find(|e| e["kind"] == "tool_returned")
        .expect("the denial");
    let shown = retrace(
        &store,
        &["show", &format!("{run}@{}", returned["seq"]), "--json"],
    );
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    let told = shown["payloads"].to_string();
    assert!(
        told.contains("not run: denied by") && told.contains("the date is not final"),
        "{told}"
    );
}

#[test]
fn runs_says_what_a_person_must_know_and_a_failed_run_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    // parked for an approval
    let out = run_agent(
        &store,
        &example("approval", dir.path()),
        "Note the release date",
    );
    let parked = run_id_of(&out);
    // a finished run, and a fresh fork of it that nobody drives
    let tidy = example("tidy", dir.path());
    let out = run_agent(&store, &tidy, "Summarise this project");
    let done = run_id_of(&out);
    let fork = fork_id_of(&retrace(&store, &["fork", &format!("{done}@3")]));
    // a run that fails on its budget
    let budget = std::fs::read_to_string(&tidy)
        .expect("spec")
        .replace("max_steps = 10", "max_steps = 1");
    let tight = tidy.with_file_name("tight.toml");
    std::fs::write(&tight, budget).expect("write");
    let out = run_agent(&store, &tight, "Summarise this project");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("reason: budget exhausted: 1 model steps (max_steps = 1)"),
        "{}",
        text(&out)
    );
    let failed = run_id_of(&out);

    let out = retrace(&store, &["runs"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |run: &str| {
        table
            .lines()
            .find(|l| run.starts_with(l.split_whitespace().next().unwrap_or("-")))
            .unwrap_or_else(|| panic!("no row for {run}:\n{table}"))
            .to_owned()
    };
    assert!(
        table.lines().next().expect("header").contains("NAME"),
        "{table}"
    );
    assert!(
        row(&parked).contains("parked: approval of call_1"),
        "{table}"
    );
    assert!(row(&parked).contains("notes"), "{table}");
    assert!(
        row(&done).contains("succeeded") && row(&done).contains("tidy"),
        "{table}"
    );
    assert!(row(&fork).contains("needs resume"), "{table}");
    assert!(row(&failed).contains("failed"), "{table}");
    assert!(
        !table.contains("running"),
        "nobody drives a run here:\n{table}"
    );
    let out = retrace(&store, &["runs", "--json"]);
    let failed_line: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .find(|l| l["run"] == failed)
        .expect("the failed run");
    assert_eq!(failed_line["standing"], "failed");
    assert!(
        failed_line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("max_steps = 1")),
        "{failed_line}"
    );
}

/// The inspector at a run's model call in `store`, its request tab open, settled.
fn inspector_at(
    store: &Path,
    run: &str,
    seq: u64,
) -> egui_kittest::Harness<'static, retrace_inspector::Inspector> {
    use retrace_inspector::{Command as Do, Host, Inspector, Target};
    struct ReadOnly;
    impl Host for ReadOnly {
        fn now(&self) -> retrace_events::Timestamp {
            retrace_events::Timestamp(0)
        }
        fn new_run_id(&self) -> retrace_events::RunId {
            retrace_events::RunId::from_bytes([0xee; 16])
        }
        fn resume(&self, _: retrace_events::RunId) -> Result<(), String> {
            Err("read only".into())
        }
    }
    let sled = retrace_store_sled::SledStore::open(store).expect("open the store");
    let run: retrace_events::RunId = run.parse().expect("a run id");
    let mut inspector = Inspector::new(
        std::sync::Arc::new(sled),
        std::sync::Arc::new(ReadOnly),
        Target {
            run: Some(run),
            seq: Some(seq),
        },
        || {},
    );
    inspector.apply(Do::ShowRequest(true));
    let mut harness = egui_kittest::Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .build_ui_state(|ui, app: &mut Inspector| app.ui(ui), inspector);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        harness.run_steps(3);
        if !harness.state().busy() && harness.state().position() == Some((run, seq)) {
            harness.run_steps(3);
            return harness;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the inspector never settled"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What the model saw, twice: the inspector's request view of a model call shows what
/// `retrace show RUN@SEQ --request` prints of it — the call, the model, the system prompt,
/// the tools, and every message in order with the new ones marked, each starting with the
/// text the CLI prints for it.
#[test]
fn the_inspector_s_request_view_shows_what_show_request_prints() {
    use egui_kittest::kittest::{NodeT, Queryable};
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = common::tidy_run(dir.path());
    let asked: Vec<u64> = log(&store, &run)
        .iter()
        .filter(|e| e["kind"] == "model_requested")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(asked.len() >= 3, "{asked:?}");
    for seq in [asked[0], asked[2]] {
        let at = format!("{run}@{seq}");
        let json: Value = serde_json::from_slice(
            &common::ok(&store, &["show", &at, "--request", "--json"]).stdout,
        )
        .expect("show --request --json");
        let printed = text(&common::ok(&store, &["show", &at, "--request"]));
        let mut harness = inspector_at(&store, &run, seq);
        harness.get_by_label(&format!(
            "request of model call #{seq} · step {} · attempt 1",
            json["step"]
        ));
        harness.get_by_label_contains(&format!(
            "model {} · record ",
            json["model"].as_str().unwrap()
        ));
        let tools: Vec<&str> = json["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        harness.get_by_label(&format!("tools: {}", tools.join(", ")));
        // the system prompt, opened
        harness.get_by_label("System prompt").click();
        harness.run_steps(3);
        harness.get_by_label(json["system"].as_str().unwrap());
        // every message: the CLI's `+  3 role` head, then its first line
        let lines: Vec<&str> = printed.lines().collect();
        let heads: Vec<(usize, bool, String, String)> = lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                // `{mark} {n:>3} {role}`, mark `+` for a new message
                let mark = l.chars().next()?;
                let n: usize = l.get(2..5)?.trim().parse().ok()?;
                let role = l.get(6..)?;
                ((mark == '+' || mark == ' ') && l.get(5..6) == Some(" ")).then_some(())?;
                // its first line: text under │, or its first call
                let first = lines[i + 1..]
                    .iter()
                    .take_while(|b| b.starts_with("      "))
                    .find_map(|b| {
                        let b = b.trim_start();
                        b.strip_prefix("│ ")
                            .map(str::to_owned)
                            .or_else(|| b.strip_prefix("calls ").map(|c| format!("-> {c}")))
                    })
                    .unwrap_or_default();
                Some((n, mark == '+', role.to_owned(), first))
            })
            .collect();
        let messages = json["messages"].as_array().unwrap().len();
        assert_eq!(heads.len(), messages, "{printed}");
        for (n, new, role, first) in heads {
            let head = format!("{n:>3} {role}{}  ", if new { " · new" } else { "" });
            let shown: Vec<String> = harness
                .query_all_by_label_contains(&head)
                .filter_map(|node| {
                    // a label's text is its accesskit value
                    let node = node.accesskit_node();
                    node.label().or_else(|| node.value())
                })
                .filter(|label| label.starts_with(&head))
                .collect();
            assert_eq!(shown.len(), 1, "message {n} at #{seq}: {shown:?}");
            let rest = shown[0][head.len()..]
                .trim_end_matches(" …")
                .trim_end_matches('…');
            assert!(
                (first.starts_with(rest) && (rest.is_empty() == first.is_empty()))
                    || (first.is_empty() && rest == "(empty)"),
                "message {n} at #{seq}: the inspector shows {rest:?}, the CLI {first:?}"
            );
        }
    }
}

//! Sub-agents, skills and hooks through the binary: `examples/team` (a parent with three
//! child runs, two in parallel), the tree's links and totals, a parent budget that stops
//! the tree, a fork with an edited child answer, skills seen by name until loaded, hooks
//! that deny, rewrite and annotate and are never run again by a replay, and the tree
//! SIGKILLed 30+ times.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{example, log_json, ok, retrace, text};
use retrace_replay::testkit::Rng;
use serde_json::{Value, json};

/// Every run of `store` (`runs --json`), in the tree's order.
fn runs(store: &Path) -> Vec<Value> {
    if !store.exists() {
        return Vec::new();
    }
    let out = retrace(store, &["runs", "--json"]);
    // a process killed while it created the store leaves no store yet
    if !out.status.success() && text(&out).contains("no retrace store") {
        return Vec::new();
    }
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|r| r["events"].as_u64() > Some(0))
        .collect()
}

fn parent_of(run: &Value) -> Option<&str> {
    run["meta"]["parent"].as_str()
}

/// Seq of the first event of `kind` (of call `call`, if given) in `log`.
fn seq_in(log: &[Value], kind: &str, call: Option<&str>) -> u64 {
    log.iter()
        .find(|e| e["kind"] == kind && call.is_none_or(|c| e["call_id"] == c))
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or_else(|| panic!("no {kind} of {call:?}"))
}

fn tokens(run: &Value) -> u64 {
    run["totals"]["input_tokens"].as_u64().expect("input")
        + run["totals"]["output_tokens"].as_u64().expect("output")
}

/// `examples/team` run once in `dir`; its store and the parent's id.
fn team(dir: &Path, budget: Option<u64>) -> (PathBuf, String) {
    let spec = example("team", dir);
    if let Some(max) = budget {
        let text = std::fs::read_to_string(&spec).expect("spec");
        std::fs::write(&spec, format!("{text}\n[budgets]\nmax_tokens = {max}\n")).expect("spec");
    }
    let store = dir.join("store");
    let out = retrace(
        &store,
        &[
            "run",
            spec.to_str().expect("utf-8"),
            "--input",
            "Report on our storage and sandbox",
        ],
    );
    assert!(budget.is_some() || out.status.success(), "{}", text(&out));
    (store, common::run_id_of(&out))
}

/// The reader cassette's tokens for one child, by its brief (hand-summed from
/// examples/team/reader.cassette.json: its two replies' input + output).
const STORAGE_CHILD: u64 = 200 + 15 + 320 + 40;
const SANDBOX_CHILD: u64 = 210 + 15 + 330 + 42;
const CHECK_CHILD: u64 = 220 + 15 + 340 + 20;
/// The orchestrator's own six replies (examples/team/orchestrator.cassette.json).
const PARENT_OWN: u64 = 400 + 20 + 600 + 60 + 900 + 120 + 1000 + 140 + 1100 + 40 + 1200 + 50;

#[test]
fn a_team_of_three_children_completes_verifies_and_its_totals_add_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, parent) = team(dir.path(), None);
    let all = runs(&store);
    assert_eq!(all.len(), 4, "the parent and three children: {all:?}");
    let children: Vec<&Value> = all
        .iter()
        .filter(|r| parent_of(r) == Some(parent.as_str()))
        .collect();
    assert_eq!(children.len(), 3);
    for child in &children {
        assert_eq!(child["meta"]["agent"], "reader");
        assert_eq!(child["status"]["outcome"], "succeeded");
    }
    let mut own: Vec<u64> = children.iter().map(|c| tokens(c)).collect();
    own.sort_unstable();
    let mut expected = vec![STORAGE_CHILD, SANDBOX_CHILD, CHECK_CHILD];
    expected.sort_unstable();
    assert_eq!(own, expected);
    let top = all
        .iter()
        .find(|r| r["run"] == parent.as_str())
        .expect("the parent");
    assert_eq!(top["status"]["outcome"], "succeeded");
    assert_eq!(
        tokens(top),
        PARENT_OWN + STORAGE_CHILD + SANDBOX_CHILD + CHECK_CHILD,
        "the tree's totals"
    );
    // each run's chain and the links between them verify
    let verified = ok(&store, &["verify"]);
    assert_eq!(
        String::from_utf8_lossy(&verified.stdout)
            .matches("ok ")
            .count(),
        4
    );
    // the two readers of one reply ran at once: both started before either finished
    let log = log_json(&store, &parent);
    let seq_of = |kind: &str, call: &str| seq_in(&log, kind, Some(call));
    assert!(seq_of("child_started", "read-sandbox") < seq_of("child_finished", "read-storage"));
    // `show` of the delegate call names its child
    let started = seq_of("child_started", "check");
    let shown = ok(&store, &["show", &format!("{parent}@{started}")]);
    let check_child = log
        .iter()
        .find(|e| e["kind"] == "child_started" && e["call_id"] == "check")
        .and_then(|e| e["child"].as_str())
        .expect("the check child");
    assert!(
        text(&shown).contains(&check_child[..12]),
        "{}",
        text(&shown)
    );
    let requested = seq_of("tool_requested", "check");
    let shown = text(&ok(&store, &["show", &format!("{parent}@{requested}")]));
    assert!(
        shown.contains(&format!("child run: {check_child} (reader)")),
        "{shown}"
    );
    // a bundle of the parent holds its tree, and the tree verifies where it is imported
    let bundle = dir.path().join("team.bundle");
    ok(
        &store,
        &["export", &parent, "-o", bundle.to_str().expect("utf-8")],
    );
    let elsewhere = dir.path().join("elsewhere");
    ok(&elsewhere, &["import", bundle.to_str().expect("utf-8")]);
    assert_eq!(runs(&elsewhere).len(), 4);
    let verified = ok(&elsewhere, &["verify"]);
    assert_eq!(
        String::from_utf8_lossy(&verified.stdout)
            .matches("ok ")
            .count(),
        4
    );
    // the checking reader read the report
    let checked = seq_of("tool_returned", "check");
    let answer = text(&ok(&store, &["show", &format!("{parent}@{checked}")]));
    assert!(answer.contains("Every fact in out/report.md"), "{answer}");
    // the runs list nests children under the parent
    let listed = text(&ok(&store, &["runs"]));
    assert_eq!(listed.matches("└ reader").count(), 3, "{listed}");
    // the hook refused the write outside out/, the one under it happened
    let ws = dir.path().join("team/workspace");
    assert!(!ws.join("report.md").exists());
    assert!(
        std::fs::read_to_string(ws.join("out/report.md"))
            .expect("report")
            .contains("## Sandbox")
    );
    let denied = log
        .iter()
        .find(|e| e["kind"] == "hook_decided" && e["call_id"] == "write-1")
        .expect("hook");
    assert_eq!(denied["stage"], "before_tool");
    // the determinism check replays the tree's decisions
    ok(&store, &["check", "--all"]);
    let checked = text(&ok(&store, &["check", &parent, "--tree"]));
    assert!(checked.contains("4 runs"), "{checked}");
}

#[test]
fn an_eval_of_a_team_recording_serves_its_children_and_hooks_and_replays_identically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, parent) = team(dir.path(), None);
    // an eval of the parent's recording: delegate calls and hooked calls are served from
    // it (the recorded children's answers, the hooks' decisions), so the fork is identical
    let suite = dir.path().join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "[[case]]\nname = \"team\"\nrun = \"{parent}\"\n[case.expect]\noutcome = \"succeeded\"\n\
             tools = [\"skill.load\", \"agent.delegate\", \"agent.delegate\", \"fs.write\", \"fs.write\", \"agent.delegate\"]\n"
        ),
    )
    .expect("suite");
    let evaluated = text(&ok(&store, &["eval", suite.to_str().expect("utf-8")]));
    assert!(evaluated.contains("1 passed, 0 failed"), "{evaluated}");
    assert_eq!(
        runs(&store)
            .iter()
            .filter(|r| parent_of(r).is_some())
            .count(),
        3,
        "the eval started no child"
    );
}

#[test]
fn a_parent_budget_stops_the_whole_tree_when_the_children_spend_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    // the parent's first two replies spend 1,080 tokens; each reader may spend the 420 left
    let (store, parent) = team(dir.path(), Some(1_500));
    let all = runs(&store);
    let children: Vec<&Value> = all
        .iter()
        .filter(|r| parent_of(r) == Some(parent.as_str()))
        .collect();
    assert_eq!(
        children.len(),
        2,
        "no child after the budget ran out: {all:?}"
    );
    for child in &children {
        assert_eq!(child["status"]["outcome"], "failed");
        assert!(
            child["reason"]
                .as_str()
                .expect("reason")
                .contains("max_tokens = 420"),
            "{child}"
        );
    }
    let top = all
        .iter()
        .find(|r| r["run"] == parent.as_str())
        .expect("the parent");
    assert_eq!(top["status"]["outcome"], "failed");
    assert!(
        top["reason"]
            .as_str()
            .expect("reason")
            .contains("budget exhausted"),
        "{top}"
    );
    assert_eq!(tokens(top), 1_080 + STORAGE_CHILD + SANDBOX_CHILD);
}

#[test]
fn a_fork_with_an_edited_child_answer_continues_from_it_and_starts_no_child() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, parent) = team(dir.path(), None);
    let log = log_json(&store, &parent);
    let answered = log
        .iter()
        .find(|e| e["kind"] == "tool_returned" && e["call_id"] == "read-sandbox")
        .and_then(|e| e["seq"].as_u64())
        .expect("the sandbox reader's answer");
    let edit = dir.path().join("edit.json");
    std::fs::write(
        &edit,
        json!({"agent": "reader", "outcome": "succeeded", "answer": "docs/wasmtime.md is empty."})
            .to_string(),
    )
    .expect("edit");
    let forked = ok(
        &store,
        &[
            "fork",
            &format!("{parent}@{answered}"),
            "--edit",
            edit.to_str().expect("utf-8"),
        ],
    );
    let fork = common::fork_id_of(&forked);
    ok(&store, &["resume", &fork]);
    // the readers are not started again: the fork's only child is its own check call's
    let all = runs(&store);
    let of_fork: Vec<&Value> = all
        .iter()
        .filter(|r| parent_of(r) == Some(fork.as_str()))
        .collect();
    assert_eq!(
        all.iter().filter(|r| parent_of(r).is_some()).count(),
        4,
        "{all:?}"
    );
    assert_eq!(of_fork.len(), 1, "{all:?}");
    let fork_log = log_json(&store, &fork);
    let started: Vec<&str> = fork_log
        .iter()
        .filter(|e| e["kind"] == "child_started" && e["seq"].as_u64() > Some(answered))
        .map(|e| e["call_id"].as_str().expect("call"))
        .collect();
    assert_eq!(started, ["check"]);
    // the model was sent the edited answer, not the child's
    let request = fork_log
        .iter()
        .rev()
        .find(|e| e["kind"] == "model_requested")
        .and_then(|e| e["seq"].as_u64())
        .expect("a request");
    let sent = text(&ok(
        &store,
        &["show", &format!("{fork}@{request}"), "--request"],
    ));
    assert!(sent.contains("docs/wasmtime.md is empty."), "{sent}");
    assert!(
        !sent.contains("components compile once per hash"),
        "the original answer is gone: {sent}"
    );
    ok(&store, &["verify"]);
}

/// A spec in `dir` with `skills` and the given hooks, model replies and tools.
fn spec_with(dir: &Path, extra: &str, replies: &Value, tools: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("ws/out")).expect("ws");
    std::fs::write(
        dir.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("cassette");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"a\"\nsystem = \"s\"\nworkspace = \"ws\"\n{extra}\n\
             [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
             [tools]\nallow = [{tools}]\n"
        ),
    )
    .expect("spec");
    spec
}

#[test]
fn skills_are_listed_by_name_until_loaded_and_a_changed_file_changes_no_old_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let skill = dir.path().join("skills/tidy");
    std::fs::create_dir_all(&skill).expect("skill dir");
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: tidy\ndescription: How to tidy a repository.\n---\nDelete nothing; move stray files into attic/.\n",
    )
    .expect("skill");
    let replies = json!([
        {"text": "loading", "tool_calls": [{"id": "s1", "name": "skill.load", "arguments": {"name": "tidy"}}]},
        {"text": "done"}
    ]);
    let spec = spec_with(dir.path(), "skills = [\"skills\"]", &replies, "");
    let store = dir.path().join("store");
    let out = ok(
        &store,
        &["run", spec.to_str().expect("utf-8"), "--input", "tidy up"],
    );
    let run = common::run_id_of(&out);
    let first = text(&ok(
        &store,
        &["show", &format!("{run}@1"), "--request", "--json"],
    ));
    assert!(
        first.contains("skill.load") && first.contains("How to tidy a repository."),
        "{first}"
    );
    assert!(
        !first.contains("move stray files"),
        "the text is not shown before it is loaded: {first}"
    );
    let log = log_json(&store, &run);
    let result = seq_in(&log, "tool_returned", None);
    let before = text(&ok(&store, &["show", &format!("{run}@{result}")]));
    assert!(before.contains("move stray files into attic/"), "{before}");
    // the file changes; the run, its replay and a fork before the load keep the recorded skill
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: tidy\ndescription: Changed.\n---\nDelete everything.\n",
    )
    .expect("skill");
    ok(&store, &["check", &run]);
    let forked = ok(&store, &["fork", &format!("{run}@3")]);
    let fork = common::fork_id_of(&forked);
    ok(&store, &["resume", &fork]);
    let fork_log = log_json(&store, &fork);
    let loaded = seq_in(&fork_log, "tool_returned", None);
    let again = text(&ok(&store, &["show", &format!("{fork}@{loaded}")]));
    assert!(
        again.contains("move stray files into attic/") && !again.contains("Delete everything"),
        "{again}"
    );
}

/// A spec in `dir` whose hooks guard `fs.write` (deny `secret*`, rewrite `draft.md` into
/// out/ and `sneaky.md` to a path the policy denies) and note every result, each start of
/// a hook counted in the workspace's `hook-starts.txt`; its model writes those three.
fn hooked_spec(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("hooks")).expect("hooks");
    // every start is counted in the workspace (the hook's only writable place)
    std::fs::write(
        dir.join("hooks/guard.py"),
        "import json, os, sys\ncall = json.load(sys.stdin)\n\
         open(os.path.join(os.environ['HOME'], 'hook-starts.txt'), 'a').write(call['stage'] + '\\n')\n\
         path = call['args'].get('path', '')\n\
         if call['stage'] == 'after_tool':\n    print(json.dumps({'decision': 'note', 'note': 'index updated? ' + path}))\n\
         elif path.startswith('secret'):\n    print('secrets stay out', file=sys.stderr); sys.exit(2)\n\
         elif path == 'draft.md':\n    args = dict(call['args'], path='out/draft.md'); print(json.dumps({'decision': 'rewrite', 'args': args}))\n\
         elif path == 'sneaky.md':\n    args = dict(call['args'], path='evil.txt'); print(json.dumps({'decision': 'rewrite', 'args': args}))\n",
    )
    .expect("hook");
    let hooks = "[[hooks]]\nname = \"guard\"\nstage = \"before_tool\"\ntools = [\"fs.write\"]\ncommand = \"python3 hooks/guard.py\"\n\
                 [[hooks]]\nname = \"index\"\nstage = \"after_tool\"\ntools = [\"fs.*\"]\ncommand = \"python3 hooks/guard.py\"\n";
    let replies = json!([
        {"text": "1", "tool_calls": [{"id": "w1", "name": "fs.write", "arguments": {"path": "secret.txt", "content": "k"}}]},
        {"text": "2", "tool_calls": [{"id": "w2", "name": "fs.write", "arguments": {"path": "draft.md", "content": "d"}}]},
        {"text": "3", "tool_calls": [{"id": "w3", "name": "fs.write", "arguments": {"path": "sneaky.md", "content": "e"}}]},
        {"text": "done"}
    ]);
    let spec = spec_with(dir, "", &replies, "\"fs.write\"");
    let text_spec = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(
        &spec,
        format!(
            "{text_spec}[[policy]]\ntool = \"fs.write\"\npath = \"evil*\"\naction = \"deny\"\n\
             [[policy]]\ntool = \"fs.write\"\naction = \"allow\"\n{hooks}"
        ),
    )
    .expect("spec");
    spec
}

#[test]
fn hooks_deny_rewrite_and_note_and_a_replay_runs_none_of_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = hooked_spec(dir.path());
    let store = dir.path().join("store");
    let out = ok(
        &store,
        &["run", spec.to_str().expect("utf-8"), "--input", "write"],
    );
    let run = common::run_id_of(&out);
    let ws = dir.path().join("ws");
    assert!(!ws.join("secret.txt").exists(), "denied");
    assert!(
        !ws.join("draft.md").exists() && ws.join("out/draft.md").exists(),
        "rewritten"
    );
    let log = log_json(&store, &run);
    let decided: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e["kind"] == "hook_decided")
        .map(|e| {
            (
                e["call_id"].as_str().expect("call"),
                e["hook"].as_str().expect("hook"),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            ("w1", "guard"),
            ("w2", "guard"),
            ("w2", "index"),
            ("w3", "guard")
        ]
    );
    // a rewrite is held to the policy: evil.txt is denied, whatever the hook said
    assert!(!ws.join("evil.txt").exists() && !ws.join("sneaky.md").exists());
    let result_of = |call: &str| {
        let seq = log
            .iter()
            .find(|e| e["kind"] == "tool_returned" && e["call_id"] == call)
            .and_then(|e| e["seq"].as_u64())
            .expect("result");
        text(&ok(&store, &["show", &format!("{run}@{seq}")]))
    };
    assert!(
        result_of("w1").contains("secrets stay out"),
        "{}",
        result_of("w1")
    );
    assert!(
        result_of("w3").contains("the policy does not allow"),
        "{}",
        result_of("w3")
    );
    assert!(
        result_of("w2").contains("index updated? out/draft.md"),
        "{}",
        result_of("w2")
    );
    let requested = log
        .iter()
        .find(|e| e["kind"] == "tool_requested" && e["call_id"] == "w2")
        .expect("w2 requested");
    let args = text(&ok(
        &store,
        &["show", &format!("{run}@{}", requested["seq"])],
    ));
    assert!(
        args.contains("out/draft.md"),
        "the call ran with the rewritten arguments: {args}"
    );
    let starts = || {
        std::fs::read_to_string(ws.join("hook-starts.txt"))
            .expect("starts")
            .lines()
            .count()
    };
    assert_eq!(starts(), 4);
    // a replay reads the decisions: the hook's process is not started again
    ok(&store, &["check", &run]);
    let fork = common::fork_id_of(&ok(&store, &["fork", &format!("{run}@{}", log.len() - 2)]));
    ok(&store, &["resume", &fork]);
    assert_eq!(starts(), 4);
}

// ---- the kill test ----

/// Lines each worker appends (one model reply each): enough steps for 30 kills in one tree.
const WORKER_APPENDS: usize = 10;

/// The tree of the kill test in `dir`: a lead whose first reply delegates two workers at
/// once, then appends a line, delegates a third worker, appends another and answers. Each
/// worker appends [`WORKER_APPENDS`] lines to its own file. Every append is `fs.append`: not idempotent.
fn kill_tree(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("ws")).expect("ws");
    let append = |id: String, file: &str| json!({"id": id, "name": "fs.append", "arguments": {"path": file, "text": format!("{id}\n")}});
    let delegate = |id: &str, brief: &str| json!({"id": id, "name": "agent.delegate", "arguments": {"agent": "worker", "brief": brief}});
    let lead = json!({"replies": [
        {"text": "two at once", "latency_ms": 20, "tool_calls": [delegate("p1", "task w1"), delegate("p2", "task w2")]},
        {"text": "mine", "latency_ms": 20, "tool_calls": [append("lead-1".into(), "lead.txt")]},
        {"text": "third", "latency_ms": 20, "tool_calls": [delegate("p3", "task w3")]},
        {"text": "mine again", "latency_ms": 20, "tool_calls": [append("lead-2".into(), "lead.txt")]},
        {"text": "all done", "latency_ms": 20}
    ]});
    let worker_reply = |k: usize| {
        let branches: Vec<Value> = ["w1", "w2", "w3"]
            .iter()
            .map(|w| {
                let when = if k == 0 {
                    format!("task {w}")
                } else {
                    format!("{w}.txt")
                };
                let mut reply = json!({"when": when, "text": format!("{w} {k}"), "latency_ms": 15});
                if k < WORKER_APPENDS {
                    reply["tool_calls"] = json!([append(format!("{w}-{k}"), &format!("{w}.txt"))]);
                }
                reply
            })
            .collect();
        json!({"text": "lost", "branches": branches})
    };
    let worker = json!({"replies": (0..=WORKER_APPENDS).map(worker_reply).collect::<Vec<_>>()});
    std::fs::write(dir.join("lead.json"), lead.to_string()).expect("lead");
    std::fs::write(dir.join("worker.json"), worker.to_string()).expect("worker");
    let spec = dir.join("lead.toml");
    std::fs::write(
        &spec,
        "name = \"lead\"\nsystem = \"lead\"\nworkspace = \"ws\"\n\
         [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"lead.json\"\n\
         [tools]\nallow = [\"fs.append\"]\n\
         [[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n\
         [[agents]]\nname = \"worker\"\ndescription = \"appends\"\nsystem = \"append\"\ntools = [\"fs.append\"]\ncassette = \"worker.json\"\n",
    )
    .expect("spec");
    spec
}

/// What the files hold when every append happened once.
fn expected_files() -> Vec<(String, String)> {
    let lines = |w: &str| {
        (0..WORKER_APPENDS)
            .map(|k| format!("{w}-{k}\n"))
            .collect::<Vec<_>>()
            .concat()
    };
    let mut files = vec![("lead.txt".to_owned(), "lead-1\nlead-2\n".to_owned())];
    for w in ["w1", "w2", "w3"] {
        files.push((format!("{w}.txt"), lines(w)));
    }
    files
}

/// The lines written so far, over all files.
fn lines_written(ws: &Path) -> usize {
    ["lead.txt", "w1.txt", "w2.txt", "w3.txt"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(ws.join(f))
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum()
}

/// The state hash of each run of the tree, by the call that started it (`lead` for the
/// parent).
fn tree_hashes(store: &Path) -> Vec<(String, String)> {
    let all = runs(store);
    let lead = all
        .iter()
        .find(|r| parent_of(r).is_none())
        .expect("the lead");
    let lead_id = lead["run"].as_str().expect("id");
    let hash = |run: &str| -> String {
        let shown: Value = serde_json::from_slice(&ok(store, &["show", run, "--json"]).stdout)
            .expect("show --json");
        shown["state_hash"].as_str().expect("hash").to_owned()
    };
    let mut out = vec![("lead".to_owned(), hash(lead_id))];
    for e in log_json(store, lead_id) {
        if e["kind"] == "child_started" {
            out.push((
                e["call_id"].as_str().expect("call").to_owned(),
                hash(e["child"].as_str().expect("child")),
            ));
        }
    }
    out
}

/// Settle every append in doubt as an operator would: skip with its result if its line is
/// in its file, else retry. How many were settled.
fn settle(store: &Path, ws: &Path) -> usize {
    let mut settled = 0;
    for r in runs(store) {
        if r["status"]["status"] != "outcome_unknown" {
            continue;
        }
        let call = r["status"]["call_id"].as_str().expect("call");
        let run = r["run"].as_str().expect("run");
        let file = format!("{}.txt", call.split('-').next().expect("prefix"));
        let line = format!("{call}\n");
        if std::fs::read_to_string(ws.join(&file))
            .unwrap_or_default()
            .contains(&line)
        {
            let result = ws.parent().expect("dir").join("result.json");
            std::fs::write(
                &result,
                json!({"path": file, "bytes_appended": line.len()}).to_string(),
            )
            .expect("result");
            ok(
                store,
                &[
                    "resolve",
                    run,
                    call,
                    "--skip-with",
                    result.to_str().expect("utf-8"),
                ],
            );
        } else {
            ok(store, &["resolve", run, call, "--retry"]);
        }
        settled += 1;
    }
    settled
}

/// Restart the tree: `resume` the lead (half the time, once it exists) or `run` the spec
/// again (which continues the unfinished lead).
fn restart(
    store: &Path,
    lead: Option<&str>,
    spec: &Path,
    input: &str,
    rng: &mut Rng,
) -> std::process::Child {
    let mut command = common::command(store);
    match lead {
        Some(lead) if rng.below(2) == 0 => command.args(["resume", lead]),
        _ => command.args(["run", spec.to_str().expect("utf-8"), "--input", input]),
    };
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn retrace")
}

/// SIGKILL `child` at a random moment, paced by the lines written (one start in five
/// during start-up instead); whether it was killed (it may have finished first).
fn kill_at_random(child: &mut std::process::Child, ws: &Path, rng: &mut Rng) -> bool {
    if rng.below(5) == 0 {
        std::thread::sleep(Duration::from_millis(rng.below(60)));
    } else {
        let target = lines_written(ws) + usize::try_from(rng.below(2)).expect("small");
        while lines_written(ws) < target && child.try_wait().expect("poll").is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(30)));
    }
    if child.try_wait().expect("poll").is_none() {
        child.kill().expect("SIGKILL");
        return true;
    }
    false
}

#[test]
fn a_tree_killed_30_times_at_random_ends_like_an_uninterrupted_one() {
    let seed = common::kill_seed();
    eprintln!("kill schedule seed: {seed} (RETRACE_KILL_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = kill_tree(dir.path());
    let ws = dir.path().join("ws");
    let input = "do the work";
    // the reference: never interrupted
    let reference = dir.path().join("reference");
    let out = restart(&reference, None, &spec, input, &mut rng)
        .wait_with_output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, want) in expected_files() {
        assert_eq!(std::fs::read_to_string(ws.join(&file)).expect("file"), want);
        std::fs::remove_file(ws.join(&file)).expect("reset");
    }
    let want = tree_hashes(&reference);
    assert_eq!(want.len(), 4);

    let (mut kills, mut starts, mut settled, mut rounds) = (0, 0, 0, 0);
    let began = Instant::now();
    while kills < 30 {
        rounds += 1;
        let store = dir.path().join(format!("store-{rounds}"));
        loop {
            assert!(
                began.elapsed() < Duration::from_mins(8),
                "no end after {starts} starts and {kills} kills"
            );
            settled += settle(&store, &ws);
            let lead = if store.exists() {
                runs(&store).into_iter().find(|r| parent_of(r).is_none())
            } else {
                None
            };
            if lead
                .as_ref()
                .is_some_and(|l| l["status"]["status"] == "finished")
            {
                break;
            }
            let lead_id = lead
                .as_ref()
                .and_then(|l| l["run"].as_str())
                .map(str::to_owned);
            let mut child = restart(&store, lead_id.as_deref(), &spec, input, &mut rng);
            starts += 1;
            if kill_at_random(&mut child, &ws, &mut rng) {
                kills += 1;
            }
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.code().is_none() || out.status.success(),
                "retrace failed on its own: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // exactly three children, every append once, the same states as the reference
        let all = runs(&store);
        assert_eq!(
            all.iter().filter(|r| parent_of(r).is_some()).count(),
            3,
            "round {rounds}: {all:?}"
        );
        for (file, want) in expected_files() {
            assert_eq!(
                std::fs::read_to_string(ws.join(&file)).expect("file"),
                want,
                "round {rounds}: {file}"
            );
            std::fs::remove_file(ws.join(&file)).expect("reset");
        }
        assert_eq!(
            tree_hashes(&store),
            want,
            "round {rounds}: the final states"
        );
        ok(&store, &["verify"]);
    }
    eprintln!(
        "{kills} kills over {starts} starts in {rounds} rounds; {settled} appends in doubt settled; {:.1?}",
        began.elapsed()
    );
}

#[test]
fn a_call_id_used_twice_starts_two_children_each_with_its_own_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = kill_tree(dir.path());
    // a model (or a server that numbers calls per reply) gives two calls the same id
    let delegate = |brief: &str| {
        json!({"text": "again", "tool_calls": [{"id": "d", "name": "agent.delegate",
                "arguments": {"agent": "worker", "brief": brief}}]})
    };
    let lead = json!({"replies": [delegate("task w1"), delegate("task w2"), {"text": "done"}]});
    std::fs::write(dir.path().join("lead.json"), lead.to_string()).expect("lead");
    let store = dir.path().join("store");
    let out = ok(
        &store,
        &["run", spec.to_str().expect("utf-8"), "--input", "go"],
    );
    let parent = common::run_id_of(&out);
    let all = runs(&store);
    assert_eq!(
        all.iter().filter(|r| parent_of(r).is_some()).count(),
        2,
        "{all:?}"
    );
    let answers: Vec<String> = log_json(&store, &parent)
        .iter()
        .filter(|e| e["kind"] == "tool_returned")
        .map(|e| text(&ok(&store, &["show", &format!("{parent}@{}", e["seq"])])))
        .collect();
    assert!(
        answers[0].contains(&format!("w1 {WORKER_APPENDS}")),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].contains(&format!("w2 {WORKER_APPENDS}")),
        "{}",
        answers[1]
    );
    ok(&store, &["verify"]);
    ok(&store, &["check", "--all"]);
}

#[test]
fn a_fork_cut_inside_a_delegation_resumes_to_one_child_per_call_and_the_same_totals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, parent) = team(dir.path(), None);
    let log = log_json(&store, &parent);
    let seq_of = |kind: &str, call: &str| seq_in(&log, kind, Some(call));
    let total = tokens(
        runs(&store)
            .iter()
            .find(|r| r["run"] == parent.as_str())
            .expect("parent"),
    );
    // between a call's request and its child's start; between its child's end and its result
    for at in [
        seq_of("tool_requested", "read-storage"),
        seq_of("child_finished", "read-storage"),
    ] {
        let fork = common::fork_id_of(&ok(&store, &["fork", &format!("{parent}@{at}")]));
        ok(&store, &["resume", &fork]);
        let fork_log = log_json(&store, &fork);
        for call in ["read-storage", "read-sandbox", "check"] {
            for kind in ["child_started", "child_finished", "tool_returned"] {
                let n = fork_log
                    .iter()
                    .filter(|e| e["kind"] == kind && e["call_id"] == call)
                    .count();
                assert_eq!(n, 1, "fork at {at}: {n} {kind} of {call}");
            }
        }
        let shown = runs(&store);
        let forked = shown
            .iter()
            .find(|r| r["run"] == fork.as_str())
            .expect("fork");
        assert_eq!(forked["status"]["outcome"], "succeeded");
        assert_eq!(tokens(forked), total, "fork at {at}: the tree's totals");
    }
    ok(&store, &["verify"]);
}

#[test]
fn cancelling_a_parent_that_waits_on_a_child_ends_the_child_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("team", dir.path());
    let text_spec = std::fs::read_to_string(&spec).expect("spec");
    // the readers ask before reading: they park, and so does their parent
    std::fs::write(
        &spec,
        format!("{text_spec}\n[[policy]]\ntool = \"fs.read\"\naction = \"ask\"\n"),
    )
    .expect("spec");
    let store = dir.path().join("store");
    let out = ok(
        &store,
        &["run", spec.to_str().expect("utf-8"), "--input", "go"],
    );
    assert!(
        text(&out).contains("waits: its child run"),
        "{}",
        text(&out)
    );
    let parent = common::run_id_of(&out);
    // the cancel finishes the parent, which ends its waiting children first
    ok(&store, &["cancel", &parent]);
    let all = runs(&store);
    let top = all
        .iter()
        .find(|r| r["run"] == parent.as_str())
        .expect("parent");
    assert_eq!(top["status"]["outcome"], "cancelled", "{top}");
    let children: Vec<&Value> = all.iter().filter(|r| parent_of(r).is_some()).collect();
    assert_eq!(children.len(), 2);
    let mut spent = 400 + 20 + 600 + 60;
    for child in &children {
        assert_eq!(child["status"]["outcome"], "cancelled", "{child}");
        spent += tokens(child);
    }
    assert_eq!(
        tokens(top),
        spent,
        "the children's spending is the parent's"
    );
    ok(&store, &["verify"]);
}

#[test]
fn a_sub_agent_spec_that_refers_back_to_its_parent_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = spec_with(
        dir.path(),
        "[[agents]]\nname = \"me\"\ndescription = \"again\"\nspec = \"agent.toml\"\n",
        &json!([{"text": "done"}]),
        "",
    );
    let out = retrace(
        &dir.path().join("store"),
        &["run", spec.to_str().expect("utf-8"), "--input", "go"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refers back to itself"),
        "{}",
        text(&out)
    );
}

//! Graduated autonomy and soft budgets through the `retrace` binary: calls are asked about
//! until the recorded track record promotes them, each automatic allow is recorded with its
//! evidence, a denial resets the count, `check` reproduces every decision; a soft budget
//! parks the run for a human and a hard one still fails it.

mod common;

use std::path::{Path, PathBuf};

use common::{log_json, retrace, text};
use serde_json::{Value, json};

/// A scripted agent that writes `writes` files under `out/`, one call per reply, then
/// answers; with `extra` TOML (autonomy rules, budgets) after its tools.
fn writer(dir: &Path, writes: usize, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("ws")).expect("write the test files");
    let mut replies: Vec<Value> = (1..=writes)
        .map(|i| {
            json!({"text": format!("Writing note {i}."),
                   "tool_calls": [{"id": format!("call_{i}"), "name": "fs.write",
                                   "arguments": {"path": format!("out/{i}.md"), "content": format!("note {i}\n")}}],
                   "usage": {"input_tokens": 100, "output_tokens": 10}})
        })
        .collect();
    replies.push(
        json!({"text": "All notes written.", "usage": {"input_tokens": 100, "output_tokens": 10}}),
    );
    std::fs::write(
        dir.join("cassette.json"),
        json!({ "replies": replies }).to_string(),
    )
    .expect("write the test files");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"notes\"\nsystem = \"You write notes.\"\nworkspace = \"ws\"\n\
             [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
             [tools]\nallow = [\"fs.write\"]\n{extra}"
        ),
    )
    .expect("write the test files");
    spec
}

/// The run's approval decisions, in order: (call, decision, by).
fn decisions(store: &Path, run: &str) -> Vec<(String, String, String)> {
    log_json(store, run)
        .into_iter()
        .filter(|e| e["kind"] == "approval_decided")
        .map(|e| {
            (
                e["call_id"].as_str().expect("a string").to_owned(),
                e["decision"].as_str().expect("a string").to_owned(),
                e["by"].as_str().expect("a string").to_owned(),
            )
        })
        .collect()
}

fn run_id(store: &Path) -> String {
    common::the_run(store).expect("a run")["run"]
        .as_str()
        .expect("a string")
        .to_owned()
}

fn status(store: &Path) -> String {
    common::the_run(store).expect("a run")["standing"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Start the run, then approve (or deny, for the calls in `deny`) and resume while it
/// waits; the calls a human was asked about, in order.
fn drive(store: &Path, spec: &Path, deny: &[&str]) -> Vec<String> {
    let out = retrace(
        store,
        &[
            "run",
            spec.to_str().expect("a UTF-8 path"),
            "--input",
            "write notes",
        ],
    );
    let run = run_id(store);
    let mut asked = Vec::new();
    for _ in 0..100 {
        let state: Value =
            serde_json::from_slice(&retrace(store, &["show", &run, "--json"]).stdout)
                .expect("show json");
        let Some(call) = state["state"]["status"]["call_id"]
            .as_str()
            .map(str::to_owned)
        else {
            break;
        };
        assert_eq!(
            state["state"]["status"]["status"], "awaiting_approval",
            "{state}"
        );
        let approve = if deny.contains(&call.as_str()) {
            retrace(store, &["approve", &run, "--deny"])
        } else {
            retrace(store, &["approve", &run])
        };
        assert!(approve.status.success(), "{}", text(&approve));
        asked.push(call);
        let resumed = retrace(store, &["resume", &run]);
        assert!(
            resumed.status.success() || text(&resumed).contains("waits"),
            "{}",
            text(&resumed)
        );
    }
    let _ = out;
    asked
}

#[test]
fn twenty_approvals_promote_the_rest_with_the_evidence_recorded() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = dir.path().join("store");
    let spec = writer(
        dir.path(),
        25,
        "[[autonomy]]\ntool = \"fs.write\"\npath = \"out/**\"\nlevel = \"semi\"\npromote_after = 20\n",
    );
    let asked = drive(&store, &spec, &[]);
    let expected: Vec<String> = (1..=20).map(|i| format!("call_{i}")).collect();
    assert_eq!(asked, expected, "the first 20 calls are asked about");
    assert!(status(&store).contains("succeeded"), "{}", status(&store));
    for i in 1..=25 {
        assert!(
            dir.path().join(format!("ws/out/{i}.md")).exists(),
            "note {i}"
        );
    }
    let run = run_id(&store);
    let decided = decisions(&store, &run);
    assert_eq!(decided.len(), 25);
    let user = decided[0].2.clone();
    assert!(
        decided[..20]
            .iter()
            .all(|(_, d, by)| d == "approved" && *by == user)
    );
    assert!(
        decided[20..]
            .iter()
            .all(|(_, d, by)| d == "approved" && by == "autonomy")
    );
    // the automatic allow names its evidence: the 20 approvals, by run and event
    let events = log_json(&store, &run);
    let request = events
        .iter()
        .find(|e| e["kind"] == "approval_requested" && e["call_id"] == "call_21")
        .expect("call_21 was put to the autonomy rule");
    let at = format!("{run}@{}", request["seq"]);
    let shown = retrace(&store, &["show", &at, "--json"]);
    let shown = text(&shown);
    assert!(
        shown.contains("\"approvals\":20") || shown.contains("\"approvals\": 20"),
        "{shown}"
    );
    let approvals: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "approval_decided" && e["by"] == user.as_str())
        .collect();
    for approval in &approvals {
        let id = approval["id"].as_str().expect("event id");
        assert!(shown.contains(id), "evidence names {id}");
    }
    // replayed: today's decide makes every decision the run recorded
    let check = retrace(&store, &["check", &run]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(retrace(&store, &["verify", &run]).status.success());
    // the audit lists the 20 human approvals, then the 5 automatic allows, each with
    // its 20 pieces of evidence verified against the hash chain
    let audit = retrace(&store, &["audit", "--json"]);
    assert!(audit.status.success(), "{}", text(&audit));
    let entries: Vec<Value> = serde_json::from_slice(&audit.stdout).expect("audit json");
    assert_eq!(entries.len(), 25);
    let auto: Vec<&Value> = entries.iter().filter(|e| e["automatic"] == true).collect();
    assert_eq!(auto.len(), 5);
    for entry in auto {
        assert_eq!(entry["what"], "auto-allow", "{entry}");
        assert_eq!(entry["verified"], true, "{entry}");
        let evidence = entry["evidence"].as_array().expect("evidence");
        assert_eq!(evidence.len(), 20);
        assert!(evidence.iter().all(|e| e["verified"] == true));
    }
}

#[test]
fn a_denial_resets_the_count_and_a_later_run_builds_on_the_record() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = dir.path().join("store");
    let spec = writer(
        dir.path(),
        8,
        "[[autonomy]]\ntool = \"fs.write\"\nlevel = \"semi\"\npromote_after = 3\n",
    );
    // 1, 2 approved; 3 denied: the count starts again; 4, 5, 6 approved; 7, 8 promoted
    let asked = drive(&store, &spec, &["call_3"]);
    assert_eq!(
        asked,
        ["call_1", "call_2", "call_3", "call_4", "call_5", "call_6"]
    );
    let run = run_id(&store);
    let by: Vec<String> = decisions(&store, &run).into_iter().map(|d| d.2).collect();
    assert_eq!(by[6..], ["autonomy", "autonomy"]);
    let check = retrace(&store, &["check", &run]);
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn a_soft_budget_parks_for_a_human_and_the_hard_budget_still_fails() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = dir.path().join("store");
    // 110 tokens a reply; every write allowed; soft at 250 tokens, hard at 900
    let spec = writer(
        dir.path(),
        8,
        "[[policy]]\ntool = \"fs.write\"\naction = \"allow\"\n\
         [budgets]\nsoft_max_tokens = 250\nmax_tokens = 900\n",
    );
    let out = retrace(
        &store,
        &[
            "run",
            spec.to_str().expect("a UTF-8 path"),
            "--input",
            "write notes",
        ],
    );
    let run = run_id(&store);
    let said = text(&out);
    assert!(
        said.contains("soft budget passed: 330 tokens (soft_max_tokens = 250)"),
        "{said}"
    );
    let shown: Value = serde_json::from_slice(&retrace(&store, &["show", &run, "--json"]).stdout)
        .expect("show json");
    assert_eq!(shown["state"]["status"]["call_id"], "escalation:tokens:1");
    // approved: it goes on for another 250 tokens (to 580), then asks again
    assert!(retrace(&store, &["approve", &run]).status.success());
    let out = retrace(&store, &["resume", &run]);
    assert!(
        text(&out)
            .contains("soft budget passed: 660 tokens (soft_max_tokens = 250, extended once)"),
        "{}",
        text(&out)
    );
    // approved again: it runs into the hard budget, which fails it
    assert!(retrace(&store, &["approve", &run]).status.success());
    let out = retrace(&store, &["resume", &run]);
    assert!(
        text(&out).contains("budget exhausted: 990 tokens (max_tokens = 900)"),
        "{}",
        text(&out)
    );
    let shown: Value = serde_json::from_slice(&retrace(&store, &["show", &run, "--json"]).stdout)
        .expect("show json");
    assert_eq!(shown["state"]["escalations"]["tokens"]["approved"], 2);
    assert_eq!(shown["state"]["escalations"]["tokens"]["from"], 660);
    let check = retrace(&store, &["check", &run]);
    assert!(check.status.success(), "{}", text(&check));

    // denied: the run ends, saying who would not extend it
    let other = tempfile::tempdir().expect("a temp dir");
    let store = other.path().join("store");
    retrace(
        &store,
        &[
            "run",
            spec.to_str().expect("a UTF-8 path"),
            "--input",
            "write notes",
        ],
    );
    let run = run_id(&store);
    assert!(
        retrace(&store, &["approve", &run, "--deny"])
            .status
            .success()
    );
    let out = retrace(&store, &["resume", &run]);
    assert!(
        text(&out).contains("did not let it go on (escalation:tokens:1)"),
        "{}",
        text(&out)
    );
    assert!(status(&store).contains("failed"), "{}", status(&store));
}

#[test]
fn a_denial_in_a_fork_of_the_request_resets_the_record_too() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = dir.path().join("store");
    let spec = writer(
        dir.path(),
        3,
        "[[autonomy]]\ntool = \"fs.write\"\nlevel = \"semi\"\npromote_after = 1\n",
    );
    let out = retrace(
        &store,
        &[
            "run",
            spec.to_str().expect("a UTF-8 path"),
            "--input",
            "write notes",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let run = run_id(&store);
    let events = log_json(&store, &run);
    let asked = events.last().expect("the approval request");
    assert_eq!(asked["kind"], "approval_requested");
    // a fork shares the request; alice approves it in the run, bob denies it in the fork
    let fork = retrace(&store, &["fork", &format!("{run}@{}", asked["seq"])]);
    assert!(fork.status.success(), "{}", text(&fork));
    let fork = common::fork_id_of(&fork);
    assert!(
        retrace(&store, &["--as", "alice", "approve", &run])
            .status
            .success()
    );
    assert!(
        retrace(&store, &["--as", "bob", "approve", &fork, "--deny"])
            .status
            .success()
    );
    // bob's denial came last: call_2 is asked about, not allowed on alice's approval
    let out = retrace(&store, &["resume", &run]);
    assert!(
        text(&out).contains("call_2 (fs.write)") && text(&out).contains("0 of 1 human approvals"),
        "{}",
        text(&out)
    );
}

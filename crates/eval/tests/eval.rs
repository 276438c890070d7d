//! Checks and bundles over runs the runtime recorded on a real sled store.
//!
//! The determinism check: every kind of decision (model calls with a transient failure and
//! its retry, allowed tools, an approval asked and granted, a policy denial, a denied
//! approval, the loop guard's warning, finishes) comes out the same under today's `decide`;
//! a deliberately changed `decide` is caught at the right seq with expected and actual
//! spelled out.
//!
//! Bundles: a run with its forks exported and imported into an empty store verifies, checks
//! and has the same state hashes; importing twice changes nothing; a tampered, truncated or
//! conflicting bundle is refused naming what is wrong, with nothing written; a blob no bundle
//! can carry is refused at export, not found out at import.

use std::path::Path;

use retrace_eval::bundle;
use retrace_eval::check::{Action, check_run};
use retrace_eval::report::{SuiteReport, junit, prepare, run_suite, table};
use retrace_eval::suite::Suite;
use retrace_events::{Decision, EventKind, Outcome, RunId, Timestamp};
use retrace_providers::Scripted;
use retrace_replay::{State, decide_approval};
use retrace_runtime::decide::{Agent, Next, decide};
use retrace_runtime::executor::{Runner, Stop};
use retrace_runtime::spec::Spec;
use retrace_store::{Store, VerifyOptions, verify_run};
use retrace_store_sled::SledStore;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// Every kind of decision in one script: a transient model failure, reads (allowed), the
/// same search three times (the loop guard warns), an edit (denied by a rule), a write (asks;
/// the test decides), then the answer.
const SCRIPT: &str = r#"{"replies": [
  {"error": {"transient": true, "message": "overloaded"}},
  {"tool_calls": [{"id": "r1", "name": "fs.read", "arguments": {"path": "README.md"}}]},
  {"tool_calls": [{"id": "s1", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "s2", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "s3", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "e1", "name": "fs.edit", "arguments": {"path": "README.md", "old": "TODO", "new": "done"}},
                  {"id": "w1", "name": "fs.write", "arguments": {"path": "notes.md", "content": "checked"}}]},
  {"text": "Read, searched, noted."}
]}"#;

/// A run of [`SCRIPT`] with its write approved or denied; the store and the run.
async fn recorded(dir: &Path, approve: bool) -> (SledStore, RunId) {
    write(
        &dir.join("agent.toml"),
        r#"
name = "checked"
system = "You check the readme."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[tools]
allow = ["fs.read", "fs.search", "fs.edit", "fs.write"]
[[policy]]
tool = "fs.edit"
action = "deny"
[budgets]
loop_limit = 3
"#,
    );
    write(&dir.join("cassette.json"), SCRIPT);
    write(&dir.join("ws/README.md"), "# demo\nTODO\n");
    let store = SledStore::open(dir.join("store")).expect("store");
    let run = RunId::from_bytes([if approve { 1 } else { 2 }; 16]);
    {
        let spec = Spec::load(&dir.join("agent.toml")).expect("spec");
        let provider = Scripted::load(&dir.join("cassette.json")).expect("cassette");
        let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
        runner.start(run, "check the readme").expect("start");
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        assert!(matches!(stop, Stop::Parked(_)), "{stop:?}");
        let decision = if approve {
            Decision::Approved
        } else {
            Decision::Denied
        };
        decide_approval(&store, &run, None, decision, "ann", None, Timestamp(1)).expect("decide");
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    }
    (store, run)
}

fn names(store: &SledStore, run: &RunId) -> Vec<String> {
    store
        .events(run, 0..=u64::MAX)
        .expect("events")
        .iter()
        .map(|(_, e)| match &e.kind {
            EventKind::SignalReceived { name, .. } => format!("signal:{name}"),
            other => other.name().to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_recorded_decision_comes_out_the_same() {
    for approve in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, run) = recorded(dir.path(), approve).await;
        let kinds = names(&store, &run);
        for kind in [
            "model_failed",
            "approval_requested",
            "approval_decided",
            "signal:loop_warning",
            "run_finished",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
        }
        let check = check_run(&store, &run, &decide).expect("checks");
        assert!(check.passed(), "{:#?}", check.divergence);
        assert_eq!(check.events, kinds.len() as u64);
        // 7 model calls, 4 tools run or denied (the 3rd search is not run: the warning
        // comes first), the edit denied, one approval asked, the warning, the finish
        assert!(check.decisions >= 14, "{} decisions", check.decisions);
    }
}

/// Today's `decide`, except that it never asks: what a bug in the policy code would do.
fn never_asks(agent: &Agent, state: &State) -> Next {
    match decide(agent, state) {
        Next::AskApproval { call, .. } => Next::RunTool {
            call_id: call.call_id,
            tool: call.tool,
            args: call.args,
            rerun: false,
            idempotent: false,
        },
        other => other,
    }
}

/// Today's `decide`, except that it stops after three tool results.
fn stops_early(agent: &Agent, state: &State) -> Next {
    match decide(agent, state) {
        Next::CallModel { .. } if state.totals.tool_calls >= 3 => Next::Finish {
            outcome: Outcome::Succeeded,
            reason: "enough".into(),
        },
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_decide_is_caught_at_the_first_decision_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = recorded(dir.path(), true).await;
    let events = store.events(&run, 0..=u64::MAX).expect("events");
    let seq_of = |want: &dyn Fn(&EventKind) -> bool| {
        events
            .iter()
            .find(|(_, e)| want(&e.kind))
            .map(|(_, e)| e.seq)
            .expect("present")
    };

    let check = check_run(&store, &run, &never_asks).expect("checks");
    let d = check.divergence.expect("caught");
    assert_eq!(
        d.seq,
        seq_of(&|k| matches!(k, EventKind::ApprovalRequested { .. }))
    );
    assert_eq!(
        d.actual,
        Action::AskApproval {
            call_id: "w1".into(),
            automatic: false,
        }
    );
    let Action::RunTool { call_id, tool, .. } = &d.expected else {
        panic!("expected a tool run, got {:?}", d.expected)
    };
    assert_eq!((call_id.as_str(), tool.as_str()), ("w1", "fs.write"));
    let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
    assert!(paths.contains(&"/action"), "{paths:?}");
    assert!(paths.contains(&"/tool"), "{paths:?}");

    // the fourth model call (after three tool results) is where this one parts
    let check = check_run(&store, &run, &stops_early).expect("checks");
    let d = check.divergence.expect("caught");
    let third_result = events
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::ToolReturned { .. }))
        .nth(2)
        .map(|(_, e)| e.seq)
        .expect("three results");
    let next_call = events
        .iter()
        .find(|(_, e)| e.seq > third_result && matches!(e.kind, EventKind::ModelRequested { .. }))
        .map(|(_, e)| e.seq)
        .expect("a model call after it");
    assert_eq!(d.seq, next_call);
    assert_eq!(d.actual, Action::CallModel);
    assert_eq!(
        d.expected,
        Action::Finish {
            outcome: Outcome::Succeeded
        }
    );
    assert_eq!(d.expected_reason.as_deref(), Some("enough"));
}

/// A store with the recorded run, a fork of it with an edited tool result, and a plain fork
/// of that fork; the store and the three runs.
async fn family(dir: &Path) -> (SledStore, [RunId; 3]) {
    let (store, run) = recorded(dir, true).await;
    let events = store.events(&run, 0..=u64::MAX).expect("events");
    let (seq, original) = events
        .iter()
        .find(|(_, e)| matches!(e.kind, EventKind::ToolReturned { .. }))
        .map(|(_, e)| (e.seq, e.kind.clone()))
        .expect("a tool result");
    let edit = retrace_replay::edited_kind(
        &store,
        original,
        &serde_json::json!({"content": "edited"}),
        "tester",
    )
    .expect("edit");
    let fork = RunId::from_bytes([3; 16]);
    retrace_replay::fork(
        &store,
        &run,
        retrace_replay::ForkAt::Replace { seq, kind: edit },
        fork,
        Timestamp(5),
    )
    .expect("fork");
    let grandchild = RunId::from_bytes([4; 16]);
    retrace_replay::fork(
        &store,
        &fork,
        retrace_replay::ForkAt::After(seq),
        grandchild,
        Timestamp(6),
    )
    .expect("fork of the fork");
    (store, [run, fork, grandchild])
}

fn export_bytes(store: &SledStore, runs: &[RunId], with_forks: bool) -> Vec<u8> {
    let mut out = Vec::new();
    bundle::export(store, runs, with_forks, &mut out).expect("export");
    out
}

fn head_hash(store: &SledStore, run: &RunId) -> retrace_replay::StateHash {
    retrace_replay::state_at_head(store, run, retrace_replay::SnapshotPolicy::default())
        .expect("state")
        .state
        .hash()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_carries_runs_and_forks_whole_and_importing_twice_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, runs) = family(dir.path()).await;
    let bytes = export_bytes(&store, &runs[..1], true);

    let target_dir = tempfile::tempdir().expect("temp dir");
    let target = SledStore::open(target_dir.path()).expect("store");
    let checked = bundle::read(bytes.as_slice()).expect("a sound bundle");
    assert_eq!(checked.runs().map(|r| r.id).collect::<Vec<_>>(), runs);
    let summary = bundle::import(&target, &checked).expect("import");
    assert_eq!(summary.runs, runs);
    for run in &runs {
        let report = verify_run(&target, run, VerifyOptions::default()).expect("verify");
        assert!(report.is_ok(), "{run}: {:?}", report.problem);
        assert_eq!(head_hash(&target, run), head_hash(&store, run), "{run}");
        assert!(check_run(&target, run, &decide).expect("check").passed());
        assert_eq!(
            target.require_run(run).expect("run").origin,
            store.require_run(run).expect("run").origin
        );
    }
    let again = bundle::import(&target, &bundle::read(bytes.as_slice()).expect("read"))
        .expect("import again");
    assert!(again.runs.is_empty() && again.events == 0, "{again:?}");
    assert_eq!(again.skipped, runs);

    // the grandchild alone brings its ancestors, and nothing else
    let only = bundle::read(export_bytes(&store, &runs[2..], false).as_slice()).expect("read");
    assert_eq!(only.runs().map(|r| r.id).collect::<Vec<_>>(), runs);
    let parent_only =
        bundle::read(export_bytes(&store, &runs[..1], false).as_slice()).expect("read");
    assert_eq!(parent_only.runs().count(), 1);
}

/// `bytes` decompressed, changed by `change`, compressed again: what an attacker would do.
fn tampered(bytes: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut plain = retrace_tests::zstd_decode(bytes);
    change(&mut plain);
    retrace_tests::zstd_encode(&plain)
}

fn position(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_tampered_bundle_is_refused_naming_the_first_bad_item() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, runs) = family(dir.path()).await;
    let bytes = export_bytes(&store, &runs[..1], true);
    let refuse = |bytes: &[u8]| match bundle::read(bytes) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a bad bundle was accepted"),
    };

    // an event's bytes: a tool name changed (events come before blobs)
    let event = tampered(&bytes, |plain| {
        let at = position(plain, b"fs.search");
        plain[at + 8] = b'X';
    });
    let why = refuse(&event);
    assert!(why.starts_with("item "), "{why}");
    assert!(why.contains("seq"), "{why}");
    assert!(why.contains("hash to"), "{why}");
    assert!(why.contains("nothing was imported"), "{why}");

    // a blob's bytes: the task text
    let blob = tampered(&bytes, |plain| {
        let at = position(plain, b"check the readme");
        plain[at] = b'C';
    });
    let why = refuse(&blob);
    assert!(
        why.contains("blob") && why.contains("its bytes hash to"),
        "{why}"
    );

    // cut short
    let cut = tampered(&bytes, |plain| plain.truncate(plain.len() / 2));
    assert!(refuse(&cut).contains("cut short"), "{}", refuse(&cut));

    // not a bundle at all
    assert!(refuse(b"hello").contains("not a retrace bundle"));

    // a store holding one of the runs with other events: a conflict, and nothing written
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = SledStore::open(other_dir.path()).expect("store");
    other
        .create_run(retrace_store::NewRun::new(runs[0], Timestamp(0)))
        .expect("run");
    let checked = bundle::read(bytes.as_slice()).expect("sound");
    let err = bundle::import(&other, &checked).expect_err("conflict");
    assert!(err.to_string().contains("other events"), "{err}");
    assert_eq!(other.runs().expect("runs").len(), 1);
}

/// Run the suite `text` (written into `dir`) over `store`.
async fn suite_report(store: &SledStore, dir: &Path, text: &str) -> SuiteReport {
    let path = dir.join("suite.toml");
    write(&path, text);
    let suite = Suite::load(&path).expect("a sound suite");
    let recordings = prepare(store, &suite).expect("recordings found");
    run_suite(store, &suite, &recordings, &mut |_| {}).await
}

fn seq_where(store: &SledStore, run: &RunId, want: impl Fn(&EventKind) -> bool, after: u64) -> u64 {
    store
        .events(run, 0..=u64::MAX)
        .expect("events")
        .into_iter()
        .find(|(_, e)| e.seq > after && want(&e.kind))
        .map(|(_, e)| e.seq)
        .expect("such an event")
}

/// Two recordings (write approved, in the store; write denied, in a bundle) run through a
/// suite of four cases: both unchanged, a new prompt from seq 3 on, a changed reply.
async fn corpus(dir: &Path) -> (SledStore, RunId, SuiteReport) {
    let (store, approved) = recorded(dir, true).await;
    // the second recording (write denied) in the same store
    let denied_dir = tempfile::tempdir().expect("temp dir");
    let (other, denied) = recorded(denied_dir.path(), false).await;
    let mut bundle_bytes = Vec::new();
    bundle::export(&other, &[denied], false, &mut bundle_bytes).expect("export");
    drop(other);
    write(&dir.join("denied.bundle"), "");
    std::fs::write(dir.join("denied.bundle"), &bundle_bytes).expect("bundle");
    // the tools must not run again: their effect is gone and must stay gone
    std::fs::remove_file(dir.join("ws/notes.md")).expect("the approved write happened");

    // a reply changed: the 4th (the second search) asks for another pattern
    let mut script: serde_json::Value = serde_json::from_str(SCRIPT).expect("json");
    script["replies"][4]["tool_calls"][0]["arguments"]["pattern"] = "FIXME".into();
    write(&dir.join("changed.json"), &script.to_string());
    let approved_id = approved.to_string();
    let report = suite_report(
        &store,
        dir,
        &format!(
            r#"
name = "corpus"
jobs = 3

[[case]]
name = "approved, unchanged"
run = "{approved_id}"
[case.expect]
must_call = ["fs.write"]
no_denied_approvals = true

[[case]]
name = "denied, from its bundle"
bundle = "denied.bundle"
[case.expect]
must_not_call = ["fs.edit_does_not_exist"]

[[case]]
name = "new prompt"
run = "{approved_id}"
fork_at = 3
[case.override]
system = "Be brief."

[[case]]
name = "new cassette"
run = "{approved_id}"
[case.override]
cassette = "changed.json"
"#
        ),
    )
    .await;
    (store, approved, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_corpus_passes_its_suite_and_changes_fail_at_the_right_seq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, approved, report) = corpus(dir.path()).await;
    let case = |name: &str| {
        report
            .cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("case {name}"))
    };
    for name in ["approved, unchanged", "denied, from its bundle"] {
        let c = case(name);
        assert!(c.passed, "{name}: {:?}", c.failures);
        assert_eq!(c.first_divergence, None, "{name}");
        assert_eq!(c.delta, retrace_eval::case::Delta::default(), "{name}");
    }
    assert!(
        !dir.path().join("ws/notes.md").exists(),
        "fs.write was served from the recording, not run"
    );
    // the prompt shows in the first model request after the fork point
    let prompt = case("new prompt");
    assert!(!prompt.passed);
    assert_eq!(
        prompt.first_divergence,
        Some(seq_where(
            &store,
            &approved,
            |k| matches!(k, EventKind::ModelRequested { .. }),
            3
        ))
    );
    // the changed reply is the 5th model reply
    let cassette = case("new cassette");
    assert!(!cassette.passed);
    let fifth_reply = store
        .events(&approved, 0..=u64::MAX)
        .expect("events")
        .into_iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::ModelResponded { .. }))
        .nth(3)
        .map(|(_, e)| e.seq)
        .expect("reply");
    assert_eq!(cassette.first_divergence, Some(fifth_reply));
    assert!(
        cassette
            .failures
            .iter()
            .any(|f| f.contains("the run stopped")),
        "the changed call has no recorded match: {:?}",
        cassette.failures
    );
    assert_eq!((report.passed, report.failed), (2, 2));

    // every case is a fork recording what it ran with, and it checks clean
    let prompt_fork = prompt.fork.expect("fork");
    let state = retrace_replay::state_at_head(
        &store,
        &prompt_fork,
        retrace_replay::SnapshotPolicy::default(),
    )
    .expect("state")
    .state;
    let spec: Spec = serde_json::from_slice(
        &store
            .blob(&state.spec.expect("spec"))
            .expect("read")
            .expect("blob"),
    )
    .expect("spec");
    assert_eq!(spec.system, "Be brief.");
    assert!(
        check_run(&store, &prompt_fork, &decide)
            .expect("check")
            .passed()
    );

    let xml = junit(&report);
    assert!(xml.contains(r#"failures="2""#), "{xml}");
    assert!(xml.contains("new cassette"), "{xml}");
    assert!(table(&report).contains("corpus: 2 passed, 2 failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_tool_calls_fail_the_case_or_run_live_as_the_case_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = recorded(dir.path(), true).await;
    // the first read asks for another file now
    let mut script: serde_json::Value = serde_json::from_str(SCRIPT).expect("json");
    script["replies"][1]["tool_calls"][0]["arguments"]["path"] = "LATER.md".into();
    write(&dir.path().join("moved.json"), &script.to_string());
    let report = suite_report(
        &store,
        dir.path(),
        &format!(
            r#"
[[case]]
name = "fail"
run = "{run}"
[case.override]
cassette = "moved.json"

[[case]]
name = "live"
run = "{run}"
unmatched_tools = "live"
[case.override]
cassette = "moved.json"
[case.expect]
identical = false
"#
        ),
    )
    .await;
    let fail = &report.cases[0];
    assert!(!fail.passed);
    assert!(
        fail.failures
            .iter()
            .any(|f| f.contains("refused") && f.contains("fs.read")),
        "{:?}",
        fail.failures
    );
    let fork = fail.fork.expect("fork");
    let kinds = names(&store, &fork);
    assert!(
        !kinds.iter().any(|k| k == "tool_requested"),
        "nothing of the refused call is recorded: {kinds:?}"
    );

    let live = &report.cases[1];
    assert!(live.passed, "{:?}", live.failures);
    let results: Vec<String> = store
        .events(&live.fork.expect("fork"), 0..=u64::MAX)
        .expect("events")
        .into_iter()
        .filter_map(|(_, e)| match e.kind {
            EventKind::ToolReturned { output, .. } => Some(
                String::from_utf8(store.blob(&output).expect("read").expect("blob"))
                    .expect("utf-8"),
            ),
            _ => None,
        })
        .collect();
    assert!(
        results[0].contains("LATER.md"),
        "the read ran for real and found no such file: {}",
        results[0]
    );
}

#[test]
fn bad_suite_files_are_rejected_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("suite.toml");
    for (text, line, says) in [
        (
            "[[case]]\nname = \"a\"\nrun = \"1\"\nfork = 2\n",
            4,
            "unknown field `fork`",
        ),
        (
            "jobs = 0\n[[case]]\nname = \"a\"\nrun = \"1\"\n",
            1,
            "jobs must be at least 1",
        ),
        (
            "[[case]]\nname = \"a\"\nrun = \"1\"\n[[case]]\nname = \"a\"\nrun = \"2\"\n",
            4,
            "two cases are named `a`",
        ),
        ("\n[[case]]\nname = \"a\"\n", 2, "names no recording"),
        (
            "[[case]]\nname = \"a\"\nrun = \"1\"\n[case.expect]\noutput_regex = \"(\"\n",
            5,
            "output_regex",
        ),
        (
            "[[case]]\nname = \"a\"\nrun = \"1\"\n[case.override]\npolicy = []\n",
            5,
            "unknown field `policy`",
        ),
        ("name = \"empty\"\n", 1, "no cases"),
    ] {
        write(&path, text);
        let err = Suite::load(&path).expect_err(text);
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("{}:{line}:", path.display())),
            "{shown}"
        );
        assert!(shown.contains(says), "{shown}");
    }
}

#[test]
fn a_blob_over_the_item_limit_is_refused_at_export_rather_than_at_import() {
    let store = retrace_store::MemoryStore::new();
    let run = RunId::from_bytes([7; 16]);
    store
        .create_run(retrace_store::NewRun::new(run, Timestamp(0)))
        .expect("run");
    let blob = store
        .put_blob(&vec![0u8; bundle::MAX_ITEM + 1])
        .expect("blob");
    let finished = retrace_events::Event::after(
        None,
        Timestamp(1),
        EventKind::RunFinished {
            outcome: Outcome::Succeeded,
            detail: blob,
        },
    );
    store.append(&run, None, &[finished]).expect("append");
    let err = bundle::export(&store, &[run], false, std::io::sink()).expect_err("too large");
    let text = err.to_string();
    assert!(
        text.contains(&format!("blob {blob} is 268435457 bytes, over the 256 MiB")),
        "{text}"
    );
}

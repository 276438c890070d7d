//! The views that read a run as a story, driven through real egui frames over real stores
//! written by the runtime from the shipped examples: the step cards, the waterfall and the
//! cost curves, run vs run, find, and a parked run's controls at the top.

use super::*;

use retrace_inspector::compare::Comparison;
use retrace_replay::{ForkAt, fork};

/// The repository's `examples/`.
fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("fixture");
    for entry in std::fs::read_dir(from).expect("fixture") {
        let entry = entry.expect("fixture");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("fixture").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("fixture");
        }
    }
}

/// The shipped example `name`, copied under `dir`, run by the runtime to its stop on the
/// store in `dir/store`.
pub(crate) fn example_run(dir: &Path, name: &str, run: RunId) -> (Arc<dyn Store>, Stop) {
    let agent_dir = dir.join(name);
    copy_dir(&examples().join(name), &agent_dir);
    // as a fresh clone has it: what a run of the example wrote in place is not its workspace
    let out = agent_dir.join("workspace/out");
    if out.exists() {
        std::fs::remove_dir_all(out).expect("fixture");
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.join("store")).expect("fixture"));
    let stop = drive(store.as_ref(), &agent_dir, run, true);
    (store, stop)
}

/// The approval example, approved from the CLI's function and resumed to its end.
fn approved_example(dir: &Path, run: RunId) -> Arc<dyn Store> {
    let (store, stop) = example_run(dir, "approval", run);
    assert!(matches!(stop, Stop::Parked(_)), "{stop:?}");
    retrace_replay::decide_approval(
        store.as_ref(),
        &run,
        None,
        Decision::Approved,
        "alice",
        Some("the date is right"),
        Timestamp(1),
    )
    .expect("fixture");
    let stop = drive(store.as_ref(), &dir.join("approval"), run, false);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    store
}

/// The inspector in the step view (the default), settled.
pub(crate) fn steps_harness(
    store: Arc<dyn Store>,
    host: Arc<dyn Host>,
    target: Target,
    view: View,
) -> Harness<'static, Inspector> {
    let mut harness = harness_in(store, host, target, view);
    settle(&mut harness);
    harness
}

/// `text` is on screen (in a card, and maybe in the detail panel too).
fn shows(harness: &Harness<'_, Inspector>, text: &str) {
    assert!(
        harness.query_all_by_label(text).next().is_some(),
        "{text:?} is not shown"
    );
}

pub(crate) fn at(run: RunId, seq: Option<u64>) -> Target {
    Target {
        run: Some(run),
        seq,
    }
}

#[test]
fn the_step_view_tells_the_tidy_run_as_cards() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([21; 16]);
    let (store, stop) = example_run(dir.path(), "tidy", run);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let mut harness = steps_harness(Arc::clone(&store), host, at(run, Some(0)), View::Steps);
    // the first cards: the task, the first model call and its tool call
    harness.get_by_label("task");
    shows(&harness, "do the task");
    harness.get_by_label("Let me see what is in the project.");
    harness.get_by_label("calls fs.list (call_1)");
    harness.get_by_label_contains("fs.list · call_1");
    let first = harness
        .query_all_by_label_contains("model call · demo")
        .count();
    assert!(first >= 1, "the model call's card is drawn");
    // its usage as recorded: tokens, cost and latency
    let usage = store
        .events(&run, 0..=10)
        .unwrap()
        .into_iter()
        .find_map(|(_, e)| match e.kind {
            EventKind::ModelResponded { usage, .. } => Some(usage),
            _ => None,
        })
        .unwrap();
    harness.get_by_label(&format!(
        "{} in / {} out tokens · {} · {}",
        usage.input_tokens,
        usage.output_tokens,
        retrace_replay::describe::usd(usage.cost_micro_usd),
        retrace_inspector::cards::duration(usage.latency_ms)
    ));

    // a long result is folded; "show all" pages through it in a window of its own
    let listed = seqs_of(
        store.as_ref(),
        &run,
        |k| matches!(k, EventKind::ToolReturned { call_id, .. } if call_id == "call_1"),
    )[0];
    let (_, event) = store.event_at(&run, listed).unwrap().unwrap();
    let EventKind::ToolReturned { output, .. } = event.kind else {
        unreachable!()
    };
    let output: serde_json::Value =
        serde_json::from_slice(&store.blob(&output).unwrap().unwrap()).unwrap();
    let lines = serde_json::to_string_pretty(&output)
        .unwrap()
        .lines()
        .count();
    assert!(lines > retrace_inspector::cards::RESULT_LINES);
    harness
        .get_by_label_contains(&format!("show all ({lines} lines, "))
        .click();
    settle(&mut harness);
    harness.get_by_label(&format!("lines 1–{lines} of {lines}"));
    harness.get_by_label_contains("\"path\": \"src/calc.txt\"");
    harness.state_mut().apply(Command::ClosePager);
    settle(&mut harness);
    // "what the model saw" opens the request tab at that call
    harness
        .query_all_by_label("what the model saw")
        .next()
        .expect("a model call's card")
        .click();
    settle(&mut harness);
    let asked = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ModelRequested { .. })
    })[0];
    harness.get_by_label_contains(&format!("request of model call #{asked} · "));
    assert_eq!(harness.state().position(), Some((run, asked)));

    // the end of the run: the last reply and the finish
    harness.key_press(egui::Key::End);
    settle(&mut harness);
    shows(
        &harness,
        "Done. The summary is in out/SUMMARY.md: a tiny calculator library with one open TODO.",
    );
    harness.get_by_label("end of the run: succeeded");
    harness.get_by_label("calls fs.write (call_4)");
    // the cursor's card is the finish, and a click on another card moves the cursor there
    let len = store.require_run(&run).unwrap().len();
    assert_eq!(harness.state().position(), Some((run, len - 1)));
    // a click on a card's header goes to its first event
    let third = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ModelRequested { .. })
    })[2];
    let proposed = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ToolCallsProposed { .. })
    });
    let end = proposed.into_iter().find(|&s| s > third).unwrap();
    shows(&harness, "Writing the summary now.");
    harness.get_by_label(&format!("#{third}–#{end}")).click();
    settle(&mut harness);
    assert_eq!(harness.state().position(), Some((run, third)));
}

#[test]
fn an_approval_card_shows_who_decided_and_the_note() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([22; 16]);
    let store = approved_example(dir.path(), run);
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let asked = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ApprovalRequested { .. })
    })[0];
    let harness = steps_harness(store, host, at(run, Some(asked)), View::Steps);
    harness.get_by_label("approval of call_1");
    harness.get_by_label_contains("approved by alice after ");
    harness.get_by_label("note: the date is right");
    // nothing waits any more: no banner
    assert!(harness.query_by_label("This run waits for you").is_none());
}

#[test]
fn a_parked_run_shows_what_it_waits_for_at_the_top_and_streams_on_once_decided() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([23; 16]);
    let (store, stop) = example_run(dir.path(), "approval", run);
    assert!(matches!(stop, Stop::Parked(_)), "{stop:?}");
    let host = Arc::new(TestHost::default());
    // opened at the start: the banner is there whatever the cursor
    let mut harness = steps_harness(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        at(run, Some(0)),
        View::Steps,
    );
    harness.get_by_label("This run waits for you");
    harness.get_by_label_contains("approval of call_1 (#");
    harness.get_by_label("approve call_1").click();
    settle(&mut harness);
    let decided = seqs_of(store.as_ref(), &run, |k| {
        matches!(
            k,
            EventKind::ApprovalDecided {
                decision: Decision::Approved,
                ..
            }
        )
    });
    assert_eq!(decided.len(), 1, "the decision is recorded once");
    assert_eq!(host.resumed.lock().unwrap().as_slice(), &[run]);
    // the host continues the run (here, the test); the step view picks up what it appends
    let stop = drive(store.as_ref(), &dir.path().join("approval"), run, false);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while harness
        .query_by_label("end of the run: succeeded")
        .is_none()
    {
        assert!(Instant::now() < deadline, "the finish never showed");
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(harness.query_by_label("This run waits for you").is_none());
    harness.get_by_label_contains("approved by inspector after ");
}

#[test]
fn a_click_on_a_waterfall_bar_moves_the_cursor_to_that_call() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([24; 16]);
    let (store, _) = example_run(dir.path(), "tidy", run);
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let mut harness = steps_harness(Arc::clone(&store), host, at(run, Some(0)), View::Time);
    let tools = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ToolRequested { .. })
    });
    let models = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ModelRequested { .. })
    });
    harness
        .get_by_label(&format!("bar #{} tool", tools[2]))
        .click();
    settle(&mut harness);
    assert_eq!(harness.state().position(), Some((run, tools[2])));
    harness
        .get_by_label(&format!("bar #{} model", models[1]))
        .click();
    settle(&mut harness);
    assert_eq!(harness.state().position(), Some((run, models[1])));
    // the detail follows the cursor
    harness.get_by_label(&format!("seq {} · model_requested", models[1]));
    // the curves sum the run's usage
    let totals = retrace_replay::state_at_head(store.as_ref(), &run, SnapshotPolicy::default())
        .unwrap()
        .state
        .totals;
    harness.get_by_label_contains(&format!(
        "{} tokens · {} over ",
        totals.input_tokens + totals.output_tokens,
        retrace_replay::describe::usd(totals.cost_micro_usd)
    ));
}

/// The tidy run and a fork of it whose last reply was edited; the seq edited.
fn tidy_and_edited_fork(dir: &Path, run: RunId, forked: RunId) -> (Arc<dyn Store>, u64) {
    let (store, _) = example_run(dir, "tidy", run);
    edited_fork(store.as_ref(), run, forked);
    let last = *seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ModelResponded { .. })
    })
    .last()
    .expect("fixture");
    (store, last)
}

/// A fork of `run` whose last reply says "report" where it said "summary".
fn edited_fork(store: &dyn Store, run: RunId, forked: RunId) {
    let last = *seqs_of(store, &run, |k| {
        matches!(k, EventKind::ModelResponded { .. })
    })
    .last()
    .expect("fixture");
    let (_, event) = store
        .event_at(&run, last)
        .expect("fixture")
        .expect("fixture");
    let EventKind::ModelResponded { response, .. } = event.kind else {
        unreachable!()
    };
    let mut reply: serde_json::Value =
        serde_json::from_slice(&store.blob(&response).expect("fixture").expect("fixture"))
            .expect("fixture");
    reply["text"] = serde_json::json!(
        "Done. The report is in out/SUMMARY.md: a tiny calculator library with one open TODO."
    );
    let edit = ForkAt::edit(store, &run, last, &reply, "test").expect("fixture");
    fork(store, &run, edit, forked, Timestamp(FIXED_START + 1)).expect("fixture");
}

fn comparison(harness: &Harness<'_, Inspector>) -> Comparison {
    harness.state().comparison().cloned().expect("compared")
}

#[test]
fn run_vs_run_marks_the_edited_reply_and_its_changed_words() {
    let dir = tempfile::tempdir().unwrap();
    let (run, forked) = (RunId::from_bytes([25; 16]), RunId::from_bytes([26; 16]));
    let (store, edited) = tidy_and_edited_fork(dir.path(), run, forked);
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let mut harness = steps_harness(store, host, at(run, None), View::Versus);
    // pick the fork in the list (it is offered first, as a fork of this run)
    harness.get_by_label("compared with the run shown").click();
    harness.run_steps(2);
    harness
        .get_by_label_contains(&format!("{} (a fork of it)", forked.short()))
        .click();
    settle(&mut harness);
    let c = comparison(&harness);
    assert_eq!((c.a, c.b), (run, forked));
    assert_eq!(c.divergence, Some(edited));
    let first = c.first_difference.expect("a difference");
    let pair = &c.rows[first];
    let reply = pair
        .changes
        .iter()
        .find(|ch| ch.field == "reply")
        .expect("the reply changed");
    let changed = |pieces: &[(bool, String)]| -> Vec<String> {
        pieces
            .iter()
            .filter(|(c, _)| *c)
            .map(|(_, t)| t.clone())
            .collect()
    };
    assert_eq!(changed(&reply.left), ["summary"]);
    assert_eq!(changed(&reply.right), ["report"]);
    // every row before it is the same on both sides
    assert!(c.rows[..first].iter().all(|p| !p.differs()));
    // on screen: the mark, the field and both texts
    harness.get_by_label("first divergence:");
    shows(
        &harness,
        "Done. The summary is in out/SUMMARY.md: a tiny calculator library with one open TODO.",
    );
    shows(
        &harness,
        "Done. The report is in out/SUMMARY.md: a tiny calculator library with one open TODO.",
    );
    harness.get_by_label_contains(&format!("the logs part at #{edited}"));
}

#[test]
fn find_locates_a_string_that_only_a_tool_result_holds_and_n_goes_round_the_hits() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([27; 16]);
    let (store, _) = example_run(dir.path(), "tidy", run);
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let mut harness = steps_harness(Arc::clone(&store), host, at(run, Some(0)), View::Steps);
    // the README's words reach the log only as fs.read's result
    let field = harness.get_by_label("find");
    field.focus();
    field.type_text("SUBTRACT, multiply");
    harness.key_press(egui::Key::Enter);
    settle(&mut harness);
    harness.get_by_label("1 hits");
    let read = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ToolReturned { .. })
    })
    .into_iter()
    .find(|&seq| {
        let (_, e) = store.event_at(&run, seq).unwrap().unwrap();
        let EventKind::ToolReturned { call_id, .. } = e.kind else {
            unreachable!()
        };
        call_id == "call_2"
    })
    .unwrap();
    assert_eq!(harness.state().position(), Some((run, read)));
    harness.get_by_label_contains(&format!("#{read} tool_returned"));
    // a word in several payloads: n and N go round them
    harness.state_mut().apply(Command::Search("summary".into()));
    settle(&mut harness);
    let hits = harness.state().found().expect("searched").hits.clone();
    assert!(hits.len() >= 3, "{hits:?}");
    harness.state_mut().apply(Command::MoveTo(hits[0].seq));
    settle(&mut harness);
    for expected in [hits[1].seq, hits[2].seq] {
        harness.key_press(egui::Key::N);
        settle(&mut harness);
        assert_eq!(harness.state().position(), Some((run, expected)));
    }
    harness.key_press_modifiers(egui::Modifiers::SHIFT, egui::Key::N);
    settle(&mut harness);
    assert_eq!(harness.state().position(), Some((run, hits[1].seq)));
}

#[test]
fn the_filter_keeps_the_steps_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([28; 16]);
    let (store, _) = example_run(dir.path(), "tidy", run);
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let mut harness = steps_harness(store, host, at(run, Some(0)), View::Steps);
    harness.get_by_label("calls fs.list (call_1)");
    // only fs.read: the list and the model calls go
    harness
        .state_mut()
        .apply(Command::Filter(retrace_inspector::steps::Filter {
            tool: Some("fs.read".into()),
            ..Default::default()
        }));
    settle(&mut harness);
    harness.get_by_label_contains("fs.read · call_2");
    assert!(harness.query_by_label("calls fs.list (call_1)").is_none());
    assert!(
        harness
            .query_by_label_contains("fs.list · call_1")
            .is_none()
    );
}

/// Snapshots of the step view and run vs run on runs whose every byte is fixed.
#[test]
fn image_snapshots_of_the_step_view_and_run_vs_run() {
    let dir = tempfile::tempdir().unwrap();
    let tidy = RunId::from_bytes([29; 16]);
    let (store, _) = example_run(dir.path(), "tidy", tidy);
    let fixed = RunId::from_bytes([30; 16]);
    fixed_copy(store.as_ref(), dir.path(), tidy, fixed, "tidy (fixed)");
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let model = seqs_of(store.as_ref(), &fixed, |k| {
        matches!(k, EventKind::ModelRequested { .. })
    })[1];
    let mut harness = steps_harness(
        Arc::clone(&store),
        host,
        at(fixed, Some(model)),
        View::Steps,
    );
    harness.snapshot("steps");

    let forked = RunId::from_bytes([33; 16]);
    edited_fork(store.as_ref(), fixed, forked);
    harness.state_mut().apply(Command::Refresh);
    settle(&mut harness);
    harness.state_mut().apply(Command::View(View::Versus));
    harness
        .state_mut()
        .apply(Command::CompareWith(Some(forked)));
    settle(&mut harness);
    harness.get_by_label("first divergence:");
    harness.snapshot("run_vs_run");
}

/// A snapshot of the waterfall of a run that waited for a human, every byte fixed.
#[test]
fn image_snapshot_of_the_waterfall() {
    let dir = tempfile::tempdir().unwrap();
    let asked = RunId::from_bytes([31; 16]);
    let store = approved_example(dir.path(), asked);
    let fixed = RunId::from_bytes([32; 16]);
    fixed_copy(store.as_ref(), dir.path(), asked, fixed, "approval (fixed)");
    let wait = seqs_of(store.as_ref(), &fixed, |k| {
        matches!(k, EventKind::ApprovalRequested { .. })
    })[0];
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let mut harness = steps_harness(store, host, at(fixed, Some(wait)), View::Time);
    harness.get_by_label(&format!("bar #{wait} approval"));
    harness.snapshot("waterfall");
}

#[test]
fn the_banner_answers_the_question_a_parked_run_waits_on_whatever_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([34; 16]);
    let store = asking_run(dir.path(), run, &topic_question());
    let host = Arc::new(TestHost::default());
    // at the first event: the detail has no question there, the banner has it
    let mut harness = steps_harness(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        at(run, Some(0)),
        View::Steps,
    );
    harness.get_by_label("This run waits for you");
    harness.get_by_label_contains("an answer to ask1 (#");
    assert!(harness.query_by_label("Question for you").is_none());
    // the user.ask card says what it waits for
    let asked = seqs_of(
        store.as_ref(),
        &run,
        |k| matches!(k, EventKind::ToolRequested { tool, .. } if tool == "user.ask"),
    )[0];
    harness.state_mut().apply(Command::MoveTo(asked));
    settle(&mut harness);
    harness.get_by_label("waiting for an answer");
    // at the head the detail offers the same choices; back at the start only the banner does
    assert_eq!(
        harness
            .query_all_by_role_and_label(egui::accesskit::Role::Button, "wasmtime")
            .count(),
        2,
        "the banner's and the detail's"
    );
    harness.state_mut().apply(Command::MoveTo(0));
    settle(&mut harness);
    harness
        .get_by_role_and_label(egui::accesskit::Role::Button, "wasmtime")
        .click();
    settle(&mut harness);
    answered_wasmtime(store.as_ref(), &run);
    assert_eq!(host.resumed.lock().unwrap().as_slice(), &[run]);
    // once answered, nothing waits
    assert!(harness.query_by_label("This run waits for you").is_none());
}

#[test]
fn an_imported_claude_code_session_reads_as_a_story() {
    let dir = tempfile::tempdir().unwrap();
    let file = examples().join("recordings/claude-code.jsonl");
    let source = retrace_import::Source {
        name: "claude-code.jsonl".into(),
        bytes: std::fs::read(&file).expect("fixture"),
    };
    let transcript = retrace_import::parse(
        retrace_import::Format::ClaudeCode,
        std::slice::from_ref(&source),
    )
    .expect("fixture");
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(dir.path().join("store")).expect("fixture"));
    let run = retrace_import::write(
        store.as_ref(),
        &transcript,
        std::slice::from_ref(&source),
        None,
        Timestamp(1),
    )
    .expect("fixture")
    .run;
    let returned = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ToolReturned { .. })
    })[0];
    let harness = steps_harness(
        store,
        Arc::new(TestHost::default()),
        at(run, Some(returned)),
        View::Steps,
    );
    // the model's words, the Bash call and its failing output, the final answer
    shows(&harness, "Let me run the tests.");
    for text in [
        "cargo test",
        "assertion failed: total == 300",
        "the discount is applied after rounding",
    ] {
        assert!(
            harness.query_all_by_label_contains(text).next().is_some(),
            "{text:?} is not shown"
        );
    }
}

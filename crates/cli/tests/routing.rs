//! Model routing through the `retrace` binary against loopback OpenAI-compatible servers:
//! fallback when the primary fails and then is down, rules by step and by the previous
//! tool error, each choice recorded (`model_routed`) with its reason, accounted per model,
//! and reproduced by `retrace check`.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{log_json, retrace, text};
use retrace_tests::loopback::{KEY_ENV, Reply, Server, head, openai_reply};
use serde_json::Value;

async fn run_agent(store: &Path, spec: &Path, input: &str) -> Output {
    let (store, spec, input) = (store.to_owned(), spec.to_owned(), input.to_owned());
    tokio::task::spawn_blocking(move || {
        common::command(&store)
            .args(["run", spec.to_str().expect("utf-8"), "--input", &input])
            .output()
            .expect("run the retrace binary")
    })
    .await
    .expect("join")
}

/// A streamed reply: `text`, then a call of `fs.read` on `path` if given, with usage.
fn reply(text: &str, read: Option<(&str, &str)>, usage: (u64, u64)) -> Reply {
    openai_reply(text, read, Some(usage))
}

fn unavailable() -> Reply {
    let mut bytes = head(
        "503 Service Unavailable",
        &[("content-type", "application/json")],
    );
    bytes.extend_from_slice(br#"{"error": {"message": "the engine is overloaded"}}"#);
    Reply::Pieces(vec![bytes], Duration::ZERO)
}

/// A spec reading files, `[model]` at `main`, other models and `[routing]` as given.
fn spec(dir: &Path, main: &str, models: &[(&str, &str, f64)], routing: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("ws")).expect("mkdir");
    std::fs::write(dir.join("ws/README.md"), "# Hello\n").expect("write");
    let mut text = format!(
        "name = \"reader\"\nsystem = \"Summarise.\"\nworkspace = \"ws\"\n\
         [model]\nprovider = \"openai\"\nname = \"main-model\"\nbase_url = \"{main}\"\n\
         api_key_env = \"{KEY_ENV}\"\n\
         [model.price]\ninput_usd_per_mtok = 10.0\noutput_usd_per_mtok = 30.0\n\
         [context]\nwindow_tokens = 32000\n\
         [tools]\nallow = [\"fs.read\"]\n"
    );
    for (name, url, price) in models {
        let _ = write!(
            text,
            "[[models]]\nname = \"{name}\"\nprovider = \"openai\"\nmodel = \"{name}-model\"\n\
             base_url = \"{url}\"\napi_key_env = \"{KEY_ENV}\"\n\
             price = {{ input_usd_per_mtok = {price}, output_usd_per_mtok = {price} }}\n"
        );
    }
    text.push_str(routing);
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write spec");
    path
}

/// The run's `model_routed` events: (model, rule, reason).
fn routes(events: &[Value]) -> Vec<(String, Option<u64>, String)> {
    events
        .iter()
        .filter(|e| e["kind"] == "model_routed")
        .map(|e| {
            (
                e["model"].as_str().expect("a string").to_owned(),
                e["rule"].as_u64(),
                e["reason"].as_str().expect("a string").to_owned(),
            )
        })
        .collect()
}

fn only_run(store: &Path) -> String {
    common::the_run(store).expect("a run")["run"]
        .as_str()
        .expect("its id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_that_fails_then_is_down_hands_the_run_to_its_fallback() {
    // the primary answers 503 three times, then its port is closed: it is down
    let primary = Server::start(vec![unavailable(), unavailable(), unavailable()]).await;
    let backup = Server::start(vec![
        reply(
            "Let me read it.",
            Some(("call_1", "README.md")),
            (1_000, 20),
        ),
        reply("The project says hello.", None, (2_000, 10)),
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = dir.path().join("store");
    let spec = spec(
        dir.path(),
        &primary.url("/v1"),
        &[("backup", &backup.url("/v1"), 1.0)],
        "[routing]\nfallback = [\"backup\"]\ncooldown_secs = 600\n",
    );
    let out = run_agent(&store, &spec, "Summarise README.md").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("The project says hello."),
        "{}",
        text(&out)
    );
    assert_eq!(primary.requests().len(), 3);
    assert_eq!(backup.requests().len(), 2);
    assert_eq!(backup.requests()[0].json()["model"], "backup-model");

    let run = only_run(&store);
    let events = log_json(&store, &run);
    let routed = routes(&events);
    let reasons: Vec<(&str, &str)> = routed
        .iter()
        .map(|(m, _, r)| (m.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("main", "the default"),
            ("main", "retry 2 of main after a transient failure"),
            ("main", "retry 3 of main after a transient failure"),
            (
                "backup",
                "fallback: main failed 3 times in a row (transient)"
            ),
            (
                "backup",
                "fallback: main failed less than 600 s ago and is cooling down"
            ),
        ]
    );
    // each routing choice is appended with its call's intent, just before it
    for (i, e) in events.iter().enumerate() {
        if e["kind"] == "model_routed" {
            assert_eq!(events[i + 1]["kind"], "model_requested");
        }
    }
    // accounted per model: the backup's tokens at its price, the primary's failures
    let show = retrace(&store, &["show", &run, "--json"]);
    let shown: Value = serde_json::from_slice(&show.stdout).expect("show json");
    let by_model = &shown["state"]["models"]["by_model"];
    assert_eq!(by_model["main"]["failures"], 3);
    assert_eq!(by_model["main"]["replies"], 0);
    assert_eq!(by_model["backup"]["replies"], 2);
    assert_eq!(by_model["backup"]["input_tokens"], 3_000);
    // $1 per million tokens: 3,030 tokens
    assert_eq!(by_model["backup"]["cost_micro_usd"], 3_030);
    assert_eq!(shown["state"]["totals"]["cost_micro_usd"], 3_030);
    let human = text(&retrace(&store, &["show", &run]));
    assert!(
        human.contains("model     backup: 2 replies, 0 failures, 3000 in / 30 out tokens"),
        "{human}"
    );
    // the same choices come out of today's routing
    let check = retrace(&store, &["check", &run]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(retrace(&store, &["verify", &run]).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_by_step_and_by_the_previous_tool_error_choose_as_written() {
    // step 0 goes to `cheap` (the first step), which reads a file that is not there; step
    // 1 follows a tool error, so `strong`; step 2 matches no rule: the default, `main`
    let cheap = Server::start(vec![reply(
        "Reading.",
        Some(("call_1", "MISSING.md")),
        (100, 5),
    )])
    .await;
    let strong = Server::start(vec![reply(
        "That file is missing; reading the README.",
        Some(("call_2", "README.md")),
        (200, 10),
    )])
    .await;
    let main = Server::start(vec![reply("It says hello.", None, (300, 5))]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = dir.path().join("store");
    let spec = spec(
        dir.path(),
        &main.url("/v1"),
        &[
            ("cheap", &cheap.url("/v1"), 0.1),
            ("strong", &strong.url("/v1"), 5.0),
        ],
        "[routing]\n\
         [[routing.rules]]\nuse = \"strong\"\nafter_tool_error = true\n\
         [[routing.rules]]\nuse = \"cheap\"\nfirst_steps = 1\n",
    );
    let out = run_agent(&store, &spec, "Summarise").await;
    assert!(out.status.success(), "{}", text(&out));
    let run = only_run(&store);
    let routed = routes(&log_json(&store, &run));
    assert_eq!(
        routed,
        [
            (
                "cheap".to_owned(),
                Some(1),
                "rule 1: the first step".to_owned()
            ),
            (
                "strong".to_owned(),
                Some(0),
                "rule 0: after a tool error".to_owned()
            ),
            ("main".to_owned(), None, "the default".to_owned()),
        ]
    );
    assert_eq!(cheap.requests()[0].json()["model"], "cheap-model");
    assert_eq!(strong.requests()[0].json()["model"], "strong-model");
    assert_eq!(main.requests()[0].json()["model"], "main-model");
    let check = retrace(&store, &["check", &run]);
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn a_route_to_an_undeclared_model_is_refused_with_where() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let spec = spec(
        dir.path(),
        "http://127.0.0.1:9/v1",
        &[],
        "[routing]\nfallback = [\"nope\"]\n",
    );
    let out = retrace(
        &dir.path().join("store"),
        &["run", spec.to_str().expect("a UTF-8 path"), "--input", "x"],
    );
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("agent.toml:")
            && said.contains("names the model `nope`, which is not declared; models: main"),
        "{said}"
    );
}

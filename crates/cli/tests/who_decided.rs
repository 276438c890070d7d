//! Who decided: `--as NAME` on every human decision, the daemon's named tokens and their
//! roles (a viewer is refused with 403 and nothing is appended; an operator's decision is
//! recorded under its token's name), and `retrace audit` listing, filtering and verifying
//! decisions, with a tampered log and bad evidence making it fail.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{example, log_json, ok, retrace, run_agent, run_id_of, text};
use retrace_events::{
    BlobId, Decision, Event, EventId, EventKind, RunId, Timestamp, canonical_json,
};
use retrace_store::{NewRun, Store};
use serde_json::{Value, json};

/// Run the approval example with `input` into `store`: the run parks for the write.
fn parked(store: &Path, spec: &Path, input: &str) -> String {
    let out = run_agent(store, spec, input);
    assert!(out.status.success(), "{}", text(&out));
    run_id_of(&out)
}

/// A spec whose agent asks a question (`user.ask`) and then finishes.
fn asker(dir: &Path) -> PathBuf {
    let home = dir.join("asker");
    std::fs::create_dir_all(home.join("ws")).expect("mkdir");
    std::fs::write(
        home.join("agent.toml"),
        "name = \"asker\"\nsystem = \"ask\"\nworkspace = \"ws\"\n\
         [model]\nprovider = \"scripted\"\nname = \"demo\"\ncassette = \"cassette.json\"\n\
         [tools]\nallow = [\"user.ask\"]\n",
    )
    .expect("spec");
    std::fs::write(
        home.join("cassette.json"),
        json!({"replies": [
            {"text": "asking", "tool_calls": [{"id": "why", "name": "user.ask",
                "arguments": {"question": "Why?"}}]},
            {"text": "thanks"}]})
        .to_string(),
    )
    .expect("cassette");
    home.join("agent.toml")
}

/// `retrace audit ARGS --json`: the exit code and the entries.
fn audit(store: &Path, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let out = retrace(store, &all);
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit --json prints a JSON array ({e}): {}", text(&out)));
    (out.status.code(), entries)
}

fn field<'a>(entries: &'a [Value], name: &str) -> Vec<&'a str> {
    entries
        .iter()
        .map(|e| e[name].as_str().unwrap_or("-"))
        .collect()
}

#[test]
fn as_names_the_decider_of_every_human_decision_and_a_bad_name_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("approval", dir.path());
    let store = dir.path().join("store");
    let first = parked(&store, &spec, "Note the release date");

    // a bad name: refused, nothing recorded
    let before = log_json(&store, &first).len();
    for bad in ["bad name", "", "x/y", &"n".repeat(65)] {
        let out = retrace(&store, &["--as", bad, "approve", &first]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("is not a name for a decider"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(log_json(&store, &first).len(), before);

    ok(
        &store,
        &["--as", "alice", "approve", &first, "--note", "fine"],
    );
    let decided = log_json(&store, &first).pop().expect("the decision");
    assert_eq!(
        (&decided["kind"], &decided["by"]),
        (&json!("approval_decided"), &json!("alice"))
    );
    let second = parked(&store, &spec, "Note the freeze");
    ok(&store, &["--as", "bob", "approve", &second, "--deny"]);
    let third = parked(&store, &spec, "Note the party");
    ok(
        &store,
        &["--as", "carol", "cancel", &third, "--reason", "not now"],
    );
    let finish = log_json(&store, &third).pop().expect("the finish");
    assert_eq!(finish["kind"], "run_finished");
    assert_eq!(finish["outcome"], "cancelled");
    let fourth = parked(&store, &spec, "Note the launch");
    ok(&store, &["--as", "dan", "signal", &fourth, "cancel"]);
    let signal = log_json(&store, &fourth)
        .into_iter()
        .find(|e| e["kind"] == "signal_received")
        .expect("the cancel");
    assert_eq!(signal["name"], "cancel");
    let asked = parked(&store, &asker(dir.path()), "Ask why");
    ok(
        &store,
        &[
            "--as",
            "erin@example.org",
            "answer",
            &asked,
            "--text",
            "because",
        ],
    );

    let (code, entries) = audit(&store, &[]);
    assert_eq!(code, Some(0), "{entries:#?}");
    assert_eq!(
        field(&entries, "who"),
        ["alice", "bob", "carol", "dan", "erin@example.org"]
    );
    assert_eq!(
        field(&entries, "what"),
        ["approve", "deny", "cancel", "cancel", "answer"]
    );
    assert_eq!(
        field(&entries, "run"),
        [&first, &second, &third, &fourth, &asked]
    );
    assert_eq!(entries[0]["note"], "fine");
    assert_eq!(entries[0]["tool"], "fs.write");
    assert_eq!(entries[2]["note"], "not now");
    assert_eq!(entries[4]["note"], "because");
    assert!(entries.iter().all(|e| e["verified"] == true));
    let times: Vec<u64> = entries
        .iter()
        .map(|e| e["time_ms"].as_u64().expect("ms"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        entries[0]["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    filters(&store, &first);

    reserved_and_signed(&store, &spec);
}

/// `audit --who`, `--since` (a time, a duration, nonsense) and the table, on the store of
/// the test above (five decisions, `first` alice's).
fn filters(store: &Path, first: &str) {
    let (_, alice) = audit(store, &["--who", "alice"]);
    assert_eq!(field(&alice, "run"), [first]);
    let (_, none) = audit(store, &["--since", "2999-01-01T00:00:00Z"]);
    assert!(none.is_empty(), "{none:#?}");
    let (_, recent) = audit(store, &["--since", "1h"]);
    assert_eq!(recent.len(), 5);
    let out = retrace(store, &["audit", "--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("RFC 3339"), "{}", text(&out));
    let table = text(&ok(store, &["audit"]));
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("erin@example.org"), "{table}");
}

#[test]
fn as_names_who_resolves_a_call_of_unknown_outcome() {
    let other = tempfile::tempdir().expect("temp dir");
    let stuck = run_stuck_in_an_append(other.path()).to_hex();
    let store = other.path().join("store");
    ok(&store, &["resume", &stuck]);
    ok(&store, &["--as", "frank", "resolve", &stuck, "--retry"]);
    let (code, entries) = audit(&store, &["--who", "frank"]);
    assert_eq!(code, Some(0));
    assert_eq!(field(&entries, "what"), ["resolve-retry"]);
    assert_eq!(entries[0]["call_id"], "a1");
}

/// A run whose process "died" while a non-idempotent append was running (as in cli.rs).
fn run_stuck_in_an_append(dir: &Path) -> RunId {
    let agent = dir.join("agent");
    std::fs::create_dir_all(agent.join("ws")).expect("mkdir");
    std::fs::write(
        agent.join("agent.toml"),
        "name = \"logger\"\nsystem = \"log\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\nname = \"demo\"\n\
         cassette = \"cassette.json\"\n[tools]\nallow = [\"fs.append\"]\n[[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n",
    )
    .expect("write");
    let call = json!({"id": "a1", "name": "fs.append", "arguments": {"path": "log.txt", "text": "line 1\n"}});
    std::fs::write(
        agent.join("cassette.json"),
        json!({"replies": [{"tool_calls": [call]}, {"text": "logged"}]}).to_string(),
    )
    .expect("write");
    let store = retrace_store_sled::SledStore::open(dir.join("store")).expect("store");
    let spec = retrace_runtime::spec::Spec::load(&agent.join("agent.toml")).expect("spec");
    let provider =
        retrace_providers::Scripted::load(&agent.join("cassette.json")).expect("cassette");
    let runner =
        retrace_runtime::executor::Runner::new(&store, spec, Box::new(provider)).expect("runner");
    let run = RunId::from_bytes([0xab; 16]);
    runner.start(run, "log a line").expect("start");
    let put = |v: Value| store.put_blob(&canonical_json(&v)).expect("blob");
    let args = put(call["arguments"].clone());
    let mut head = store.require_run(&run).expect("run").head;
    let mut push = |kinds: Vec<EventKind>| {
        let mut events = Vec::new();
        let mut prev = head;
        for kind in kinds {
            let event = Event::after(prev, Timestamp(1), kind);
            prev = Some(event.head());
            events.push(event);
        }
        head = Some(
            store
                .append(&run, head.map(|h| h.id), &events)
                .expect("append"),
        );
    };
    push(vec![EventKind::ModelRequested {
        request: put(json!({})),
        attempt: 1,
    }]);
    push(vec![
        EventKind::ModelResponded {
            request_seq: 1,
            response: put(json!({"tool_calls": [call]})),
            usage: retrace_events::Usage::default(),
        },
        EventKind::ToolCallsProposed {
            response_seq: 2,
            calls: vec![retrace_events::ProposedCall {
                call_id: "a1".into(),
                tool: "fs.append".into(),
                args,
                path: Some("log.txt".into()),
            }],
        },
    ]);
    push(vec![EventKind::ToolRequested {
        call_id: "a1".into(),
        tool: "fs.append".into(),
        args,
        idempotent: false,
    }]);
    run
}

/// A running `retrace serve --http 127.0.0.1:0 ARGS`; killed when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = common::command(store);
        command
            .args(["serve", "--http", "127.0.0.1:0"])
            .args(args)
            .env_remove("RETRACE_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("serve prints where it listens")
                .expect("a line");
            if let Some(address) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                assert!(line.contains("3 named tokens"), "{line}");
                break address.to_owned();
            }
        };
        Self { child, base }
    }

    /// One request with `token`: the status and the JSON body.
    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("authorization: Bearer {token}\r\n")
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Wait until `run`'s view satisfies `done`.
    fn wait(&self, token: &str, run: &str, done: &dyn Fn(&Value) -> bool) -> Value {
        let began = Instant::now();
        loop {
            let (_, view) = self.call(token, "GET", &format!("/v1/runs/{run}"), None);
            if done(&view) {
                return view;
            }
            assert!(began.elapsed() < Duration::from_mins(1), "{view}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const VIEWER: &str = "viewer-secret-0123456789abcdef";
const OPERATOR: &str = "operator-secret-0123456789abcdef";
const ADMIN: &str = "admin-secret-0123456789abcdef";

/// `retrace serve` on `store` with three named tokens (`watcher` a viewer, `ops` an
/// operator, `root` an admin) from a tokens file in `dir`.
fn serve_with_tokens(dir: &Path, store: &Path) -> Served {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    std::fs::write(secrets.join("viewer"), format!("{VIEWER}\n")).expect("write");
    std::fs::write(secrets.join("operator"), OPERATOR).expect("write");
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"watcher\"\nrole = \"viewer\"\ntoken_file = \"secrets/viewer\"\n\n\
         [[token]]\nname = \"ops\"\nrole = \"operator\"\ntoken_file = \"secrets/operator\"\n\n\
         [[token]]\nname = \"root\"\nrole = \"admin\"\ntoken_env = \"WHO_DECIDED_ADMIN\"\n",
    )
    .expect("write");
    Served::start(
        store,
        &["--tokens", tokens.to_str().expect("utf-8")],
        &[("WHO_DECIDED_ADMIN", ADMIN)],
    )
}

#[test]
fn a_viewer_cannot_approve_an_operator_can_and_the_token_s_name_is_recorded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("approval", dir.path());
    let store = dir.path().join("store");
    let served = serve_with_tokens(dir.path(), &store);
    assert!(
        !store.join("serve.token").exists(),
        "no single token beside named ones"
    );

    // a viewer may not start a run; an operator may
    let submit = |input: &str| json!({"spec_path": spec.display().to_string(), "input": input});
    let (status, refused) = served.call(VIEWER, "POST", "/v1/runs", Some(submit("a")));
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &json!("forbidden")),
        "{refused}"
    );
    let mut runs = Vec::new();
    for input in ["Note the release date", "Note the freeze"] {
        let (status, started) = served.call(OPERATOR, "POST", "/v1/runs", Some(submit(input)));
        assert_eq!(status, 201, "{started}");
        runs.push(started["run"].as_str().expect("run").to_owned());
    }
    let parked = |v: &Value| {
        v["awaiting_approval"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    };
    for run in &runs {
        served.wait(VIEWER, run, &parked);
    }
    let (first, second) = (&runs[0], &runs[1]);
    let events = |run: &str| served.wait(VIEWER, run, &|_| true)["events"].clone();
    let before = events(first);

    refusals(&served, first);
    let approve = format!("/v1/runs/{first}/approve");
    let fork = format!("/v1/runs/{first}/fork");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(events(first), before, "a refused request appended nothing");

    // the operator approves one and denies the other, recorded under its token's name
    let (status, body) = served.call(OPERATOR, "POST", &approve, Some(json!({"note": "ok"})));
    assert_eq!(status, 200, "{body}");
    let deny = format!("/v1/runs/{second}/approve");
    let (status, body) = served.call(
        OPERATOR,
        "POST",
        &deny,
        Some(json!({"deny": true, "by": "ops"})),
    );
    assert_eq!(status, 200, "{body}");
    for run in &runs {
        served.wait(VIEWER, run, &|v| v["finished"] == true);
    }
    // the admin may fork
    let (status, body) = served.call(ADMIN, "POST", &fork, Some(json!({"at": 1})));
    assert_eq!(status, 201, "{body}");

    // through the daemon's socket: the events and the audit
    let decided = log_json(&store, first)
        .into_iter()
        .find(|e| e["kind"] == "approval_decided")
        .expect("the approval");
    assert_eq!(decided["by"], "ops");
    let (code, entries) = audit(&store, &[]);
    assert_eq!(code, Some(0), "{entries:#?}");
    let got: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["run"].as_str().unwrap_or(""),
                e["what"].as_str().unwrap_or(""),
                e["who"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (first.as_str(), "approve", "ops"),
            (second.as_str(), "deny", "ops")
        ]
    );
    assert!(entries.iter().all(|e| e["verified"] == true));
}

/// What a request without a token, a viewer's, and an operator's beyond its role get on
/// parked run `first`: 401, then 403 naming the role and the one needed.
fn refusals(served: &Served, first: &str) {
    // no token: 401; a viewer: 403 naming its role and the one needed; nothing appended
    let approve = format!("/v1/runs/{first}/approve");
    let (status, body) = served.call("", "POST", &approve, Some(json!({})));
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized")),
        "{body}"
    );
    let (status, body) = served.call(VIEWER, "POST", &approve, Some(json!({"note": "sneaky"})));
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("`watcher`")
            && message.contains("`viewer`")
            && message.contains("`operator`"),
        "{message}"
    );
    assert!(!message.contains(VIEWER), "{message}");
    for (path, body) in [
        (format!("/v1/runs/{first}/cancel"), json!({})),
        (
            format!("/v1/runs/{first}/signal"),
            json!({"name": "cancel"}),
        ),
        (format!("/v1/runs/{first}/answer"), json!({"text": "x"})),
        (format!("/v1/runs/{first}/resume"), json!({})),
    ] {
        let (status, refused) = served.call(VIEWER, "POST", &path, Some(body));
        assert_eq!(status, 403, "{path}: {refused}");
    }
    // an operator may not act as someone else, nor fork (an admin's)
    let (status, body) = served.call(OPERATOR, "POST", &approve, Some(json!({"by": "mallory"})));
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("not `mallory`"), "{body}");
    let fork = format!("/v1/runs/{first}/fork");
    let (status, body) = served.call(OPERATOR, "POST", &fork, Some(json!({"at": 1})));
    assert_eq!(status, 403, "{body}");
}

#[test]
fn a_tokens_file_that_is_wrong_stops_serve_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nname = \"a\"\nrole = \"operator\"\ntoken = \"inline-secret-0123456789\"\n",
    )
    .expect("write");
    let out = retrace(
        &store,
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--tokens",
            tokens.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("tokens.toml"), "{}", text(&out));
    assert!(!text(&out).contains("inline-secret"), "{}", text(&out));
    let out = retrace(
        &store,
        &["serve", "--tokens", tokens.to_str().expect("utf-8")],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
}

/// Append `kinds` to a new run `run` of the (closed) store in `dir`; the events' ids.
fn hand_built(
    store: &retrace_store_sled::SledStore,
    run: RunId,
    kinds: Vec<EventKind>,
) -> Vec<EventId> {
    store
        .create_run(NewRun::new(run, Timestamp(1)))
        .expect("create run");
    let mut events = Vec::new();
    let mut head = None;
    for kind in kinds {
        let event = Event::after(head, Timestamp(4_102_444_800_000), kind);
        head = Some(event.head());
        events.push(event);
    }
    store.append(&run, None, &events).expect("append");
    events.iter().map(Event::id).collect()
}

/// An automatic allow (as graduated autonomy records one) citing `evidence`.
fn automatic_allow(
    store: &retrace_store_sled::SledStore,
    evidence: &[(String, String)],
) -> Vec<EventKind> {
    let put = |v: Value| -> BlobId { store.put_blob(&canonical_json(&v)).expect("blob") };
    let evidence: Vec<Value> = evidence
        .iter()
        .map(|(run, event)| json!({"run": run, "event": event}))
        .collect();
    vec![
        EventKind::RunStarted {
            run: RunId::from_bytes([0; 16]),
            spec: put(json!({})),
            input: put(json!("task")),
        },
        EventKind::ApprovalRequested {
            call_id: "c1".into(),
            request: put(
                json!({"tool": "fs.write", "args": {}, "reason": "writes ask",
                "autonomy": {"rule": 0, "tool": "fs.write", "pattern": null,
                    "approvals": evidence.len(), "evidence": evidence}}),
            ),
        },
        EventKind::ApprovalDecided {
            call_id: "c1".into(),
            decision: Decision::Approved,
            by: "autonomy".into(),
            note: Some(put(json!("approved before, never denied"))),
        },
    ]
}

#[test]
fn audit_checks_evidence_and_the_hash_chain_and_fails_on_either() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("approval", dir.path());
    let store = dir.path().join("store");
    let human = parked(&store, &spec, "Note the release date");
    ok(&store, &["--as", "alice", "approve", &human]);
    let approval = log_json(&store, &human).pop().expect("the approval");
    let approval_id = approval["id"].as_str().expect("id").to_owned();

    // two automatic allows: one citing the human's approval, one citing nothing real
    let good = RunId::from_bytes([0x11; 16]);
    let bad = RunId::from_bytes([0x22; 16]);
    {
        let sled = retrace_store_sled::SledStore::open(&store).expect("open");
        let kinds = automatic_allow(&sled, &[(human.clone(), approval_id.clone())]);
        let ids = hand_built(&sled, good, kinds);
        let kinds = automatic_allow(
            &sled,
            &[
                (human.clone(), EventId::from_bytes([7; 32]).to_string()),
                (good.to_string(), ids[2].to_string()),
            ],
        );
        hand_built(&sled, bad, kinds);
    }
    let (code, entries) = audit(&store, &[]);
    assert_eq!(code, Some(1), "{entries:#?}");
    assert_eq!(
        field(&entries, "what"),
        ["approve", "auto-allow", "auto-allow"]
    );
    let good_entry = &entries[1];
    assert_eq!(good_entry["run"], good.to_string());
    assert_eq!(good_entry["who"], "autonomy");
    assert_eq!(good_entry["automatic"], true);
    assert_eq!(good_entry["verified"], true, "{good_entry:#}");
    assert_eq!(good_entry["evidence"][0]["event"], approval_id);
    assert_eq!(good_entry["evidence"][0]["verified"], true);
    assert_eq!(good_entry["details"]["approvals"], 1);
    let bad_entry = &entries[2];
    assert_eq!(bad_entry["verified"], false);
    assert!(
        bad_entry["evidence"][0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("has no event")),
        "{bad_entry:#}"
    );
    assert!(
        bad_entry["evidence"][1]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("not a human's approval")),
        "{bad_entry:#}"
    );
    let out = retrace(&store, &["audit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("do not verify"), "{}", text(&out));

    // only the good ones: verified
    let (code, _) = audit(&store, &["--who", "alice"]);
    assert_eq!(code, Some(0));

    // a byte flipped in the human's run: its decision no longer verifies
    let run_id: RunId = human.parse().expect("run id");
    retrace_tests::tamper::flip_event_byte(&store, &run_id, 1, usize::MAX);
    let (code, entries) = audit(&store, &["--who", "alice"]);
    assert_eq!(code, Some(1), "{entries:#?}");
    assert_eq!(entries[0]["verified"], false);
    assert!(
        entries[0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("seq 1")),
        "{entries:#?}"
    );
}

#[test]
fn an_operator_resolves_over_http_as_itself_and_a_viewer_cannot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stuck = run_stuck_in_an_append(dir.path()).to_hex();
    let store = dir.path().join("store");
    let served = serve_with_tokens(dir.path(), &store);
    // the daemon takes the run up; the append in flight is not repeated: the run parks
    served.wait(VIEWER, &stuck, &|v| v["outcome_unknown"] == "a1");
    let resolve = format!("/v1/runs/{stuck}/resolve");
    let (status, body) = served.call(VIEWER, "POST", &resolve, Some(json!({"how": "retry"})));
    assert_eq!(status, 403, "{body}");
    let (status, body) = served.call(
        OPERATOR,
        "POST",
        &resolve,
        Some(json!({"how": {"skip": {"bytes_appended": 7}}, "call": "nope"})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("is a1, not nope"), "{body}");
    let (status, body) = served.call(OPERATOR, "POST", &resolve, Some(json!({"how": "retry"})));
    assert_eq!((status, &body["call_id"]), (200, &json!("a1")), "{body}");
    let view = served.wait(VIEWER, &stuck, &|v| v["finished"] == true);
    assert_eq!(view["outcome"], "succeeded", "{view}");
    let (code, entries) = audit(&store, &[]);
    assert_eq!(code, Some(0), "{entries:#?}");
    assert_eq!(field(&entries, "what"), ["resolve-retry"]);
    assert_eq!(field(&entries, "who"), ["ops"]);
}

/// Nobody decides as the runtime's automatic decider, and a signal's object payload is
/// signed by its sender, whatever it claims (alice has approved one call before).
fn reserved_and_signed(store: &Path, spec: &Path) {
    // nobody decides as the runtime's automatic decider
    let last = parked(store, spec, "Note the review");
    let before = log_json(store, &last).len();
    let out = retrace(store, &["--as", "autonomy", "approve", &last, "--deny"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("records its automatic decisions under"),
        "{}",
        text(&out)
    );
    assert_eq!(log_json(store, &last).len(), before);
    // a signal's object payload is signed by its sender, whatever it claims
    ok(
        store,
        &[
            "--as",
            "alice",
            "signal",
            &last,
            "note",
            "--payload",
            r#"{"by": "mallory", "x": 1}"#,
        ],
    );
    let (_, entries) = audit(store, &["--who", "mallory"]);
    assert!(entries.is_empty(), "{entries:#?}");
    let (_, entries) = audit(store, &["--who", "alice"]);
    assert_eq!(field(&entries, "what"), ["approve", "signal"]);
}

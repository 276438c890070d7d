//! The `retrace` binary on a PostgreSQL store: every command through `--store postgres://…`,
//! bundles between the embedded store and PostgreSQL, and `retrace migrate` of a store of
//! 1,000 runs. Each test has a schema of its own in the test database (`.ci/with-postgres`).

mod common;

use std::path::{Path, PathBuf};

use common::{example, fork_id_of, ok, retrace, run_agent, run_id_of, text};
use retrace_events::Timestamp;
use retrace_store::conformance::{append_n, run_id};
use retrace_store::{ForkOrigin, NewRun, Store};
use retrace_store_postgres::testing::Schema;

/// `--store` for the schema: the URL as a path argument.
fn url(schema: &Schema) -> PathBuf {
    PathBuf::from(schema.url())
}

fn log_json(store: &Path, run: &str) -> String {
    String::from_utf8_lossy(&ok(store, &["log", run, "--json"]).stdout).into_owned()
}

#[test]
fn an_agent_runs_forks_and_travels_between_the_embedded_store_and_postgres() {
    let Some(schema) = Schema::fresh("cli on postgres") else {
        return;
    };
    let pg = url(&schema);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("tidy", dir.path());

    // the main job, recorded straight into PostgreSQL
    let out = run_agent(&pg, &spec, "Summarise this project");
    assert!(out.status.success(), "{}", text(&out));
    let run = run_id_of(&out);
    let runs = text(&ok(&pg, &["runs"]));
    assert!(
        runs.contains(&run[..12]) && runs.contains("succeeded"),
        "{runs}"
    );
    assert!(text(&ok(&pg, &["verify", &run])).contains("ok "));
    let forked = fork_id_of(&ok(&pg, &["fork", &format!("{run}@7")]));
    assert!(text(&ok(&pg, &["show", &format!("{forked}@7")])).contains("seq 7"));

    // PostgreSQL -> bundle -> embedded store: the same log, byte for byte
    let bundle = dir.path().join("runs.bundle");
    ok(
        &pg,
        &[
            "export",
            &run,
            "--with-forks",
            "-o",
            bundle.to_str().unwrap(),
        ],
    );
    let local = dir.path().join("local");
    ok(&local, &["import", bundle.to_str().unwrap()]);
    assert_eq!(log_json(&local, &run), log_json(&pg, &run));
    assert!(text(&ok(&local, &["verify"])).contains(&forked));

    // embedded store -> bundle -> another PostgreSQL schema
    let local_run = run_id_of(&run_agent(&local, &spec, "Summarise it again"));
    let back = dir.path().join("back.bundle");
    ok(
        &local,
        &["export", &local_run, "-o", back.to_str().unwrap()],
    );
    let Some(other) = Schema::fresh("cli on postgres, second schema") else {
        return;
    };
    ok(&url(&other), &["import", back.to_str().unwrap()]);
    assert_eq!(
        log_json(&url(&other), &local_run),
        log_json(&local, &local_run)
    );
    let again = ok(&url(&other), &["import", back.to_str().unwrap()]);
    assert!(
        text(&again).contains("skipped") || text(&again).contains("already"),
        "{}",
        text(&again)
    );
}

#[test]
fn a_password_in_the_store_url_is_refused_and_never_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = retrace(
        Path::new("postgres://alice:hunter2@127.0.0.1:1/db"),
        &["runs"],
    );
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("PGPASSWORD") && !said.contains("hunter2"),
        "{said}"
    );
    drop(dir);
}

/// A store of 1,000 runs: sample events of every kind with their blobs, forks, snapshots,
/// and one real agent run.
fn thousand_runs(dir: &Path) -> Vec<String> {
    let store = retrace_store_sled::SledStore::open(dir).expect("sled store");
    let mut ids = Vec::new();
    for n in 0..995u64 {
        let run = run_id(10_000 + n);
        store
            .create_run(NewRun::new(run, Timestamp(n)))
            .expect("create");
        let head = append_n(&store, run, 3 + n % 20, 8);
        if n % 100 == 0 {
            store
                .put_snapshot(&head.id, format!("state {n}").as_bytes())
                .expect("snapshot");
        }
        if n % 250 == 0 {
            let fork = run_id(20_000 + n);
            let at = retrace_events::Head {
                seq: 2,
                id: store.event_id_at(&run, 2).expect("read").expect("seq 2"),
            };
            store
                .create_run(NewRun::fork(fork, Timestamp(n), ForkOrigin { run, at }))
                .expect("fork");
            append_n(&store, fork, 4, 4);
            ids.push(fork.to_hex());
        }
        ids.push(run.to_hex());
    }
    store.flush().expect("flush");
    drop(store);
    let spec = example("tidy", &dir.join("..").join("tidy-example"));
    ids.push(run_id_of(&run_agent(dir, &spec, "Summarise this project")));
    ids.sort();
    ids
}

/// The runs `retrace verify` found intact, by id (it checks every run of the store).
fn verified_ids(store: &Path) -> Vec<String> {
    let out = ok(store, &["verify"]);
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// `retrace migrate --from LOCAL --to SCHEMA`.
fn migrate(local: &Path, schema: &Schema) -> std::process::Output {
    retrace(
        local,
        &[
            "migrate",
            "--from",
            local.to_str().expect("utf-8"),
            "--to",
            &schema.url(),
        ],
    )
}

#[test]
fn migrate_copies_a_store_of_1000_runs_into_postgres_and_both_sides_verify() {
    let Some(schema) = Schema::fresh("migrate 1000 runs") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("store");
    let ids = thousand_runs(&local);
    assert_eq!(ids.len(), 1_000);

    let pg = url(&schema);
    let out = migrate(&local, &schema);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("copied 1000 runs (0 already there)"),
        "{said}"
    );
    assert!(said.contains("10 snapshots"), "{said}");
    assert!(
        said.contains("verified 1000 of 1000 runs on both sides"),
        "{said}"
    );

    // each side verifies on its own, with the same ids
    assert_eq!(verified_ids(&pg), ids);
    assert_eq!(verified_ids(&local), ids);
    let copied = schema.store();
    let at = copied.run(&run_id(10_000)).unwrap().unwrap().head.unwrap();
    assert_eq!(
        copied.snapshot(&at.id).unwrap().as_deref(),
        Some(&b"state 0"[..])
    );

    // again: nothing to copy, everything verifies
    let out = migrate(&local, &schema);
    assert!(
        text(&out).contains("copied 0 runs (1000 already there)"),
        "{}",
        text(&out)
    );
}

/// A worker of `schema` in this process, listening on `dir/NAME.sock`.
fn worker(schema: &Schema, dir: &Path, name: &str) -> retrace_tests::daemon::Served {
    retrace_tests::daemon::Served::with_config(retrace_serve::server::Config {
        socket: Some(dir.join(format!("{name}.sock"))),
        worker: Some(name.to_owned()),
        lease_ttl: std::time::Duration::from_millis(1500),
        grace: std::time::Duration::from_secs(5),
        ..retrace_serve::server::Config::new(schema.url())
    })
}

/// Poll `client` until `run`'s view satisfies `done` (10 s at most).
fn until(
    client: &retrace_serve::Client,
    run: &str,
    what: &str,
    done: impl Fn(&retrace_serve::api::RunView) -> bool,
) -> retrace_serve::api::RunView {
    let began = std::time::Instant::now();
    loop {
        let view = client.run(run).expect("run view");
        if done(&view) {
            return view;
        }
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "run {run} is not {what}: {view:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Submit a new run of `spec` to a worker; its id.
fn submit(client: &retrace_serve::Client, spec: PathBuf, input: &str) -> String {
    client
        .submit(&retrace_serve::api::Submit {
            spec: None,
            spec_path: Some(spec),
            input: input.into(),
            new: true,
        })
        .expect("submit")
        .run
}

/// An agent that appends a line every 100 ms for 200 steps (long enough to act on while it
/// runs); its spec.
fn slow_agent(dir: &Path) -> PathBuf {
    let slow = dir.join("slow");
    std::fs::create_dir_all(slow.join("ws")).expect("mkdir");
    let replies: Vec<serde_json::Value> = (0..200)
        .map(|i| {
            serde_json::json!({"text": format!("step {i}"), "latency_ms": 100, "tool_calls": [{
                "id": format!("call-{i}"), "name": "fs.append",
                "arguments": {"path": "log.txt", "text": "x\n"}}]})
        })
        .collect();
    std::fs::write(
        slow.join("cassette.json"),
        serde_json::json!({ "replies": replies }).to_string(),
    )
    .expect("cassette");
    std::fs::write(
        slow.join("agent.toml"),
        "name = \"slow\"\nsystem = \"s\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\n\
         name = \"d\"\ncassette = \"cassette.json\"\n[tools]\nallow = [\"fs.append\"]\n\
         [[policy]]\ntool = \"fs.append\"\naction = \"allow\"\n[budgets]\nmax_steps = 300\n",
    )
    .expect("spec");
    slow.join("agent.toml")
}

#[test]
fn approvals_and_cancels_reach_a_run_through_any_worker() {
    let Some(schema) = Schema::fresh("signals through any worker") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (w1, w2) = (
        worker(&schema, dir.path(), "w1"),
        worker(&schema, dir.path(), "w2"),
    );
    let (c1, c2) = (w1.client(), w2.client());

    // submitted to w1, parked; approved through w2, which then drives it to its end
    let parked = submit(
        &c1,
        example("approval", dir.path()),
        "Note the release date",
    );
    until(&c1, &parked, "parked", |v| !v.awaiting_approval.is_empty());
    c2.approve(
        &parked,
        &retrace_serve::api::Approve {
            call: None,
            deny: false,
            note: Some("fine".into()),
            by: Some("reviewer".into()),
        },
    )
    .expect("approve through the other worker");
    let done = until(&c1, &parked, "finished", |v| v.finished);
    assert_eq!(done.status, "succeeded", "{done:?}");

    // a long run driven by w1, cancelled through w2: the signal waits in the inbox for w1
    let running = submit(&c1, slow_agent(dir.path()), "append slowly");
    until(&c1, &running, "under way", |v| v.events > 6);
    let holder = schema.sql(&format!(
        "SELECT worker FROM retrace_leases WHERE run = '\\x{running}'::bytea"
    ));
    assert_eq!(holder, vec![Some("w1".to_owned())], "w1 drives it");
    assert!(c2.run(&running).expect("view").active, "w2 sees it driven");
    let listed = text(&ok(&PathBuf::from(schema.url()), &["runs"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&running[..12]) && l.contains("running")),
        "{listed}"
    );
    // a second process may not take a live worker's name
    let twin_socket = dir.path().join("twin.sock");
    let twin = retrace(
        &PathBuf::from(schema.url()),
        &[
            "serve",
            "--socket",
            twin_socket.to_str().expect("utf-8"),
            "--worker",
            "w1",
        ],
    );
    assert!(!twin.status.success());
    assert!(
        text(&twin).contains("holds leases in this store now"),
        "{}",
        text(&twin)
    );
    let accepted = c2
        .cancel(
            &running,
            &retrace_serve::api::Cancel {
                reason: Some("enough".into()),
                by: Some("reviewer".into()),
            },
        )
        .expect("cancel through the other worker");
    assert_eq!(accepted.status, "queued", "left for the worker driving it");
    let cancelled = until(&c2, &running, "cancelled", |v| v.finished);
    assert_eq!(cancelled.status, "cancelled", "{cancelled:?}");
    assert!(cancelled.steps < 100, "stopped early: {cancelled:?}");
    assert!(
        schema.sql("SELECT id::text FROM retrace_inbox").is_empty(),
        "inbox emptied"
    );

    // `run --detach` starts a run for the workers and returns at once
    let tidy = example("tidy", dir.path());
    let out = ok(
        &PathBuf::from(schema.url()),
        &[
            "run",
            tidy.to_str().expect("utf-8"),
            "--input",
            "Summarise it",
            "--detach",
        ],
    );
    let detached = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let done = until(&c2, &detached, "finished by a worker", |v| v.finished);
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert!(
        text(&ok(&PathBuf::from(schema.url()), &["verify"])).contains(&running),
        "the cancelled run verifies"
    );
}

/// A tree of runs on PostgreSQL: the parent's drive holds the parent's lease, and its
/// children's appends go through the same fenced store (a lease on the tree's root covers
/// its children).
#[test]
fn a_team_of_child_runs_works_on_postgres() {
    let Some(schema) = Schema::fresh("a team on postgres") else {
        return;
    };
    let pg = url(&schema);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = example("team", dir.path());
    let out = run_agent(&pg, &spec, "Report on our storage and sandbox");
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&ok(&pg, &["runs"]));
    assert_eq!(listed.matches("└ reader").count(), 3, "{listed}");
    assert_eq!(listed.matches("succeeded").count(), 4, "{listed}");
    assert_eq!(text(&ok(&pg, &["verify"])).matches("ok ").count(), 4);
}

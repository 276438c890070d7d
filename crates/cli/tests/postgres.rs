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

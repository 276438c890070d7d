//! What PostgreSQL adds to the conformance suite: tamper detection on rows changed by an
//! outside client, the live tail between two connected stores (and after the listening
//! connection is killed), leases and fencing between workers, and migrations.

use std::time::{Duration, Instant};

use retrace_events::{BlobId, Event, EventKind, RunId, Timestamp};
use retrace_store::conformance::{append_n, chain_after, run_id};
use retrace_store::{Error, NewRun, ProblemKind, Store, VerifyOptions, verify_run};
use retrace_store_postgres::testing::Schema;
use retrace_store_postgres::{Leases, PgStore};

fn fresh(test: &str) -> Option<(Schema, PgStore)> {
    let schema = Schema::fresh(test)?;
    let store = schema.store();
    Some((schema, store))
}

fn new_run(store: &PgStore, n: u64) -> RunId {
    let run = run_id(n);
    store
        .create_run(NewRun::new(run, Timestamp(n)))
        .expect("create a run");
    run
}

fn hex(run: RunId) -> String {
    format!("'\\x{}'::bytea", run.to_hex())
}

#[test]
fn a_byte_changed_in_a_row_is_reported_with_its_run_and_seq() {
    let Some((schema, store)) = fresh("tamper") else {
        return;
    };
    let run = new_run(&store, 1);
    append_n(&store, run, 30, 10);
    assert!(
        verify_run(&store, &run, VerifyOptions::default())
            .unwrap()
            .is_ok()
    );

    // flip one byte of event 17's stored bytes, as a stray UPDATE would
    schema.sql(&format!(
        "UPDATE retrace_events SET bytes = set_byte(bytes, 20, get_byte(bytes, 20) # 1) \
         WHERE run = {} AND seq = 17",
        hex(run)
    ));
    let report = verify_run(&store, &run, VerifyOptions::default()).unwrap();
    let problem = report.problem.expect("tampering found");
    assert_eq!((problem.run, problem.seq), (run, 17), "{problem:?}");
    assert!(
        matches!(problem.kind, ProblemKind::BadEvent { .. }),
        "{problem:?}"
    );
    assert_eq!(report.events, 17, "the events before the damage verified");

    // a blob's bytes changed: named by the event that refers to it
    let other = new_run(&store, 2);
    append_n(&store, other, 5, 5);
    let blob = BlobId::of(&3u64.to_le_bytes());
    schema.sql(&format!(
        "UPDATE retrace_blobs SET bytes = '\\x00' WHERE id = '\\x{}'::bytea",
        blob.to_hex()
    ));
    let problem = verify_run(&store, &other, VerifyOptions::default())
        .unwrap()
        .problem
        .expect("blob damage found");
    assert_eq!((problem.run, problem.seq), (other, 3), "{problem:?}");
}

#[test]
fn a_follower_in_another_process_sees_appends_through_listen_notify() {
    let Some((schema, writer)) = fresh("live tail") else {
        return;
    };
    let follower = schema.store();
    let run = new_run(&writer, 3);
    let sub = follower.subscribe(&run).unwrap();
    append_n(&writer, run, 3, 1);
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let appended = sub
            .recv_timeout(Duration::from_secs(5))
            .expect("the follower heard of the append within 5 s");
        seqs.extend(appended.events.iter().map(|(_, e)| e.seq));
    }
    assert_eq!(seqs, vec![0, 1, 2]);

    // the listening connection dies; appends made while it is down still arrive, once
    let killed = schema.sql(
        "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND datname = current_database()",
    );
    assert!(!killed.is_empty(), "a listening connection existed");
    append_n(&writer, run, 4, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seqs.len() < 7 && Instant::now() < deadline {
        if let Some(appended) = sub.recv_timeout(Duration::from_millis(200)) {
            seqs.extend(appended.events.iter().map(|(_, e)| e.seq));
        }
    }
    assert_eq!(seqs, (0..7).collect::<Vec<_>>());
    assert!(
        sub.recv_timeout(Duration::from_millis(300)).is_none(),
        "nothing twice"
    );
}

#[test]
fn leases_fence_a_worker_that_lost_its_run() {
    let Some((_schema, store)) = fresh("leases") else {
        return;
    };
    let run = new_run(&store, 4);
    let a = Leases::new(&store, "worker-a", Duration::from_millis(600));
    let b = Leases::new(&store, "worker-b", Duration::from_millis(600));

    let first = a.claim(&run).unwrap().expect("a free run is claimed");
    assert_eq!(first.epoch, 1);
    assert_eq!(
        a.claim(&run).unwrap().map(|c| c.epoch),
        Some(1),
        "re-claiming renews"
    );
    assert_eq!(b.claim(&run).unwrap(), None, "held by a");
    assert_eq!(b.holder(&run).unwrap().as_deref(), Some("worker-a"));
    assert!(b.claim_expired(10).unwrap().is_empty());

    // only the holder's fenced store appends
    let events = chain_after(run, None, 1);
    let err = b.store().append(&run, None, &events).unwrap_err();
    assert!(
        matches!(err, Error::LeaseLost { ref worker, .. } if worker == "worker-b"),
        "{err}"
    );
    let head = a.store().append(&run, None, &events).unwrap();

    // a stalls past its TTL; b takes the run over, a is fenced off
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        a.renew(&[run]).unwrap(),
        Vec::<RunId>::new(),
        "an expired lease is not renewed"
    );
    let taken = b.claim_expired(10).unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].run, taken[0].epoch), (run, 2));
    let next = chain_after(run, Some(head), 1);
    let err = a.store().append(&run, Some(head.id), &next).unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    assert!(err.to_string().contains("worker-a"), "{err}");
    assert_eq!(
        store.run(&run).unwrap().unwrap().head,
        Some(head),
        "nothing written"
    );
    b.store().append(&run, Some(head.id), &next).unwrap();
    assert_eq!(b.renew(&[run]).unwrap(), vec![run]);

    // signals for the holder wait in the inbox
    let payload = store.put_blob(b"{}").unwrap();
    a.post(&run, "cancel", &payload).unwrap();
    let letters = b.take_letters(&[run]).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].name.as_str(), letters[0].payload),
        ("cancel", payload)
    );
    assert!(b.take_letters(&[run]).unwrap().is_empty(), "taken once");

    b.release(&run).unwrap();
    assert_eq!(a.holder(&run).unwrap(), None);
    assert_eq!(
        a.claim(&run).unwrap().map(|c| c.epoch),
        Some(1),
        "a released lease starts over"
    );
    assert!(matches!(
        a.claim(&run_id(404)),
        Err(Error::RunNotFound { .. })
    ));
}

#[test]
fn workers_that_race_for_expired_leases_never_take_the_same_run() {
    let Some((_schema, store)) = fresh("lease race") else {
        return;
    };
    let dead = Leases::new(&store, "dead", Duration::from_millis(1));
    let runs: Vec<RunId> = (100..160).map(|n| new_run(&store, n)).collect();
    for run in &runs {
        dead.claim(run).unwrap().unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let taken: Vec<Vec<RunId>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let store = &store;
                s.spawn(move || {
                    let leases = Leases::new(store, &format!("w{w}"), Duration::from_secs(30));
                    let mut mine = Vec::new();
                    loop {
                        let claims = leases.claim_expired(7).unwrap();
                        if claims.is_empty() {
                            break mine;
                        }
                        mine.extend(claims.iter().map(|c| c.run));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<RunId> = taken.into_iter().flatten().collect();
    all.sort();
    let mut expected = runs.clone();
    expected.sort();
    assert_eq!(all, expected, "every run taken exactly once");
}

#[test]
fn the_schema_is_migrated_once_and_a_newer_one_is_refused() {
    let Some(schema) = Schema::fresh("migrations") else {
        return;
    };
    // several processes starting at once: one migrates, the others wait and find it done
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| drop(schema.store()));
        }
    });
    let versions = schema.sql("SELECT version::text FROM refinery_schema_history ORDER BY version");
    assert_eq!(versions, vec![Some("1".to_owned()), Some("2".to_owned())]);

    // a later retrace migrated it further: this build refuses it rather than guess
    schema.sql(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         SELECT 99, 'from_the_future', applied_on, checksum FROM refinery_schema_history \
         WHERE version = 2",
    );
    let err = PgStore::connect(schema.target()).unwrap_err();
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(text.contains("migrated by a newer retrace"), "{text}");
}

#[test]
fn a_store_that_cannot_be_reached_says_where() {
    let err = PgStore::open("postgres://nobody@127.0.0.1:1/none").unwrap_err();
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(text.contains("connecting to PostgreSQL"), "{text}");
    let err = PgStore::open("postgres://me:pw@127.0.0.1/db").unwrap_err();
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        text.contains("PGPASSWORD") && !text.contains("pw@"),
        "{text}"
    );
    let _ = Event::root(
        Timestamp(0),
        EventKind::SignalReceived {
            name: String::new(),
            payload: BlobId::of(b""),
        },
    );
}

#[test]
fn long_and_mixed_case_schema_names_hold_a_working_store() {
    let Some(base) = retrace_store_postgres::testing::database("odd schema names") else {
        return;
    };
    let long = format!("s{}_{}", std::process::id(), "x".repeat(50));
    for (given, created) in [
        (
            format!("Mixed_{}", std::process::id()),
            format!("mixed_{}", std::process::id()),
        ),
        (long.clone(), long.clone()),
    ] {
        let target = base
            .clone()
            .with_options(&format!("-c search_path={given}"));
        let store = PgStore::connect(&target).expect("open");
        assert_eq!(store.schema(), created);
        let run = new_run(&store, 5);
        let sub = store.subscribe(&run).expect("subscribe");
        append_n(&store, run, 3, 3);
        assert!(
            sub.recv_timeout(Duration::from_secs(5)).is_some(),
            "{given}: live tail"
        );
        drop(store);
        let drop_it = Schema::fresh("odd schema names").expect("database");
        drop_it.sql(&format!("DROP SCHEMA \"{created}\" CASCADE"));
    }
}

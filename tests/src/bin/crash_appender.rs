//! Crash-test child: appends to three runs of a sled store from three threads (the third in
//! appends of [`LARGE_APPEND`] events, more than one log chunk) until it is killed, printing `ack <run> <seq> <event id>` after each append returns (i.e. once the
//! store says it is durable). The parent test kills it with SIGKILL and checks that every
//! acknowledged event survived.

use std::io::Write;
use std::sync::Mutex;

use anyhow::Context;
use retrace_events::{Event, EventKind, Timestamp};
use retrace_store::{NewRun, Store};
use retrace_store_sled::{Options, SledStore};
use retrace_tests::{LARGE_APPEND, crash_runs, payload};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: crash_appender STORE_DIR")?;
    // Checkpoints (index tables written and merged) every few appends, so kills also land
    // in the middle of them.
    let options = Options {
        checkpoint_bytes: 32 << 10,
        ..Options::default()
    };
    let store = SledStore::open_with(&dir, options).with_context(|| format!("opening {dir}"))?;
    for run in crash_runs() {
        if store.run(&run)?.is_none() {
            store.create_run(NewRun::new(run, Timestamp(0)))?;
        }
    }
    let stdout = Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for (n, run) in crash_runs().into_iter().enumerate() {
            let (store, stdout) = (&store, &stdout);
            s.spawn(move || -> anyhow::Result<()> {
                let mut head = store.require_run(&run)?.head;
                let mut i = 0u64;
                loop {
                    // 1 to 3 events per append, each with its own 1 KiB blob; the last run
                    // appends LARGE_APPEND events at a time (several log chunks).
                    let batch = if n == 2 {
                        LARGE_APPEND
                    } else {
                        1 + (i + n as u64) % 3
                    };
                    let mut events = Vec::new();
                    let mut prev = head;
                    for _ in 0..batch {
                        let seq = prev.map_or(0, |h| h.seq + 1);
                        let blob = store.put_blob(&payload(&run, seq))?;
                        let kind = if seq == 0 {
                            EventKind::RunStarted {
                                run,
                                spec: blob,
                                input: blob,
                            }
                        } else {
                            EventKind::ToolReturned {
                                call_id: format!("c{seq}"),
                                output: blob,
                                is_error: false,
                                duration_ms: seq,
                            }
                        };
                        let event = Event::after(prev, Timestamp(seq), kind);
                        prev = Some(event.head());
                        events.push(event);
                    }
                    let new_head = store.append(&run, head.map(|h| h.id), &events)?;
                    let mut out = stdout
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    writeln!(out, "ack {run} {} {}", new_head.seq, new_head.id)?;
                    out.flush()?;
                    head = Some(new_head);
                    i += 1;
                }
            });
        }
    });
    Ok(())
}

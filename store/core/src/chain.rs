//! Checks every backend applies before it writes an append: compare-and-swap on the head,
//! and each event continuing the chain (parent and seq) within the size limit.

use retrace_events::{Event, EventId, Head, check_size};

use crate::error::{Error, Result};
use crate::run::RunInfo;

/// An event ready to write: its id, canonical bytes and seq.
#[derive(Debug, Clone)]
pub struct Record {
    /// `blake3(bytes)`.
    pub id: EventId,
    /// Canonical bytes.
    pub bytes: Vec<u8>,
    /// Position in the run.
    pub seq: u64,
}

/// Validate an append of `events` to `run` whose writer expects head `expected`, returning
/// the records to write and the new head. Fails with [`Error::Conflict`] when the head moved
/// and [`Error::InvalidAppend`] when the events do not chain.
pub fn prepare_append(
    run: &RunInfo,
    expected: Option<EventId>,
    events: &[Event],
) -> Result<(Vec<Record>, Head)> {
    if run.head.map(|h| h.id) != expected {
        return Err(Error::Conflict {
            run: run.id,
            expected,
            actual: run.head,
        });
    }
    let invalid = |seq: u64, reason: String| Error::InvalidAppend {
        run: run.id,
        seq,
        reason,
    };
    if events.is_empty() {
        return Err(invalid(
            run.head.map_or(0, |h| h.seq + 1),
            "no events to append".to_owned(),
        ));
    }
    let mut prev = run.head;
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        let want_seq = prev.map_or(0, |h| h.seq + 1);
        let want_parent = prev.map(|h| h.id);
        if event.seq != want_seq {
            return Err(invalid(
                want_seq,
                format!(
                    "event has seq {}, the run's next seq is {want_seq}",
                    event.seq
                ),
            ));
        }
        if event.parent != want_parent {
            return Err(invalid(
                want_seq,
                format!(
                    "event's parent is {}, the run's head is {}",
                    event
                        .parent
                        .map_or_else(|| "none".to_owned(), |p| p.short()),
                    want_parent.map_or_else(|| "none".to_owned(), |p| p.short())
                ),
            ));
        }
        let bytes = event.to_canonical_bytes();
        check_size(&bytes).map_err(|e| invalid(want_seq, e.to_string()))?;
        let id = EventId::of_canonical(&bytes);
        records.push(Record {
            id,
            bytes,
            seq: want_seq,
        });
        prev = Some(Head { id, seq: want_seq });
    }
    let head = prev.expect("a non-empty batch sets the head");
    Ok((records, head))
}

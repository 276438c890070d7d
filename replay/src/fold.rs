//! Folding a log into a state: `fold(apply, State::default(), events)`.

use retrace_events::{Event, RunId};
use retrace_store::{MAX_RANGE, Store};

use crate::apply::{ApplyError, apply};
use crate::state::State;

/// What can go wrong deriving a state from a stored run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An event does not make sense after the ones before it.
    #[error("run {run} seq {seq}: {source}")]
    Apply {
        /// The run folded.
        run: RunId,
        /// The offending event.
        seq: u64,
        /// Why.
        #[source]
        source: ApplyError,
    },
    /// The run has no event at the seq asked for.
    #[error("run {run} has {len} events; there is no seq {seq}")]
    NoSuchSeq {
        /// The run.
        run: RunId,
        /// The seq asked for.
        seq: u64,
        /// Events in the run.
        len: u64,
    },
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
}

/// Apply `events` in order to `state`; on error, the seq of the offending event.
pub fn fold_into<'a>(
    state: &mut State,
    events: impl IntoIterator<Item = &'a Event>,
) -> Result<(), (u64, ApplyError)> {
    for event in events {
        apply(state, event).map_err(|e| (event.seq, e))?;
    }
    Ok(())
}

/// The state after `events`, folded from the empty state.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<State, (u64, ApplyError)> {
    let mut state = State::default();
    fold_into(&mut state, events)?;
    Ok(state)
}

/// Continue `state` with the stored events of `run` up to and including `upto`, reading
/// the store page by page. `on_event` sees the state after each event (snapshot writing
/// hooks in here).
pub fn fold_stored(
    store: &(impl Store + ?Sized),
    run: &RunId,
    state: &mut State,
    upto: u64,
    mut on_event: impl FnMut(&State, &retrace_events::EventId) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut next = state.len();
    while next <= upto {
        let page = store.events(run, next..=upto.min(next + MAX_RANGE - 1))?;
        let Some(last) = page.last().map(|(_, e)| e.seq) else {
            break;
        };
        for (id, event) in &page {
            apply(state, event).map_err(|source| Error::Apply {
                run: *run,
                seq: event.seq,
                source,
            })?;
            on_event(state, id)?;
        }
        next = last + 1;
    }
    Ok(())
}

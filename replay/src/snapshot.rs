//! Snapshots and "state at any event".
//!
//! A snapshot is a cached state, stored through the `Store` under the id of the event it was
//! derived at. An event id commits to the whole history before it, so a fork shares its
//! prefix's snapshots. Snapshots are never trusted blindly: one that fails to decode, was
//! written by another replay version, names another event, or whose hash does not match its
//! content is bypassed (and reported), and the state re-derived.

use retrace_events::{EventId, RunId};
use retrace_store::Store;

use crate::fold::{Error, fold_stored};
use crate::state::{State, StateHash};

/// Version of `apply`'s semantics. Bump it whenever `apply` would derive a different state
/// from the same events: older snapshots are then bypassed and re-derived.
pub const REPLAY_VERSION: u32 = 12;

const MAGIC: &[u8; 6] = b"RTSNAP";

/// When snapshots are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// A snapshot after every `every` events (the state after seq `k·every − 1`).
    pub every: u64,
    /// Write missing snapshots at the boundaries a fold passes.
    pub write: bool,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            every: 1_000,
            write: true,
        }
    }
}

/// Why a stored snapshot was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bypassed {
    /// Seq of the event it is stored for.
    pub seq: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// A state, and how it was obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateAt {
    /// The state after the event at `seq`.
    pub state: State,
    /// The seq of the snapshot it started from (`None`: folded from the first event).
    pub from_snapshot: Option<u64>,
    /// Events applied on top of the snapshot.
    pub applied: u64,
    /// Snapshots found unusable on the way, newest first.
    pub bypassed: Vec<Bypassed>,
}

/// Encode a snapshot of `state` (derived at event `at`).
pub fn encode_snapshot(at: &EventId, state: &State) -> Vec<u8> {
    let body = state.to_canonical_bytes();
    let hash = StateHash(*blake3::hash(&body).as_bytes());
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + 64 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&REPLAY_VERSION.to_le_bytes());
    out.extend_from_slice(at.as_bytes());
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&body);
    out
}

/// Decode a snapshot stored for event `at` at `seq`, checking everything it claims.
pub fn decode_snapshot(at: &EventId, seq: u64, bytes: &[u8]) -> Result<State, String> {
    let header = MAGIC.len() + 4 + 32 + 32;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a retrace snapshot".into());
    }
    let mut at_off = MAGIC.len();
    let version = u32::from_le_bytes(
        bytes[at_off..at_off + 4]
            .try_into()
            .map_err(|_| "short header")?,
    );
    if version != REPLAY_VERSION {
        return Err(format!(
            "written by replay version {version}, this build is {REPLAY_VERSION}"
        ));
    }
    at_off += 4;
    if &bytes[at_off..at_off + 32] != at.as_bytes() {
        return Err("stored for another event".into());
    }
    let hash = &bytes[at_off + 32..header];
    let body = &bytes[header..];
    if blake3::hash(body).as_bytes() != hash {
        return Err("content does not match its hash".into());
    }
    let (state, used): (State, usize) =
        retrace_events::decode_bounded(body).map_err(|e| format!("does not decode: {e}"))?;
    if used != body.len() {
        return Err("trailing bytes".into());
    }
    if state.seq != Some(seq) {
        return Err(format!("holds the state at seq {:?}, not {seq}", state.seq));
    }
    Ok(state)
}

/// The state of `run` after the event at `seq`: the nearest usable snapshot at or before it,
/// plus the tail. Writes missing snapshots at the boundaries it passes if the policy says so.
pub fn state_at(
    store: &(impl Store + ?Sized),
    run: &RunId,
    seq: u64,
    policy: SnapshotPolicy,
) -> Result<StateAt, Error> {
    let info = store.require_run(run)?;
    if seq >= info.len() {
        return Err(Error::NoSuchSeq {
            run: *run,
            seq,
            len: info.len(),
        });
    }
    let every = policy.every.max(1);
    let mut bypassed = Vec::new();
    let mut start = None;
    // Boundaries at or before `seq`, newest first.
    let mut boundary = (seq + 1) / every * every;
    while boundary >= every {
        let at = boundary - 1;
        if let Some(id) = store.event_id_at(run, at)?
            && let Some(bytes) = store.snapshot(&id)?
        {
            match decode_snapshot(&id, at, &bytes) {
                Ok(state) => {
                    start = Some((at, state));
                    break;
                }
                Err(reason) => bypassed.push(Bypassed { seq: at, reason }),
            }
        }
        boundary -= every;
    }
    let from_snapshot = start.as_ref().map(|(at, _)| *at);
    let mut state = start.map(|(_, s)| s).unwrap_or_default();
    let before = state.len();
    fold_stored(store, run, &mut state, seq, |state, id| {
        if policy.write && state.len() % every == 0 {
            store.put_snapshot(id, &encode_snapshot(id, state))?;
        }
        Ok(())
    })?;
    Ok(StateAt {
        applied: state.len() - before,
        state,
        from_snapshot,
        bypassed,
    })
}

/// The state at the run's head (see [`state_at`]); the empty state for a run with no events.
pub fn state_at_head(
    store: &(impl Store + ?Sized),
    run: &RunId,
    policy: SnapshotPolicy,
) -> Result<StateAt, Error> {
    match store.require_run(run)?.head {
        Some(head) => state_at(store, run, head.seq, policy),
        None => Ok(StateAt {
            state: State::default(),
            from_snapshot: None,
            applied: 0,
            bypassed: Vec::new(),
        }),
    }
}

/// Store a snapshot of `state` now (on demand), for the event it was derived at.
pub fn snapshot_now(
    store: &(impl Store + ?Sized),
    run: &RunId,
    state: &State,
) -> Result<(), Error> {
    let Some(seq) = state.seq else {
        return Ok(());
    };
    let id = store.event_id_at(run, seq)?.ok_or(Error::NoSuchSeq {
        run: *run,
        seq,
        len: store.require_run(run)?.len(),
    })?;
    store.put_snapshot(&id, &encode_snapshot(&id, state))?;
    Ok(())
}

//! Compact, exact records of model requests.
//!
//! A model request carries the conversation window, up to 256 messages. Storing it whole at
//! every step would cost O(window) bytes per step. Instead each `model_requested` names a
//! [`Record`]: the previous record of the run plus what changed (messages that left the
//! window, references to the new ones, whose content blobs are already stored). Every
//! [`FULL_EVERY`] records a full one starts a new chain, so rebuilding a request reads at
//! most that many small blobs. The exact request a provider saw is rebuilt from the
//! record by [`reconstruct`] and the executor's one message builder.

use std::collections::{BTreeMap, VecDeque};

use retrace_events::{BlobId, to_canonical_json};
use retrace_replay::{Role, State};
use retrace_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the record format and of the rule that turns message refs into messages.
pub const FORMAT: u32 = 2;

/// A full record every this many records.
pub const FULL_EVERY: u32 = 128;

/// One message of a request, by reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRef {
    /// Who.
    pub role: Role,
    /// The blob the state holds for it (input, reply or tool output).
    pub content: BlobId,
    /// For tool messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// For tool messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// A recorded model request (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The previous record of the run (`None`: this one is full).
    pub base: Option<BlobId>,
    /// Records since the last full one.
    pub depth: u32,
    /// Messages that had left the window when this request was made.
    pub earlier: u64,
    /// Messages the conversation had had when this request was made, earlier ones
    /// included (a count, not a seq: records hold no log positions, so two runs that said
    /// the same things record the same requests however their logs were interrupted).
    pub total: u64,
    /// Messages dropped from the front of the base's list.
    pub drop: u64,
    /// Messages added after the base's list.
    pub append: Vec<MessageRef>,
    /// Model name.
    pub model: String,
    /// System prompt (a blob holding it as a JSON string).
    pub system: BlobId,
    /// Tool definitions (a blob holding them as JSON).
    pub tools: BlobId,
    /// Parameters.
    pub params: BTreeMap<String, Value>,
    /// The step asked for.
    pub step: u64,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
    /// A record or blob is missing or malformed.
    #[error("request record {blob}: {what}")]
    Bad {
        /// The record.
        blob: BlobId,
        /// What is wrong.
        what: String,
    },
}

/// The conversation window of `state`, by reference.
pub fn window(state: &State) -> Vec<MessageRef> {
    newest(state, state.conversation.len())
}

/// The newest `n` messages of the window.
fn newest(state: &State, n: usize) -> Vec<MessageRef> {
    state
        .conversation
        .iter()
        .skip(state.conversation.len().saturating_sub(n))
        .map(|m| MessageRef {
            role: m.role,
            content: m.content,
            call_id: m.call_id.clone(),
            is_error: m.is_error,
        })
        .collect()
}

fn read(store: &dyn Store, blob: &BlobId) -> Result<Record, Error> {
    let bytes = store.blob(blob)?.ok_or_else(|| Error::Bad {
        blob: *blob,
        what: "missing".into(),
    })?;
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| Error::Bad {
        blob: *blob,
        what: e.to_string(),
    })?;
    if record.format != FORMAT {
        return Err(Error::Bad {
            blob: *blob,
            what: format!("format {} (this build reads {FORMAT})", record.format),
        });
    }
    Ok(record)
}

/// What the executor knows about a request besides the conversation.
#[derive(Clone, Debug)]
pub struct Header<'a> {
    /// Model name.
    pub model: &'a str,
    /// System prompt (a stored blob holding it as a JSON string).
    pub system: BlobId,
    /// Tool definitions as sent (a stored blob).
    pub tools: BlobId,
    /// Parameters.
    pub params: &'a BTreeMap<String, Value>,
    /// The step.
    pub step: u64,
}

/// What a new record needs of the record before it (so a writer can keep it at hand
/// instead of reading the record back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    /// Records since the last full one.
    pub depth: u32,
    /// Messages that had left the window.
    pub earlier: u64,
    /// Messages the conversation had had.
    pub total: u64,
}

impl From<&Record> for Tip {
    fn from(r: &Record) -> Self {
        Self {
            depth: r.depth,
            earlier: r.earlier,
            total: r.total,
        }
    }
}

/// Store the record of a request made from `state` and return its blob id and tip. It
/// chains to the run's previous request record (`state.last_request`, whose tip is `known`
/// if the caller has it, else read from the store) unless a full record is due.
pub fn record(
    store: &dyn Store,
    state: &State,
    header: &Header<'_>,
    known: Option<Tip>,
) -> Result<(BlobId, Tip), Error> {
    // An unreadable previous record (another format, a foreign blob) just starts a new
    // chain; a failing store is still an error.
    let base = match (state.last_request, known) {
        (Some(blob), Some(tip)) => Some((blob, tip)),
        (Some(blob), None) => match read(store, &blob) {
            Ok(prev) => Some((blob, Tip::from(&prev))),
            Err(Error::Store(e)) => return Err(Error::Store(e)),
            Err(Error::Bad { .. }) => None,
        },
        (None, _) => None,
    };
    let len = state.conversation.len() as u64;
    let total = state.earlier_messages + len;
    let (base, depth, drop, append) = match base {
        // a delta needs every message added since the base still in the window
        Some((blob, prev))
            if prev.depth + 1 < FULL_EVERY
                && state.earlier_messages >= prev.earlier
                && total >= prev.total
                && total - prev.total <= len =>
        {
            let added = usize::try_from(total - prev.total).unwrap_or(usize::MAX);
            (
                Some(blob),
                prev.depth + 1,
                state.earlier_messages - prev.earlier,
                newest(state, added),
            )
        }
        _ => (None, 0, 0, window(state)),
    };
    let record = Record {
        format: FORMAT,
        base,
        depth,
        earlier: state.earlier_messages,
        total,
        drop,
        append,
        model: header.model.to_owned(),
        system: header.system,
        tools: header.tools,
        params: header.params.clone(),
        step: header.step,
    };
    let bytes = to_canonical_json(&record).expect("a Record always serialises");
    Ok((store.put_blob(&bytes)?, Tip::from(&record)))
}

/// The record at `blob` and the full message list it stands for.
pub fn reconstruct(store: &dyn Store, blob: &BlobId) -> Result<(Record, Vec<MessageRef>), Error> {
    let newest = read(store, blob)?;
    let mut chain = vec![newest.clone()];
    while let Some(base) = chain.last().and_then(|r| r.base) {
        if chain.len() > FULL_EVERY as usize {
            return Err(Error::Bad {
                blob: *blob,
                what: "chain longer than any record allows".into(),
            });
        }
        chain.push(read(store, &base)?);
    }
    let mut messages: VecDeque<MessageRef> = VecDeque::new();
    for record in chain.into_iter().rev() {
        let drop = usize::try_from(record.drop)
            .unwrap_or(usize::MAX)
            .min(messages.len());
        messages.drain(..drop);
        messages.extend(record.append);
    }
    Ok((newest, messages.into()))
}

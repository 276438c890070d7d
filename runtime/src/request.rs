//! Compact, exact records of model requests.
//!
//! A model request carries the conversation window, up to 256 messages. Storing it whole at
//! every step would cost O(window) bytes per step. Instead each `model_requested` names a
//! [`Record`]: the previous record of the run plus what changed (messages that left the
//! window, references to the new ones, whose content blobs are already stored). Every
//! [`FULL_EVERY`] records a full one starts a new chain, so rebuilding a request reads at
//! most that many small blobs. The exact request a provider saw is rebuilt from the
//! record by [`reconstruct`] and the one message builder, [`message`]: the executor builds
//! fresh requests and re-issues recorded ones with it, and [`rebuild`] (`retrace show
//! RUN@SEQ --request`) rebuilds any model call of a log with it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use retrace_events::{BlobId, EventKind, RunId, to_canonical_json};
use retrace_providers::{ChatMessage, ModelReply, ModelRequest};
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

/// Why a record could not be read or a request rebuilt.
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
    /// A blob the request is built from (a message, the system prompt, the tools) is
    /// missing or malformed.
    #[error("blob {blob} (part of a model request) {what}")]
    Message {
        /// The blob.
        blob: BlobId,
        /// What is wrong.
        what: String,
    },
    /// The run has no event at that seq.
    #[error("run {run} has no seq {seq}")]
    NoEvent {
        /// The run.
        run: RunId,
        /// The seq asked for.
        seq: u64,
    },
    /// The event at that seq is not part of a model call.
    #[error(
        "seq {seq} of run {run} is a {kind} event, not a model call (model_requested, \
         model_responded or model_failed); {}",
        nearest.map_or_else(
            || "the run has made no model call".to_owned(),
            |n| format!("the nearest model call is at seq {n}: `retrace show {run}@{n} --request`")
        )
    )]
    NotAModelCall {
        /// The run.
        run: RunId,
        /// The seq asked for.
        seq: u64,
        /// The kind of event it is.
        kind: &'static str,
        /// The `model_requested` seq closest to it, if the run has any.
        nearest: Option<u64>,
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
            Err(_) => None,
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

/// One message as sent to the model, built from its blob (the one builder: fresh requests,
/// re-issued ones and [`rebuild`] all go through here). Tool output longer than
/// [`PREVIEW_BYTES`](crate::executor::PREVIEW_BYTES) is sent as a preview naming its blob.
pub fn message(store: &dyn Store, message: &MessageRef) -> Result<ChatMessage, Error> {
    Ok(match message.role {
        Role::User => ChatMessage::User {
            content: text_of(&blob_json(store, &message.content)?),
        },
        Role::Assistant => {
            let reply: ModelReply = blob_json(store, &message.content)?;
            ChatMessage::Assistant {
                text: reply.text,
                tool_calls: reply.tool_calls,
                reasoning: reply.reasoning,
            }
        }
        Role::Tool => {
            let output: Value = blob_json(store, &message.content)?;
            ChatMessage::Tool {
                call_id: message.call_id.clone().unwrap_or_default(),
                content: preview(&output, &message.content),
                is_error: message.is_error,
            }
        }
    })
}

/// Exactly the request recorded in `blob`, its messages built by `build` from their refs
/// (the executor passes its message cache; [`rebuild`] builds each with [`message`]).
pub fn rebuild_record(
    store: &dyn Store,
    blob: &BlobId,
    build: impl FnOnce(&[MessageRef]) -> Result<Vec<Arc<ChatMessage>>, Error>,
) -> Result<ModelRequest, Error> {
    let (record, refs) = reconstruct(store, blob)?;
    Ok(ModelRequest {
        messages: build(&refs)?,
        system: blob_json(store, &record.system)?,
        tools: blob_json(store, &record.tools)?,
        model: record.model,
        params: record.params,
        step: record.step,
    })
}

/// A model call's request rebuilt from the log (see [`rebuild`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Rebuilt {
    /// Seq of the call's `model_requested`.
    pub seq: u64,
    /// Which try of its step it was (1 for the first).
    pub attempt: u32,
    /// The request record it names.
    pub record: BlobId,
    /// The request exactly as sent to the provider.
    pub request: ModelRequest,
    /// How many of the request's last messages are new since the run's previous model
    /// call (all of them for the first call; 0 for a retry).
    pub new: usize,
}

/// The request of the model call at `seq` of `run` (its `model_requested`, or the
/// `model_responded`/`model_failed` answering it), rebuilt from the log exactly as the
/// provider was sent it. Any other event is [`Error::NotAModelCall`].
pub fn rebuild(store: &dyn Store, run: &RunId, seq: u64) -> Result<Rebuilt, Error> {
    let (_, event) = store
        .event_at(run, seq)?
        .ok_or(Error::NoEvent { run: *run, seq })?;
    let asked = match event.kind {
        EventKind::ModelResponded { request_seq, .. }
        | EventKind::ModelFailed { request_seq, .. } => {
            store
                .event_at(run, request_seq)?
                .ok_or(Error::NoEvent {
                    run: *run,
                    seq: request_seq,
                })?
                .1
        }
        _ => event,
    };
    let EventKind::ModelRequested {
        request: blob,
        attempt,
    } = asked.kind
    else {
        let calls = model_calls(store, run, u64::MAX)?;
        let nearest = calls
            .into_iter()
            .min_by_key(|&c| (c.abs_diff(seq), c > seq));
        return Err(Error::NotAModelCall {
            run: *run,
            seq,
            kind: asked.kind.name(),
            nearest,
        });
    };
    let request = rebuild_record(store, &blob, |refs| {
        refs.iter()
            .map(|r| message(store, r).map(Arc::new))
            .collect()
    })?;
    let total = read(store, &blob)?.total;
    let previous = match asked.seq.checked_sub(1) {
        Some(before) => model_calls(store, run, before)?.last().copied(),
        None => None,
    };
    let before = match previous {
        Some(p) => match store.event_at(run, p)? {
            Some((_, prev)) => match prev.kind {
                EventKind::ModelRequested { request, .. } => read(store, &request)?.total,
                _ => 0,
            },
            None => 0,
        },
        None => 0,
    };
    let new = usize::try_from(total.saturating_sub(before))
        .unwrap_or(usize::MAX)
        .min(request.messages.len());
    Ok(Rebuilt {
        seq: asked.seq,
        attempt,
        record: blob,
        request,
        new,
    })
}

/// Seqs of the `model_requested` events of `run` up to `upto`, in order.
fn model_calls(store: &dyn Store, run: &RunId, upto: u64) -> Result<Vec<u64>, Error> {
    let mut calls = Vec::new();
    let mut from = 0_u64;
    loop {
        let to = from.saturating_add(retrace_store::MAX_RANGE - 1).min(upto);
        let events = store.events(run, from..=to)?;
        let Some(last) = events.last().map(|(_, e)| e.seq) else {
            break;
        };
        calls.extend(
            events
                .iter()
                .filter(|(_, e)| matches!(e.kind, EventKind::ModelRequested { .. }))
                .map(|(_, e)| e.seq),
        );
        if last >= upto || last < to {
            break;
        }
        from = last + 1;
    }
    Ok(calls)
}

fn blob_json<T: serde::de::DeserializeOwned>(store: &dyn Store, blob: &BlobId) -> Result<T, Error> {
    let bytes = store.blob(blob)?.ok_or_else(|| Error::Message {
        blob: *blob,
        what: "is missing".into(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Message {
        blob: *blob,
        what: format!("does not decode: {e}"),
    })
}

/// A JSON string as its text, anything else as JSON.
pub(crate) fn text_of(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Tool output for the model: whole if short, else a preview naming the stored blob.
fn preview(output: &Value, blob: &BlobId) -> String {
    let text = output.to_string();
    if text.len() <= crate::executor::PREVIEW_BYTES {
        return text;
    }
    format!(
        "{}… [{} bytes in all; the full output is blob {}]",
        crate::tools::cut(&text, crate::executor::PREVIEW_BYTES),
        text.len(),
        blob.short()
    )
}

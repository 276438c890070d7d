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

use retrace_events::chat::{ChatMessage, ModelRequest};
use retrace_events::reply::ModelReply;
use retrace_events::{BlobId, EventKind, RunId, to_canonical_json};

use crate::{Role, State};
use retrace_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the record format and of the rule that turns message refs into messages.
/// A record that uses none of the context engine's fields (`pinned`, `compacts`,
/// `artifacts`, `budget`) is written as format 2, byte for byte what retrace wrote before
/// them; one that does is format 3.
pub const FORMAT: u32 = 3;

/// The format of records without the context engine's fields.
const FORMAT_PLAIN: u32 = 2;

/// `tokens` scaled by `scale` (per mille), rounded up: the calibrated count.
pub fn scaled(tokens: u64, scale: u64) -> u64 {
    (u128::from(tokens) * u128::from(scale))
        .div_ceil(1_000)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// How a request was measured against the context budget (see `retrace_runtime::context`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The tokenizer that counted (its `retrace_runtime::context::tokens::Tokenizer::name`).
    pub tokenizer: String,
    /// Tokens of the whole request as that tokenizer counts them.
    pub measured: u64,
    /// The scale applied to counts (per mille), from what the provider reported before.
    pub scale: u64,
    /// Calibrated tokens the request could hold: `window_tokens - reserve_tokens`, or less
    /// once the provider has refused a request as over its window
    /// (`retrace_runtime::context::layout::limit_after_overflow`); later records keep it.
    pub limit: u64,
}

impl Budget {
    /// Calibrated tokens of the request: what the provider is expected to count.
    pub fn tokens(&self) -> u64 {
        scaled(self.measured, self.scale)
    }
}

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
    /// Messages sent before the conversation's: the pinned task and the latest compaction
    /// summary, once the task has left the conversation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<MessageRef>,
    /// A summary request: it asks for a summary of the first this-many messages of the
    /// conversation (a full record: its `append` holds them, then the instruction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacts: Option<u64>,
    /// Tool output longer than this many bytes is sent as an artifact preview
    /// ([`crate::preview::preview`]); `None`: the preview older runs sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<u64>,
    /// How the request was measured against the context budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

impl Record {
    fn plain(&self) -> bool {
        self.pinned.is_empty()
            && self.compacts.is_none()
            && self.artifacts.is_none()
            && self.budget.is_none()
    }
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
    if record.format != FORMAT && record.format != FORMAT_PLAIN {
        return Err(Error::Bad {
            blob: *blob,
            what: format!(
                "format {} (this build reads {FORMAT_PLAIN} and {FORMAT})",
                record.format
            ),
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
    /// Messages before the conversation's ([`pinned`]).
    pub pinned: Vec<MessageRef>,
    /// Tool output over this many bytes is sent as an artifact preview (`None`: the older
    /// preview).
    pub artifacts: Option<u64>,
    /// How the request measured against the budget.
    pub budget: Option<Budget>,
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
    /// Whether a later record may chain to it (a summary request's may not).
    pub chainable: bool,
    /// How the request was measured, if it was: its scale, measure and limit.
    pub measured: Option<Measured>,
}

impl From<&Record> for Tip {
    fn from(r: &Record) -> Self {
        Self {
            depth: r.depth,
            earlier: r.earlier,
            total: r.total,
            chainable: r.compacts.is_none(),
            measured: r.budget.as_ref().map(|b| Measured {
                scale: b.scale,
                measured: b.measured,
                limit: b.limit,
            }),
        }
    }
}

/// A request's [`Budget`] figures, kept with its [`Tip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// [`Budget::scale`].
    pub scale: u64,
    /// [`Budget::measured`].
    pub measured: u64,
    /// [`Budget::limit`].
    pub limit: u64,
}

/// The tip of the record at `blob` (`None`: no such readable record).
pub fn tip(store: &dyn Store, blob: &BlobId) -> Result<Option<Tip>, Error> {
    match read(store, blob) {
        Ok(record) => Ok(Some(Tip::from(&record))),
        Err(Error::Store(e)) => Err(Error::Store(e)),
        Err(_) => Ok(None),
    }
}

/// The messages sent before the conversation's: none while the task is still the
/// conversation's first message; once it has left (compacted, or slid out of the state's
/// window), the task, pinned, then the latest compaction summary.
pub fn pinned(state: &State) -> Vec<MessageRef> {
    if state.earlier_messages == 0 && state.summary.is_none() {
        return Vec::new();
    }
    let user = |content| MessageRef {
        role: Role::User,
        content,
        call_id: None,
        is_error: false,
    };
    state
        .input
        .into_iter()
        .chain(state.summary)
        .map(user)
        .collect()
}

/// How a record links to the one before it, and the messages it adds.
struct Links {
    base: Option<BlobId>,
    depth: u32,
    drop: u64,
    append: Vec<MessageRef>,
}

/// Store the record of a request made from `state` with `header`, linked by `links`.
fn store_record(
    store: &dyn Store,
    state: &State,
    header: &Header<'_>,
    links: Links,
    compacts: Option<u64>,
) -> Result<(BlobId, Tip), Error> {
    let mut record = Record {
        format: FORMAT,
        base: links.base,
        depth: links.depth,
        earlier: state.earlier_messages,
        total: state.earlier_messages + state.conversation.len() as u64,
        drop: links.drop,
        append: links.append,
        model: header.model.to_owned(),
        system: header.system,
        tools: header.tools,
        params: header.params.clone(),
        step: header.step,
        pinned: header.pinned.clone(),
        compacts,
        artifacts: header.artifacts,
        budget: header.budget.clone(),
    };
    record.format = if record.plain() { FORMAT_PLAIN } else { FORMAT };
    let bytes = to_canonical_json(&record).expect("a Record always serialises");
    Ok((store.put_blob(&bytes)?, Tip::from(&record)))
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
        (Some(blob), None) => tip(store, &blob)?.map(|tip| (blob, tip)),
        (None, _) => None,
    };
    let len = state.conversation.len() as u64;
    let total = state.earlier_messages + len;
    let (base, depth, drop, append) = match base {
        // a delta needs every message added since the base still in the window
        Some((blob, prev))
            if prev.chainable
                && prev.depth + 1 < FULL_EVERY
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
    store_record(
        store,
        state,
        header,
        Links {
            base,
            depth,
            drop,
            append,
        },
        None,
    )
}

/// Store the record of a summary request made from `state`: `header.pinned`, then the
/// first `evict` messages of the conversation, then `instruction` (a stored JSON string
/// blob). A full record, which no later record chains to.
pub fn record_compaction(
    store: &dyn Store,
    state: &State,
    header: &Header<'_>,
    evict: usize,
    instruction: BlobId,
) -> Result<(BlobId, Tip), Error> {
    let mut append = window(state);
    append.truncate(evict);
    append.push(MessageRef {
        role: Role::User,
        content: instruction,
        call_id: None,
        is_error: false,
    });
    let links = Links {
        base: None,
        depth: 0,
        drop: 0,
        append,
    };
    store_record(store, state, header, links, Some(evict as u64))
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
    for record in chain.into_iter().skip(1).rev() {
        let drop = usize::try_from(record.drop)
            .unwrap_or(usize::MAX)
            .min(messages.len());
        messages.drain(..drop);
        messages.extend(record.append);
    }
    let drop = usize::try_from(newest.drop)
        .unwrap_or(usize::MAX)
        .min(messages.len());
    messages.drain(..drop);
    messages.extend(newest.append.iter().cloned());
    let mut all = newest.pinned.clone();
    all.extend(messages);
    Ok((newest, all))
}

/// One message as sent to the model, built from its blob (the one builder: fresh requests,
/// re-issued ones and [`rebuild`] all go through here). Tool output longer than
/// `artifacts` bytes is sent as an artifact preview; with `artifacts` `None` (records
/// older than the context engine), output longer than
/// [`PREVIEW_BYTES`](crate::preview::PREVIEW_BYTES) is sent as a preview naming its blob.
pub fn message(
    store: &dyn Store,
    message: &MessageRef,
    artifacts: Option<u64>,
) -> Result<ChatMessage, Error> {
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
            let content = match artifacts {
                None => crate::preview::legacy(&output, &message.content),
                Some(limit) => crate::preview::preview(
                    &output,
                    &message.content,
                    usize::try_from(limit).unwrap_or(usize::MAX),
                )
                .unwrap_or_else(|| output.to_string()),
            };
            ChatMessage::Tool {
                call_id: message.call_id.clone().unwrap_or_default(),
                content,
                is_error: message.is_error,
            }
        }
    })
}

/// Exactly the request recorded in `blob`, its messages built by `build` from their refs
/// and the record's artifact limit (the executor passes its message cache; [`rebuild`]
/// builds each with [`message`]), with the record itself.
pub fn rebuild_record(
    store: &dyn Store,
    blob: &BlobId,
    build: impl FnOnce(&[MessageRef], Option<u64>) -> Result<Vec<Arc<ChatMessage>>, Error>,
) -> Result<(ModelRequest, Record), Error> {
    let (record, refs) = reconstruct(store, blob)?;
    let request = ModelRequest {
        messages: build(&refs, record.artifacts)?,
        system: blob_json(store, &record.system)?,
        tools: blob_json(store, &record.tools)?,
        model: record.model.clone(),
        params: record.params.clone(),
        step: record.step,
        compaction: record.compacts.is_some(),
    };
    Ok((request, record))
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
    /// How many of the request's last messages are new since the run's previous agent-step
    /// model call (summary requests aside; all of them for the first call; 0 for a retry).
    pub new: usize,
    /// How it measured against the context budget (runs with a `[context]`).
    pub budget: Option<Budget>,
    /// For a summary request: how many conversation messages it summarizes.
    pub compacts: Option<u64>,
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
        | EventKind::ModelFailed { request_seq, .. }
        | EventKind::ContextCompacted {
            request_seq: Some(request_seq),
            ..
        } => {
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
    let (request, record) = rebuild_record(store, &blob, |refs, artifacts| {
        refs.iter()
            .map(|r| message(store, r, artifacts).map(Arc::new))
            .collect()
    })?;
    let total = record.total;
    let before = match previous_request(store, run, asked.seq)? {
        Some(request) => read(store, &request)?.total,
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
        budget: record.budget,
        compacts: record.compacts,
    })
}

/// The request record of the last agent-step `model_requested` of `run` before `seq`
/// (summary requests skipped: after a compaction, what is new is counted from the step
/// before it), read backwards in ranges that double from 64 events (the call just before is
/// usually a few events away, however long the run).
fn previous_request(store: &dyn Store, run: &RunId, seq: u64) -> Result<Option<BlobId>, Error> {
    let mut to = seq;
    let mut span = 64;
    while to > 0 {
        let from = to.saturating_sub(span);
        span = (span * 2).min(retrace_store::MAX_RANGE);
        let events = store.events(run, from..=to - 1)?;
        for (_, event) in events.iter().rev() {
            if let EventKind::ModelRequested { request, .. } = event.kind
                && read(store, &request)?.compacts.is_none()
            {
                return Ok(Some(request));
            }
        }
        to = from;
    }
    Ok(None)
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
pub fn text_of(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

//! # retrace-events
//!
//! The event model every other part of retrace stands on: content-addressed ids, the event
//! kinds of an agent run, and the frozen canonical encoding that makes an [`EventId`] the
//! BLAKE3 of an event's bytes. Each event names its parent, so an id commits to the whole
//! history before it, like a git commit.
//!
//! This crate is pure: no IO, no clock, no randomness (CI checks its dependency tree).
//!
//! ```
//! use retrace_events::{BlobId, Event, EventKind, RunId, Timestamp, decode_event};
//!
//! let spec = BlobId::of(br#"{"name":"demo"}"#);
//! let input = BlobId::of(b"\"hello\"");
//! let first = Event::root(
//!     Timestamp(1_700_000_000_000),
//!     EventKind::RunStarted { run: RunId::from_bytes([7; 16]), spec, input },
//! );
//! let bytes = first.to_canonical_bytes();
//! assert_eq!(decode_event(&bytes).unwrap(), first);
//!
//! // The next event commits to the first through its parent id.
//! let second = Event::after(
//!     Some(first.head()),
//!     Timestamp(1_700_000_000_005),
//!     EventKind::SignalReceived { name: "cancel".into(), payload: input },
//! );
//! assert_eq!(second.parent, Some(first.id()));
//! assert_eq!(second.seq, 1);
//! ```
#![deny(missing_docs)]

pub mod chat;
mod codec;
mod event;
mod id;
mod json;
pub mod reply;

pub use codec::{
    DecodeError, FORMAT_VERSION, MAX_EVENT_BYTES, VerifyError, check_size, decode_bounded,
    decode_event, decode_verified, encode_event,
};
pub use event::{
    Decision, Event, EventKind, Head, HookStage, Outcome, ProposedCall, Timestamp, Usage,
};
pub use id::{
    BlobId, EventId, HexId, IdError, RunId, SHORT_HEX_LEN, resolve_prefix, unique_prefix_len,
};
pub use json::{
    canonical_json, canonicalize_json_text, is_canonical_json, json_blob_id, to_canonical_json,
};

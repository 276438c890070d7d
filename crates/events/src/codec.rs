//! The canonical encoding of events (format version [`FORMAT_VERSION`]).
//!
//! Canonical bytes are one version byte followed by bincode 2 with a fixed configuration
//! (little-endian, variable-length integers). The encoding has no maps, so there is exactly
//! one byte string per event; [`decode_event`] enforces that by re-encoding and comparing,
//! so a stored event is accepted only in its canonical form and its id is always
//! `blake3(stored bytes)`.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

use crate::event::Event;
use crate::id::EventId;

/// Version of the canonical encoding. Bump it (and keep a decoder for the old one) whenever
/// the bytes of any existing event would change; the golden tests fail until you do.
pub const FORMAT_VERSION: u8 = 1;

/// Upper bound on one encoded event. Events hold ids, not payloads, so real ones are a few
/// hundred bytes; the bound stops a corrupt length field from allocating gigabytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// What decoding one event may claim, in bytes of memory: bincode counts a claimed length as
/// `len × size_of::<T>()`, so an event of at most [`MAX_EVENT_BYTES`] on the wire can claim up
/// to [`BOUND_PER_BYTE`] times that (a call list of a few hundred calls claims more than its
/// own bytes).
const MAX_EVENT_CLAIM: usize = MAX_EVENT_BYTES * BOUND_PER_BYTE;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_EVENT_CLAIM>>;

const fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_EVENT_CLAIM>()
}

/// Why bytes are not a valid canonical event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty event record")]
    Empty,
    /// Written by another format version.
    #[error("event is in format version {found}, this build reads version {FORMAT_VERSION}")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// bincode could not decode the body.
    #[error("event body does not decode: {0}")]
    Body(String),
    /// Longer than [`MAX_EVENT_BYTES`]: put large data in a blob.
    #[error(
        "event is {0} bytes, more than the {MAX_EVENT_BYTES}-byte limit; large data belongs in a blob"
    )]
    TooLarge(usize),
    /// Decoded, but bytes were left over.
    #[error("{0} trailing bytes after the event")]
    Trailing(usize),
    /// Decoded, but re-encoding gives other bytes (a non-canonical form).
    #[error("event bytes are not in canonical form")]
    NotCanonical,
}

/// Canonical bytes of `event`. Stores refuse events longer than [`MAX_EVENT_BYTES`]
/// (see [`check_size`]), so everything stored decodes again.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.push(FORMAT_VERSION);
    bincode::encode_into_std_write(event, &mut out, bincode::config::standard())
        .expect("encoding plain data into a Vec cannot fail");
    out
}

/// Refuse canonical bytes too long to be decoded again.
pub fn check_size(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(())
}

/// Decode canonical bytes, rejecting anything that is not exactly [`encode_event`]'s output.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    check_size(bytes)?;
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let (event, used): (Event, usize) =
        bincode::decode_from_slice(body, config()).map_err(|e| DecodeError::Body(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::Trailing(body.len() - used));
    }
    if encode_event(&event) != bytes {
        return Err(DecodeError::NotCanonical);
    }
    Ok(event)
}

/// Decode and check that the bytes hash to `expected`. Used by every reader that must not
/// trust storage (verification, import).
pub fn decode_verified(expected: &EventId, bytes: &[u8]) -> Result<Event, VerifyError> {
    let actual = EventId::of_canonical(bytes);
    if actual != *expected {
        return Err(VerifyError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    decode_event(bytes).map_err(VerifyError::Decode)
}

/// Why stored bytes do not match their id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The bytes hash to another id.
    #[error("stored under {expected} but the bytes hash to {actual}")]
    HashMismatch {
        /// The id the bytes were stored under.
        expected: EventId,
        /// What they hash to.
        actual: EventId,
    },
    /// The hash matches but the bytes are not a valid event.
    #[error(transparent)]
    Decode(DecodeError),
}

/// Decode a bincode value (the standard configuration: little-endian, variable-length
/// integers) from the front of `bytes` — any bytes from outside, not only events — with
/// what it may allocate bounded by the input: every length it reads is checked, before
/// anything is allocated for it, against a limit of the next of 1 MiB, 4 MiB, … (× 4) …
/// 64 GiB at or above [`BOUND_PER_BYTE`] × `bytes.len()`, capped at 4 GiB, and at least
/// [`LARGE_BOUND_PER_BYTE`] × `bytes.len()`. (bincode counts a claimed length in bytes of
/// memory, `len × size_of::<T>()`, so the limit must allow for values larger in memory than
/// on the wire; real values of more than a few MiB are bytes and events, a few times their
/// wire size at most.) So a few damaged or hostile bytes claiming a terabyte-long vector are
/// refused instead of aborting the process (found by fuzzing), and inputs up to 8 GiB (the
/// daemon's largest body is 256 MiB) decode.
///
/// Returns the value and how many bytes it took.
///
/// # Errors
/// bincode's, including `LimitExceeded` for a claim past the limit.
pub fn decode_bounded<T: bincode::Decode<()>>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let bound = (bytes.len().saturating_mul(BOUND_PER_BYTE))
        .min(4 << 30)
        .max(bytes.len().saturating_mul(LARGE_BOUND_PER_BYTE));
    macro_rules! within {
        ($($limit:expr),*) => {
            $(if bound <= $limit {
                return bincode::decode_from_slice(
                    bytes,
                    bincode::config::standard().with_limit::<{ $limit }>(),
                );
            })*
        };
    }
    within!(
        1 << 20,
        4 << 20,
        16 << 20,
        64 << 20,
        256 << 20,
        1 << 30,
        4 << 30,
        16 << 30,
        64 << 30
    );
    Err(bincode::error::DecodeError::LimitExceeded)
}

/// Bytes of memory a decoded value may claim per byte of its input ([`decode_bounded`]):
/// a one-byte enum or `None` on the wire can be a few hundred bytes in memory.
pub const BOUND_PER_BYTE: usize = 256;

/// Bytes of memory a large input (over 16 MiB) may claim per byte ([`decode_bounded`]).
pub const LARGE_BOUND_PER_BYTE: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Timestamp};
    use crate::id::BlobId;

    fn sample() -> Event {
        Event::root(
            Timestamp(1),
            EventKind::SignalReceived {
                name: "cancel".into(),
                payload: BlobId::of(b"{}"),
            },
        )
    }

    #[test]
    fn rejects_other_versions_trailing_bytes_and_garbage() {
        let mut bytes = sample().to_canonical_bytes();
        assert_eq!(decode_event(&bytes).unwrap(), sample());
        bytes.push(0);
        assert_eq!(decode_event(&bytes), Err(DecodeError::Trailing(1)));
        bytes.pop();
        bytes[0] = 2;
        assert_eq!(decode_event(&bytes), Err(DecodeError::Version { found: 2 }));
        assert_eq!(decode_event(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            decode_event(&[FORMAT_VERSION, 0xff, 0xff]),
            Err(DecodeError::Body(_))
        ));
    }

    #[test]
    fn rejects_non_canonical_varints() {
        // seq 0 written as a 3-byte varint (251 marker + u16 0) instead of one byte.
        let canonical = sample().to_canonical_bytes();
        // layout: version, parent tag (0 = None), seq varint, ...
        assert_eq!(&canonical[..3], &[FORMAT_VERSION, 0, 0]);
        let mut stretched = vec![FORMAT_VERSION, 0, 251, 0, 0];
        stretched.extend_from_slice(&canonical[3..]);
        assert!(matches!(
            decode_event(&stretched),
            Err(DecodeError::NotCanonical | DecodeError::Body(_))
        ));
    }

    /// bincode counts claims in bytes of memory: 1,500 calls are ~52 KB on the wire (under
    /// the limit every store enforces) but claim ~156 KB of memory, and must still decode.
    #[test]
    fn an_event_within_the_size_limit_decodes_however_much_memory_it_claims() {
        let call = crate::event::ProposedCall {
            call_id: String::new(),
            tool: String::new(),
            args: BlobId::of(b"{}"),
            path: None,
        };
        let event = Event::root(
            Timestamp(1),
            EventKind::ToolCallsProposed {
                response_seq: 0,
                calls: vec![call; 1_500],
            },
        );
        let bytes = event.to_canonical_bytes();
        assert!(check_size(&bytes).is_ok(), "{} bytes", bytes.len());
        assert_eq!(decode_event(&bytes).unwrap(), event);
    }

    /// The daemon carries bodies up to 256 MiB: a 20 MiB byte string decodes, and a claim
    /// far past a large input is still refused.
    #[test]
    fn decode_bounded_takes_large_inputs_and_refuses_claims_past_them() {
        let big = vec![7u8; 20 << 20];
        let bytes = bincode::encode_to_vec(&big, bincode::config::standard()).unwrap();
        let (back, used): (Vec<u8>, usize) = decode_bounded(&bytes).unwrap();
        assert_eq!((back.len(), used), (big.len(), bytes.len()));
        // 20 MiB of input claiming a 1 TiB string
        let mut hostile = bincode::encode_to_vec(1u64 << 40, bincode::config::standard()).unwrap();
        hostile.resize(20 << 20, 0);
        assert!(matches!(
            decode_bounded::<Vec<u8>>(&hostile),
            Err(bincode::error::DecodeError::LimitExceeded)
        ));
    }

    #[test]
    fn decode_verified_names_both_ids() {
        let bytes = sample().to_canonical_bytes();
        let id = EventId::of_canonical(&bytes);
        assert_eq!(decode_verified(&id, &bytes).unwrap(), sample());
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = decode_verified(&id, &flipped).unwrap_err();
        assert!(matches!(err, VerifyError::HashMismatch { expected, .. } if expected == id));
    }
}

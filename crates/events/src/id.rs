//! Identifiers: [`EventId`] and [`BlobId`] (BLAKE3 digests) and [`RunId`] (a run's name).
//!
//! All three print as lowercase hex. Humans type short prefixes; [`resolve_prefix`] turns a
//! prefix into exactly one id or says why it cannot, and [`unique_prefix_len`] tells how
//! many hex digits keep a set of ids apart (like `git log --abbrev`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Hex digits shown by `short()` unless more are needed to stay unambiguous.
pub const SHORT_HEX_LEN: usize = 12;

/// What every id type offers: raw bytes and hex.
pub trait HexId: Copy + Ord + fmt::Display {
    /// Name used in messages ("event", "blob", "run").
    const NOUN: &'static str;
    /// Raw bytes of the id.
    fn bytes(&self) -> &[u8];
    /// Full lowercase hex.
    fn to_hex(&self) -> String {
        hex::encode(self.bytes())
    }
    /// Whether the hex form starts with `prefix` (case-insensitive).
    fn has_prefix(&self, prefix: &str) -> bool {
        let hex = self.to_hex();
        hex.len() >= prefix.len() && hex[..prefix.len()].eq_ignore_ascii_case(prefix)
    }
}

/// Why an id could not be parsed or a prefix not resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not made of hex digits (or empty): neither an id nor a prefix of one.
    #[error(
        "`{text}` is not a valid {noun} id or prefix: {noun} ids are hex digits (0-9, a-f), e.g. as `retrace runs` prints them"
    )]
    NotHex {
        /// What kind of id was expected.
        noun: &'static str,
        /// The offending text.
        text: String,
    },
    /// Hex, but the wrong length for a full id.
    #[error("`{text}` is not a valid {noun} id: expected {expected} hex digits")]
    Malformed {
        /// What kind of id was expected.
        noun: &'static str,
        /// The offending text.
        text: String,
        /// How many hex digits a full id has.
        expected: usize,
    },
    /// No id starts with the prefix.
    #[error("no {noun} id starts with `{prefix}`")]
    NotFound {
        /// What kind of id was looked for.
        noun: &'static str,
        /// The prefix given.
        prefix: String,
    },
    /// More than one id starts with the prefix.
    #[error("{noun} id prefix `{prefix}` is ambiguous: it matches {}; type more digits", .candidates.join(", "))]
    Ambiguous {
        /// What kind of id was looked for.
        noun: &'static str,
        /// The prefix given.
        prefix: String,
        /// Some of the matches, as unambiguous short forms.
        candidates: Vec<String>,
    },
}

/// Resolve a hex prefix against candidate ids: exactly one must match.
pub fn resolve_prefix<I: HexId>(
    prefix: &str,
    candidates: impl IntoIterator<Item = I>,
) -> Result<I, IdError> {
    if !is_hex(prefix) {
        return Err(IdError::NotHex {
            noun: I::NOUN,
            text: prefix.to_owned(),
        });
    }
    let mut matches: Vec<I> = candidates
        .into_iter()
        .filter(|id| id.has_prefix(prefix))
        .collect();
    matches.sort_unstable();
    matches.dedup();
    match matches.len() {
        0 => Err(IdError::NotFound {
            noun: I::NOUN,
            prefix: prefix.to_owned(),
        }),
        1 => Ok(matches[0]),
        _ => {
            let len = unique_prefix_len(&matches).max(prefix.len() + 1);
            Err(IdError::Ambiguous {
                noun: I::NOUN,
                prefix: prefix.to_owned(),
                candidates: matches
                    .iter()
                    .take(5)
                    .map(|id| id.to_hex()[..len.min(id.to_hex().len())].to_owned())
                    .collect(),
            })
        }
    }
}

/// Whether `text` is one or more hex digits.
fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Smallest number of hex digits (at least [`SHORT_HEX_LEN`], capped at the full length)
/// that tells every id in `ids` apart.
pub fn unique_prefix_len<I: HexId>(ids: &[I]) -> usize {
    let mut hexes: Vec<String> = ids.iter().map(HexId::to_hex).collect();
    hexes.sort_unstable();
    hexes.dedup();
    let full = hexes.first().map_or(SHORT_HEX_LEN, String::len);
    let longest_shared = hexes
        .windows(2)
        .map(|w| {
            w[0].bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap_or(0);
    (longest_shared + 1).max(SHORT_HEX_LEN).min(full)
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $noun:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// Wrap raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Full lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first [`SHORT_HEX_LEN`] hex digits, for display.
            pub fn short(&self) -> String {
                let mut hex = self.to_hex();
                hex.truncate(SHORT_HEX_LEN);
                hex
            }

            /// Parse from a byte slice of exactly [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }
        }

        impl HexId for $name {
            const NOUN: &'static str = $noun;
            fn bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if !is_hex(s) {
                    return Err(IdError::NotHex {
                        noun: $noun,
                        text: s.to_owned(),
                    });
                }
                let malformed = || IdError::Malformed {
                    noun: $noun,
                    text: s.to_owned(),
                    expected: $len * 2,
                };
                let bytes = hex::decode(s).map_err(|_| malformed())?;
                Self::from_slice(&bytes).ok_or_else(malformed)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// BLAKE3 of an event's canonical bytes; commits to the whole history before it.
    EventId,
    32,
    "event"
);
define_id!(
    /// BLAKE3 of a blob's bytes (so `b3sum FILE` gives the id of a file stored as a blob).
    BlobId,
    32,
    "blob"
);
define_id!(
    /// Name of a run: 128 bits chosen when the run is created (by the impure layer: a pure
    /// crate never invents one).
    RunId,
    16,
    "run"
);

impl BlobId {
    /// The blob ids `bytes` mention as 64 hex digits standing alone (how JSON payloads
    /// name other blobs: request records their messages, tool results their artifacts), in
    /// order. Text that merely looks like an id is among them: a caller checks the store.
    pub fn mentioned_in(bytes: &[u8]) -> Vec<Self> {
        let mut found = Vec::new();
        let mut run_start = None;
        for (i, b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
            if b.is_ascii_hexdigit() {
                run_start.get_or_insert(i);
                continue;
            }
            if let Some(start) = run_start.take()
                && i - start == 64
                && let Some(id) = std::str::from_utf8(&bytes[start..i])
                    .ok()
                    .and_then(|hex| hex.parse::<Self>().ok())
            {
                found.push(id);
            }
        }
        found
    }

    /// The id of `bytes` stored as a blob.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl RunId {
    /// The child run that the call `call_id`, requested at `seq` of run `parent`, starts
    /// (`agent.delegate`): the first 16 bytes of BLAKE3(`retrace child run` 0 parent, seq
    /// (8 bytes, little-endian), call id). Derived, never drawn, so however often the
    /// parent is resumed its call names one child; the seq tells apart two calls a model
    /// gave the same id.
    pub fn child(parent: &Self, seq: u64, call_id: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"retrace child run\0");
        h.update(&parent.0);
        h.update(&seq.to_le_bytes());
        h.update(call_id.as_bytes());
        let mut id = [0; Self::LEN];
        id.copy_from_slice(&h.finalize().as_bytes()[..Self::LEN]);
        Self(id)
    }
}

impl EventId {
    /// The id of an event whose canonical bytes are `bytes`.
    pub fn of_canonical(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(b: u8) -> RunId {
        let mut bytes = [0u8; 16];
        bytes[0] = b;
        RunId::from_bytes(bytes)
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let id = BlobId::of(b"hello");
        assert_eq!(id.to_string().parse::<BlobId>().unwrap(), id);
        assert!(matches!(
            "zz".parse::<BlobId>(),
            Err(IdError::NotHex { .. })
        ));
        assert!(matches!(
            "abcd".parse::<BlobId>(),
            Err(IdError::Malformed { expected: 64, .. })
        ));
    }

    #[test]
    fn blob_id_is_plain_blake3() {
        assert_eq!(
            BlobId::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn prefixes_resolve_or_explain() {
        let ids = [run(0xab), run(0xac), run(0x10)];
        assert_eq!(resolve_prefix("ab", ids).unwrap(), run(0xab));
        assert_eq!(resolve_prefix("AB", ids).unwrap(), run(0xab));
        assert!(matches!(
            resolve_prefix("a", ids),
            Err(IdError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve_prefix("ff", ids),
            Err(IdError::NotFound { .. })
        ));
        // not hex: said plainly, never "expected 0 hex digits"
        let msg = resolve_prefix("zzzz", ids).unwrap_err().to_string();
        assert_eq!(
            msg,
            "`zzzz` is not a valid run id or prefix: run ids are hex digits (0-9, a-f), e.g. as `retrace runs` prints them"
        );
        assert!(matches!(
            resolve_prefix("", ids),
            Err(IdError::NotHex { .. })
        ));
        let msg = resolve_prefix("a", ids).unwrap_err().to_string();
        assert!(msg.contains("ambiguous") && msg.contains("ab000"), "{msg}");
    }

    #[test]
    fn unique_prefix_len_grows_with_shared_prefixes() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        a[10] = 1;
        b[10] = 2;
        // ids share 21 hex digits, so 22 tell them apart
        assert_eq!(
            unique_prefix_len(&[RunId::from_bytes(a), RunId::from_bytes(b)]),
            22
        );
        assert_eq!(unique_prefix_len(&[run(1), run(2)]), SHORT_HEX_LEN);
        assert_eq!(unique_prefix_len::<RunId>(&[]), SHORT_HEX_LEN);
    }
}

//! Canonical JSON for payload blobs: object keys sorted, no insignificant whitespace.
//!
//! The same JSON value always yields the same bytes, and so the same [`BlobId`], whatever
//! order a provider or a user wrote its keys in, and whether or not some dependency enables
//! serde_json's `preserve_order`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::id::BlobId;

/// Canonical bytes of a JSON value.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(&sorted(value)).expect("serialising a serde_json::Value cannot fail")
}

/// Canonical bytes of any serialisable value (via its JSON form).
pub fn to_canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    Ok(canonical_json(&serde_json::to_value(value)?))
}

/// Parse JSON text and return its canonical bytes, or the parse error (with line and column).
pub fn canonicalize_json_text(text: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    Ok(canonical_json(&serde_json::from_slice::<Value>(text)?))
}

/// Whether `bytes` are already canonical JSON.
pub fn is_canonical_json(bytes: &[u8]) -> bool {
    canonicalize_json_text(bytes).is_ok_and(|c| c == bytes)
}

/// Blob id of a JSON value's canonical bytes.
pub fn json_blob_id(value: &Value) -> BlobId {
    BlobId::of(&canonical_json(value))
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut out = Map::with_capacity(entries.len());
            for (k, v) in entries {
                out.insert(k.clone(), sorted(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a =
            canonicalize_json_text(br#"{ "b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": null} }"#)
                .unwrap();
        let b = canonicalize_json_text(br#"{"a":{"c":null,"z":[1,{"x":3,"y":2}]},"b":1}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, br#"{"a":{"c":null,"z":[1,{"x":3,"y":2}]},"b":1}"#);
        assert!(is_canonical_json(&a));
        assert!(!is_canonical_json(br#"{"b":1,"a":2}"#));
        assert_eq!(
            json_blob_id(&json!({"b":1,"a":2})),
            BlobId::of(br#"{"a":2,"b":1}"#)
        );
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let err = canonicalize_json_text(b"{\n  \"a\": ,\n}").unwrap_err();
        assert_eq!((err.line(), err.column()), (2, 8));
    }
}

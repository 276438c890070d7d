//! Find in a run: every event whose kind, tool name, call id or payloads (reply text,
//! reasoning, arguments, tool results, notes, the task) contain a string, case-insensitively.
//! Runs on the background thread; each payload blob is read and matched once however many
//! events refer to it.

use std::collections::HashMap;

use retrace_events::{BlobId, EventKind, RunId};
use retrace_store::{MAX_RANGE, Store};
use serde_json::Value;

/// Most hits one search returns (the list says when there were more).
pub const MAX_HITS: usize = 1_000;

/// One event that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Its seq.
    pub seq: u64,
    /// Its kind's name.
    pub kind: &'static str,
    /// The match in its context, on one line.
    pub snippet: String,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    /// The string searched for.
    pub query: String,
    /// Matching events in seq order, at most [`MAX_HITS`].
    pub hits: Vec<Hit>,
    /// There were more than [`MAX_HITS`].
    pub truncated: bool,
}

impl Found {
    /// The first hit after `seq` (wrapping to the first), or before it (`forward` false,
    /// wrapping to the last): what `n` and `N` go to.
    pub fn next(&self, seq: u64, forward: bool) -> Option<u64> {
        let seqs = self.hits.iter().map(|h| h.seq);
        if forward {
            seqs.clone().find(|&s| s > seq).or(seqs.clone().next())
        } else {
            seqs.clone()
                .rev()
                .find(|&s| s < seq)
                .or(seqs.clone().next_back())
        }
    }
}

/// Search `run` for `query` (case-insensitive; an empty query finds nothing).
pub fn search(store: &dyn Store, run: &RunId, query: &str) -> Result<Found, retrace_store::Error> {
    let needle = query.to_lowercase();
    let mut found = Found {
        query: query.to_owned(),
        ..Found::default()
    };
    if needle.is_empty() {
        return Ok(found);
    }
    let len = store.require_run(run)?.len();
    // per blob: the snippet around its first match, if it has one
    let mut seen: HashMap<BlobId, Option<String>> = HashMap::new();
    let mut next = 0;
    while next < len {
        let end = (next + MAX_RANGE - 1).min(len - 1);
        for (_, event) in store.events(run, next..=end)? {
            let mut snippet = names(&event.kind)
                .into_iter()
                .find_map(|name| around(name, &needle));
            for blob in searched_blobs(&event.kind) {
                if snippet.is_some() {
                    break;
                }
                snippet.clone_from(seen.entry(blob).or_insert_with(|| {
                    let text = match store.blob(&blob) {
                        Ok(Some(bytes)) => haystack(&bytes),
                        _ => String::new(),
                    };
                    around(&text, &needle)
                }));
            }
            if let Some(snippet) = snippet {
                if found.hits.len() == MAX_HITS {
                    found.truncated = true;
                    return Ok(found);
                }
                found.hits.push(Hit {
                    seq: event.seq,
                    kind: event.kind.name(),
                    snippet,
                });
            }
        }
        next = end + 1;
    }
    Ok(found)
}

/// The blobs of an event a search reads: all but a model call's request record, which
/// holds references to the messages (searched where they were recorded), not their text.
fn searched_blobs(kind: &EventKind) -> Vec<BlobId> {
    match kind {
        EventKind::ModelRequested { .. } => Vec::new(),
        other => other.blobs(),
    }
}

/// The words of an event outside its blobs that a search looks at.
fn names(kind: &EventKind) -> Vec<&str> {
    match kind {
        EventKind::ToolRequested { call_id, tool, .. } => vec![tool, call_id],
        EventKind::ToolReturned { call_id, .. }
        | EventKind::ToolOutcomeUnknown { call_id, .. }
        | EventKind::ApprovalRequested { call_id, .. } => vec![call_id],
        EventKind::ApprovalDecided { call_id, by, .. } => vec![call_id, by],
        EventKind::SignalReceived { name, .. } => vec![name],
        EventKind::ToolCallsProposed { calls, .. } => calls
            .iter()
            .flat_map(|c| [c.tool.as_str(), c.call_id.as_str()])
            .collect(),
        _ => vec![],
    }
}

/// A payload's searchable text: every string and number of its JSON, one per line (so
/// escapes do not hide words), without its keys or content ids (64 hex digits: a blob's
/// or an event's), which are structure, not what the run said; or the bytes as text.
fn haystack(bytes: &[u8]) -> String {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::String(s) if is_id(s) => {}
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(fields) => fields.values().for_each(|v| walk(v, out)),
            other => {
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => {
            let mut out = String::new();
            walk(&value, &mut out);
            out
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Whether `s` is a content id: 64 hex digits.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Characters of context a snippet keeps on each side of the match.
const CONTEXT: usize = 40;

/// `text` around the first case-insensitive match of `needle` (already lower case), on
/// one line.
fn around(text: &str, needle: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let at = lower.find(needle)?;
    // lower-casing can change byte lengths: map back through char positions
    let char_at = lower[..at].chars().count();
    let chars: Vec<char> = text.chars().collect();
    let from = char_at.saturating_sub(CONTEXT);
    let to = (char_at + needle.chars().count() + CONTEXT).min(chars.len());
    let mut out: String = chars[from.min(chars.len())..to]
        .iter()
        .map(|&c| if c == '\n' { ' ' } else { c })
        .collect();
    if from > 0 {
        out.insert(0, '…');
    }
    if to < chars.len() {
        out.push('…');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_is_shown_in_its_context_whatever_its_case() {
        let text = format!("{}Needle in a haystack\nnext line", "x".repeat(60));
        let s = around(&text, "needle").expect("found");
        assert!(s.starts_with('…'));
        assert!(s.contains("Needle in a haystack next line"));
        assert_eq!(around("nothing here", "needle"), None);
        // JSON escapes do not hide words; keys and content ids are not searched
        let blob = br#"{"content":"line one\nthe \"quoted\" word"}"#;
        assert!(haystack(blob).contains("the \"quoted\" word"));
        assert!(!haystack(blob).contains("content"));
        let id = "ab".repeat(32);
        assert!(!haystack(format!(r#"{{"x":"{id}"}}"#).as_bytes()).contains("abab"));
    }

    #[test]
    fn n_and_shift_n_wrap_around_the_hits() {
        let hit = |seq| Hit {
            seq,
            kind: "tool_returned",
            snippet: String::new(),
        };
        let found = Found {
            query: "x".into(),
            hits: vec![hit(3), hit(8), hit(20)],
            truncated: false,
        };
        assert_eq!(found.next(0, true), Some(3));
        assert_eq!(found.next(8, true), Some(20));
        assert_eq!(found.next(20, true), Some(3));
        assert_eq!(found.next(8, false), Some(3));
        assert_eq!(found.next(2, false), Some(20));
        assert_eq!(Found::default().next(2, true), None);
    }
}

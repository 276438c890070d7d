//! What the model is shown of a tool output: whole, or a preview. Pure functions of the
//! output, its blob id and a limit, so a request rebuilt from the log is byte for byte the
//! one sent.
//!
//! Artifacts (runs with a `[context]` budget): a tool output whose [`text`] is longer than
//! the inline limit is shown as an artifact [`preview`] ending with a footer that names its
//! handle — the id of the blob the output was recorded as, which means the same after a
//! resume, in a fork and in a bundle — and how to page through it with the runtime's
//! `artifact.read` tool. Lines ([`lines`]): the text split at `\n` (a `\r` before it stays
//! part of the line), a line over [`LINE_BYTES`] cut into pieces; a trailing newline does
//! not start another, empty line, and an empty text has no lines. The footer speaks 1-based lines to the model ("lines 1-85") and gives the 0-based
//! offset to read on from. Runs recorded before `[context]` get [`legacy`].

use std::fmt::Write as _;

use retrace_events::{BlobId, canonical_json};
use serde_json::Value;

/// The name of the tool that pages through artifacts.
pub const TOOL: &str = "artifact.read";

/// Tool output longer than this reaches the model as a [`legacy`] preview in runs recorded
/// before `[context]` (the full output is the recorded blob).
pub const PREVIEW_BYTES: usize = 8 * 1024;

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Tool output for the model in runs recorded before `[context]`: whole (as compact JSON)
/// if at most [`PREVIEW_BYTES`], else its first [`PREVIEW_BYTES`] and a note naming the
/// stored blob.
pub fn legacy(output: &Value, blob: &BlobId) -> String {
    let text = output.to_string();
    if text.len() <= PREVIEW_BYTES {
        return text;
    }
    format!(
        "{}… [{} bytes in all; the full output is blob {}]",
        cut(&text, PREVIEW_BYTES),
        text.len(),
        blob.short()
    )
}

/// The text of a tool output as the model reads it and as artifact.read pages it: a JSON
/// string's text, anything else as compact JSON (serde_json::Value::to_string) with object
/// keys sorted — its canonical bytes, so the text is the same whether or not serde_json's
/// `preserve_order` is on, and a preview agrees with the blob `read` pages.
///
/// An object is laid out one field per line, `key: value` (keys sorted, values as compact
/// JSON), except that a string field holding line breaks is written as `key:` then its raw
/// lines: a file read (`{"content": "...", "path": ...}`) pages by the file's own lines, not
/// as one long line of escapes.
pub fn text(output: &Value) -> String {
    let compact =
        |v: &Value| String::from_utf8(canonical_json(v)).expect("serde_json writes UTF-8");
    match output {
        Value::String(s) => s.clone(),
        Value::Object(fields)
            if fields
                .values()
                .any(|v| v.as_str().is_some_and(|s| s.contains('\n'))) =>
        {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            let mut out = String::new();
            for key in keys {
                match &fields[key] {
                    Value::String(s) if s.contains('\n') => {
                        let _ = writeln!(out, "{key}:");
                        out.push_str(s);
                        if !s.ends_with('\n') {
                            out.push('\n');
                        }
                    }
                    other => {
                        let _ = writeln!(out, "{key}: {}", compact(other));
                    }
                }
            }
            out
        }
        other => compact(other),
    }
}

/// Longest line, in bytes: a longer one (minified JSON, a one-line API result) counts as
/// several lines of at most this many bytes, cut on character boundaries, so paging by line
/// reaches all of it.
pub const LINE_BYTES: usize = 1_000;

/// The lines of `text`: split at `\n`, with no empty last line after a trailing newline and
/// none at all in an empty text; a line longer than [`LINE_BYTES`] is cut into pieces of
/// at most that many bytes, each a line of its own.
pub fn lines(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for mut line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
        while line.len() > LINE_BYTES {
            let piece = match cut(line, LINE_BYTES) {
                // a first character longer than the limit cannot happen (4 bytes at most)
                "" => &line[..line.chars().next().map_or(0, char::len_utf8)],
                piece => piece,
            };
            out.push(piece);
            line = &line[piece.len()..];
        }
        out.push(line);
    }
    out
}

/// What the model is sent for a tool output stored as blob `blob`: `None` when
/// `text(output)` is at most `inline_bytes` bytes (sent whole), else a preview: the first
/// [`lines`] that fit in `inline_bytes / 2` bytes (only the start of the first when not
/// even it fits), a newline, and a one-line footer naming the
/// artifact's handle (the full 64-hex blob id), the text's size in bytes and lines, how much
/// the preview shows and how to read on, e.g.
/// `[artifact <id>: 71680 bytes, 1200 lines; shown: lines 1-85. Read more: artifact.read
/// {"handle":"<id>","offset":85}; search: artifact.read {"handle":"<id>","pattern":"..."}]`.
/// The `offset` given is that of the first line not shown whole.
pub fn preview(output: &Value, blob: &BlobId, inline_bytes: usize) -> Option<String> {
    let text = text(output);
    if text.len() <= inline_bytes {
        return None;
    }
    let budget = inline_bytes / 2;
    let all = lines(&text);
    // whole lines while they fit (with the newlines between them)
    let mut used = 0;
    let mut whole = 0;
    for line in &all {
        let add = line.len() + usize::from(whole > 0);
        if used + add > budget {
            break;
        }
        used += add;
        whole += 1;
    }
    let handle = blob.to_hex();
    let (shown, extent) = if whole == 0 {
        // a limit under one line: the start of the first
        let part = cut(all[0], budget).to_owned();
        let extent = format!("the first {} bytes of line 1", part.len());
        (part, extent)
    } else {
        (all[..whole].join("\n"), format!("lines 1-{whole}"))
    };
    let whole_lines = whole;
    let mut out = String::with_capacity(shown.len() + 400);
    out.push_str(&shown);
    if !shown.is_empty() {
        out.push('\n');
    }
    let count = all.len();
    let _ = write!(
        out,
        "[artifact {handle}: {} bytes, {count} line{}; shown: {extent}. Read more: {TOOL} \
         {{\"handle\":\"{handle}\",\"offset\":{whole_lines}}}; search: {TOOL} \
         {{\"handle\":\"{handle}\",\"pattern\":\"...\"}}]",
        text.len(),
        if count == 1 { "" } else { "s" },
    );
    Some(out)
}

//! Artifacts: a tool result too large to inline in the model's context (issue 20, item 4).
//!
//! Every tool result is already stored as a blob: its canonical JSON bytes, named by their
//! BLAKE3 [`BlobId`]. When the result's text ([`text`]) is larger than the spec's inline
//! limit, the model is not sent the whole of it but a [`preview`]: the first part of the
//! text and a one-line footer naming the artifact's *handle* — the blob's full id — with its
//! size and how to read on. The built-in read-only tool `artifact.read` ([`read`]) pages
//! through the same text by lines, or searches it with a regex, each answer small enough to
//! be inlined itself.
//!
//! Why the blob id is the handle: it is a pure function of the bytes, already recorded in
//! the log with the tool's outcome, so it means the same thing after a resume, in a fork
//! (which shares its origin's blobs), in a replay and in an exported bundle, and nothing new
//! has to be stored or numbered to make it. A preview is a pure function of the output, its
//! id and the limit, so a rebuilt request is byte-identical to the one sent.
//!
//! Lines: the text split at `\n` (a `\r` before it stays part of the line); a trailing
//! newline does not start another, empty line, and an empty text has no lines. Line numbers
//! (`offset`, match `line`) are 0-based; the preview footer speaks 1-based to the model
//! ("lines 1-85") and gives the 0-based offset to read on from.

use retrace_events::BlobId;

use regex::Regex;
#[cfg(test)]
use retrace_replay::preview::LINE_BYTES;
use retrace_replay::preview::{lines, text};
use retrace_store::Store;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::tools::{OnError, Tier, ToolError, ToolInfo, cut};

pub use retrace_replay::preview::{TOOL, preview};

/// Lines `artifact.read` returns when the model gives no `limit`.
const DEFAULT_LIMIT: usize = 200;
/// Most lines one `artifact.read` call returns (a larger `limit` is lowered to it).
const MAX_LIMIT: usize = 2_000;
/// Most matches one pattern search returns.
const MAX_MATCHES: usize = 100;
/// Bytes of a matching line shown whole; a longer one (e.g. a one-line JSON result) is shown
/// as a window of about this size around its first match.
const MATCH_WINDOW: usize = 300;
/// Bytes of a long matching line shown before its first match.
const MATCH_LEAD: usize = 100;

/// The artifact.read tool's declaration (tier Read, idempotent, on_error Continue, origin
/// "built-in"). Arguments: `handle` (64 hex digits, required), `offset` (0-based line,
/// default 0), `limit` (lines, 1 to 2000, default 200), `pattern` (a regex; only matching
/// lines are returned).
pub fn info() -> ToolInfo {
    ToolInfo {
        name: TOOL.into(),
        description: "Read a large tool result stored as an artifact, whose preview ended with an \
            `[artifact <handle>: ...]` footer: a page of its lines (offset, limit), or the lines \
            matching a regex (pattern) with their line numbers. Line numbers are 0-based. A page \
            that does not fit says `truncated` and gives `next_offset` to read on from; a line \
            longer than a page is shown in part (search it with a pattern)."
            .into(),
        schema: json!({
            "type": "object",
            "properties": {
                "handle": {
                    "type": "string",
                    "description": "the artifact's id: the 64 hex digits in the tool result's artifact footer"
                },
                "offset": {
                    "type": "integer", "minimum": 0, "default": 0,
                    "description": "first line to read or search from (0-based)"
                },
                "limit": {
                    "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT,
                    "description": "most lines to return (with a pattern: most matches, at most 100)"
                },
                "pattern": {
                    "type": "string",
                    "description": "a regex (Rust syntax; escape special characters to find literal text): return only the matching lines"
                }
            },
            "required": ["handle"],
            "additionalProperties": false
        }),
        tier: Tier::Read,
        idempotent: true,
        on_error: OnError::Continue,
        origin: "built-in".into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    handle: String,
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    pattern: Option<String>,
}

const fn default_limit() -> usize {
    DEFAULT_LIMIT
}

fn invalid(message: String) -> ToolError {
    ToolError::Invalid { message }
}

/// Run artifact.read over the artifacts in `store`.
///
/// `args`: `{"handle": "<64-hex blob id>", "offset": first line (0-based, default 0),
/// "limit": lines (default 200; above 2000 lowered to 2000), "pattern": optional regex}`.
/// The blob is a tool output's canonical JSON; its [`text`] is what is paged (a blob that is
/// not JSON is read as UTF-8 text).
///
/// Without a pattern: `{"handle", "lines_total", "offset", "lines": the lines joined with
/// "\n", "next_offset": the first line not returned (null at the end), "truncated": whether
/// `max_bytes` cut the page short}`. A single line too long for the page is shown in part
/// (cut on a char boundary), with `truncated` and `next_offset` after it.
///
/// With a pattern: `{"handle", "lines_total", "matches": [{"line": n (0-based), "text"}],
/// "truncated", "next_offset"}` for lines from `offset` on, at most `min(limit, 100)`
/// matches; a matching line longer than 300 bytes is shown as a window around its first
/// match, marked with `…` where cut. `truncated` says the search stopped early (match count
/// or `max_bytes`) and `next_offset` is the first line not searched.
///
/// The compact JSON of the result is at most `max_bytes` bytes, so that paging never makes
/// another artifact (`max_bytes` must leave room for the few hundred bytes of keys and the
/// handle).
///
/// Errors: [`ToolError::Invalid`] for malformed arguments, a handle that is not 64 hex
/// digits, a bad regex, a zero `limit` or an `offset` past the end (the message gives
/// `lines_total`); [`ToolError::Failed`] when the store has no such blob ("no artifact
/// <handle>: ...") or cannot be read, or the blob is not text.
pub fn read(store: &dyn Store, args: &Value, max_bytes: usize) -> Result<Value, ToolError> {
    let args: ReadArgs =
        serde_json::from_value(args.clone()).map_err(|e| invalid(e.to_string()))?;
    if args.handle.len() != BlobId::LEN * 2 || !args.handle.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "handle `{}` is not an artifact handle: handles are the 64 hex digits in a tool result's artifact footer",
            args.handle
        )));
    }
    let id: BlobId = args
        .handle
        .parse()
        .map_err(|e: retrace_events::IdError| invalid(e.to_string()))?;
    let handle = id.to_hex();
    if args.limit == 0 {
        return Err(invalid("limit must be at least 1".into()));
    }
    let limit = args.limit.min(MAX_LIMIT);
    let regex = args
        .pattern
        .as_deref()
        .map(|p| Regex::new(p).map_err(|e| invalid(format!("bad regex `{p}`: {e}"))))
        .transpose()?;
    let bytes = store
        .blob(&id)
        .map_err(|e| ToolError::Failed {
            message: format!("cannot read artifact {handle}: {e}"),
        })?
        .ok_or_else(|| ToolError::Failed {
            message: format!(
                "no artifact {handle}: handles are the ids in a tool result's artifact footer"
            ),
        })?;
    let text = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => text(&value),
        Err(_) => String::from_utf8(bytes).map_err(|_| ToolError::Failed {
            message: format!("artifact {handle} is neither a tool result nor text"),
        })?,
    };
    let lines = lines(&text);
    let total = lines.len();
    if args.offset >= total && !(args.offset == 0 && total == 0) {
        let valid = match total {
            0 => "it is empty: read it with offset 0".to_owned(),
            1 => "the only offset is 0".to_owned(),
            n => format!("offsets are 0 to {}", n - 1),
        };
        return Err(invalid(format!(
            "offset {} is past the end: the artifact has {total} line{} ({valid})",
            args.offset,
            if total == 1 { "" } else { "s" },
        )));
    }
    Ok(match regex {
        None => page(&handle, &lines, args.offset, limit, max_bytes),
        Some(re) => search(
            &handle,
            &lines,
            args.offset,
            limit.min(MAX_MATCHES),
            &re,
            max_bytes,
        ),
    })
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\t' | '\n' | '\u{c}' | '\r' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `s` takes inside a JSON string (without the quotes).
fn escaped_len(s: &str) -> usize {
    s.chars().map(escaped_char_len).sum()
}

/// The longest prefix of `s` whose escaped length is at most `budget`.
fn cut_escaped(s: &str, budget: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += escaped_char_len(c);
        if used > budget {
            return &s[..i];
        }
    }
    s
}

/// The largest compact-JSON size of `make(next_offset)` over the values `next_offset` can
/// take (null or a line number at most `total`): the fixed part of a result.
fn envelope(total: usize, make: impl Fn(Option<usize>) -> Value) -> usize {
    make(None)
        .to_string()
        .len()
        .max(make(Some(total)).to_string().len())
}

fn page(handle: &str, lines: &[&str], offset: usize, limit: usize, max_bytes: usize) -> Value {
    let total = lines.len();
    let make = |text: &str, next: Option<usize>, truncated: bool| {
        json!({
            "handle": handle,
            "lines_total": total,
            "offset": offset,
            "lines": text,
            "next_offset": next,
            "truncated": truncated,
        })
    };
    // `false` is longer than `true`, so the envelope is an upper bound either way.
    let mut budget = max_bytes.saturating_sub(envelope(total, |next| make("", next, false)));
    let end = (offset + limit).min(total);
    let mut out = String::new();
    let mut next = offset;
    let mut truncated = false;
    while next < end {
        let line = lines[next];
        let separator = if next > offset { 2 } else { 0 }; // "\n" escaped
        let cost = separator + escaped_len(line);
        if cost <= budget {
            budget -= cost;
        } else {
            truncated = true;
            if next == offset {
                // Not even one whole line fits: show what does, and move past it.
                out.push_str(cut_escaped(line, budget));
                next += 1;
            }
            break;
        }
        if separator > 0 {
            out.push('\n');
        }
        out.push_str(line);
        next += 1;
    }
    make(&out, (next < total).then_some(next), truncated)
}

/// What a pattern search shows of matching line `line`: all of it, or a window around the
/// first match `at`, marked with `…` where cut.
fn match_text(line: &str, at: usize) -> String {
    if line.len() <= MATCH_WINDOW {
        return line.to_owned();
    }
    let start = cut(line, at.saturating_sub(MATCH_LEAD)).len();
    let window = cut(&line[start..], MATCH_WINDOW);
    let mut out = String::with_capacity(window.len() + 6);
    if start > 0 {
        out.push('…');
    }
    out.push_str(window);
    if start + window.len() < line.len() {
        out.push('…');
    }
    out
}

fn search(
    handle: &str,
    lines: &[&str],
    offset: usize,
    max_matches: usize,
    re: &Regex,
    max_bytes: usize,
) -> Value {
    let total = lines.len();
    let make = |matches: &[Value], next: Option<usize>, truncated: bool| {
        json!({
            "handle": handle,
            "lines_total": total,
            "matches": matches,
            "truncated": truncated,
            "next_offset": next,
        })
    };
    let mut budget = max_bytes.saturating_sub(envelope(total, |next| make(&[], next, false)));
    let mut matches = Vec::new();
    let mut stop = None;
    for (n, line) in lines.iter().enumerate().skip(offset) {
        let Some(found) = re.find(line) else { continue };
        if matches.len() == max_matches {
            stop = Some(n);
            break;
        }
        let shown = match_text(line, found.start());
        let entry = json!({"line": n, "text": shown});
        let cost = entry.to_string().len() + usize::from(!matches.is_empty()); // the comma
        if cost > budget {
            if matches.is_empty() {
                // Not even one match fits: show what does, and move past it.
                let room = budget.saturating_sub(json!({"line": n, "text": ""}).to_string().len());
                matches.push(json!({"line": n, "text": cut_escaped(&shown, room)}));
                stop = Some(n + 1);
            } else {
                stop = Some(n);
            }
            break;
        }
        budget -= cost;
        matches.push(entry);
    }
    let next = stop.filter(|&n| n < total);
    make(&matches, next, stop.is_some())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use retrace_events::canonical_json;
    use retrace_store_sled::SledStore;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path().join("store")).expect("store");
        (dir, store)
    }

    /// Store `output` as the executor does (canonical JSON) and return its handle.
    fn put(store: &SledStore, output: &Value) -> String {
        store
            .put_blob(&canonical_json(output))
            .expect("put")
            .to_hex()
    }

    /// The numbers in `range`, one a line (each newline-terminated), zero-padded to `width`.
    fn numbered(range: std::ops::Range<usize>, width: usize) -> String {
        range.fold(String::new(), |mut out, i| {
            let _ = writeln!(out, "{i:0>width$}");
            out
        })
    }

    /// 1,200 lines of varying length, no trailing newline.
    fn big_text() -> String {
        (0..1_200)
            .map(|i| format!("line {i}: {}", "x".repeat(i % 97)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn err_message(result: Result<Value, ToolError>) -> ToolError {
        result.expect_err("should fail")
    }

    #[test]
    fn text_is_a_strings_text_or_compact_json() {
        assert_eq!(text(&json!("a\nb")), "a\nb");
        assert_eq!(text(&json!({"a": [1, "x"]})), r#"{"a":[1,"x"]}"#);
        assert_eq!(text(&json!(null)), "null");
        let value = json!({"b": 1, "a": {"d": null, "c": "é\n"}});
        assert_eq!(text(&value), value.to_string());
        // a field with line breaks is laid out as its lines
        let read = json!({"path": "a.txt", "content": "one\ntwo", "total_lines": 2});
        assert_eq!(
            text(&read),
            "content:\none\ntwo\npath: \"a.txt\"\ntotal_lines: 2\n"
        );
    }

    #[test]
    fn info_declares_a_read_only_built_in() {
        let info = info();
        assert_eq!(info.name, TOOL);
        assert_eq!(info.tier, Tier::Read);
        assert!(info.idempotent);
        assert_eq!(info.on_error, OnError::Continue);
        assert_eq!(info.origin, "built-in");
        assert_eq!(info.schema["required"], json!(["handle"]));
    }

    #[test]
    fn preview_is_none_up_to_the_limit() {
        let id = BlobId::of(b"x");
        let output = json!("a".repeat(100));
        assert_eq!(preview(&output, &id, 100), None);
        assert_eq!(preview(&output, &id, 1_000), None);
        assert!(preview(&output, &id, 99).is_some());
        // A JSON value counts as its compact text: {"k":"aaaa"} is 12 bytes.
        assert_eq!(preview(&json!({"k": "aaaa"}), &id, 12), None);
        assert!(preview(&json!({"k": "aaaa"}), &id, 11).is_some());
    }

    #[test]
    fn preview_cuts_at_a_line_end_and_footer_numbers_are_exact() {
        // 1,200 lines of 59 bytes + newline = 72,000 bytes with the trailing newline.
        let text = numbered(0..1_200, 59);
        assert_eq!(text.len(), 72_000);
        let id = BlobId::of(text.as_bytes());
        let h = id.to_hex();
        let shown = preview(&json!(text), &id, 10_240).expect("a preview");
        // Half of 10,240 is 5,120 bytes: 85 whole lines of 60 (5,100 bytes).
        let expected_head = numbered(0..85, 59);
        let footer = format!(
            "[artifact {h}: 72000 bytes, 1200 lines; shown: lines 1-85. Read more: artifact.read \
             {{\"handle\":\"{h}\",\"offset\":85}}; search: artifact.read \
             {{\"handle\":\"{h}\",\"pattern\":\"...\"}}]"
        );
        assert_eq!(shown, format!("{expected_head}{footer}"));
        assert_eq!(h.len(), 64);
    }

    #[test]
    fn a_long_line_counts_as_pieces_of_at_most_line_bytes() {
        let id = BlobId::of(b"y");
        // A first short line, then one of 5,000 bytes: 5 pieces of 1,000.
        let output = json!(format!("ab\n{}", "z".repeat(5_000)));
        assert_eq!(lines(&text(&output)).len(), 6);
        let shown = preview(&output, &id, 2_400).expect("a preview");
        let (head, footer) = shown.split_once("\n[artifact ").expect("a footer");
        // 1,200 bytes of budget: "ab" and one piece (1,003 bytes with the newline)
        assert_eq!(head, format!("ab\n{}", "z".repeat(1_000)));
        assert!(
            footer.contains(": 5003 bytes, 6 lines; shown: lines 1-2."),
            "{footer}"
        );
        assert!(footer.contains("\"offset\":2}"), "{footer}");
        // One line of compact JSON (3,008 bytes): its first pieces, and the rest reachable.
        let output = json!({"k": "v".repeat(3_000)});
        let shown = preview(&output, &id, 3_000).expect("a preview");
        assert!(
            shown.contains("3008 bytes, 4 lines; shown: lines 1-1."),
            "{shown}"
        );
        assert!(shown.contains("\"offset\":1}"));
        // a budget under one piece: the start of the first
        let shown = preview(&output, &id, 1_000).expect("a preview");
        assert!(
            shown.contains("shown: the first 500 bytes of line 1."),
            "{shown}"
        );
    }

    #[test]
    fn preview_cuts_multibyte_text_on_a_char_boundary() {
        let id = BlobId::of(b"z");
        // 'é' is 2 bytes and '€' 3: 501 bytes into this text is inside a character.
        let output = json!("é€".repeat(1_000));
        let shown = preview(&output, &id, 1_003).expect("a preview");
        let (head, footer) = shown.split_once("\n[artifact ").expect("a footer");
        assert_eq!(head, "é€".repeat(100)); // 500 bytes: 501 would split a 'é'
        // 5,000 bytes in pieces of at most 1,000 cut on character boundaries
        assert!(
            footer.contains("5000 bytes, 5 lines; shown: the first 500 bytes of line 1."),
            "{footer}"
        );
        let text = text(&output);
        for piece in lines(&text) {
            assert!(piece.len() <= LINE_BYTES && text.contains(piece));
        }
        assert_eq!(lines(&text).concat(), text);
    }

    #[test]
    fn paging_through_1200_lines_reaches_the_end_exactly() {
        let (_dir, store) = store();
        let text = big_text();
        let handle = put(&store, &json!(text));
        let mut pages = Vec::new();
        let mut offset = Some(0);
        while let Some(at) = offset {
            let page = read(
                &store,
                &json!({"handle": handle, "offset": at, "limit": 250}),
                1 << 20,
            )
            .expect("page");
            assert_eq!(page["handle"], json!(handle));
            assert_eq!(page["lines_total"], json!(1_200));
            assert_eq!(page["offset"], json!(at));
            assert_eq!(page["truncated"], json!(false));
            pages.push(page["lines"].as_str().expect("lines").to_owned());
            offset = page["next_offset"]
                .as_u64()
                .map(|n| usize::try_from(n).unwrap());
            if let Some(next) = offset {
                assert_eq!(next, at + 250);
            }
        }
        assert_eq!(pages.len(), 5); // 250 * 4 + 200
        assert_eq!(pages.join("\n"), text);
        // The default limit is 200; the last page has exactly what is left.
        let page = read(&store, &json!({"handle": handle}), 1 << 20).expect("page");
        assert_eq!(page["next_offset"], json!(200));
        assert_eq!(page["lines"].as_str().unwrap().lines().count(), 200);
        let last =
            read(&store, &json!({"handle": handle, "offset": 1_199}), 1 << 20).expect("page");
        assert_eq!(last["lines"], json!(lines(&text)[1_199]));
        assert_eq!(last["next_offset"], Value::Null);
    }

    #[test]
    fn a_trailing_newline_is_no_extra_line_and_limit_is_capped() {
        let (_dir, store) = store();
        let text = numbered(0..3_000, 0);
        let handle = put(&store, &json!(text));
        let page = read(&store, &json!({"handle": handle, "limit": 5_000}), 1 << 20).expect("page");
        assert_eq!(page["lines_total"], json!(3_000));
        assert_eq!(page["next_offset"], json!(2_000));
        let page = read(
            &store,
            &json!({"handle": handle, "offset": 2_000, "limit": 2_000}),
            1 << 20,
        )
        .expect("page");
        assert_eq!(page["next_offset"], Value::Null);
        assert_eq!(
            format!("{}\n", page["lines"].as_str().unwrap()),
            text[text.find("2000\n").unwrap()..]
        );
    }

    #[test]
    fn a_json_result_is_paged_as_its_text() {
        let (_dir, store) = store();
        // one line of compact JSON
        let output = json!({"path": "a.txt", "lines": 2});
        let handle = put(&store, &output);
        let page = read(&store, &json!({"handle": handle}), 1 << 20).expect("page");
        assert_eq!(page["lines"], json!(text(&output)));
        assert_eq!(page["lines_total"], json!(1));
        // a file read: its content's own lines, then the other fields
        let output = json!({"path": "a.txt", "content": "x\ny"});
        let handle = put(&store, &output);
        let page = read(&store, &json!({"handle": handle}), 1 << 20).expect("page");
        assert_eq!(page["lines"], json!("content:\nx\ny\npath: \"a.txt\""));
        assert_eq!(page["lines_total"], json!(4));
    }

    #[test]
    fn max_bytes_cuts_a_page_and_says_where_to_go_on() {
        let (_dir, store) = store();
        let text = big_text();
        let handle = put(&store, &json!(text));
        for max_bytes in [1_000, 4_096, 10_000] {
            let mut offset = Some(0);
            let mut pages = Vec::new();
            while let Some(at) = offset {
                let page = read(
                    &store,
                    &json!({"handle": handle, "offset": at, "limit": 2_000}),
                    max_bytes,
                )
                .expect("page");
                assert!(
                    page.to_string().len() <= max_bytes,
                    "{}",
                    page.to_string().len()
                );
                offset = page["next_offset"]
                    .as_u64()
                    .map(|n| usize::try_from(n).unwrap());
                assert_eq!(page["truncated"], json!(offset.is_some()));
                pages.push(page["lines"].as_str().unwrap().to_owned());
            }
            assert_eq!(pages.join("\n"), text, "max_bytes {max_bytes}");
        }
        // Escapes count: quotes, backslashes and control characters take more than a byte.
        let nasty: String = (0..500)
            .map(|i| format!("\"q\\{i}\t\u{1}é\r"))
            .collect::<Vec<_>>()
            .join("\n");
        let handle = put(&store, &json!(nasty));
        let page = read(&store, &json!({"handle": handle}), 2_000).expect("page");
        let size = page.to_string().len();
        assert!(size <= 2_000 && size > 1_900, "{size}");
        assert_eq!(page["truncated"], json!(true));
        let shown = page["lines"].as_str().unwrap();
        assert_eq!(
            page["next_offset"],
            json!(shown.split('\n').count()),
            "next_offset is the first line not shown"
        );
        assert!(nasty.starts_with(shown));
    }

    #[test]
    fn a_one_line_result_is_paged_through_to_its_end() {
        let (_dir, store) = store();
        // 20,000 bytes on one line, then a short one: 20 pieces, then "short"
        let text = format!("{}\nshort", "é".repeat(10_000));
        let handle = put(&store, &json!(text));
        let mut offset = Some(0);
        let mut pieces = Vec::new();
        while let Some(at) = offset {
            let page = read(&store, &json!({"handle": handle, "offset": at}), 1_500).expect("page");
            assert!(page.to_string().len() <= 1_500);
            pieces.extend(
                page["lines"]
                    .as_str()
                    .unwrap()
                    .split('\n')
                    .map(str::to_owned),
            );
            offset = page["next_offset"].as_u64();
        }
        assert_eq!(pieces.len(), 21);
        assert_eq!(pieces.last().map(String::as_str), Some("short"));
        assert_eq!(pieces[..20].concat(), "é".repeat(10_000));
    }

    #[test]
    fn pattern_search_gives_line_numbers_and_stops_at_100_matches() {
        let (_dir, store) = store();
        let text = big_text();
        let handle = put(&store, &json!(text));
        // Lines 7, 17, ..., 1197: 120 matches.
        let found = read(
            &store,
            &json!({"handle": handle, "pattern": r"^line \d*7:"}),
            1 << 20,
        )
        .expect("search");
        let matches = found["matches"].as_array().unwrap();
        assert_eq!(matches.len(), 100);
        assert_eq!(matches[0]["line"], json!(7));
        assert_eq!(
            matches[0]["text"],
            json!(format!("line 7: {}", "x".repeat(7)))
        );
        assert_eq!(matches[99]["line"], json!(997));
        assert_eq!(found["truncated"], json!(true));
        assert_eq!(found["next_offset"], json!(1_007));
        assert_eq!(found["lines_total"], json!(1_200));
        // From there on, the rest.
        let rest = read(
            &store,
            &json!({"handle": handle, "pattern": r"^line \d*7:", "offset": 1_007}),
            1 << 20,
        )
        .expect("search");
        assert_eq!(rest["matches"].as_array().unwrap().len(), 20);
        assert_eq!(rest["truncated"], json!(false));
        assert_eq!(rest["next_offset"], Value::Null);
        // A smaller limit, and no match at all.
        let few = read(
            &store,
            &json!({"handle": handle, "pattern": "line 11", "limit": 3}),
            1 << 20,
        )
        .expect("search");
        let lines: Vec<_> = few["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["line"].as_u64().unwrap())
            .collect();
        assert_eq!(lines, [11, 110, 111]);
        let none = read(
            &store,
            &json!({"handle": handle, "pattern": "nope"}),
            1 << 20,
        )
        .expect("search");
        assert_eq!(none["matches"], json!([]));
        assert_eq!(none["truncated"], json!(false));
    }

    #[test]
    fn pattern_search_respects_max_bytes_and_windows_long_lines() {
        let (_dir, store) = store();
        let text = big_text();
        let handle = put(&store, &json!(text));
        let found = read(
            &store,
            &json!({"handle": handle, "pattern": "x{90}"}),
            1_500,
        )
        .expect("search");
        assert!(found.to_string().len() <= 1_500);
        assert_eq!(found["truncated"], json!(true));
        let matches = found["matches"].as_array().unwrap();
        assert!(!matches.is_empty() && matches.len() < 100);
        let last = matches.last().unwrap()["line"].as_u64().unwrap();
        let next = found["next_offset"].as_u64().unwrap();
        assert!(next > last);
        assert!(
            lines(&text)[usize::try_from(last).unwrap() + 1..usize::try_from(next).unwrap()]
                .iter()
                .all(|l| !l.contains(&"x".repeat(90)))
        );
        // A one-line JSON result: each piece is a line, so every match is found.
        let output =
            json!({"content": format!("{}NEEDLE{}NEEDLE", "a".repeat(5_000), "b".repeat(5_000))});
        let handle = put(&store, &output);
        let found = read(
            &store,
            &json!({"handle": handle, "pattern": "NEEDLE"}),
            8_192,
        )
        .expect("search");
        let matches = found["matches"].as_array().unwrap();
        assert_eq!(matches.len(), 2, "{found}");
        assert!(matches[0]["text"].as_str().unwrap().contains("aNEEDLEb"));
    }

    #[test]
    fn errors_say_what_to_do() {
        let (_dir, store) = store();
        let handle = put(&store, &json!(big_text()));
        let invalid = |message: &str| ToolError::Invalid {
            message: message.into(),
        };
        assert_eq!(
            err_message(read(&store, &json!({"handle": "abc"}), 4_096)),
            invalid(
                "handle `abc` is not an artifact handle: handles are the 64 hex digits in a tool result's artifact footer"
            )
        );
        let not_hex = "g".repeat(64);
        assert!(matches!(
            err_message(read(&store, &json!({"handle": not_hex}), 4_096)),
            ToolError::Invalid { message } if message.contains("is not an artifact handle")
        ));
        let missing = BlobId::of(b"never stored").to_hex();
        assert_eq!(
            err_message(read(&store, &json!({"handle": missing}), 4_096)),
            ToolError::Failed {
                message: format!(
                    "no artifact {missing}: handles are the ids in a tool result's artifact footer"
                )
            }
        );
        // Upper-case hex is the same handle.
        assert!(read(&store, &json!({"handle": handle.to_uppercase()}), 4_096).is_ok());
        let bad = err_message(read(
            &store,
            &json!({"handle": handle, "pattern": "(unclosed"}),
            4_096,
        ));
        assert!(
            matches!(&bad, ToolError::Invalid { message } if message.starts_with("bad regex `(unclosed`: ")),
            "{bad:?}"
        );
        assert_eq!(
            err_message(read(
                &store,
                &json!({"handle": handle, "offset": 1_200}),
                4_096
            )),
            invalid(
                "offset 1200 is past the end: the artifact has 1200 lines (offsets are 0 to 1199)"
            )
        );
        assert_eq!(
            err_message(read(&store, &json!({"handle": handle, "limit": 0}), 4_096)),
            invalid("limit must be at least 1")
        );
        assert!(matches!(
            err_message(read(&store, &json!({"handle": handle, "lines": 3}), 4_096)),
            ToolError::Invalid { message } if message.contains("unknown field `lines`")
        ));
        assert!(matches!(
            err_message(read(&store, &json!({}), 4_096)),
            ToolError::Invalid { message } if message.contains("missing field `handle`")
        ));
    }

    #[test]
    fn an_empty_artifact_has_no_lines() {
        let (_dir, store) = store();
        let handle = put(&store, &json!(""));
        let page = read(&store, &json!({"handle": handle}), 4_096).expect("page");
        assert_eq!(page["lines_total"], json!(0));
        assert_eq!(page["lines"], json!(""));
        assert_eq!(page["next_offset"], Value::Null);
        assert_eq!(
            err_message(read(&store, &json!({"handle": handle, "offset": 1}), 4_096)),
            ToolError::Invalid {
                message: "offset 1 is past the end: the artifact has 0 lines (it is empty: read it with offset 0)".into()
            }
        );
    }

    #[test]
    fn escaped_len_matches_serde_json() {
        let samples = [
            "plain",
            "\"q\" \\b",
            "\t\n\r\u{8}\u{c}",
            "\u{1}\u{1f}\u{7f}",
            "é€😀",
            "",
        ];
        for s in samples {
            assert_eq!(escaped_len(s), json!(s).to_string().len() - 2, "{s:?}");
        }
        for c in (0u32..0x250).filter_map(char::from_u32) {
            let s = c.to_string();
            assert_eq!(escaped_len(&s), json!(s).to_string().len() - 2, "{c:?}");
        }
    }
}

//! # retrace-fuzz
//!
//! Every decoder of bytes that come from outside the process, as a fuzz target: a function
//! that takes any bytes and must return without panicking, hanging or allocating without
//! bound — and, where a decoder has an encoder, must give back what it was given.
//!
//! The coverage-guided fuzzer (`fuzz/`, cargo-fuzz and libFuzzer) calls them one binary per
//! target; `tests/corpus.rs` runs each over its seed corpus (`fuzz/corpus/<target>/`) and
//! the inputs of past findings (`fuzz/regressions/<target>/`) on every `cargo test`.
//! [`TARGETS`] lists them; `docs/guide/hardening.md` says how to run them longer.

use std::path::Path;
use std::sync::Arc;

use retrace_events::chat::{ChatMessage, ModelRequest, ToolDef};
use retrace_events::{BlobId, EventId, RunId};
use retrace_store::{MemoryStore, Store};
use retrace_store_sled::layout::{self, Checkpoint, Loc, Pos, Record};

/// A fuzz target: a name (the `fuzz/fuzz_targets/<name>.rs` binary, the corpus directory)
/// and the function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("event_codec", event_codec),
    ("segment_records", segment_records),
    ("index_table", index_table),
    ("snapshot", snapshot),
    ("bundle", bundle),
    ("import", import),
    ("wire", wire),
    ("api_json", api_json),
    ("cassette", cassette),
    ("spec", spec),
    ("request_record", request_record),
    ("openai_sse", openai_sse),
    ("anthropic_sse", anthropic_sse),
    ("mcp_result", mcp_result),
];

/// Canonical event bytes (`retrace_events::decode_event`, `decode_verified`): what decodes
/// re-encodes to the same bytes.
pub fn event_codec(data: &[u8]) {
    if let Ok(event) = retrace_events::decode_event(data) {
        assert_eq!(
            retrace_events::encode_event(&event),
            data,
            "a decoded event encodes to other bytes"
        );
    }
    let _ = retrace_events::decode_verified(&EventId::of_canonical(data), data);
}

/// A segment file's bytes as the recovery scan reads them, and each record body it finds
/// (or the bytes themselves) as the store decodes records, chunks, blob values, run refs
/// and checkpoints.
pub fn segment_records(data: &[u8]) {
    let mut found = Vec::new();
    let end = retrace_store_sled::segments::scan(0, data, 0, &mut found);
    assert!(end <= data.len(), "the scan ended past its bytes");
    for record in &found {
        record_body(&record.body);
    }
    record_body(data);
}

fn record_body(body: &[u8]) {
    if let Some((record, offsets)) = Record::decode(body) {
        match record {
            Record::Blob { id, len, value } => {
                let _ = layout::decode_blob_value(&BlobId::from_bytes(id), len, value);
            }
            Record::Events { run, first, chunks } => {
                assert_eq!(offsets.len(), chunks.len(), "an offset per chunk");
                for chunk in chunks {
                    let _ = layout::chunk_len(chunk);
                    let _ = layout::decode_chunk(&RunId::from_bytes(run), first, chunk);
                }
            }
            Record::CreateRun { run, value } | Record::PutRun { run, value } => {
                let _ = layout::decode_run(&RunId::from_bytes(run), value);
            }
        }
    }
    let _ = Checkpoint::decode(body);
    let _ = Pos::decode(body);
    let _ = Loc::decode(body, String::new);
}

/// An index table file (`retrace_store_sled::tables`): opened, then looked up with keys
/// taken from its own bytes.
pub fn index_table(data: &[u8]) {
    use retrace_store_sled::tables::{Kind, Table};
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary directory");
    }
    DIR.with(|dir| {
        let path = retrace_store_sled::tables::table_path(dir.path(), 1);
        std::fs::write(&path, data).expect("write the table file");
        let Ok(table) = Table::open(dir.path(), 1) else {
            return;
        };
        let key = |n: usize, at: usize| {
            let mut k = vec![0u8; n];
            for (i, b) in k.iter_mut().enumerate() {
                *b = data.get(at + i).copied().unwrap_or(0);
            }
            k
        };
        let (blob, log) = (key(32, 24), key(24, 24));
        let _ = table.get(Kind::Blobs, &blob);
        let _ = table.get(Kind::Log, &log);
        let _ = table.last_at_or_below(Kind::Log, &log);
        let _ = table.range(Kind::Log, &key(24, 0), &log);
        let _ = table.all(Kind::Blobs);
        let _ = table.all(Kind::Log);
    });
}

/// A state snapshot (`retrace_replay::decode_snapshot`): the bytes as stored, and as the
/// body of a snapshot whose header and hash are right (so the fuzzer reaches the state's
/// decoder past the hash).
pub fn snapshot(data: &[u8]) {
    let at = EventId::from_bytes([7; 32]);
    let _ = retrace_replay::decode_snapshot(&at, 3, data);
    let mut framed = b"RTSNAP".to_vec();
    framed.extend_from_slice(&retrace_replay::REPLAY_VERSION.to_le_bytes());
    framed.extend_from_slice(at.as_bytes());
    framed.extend_from_slice(blake3::hash(data).as_bytes());
    framed.extend_from_slice(data);
    let _ = retrace_replay::decode_snapshot(&at, 3, &framed);
}

/// A run bundle (`retrace_eval::bundle::read`): the bytes as a file, and compressed as a
/// bundle is, so the fuzzer reaches the items inside.
pub fn bundle(data: &[u8]) {
    let _ = retrace_eval::bundle::read(data);
    let packed = zstd::encode_all(data, 1).expect("compress in memory");
    let _ = retrace_eval::bundle::read(&packed[..]);
}

/// Another agent's recording (`retrace_import::parse`): the first byte picks the format,
/// the rest is split into sources at `0xff` bytes (Claude Code sessions come in several).
pub fn import(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let formats = retrace_import::Format::ALL;
    let format = formats[usize::from(pick) % formats.len()];
    let sources: Vec<retrace_import::Source> = rest
        .split(|&b| b == 0xff)
        .take(4)
        .enumerate()
        .map(|(i, bytes)| retrace_import::Source {
            name: format!("fuzz-{i}.jsonl"),
            bytes: bytes.to_vec(),
        })
        .collect();
    let _ = retrace_import::parse(format, &sources);
}

/// The daemon's store wire format (`retrace_serve::wire`, through
/// `retrace_events::decode_bounded`): a call as the daemon decodes it, a reply as a client
/// does.
pub fn wire(data: &[u8]) {
    use retrace_serve::wire::{Call, Reply, WireError};
    // as the daemon's store route and the client decode them
    let _ = retrace_events::decode_bounded::<Call>(data);
    let _ = retrace_events::decode_bounded::<Result<Reply, WireError>>(data);
}

/// The JSON bodies of the daemon's API (`retrace_serve::api`), as the daemon reads
/// requests and a client reads answers.
pub fn api_json(data: &[u8]) {
    use retrace_serve::api;
    fn take<T: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) {
        if let Ok(value) = serde_json::from_slice::<T>(data) {
            let again = serde_json::to_vec(&value).expect("encode what decoded");
            assert!(
                serde_json::from_slice::<T>(&again).is_ok(),
                "a decoded body does not decode once encoded"
            );
        }
    }
    take::<api::Submit>(data);
    take::<api::Approve>(data);
    take::<api::Answer>(data);
    take::<api::Resolve>(data);
    take::<api::Signal>(data);
    take::<api::Cancel>(data);
    take::<api::Fork>(data);
    take::<api::RunView>(data);
    take::<api::EventView>(data);
    take::<api::ErrorBody>(data);
}

/// A request of step `step` whose last message is `last`, offering one tool.
fn request(step: u64, last: &str) -> ModelRequest {
    ModelRequest {
        model: "fuzz".into(),
        system: "You are fuzzed.".into(),
        messages: vec![Arc::new(ChatMessage::User {
            content: last.into(),
        })],
        tools: vec![ToolDef {
            name: "fs.read".into(),
            description: "Read a file.".into(),
            parameters: serde_json::json!({"type": "object"}),
        }],
        step,
        ..ModelRequest::default()
    }
}

/// A cassette (`retrace_providers::Cassette`), read and played for its first steps.
pub fn cassette(data: &[u8]) {
    let Ok(cassette) = serde_json::from_slice::<retrace_providers::Cassette>(data) else {
        return;
    };
    let scripted = retrace_providers::Scripted::new("fuzz", cassette);
    for step in 0..3 {
        let _ = scripted.reply(&request(step, "go on"));
    }
}

/// A run spec (`retrace_runtime::spec::Spec::parse`), TOML; the files it names are not
/// there.
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = retrace_runtime::spec::Spec::parse(Path::new("/nonexistent/fuzz/spec.toml"), text);
}

/// Request records (`retrace_replay::request`): the bytes cut at `0xff 0xfe` into up to 8
/// blobs of a store, each rebuilt as the request it records.
pub fn request_record(data: &[u8]) {
    use retrace_replay::request;
    let store = MemoryStore::new();
    let mut blobs = Vec::new();
    let mut rest = data;
    while blobs.len() < 8 {
        let cut = rest.windows(2).position(|w| w == [0xff, 0xfe]);
        let (blob, next) = match cut {
            Some(at) => (&rest[..at], &rest[at + 2..]),
            None => (rest, &[][..]),
        };
        blobs.push(store.put_blob(blob).expect("a memory store takes any blob"));
        if cut.is_none() {
            break;
        }
        rest = next;
    }
    for blob in &blobs {
        let _ = request::rebuild_record(&store, blob, |refs, artifacts| {
            refs.iter()
                .map(|r| request::message(&store, r, artifacts).map(Arc::new))
                .collect()
        });
    }
}

/// The first byte: whether the body is whole JSON (low bit); the next two: where the
/// network cuts the body; the rest: the body.
fn reply_input(data: &[u8]) -> Option<(bool, Vec<usize>, &[u8])> {
    let (&flags, rest) = data.split_first()?;
    let (cuts, body) = rest.split_at_checked(2)?;
    let cuts = cuts.iter().map(|&c| usize::from(c) * 3).collect();
    Some((flags & 1 == 1, cuts, body))
}

/// An OpenAI Chat Completions reply body (`retrace_providers::openai::decode_reply`):
/// server-sent events cut anywhere, or a whole JSON reply.
pub fn openai_sse(data: &[u8]) {
    if let Some((json, cuts, body)) = reply_input(data) {
        let _ = retrace_providers::openai::decode_reply(&request(0, "hi"), body, json, &cuts);
    }
}

/// An Anthropic Messages reply body (`retrace_providers::anthropic::decode_reply`).
pub fn anthropic_sse(data: &[u8]) {
    if let Some((json, cuts, body)) = reply_input(data) {
        let _ = retrace_providers::anthropic::decode_reply(&request(0, "hi"), body, json, &cuts);
    }
}

/// An MCP `tools/call` result (`retrace_runtime::tools::mcp::decode_call_result`).
pub fn mcp_result(data: &[u8]) {
    let _ = retrace_runtime::tools::mcp::decode_call_result(data);
}

//! Encoding guard for `retrace-events`: golden fixtures pin the bytes and id of one event per
//! kind (invariant 6), and property tests check the codec over random events.
//!
//! If a golden test fails, the canonical encoding changed. That is only allowed with a new
//! `FORMAT_VERSION` (old stores would otherwise be misread). After bumping it on purpose,
//! rewrite the fixtures with `RETRACE_BLESS=1 cargo test -p retrace-events --test events`.

use std::path::PathBuf;

use proptest::prelude::*;
use retrace_events::{
    BlobId, Decision, Event, EventId, EventKind, FORMAT_VERSION, HookStage, Outcome, ProposedCall,
    RunId, Timestamp, Usage, decode_event,
};
use serde_json::{Value, json};

fn blob(text: &str) -> BlobId {
    BlobId::of(text.as_bytes())
}

/// One fixed, fully populated event per kind (index = encoding tag).
#[allow(clippy::too_many_lines, reason = "one golden event per kind")]
fn golden_events() -> Vec<Event> {
    let run = RunId::from_bytes(*b"retrace-golden-1");
    let parent = Some(EventId::from_bytes([0x42; 32]));
    let kinds = vec![
        EventKind::RunStarted {
            run,
            spec: blob(r#"{"model":"scripted","name":"golden"}"#),
            input: blob(r#""summarise README.md""#),
        },
        EventKind::ModelRequested {
            request: blob(r#"{"messages":[]}"#),
            attempt: 2,
        },
        EventKind::ModelResponded {
            request_seq: 1,
            response: blob(r#"{"text":"hi"}"#),
            usage: Usage {
                input_tokens: 1_234,
                output_tokens: 56,
                cost_micro_usd: 789,
                latency_ms: 1_500,
            },
        },
        EventKind::ModelFailed {
            request_seq: 1,
            error: blob(r#"{"status":429}"#),
            transient: true,
        },
        EventKind::ToolRequested {
            call_id: "call_1".into(),
            tool: "fs.read".into(),
            args: blob(r#"{"path":"README.md"}"#),
            idempotent: true,
        },
        EventKind::ToolReturned {
            call_id: "call_1".into(),
            output: blob("# retrace"),
            is_error: false,
            duration_ms: 12,
        },
        EventKind::ToolOutcomeUnknown {
            call_id: "call_2".into(),
            reason: blob(r#"{"crash":"process restarted while the tool ran"}"#),
        },
        EventKind::ApprovalRequested {
            call_id: "call_3".into(),
            request: blob(r#"{"rule":"write ask","tool":"fs.write"}"#),
        },
        EventKind::ApprovalDecided {
            call_id: "call_3".into(),
            decision: Decision::Denied,
            by: "alice".into(),
            note: Some(blob("not in prod")),
        },
        EventKind::SignalReceived {
            name: "user_message".into(),
            payload: blob(r#""also update CHANGELOG""#),
        },
        EventKind::Forked {
            from_run: run,
            from_seq: 7,
            from_event: EventId::from_bytes([0x07; 32]),
            note: Some(blob(r#"{"edited":"model_responded"}"#)),
        },
        EventKind::RunFinished {
            outcome: Outcome::Succeeded,
            detail: blob(r#""done""#),
        },
        EventKind::ToolCallsProposed {
            response_seq: 2,
            calls: vec![
                ProposedCall {
                    call_id: "call_1".into(),
                    tool: "fs.read".into(),
                    args: blob(r#"{"path":"README.md"}"#),
                    path: Some("README.md".into()),
                },
                ProposedCall {
                    call_id: "call_2".into(),
                    tool: "fs.list".into(),
                    args: blob("{}"),
                    path: None,
                },
            ],
        },
        EventKind::ContextCompacted {
            request_seq: Some(310),
            summary: Some(blob(r#""Summary of 40 earlier messages: read README.md""#)),
            response: Some(blob(r#"{"text":"read README.md","tool_calls":[]}"#)),
            evicted: 40,
            usage: Usage {
                input_tokens: 20_480,
                output_tokens: 512,
                cost_micro_usd: 66_560,
                latency_ms: 2_100,
            },
        },
        EventKind::ChildStarted {
            call_id: "call_4".into(),
            child: RunId::child(&run, 313, "call_4"),
            agent: "reader".into(),
        },
        EventKind::ChildFinished {
            call_id: "call_4".into(),
            child: RunId::child(&run, 313, "call_4"),
            head: EventId::from_bytes([0x24; 32]),
            outcome: Outcome::Succeeded,
            usage: Usage {
                input_tokens: 3_100,
                output_tokens: 240,
                cost_micro_usd: 12_345,
                latency_ms: 4_200,
            },
        },
        EventKind::HookDecided {
            call_id: "call_5".into(),
            hook: "writes-in-out".into(),
            stage: HookStage::BeforeTool,
            decision: blob(r#"{"decision":"deny","reason":"writes go under out/"}"#),
        },
        EventKind::ModelRouted {
            model: "backup".into(),
            rule: None,
            reason: "fallback: main failed 3 times in a row (transient)".into(),
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            parent,
            seq: 300 + i as u64,
            at: Timestamp(1_767_225_600_000 + i as u64),
            kind,
        })
        .collect()
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.golden"))
}

fn render_fixture(event: &Event) -> String {
    format!(
        "# canonical encoding of one `{}` event, format version {FORMAT_VERSION}\n\
         # changing these bytes needs a new FORMAT_VERSION (see tests/events.rs)\n\
         id: {}\nbytes: {}\n",
        event.kind.name(),
        event.id(),
        hex(&event.to_canonical_bytes()),
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("fixture has no `{key}` line"))
        .trim()
}

#[test]
fn golden_fixture_pins_bytes_and_id_of_every_event_kind() {
    let bless = std::env::var_os("RETRACE_BLESS").is_some();
    let events = golden_events();
    assert_eq!(
        events.len(),
        EventKind::NAMES.len(),
        "add a golden event for every new kind"
    );
    for (tag, event) in events.iter().enumerate() {
        assert_eq!(event.kind.tag(), tag);
        let name = event.kind.name();
        let path = fixture_path(name);
        if bless {
            std::fs::write(&path, render_fixture(event)).unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()));
        let want_bytes = field(&text, "bytes:");
        let want_id = field(&text, "id:");
        assert_eq!(
            hex(&event.to_canonical_bytes()),
            want_bytes,
            "canonical bytes of `{name}` changed: that needs a new FORMAT_VERSION"
        );
        assert_eq!(event.id().to_string(), want_id, "id of `{name}` changed");
        // and the pinned bytes still decode to the same event
        let bytes: Vec<u8> = (0..want_bytes.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&want_bytes[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(&decode_event(&bytes).unwrap(), event);
        assert_eq!(EventId::of_canonical(&bytes).to_string(), want_id);
    }
}

#[test]
fn kind_tag_is_the_encoded_variant_index() {
    for event in golden_events() {
        let body = bincode::encode_to_vec(&event.kind, bincode::config::standard()).unwrap();
        assert_eq!(
            usize::from(body[0]),
            event.kind.tag(),
            "{}",
            event.kind.name()
        );
    }
}

// ---------- property tests ----------

fn any_id32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn any_blob() -> impl Strategy<Value = BlobId> {
    any_id32().prop_map(BlobId::from_bytes)
}

#[allow(clippy::too_many_lines, reason = "one strategy per kind")]
fn any_kind() -> impl Strategy<Value = EventKind> {
    let run = any::<[u8; 16]>().prop_map(RunId::from_bytes);
    let text = "[a-z._0-9]{0,24}";
    prop_oneof![
        (run.clone(), any_blob(), any_blob())
            .prop_map(|(run, spec, input)| EventKind::RunStarted { run, spec, input }),
        (any_blob(), any::<u32>())
            .prop_map(|(request, attempt)| EventKind::ModelRequested { request, attempt }),
        (any::<u64>(), any_blob(), any::<[u64; 4]>()).prop_map(|(request_seq, response, u)| {
            EventKind::ModelResponded {
                request_seq,
                response,
                usage: Usage {
                    input_tokens: u[0],
                    output_tokens: u[1],
                    cost_micro_usd: u[2],
                    latency_ms: u[3],
                },
            }
        }),
        (any::<u64>(), any_blob(), any::<bool>()).prop_map(|(request_seq, error, transient)| {
            EventKind::ModelFailed {
                request_seq,
                error,
                transient,
            }
        }),
        (text, text, any_blob(), any::<bool>()).prop_map(|(call_id, tool, args, idempotent)| {
            EventKind::ToolRequested {
                call_id,
                tool,
                args,
                idempotent,
            }
        }),
        (text, any_blob(), any::<bool>(), any::<u64>()).prop_map(
            |(call_id, output, is_error, duration_ms)| EventKind::ToolReturned {
                call_id,
                output,
                is_error,
                duration_ms,
            }
        ),
        (text, any_blob())
            .prop_map(|(call_id, reason)| EventKind::ToolOutcomeUnknown { call_id, reason }),
        (text, any_blob())
            .prop_map(|(call_id, request)| EventKind::ApprovalRequested { call_id, request }),
        (text, any::<bool>(), text, proptest::option::of(any_blob())).prop_map(
            |(call_id, approved, by, note)| EventKind::ApprovalDecided {
                call_id,
                decision: if approved {
                    Decision::Approved
                } else {
                    Decision::Denied
                },
                by,
                note,
            }
        ),
        (text, any_blob()).prop_map(|(name, payload)| EventKind::SignalReceived { name, payload }),
        (
            run,
            any::<u64>(),
            any_id32(),
            proptest::option::of(any_blob())
        )
            .prop_map(|(from_run, from_seq, e, note)| EventKind::Forked {
                from_run,
                from_seq,
                from_event: EventId::from_bytes(e),
                note,
            }),
        (
            any::<u64>(),
            proptest::collection::vec((text, text, any_blob(), proptest::option::of(text)), 0..4)
        )
            .prop_map(|(response_seq, calls)| EventKind::ToolCallsProposed {
                response_seq,
                calls: calls
                    .into_iter()
                    .map(|(call_id, tool, args, path)| ProposedCall {
                        call_id,
                        tool,
                        args,
                        path
                    })
                    .collect(),
            }),
        (0..3u8, any_blob()).prop_map(|(o, detail)| EventKind::RunFinished {
            outcome: [Outcome::Succeeded, Outcome::Failed, Outcome::Cancelled][usize::from(o)],
            detail,
        }),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any_blob()),
            proptest::option::of(any_blob()),
            any::<u64>(),
            any::<[u64; 4]>()
        )
            .prop_map(|(request_seq, summary, response, evicted, u)| {
                EventKind::ContextCompacted {
                    request_seq,
                    summary,
                    response,
                    evicted,
                    usage: Usage {
                        input_tokens: u[0],
                        output_tokens: u[1],
                        cost_micro_usd: u[2],
                        latency_ms: u[3],
                    },
                }
            }),
        (text, any::<[u8; 16]>(), text).prop_map(|(call_id, child, agent)| {
            EventKind::ChildStarted {
                call_id,
                child: RunId::from_bytes(child),
                agent,
            }
        }),
        (
            text,
            any::<[u8; 16]>(),
            any_id32(),
            0..3u8,
            any::<[u64; 4]>()
        )
            .prop_map(|(call_id, child, head, o, u)| EventKind::ChildFinished {
                call_id,
                child: RunId::from_bytes(child),
                head: EventId::from_bytes(head),
                outcome: [Outcome::Succeeded, Outcome::Failed, Outcome::Cancelled][usize::from(o)],
                usage: Usage {
                    input_tokens: u[0],
                    output_tokens: u[1],
                    cost_micro_usd: u[2],
                    latency_ms: u[3],
                },
            }),
        (text, text, any::<bool>(), any_blob()).prop_map(|(call_id, hook, before, decision)| {
            EventKind::HookDecided {
                call_id,
                hook,
                stage: if before {
                    HookStage::BeforeTool
                } else {
                    HookStage::AfterTool
                },
                decision,
            }
        }),
        (text, proptest::option::of(any::<u32>()), text).prop_map(|(model, rule, reason)| {
            EventKind::ModelRouted {
                model,
                rule,
                reason,
            }
        }),
    ]
}

fn any_event() -> impl Strategy<Value = Event> {
    (
        proptest::option::of(any_id32()),
        any::<u64>(),
        any::<u64>(),
        any_kind(),
    )
        .prop_map(|(parent, seq, at, kind)| Event {
            parent: parent.map(EventId::from_bytes),
            seq,
            at: Timestamp(at),
            kind,
        })
}

/// Every event that differs from `e` in exactly one field: each leaf of its JSON form (the
/// kind tag aside) changed in turn, plus a change of kind. Panics if some leaf cannot be
/// changed into a valid event, so no field goes unchecked.
fn one_field_changes(e: &Event) -> Vec<Event> {
    let json = serde_json::to_value(e).expect("events serialise");
    let mut pointers = Vec::new();
    leaf_paths(&json, &mut Vec::new(), &mut pointers);
    let mut out: Vec<Event> = pointers
        .iter()
        .map(|pointer| {
            let leaf = json.pointer(pointer).expect("leaf exists");
            alternatives(leaf)
                .into_iter()
                .find_map(|alt| {
                    let mut changed = json.clone();
                    *changed.pointer_mut(pointer).expect("leaf exists") = alt;
                    serde_json::from_value::<Event>(changed).ok()
                })
                .unwrap_or_else(|| panic!("no valid change of {pointer} in {json}"))
        })
        .collect();
    let mut other_kind = e.clone();
    other_kind.kind = if matches!(e.kind, EventKind::SignalReceived { .. }) {
        EventKind::ModelRequested {
            request: BlobId::of(b""),
            attempt: 0,
        }
    } else {
        EventKind::SignalReceived {
            name: String::new(),
            payload: BlobId::of(b""),
        }
    };
    out.push(other_kind);
    out
}

/// JSON pointers of every leaf (the top-level kind tag aside).
fn leaf_paths(value: &Value, at: &mut Vec<String>, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| !(at.is_empty() && *key == "kind"))
            .map(|(k, v)| (k.clone(), v))
            .collect(),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => {
            out.push(at.iter().fold(String::new(), |mut pointer, key| {
                pointer.push('/');
                pointer.push_str(key);
                pointer
            }));
            return;
        }
    };
    for (key, child) in children {
        at.push(key);
        leaf_paths(child, at, out);
        at.pop();
    }
}

/// Other values to try for a leaf, most likely valid first.
fn alternatives(leaf: &Value) -> Vec<Value> {
    const ENUM_NAMES: [&str; 7] = [
        "approved",
        "denied",
        "succeeded",
        "failed",
        "cancelled",
        "before_tool",
        "after_tool",
    ];
    match leaf {
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::Number(n) => vec![json!(n.as_u64().expect("every number is a u64") ^ 1)],
        Value::Null => vec![json!("ab".repeat(32)), json!("some/path"), json!(7)],
        Value::Array(_) => {
            vec![json!([{"call_id": "c", "tool": "t", "args": "ab".repeat(32), "path": null}])]
        }
        Value::String(s) if s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let flipped = if s.ends_with('0') { '1' } else { '0' };
            vec![json!(format!("{}{flipped}", &s[..s.len() - 1]))]
        }
        Value::String(s) => ENUM_NAMES
            .iter()
            .filter(|n| *n != s)
            .map(|n| json!(n))
            .chain([json!(format!("{s}x"))])
            .collect(),
        other @ Value::Object(_) => panic!("unexpected leaf {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn encode_then_decode_is_identity(event in any_event()) {
        let bytes = event.to_canonical_bytes();
        prop_assert_eq!(bytes[0], FORMAT_VERSION);
        prop_assert_eq!(decode_event(&bytes).unwrap(), event);
    }

    #[test]
    fn equal_events_have_equal_ids(event in any_event()) {
        // rebuilt through JSON and back: an equal value, not the same allocation
        let copy: Event = serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
        prop_assert_eq!(&copy, &event);
        prop_assert_eq!(copy.id(), event.id());
        prop_assert_eq!(copy.to_canonical_bytes(), event.to_canonical_bytes());
    }

    #[test]
    fn changing_any_field_or_the_parent_changes_the_id(event in any_event()) {
        let id = event.id();
        for changed in one_field_changes(&event) {
            prop_assert_ne!(&changed, &event);
            prop_assert_ne!(changed.id(), id, "same id after changing {:?} into {:?}", event, changed);
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_event(&bytes);
        let mut versioned = vec![FORMAT_VERSION];
        versioned.extend_from_slice(&bytes);
        if let Ok(event) = decode_event(&versioned) {
            // whatever decodes is canonical: it re-encodes to the same bytes
            prop_assert_eq!(event.to_canonical_bytes(), versioned);
        }
    }
}

#[test]
fn a_claimed_length_past_the_input_is_refused_before_anything_is_allocated() {
    // a string claiming ~1.9e18 bytes (bincode varint 0xfd + u64): without a limit, bincode
    // allocates the claim first and the process aborts (found by fuzzing the store's run refs)
    let mut bytes = vec![0xfd];
    bytes.extend_from_slice(&0x1a2b_3c4d_5e6f_7a8b_u64.to_le_bytes());
    let err = retrace_events::decode_bounded::<String>(&bytes).unwrap_err();
    assert!(
        matches!(err, bincode::error::DecodeError::LimitExceeded),
        "{err}"
    );
    // what fits decodes, and says how much it took
    let ok = bincode::encode_to_vec("hello", bincode::config::standard()).unwrap();
    let (text, used) = retrace_events::decode_bounded::<String>(&ok).unwrap();
    assert_eq!((text.as_str(), used), ("hello", ok.len()));
}

//! Encoding guard for `retrace-events`: golden fixtures pin the bytes and id of one event per
//! kind (invariant 6), and property tests check the codec over random events.
//!
//! If a golden test fails, the canonical encoding changed. That is only allowed with a new
//! `FORMAT_VERSION` (old stores would otherwise be misread). After bumping it on purpose,
//! rewrite the fixtures with `RETRACE_BLESS=1 cargo test -p retrace-events --test events`.

use std::path::PathBuf;

use proptest::prelude::*;
use retrace_events::{
    BlobId, Decision, Event, EventId, EventKind, FORMAT_VERSION, Outcome, RunId, Timestamp, Usage,
    decode_event,
};

fn blob(text: &str) -> BlobId {
    BlobId::of(text.as_bytes())
}

/// One fixed, fully populated event per kind (index = encoding tag).
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        (0..3u8, any_blob()).prop_map(|(o, detail)| EventKind::RunFinished {
            outcome: [Outcome::Succeeded, Outcome::Failed, Outcome::Cancelled][usize::from(o)],
            detail,
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

/// Every event that differs from `e` in exactly one field.
fn one_field_changes(e: &Event) -> Vec<Event> {
    let mut out = Vec::new();
    let mut push = |f: &dyn Fn(&mut Event)| {
        let mut changed = e.clone();
        f(&mut changed);
        out.push(changed);
    };
    push(&|c| c.seq = c.seq.wrapping_add(1));
    push(&|c| c.at = Timestamp(c.at.0 ^ 1));
    push(&|c| {
        c.parent = match c.parent {
            None => Some(EventId::from_bytes([0; 32])),
            Some(p) => {
                let mut b = *p.as_bytes();
                b[31] ^= 1;
                Some(EventId::from_bytes(b))
            }
        }
    });
    fn flip(b: &BlobId) -> BlobId {
        let mut bytes = *b.as_bytes();
        bytes[0] ^= 0x80;
        BlobId::from_bytes(bytes)
    }
    fn flip_opt(b: &Option<BlobId>) -> Option<BlobId> {
        b.as_ref().map_or(Some(BlobId::of(b"")), |b| Some(flip(b)))
    }
    fn more(s: &str) -> String {
        format!("{s}x")
    }
    fn flip_run(r: &RunId) -> RunId {
        let mut b = *r.as_bytes();
        b[15] ^= 1;
        RunId::from_bytes(b)
    }
    // one closure per kind field
    type Edit = Box<dyn Fn(&mut EventKind)>;
    let edits: Vec<Edit> = match &e.kind {
        EventKind::RunStarted { .. } => vec![
            Box::new(move |k| {
                if let EventKind::RunStarted { run, .. } = k {
                    *run = flip_run(run)
                }
            }),
            Box::new(move |k| {
                if let EventKind::RunStarted { spec, .. } = k {
                    *spec = flip(spec)
                }
            }),
            Box::new(move |k| {
                if let EventKind::RunStarted { input, .. } = k {
                    *input = flip(input)
                }
            }),
        ],
        EventKind::ModelRequested { .. } => vec![
            Box::new(move |k| {
                if let EventKind::ModelRequested { request, .. } = k {
                    *request = flip(request)
                }
            }),
            Box::new(|k| {
                if let EventKind::ModelRequested { attempt, .. } = k {
                    *attempt ^= 1
                }
            }),
        ],
        EventKind::ModelResponded { .. } => vec![
            Box::new(|k| {
                if let EventKind::ModelResponded { request_seq, .. } = k {
                    *request_seq ^= 1
                }
            }),
            Box::new(move |k| {
                if let EventKind::ModelResponded { response, .. } = k {
                    *response = flip(response)
                }
            }),
            Box::new(|k| {
                if let EventKind::ModelResponded { usage, .. } = k {
                    usage.input_tokens ^= 1
                }
            }),
            Box::new(|k| {
                if let EventKind::ModelResponded { usage, .. } = k {
                    usage.output_tokens ^= 1
                }
            }),
            Box::new(|k| {
                if let EventKind::ModelResponded { usage, .. } = k {
                    usage.cost_micro_usd ^= 1
                }
            }),
            Box::new(|k| {
                if let EventKind::ModelResponded { usage, .. } = k {
                    usage.latency_ms ^= 1
                }
            }),
        ],
        EventKind::ModelFailed { .. } => vec![
            Box::new(|k| {
                if let EventKind::ModelFailed { request_seq, .. } = k {
                    *request_seq ^= 1
                }
            }),
            Box::new(move |k| {
                if let EventKind::ModelFailed { error, .. } = k {
                    *error = flip(error)
                }
            }),
            Box::new(|k| {
                if let EventKind::ModelFailed { transient, .. } = k {
                    *transient = !*transient
                }
            }),
        ],
        EventKind::ToolRequested { .. } => vec![
            Box::new(move |k| {
                if let EventKind::ToolRequested { call_id, .. } = k {
                    *call_id = more(call_id)
                }
            }),
            Box::new(move |k| {
                if let EventKind::ToolRequested { tool, .. } = k {
                    *tool = more(tool)
                }
            }),
            Box::new(move |k| {
                if let EventKind::ToolRequested { args, .. } = k {
                    *args = flip(args)
                }
            }),
            Box::new(|k| {
                if let EventKind::ToolRequested { idempotent, .. } = k {
                    *idempotent = !*idempotent
                }
            }),
        ],
        EventKind::ToolReturned { .. } => vec![
            Box::new(move |k| {
                if let EventKind::ToolReturned { call_id, .. } = k {
                    *call_id = more(call_id)
                }
            }),
            Box::new(move |k| {
                if let EventKind::ToolReturned { output, .. } = k {
                    *output = flip(output)
                }
            }),
            Box::new(|k| {
                if let EventKind::ToolReturned { is_error, .. } = k {
                    *is_error = !*is_error
                }
            }),
            Box::new(|k| {
                if let EventKind::ToolReturned { duration_ms, .. } = k {
                    *duration_ms ^= 1
                }
            }),
        ],
        EventKind::ToolOutcomeUnknown { .. } => vec![
            Box::new(move |k| {
                if let EventKind::ToolOutcomeUnknown { call_id, .. } = k {
                    *call_id = more(call_id)
                }
            }),
            Box::new(move |k| {
                if let EventKind::ToolOutcomeUnknown { reason, .. } = k {
                    *reason = flip(reason)
                }
            }),
        ],
        EventKind::ApprovalRequested { .. } => vec![
            Box::new(move |k| {
                if let EventKind::ApprovalRequested { call_id, .. } = k {
                    *call_id = more(call_id)
                }
            }),
            Box::new(move |k| {
                if let EventKind::ApprovalRequested { request, .. } = k {
                    *request = flip(request)
                }
            }),
        ],
        EventKind::ApprovalDecided { .. } => vec![
            Box::new(move |k| {
                if let EventKind::ApprovalDecided { call_id, .. } = k {
                    *call_id = more(call_id)
                }
            }),
            Box::new(|k| {
                if let EventKind::ApprovalDecided { decision, .. } = k {
                    *decision = match decision {
                        Decision::Approved => Decision::Denied,
                        Decision::Denied => Decision::Approved,
                    };
                }
            }),
            Box::new(move |k| {
                if let EventKind::ApprovalDecided { by, .. } = k {
                    *by = more(by)
                }
            }),
            Box::new(move |k| {
                if let EventKind::ApprovalDecided { note, .. } = k {
                    *note = flip_opt(note)
                }
            }),
        ],
        EventKind::SignalReceived { .. } => vec![
            Box::new(move |k| {
                if let EventKind::SignalReceived { name, .. } = k {
                    *name = more(name)
                }
            }),
            Box::new(move |k| {
                if let EventKind::SignalReceived { payload, .. } = k {
                    *payload = flip(payload)
                }
            }),
        ],
        EventKind::Forked { .. } => vec![
            Box::new(move |k| {
                if let EventKind::Forked { from_run, .. } = k {
                    *from_run = flip_run(from_run)
                }
            }),
            Box::new(|k| {
                if let EventKind::Forked { from_seq, .. } = k {
                    *from_seq ^= 1
                }
            }),
            Box::new(|k| {
                if let EventKind::Forked { from_event, .. } = k {
                    let mut b = *from_event.as_bytes();
                    b[3] ^= 1;
                    *from_event = EventId::from_bytes(b);
                }
            }),
            Box::new(move |k| {
                if let EventKind::Forked { note, .. } = k {
                    *note = flip_opt(note)
                }
            }),
        ],
        EventKind::RunFinished { .. } => vec![
            Box::new(|k| {
                if let EventKind::RunFinished { outcome, .. } = k {
                    *outcome = match outcome {
                        Outcome::Succeeded => Outcome::Failed,
                        Outcome::Failed => Outcome::Cancelled,
                        Outcome::Cancelled => Outcome::Succeeded,
                    };
                }
            }),
            Box::new(move |k| {
                if let EventKind::RunFinished { detail, .. } = k {
                    *detail = flip(detail)
                }
            }),
        ],
    };
    for edit in &edits {
        push(&|c| edit(&mut c.kind));
    }
    // a different kind altogether
    push(&|c| {
        c.kind = match c.kind {
            EventKind::SignalReceived { .. } => EventKind::ModelRequested {
                request: BlobId::of(b""),
                attempt: 0,
            },
            _ => EventKind::SignalReceived {
                name: String::new(),
                payload: BlobId::of(b""),
            },
        }
    });
    out
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

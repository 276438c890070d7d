//! Importers against damaged and foreign input, built from the real recordings in
//! `shared/cases/traces/`: a line of every position turned into a type nobody knows, a
//! truncated last line, an empty file, a broken line inside, each file read as every other
//! format. Never a panic: a counted skip or extra, or an error naming the file (and line)
//! before anything is written.

use std::path::Path;

use retrace_events::Timestamp;
use retrace_import::{Format, ImportError, Source};
use retrace_store::{MemoryStore, VerifyOptions, verify_run};
use serde_json::Value;

const FILES: [(Format, &str); 7] = [
    (Format::ClaudeCode, "claude-code/small-session.jsonl"),
    (Format::ClaudeCode, "claude-code/compact-and-errors.jsonl"),
    (Format::ClaudeCode, "claude-code/rejected-tool-use.jsonl"),
    (Format::Codex, "codex/rollout-0.125.jsonl"),
    (Format::OtelGenai, "otel-genai/OPENAI_trace.json"),
    (Format::OtelGenai, "otel-genai/LANGCHAIN_trace.json"),
    (
        Format::MiniSweAgent,
        "mini-swe-agent/django__django-16255.traj.json",
    ),
];

fn bytes(path: &str) -> Vec<u8> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/cases/traces")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn src(name: &str, bytes: Vec<u8>) -> Source {
    Source {
        name: name.to_owned(),
        bytes,
    }
}

/// Parse and, if that works, write to a fresh memory store and verify: the run must be
/// whole. The parse result is returned.
fn import(format: Format, source: &Source) -> Result<retrace_import::Report, ImportError> {
    let t = retrace_import::parse(format, std::slice::from_ref(source))?;
    let store = MemoryStore::new();
    let done = retrace_import::write(&store, &t, std::slice::from_ref(source), None, Timestamp(1))
        .unwrap_or_else(|e| panic!("{}: parsed but not written: {e}", source.name));
    let verified = verify_run(&store, &done.run, VerifyOptions { blobs: true }).expect("fixture");
    assert!(verified.problem.is_none(), "{}", source.name);
    Ok(done.report)
}

/// Lines of the unknown type `mystery_v9` the report says it kept.
fn mysteries(report: &retrace_import::Report) -> u64 {
    report
        .kept
        .iter()
        .filter(|(k, _)| k.contains("mystery_v9"))
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn every_recording_detects_as_its_format() {
    for (format, path) in FILES {
        assert_eq!(
            retrace_import::detect(&src(path, bytes(path))).expect("fixture"),
            format,
            "{path}"
        );
    }
}

#[test]
fn a_line_of_unknown_type_anywhere_is_kept_and_counted() {
    for (format, path) in FILES {
        let original = bytes(path);
        if !matches!(format, Format::ClaudeCode | Format::Codex) {
            continue;
        }
        let text = String::from_utf8(original).expect("fixture");
        let lines: Vec<&str> = text.lines().collect();
        // every line of the small files, every fourth of the long rollout
        let step = if lines.len() > 100 { 4 } else { 1 };
        for i in (0..lines.len()).step_by(step) {
            // line i retyped: what it held is no longer understood, the rest still is
            let mut retyped: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            let mut value: Value = serde_json::from_str(lines[i]).expect("fixture");
            value["type"] = Value::String("mystery_v9".into());
            retyped[i] = value.to_string();
            let name = format!("{path} (line {} retyped)", i + 1);
            match import(format, &src(&name, retyped.join("\n").into_bytes())) {
                Ok(report) => assert_eq!(mysteries(&report), 1, "{name}: {report:?}"),
                // only the one line that made it a recording of the format may be missing
                Err(e @ (ImportError::NotFormat { .. } | ImportError::Nothing { .. })) => {
                    assert!(e.to_string().contains(path), "{e}");
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        // and one inserted in the middle
        let mut inserted: Vec<&str> = lines.clone();
        let line = r#"{"type":"mystery_v9","timestamp":"2026-01-01T00:00:00.000Z","payload":{}}"#;
        inserted.insert(lines.len() / 2, line);
        let report = import(format, &src(path, inserted.join("\n").into_bytes())).expect("fixture");
        assert_eq!(mysteries(&report), 1, "{path}: {report:?}");
    }
}

#[test]
fn json_records_of_unknown_kind_are_kept_and_counted() {
    // every span (OTel) and every message (mini-swe-agent) in turn given a kind nobody knows
    for (format, path) in FILES {
        let (list, key, value): (&str, &str, &str) = match format {
            Format::OtelGenai => ("spans", "/attributes/gen_ai.operation.name", "mystery_op"),
            Format::MiniSweAgent => ("messages", "/role", "mystery_role"),
            _ => continue,
        };
        let doc: Value = serde_json::from_slice(&bytes(path)).expect("fixture");
        let n = doc[list].as_array().expect("fixture").len();
        for i in 0..n {
            let mut changed = doc.clone();
            *changed[list][i].pointer_mut(key).expect("fixture") = Value::String(value.into());
            let name = format!("{path} ({list}[{i}] retyped)");
            match import(format, &src(&name, changed.to_string().into_bytes())) {
                Ok(report) => assert!(
                    report.kept.keys().any(|k| k.contains(value)),
                    "{name}: {report:?}"
                ),
                Err(ImportError::Nothing { .. }) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }
}

#[test]
fn a_truncated_last_line_is_skipped_and_counted() {
    for (format, path) in FILES {
        if !matches!(format, Format::ClaudeCode | Format::Codex) {
            continue;
        }
        let text = String::from_utf8(bytes(path)).expect("fixture");
        let cut = text.trim_end().len() - 20;
        let report = import(format, &src(path, text.as_bytes()[..cut].to_vec())).expect("fixture");
        assert_eq!(
            report.skipped.get("truncated last line"),
            Some(&1),
            "{path}"
        );
        let whole = import(format, &src(path, text.clone().into_bytes())).expect("fixture");
        assert_eq!(report.lines, whole.lines, "{path}");
    }
    // a JSON document cut short is not a recording
    for (format, path) in FILES {
        if matches!(format, Format::ClaudeCode | Format::Codex) {
            continue;
        }
        let whole = bytes(path);
        let e =
            import(format, &src(path, whole[..whole.len() / 2].to_vec())).expect_err("an error");
        assert!(matches!(e, ImportError::NotFormat { .. }), "{path}: {e}");
        assert!(e.to_string().contains("not JSON"), "{e}");
    }
}

#[test]
fn a_broken_line_inside_names_file_and_line() {
    let text = String::from_utf8(bytes("codex/rollout-0.125.jsonl")).expect("fixture");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[9] = "{\"timestamp\": \"2026-05-11T08:27:17.490Z\", \"type\": ";
    let e = import(
        Format::Codex,
        &src("rollout.jsonl", lines.join("\n").into_bytes()),
    )
    .expect_err("an error");
    assert!(matches!(e, ImportError::Line { line: 10, .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("rollout.jsonl:10: not a JSON line"),
        "{e}"
    );
}

#[test]
fn an_empty_file_is_refused() {
    for (format, _) in FILES {
        for empty in [&b""[..], b"\n\n  \n"] {
            let e = import(format, &src("empty.jsonl", empty.to_vec())).expect_err("an error");
            assert_eq!(
                e.to_string(),
                "empty.jsonl is empty: there is nothing to import"
            );
        }
    }
    let e = retrace_import::detect(&src("empty.jsonl", Vec::new())).expect_err("an error");
    assert!(matches!(e, ImportError::Empty { .. }));
}

#[test]
fn every_file_read_as_another_format_is_refused() {
    for (actual, path) in FILES {
        for format in Format::ALL {
            if format == actual {
                continue;
            }
            let e = import(format, &src(path, bytes(path)))
                .expect_err(&format!("{path} read as {format}"));
            let message = e.to_string();
            assert!(message.contains(path), "{message}");
            assert!(
                message.contains(&format!("not a recording of format {format}"))
                    || message.contains("not a JSON line"),
                "{path} as {format}: {message}"
            );
        }
    }
    let e =
        retrace_import::detect(&src("notes.txt", b"hello world\n".to_vec())).expect_err("an error");
    assert_eq!(
        e.to_string(),
        "cannot tell the format of notes.txt: it starts \"hello world\\n\"; give the format instead of `auto` (claude-code, codex, otel-genai, mini-swe-agent)"
    );
}

#[test]
fn files_that_are_not_part_of_the_recording_are_refused() {
    // another Claude Code session is not a sub-agent of this one
    let main = src(FILES[0].1, bytes(FILES[0].1));
    let other = src(FILES[1].1, bytes(FILES[1].1));
    let e = retrace_import::parse(Format::ClaudeCode, &[main.clone(), other]).expect_err("refused");
    assert!(matches!(e, ImportError::Extra { .. }), "{e}");
    assert!(
        e.to_string().contains("import each session on its own"),
        "{e}"
    );
    // a sub-agent file of the session (side chain, same session id) is taken
    let session = "4c2ddfdc-b619-4525-8d03-1950fb1b0257";
    let side = format!(
        "{{\"type\":\"user\",\"isSidechain\":true,\"sessionId\":\"{session}\",\"uuid\":\"s1\",\"message\":{{\"role\":\"user\",\"content\":\"Warmup\"}}}}\n"
    );
    let t = retrace_import::parse(
        Format::ClaudeCode,
        &[main, src("agent-1.jsonl", side.into_bytes())],
    )
    .expect("a sub-agent file");
    assert_eq!(t.report.skipped.values().sum::<u64>(), 1);
    // other formats are one file
    let codex = src(FILES[3].1, bytes(FILES[3].1));
    let e = retrace_import::parse(Format::Codex, &[codex.clone(), codex]).expect_err("refused");
    assert!(
        e.to_string()
            .contains("a recording of this format is one file"),
        "{e}"
    );
}

#[test]
fn several_traces_in_one_file_are_refused() {
    let doc: Value = serde_json::from_slice(&bytes(FILES[4].1)).expect("fixture");
    let mut two = doc.clone();
    let mut other = doc["spans"][0].clone();
    other["context"]["trace_id"] = serde_json::json!(42);
    two["spans"].as_array_mut().expect("fixture").push(other);
    let e = import(
        Format::OtelGenai,
        &src("two.json", two.to_string().into_bytes()),
    )
    .expect_err("refused");
    assert!(e.to_string().contains("it holds 2 traces"), "{e}");
}

#[test]
fn numbers_and_times_past_what_a_recording_can_mean_are_bounded() {
    // tokens of 1e300 and a cost of "inf": cut to 2^53, summed without overflow
    let line = |id: &str, tokens: &str| {
        format!(
            "{{\"type\":\"assistant\",\"sessionId\":\"s\",\"uuid\":\"{id}\",\"timestamp\":\"2026-01-01T00:00:0{id}.000Z\",\"message\":{{\"id\":\"m{id}\",\"model\":\"x\",\"content\":[{{\"type\":\"text\",\"text\":\"hi\"}}],\"usage\":{{\"input_tokens\":{tokens},\"cache_read_input_tokens\":{tokens},\"output_tokens\":{tokens}}}}}}}"
        )
    };
    let text = format!(
        "{{\"type\":\"user\",\"sessionId\":\"s\",\"uuid\":\"u\",\"message\":{{\"role\":\"user\",\"content\":\"go\"}}}}\n{}\n{{\"type\":\"user\",\"sessionId\":\"s\",\"uuid\":\"u2\",\"message\":{{\"role\":\"user\",\"content\":\"again\"}}}}\n{}\n",
        line("1", "1e300"),
        line("2", "18446744073709551615")
    );
    let t = retrace_import::parse(
        Format::ClaudeCode,
        &[src("big.jsonl", text.clone().into_bytes())],
    )
    .expect("imports");
    let counts = t.counts();
    assert_eq!(counts.output_tokens, 2 * retrace_import::LARGEST);
    assert!(counts.input_tokens >= retrace_import::LARGEST);
    import(Format::ClaudeCode, &src("big.jsonl", text.into_bytes())).expect("writes and verifies");

    // mini-swe-agent `created` in milliseconds (year ~55,000), or past u64: no time
    let mut doc: Value = serde_json::from_slice(&bytes(FILES[6].1)).expect("fixture");
    doc["messages"][2]["extra"]["response"]["created"] = serde_json::json!(1_763_509_960_000_u64);
    doc["messages"][4]["extra"]["response"]["created"] = serde_json::json!(u64::MAX);
    let t = retrace_import::parse(
        Format::MiniSweAgent,
        &[src("ms.json", doc.to_string().into_bytes())],
    )
    .expect("imports");
    let times: Vec<Option<u64>> = t
        .entries
        .iter()
        .filter_map(|e| match &e.step {
            retrace_import::Step::Model(c) => Some(c.responded_at),
            _ => None,
        })
        .take(2)
        .collect();
    assert_eq!(times, [None, None]);
    import(
        Format::MiniSweAgent,
        &src("ms.json", doc.to_string().into_bytes()),
    )
    .expect("writes");
}

#[test]
fn an_interrupted_import_is_finished_by_the_next_one() {
    use retrace_store::{NewRun, Store};
    let source = src(FILES[3].1, bytes(FILES[3].1));
    let t = retrace_import::parse(Format::Codex, std::slice::from_ref(&source)).expect("parse");
    // the whole import, in one store
    let whole = MemoryStore::new();
    let done = retrace_import::write(
        &whole,
        &t,
        std::slice::from_ref(&source),
        None,
        Timestamp(1),
    )
    .expect("write");
    let events: Vec<retrace_events::Event> = whole
        .events(&done.run, 0..=u64::MAX)
        .expect("events")
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    // another store where it stopped after 100 events (a kill between appends)
    let cut = MemoryStore::new();
    cut.create_run(NewRun::new(done.run, Timestamp(1)))
        .expect("run");
    cut.append(&done.run, None, &events[..100]).expect("append");
    let again = retrace_import::write(&cut, &t, std::slice::from_ref(&source), None, Timestamp(2))
        .expect("resumes");
    assert!(again.created);
    assert_eq!(
        cut.run(&done.run).expect("run").expect("run").head,
        whole.run(&done.run).expect("run").expect("run").head
    );
    // a run of that id with other events is refused, not added to
    let other = MemoryStore::new();
    other
        .create_run(NewRun::new(done.run, Timestamp(1)))
        .expect("run");
    let mut odd = events[0].clone();
    odd.at = Timestamp(7);
    other.append(&done.run, None, &[odd]).expect("append");
    let e = retrace_import::write(
        &other,
        &t,
        std::slice::from_ref(&source),
        None,
        Timestamp(2),
    )
    .expect_err("refused");
    assert!(e.to_string().contains("exists with 1 other events"), "{e}");
}

#[test]
fn a_codex_command_end_without_its_output_line_is_kept() {
    let text = String::from_utf8(bytes(FILES[3].1)).expect("utf-8");
    let end = r#"{"timestamp":"2026-05-11T08:30:00.000Z","type":"event_msg","payload":{"type":"exec_command_end","call_id":"call_nowhere","stdout":"KEPT-ALL-THE-SAME","exit_code":3}}"#;
    let with = format!("{text}{end}\n");
    let t =
        retrace_import::parse(Format::Codex, &[src("c.jsonl", with.into_bytes())]).expect("parse");
    let kept = t
        .entries
        .iter()
        .flat_map(|e| &e.extra)
        .chain(&t.session)
        .any(|v| v.to_string().contains("KEPT-ALL-THE-SAME"));
    assert!(kept);
}

//! What the `retrace` binary says when something is wrong, and that it says it usefully: a
//! typo in a spec named at its line and column with a "did you mean", a store in use named
//! by its holder (pid and command), hints that work as printed (the WASM build commands, a
//! failing MCP server's own stderr), a reference that is not hex called that, and damage
//! `verify` cannot even decode reported for its run while the other runs still verify.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{command, example, retrace, run_agent, run_id_of, text};

/// A scripted agent in `dir` playing `replies`: the spec's path.
fn agent(dir: &Path, replies: &serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("cassette.json"),
        serde_json::json!({ "replies": replies }).to_string(),
    )
    .expect("write cassette");
    let spec = dir.join("agent.toml");
    std::fs::write(
        &spec,
        "name = \"quiet\"\nsystem = \"Answer.\"\n\n[model]\nprovider = \"scripted\"\n\
         name = \"demo\"\ncassette = \"cassette.json\"\n",
    )
    .expect("write spec");
    spec
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn a_typo_in_model_is_refused_at_its_line_and_column_with_a_did_you_mean() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let spec = dir.path().join("spec-with-typo.toml");
    std::fs::write(
        &spec,
        "name = \"typo\"\nsystem = \"Answer.\"\n\n[model]\nprovider = \"scripted\"\n\
         name = \"demo\"\ncassete = \"cassette.json\"\n",
    )
    .expect("write spec");
    let out = retrace(&store, &["run", arg(&spec), "--input", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains(&format!("{}:7:1: unknown key `cassete`", spec.display())),
        "{msg}"
    );
    assert!(msg.contains("did you mean `cassette`"), "{msg}");

    // an HTTP provider's misspelt key is refused before anything is sent anywhere
    std::fs::write(
        &spec,
        "name = \"typo\"\nsystem = \"Answer.\"\n\n[model]\nprovider = \"openai\"\n\
         name = \"gpt-4o-mini\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         api_key_evn = \"RETRACE_TEST_KEY\"\ntemperature = 0.2\n",
    )
    .expect("write spec");
    let out = retrace(&store, &["run", arg(&spec), "--input", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains(&format!("{}:8:1:", spec.display())), "{msg}");
    assert!(msg.contains("did you mean `api_key_env`"), "{msg}");
}

#[test]
fn a_store_in_use_names_the_process_holding_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    // a run whose model takes ten minutes to answer holds the store meanwhile
    let spec = agent(
        &dir.path().join("slow"),
        &serde_json::json!([{ "text": "late", "latency_ms": 600_000 }]),
    );
    let mut holder = command(&store)
        .args(["run", arg(&spec), "--input", "wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn retrace run");
    // it prints `run ID (quiet) started` once it holds the store
    let mut stdout = std::io::BufReader::new(holder.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.starts_with("run ") {
        line.clear();
        let read = stdout.read_line(&mut line).expect("read");
        assert!(read > 0, "retrace run ended before starting its run");
    }

    let out = retrace(&store, &["runs"]);
    let pid = holder.id();
    holder.kill().expect("kill the holder");
    holder.wait().expect("reap the holder");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("is in use by process"), "{msg}");
    assert!(
        msg.contains(&format!(
            "process {pid} (`{} --store {} run {} --input wait`)",
            env!("CARGO_BIN_EXE_retrace"),
            store.display(),
            spec.display()
        )),
        "{msg}"
    );
}

#[test]
fn a_reference_that_is_not_hex_is_called_that() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let spec = agent(
        &dir.path().join("quick"),
        &serde_json::json!([{ "text": "done" }]),
    );
    let out = retrace(&store, &["run", arg(&spec), "--input", "x"]);
    assert!(out.status.success(), "{}", text(&out));
    for args in [
        &["show", "zzzz"][..],
        &["show", "zzzz@3"],
        &["log", "zzzz"],
        &["approve", "zzzz"],
    ] {
        let out = retrace(&store, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let msg = text(&out);
        assert!(
            msg.contains("`zzzz` is not a valid run id or prefix: run ids are hex digits"),
            "{args:?}: {msg}"
        );
        assert!(!msg.contains("expected 0"), "{args:?}: {msg}");
    }
}

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("root")
}

#[test]
fn the_wasm_build_hint_is_a_command_that_works_from_the_project_root() {
    // the wasm example, its manifests pointing at components that are not there
    let dir = tempfile::tempdir().expect("temp dir");
    let example = root().join("examples/wasm");
    let copy = dir.path().join("wasm");
    for name in [
        "agent.toml",
        "cassette.json",
        "tools/count.toml",
        "tools/transform.toml",
    ] {
        std::fs::create_dir_all(copy.join(name).parent().expect("dir")).expect("mkdir");
        let text = std::fs::read_to_string(example.join(name)).expect("read");
        let text = text.replace("../../../target/wasm", "../../not-built");
        std::fs::write(copy.join(name), text).expect("write");
    }
    let out = retrace(
        &dir.path().join("store"),
        &["tools", arg(&copy.join("agent.toml"))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("`rustup target add wasm32-wasip2`"), "{msg}");
    let build = msg
        .split('`')
        .find(|s| s.starts_with("cargo build"))
        .unwrap_or_else(|| panic!("no build command in: {msg}"));
    assert_eq!(
        build,
        "cargo build --release --target wasm32-wasip2 --manifest-path wasm/Cargo.toml --target-dir target/wasm"
    );

    // run as printed, from the project root, it builds what the example's manifests name
    let mut words = build.split(' ');
    assert_eq!(words.next(), Some("cargo"));
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(words)
        .current_dir(root())
        .status()
        .expect("run cargo");
    assert!(status.success(), "`{build}` failed");
    let out = retrace(
        &dir.path().join("store"),
        &["tools", arg(&root().join("examples/wasm/agent.toml"))],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("text.count"), "{}", text(&out));
}

#[test]
fn a_failing_mcp_server_s_own_stderr_ends_the_error_and_no_secret_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = dir.path().join("agent.toml");
    std::fs::write(
        &spec,
        r#"name = "tooled"
system = "Use the tools."

[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"

[[mcp]]
name = "acme"
command = "sh"
args = ["-c", "echo \"acme-mcp: token is '$RETRACE_TEST_SECRET'\" >&2; echo 'Error: Cannot find module @acme/mcp-server' >&2; exit 1"]
"#,
    )
    .expect("write spec");
    // a server this quick may be gone before retrace writes to it: retrace must still say
    // what happened (a write to its stdin once raised SIGPIPE and ended retrace silently)
    for _ in 0..10 {
        let out = command(&dir.path().join("store"))
            .args(["tools", arg(&spec)])
            .env("RETRACE_TEST_SECRET", "hunter2-do-not-print")
            .output()
            .expect("run retrace");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let msg = text(&out);
        assert!(msg.contains("MCP server `acme`"), "{msg}");
        assert!(
            msg.contains("Error: Cannot find module @acme/mcp-server"),
            "{msg}"
        );
        // the server never sees retrace's environment, so it cannot repeat a secret of it
        assert!(msg.contains("acme-mcp: token is ''"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

/// The blobs the events of `run` refer to.
fn blobs_of(
    store: &retrace_store_sled::SledStore,
    run: &str,
) -> std::collections::BTreeSet<retrace_events::BlobId> {
    use retrace_store::Store;
    let run = store.resolve_run(run).expect("run");
    let len = store.require_run(&run).expect("run").len();
    store
        .stored_events(&run, 0..=len - 1)
        .expect("events")
        .iter()
        .flat_map(|e| {
            retrace_events::decode_event(&e.bytes)
                .expect("event")
                .kind
                .blobs()
        })
        .collect()
}

#[test]
fn verify_reports_an_undecodable_blob_for_its_run_and_still_verifies_the_others() {
    let dir = tempfile::tempdir().expect("fixture");
    let spec = example("tidy", dir.path());
    let store = dir.path().join("store");
    let runs: Vec<String> = ["Summarise this project", "Summarise this project, briefly"]
        .iter()
        .map(|input| {
            let out = run_agent(&store, &spec, input);
            assert!(out.status.success(), "{}", text(&out));
            run_id_of(&out)
        })
        .collect();
    // the largest compressed blob only the first run refers to (its model request)
    let victim = {
        let sled = retrace_store_sled::SledStore::open(&store).expect("open store");
        let others = blobs_of(&sled, &runs[1]);
        blobs_of(&sled, &runs[0])
            .into_iter()
            .filter(|b| !others.contains(b))
            .filter_map(|b| Some((b, sled.locate_blob(&b).ok()??)))
            .filter(|(_, loc)| loc.len <= loc.count) // stored compressed
            .max_by_key(|(_, loc)| loc.len)
            .expect("a compressed blob of the first run only")
            .0
    };
    retrace_tests::tamper::flip_blob_byte(&store, &victim, 20);

    let out = retrace(&store, &["verify"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let line = |run: &str| {
        printed
            .lines()
            .find(|l| l.contains(run))
            .unwrap_or_else(|| panic!("no line for run {run}: {printed}"))
            .to_owned()
    };
    let bad = line(&runs[0]);
    assert!(bad.starts_with("FAIL "), "{printed}");
    assert!(
        bad.contains("first mismatch: run ")
            && bad.contains(" seq ")
            && bad.contains("unreadable: blob")
            && bad.contains(&victim.to_string()),
        "{printed}"
    );
    assert!(bad.contains(".seg"), "names the segment file: {printed}");
    assert!(!bad.contains("run `retrace verify`"), "{printed}");
    assert!(line(&runs[1]).starts_with("ok   "), "{printed}");
    assert!(
        printed.contains("error: 1 of 2 runs failed verification"),
        "{printed}"
    );
}

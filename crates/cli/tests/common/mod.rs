//! Helpers shared by the tests that drive the `retrace` binary.

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Command, Output};

/// The `retrace` binary against `store`, with no store from the environment.
pub fn command(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retrace"));
    cmd.arg("--store").arg(store).env_remove("RETRACE_STORE");
    cmd
}

/// Run `retrace --store STORE ARGS…` to completion.
pub fn retrace(store: &Path, args: &[&str]) -> Output {
    command(store)
        .args(args)
        .output()
        .expect("run the retrace binary")
}

/// Everything the process printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run the `tidy` example (copied into `dir`) into `dir/store`; the store and the run id.
pub fn tidy_run(dir: &Path) -> (std::path::PathBuf, String) {
    example_run(dir, "tidy", "Summarise this project")
}

/// Run example `name` (copied into `dir`) with `input` into `dir/store`, to success or a
/// park; the store and the run id.
pub fn example_run(dir: &Path, name: &str, input: &str) -> (std::path::PathBuf, String) {
    let spec = example(name, dir);
    let store = dir.join("store");
    let out = run_agent(&store, &spec, input);
    assert!(out.status.success(), "{}", text(&out));
    (store, run_id_of(&out))
}

/// The run id `retrace run` printed (`run <id> …`).
pub fn run_id_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|rest| rest.split(' ').next())
        .expect("run prints the run id")
        .to_owned()
}

/// The new run id `retrace fork` printed.
pub fn fork_id_of(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .expect("fork prints the new run id")
        .to_owned()
}

/// The events of `run` (`retrace log RUN --json`), as JSON.
pub fn log_json(store: &Path, run: &str) -> Vec<serde_json::Value> {
    let out = retrace(store, &["log", run, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Copy an example agent into a temp dir, so runs write there, not into the repository.
pub fn example(name: &str, into: &Path) -> std::path::PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let to = into.join(name);
    for entry in walk(&from) {
        let target = to.join(entry.strip_prefix(&from).expect("inside"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&entry, &target).expect("copy");
    }
    to.join("agent.toml")
}

pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "out") {
                out.extend(walk(&path));
            }
        } else {
            out.push(path);
        }
    }
    out
}

/// `retrace run SPEC --input INPUT` against `store`.
pub fn run_agent(store: &Path, spec: &Path, input: &str) -> Output {
    retrace(
        store,
        &["run", spec.to_str().expect("utf-8"), "--input", input],
    )
}

/// `retrace ARGS` against `store`, which must succeed (else the test fails with its output).
pub fn ok(store: &Path, args: &[&str]) -> Output {
    let out = retrace(store, args);
    assert!(out.status.success(), "retrace {args:?}: {}", text(&out));
    out
}

/// The only run in `store`, as `retrace runs --json` reports it (`None` before it exists);
/// a second run fails the test (a restart must continue the run, not start another).
pub fn the_run(store: &Path) -> Option<serde_json::Value> {
    if !store.exists() {
        return None;
    }
    let out = ok(store, &["runs", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut runs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|r: &serde_json::Value| r["events"].as_u64() > Some(0))
        .collect();
    assert!(runs.len() <= 1, "a restart started a second run: {text}");
    runs.pop()
}

/// An event (as `retrace log --json` prints it) without what differs between two runs that
/// did the same things: ids and parents (they chain to different first events), times and
/// measured durations.
pub fn normalised(mut event: serde_json::Value) -> serde_json::Value {
    let map = event.as_object_mut().expect("an object");
    for key in ["id", "parent", "at", "duration_ms"] {
        map.remove(key);
    }
    if let Some(usage) = map
        .get_mut("usage")
        .and_then(serde_json::Value::as_object_mut)
    {
        usage.remove("latency_ms");
    }
    event
}

/// The line an appending agent's call `call-N` writes: `line NNNN` and a newline.
pub fn line(i: usize) -> String {
    format!("line {i:04}\n")
}

/// Settle an append in doubt as an operator would: if call `call-N`'s line ends `log`, the
/// call took effect and `result(N)` is recorded as its outcome (`resolve --skip-with`);
/// otherwise it is run again (`resolve --retry`). Returns which.
pub fn resolve_append(
    store: &Path,
    log: &Path,
    run: &str,
    call_id: &str,
    result: impl Fn(usize) -> serde_json::Value,
) -> &'static str {
    let i: usize = call_id
        .strip_prefix("call-")
        .and_then(|n| n.parse().ok())
        .expect("an append's call id");
    let written = std::fs::read_to_string(log).unwrap_or_default();
    if written.ends_with(&line(i)) {
        let file = log.with_file_name(format!("result-{i}.json"));
        std::fs::write(&file, result(i).to_string()).expect("write result");
        ok(
            store,
            &[
                "resolve",
                run,
                call_id,
                "--skip-with",
                file.to_str().expect("utf-8"),
            ],
        );
        std::fs::remove_file(file).expect("remove result");
        "skip"
    } else {
        ok(store, &["resolve", run, call_id, "--retry"]);
        "retry"
    }
}

/// `retrace import-run FORMAT FILE` into `store`, which must succeed; the run id it printed.
pub fn import_run(store: &Path, format: &str, file: &Path) -> String {
    let out = retrace(
        store,
        &["import-run", format, file.to_str().expect("a UTF-8 path")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    printed
        .split(" as run ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {printed}"))
        .to_owned()
}

/// The kill schedule's seed: `RETRACE_KILL_SEED`, else from the clock.
pub fn kill_seed() -> u64 {
    std::env::var("RETRACE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .subsec_nanos(),
            )
        })
}

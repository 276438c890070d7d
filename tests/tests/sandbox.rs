//! WASM tools in a real wasmtime: the repository's guests (`wasm/`, built for
//! wasm32-wasip2) run under every limit the host holds — fuel, wall time, memory, output,
//! preopens, no network, no environment — and an agent run records what they did.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use retrace_events::{BlobId, EventKind, Outcome};
use retrace_providers::Scripted;
use retrace_runtime::executor::{Runner, Stop};
use retrace_runtime::spec::Spec;
use retrace_sandbox::{Call, Error, Limit, Limits, Output, Preopen, Sandbox};
use retrace_store::{Store, VerifyOptions, verify_run};
use retrace_store_sled::SledStore;
use retrace_tests::wasm_tools;
use serde_json::{Value, json};

fn guest(name: &str) -> PathBuf {
    wasm_tools().join(format!("{name}.wasm"))
}

/// A workspace with a few files, and a directory outside it holding a secret.
struct Dirs {
    _tmp: tempfile::TempDir,
    ws: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ws = tmp.path().join("ws");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(ws.join("docs")).expect("mkdir");
    std::fs::create_dir_all(ws.join("out")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(ws.join("docs/a.md"), "one two three\nfour\n").expect("write");
    std::fs::write(ws.join("docs/b.md"), "five six\n").expect("write");
    std::fs::write(outside.join("secret.txt"), "top secret").expect("write");
    Dirs {
        _tmp: tmp,
        ws,
        outside,
    }
}

fn limits() -> Limits {
    Limits {
        fuel: Some(2_000_000_000),
        wall: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        output_bytes: 1 << 20,
    }
}

async fn run(
    sandbox: &Sandbox,
    name: &str,
    args: &Value,
    limits: Limits,
    preopens: &[Preopen],
) -> Result<Output, Error> {
    let module = sandbox.load(&guest(name)).expect("the guest loads");
    let stdin = serde_json::to_vec(args).expect("json");
    sandbox
        .run(
            &module,
            Call {
                stdin: &stdin,
                limits,
                preopens,
                env: &[],
            },
        )
        .await
}

fn json_out(out: &Output) -> Value {
    assert_eq!(out.exit_code, 0, "stderr: {}", out.stderr);
    serde_json::from_slice(&out.stdout).expect("the guest printed JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_tool_returns_its_result() {
    let d = dirs();
    let sandbox = Sandbox::new(None).expect("sandbox");
    let ro = [Preopen {
        host: d.ws.clone(),
        guest: "/data".into(),
        writable: false,
    }];
    let out = run(
        &sandbox,
        "wordcount",
        &json!({"path": "docs"}),
        limits(),
        &ro,
    )
    .await
    .expect("runs");
    let value = json_out(&out);
    assert_eq!(value["files"], 2);
    assert_eq!(value["lines"], 3);
    assert_eq!(value["words"], 6);
    assert_eq!(value["per_file"][0]["path"], "docs/a.md");
    assert!(out.fuel_used.expect("fuel is metered") > 0);

    let out = run(
        &sandbox,
        "jsonx",
        &json!({"input": {"items": [{"n": "a", "size": 3}, {"n": "b", "size": 9}, {"n": "c", "size": 5}]},
                "pointer": "/items", "sort_by": "size", "descending": true, "limit": 2, "fields": ["n"]}),
        limits(),
        &[],
    )
    .await
    .expect("runs");
    assert_eq!(json_out(&out), json!([{"n": "b"}, {"n": "c"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_by_fuel_and_by_the_wall_clock() {
    let sandbox = Sandbox::new(None).expect("sandbox");
    let looping = json!({"do": "loop"});
    let err = run(&sandbox, "misbehave", &looping, limits(), &[])
        .await
        .expect_err("stopped");
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: Limit::Fuel(2_000_000_000),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("fuel limit"), "{err}");

    // without fuel, the epoch deadline stops it, and the executor stays free meanwhile
    let wall = Limits {
        fuel: None,
        wall: Duration::from_millis(300),
        ..limits()
    };
    let ticks = tokio::spawn(async {
        let mut n = 0u32;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(250) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            n += 1;
        }
        n
    });
    let started = Instant::now();
    let err = run(&sandbox, "misbehave", &looping, wall, &[])
        .await
        .expect_err("stopped");
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: Limit::WallTime(300),
                ..
            }
        ),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    assert!(
        ticks.await.expect("ticker") > 10,
        "other tasks kept running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_refused() {
    let sandbox = Sandbox::new(None).expect("sandbox");
    let err = run(
        &sandbox,
        "misbehave",
        &json!({"do": "alloc", "mb": 1024}),
        limits(),
        &[],
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: Limit::Memory(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("memory limit of 64 MiB"), "{err}");
    // within the limit the same guest succeeds
    let out = run(
        &sandbox,
        "misbehave",
        &json!({"do": "alloc", "mb": 8}),
        limits(),
        &[],
    )
    .await
    .expect("runs");
    assert_eq!(json_out(&out)["allocated_mb"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem_is_only_the_preopens_and_read_only_means_read_only() {
    let d = dirs();
    let sandbox = Sandbox::new(None).expect("sandbox");
    let preopens = [
        Preopen {
            host: d.ws.join("docs"),
            guest: "/docs".into(),
            writable: false,
        },
        Preopen {
            host: d.ws.join("out"),
            guest: "/out".into(),
            writable: true,
        },
    ];
    let attempt = |args: Value| {
        let sandbox = &sandbox;
        let preopens = &preopens;
        async move { run(sandbox, "misbehave", &args, limits(), preopens).await }
    };
    let secret = d.outside.join("secret.txt").display().to_string();
    for path in [
        secret.as_str(),
        "/docs/../../outside/secret.txt",
        "/etc/passwd",
    ] {
        let out = attempt(json!({"do": "read", "path": path}))
            .await
            .expect("exits");
        assert_ne!(out.exit_code, 0, "read {path}: {}", out.stderr);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("top secret"));
    }
    let out = attempt(json!({"do": "read", "path": "/docs/a.md"}))
        .await
        .expect("exits");
    assert_eq!(json_out(&out)["read"], "one two three\nfour\n");

    let out = attempt(json!({"do": "write", "path": "/docs/planted.md"}))
        .await
        .expect("exits");
    assert_ne!(out.exit_code, 0, "wrote into a read-only preopen");
    assert!(!d.ws.join("docs/planted.md").exists());
    let out = attempt(json!({"do": "write", "path": "/out/made.txt"}))
        .await
        .expect("exits");
    assert_eq!(json_out(&out)["wrote"], "/out/made.txt");
    assert_eq!(
        std::fs::read_to_string(d.ws.join("out/made.txt")).expect("written"),
        "written by a guest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_the_environment_are_closed() {
    let sandbox = Sandbox::new(None).expect("sandbox");
    // a real listener on loopback: the guest must not reach it
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let out = run(
        &sandbox,
        "misbehave",
        &json!({"do": "connect", "addr": addr}),
        limits(),
        &[],
    )
    .await
    .expect("exits");
    assert_ne!(out.exit_code, 0, "connected: {:?}", out.stdout);
    assert!(out.stderr.contains("connect"), "{}", out.stderr);
    assert!(listener.accept().is_err(), "a connection reached the host");

    // SAFETY of the test: HOME is set for the host; the guest sees no environment
    let out = run(
        &sandbox,
        "misbehave",
        &json!({"do": "env", "name": "PATH"}),
        limits(),
        &[],
    )
    .await
    .expect("runs");
    assert_eq!(json_out(&out)["value"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_hard_ceiling_stops_the_tool() {
    let sandbox = Sandbox::new(None).expect("sandbox");
    let err = run(
        &sandbox,
        "misbehave",
        &json!({"do": "print", "bytes": 2 << 20}),
        limits(),
        &[],
    )
    .await
    .expect_err("stopped");
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: Limit::Output(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_module_that_is_not_a_component_is_refused_with_its_path() {
    let sandbox = Sandbox::new(None).expect("sandbox");
    let err = sandbox
        .load_bytes(Path::new("tools/junk.wasm"), b"\0asm junk")
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("tools/junk.wasm"), "{text}");
    assert!(text.contains("wasm32-wasip2"), "{text}");
    let missing = sandbox
        .load(Path::new("/nonexistent/tool.wasm"))
        .expect_err("refused");
    assert!(missing.to_string().contains("/nonexistent/tool.wasm"));
}

// --- through an agent run -------------------------------------------------------------

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// An agent with the three guests as tools and `cassette` as its model.
fn agent(d: &Dirs, cassette: &Value) -> PathBuf {
    let dir = d.ws.parent().expect("parent").to_path_buf();
    let manifest = |name: &str, tool: &str, extra: &str| {
        write(
            &dir.join(format!("tools/{tool}.toml")),
            &format!(
                "name = \"{tool}\"\ndescription = \"test\"\nmodule = \"{}\"\ntier = \"read\"\nidempotent = true\n{extra}",
                guest(name).display()
            ),
        );
    };
    manifest(
        "wordcount",
        "text.count",
        "[[preopen]]\ndir = \".\"\nguest = \"/data\"\n",
    );
    manifest(
        "misbehave",
        "test.misbehave",
        "[limits]\nfuel = 200_000_000\noutput_kb = 4\n",
    );
    write(
        &dir.join("agent.toml"),
        r#"
name = "wasm"
system = "You use WASM tools."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[tools]
wasm = ["tools/text.count.toml", "tools/test.misbehave.toml"]
"#,
    );
    write(&dir.join("cassette.json"), &cassette.to_string());
    dir.join("agent.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_run_records_wasm_results_limits_as_tool_errors_and_cut_output_as_a_blob() {
    let d = dirs();
    let cassette = json!({"replies": [
        {"tool_calls": [
            {"id": "c1", "name": "text.count", "arguments": {"path": "docs"}},
            {"id": "c2", "name": "test.misbehave", "arguments": {"do": "loop"}},
            {"id": "c3", "name": "test.misbehave", "arguments": {"do": "print", "bytes": 20_000}}
        ]},
        {"text": "Counted."}
    ]});
    let spec_path = agent(&d, &cassette);
    let spec = Spec::load(&spec_path).expect("spec");
    assert_eq!(spec.wasm.len(), 2);
    let store_dir = tempfile::tempdir().expect("store");
    let store = SledStore::open(store_dir.path()).expect("store");
    let provider =
        Scripted::load(spec.model.cassette.as_deref().expect("cassette")).expect("cassette");
    let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
    let run = retrace_events::RunId::from_bytes([7; 16]);
    runner.start(run, "count words").expect("start");
    let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
    assert_eq!(stop, Stop::Finished(Outcome::Succeeded));

    let mut results = std::collections::BTreeMap::new();
    for (_, event) in store.events(&run, 0..=u64::MAX).expect("events") {
        if let EventKind::ToolReturned {
            call_id,
            output,
            is_error,
            ..
        } = event.kind
        {
            let value: Value =
                serde_json::from_slice(&store.blob(&output).expect("read").expect("blob"))
                    .expect("json");
            results.insert(call_id, (value, is_error));
        }
    }
    let (count, is_error) = &results["c1"];
    assert!(!is_error);
    assert_eq!(count["words"], 6);
    let (looped, is_error) = &results["c2"];
    assert!(is_error);
    assert!(
        looped["error"]
            .as_str()
            .expect("message")
            .contains("fuel limit of 200000000"),
        "{looped}"
    );
    let (cut, is_error) = &results["c3"];
    assert!(!is_error, "{cut}");
    assert_eq!(cut["truncated"], true);
    assert_eq!(cut["preview"].as_str().expect("preview").len(), 4096);
    let full: BlobId = cut["full_output"]
        .as_str()
        .expect("blob id")
        .parse()
        .expect("a blob id");
    let whole = store
        .blob(&full)
        .expect("read")
        .expect("the full output is stored");
    assert_eq!(whole.len(), 20_000 + r#"{"text":""}"#.len());
    assert_eq!(cut["bytes"], whole.len());
    verify_run(&store, &run, VerifyOptions::default()).expect("verifies");
}

#[test]
fn a_run_refuses_a_component_that_changed_since_its_spec_was_read() {
    let d = dirs();
    let dir = d.ws.parent().expect("parent").to_path_buf();
    let copy = dir.join("count.wasm");
    std::fs::copy(guest("wordcount"), &copy).expect("copy");
    write(
        &dir.join("tools/count.toml"),
        "name = \"text.count\"\ndescription = \"t\"\nmodule = \"../count.wasm\"\ntier = \"read\"\n",
    );
    write(
        &dir.join("agent.toml"),
        "name = \"w\"\nsystem = \"s\"\nworkspace = \"ws\"\n[model]\nprovider = \"scripted\"\nname = \"d\"\ncassette = \"c.json\"\n[tools]\nwasm = [\"tools/count.toml\"]\n",
    );
    write(&dir.join("c.json"), r#"{"replies": []}"#);
    let spec = Spec::load(&dir.join("agent.toml")).expect("spec");
    std::fs::copy(guest("jsonx"), &copy).expect("swap the component");
    let store_dir = tempfile::tempdir().expect("store");
    let store = SledStore::open(store_dir.path()).expect("store");
    let provider = Scripted::load(&dir.join("c.json")).expect("cassette");
    let err = Runner::new(&store, spec, Box::new(provider)).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("changed since"), "{text}");
    assert!(text.contains("count.wasm"), "{text}");
}

#[test]
fn bad_manifests_name_file_line_and_problem() {
    let d = dirs();
    let dir = d.ws.parent().expect("parent").to_path_buf();
    let cases = [
        ("name = \"count\"\n", 1, "namespaced"),
        ("name = \"fs.count\"\n", 1, "reserved"),
        (
            "name = \"text.count\"\nfuel = 3\n",
            2,
            "unknown field `fuel`",
        ),
    ];
    for (head, line, message) in cases {
        let path = dir.join("tools/bad.toml");
        write(
            &path,
            &format!(
                "{head}description = \"d\"\nmodule = \"{}\"\ntier = \"read\"\n",
                guest("wordcount").display()
            ),
        );
        let err = retrace_runtime::tools::wasm::Manifest::load(&path).expect_err("refused");
        assert_eq!(err.line, line, "{err}");
        assert!(err.message.contains(message), "{err}");
        assert!(err.to_string().contains("tools/bad.toml"), "{err}");
    }
    write(
        &dir.join("tools/missing.toml"),
        "name = \"text.count\"\ndescription = \"d\"\nmodule = \"nowhere.wasm\"\ntier = \"read\"\n",
    );
    let err = retrace_runtime::tools::wasm::Manifest::load(&dir.join("tools/missing.toml"))
        .expect_err("refused");
    assert_eq!(err.line, 3);
    assert!(err.message.contains("nowhere.wasm"), "{err}");
}

//! WASM tool call latency in the sandbox, cold and warm:
//!
//! - **cold, compiling**: a new host with no disk cache loads the component (Cranelift
//!   compiles it) and calls it once;
//! - **cold, from the disk cache**: a new host (a new process, in effect) whose cache directory
//!   already holds the compiled code;
//! - **warm**: calls of a loaded component (each instantiates afresh: a new store, new WASI
//!   context, new linear memory), reported as median and p99.
//!
//! Guests: `jsonx` on a small input (pure compute) and `wordcount` over a preopened directory
//! of 20 small files. `cargo bench -p retrace-benches --bench sandbox`.

use std::path::Path;
use std::time::{Duration, Instant};

use retrace_benches::Samples;
use retrace_sandbox::{Call, Limits, Module, Preopen, Sandbox};

const WARM_CALLS: usize = 300;

async fn call(sandbox: &Sandbox, module: &Module, stdin: &[u8], preopens: &[Preopen]) {
    let out = sandbox
        .run(
            module,
            Call {
                stdin,
                limits: Limits::default(),
                preopens,
                env: &[],
            },
        )
        .await
        .expect("the guest runs");
    assert_eq!(out.exit_code, 0, "{}", out.stderr);
}

async fn measure(name: &str, wasm: &Path, stdin: &[u8], preopens: &[Preopen], cache: &Path) {
    // cold, compiling
    let t = Instant::now();
    let sandbox = Sandbox::new(None).expect("sandbox");
    let module = sandbox.load(wasm).expect("load");
    let compiled = t.elapsed();
    call(&sandbox, &module, stdin, preopens).await;
    let cold = t.elapsed();
    // cold, from the disk cache: fill it, then a fresh host reads it
    drop(
        Sandbox::new(Some(cache))
            .expect("sandbox")
            .load(wasm)
            .expect("load"),
    );
    let t = Instant::now();
    let cached = Sandbox::new(Some(cache)).expect("sandbox");
    let module_cached = cached.load(wasm).expect("load");
    call(&cached, &module_cached, stdin, preopens).await;
    let cold_cached = t.elapsed();
    // warm
    let mut warm_calls = Samples::default();
    for _ in 0..WARM_CALLS {
        let t = Instant::now();
        call(&sandbox, &module, stdin, preopens).await;
        warm_calls.push(t.elapsed());
    }
    // a second load of the same bytes is a cache hit
    let t = Instant::now();
    let _ = sandbox.load(wasm).expect("load");
    let reload = t.elapsed();
    println!(
        "{name}: cold (compile {:.0} ms) first call after {:.0} ms; cold from disk cache {:.1} ms; warm call median {:.3} ms, p99 {:.3} ms ({WARM_CALLS} calls); load of a cached component {:.3} ms",
        ms(compiled),
        ms(cold),
        ms(cold_cached),
        warm_calls.median_ms(),
        warm_calls.p99_ms(),
        ms(reload),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let tools = retrace_tests::wasm_tools();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    for i in 0..20 {
        std::fs::write(
            data.join(format!("f{i}.md")),
            "retrace runs agent jobs durably.\n".repeat(20),
        )
        .expect("write");
    }
    let preopens = [Preopen {
        host: data,
        guest: "/data".into(),
        writable: false,
    }];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        measure(
            "jsonx (pure compute)",
            &tools.join("jsonx.wasm"),
            br#"{"input": {"items": [{"n": "a", "size": 3}, {"n": "b", "size": 9}]}, "pointer": "/items", "sort_by": "size"}"#,
            &[],
            &dir.path().join("cache-jsonx"),
        )
        .await;
        measure(
            "wordcount (20 files, preopen)",
            &tools.join("wordcount.wasm"),
            br#"{"path": "."}"#,
            &preopens,
            &dir.path().join("cache-wordcount"),
        )
        .await;
    });
}

//! Overhead of the `exec.run` process sandbox: `retrace_sandbox::process::run` running `true`
//! through the real `retrace` binary as its helper (re-exec, confine, `exec`), against
//! spawning `/bin/true` bare, in the same process and interleaved (each round runs every
//! variant once, so drift on a busy machine hits them alike):
//!
//! - bare `std::process::Command::new("/bin/true").status()`, and `/bin/sh -c true` the same
//!   way (what the shell alone costs);
//! - bare `tokio::process::Command::new("/bin/true").status()`;
//! - `process::run` in [`Mode::None`] (parent death, pids cgroup, rlimits, environment,
//!   process group, captured output) and in [`Mode::Kernel`] (that plus landlock, seccomp and
//!   every capability dropped), each with argv `["/bin/true"]` and `["/bin/sh", "-c", "true"]`
//!   (what `exec.run` runs);
//! - the helper alone: `retrace __sandbox-exec <confinement> -- /bin/true` spawned with
//!   `std::process::Command` (joining one pids cgroup made for the whole bench, no pipes), to
//!   tell starting the helper binary from the rest of `run` (a cgroup made and removed per
//!   call, pipes read, the group killed).
//!
//! The job is `exec.run`'s default one (limits, environment); workspace and tmp are two
//! temp dirs. N calls per variant (`RETRACE_BENCH_CALLS`, default 300) after 10 warm-up
//! calls; prints median and p99 per variant and the overhead (median minus the bare
//! spawn's median) as a table.
//!
//! The helper is the `retrace` binary of the bench's own profile (the directory above
//! `deps/`), so build it first. Run (debug, like the context bench; a release build of the
//! workspace takes ~20 min on this machine):
//! `cargo build -p retrace-cli && cargo test -p retrace-benches --bench exec`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use retrace_benches::{Samples, env_u64};
use retrace_sandbox::process::{Confinement, HELPER_ARG, Job, Launcher, Mode, probe, run};

const WARM_UP: usize = 10;
const TRUE: &[&str] = &["/bin/true"];
const SH_TRUE: &[&str] = &["/bin/sh", "-c", "true"];

/// One way of running `true`.
enum Variant {
    Std(&'static [&'static str]),
    /// The helper started directly, joining a pids cgroup made once for the bench (`run`
    /// makes and removes one per call), output not captured.
    Helper(Job, Option<PathBuf>),
    Tokio,
    Sandbox(Job),
}

impl Variant {
    async fn call(&self) {
        match self {
            Variant::Std(argv) => {
                let status = std::process::Command::new(argv[0])
                    .args(&argv[1..])
                    .status()
                    .expect("spawn");
                assert!(status.success(), "{argv:?}: {status}");
            }
            Variant::Helper(job, cgroup) => {
                let mut wire = serde_json::to_value(&job.confinement).expect("json");
                if let Some(cgroup) = cgroup {
                    wire["pids_cgroup"] = cgroup.display().to_string().into();
                }
                let status = std::process::Command::new(&job.launcher.program)
                    .args(&job.launcher.args)
                    .arg(wire.to_string())
                    .arg("--")
                    .args(&job.argv)
                    .env_clear()
                    .envs(job.env.iter().map(|(k, v)| (k, v)))
                    .current_dir(&job.cwd)
                    .status()
                    .expect("spawn");
                assert!(status.success(), "the helper, {:?}: {status}", job.argv);
            }
            Variant::Tokio => {
                let status = tokio::process::Command::new("/bin/true")
                    .status()
                    .await
                    .expect("spawn");
                assert!(status.success(), "/bin/true: {status}");
            }
            Variant::Sandbox(job) => {
                let finished = run(job).await.expect("the helper starts");
                assert_eq!(
                    finished.exit_code,
                    Some(0),
                    "{:?} in {:?}: {}",
                    job.argv,
                    job.confinement.mode,
                    finished.stderr.shown
                );
            }
        }
    }
}

/// The `retrace` binary next to this bench's `deps/` directory.
fn helper() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this bench: {e}"))?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} has no profile directory", exe.display()))?;
    let retrace = profile.join("retrace");
    if retrace.is_file() {
        Ok(retrace)
    } else {
        Err(format!(
            "the sandbox helper {} does not exist: build it first, in the bench's profile \
             (`cargo build -p retrace-cli` for debug)",
            retrace.display()
        ))
    }
}

/// A pids cgroup (v1) for the helper-alone variants, removed when dropped.
struct BenchCgroup(PathBuf);

impl BenchCgroup {
    fn create() -> Option<Self> {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/pids/retrace-bench-{}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).ok()?;
        let cgroup = BenchCgroup(dir);
        std::fs::write(cgroup.0.join("pids.max"), "128").ok()?;
        Some(cgroup)
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        // Every helper has exited (each call waits for it); retry while the kernel finishes.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("exec bench: cannot remove {}", self.0.display());
    }
}

/// `exec.run`'s default job (runtime/src/tools/exec.rs) for `argv`.
fn job(helper: &Path, mode: Mode, workspace: &Path, tmp: &Path, argv: &[&str]) -> Job {
    Job {
        launcher: Launcher {
            program: helper.to_owned(),
            args: vec![OsString::from(HELPER_ARG)],
        },
        confinement: Confinement {
            mode,
            workspace: workspace.to_owned(),
            tmp: tmp.to_owned(),
            read: vec![],
            write: vec![],
            network: false,
            cpu_secs: 120,
            memory_bytes: 2048 << 20,
            max_processes: 128,
            file_bytes: 1024 << 20,
        },
        argv: argv.iter().map(ToString::to_string).collect(),
        cwd: workspace.to_owned(),
        env: vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), workspace.display().to_string()),
            ("TMPDIR".into(), tmp.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TERM".into(), "dumb".into()),
        ],
        stdin: Vec::new(),
        timeout: Duration::from_mins(2),
        grace: Duration::from_secs(2),
        shown_bytes: 16 * 1024,
        keep_bytes: 8 << 20,
    }
}

fn main() -> ExitCode {
    let helper = match helper() {
        Ok(helper) => helper,
        Err(e) => {
            eprintln!("exec bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let calls = usize::try_from(env_u64("RETRACE_BENCH_CALLS", 300)).expect("fits");
    let workspace_dir = tempfile::tempdir().expect("temp dir");
    let tmp_dir = tempfile::tempdir().expect("temp dir");
    let workspace = workspace_dir.path().canonicalize().expect("canonical");
    let tmp = tmp_dir.path().canonicalize().expect("canonical");

    let mut variants: Vec<(String, Variant)> = vec![
        (
            "bare std::process::Command, /bin/true".into(),
            Variant::Std(TRUE),
        ),
        (
            "bare tokio::process::Command, /bin/true".into(),
            Variant::Tokio,
        ),
        (
            "bare std::process::Command, /bin/sh -c true".into(),
            Variant::Std(SH_TRUE),
        ),
    ];
    let kernel = probe();
    let cgroup = BenchCgroup::create();
    for mode in [Mode::None, Mode::Kernel] {
        if mode == Mode::Kernel
            && let Err(e) = &kernel
        {
            println!("SKIPPED Mode::Kernel: this machine cannot confine: {e}");
            continue;
        }
        if cgroup.is_some() || mode == Mode::None {
            variants.push((
                format!("helper alone (std, no capture), Mode::{mode:?}, /bin/true"),
                Variant::Helper(
                    job(&helper, mode, &workspace, &tmp, TRUE),
                    cgroup.as_ref().map(|c| c.0.clone()),
                ),
            ));
        }
        for argv in [TRUE, SH_TRUE] {
            variants.push((
                format!("exec.run, Mode::{mode:?}, {}", argv.join(" ")),
                Variant::Sandbox(job(&helper, mode, &workspace, &tmp, argv)),
            ));
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let samples = runtime.block_on(async {
        for _ in 0..WARM_UP {
            for (_, variant) in &variants {
                variant.call().await;
            }
        }
        let mut samples = vec![Samples::default(); variants.len()];
        for _ in 0..calls {
            for ((_, variant), samples) in variants.iter().zip(&mut samples) {
                let t = Instant::now();
                variant.call().await;
                samples.push(t.elapsed());
            }
        }
        samples
    });

    println!(
        "exec.run overhead: {calls} calls per variant after {WARM_UP} warm-up, interleaved; helper {}",
        helper.display()
    );
    let bare_std = samples[0].median_ms();
    let bare_tokio = samples[1].median_ms();
    println!(
        "| variant | median | p99 | overhead vs bare std (median) | overhead vs bare tokio (median) |"
    );
    println!("|---|---|---|---|---|");
    for ((name, _), s) in variants.iter().zip(&samples) {
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:+.3} ms | {:+.3} ms |",
            s.median_ms(),
            s.p99_ms(),
            s.median_ms() - bare_std,
            s.median_ms() - bare_tokio,
        );
    }
    ExitCode::SUCCESS
}

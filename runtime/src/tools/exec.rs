//! `exec.run`: a shell command in the workspace, confined by the process sandbox of
//! [`retrace_sandbox::process`] (on Linux: landlock for files and TCP, a seccomp filter,
//! no capabilities, rlimits; see that module for what each layer does and does not
//! guarantee).
//!
//! | | |
//! |---|---|
//! | tier | `exec` (asks by default) |
//! | idempotent | no (a policy rule may say `idempotent = true` for its commands) |
//! | arguments | `{"command": "…", "timeout_secs"?: N, "cwd"?: "dir in the workspace"}` |
//! | runs | `/bin/sh -c command`, in a fresh process group, with only the environment below |
//! | result | `{"exit_code", "signal"?, "timed_out"?, "stdout", "stderr", "stdout_bytes", "stderr_bytes", "stdout_artifact"?, "stderr_artifact"?}` |
//!
//! The result holds no timing (the `tool_returned` event records the duration), so the same
//! command with the same output gives the same result: a run killed and resumed, or a call
//! settled by hand with the output it had, ends in the same state as an uninterrupted run.
//!
//! The command sees `PATH`, `HOME` (the workspace), `TMPDIR` (a fresh directory, removed
//! after the call), `LANG=C.UTF-8`, `TERM=dumb`, and the variables `[exec] env` names
//! (values read from retrace's environment when the call runs; never recorded). Output
//! beyond `shown_bytes` per stream is cut to its head and tail; the whole stream (up to
//! `keep_bytes`) is stored as an artifact blob the result names, so the model can page
//! through it with `artifact.read` and a human can read it in `show` or the inspector.
//!
//! Spec (`[exec]`, all optional):
//!
//! ```toml
//! [exec]
//! sandbox = "kernel"      # kernel | none (none: no filesystem, network or syscall rules)
//! timeout_secs = 120      # wall clock per call; then SIGTERM to the group, SIGKILL 2 s later
//! cpu_secs = 120          # CPU time per process (RLIMIT_CPU)
//! memory_mb = 2048        # address space per process (RLIMIT_AS)
//! max_processes = 128     # processes the command may add
//! file_mb = 1024          # largest file it may write (RLIMIT_FSIZE)
//! network = false         # true: TCP and UDP allowed
//! env = ["CARGO_HOME"]    # variables passed through by name
//! read = ["/opt/tools"]   # more paths it may read (and execute), relative to the spec
//! write = ["/var/cache/x"]# more paths it may write
//! shown_bytes = 16384     # per stream, what the model sees inline
//! keep_bytes = 8388608    # per stream, what the artifact keeps
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use retrace_sandbox::process::{self, Confinement, Finished, Job, Launcher, Mode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{OnError, Output, Tier, ToolError, ToolInfo, Workspace};

/// The tool's name.
pub const TOOL: &str = "exec.run";
/// `PATH` when the spec does not pass one through.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Between SIGTERM and SIGKILL at a timeout.
pub const GRACE: Duration = Duration::from_secs(2);

/// `[exec]` in the spec, resolved (paths absolute).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSettings {
    /// Confinement: `kernel` (landlock, seccomp, no capabilities) or `none`.
    #[serde(default = "kernel")]
    pub sandbox: Mode,
    /// Wall-clock seconds per call (a call may ask for less).
    #[serde(default = "minutes_2")]
    pub timeout_secs: u64,
    /// CPU seconds per process.
    #[serde(default = "minutes_2")]
    pub cpu_secs: u64,
    /// Address space per process, MiB.
    #[serde(default = "memory_mb")]
    pub memory_mb: u64,
    /// Processes the command may add.
    #[serde(default = "max_processes")]
    pub max_processes: u64,
    /// Largest file the command may write, MiB.
    #[serde(default = "file_mb")]
    pub file_mb: u64,
    /// Whether the command may use the network.
    #[serde(default)]
    pub network: bool,
    /// Environment variables passed through by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// More paths it may read and execute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<PathBuf>,
    /// More paths it may write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<PathBuf>,
    /// Bytes per stream the model sees inline (head and tail).
    #[serde(default = "shown_bytes")]
    pub shown_bytes: usize,
    /// Bytes per stream kept as the artifact.
    #[serde(default = "keep_bytes")]
    pub keep_bytes: usize,
}

const fn kernel() -> Mode {
    Mode::Kernel
}
const fn minutes_2() -> u64 {
    120
}
const fn memory_mb() -> u64 {
    2048
}
const fn max_processes() -> u64 {
    128
}
const fn file_mb() -> u64 {
    1024
}
const fn shown_bytes() -> usize {
    16 * 1024
}
const fn keep_bytes() -> usize {
    8 << 20
}

impl Default for ExecSettings {
    fn default() -> Self {
        Self {
            sandbox: kernel(),
            timeout_secs: minutes_2(),
            cpu_secs: minutes_2(),
            memory_mb: memory_mb(),
            max_processes: max_processes(),
            file_mb: file_mb(),
            network: false,
            env: Vec::new(),
            read: Vec::new(),
            write: Vec::new(),
            shown_bytes: shown_bytes(),
            keep_bytes: keep_bytes(),
        }
    }
}

impl ExecSettings {
    /// Check the settings and make their paths absolute against `base` (the spec's
    /// directory). The message names the key.
    pub fn resolve(mut self, base: &Path) -> Result<Self, String> {
        const WEEK: u64 = 7 * 24 * 3600;
        for (key, value, max) in [
            ("timeout_secs", self.timeout_secs, WEEK),
            ("cpu_secs", self.cpu_secs, WEEK),
            ("memory_mb", self.memory_mb, 1 << 20),
            ("max_processes", self.max_processes, 32_768),
            ("file_mb", self.file_mb, 1 << 20),
        ] {
            if !(1..=max).contains(&value) {
                return Err(format!("[exec] {key} = {value}: give 1 to {max}"));
            }
        }
        if self.shown_bytes < 256
            || self.shown_bytes > 1 << 20
            || self.keep_bytes < self.shown_bytes
            || self.keep_bytes > 256 << 20
        {
            return Err(
                "[exec] needs 256 <= shown_bytes <= 1 MiB and shown_bytes <= keep_bytes <= 256 MiB"
                    .into(),
            );
        }
        for name in &self.env {
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("[exec] env: `{name}` is not a variable name"));
            }
        }
        for (key, path) in self
            .read
            .iter_mut()
            .map(|p| ("read", p))
            .chain(self.write.iter_mut().map(|p| ("write", p)))
        {
            *path = crate::spec::resolved(&base.join(&*path));
            if !path.exists() {
                return Err(format!(
                    "[exec] {key}: {} does not exist (the sandbox can only allow paths that do)",
                    path.display()
                ));
            }
            if key == "write" && path.parent().is_none() {
                return Err(
                    "[exec] write = \"/\" would let commands write anywhere; name the \
                     directories they need, or say `sandbox = \"none\"`"
                        .into(),
                );
            }
        }
        Ok(self)
    }

    /// Whether this machine can run commands as these settings ask: with
    /// `sandbox = "kernel"`, the kernel must offer the sandbox. The error says what is
    /// missing and how to run unconfined.
    pub fn available(&self) -> Result<(), String> {
        match self.sandbox {
            Mode::None => Ok(()),
            Mode::Kernel => process::probe().map_err(|why| {
                format!(
                    "exec.run needs the kernel sandbox, which this machine does not offer: {why}; \
                     to run commands without it (no filesystem, network or syscall rules), \
                     say `sandbox = \"none\"` in [exec]"
                )
            }),
        }
    }
}

/// What `exec.run` declares (its description for the default settings).
pub fn info() -> ToolInfo {
    info_for(&ExecSettings::default())
}

/// What `exec.run` declares under `settings`: the description tells the model what the
/// commands may do, so it says so when they run unconfined or with the network.
pub fn info_for(settings: &ExecSettings) -> ToolInfo {
    let confinement = match (settings.sandbox, settings.network) {
        (Mode::None, _) => "without a sandbox (it can do whatever your user can)".to_owned(),
        (Mode::Kernel, network) => format!(
            "in a sandbox: it may read the system and the workspace, write only the workspace \
             and $TMPDIR, and {}",
            if network {
                "use the network"
            } else {
                "has no network"
            }
        ),
    };
    ToolInfo {
        name: TOOL.into(),
        description: format!(
            "Run a shell command (/bin/sh -c) in the workspace, {confinement}; at most {} s. \
             Returns the exit code and the output (long output cut to its head and tail; the \
             whole is an artifact).",
            settings.timeout_secs
        ),
        schema: json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "shell command line"},
                "timeout_secs": {"type": "integer", "minimum": 1, "description": "wall-clock limit (at most the spec's)"},
                "cwd": {"type": "string", "description": "directory to run in, relative to the workspace", "default": "."}
            },
            "required": ["command"],
            "additionalProperties": false
        }),
        tier: Tier::Exec,
        idempotent: false,
        on_error: OnError::Continue,
        origin: super::fs::BUILT_IN.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    command: String,
    timeout_secs: Option<u64>,
    #[serde(default = "dot")]
    cwd: String,
}

fn dot() -> String {
    ".".into()
}

/// `exec.run` over one workspace.
#[derive(Clone, Debug)]
pub struct Exec {
    settings: ExecSettings,
    workspace: Workspace,
}

impl Exec {
    /// The tool with `settings`, working in `workspace`.
    pub fn new(settings: ExecSettings, workspace: Workspace) -> Self {
        Self {
            settings,
            workspace,
        }
    }

    /// Run one call. A command that fails or times out is a result (its exit code, signal
    /// and output), not an error; an error is a call that could not run (bad arguments, a
    /// helper that could not start or confine).
    pub async fn call(&self, args: &Value) -> Result<Output, ToolError> {
        let args: Args = serde_json::from_value(args.clone()).map_err(|e| ToolError::Invalid {
            message: e.to_string(),
        })?;
        if args.command.trim().is_empty() || args.command.contains('\0') {
            return Err(ToolError::Invalid {
                message: "`command` is empty or holds a NUL byte".into(),
            });
        }
        let cwd = self.workspace.resolve(&args.cwd)?;
        if !cwd.is_dir() {
            return Err(ToolError::Invalid {
                message: format!("cwd `{}` is not a directory of the workspace", args.cwd),
            });
        }
        let timeout = args
            .timeout_secs
            .unwrap_or(self.settings.timeout_secs)
            .clamp(1, self.settings.timeout_secs);
        let shell = vec!["/bin/sh".into(), "-c".into(), args.command];
        let finished = self.run(shell, cwd, &[], Vec::new(), timeout).await?;
        Ok(result(finished, timeout))
    }

    /// Run `argv` in the sandbox with `cwd` as its working directory, `read` readable too,
    /// `stdin` on its standard input, for at most `timeout_secs`: what `exec.run` and
    /// hooks ([`crate::hooks`]) run through.
    pub async fn run(
        &self,
        argv: Vec<String>,
        cwd: PathBuf,
        read: &[PathBuf],
        stdin: Vec<u8>,
        timeout_secs: u64,
    ) -> Result<Finished, ToolError> {
        let tmp = tempfile::Builder::new()
            .prefix("retrace-exec-")
            .tempdir()
            .map_err(|e| ToolError::Failed {
                message: format!("cannot make the command's temporary directory: {e}"),
            })?;
        let program = std::env::current_exe().map_err(|e| ToolError::Failed {
            message: format!("cannot find retrace's own program to start the sandbox: {e}"),
        })?;
        let s = &self.settings;
        let job = Job {
            launcher: Launcher {
                program,
                args: vec![process::HELPER_ARG.into()],
            },
            confinement: Confinement {
                mode: s.sandbox,
                workspace: self.workspace.root().to_path_buf(),
                tmp: tmp.path().to_path_buf(),
                read: s.read.iter().chain(read).cloned().collect(),
                write: s.write.clone(),
                network: s.network,
                cpu_secs: s.cpu_secs,
                memory_bytes: s.memory_mb.saturating_mul(1 << 20),
                max_processes: s.max_processes,
                file_bytes: s.file_mb.saturating_mul(1 << 20),
            },
            argv,
            cwd,
            env: self.environment(tmp.path()),
            stdin,
            timeout: Duration::from_secs(timeout_secs),
            grace: GRACE,
            shown_bytes: s.shown_bytes,
            keep_bytes: s.keep_bytes,
        };
        process::run(&job).await.map_err(|e| ToolError::Failed {
            message: e.to_string(),
        })
    }

    /// The command's whole environment.
    fn environment(&self, tmp: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
            (
                "HOME".to_owned(),
                self.workspace.root().display().to_string(),
            ),
            ("TMPDIR".to_owned(), tmp.display().to_string()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("TERM".to_owned(), "dumb".to_owned()),
        ];
        for name in &self.settings.env {
            if let Ok(value) = std::env::var(name) {
                env.retain(|(k, _)| k != name);
                env.push((name.clone(), value));
            }
        }
        env
    }
}

/// The recorded result of a finished command, its cut streams' whole bytes attached.
fn result(finished: Finished, timeout_secs: u64) -> Output {
    let mut value = Map::new();
    value.insert("exit_code".into(), json!(finished.exit_code));
    if let Some(signal) = finished.signal {
        value.insert("signal".into(), json!(signal));
    }
    if finished.timed_out {
        value.insert(
            "timed_out".into(),
            json!(format!("killed after {timeout_secs} s")),
        );
    }
    let mut attachments = Vec::new();
    for (name, stream) in [("stdout", finished.stdout), ("stderr", finished.stderr)] {
        value.insert(name.into(), json!(stream.shown));
        value.insert(format!("{name}_bytes"), json!(stream.total_bytes));
        if stream.total_bytes > stream.shown.len() as u64 {
            let id = retrace_events::BlobId::of(&stream.whole);
            value.insert(format!("{name}_artifact"), json!(id.to_string()));
            if stream.whole_truncated {
                value.insert(
                    format!("{name}_artifact_note"),
                    json!(format!(
                        "the artifact keeps the first and last {} bytes",
                        stream.whole.len() / 2
                    )),
                );
            }
            attachments.push(stream.whole);
        }
    }
    Output {
        value: Value::Object(value),
        attachments,
    }
}

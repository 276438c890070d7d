//! Command-line syntax (clap). `retrace --help` is generated from these doc comments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Durable, time-travelling AI-agent runs on an append-only event log.
#[derive(Debug, Parser)]
#[command(name = "retrace", version, about)]
pub struct Cli {
    /// Store: a directory (the embedded store), or a PostgreSQL database shared by many
    /// processes, `postgres://USER@HOST:PORT/DATABASE` (password in PGPASSWORD, never in
    /// the URL; `?options=-c%20search_path%3DSCHEMA` picks a schema).
    #[arg(long, global = true, env = "RETRACE_STORE", default_value = ".retrace")]
    pub store: PathBuf,

    /// Who decides: the name recorded with an approval, a denial, an answer, a cancel, a
    /// signal or a resolution (default: $USER, else `cli`). 1–64 characters of A-Z, a-z,
    /// 0-9, `.`, `_`, `@`, `-`.
    #[arg(long = "as", global = true, value_name = "NAME")]
    pub as_name: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an agent: SPEC is its TOML file. Prints a live timeline; exits 0 when the run
    /// succeeds or parks for approval, 2 when it fails or is cancelled.
    Run {
        /// The agent spec (TOML).
        spec: PathBuf,
        /// The task. Give it several times to start one run per input, driven concurrently.
        #[arg(long, required_unless_present = "input_file")]
        input: Vec<String>,
        /// The task, from a file.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// Also write every model reply (and failure) to FILE, a cassette the scripted
        /// provider can play: a live session becomes an offline test.
        #[arg(long, value_name = "FILE")]
        record_cassette: Option<PathBuf>,
        /// Start a new run even if an unfinished run of this spec and input exists (by
        /// default that run is resumed, so repeating a command after a crash does not
        /// start the job over).
        #[arg(long)]
        new: bool,
        /// Hand the run to the `retrace serve` holding the store and print its id at once
        /// (stdout, one per line); follow it later with `retrace log`, `retrace inspect`.
        #[arg(long)]
        detach: bool,
    },
    /// Own the store and drive its runs in the background: a worker pool, a local API on
    /// `serve.sock` in the store directory (and optionally loopback HTTP), unfinished runs
    /// taken up on start. Other `retrace` commands then go through it. Stops on
    /// SIGTERM/SIGINT after drives reach a step boundary. On a PostgreSQL store it is one
    /// worker among many, sharing the runs under leases; it listens only on `--http` and
    /// `--socket`, and other commands reach PostgreSQL directly.
    Serve(ServeArgs),
    /// Cancel a run: a recorded `cancel` signal; the run finishes as cancelled (a tool
    /// call in flight finishes first, a model call in flight is dropped).
    Cancel {
        /// Run id or unambiguous prefix.
        run: String,
        /// Why (recorded, and in the run's finish reason).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a signal into a run: `--message TEXT` adds a user's message to the
    /// conversation at its next model call; NAME with `--payload JSON` records any other.
    Signal {
        /// Run id or unambiguous prefix.
        run: String,
        /// The signal's name (default with --message: user_message).
        name: Option<String>,
        /// A user's message for the agent.
        #[arg(long, conflicts_with = "payload")]
        message: Option<String>,
        /// The signal's payload, JSON.
        #[arg(long)]
        payload: Option<String>,
    },
    /// Continue a run from its log (after a park, a crash or a kill), with the spec it was
    /// started with.
    Resume {
        /// Run id or unambiguous prefix.
        run: String,
    },
    /// Decide a pending approval of a parked run (then `retrace resume`).
    Approve {
        /// Run id or unambiguous prefix.
        run: String,
        /// The tool call to decide (needed only when several are pending).
        call: Option<String>,
        /// Deny instead of approve.
        #[arg(long)]
        deny: bool,
        /// A note recorded with the decision.
        #[arg(long)]
        note: Option<String>,
    },
    /// Answer the question (`user.ask`) a parked run waits on (then `retrace resume`).
    #[command(group(
        clap::ArgGroup::new("answer").required(true).args(["choice", "text"])
    ))]
    Answer {
        /// Run id or unambiguous prefix.
        run: String,
        /// The question's tool call (checked if given).
        call: Option<String>,
        /// Pick the N-th choice, from 1.
        #[arg(long)]
        choice: Option<usize>,
        /// Answer in words.
        #[arg(long)]
        text: Option<String>,
    },
    /// Settle a tool call whose outcome is unknown (a non-idempotent tool was running when
    /// the process stopped): run it again, take a given result, or fail the run.
    #[command(group(
        clap::ArgGroup::new("how").required(true).args(["retry", "skip_with", "fail"])
    ))]
    Resolve {
        /// Run id or unambiguous prefix.
        run: String,
        /// The call (optional: a run has at most one in doubt).
        call: Option<String>,
        /// Run the tool again.
        #[arg(long)]
        retry: bool,
        /// Do not run it again: FILE (JSON) is its result.
        #[arg(long, value_name = "FILE")]
        skip_with: Option<PathBuf>,
        /// End the run as failed.
        #[arg(long)]
        fail: bool,
        /// A note recorded with a retry or a failure.
        #[arg(long)]
        note: Option<String>,
    },
    /// List every tool an agent would see (built-in, WASM and MCP) with its tier, what the
    /// policy does with a call, where it comes from and its argument schema.
    Tools {
        /// The agent spec (TOML).
        spec: PathBuf,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the runs in the store.
    Runs {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's events, one per line.
    Log {
        /// Run id or unambiguous prefix.
        run: String,
        /// First seq to print.
        #[arg(long)]
        from: Option<u64>,
        /// Last seq to print.
        #[arg(long)]
        to: Option<u64>,
        /// One JSON object per line: the event's fields, `kind`, and its `id`.
        #[arg(long)]
        json: bool,
    },
    /// Show one event in full (payloads resolved) and the run's state after it.
    Show {
        /// RUN or RUN@SEQ (default: the run's last event).
        at: String,
        /// JSON: event, payloads, state and state hash (with --request: the request).
        #[arg(long)]
        json: bool,
        /// The exact request of the model call at SEQ (its model_requested, model_responded
        /// or model_failed), rebuilt from the log: system prompt, tools, messages as sent.
        #[arg(long)]
        request: bool,
    },
    /// Compare two points (same run or two runs): where the runs part, and the state diff.
    Diff {
        /// First point, RUN[@SEQ].
        a: String,
        /// Second point, RUN[@SEQ].
        b: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Fork a new run sharing RUN's events up to SEQ (nothing is copied).
    Fork {
        /// Where: RUN@SEQ.
        #[arg(value_parser = run_at)]
        at: String,
        /// Replace the event at SEQ with this content (JSON file; see `retrace fork --help`).
        ///
        /// For a model reply: the new reply JSON. For a tool result: the new output JSON. For an
        /// approval decision: {"decision": "approved"|"denied", "note": "..."}.
        #[arg(long, value_name = "FILE")]
        edit: Option<PathBuf>,
    },
    /// Open the inspector: a window to travel through runs, event by event, with the state
    /// at each.
    Inspect {
        /// RUN or RUN@SEQ to show first (default: the run list).
        at: Option<String>,
    },
    /// The determinism check: run today's decision logic on the state before every decision
    /// a run recorded and compare with what the run did. Reports the first decision per run
    /// that comes out otherwise, expected against actual. Exits 2 if any run diverges.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["runs", "all"])))]
    Check {
        /// Run ids or unambiguous prefixes.
        runs: Vec<String>,
        /// Check every run in the store.
        #[arg(long, conflicts_with = "runs")]
        all: bool,
        /// Check each run's child runs too (`agent.delegate`), and theirs: the run's tree.
        /// Without it a delegate call's recorded answer stands in for its child.
        #[arg(long)]
        tree: bool,
        /// One JSON object per run, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Run an eval suite: each case replays a recorded run as a fork with today's code (and
    /// the case's overrides), tool calls served from the recording, then judges it. Prints a
    /// table; exits 2 if any case fails.
    Eval {
        /// The suite file (TOML).
        suite: PathBuf,
        /// Cases run at once (default: the suite's `jobs`).
        #[arg(long)]
        jobs: Option<usize>,
        /// Also write the report as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also write the report as JUnit XML to FILE (for CI).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Write runs to a bundle: one compressed, verifiable file with their events and every
    /// blob they refer to (and the runs they were forked from, and their child runs), to
    /// import elsewhere.
    Export {
        /// Run ids or unambiguous prefixes.
        #[arg(required = true)]
        runs: Vec<String>,
        /// Include every fork made of these runs (and forks of those).
        #[arg(long)]
        with_forks: bool,
        /// The bundle file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Load a bundle into the store. Every event and blob is checked against its hash first;
    /// a damaged or tampered bundle is refused with the first bad item named, and nothing is
    /// written. Runs the store already holds are skipped, so importing twice changes nothing.
    Import {
        /// The bundle file.
        file: PathBuf,
    },
    /// Turn another agent's recording into a retrace run: FORMAT is `claude-code` (a
    /// session transcript .jsonl), `codex` (a rollout .jsonl), `otel-genai` (GenAI spans as
    /// any-agent writes them), `mini-swe-agent` (a .traj.json) or `auto`. Model calls, tool
    /// calls and results, rejections, user messages and compactions become events with the
    /// source's times; what no event holds is kept per event. Prints the new run's id and a
    /// report (lines read, events written, lines kept or skipped by type). Importing the same
    /// file again finds the run already there. A file that is not such a recording is
    /// refused, naming the file and line, and nothing is written.
    #[command(name = "import-run")]
    ImportRun {
        /// The recording's format, or `auto` to tell it from the file.
        format: String,
        /// The recording (Claude Code: the session file, then its sub-agents' files).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The run's name (default: the session's id or the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's model replies (and failures) as a cassette the scripted provider plays
    /// (`-o FILE`, default stdout): a recorded or imported run becomes an offline eval
    /// baseline (`[case.override] cassette = FILE`), and an edited copy asks "what if the
    /// model had said this instead".
    Cassette {
        /// Run id or unambiguous prefix.
        run: String,
        /// The cassette file to write (`-`: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write runs as OpenTelemetry traces following the GenAI semantic conventions (an
    /// `invoke_agent` span per run, `chat` per model call, `execute_tool` per tool call;
    /// `gen_ai.*` attributes; retrace's run and event ids on every span): an OTLP JSON file
    /// (`-o FILE`, `-` for stdout) or OTLP/HTTP protobuf to a collector (`--endpoint URL`).
    #[command(name = "export-otel")]
    ExportOtel {
        /// Run ids or unambiguous prefixes.
        #[arg(required = true)]
        runs: Vec<String>,
        /// The OTLP JSON file to write (`-`: stdout).
        #[arg(short, long, value_name = "FILE", required_unless_present = "endpoint")]
        output: Option<PathBuf>,
        /// A collector's OTLP/HTTP endpoint, e.g. `http://127.0.0.1:4318` (`/v1/traces` is
        /// added unless given).
        #[arg(long, value_name = "URL", conflicts_with = "output")]
        endpoint: Option<String>,
        /// Leave message contents out (the task, replies, tool arguments and results): only
        /// names, ids, times, usage and errors are written.
        #[arg(long)]
        no_content: bool,
    },
    /// Recompute every event and blob hash of a run (or of all runs) and the parent chain;
    /// report the first mismatch. Exits non-zero if anything is wrong.
    Verify {
        /// Run id or unambiguous prefix; all runs when omitted.
        run: Option<String>,
        /// Check the event chain only, not the blobs.
        #[arg(long)]
        no_blobs: bool,
    },
    /// Every decision across the store's runs (forks and child runs included), oldest
    /// first: approvals and denials, answers, cancels and signals with a sender,
    /// resolutions, hook decisions, automatic allows with their evidence, budget
    /// escalations. Each run is verified against its hash chain and each piece of evidence
    /// checked; exits 1 if any listed decision does not verify.
    Audit {
        /// Only decisions since WHEN: an RFC 3339 time (2026-12-01T09:00:00Z) or a
        /// duration back from now (90m, 2h, 7d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only decisions by NAME.
        #[arg(long, value_name = "NAME")]
        who: Option<String>,
        /// A JSON array (shape in docs/cli.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Copy a whole store into another (e.g. the embedded store into PostgreSQL): every
    /// run, blob and snapshot, checked on the way; then every run is verified on both sides
    /// and the counts reported. Runs the target already holds identically are skipped, so
    /// running it again finishes an interrupted copy. Exits non-zero if anything differs.
    Migrate {
        /// The store to copy: a directory (stop `retrace serve` on it first) or a URL.
        #[arg(long)]
        from: PathBuf,
        /// Where to copy it: `postgres://USER@HOST:PORT/DATABASE` (password in
        /// PGPASSWORD) or a directory.
        #[arg(long)]
        to: PathBuf,
    },
}

/// A `RUN@SEQ` argument: a run (id or prefix) and a seq, a number (a usage error otherwise).
fn run_at(text: &str) -> Result<String, String> {
    match text.split_once('@') {
        Some((run, seq)) if !run.is_empty() && seq.parse::<u64>().is_ok() => Ok(text.to_owned()),
        _ => Err(format!(
            "`{text}`: say where, as RUN@SEQ (a run id or prefix, `@`, an event's seq)"
        )),
    }
}

/// `retrace serve`'s options.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Runs driven at once, at most.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Also serve the API over HTTP on this loopback address (e.g. 127.0.0.1:7414),
    /// with a bearer token (RETRACE_API_TOKEN, or a fresh one written to serve.token).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// With --http: the tokens it takes, from a TOML file naming each token's `name`
    /// (recorded as who decides), `role` (viewer, operator or admin) and secret
    /// (`token_env = "VAR"` or `token_file = "PATH"`); instead of one admin token.
    #[arg(long, value_name = "FILE", requires = "http")]
    pub tokens: Option<PathBuf>,
    /// Seconds a shutdown waits for drives to reach a step boundary.
    #[arg(long, default_value_t = 30)]
    pub grace: u64,
    /// Listen on this unix socket (default: serve.sock in the store directory; a
    /// worker on a PostgreSQL store has none unless given).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// On a PostgreSQL store: this worker's name in its leases (default HOST:PID:NONCE).
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
    /// On a PostgreSQL store: how long a run's lease lasts unrenewed, e.g. `15s` or
    /// `500ms`; a worker that dies loses its runs to the others after this long.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// Send the spans of the runs it drives to this OpenTelemetry collector as they
    /// progress (OTLP/HTTP protobuf; `http://127.0.0.1:4318`, `/v1/traces` added), as
    /// `retrace export-otel` writes them.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// With `--otlp-endpoint`: leave message contents (the task, replies, tool arguments and
    /// results) out of the spans, as `retrace export-otel --no-content` does.
    #[arg(long, requires = "otlp_endpoint")]
    pub otlp_no_content: bool,
}

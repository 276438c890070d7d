//! `retrace run SPEC` and `retrace resume RUN`: drive an agent run to its end or to a park,
//! printing a live timeline.
//!
//! Exit status: 0 when the run succeeded or parked for a human, 2 when it failed or was
//! cancelled, 1 on an error of retrace itself.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use retrace_events::{Outcome, RunId};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_runtime::entropy::new_run_id;
use retrace_runtime::executor::{Progress, Runner, Stop};
use retrace_runtime::model::provider;
use retrace_runtime::spec::Spec;
use retrace_store::Store;

use crate::{output, store_access};

pub fn run(
    dir: &Path,
    spec_path: &Path,
    mut inputs: Vec<String>,
    input_file: Option<&Path>,
    record_cassette: Option<&Path>,
    new: bool,
) -> anyhow::Result<ExitCode> {
    let mut spec = Spec::load(spec_path)?;
    // the MCP servers' catalogs become part of the spec the run records
    retrace_runtime::tools::mcp::discover_now(&mut spec.mcp)?;
    if let Some(file) = input_file {
        inputs.push(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read input file {}", file.display()))?,
        );
    }
    if inputs.is_empty() {
        bail!("say what the agent should do: --input TEXT or --input-file FILE");
    }
    let store = store_access::open_or_create(dir)?;
    let mut model = provider(&spec)?;
    if let Some(cassette) = record_cassette {
        model = Box::new(retrace_providers::Recorder::new(model, cassette)?);
        println!("recording the model's replies to {}", cassette.display());
    }
    let runner = Runner::new(&store, spec.clone(), model)?;
    if let [input] = inputs.as_slice() {
        if !new && let Some(run) = runner.unfinished_run(input)? {
            println!(
                "run {run} ({}) of this spec and input is unfinished: resuming it (--new starts another)",
                spec.name
            );
            return drive(&store, &runner, run);
        }
        let run = new_run_id();
        runner.start(run, input)?;
        println!("run {run} ({}) started in {}", spec.name, dir.display());
        return drive(&store, &runner, run);
    }
    drive_many(&store, &runner, &inputs, new)
}

/// Several inputs: one run each, driven concurrently; events printed with their run.
fn drive_many(
    store: &dyn Store,
    runner: &Runner<'_>,
    inputs: &[String],
    new: bool,
) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::with_capacity(inputs.len());
    let mut resumed = 0;
    for input in inputs {
        let unfinished = if new {
            None
        } else {
            runner.unfinished_run(input)?
        };
        let run = match unfinished {
            Some(run) if !runs.contains(&run) => {
                resumed += 1;
                run
            }
            _ => {
                let run = new_run_id();
                runner.start(run, input)?;
                run
            }
        };
        runs.push(run);
    }
    println!(
        "{} runs: {} started, {resumed} unfinished resumed",
        runs.len(),
        runs.len() - resumed
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stops = runtime.block_on(futures::future::join_all(runs.iter().map(
        |run| async move {
            let short = run.short();
            runner
                .drive(*run, &mut |progress| {
                    if let Progress::Appended(event) = progress {
                        println!(
                            "{short} {:>6}  {:<20}  {}",
                            event.seq,
                            event.kind.name(),
                            output::summary(&event)
                        );
                    }
                })
                .await
        },
    )));
    let mut all_ok = true;
    for (run, stop) in runs.iter().zip(stops) {
        let state = state_at_head(store, run, SnapshotPolicy::default())?.state;
        let stop = stop?;
        all_ok &= !matches!(stop, Stop::Finished(outcome) if outcome != Outcome::Succeeded);
        println!(
            "run {run}: {} ({} steps)",
            output::status(&state.status),
            state.totals.steps
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn resume(dir: &Path, run: &str) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?;
    let run = store.resolve_run(run)?;
    let spec = recorded_spec(&store, &run)?;
    let runner = Runner::new(&store, spec.clone(), provider(&spec)?)?;
    println!("run {run} ({}) resumed", spec.name);
    drive(&store, &runner, run)
}

/// Continue `run` on a thread of its own (for the inspector): the spec it was started with
/// and its provider are loaded now, so a run that cannot continue says so at once; what
/// the drive appends shows up in the store.
pub fn resume_in_background(store: Arc<dyn Store>, run: RunId) -> anyhow::Result<()> {
    let spec = recorded_spec(store.as_ref(), &run)?;
    let provider = provider(&spec)?;
    std::thread::Builder::new()
        .name(format!("retrace-run-{}", run.short()))
        .spawn(move || {
            let result = (|| -> anyhow::Result<()> {
                let runner = Runner::new(store.as_ref(), spec, provider)?;
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(runner.drive(run, &mut |_| {}))?;
                Ok(())
            })();
            if let Err(e) = result {
                tracing::warn!(run = %run.short(), error = %format!("{e:#}"), "continuing the run failed");
            }
        })?;
    Ok(())
}

/// The spec a run follows: the one it was started with, or the last a `spec` signal gave
/// it (an eval case's overrides), as recorded.
fn recorded_spec(store: &dyn Store, run: &RunId) -> anyhow::Result<Spec> {
    let state = state_at_head(store, run, SnapshotPolicy::default())?.state;
    let Some(spec) = state.spec else {
        bail!("run {run} has no events");
    };
    let bytes = store
        .blob(&spec)?
        .with_context(|| format!("run {run}: spec blob {spec} is missing"))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("run {run}: the recorded spec does not decode"))
}

fn drive(store: &dyn Store, runner: &Runner<'_>, run: RunId) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut streaming = false;
    let stop = runtime.block_on(runner.drive(run, &mut |progress| match progress {
        Progress::Text(text) => {
            if !streaming {
                print!("        │ ");
                streaming = true;
            }
            print!("{}", text.replace('\n', "\n        │ "));
            let _ = std::io::stdout().flush();
        }
        Progress::Appended(event) => {
            if streaming {
                println!();
                streaming = false;
            }
            println!(
                "{:>6}  {:<20}  {}",
                event.seq,
                event.kind.name(),
                output::summary(&event)
            );
        }
    }))?;
    let state = state_at_head(store, &run, SnapshotPolicy::default())?.state;
    let t = &state.totals;
    let short = run.short();
    println!(
        "usage: {} steps, {} tool calls, {} in / {} out tokens, {}",
        t.steps,
        t.tool_calls,
        t.input_tokens,
        t.output_tokens,
        output::usd(t.cost_micro_usd)
    );
    match stop {
        Stop::Finished(outcome) => {
            println!("run {run}: {}", output::status(&state.status));
            println!(
                "inspect: retrace log {short} · retrace show {short} · retrace verify {short}"
            );
            Ok(if outcome == Outcome::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Stop::Parked(reason) => {
            println!("run {run} is parked: {reason}");
            println!(
                "decide: retrace approve {short} [--deny] [--note TEXT], then: retrace resume {short}"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

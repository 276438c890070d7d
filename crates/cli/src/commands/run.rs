//! `retrace run SPEC` and `retrace resume RUN`: drive an agent run to its end or to a park,
//! printing a live timeline.
//!
//! Exit status: 0 when the run succeeded or parked for a human, 2 when it failed or was
//! cancelled, 1 on an error of retrace itself.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use retrace_events::{Outcome, RunId};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_runtime::entropy::new_run_id;
use retrace_runtime::executor::{Progress, Runner, Stop, recorded_spec};
use retrace_runtime::model::provider;
use retrace_runtime::spec::Spec;
use retrace_serve::api::RunView;
use retrace_serve::held::Held;
use retrace_store::Store;

use super::daemon;
use super::timeline::Timeline;

use crate::{output, store_access};

pub fn run(
    dir: &Path,
    spec_path: &Path,
    mut inputs: Vec<String>,
    input_file: Option<&Path>,
    record_cassette: Option<&Path>,
    new: bool,
    detach: bool,
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
    let access = store_access::open_or_create(dir)?;
    if let Some(client) = access.daemon() {
        if record_cassette.is_some() {
            bail!(
                "--record-cassette records in this process, but retrace serve holds {} and drives its runs; stop it to record, or record into another --store",
                dir.display()
            );
        }
        return daemon::submit(client, &spec, &inputs, new, detach);
    }
    if detach && let retrace_serve::Access::Shared(_) = &access {
        // on PostgreSQL, a worker of the store takes up a run nobody drives within a tick
        let store = access.store();
        let runner = Runner::new(store.as_ref(), spec.clone(), provider(&spec)?)?;
        for input in &inputs {
            let run = match runner.unfinished_run(input)? {
                Some(run) if !new => run,
                _ => {
                    let run = new_run_id();
                    runner.start(run, input)?;
                    run
                }
            };
            println!("{run}");
        }
        eprintln!(
            "a `retrace serve` worker of this store drives it; follow it with `retrace log RUN`"
        );
        return Ok(ExitCode::SUCCESS);
    }
    if detach {
        bail!(
            "--detach hands the run to retrace serve, and none holds {}; start one with `retrace serve --store {}`",
            dir.display(),
            dir.display()
        );
    }
    let store = access.store();
    let mut model = provider(&spec)?;
    if let Some(cassette) = record_cassette {
        model = Box::new(retrace_providers::Recorder::new(model, cassette)?);
        println!("recording the model's replies to {}", cassette.display());
    }
    let runner = Runner::new(store.as_ref(), spec.clone(), model)?;
    if let [input] = inputs.as_slice() {
        let run = match runner.unfinished_run(input)? {
            Some(run) if !new => {
                println!(
                    "run {run} ({}) of this spec and input is unfinished: resuming it (--new starts another)",
                    spec.name
                );
                run
            }
            _ => {
                let run = new_run_id();
                runner.start(run, input)?;
                println!("run {run} ({}) started in {}", spec.name, dir.display());
                run
            }
        };
        let held = access.hold(run)?;
        let fenced = held.as_ref().map(Held::store);
        let drives = fenced.unwrap_or_else(|| Arc::clone(&store));
        let inbox = held.as_ref().map(Held::inbox);
        return drive(
            drives.as_ref(),
            &runner.on_store(drives.as_ref()),
            run,
            inbox,
        );
    }
    let runs = start_many(&runner, &inputs, new)?;
    let held = runs
        .iter()
        .map(|run| access.hold(*run))
        .collect::<Result<Vec<_>, _>>()?;
    let fenced = held.iter().flatten().next().map(Held::store);
    let drives = fenced.unwrap_or_else(|| Arc::clone(&store));
    let inboxes: Vec<Option<&retrace_runtime::inbox::Inbox>> =
        held.iter().map(|h| h.as_ref().map(Held::inbox)).collect();
    drive_many(
        drives.as_ref(),
        &runner.on_store(drives.as_ref()),
        &runs,
        &inboxes,
    )
}

/// Several inputs: one run each (an unfinished one of the same input resumed, unless
/// `new`), started.
fn start_many(runner: &Runner<'_>, inputs: &[String], new: bool) -> anyhow::Result<Vec<RunId>> {
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
    Ok(runs)
}

/// Drive `runs` concurrently; events printed with their run.
/// Drive `runs` concurrently (each with its inbox, on a PostgreSQL store); events printed
/// with their run.
fn drive_many(
    store: &dyn Store,
    runner: &Runner<'_>,
    runs: &[RunId],
    inboxes: &[Option<&retrace_runtime::inbox::Inbox>],
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stops = runtime.block_on(futures::future::join_all(runs.iter().zip(inboxes).map(
        |(run, inbox)| async move {
            let short = run.short();
            let mut show = |progress| {
                if let Progress::Appended(event) = progress {
                    println!(
                        "{short} {:>6}  {:<20}  {}",
                        event.seq,
                        event.kind.name(),
                        output::summary(&event)
                    );
                }
            };
            runner.drive_with(*run, &mut show, *inbox).await
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
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let run = store.resolve_run(run)?;
    let info = store.require_run(&run)?;
    if let Some(code) = already_finished(&RunView::of(store.as_ref(), &info, false)?) {
        return Ok(code);
    }
    if let Some(client) = access.daemon() {
        return daemon::resume(client, run);
    }
    let held = access.hold(run)?;
    let fenced = held.as_ref().map(Held::store);
    let store = fenced.unwrap_or(store);
    let spec = recorded_spec(store.as_ref(), &run)?;
    let runner = Runner::new(store.as_ref(), spec.clone(), provider(&spec)?)?;
    println!("run {run} ({}) resumed", spec.name);
    drive(store.as_ref(), &runner, run, held.as_ref().map(Held::inbox))
}

/// A finished run has nothing to resume: say so and print its report, with or without
/// retrace serve; the exit status is its outcome's. `None` while it is unfinished.
pub fn already_finished(view: &RunView) -> Option<ExitCode> {
    let outcome = view.outcome?;
    println!(
        "run {} ({}) has already finished: nothing to resume",
        view.id, view.name
    );
    Some(report(view, &Stop::Finished(outcome), false))
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

fn drive(
    store: &dyn Store,
    runner: &Runner<'_>,
    run: RunId,
    inbox: Option<&retrace_runtime::inbox::Inbox>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut timeline = Timeline::default();
    let mut show = |progress| match progress {
        Progress::Text(text) => timeline.text(&text),
        Progress::Appended(event) => {
            timeline.event(event.seq, event.kind.name(), &output::summary(&event));
        }
        // a child run's events, indented under its id (its streamed text is not shown)
        Progress::Child(child, progress) => {
            if let Some((child, event)) = innermost_event(child, *progress) {
                let summary = format!("{}  {}", child.short(), output::summary(&event));
                timeline.event(event.seq, &format!("  {}", event.kind.name()), &summary);
            }
        }
    };
    let stop = runtime.block_on(runner.drive_with(run, &mut show, inbox));
    // a streamed reply's last line ends before anything else is printed, an error too
    timeline.end_text();
    let stop = stop?;
    let info = store.require_run(&run)?;
    let state = state_at_head(store, &run, SnapshotPolicy::default())?.state;
    let view = RunView::from_state(store, &info, &state, false);
    let code = report(&view, &stop, false);
    if let Some(why) = approval_asked(store, &state) {
        println!("asks: {why}");
    }
    Ok(code)
}

/// Why the run's pending approval was asked for (the request's `reason`: a policy rule, a
/// tier's default, a soft budget's figures), if it waits for one.
fn approval_asked(store: &dyn Store, state: &retrace_replay::State) -> Option<String> {
    let retrace_replay::Status::AwaitingApproval { call_id } = &state.status else {
        return None;
    };
    let request = state.approvals_pending.get(call_id)?.request;
    let asked: serde_json::Value = serde_json::from_slice(&store.blob(&request).ok()??).ok()?;
    let reason = asked.get("reason")?.as_str()?;
    let tool = asked
        .get("tool")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    Some(format!("{call_id} ({tool}): {reason}"))
}

/// The event a child's (grandchild's, …) progress report carries, if it is one, with the
/// run it was appended to.
fn innermost_event(run: RunId, progress: Progress) -> Option<(RunId, retrace_events::Event)> {
    match progress {
        Progress::Appended(event) => Some((run, event)),
        Progress::Child(child, inner) => innermost_event(child, *inner),
        Progress::Text(_) => None,
    }
}

/// The lines that end a drive (the same whether it ran here or in retrace serve), and the
/// exit status: 0 when the run succeeded or parked, 2 when it failed or was cancelled.
pub fn report(view: &RunView, stop: &Stop, served: bool) -> ExitCode {
    let short = &view.id[..8.min(view.id.len())];
    let run = &view.id;
    println!(
        "usage: {} steps, {} tool calls, {} in / {} out tokens, {}",
        view.steps,
        view.tool_calls,
        view.input_tokens,
        view.output_tokens,
        output::usd(view.cost_micro_usd)
    );
    match stop {
        Stop::Finished(outcome) => {
            println!("run {run}: {}", view.status);
            if *outcome != Outcome::Succeeded
                && let Some(reason) = &view.reason
            {
                println!("reason: {reason}");
            }
            println!(
                "inspect: retrace log {short} · retrace show {short} · retrace verify {short}"
            );
            if *outcome == Outcome::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        // a child run waits for a human: what to do is said of the child
        Stop::Parked(reason) if reason.starts_with("child run ") => {
            println!("run {run} waits: its {reason}");
            println!(
                "decide for the child (retrace runs lists it; retrace approve, answer or resolve CHILD), then: retrace resume {short}"
            );
            ExitCode::SUCCESS
        }
        Stop::Parked(_) => {
            // the view's words, so a drive here and one in retrace serve print the same
            println!("run {run} is {}", view.status);
            let then = if served {
                "; retrace serve continues it".to_owned()
            } else {
                format!(", then: retrace resume {short}")
            };
            if view.outcome_unknown.is_some() {
                println!(
                    "resolve: retrace resolve {short} (--retry | --skip-with FILE | --fail){then}"
                );
            } else if view.awaiting_answer.is_some() {
                println!(
                    "answer: retrace answer {short} (--choice N | --text TEXT){then} (retrace show {short} shows the question)"
                );
            } else {
                println!("decide: retrace approve {short} [--deny] [--note TEXT]{then}");
            }
            ExitCode::SUCCESS
        }
        Stop::Interrupted => {
            println!("run {run} was stopped before its end; continue with: retrace resume {short}");
            ExitCode::SUCCESS
        }
    }
}

//! Commands that hand work to `retrace serve` when it holds the store: submit runs, resume,
//! and follow a run's events, printed as a drive in this process prints them.

use std::process::ExitCode;

use anyhow::{Context, bail};
use retrace_events::RunId;
use retrace_runtime::executor::Stop;
use retrace_runtime::spec::Spec;
use retrace_serve::Client;
use retrace_serve::api::{RunView, Submit};
use retrace_serve::client::StreamItem;

use super::run::{already_finished, report};
use super::timeline::Timeline;

/// Submit one run per input; with `detach`, print their ids (stdout, one per line) and
/// return, else follow them to their end or park.
pub fn submit(
    client: &Client,
    spec: &Spec,
    inputs: &[String],
    new: bool,
    detach: bool,
) -> anyhow::Result<ExitCode> {
    let spec_json: serde_json::Value = serde_json::from_slice(&spec.to_canonical_bytes())
        .context("the spec does not serialise")?;
    let mut runs = Vec::with_capacity(inputs.len());
    for input in inputs {
        let submitted = client.submit(&Submit {
            spec: Some(spec_json.clone()),
            spec_path: None,
            input: input.clone(),
            new,
        })?;
        let run: RunId = submitted
            .run
            .parse()
            .with_context(|| format!("retrace serve answered a bad run id {}", submitted.run))?;
        let how = if submitted.resumed {
            "is unfinished: retrace serve resumes it (--new starts another)"
        } else {
            "started by retrace serve"
        };
        if detach {
            eprintln!("run {run} ({}) {how}", spec.name);
            println!("{run}");
        } else {
            println!("run {run} ({}) {how}", spec.name);
        }
        runs.push((run, submitted.resumed));
    }
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let mut worst = ExitCode::SUCCESS;
    let prefix = runs.len() > 1;
    for (run, resumed) in runs {
        let from = if resumed {
            client.run(&run.to_string())?.events
        } else {
            1 // run_started is not printed by a drive either
        };
        let code = follow(client, run, from, prefix)?;
        if code != ExitCode::SUCCESS {
            worst = code;
        }
    }
    Ok(worst)
}

/// Ask the daemon to continue `run`, and follow it.
pub fn resume(client: &Client, run: RunId) -> anyhow::Result<ExitCode> {
    let view = client.run(&run.to_string())?;
    if let Some(code) = already_finished(&view) {
        return Ok(code);
    }
    client.resume(&run.to_string())?;
    println!("run {run} ({}) resumed by retrace serve", view.name);
    follow(client, run, view.events, false)
}

/// Print `run`'s events from seq `from`, and the text its model streams, until it finishes
/// or the daemon stops driving it: as a drive in this process prints them. With `prefix`
/// (one of several runs) each event line starts with the run's short id and streamed text
/// is left out, as for several runs driven here.
fn follow(client: &Client, run: RunId, from: u64, prefix: bool) -> anyhow::Result<ExitCode> {
    let short = run.short();
    let mut timeline = Timeline::default();
    for item in client.events(&run.to_string(), from, true)? {
        let view = match item? {
            StreamItem::Event(e) if prefix => {
                println!("{short} {:>6}  {:<20}  {}", e.seq, e.kind, e.summary);
                continue;
            }
            StreamItem::Event(e) => {
                timeline.event(e.seq, &e.kind, &e.summary);
                continue;
            }
            StreamItem::Text(text) => {
                if !prefix {
                    timeline.text(&text);
                }
                continue;
            }
            StreamItem::Idle(view) | StreamItem::End(view) => view,
        };
        timeline.end_text();
        if let Some(error) = &view.drive_error {
            bail!("retrace serve could not drive run {run}: {error}");
        }
        return Ok(report(&view, &stop_of(&view), true));
    }
    bail!(
        "retrace serve stopped before run {run} did; the run continues from its log when the daemon starts again (or with `retrace resume {short}` without it)"
    )
}

/// How a drive stopped, as its view tells.
fn stop_of(view: &RunView) -> Stop {
    match view.outcome {
        Some(outcome) => Stop::Finished(outcome),
        None if view.parked => Stop::Parked(view.status.clone()),
        None => Stop::Interrupted,
    }
}

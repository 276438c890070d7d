//! One module per subcommand; [`run`] dispatches.

mod answer;
mod approve;
mod audit;
mod bundle;
mod cassette;
mod check;
mod daemon;
mod diff;
mod eval;
mod export_otel;
mod fork;
mod import_run;
mod inspect;
mod log;
mod migrate;
mod resolve;
mod run;
mod runs;
mod serve;
mod show;
mod signal;
mod timeline;
mod tools;
mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Execute the parsed command line.
#[allow(clippy::too_many_lines, reason = "one arm per command")]
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // a bad --as is refused whatever the command; the name is picked where one decides
    if cli.as_name.is_some() {
        crate::identity::decider(cli.as_name.as_deref())?;
    }
    let by = || crate::identity::decider(cli.as_name.as_deref());
    match cli.command {
        Command::Run {
            spec,
            input,
            input_file,
            record_cassette,
            new,
            detach,
        } => run::run(
            &cli.store,
            &spec,
            input,
            input_file.as_deref(),
            record_cassette.as_deref(),
            new,
            detach,
        ),
        Command::Serve(args) => serve::run(&cli.store, args),
        Command::Cancel { run, reason } => {
            signal::cancel(&cli.store, &run, reason.as_deref(), &by()?)
        }
        Command::Signal {
            run,
            name,
            message,
            payload,
        } => signal::run(
            &cli.store,
            &run,
            name.as_deref(),
            message.as_deref(),
            payload.as_deref(),
            &by()?,
        ),
        Command::Resume { run } => run::resume(&cli.store, &run),
        Command::Resolve {
            run,
            call,
            retry,
            skip_with,
            fail,
            note,
        } => {
            let how = match (retry, skip_with.as_deref(), fail) {
                (true, None, false) => resolve::Given::Retry,
                (false, Some(file), false) => resolve::Given::SkipWith(file),
                (false, None, true) => resolve::Given::Fail,
                _ => anyhow::bail!("choose one of --retry, --skip-with FILE, --fail"),
            };
            resolve::run(
                &cli.store,
                &run,
                call.as_deref(),
                how,
                note.as_deref(),
                &by()?,
            )
        }
        Command::Approve {
            run,
            call,
            deny,
            note,
        } => approve::run(
            &cli.store,
            &run,
            call.as_deref(),
            deny,
            note.as_deref(),
            &by()?,
        ),
        Command::Answer {
            run,
            call,
            choice,
            text,
        } => answer::run(
            &cli.store,
            &run,
            call.as_deref(),
            choice,
            text.as_deref(),
            &by()?,
        ),
        Command::Runs { json } => runs::run(&cli.store, json),
        Command::Eval {
            suite,
            jobs,
            json,
            junit,
        } => eval::run(&cli.store, &suite, jobs, json.as_deref(), junit.as_deref()),
        Command::Export {
            runs,
            with_forks,
            output,
        } => bundle::export(&cli.store, &runs, with_forks, &output),
        Command::Import { file } => bundle::import(&cli.store, &file),
        command @ (Command::ImportRun { .. }
        | Command::Cassette { .. }
        | Command::ExportOtel { .. }) => exchange(&cli.store, command),
        Command::Check {
            runs,
            all,
            tree,
            json,
        } => check::run(&cli.store, &runs, all, tree, json),
        Command::Audit { since, who, json } => {
            audit::check_who(who.as_deref())?;
            audit::run(
                &cli.store,
                &audit::Options {
                    since: since.as_deref(),
                    who: who.as_deref(),
                    json,
                },
            )
        }
        Command::Verify { run, no_blobs } => verify::run(&cli.store, run.as_deref(), !no_blobs),
        Command::Migrate { from, to } => migrate::run(&from, &to),
        Command::Log {
            run,
            from,
            to,
            json,
        } => log::run(&cli.store, &run, from, to, json),
        Command::Show { at, json, request } => {
            if request {
                show::request(&cli.store, &at, json)
            } else {
                show::run(&cli.store, &at, json)
            }
        }
        Command::Diff { a, b, json } => diff::run(&cli.store, &a, &b, json),
        Command::Fork { at, edit } => fork::run(&cli.store, &at, edit.as_deref()),
        Command::Inspect { at } => inspect::run(&cli.store, at.as_deref()),
        Command::Tools { spec, json } => tools::run(&spec, json),
    }
}

/// Runs in and out of other formats: `import-run`, `cassette`, `export-otel`.
fn exchange(store: &std::path::Path, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::ImportRun {
            format,
            files,
            name,
            json,
        } => import_run::run(store, &format, &files, name.as_deref(), json),
        Command::Cassette { run, output } => cassette::run(store, &run, output.as_deref()),
        Command::ExportOtel {
            runs,
            output,
            endpoint,
            no_content,
        } => export_otel::run(
            store,
            &runs,
            output.as_deref(),
            endpoint.as_deref(),
            !no_content,
        ),
        _ => unreachable!("not a command of exchange"),
    }
}

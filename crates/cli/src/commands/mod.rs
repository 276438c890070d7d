//! One module per subcommand; [`run`] dispatches.

mod demo;
mod runs;
mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Execute the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo => demo::run(&cli.store),
        Command::Runs { json } => runs::run(&cli.store, json),
        Command::Verify { run, no_blobs } => verify::run(&cli.store, run.as_deref(), !no_blobs),
    }
}

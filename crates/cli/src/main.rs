//! `retrace`: the command-line tool. Each subcommand lives in `commands/`; `store_access`
//! is the one way commands reach a store.

mod cli;
mod commands;
mod output;
mod store_access;
mod target;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

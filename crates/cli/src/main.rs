//! `retrace`: the command-line tool. Each subcommand lives in `commands/`; `store_access`
//! is the one way commands reach a store.

mod cli;
mod commands;
mod identity;
use retrace_replay::describe as output;
mod store_access;
mod target;

use std::process::ExitCode;

use clap::Parser;

/// Exit status of a command line retrace cannot parse (sysexits' `EX_USAGE`): apart from 2,
/// which says a run failed, an eval case failed or `check` found a divergence, so that a typo
/// in CI is never read as a regression.
const USAGE: u8 = 64;

fn main() -> ExitCode {
    // `retrace __sandbox-exec …`: this process is exec.run's sandbox helper. It must confine
    // itself while still single-threaded, so before anything else (signals, tracing, threads).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == retrace_sandbox::process::HELPER_ARG)
    {
        retrace_sandbox::process::helper_main(std::env::args_os().skip(2).collect());
    }
    // `retrace runs | head`: a closed pipe ends the process quietly, as for any Unix tool,
    // instead of a panic on the next print
    sigpipe::reset();
    // Diagnostics go to stderr, filtered by RUST_LOG (default: warnings only).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are answers, not errors
            let code = if e.use_stderr() { USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

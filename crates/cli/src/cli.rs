//! Command-line syntax (clap). `retrace --help` is generated from these doc comments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Durable, time-travelling AI-agent runs on an append-only event log.
#[derive(Debug, Parser)]
#[command(name = "retrace", version, about)]
pub struct Cli {
    /// Store directory (a sled database).
    #[arg(long, global = true, env = "RETRACE_STORE", default_value = ".retrace")]
    pub store: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record a sample agent run (model calls, a tool call, an approval) and verify it.
    ///
    /// A stand-in for `retrace run` until the agent runtime lands: it writes the events a
    /// short job would, through the same store API, so every other command has data.
    Demo,
    /// List the runs in the store.
    Runs {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
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
}

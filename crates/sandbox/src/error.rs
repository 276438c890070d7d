//! What can go wrong running a tool, each saying which limit or which file.

use std::path::PathBuf;

/// A limit the host enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Fuel (instructions executed).
    Fuel(u64),
    /// Wall time, in milliseconds.
    WallTime(u64),
    /// Linear memory, in bytes.
    Memory(u64),
    /// Bytes written to stdout.
    Output(usize),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Fuel(n) => write!(f, "fuel limit of {n} units"),
            Limit::WallTime(ms) => write!(f, "wall-time limit of {ms} ms"),
            Limit::Memory(b) => write!(f, "memory limit of {} MiB", b >> 20),
            Limit::Output(b) => write!(f, "output limit of {} KiB", b >> 10),
        }
    }
}

/// Why a tool did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module file could not be read.
    #[error("cannot read WASM module {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a component this host can run.
    #[error(
        "{} is not a WASI command component ({why}); {}",
        path.display(),
        crate::BUILD_HINT
    )]
    NotACommand {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        why: String,
    },
    /// A preopened directory cannot be opened.
    #[error("cannot preopen {} as `{guest}`: {why}", host.display())]
    Preopen {
        /// Directory on the host.
        host: PathBuf,
        /// Its name inside the guest.
        guest: String,
        /// Why.
        why: String,
    },
    /// The guest hit a limit and was stopped.
    #[error("stopped: the tool exceeded its {limit}{}", diagnostics(stderr))]
    Limit {
        /// Which limit.
        limit: Limit,
        /// What the guest wrote to stderr before.
        stderr: String,
    },
    /// The guest trapped (a bug in the tool: panic, out-of-bounds, unreachable).
    #[error("the tool crashed: {trap}{}", diagnostics(stderr))]
    Trap {
        /// wasmtime's description.
        trap: String,
        /// What the guest wrote to stderr.
        stderr: String,
    },
    /// The host itself failed (engine setup).
    #[error("sandbox: {0}")]
    Host(String),
}

fn diagnostics(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

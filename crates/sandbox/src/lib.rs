//! # retrace-sandbox
//!
//! The wasmtime host that runs untrusted tools. A tool is a WASI preview 2 command component
//! (Rust: `--target wasm32-wasip2`): it reads its JSON arguments on stdin, writes its JSON
//! result on stdout, and says why it failed on stderr with a non-zero exit. The host holds
//! every limit:
//!
//! - **CPU**: fuel (instructions, deterministic) and an epoch deadline (wall time), checked
//!   every 10 ms; at each check the guest yields to tokio, so a busy guest never holds an
//!   executor thread for longer than that;
//! - **memory**: a cap on linear memory; growing past it traps;
//! - **output**: stdout beyond a hard ceiling traps (the caller cuts what it keeps further);
//! - **filesystem**: only the preopened directories, read-only or read-write;
//! - **network**: none — TCP, UDP and name lookup are all refused;
//! - **environment**: empty except the variables passed in.
//!
//! Components are compiled once per content hash and kept pre-linked, so a repeated call
//! only instantiates (tens of microseconds); with a cache directory, compiled code also
//! survives the process. This crate does no policy and knows nothing of the log: the runtime
//! turns a tool's manifest into a [`Call`] and the [`Output`] or [`Error`] into a recorded
//! tool result.
//!
//! Native commands (`exec.run`) run in a Linux process sandbox instead: see [`process`].
//!
//! The wasmtime host is the default feature `wasm`; without it only [`process`] (and the
//! error types) remain, and nothing of wasmtime is built.

mod error;
#[cfg(feature = "wasm")]
mod host;
pub mod process;

pub use error::{Error, Limit};
#[cfg(feature = "wasm")]
pub use host::{Call, Limits, Module, Output, Preopen, Sandbox};

/// How to build WASM tools, as errors about a missing or unusable component say it: the
/// commands for retrace's own tools (`wasm/`, where the examples' manifests look for them),
/// run from the project root, and what a tool of one's own must be.
pub const BUILD_HINT: &str = "build retrace's WASM tools from the project root with `rustup target add \
     wasm32-wasip2` then `cargo build --release --target wasm32-wasip2 --manifest-path \
     wasm/Cargo.toml --target-dir target/wasm`; a tool of your own must be a WASI preview 2 \
     command component (Rust: `--target wasm32-wasip2`)";

//! # retrace-sandbox
//!
//! wasmtime host for untrusted tools: fuel and epoch limits, memory caps, WASI preopens,
//! no network.
//!
//! Status: placeholder until the sandbox issue (wasmtime 48 is added then).

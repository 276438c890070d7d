//! Fuzz target `mcp_result`: see `retrace_fuzz::mcp_result`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::mcp_result(data));

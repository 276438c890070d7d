//! Fuzz target `anthropic_sse`: see `retrace_fuzz::anthropic_sse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::anthropic_sse(data));

//! Fuzz target `openai_sse`: see `retrace_fuzz::openai_sse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::openai_sse(data));

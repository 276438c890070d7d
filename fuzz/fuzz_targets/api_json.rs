//! Fuzz target `api_json`: see `retrace_fuzz::api_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::api_json(data));

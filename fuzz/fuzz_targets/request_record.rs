//! Fuzz target `request_record`: see `retrace_fuzz::request_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::request_record(data));

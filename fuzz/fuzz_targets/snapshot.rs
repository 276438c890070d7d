//! Fuzz target `snapshot`: see `retrace_fuzz::snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::snapshot(data));

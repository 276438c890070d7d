//! Fuzz target `spec`: see `retrace_fuzz::spec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::spec(data));

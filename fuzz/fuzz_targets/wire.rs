//! Fuzz target `wire`: see `retrace_fuzz::wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::wire(data));

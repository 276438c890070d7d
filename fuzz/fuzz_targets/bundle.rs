//! Fuzz target `bundle`: see `retrace_fuzz::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::bundle(data));

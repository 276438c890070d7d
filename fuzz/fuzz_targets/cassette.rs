//! Fuzz target `cassette`: see `retrace_fuzz::cassette`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::cassette(data));

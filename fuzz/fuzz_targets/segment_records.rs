//! Fuzz target `segment_records`: see `retrace_fuzz::segment_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::segment_records(data));

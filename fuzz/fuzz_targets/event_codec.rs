//! Fuzz target `event_codec`: see `retrace_fuzz::event_codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::event_codec(data));

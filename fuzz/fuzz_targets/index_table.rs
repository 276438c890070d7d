//! Fuzz target `index_table`: see `retrace_fuzz::index_table`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::index_table(data));

//! Fuzz target `import`: see `retrace_fuzz::import`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| retrace_fuzz::import(data));

//! Fuzz target `config`: see `portcullis_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::config(data));

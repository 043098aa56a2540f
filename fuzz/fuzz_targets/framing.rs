//! Fuzz target `framing`: see `portcullis_fuzz::framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::framing(data));

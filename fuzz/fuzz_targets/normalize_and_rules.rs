//! Fuzz target `normalize_and_rules`: see `portcullis_fuzz::normalize_and_rules`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::normalize_and_rules(data));

//! Fuzz target `problem_and_headers`: see `portcullis_fuzz::problem_and_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::problem_and_headers(data));

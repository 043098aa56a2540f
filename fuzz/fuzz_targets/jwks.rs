//! Fuzz target `jwks`: see `portcullis_fuzz::jwks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::jwks(data));

//! Fuzz target `revocation`: see `portcullis_fuzz::revocation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::revocation(data));

//! Fuzz target `audit_verify`: see `portcullis_fuzz::audit_verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::audit_verify(data));

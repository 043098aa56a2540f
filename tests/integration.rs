//! End-to-end tests: the real gateway on loopback, real TLS, a real mock upstream.

// Tests assert by unwrapping: a failure is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod common;

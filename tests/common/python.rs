//! Real client SDKs, run as Python programs against the gateway.
//!
//! When `python3` or the SDK's module is missing the test skips with a printed reason, unless
//! PORTCULLIS_REQUIRE_SDKS=1 (as CI sets, after installing the pinned SDKs), which turns the skip
//! into a failure.

use std::process::Command;

/// Whether `python3` can import `module`; prints why not (or fails when SDKs are required).
pub fn has_module(module: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var("PORTCULLIS_REQUIRE_SDKS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "PORTCULLIS_REQUIRE_SDKS=1 but the Python module {module} is not installed"
        );
        println!(
            "SKIPPED: the Python module {module} is not installed (pip install -r tests/sdk/requirements.txt to run this test)"
        );
    }
    found
}

/// Runs `python3 script args...` (off the async runtime) and returns its last stdout line,
/// failing the test with its output when it exits non-zero.
pub async fn run(script: &str, args: Vec<String>) -> String {
    let script = script.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&script)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the SDK program failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout.lines().last().unwrap_or_default().to_owned()
}

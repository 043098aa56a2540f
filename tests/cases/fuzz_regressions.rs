//! The fuzz corpus as regression tests: every seed and every input the fuzzer once crashed on
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) replayed through the same harness the
//! libFuzzer targets run, without libFuzzer, so ordinary CI keeps them fixed.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

/// A harness: runs one input, panics on a failure.
type Harness = fn(&[u8]);

/// The targets, by the directory name their inputs are kept under.
const TARGETS: [(&str, Harness); 8] = [
    ("config", harness::config),
    ("jwt", harness::jwt),
    ("jwks", harness::jwks),
    ("normalize_and_rules", harness::normalize_and_rules),
    ("problem_and_headers", harness::problem_and_headers),
    ("audit_verify", harness::audit_verify),
    ("revocation", harness::revocation),
    ("framing", harness::framing),
];

#[test]
fn fuzz_seeds_and_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for kind in ["seeds", "regressions"] {
        let base = root.join(kind);
        // `regressions/` exists once the fuzzer has found something (git keeps no empty folder).
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries {
            let dir = entry.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let Some((_, run)) = TARGETS.iter().find(|(t, _)| *t == name) else {
                panic!("{} is not a fuzz target's directory", dir.display());
            };
            for file in std::fs::read_dir(&dir).unwrap() {
                let path = file.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                // A failing input names itself before the harness panics.
                eprintln!("replaying {}", path.display());
                run(&data);
                replayed += 1;
            }
        }
    }
    assert!(
        replayed > 0,
        "no fuzz inputs found under {}",
        root.display()
    );
}

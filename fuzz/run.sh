#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60), one after another, and fails on the first
# crash, panic, timeout or out-of-memory. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# The growing corpus is kept in fuzz/corpus/<target>/ (not committed), seeded from
# fuzz/seeds/<target>/ and fuzz/regressions/<target>/. A crashing input lands in
# fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ with the fix, so the root
# crate's `fuzz_regressions` test replays it in every `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
targets=(config jwt jwks normalize_and_rules problem_and_headers audit_verify revocation)
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

cargo +nightly fuzz build
mkdir -p logs
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "regressions/$target"
  echo "== $target: ${seconds}s"
  # -timeout: one input running this long is a hang; -rss_limit_mb: a bounded memory budget.
  if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"logs/$target.log" 2>&1; then
    tail -n 40 "logs/$target.log"
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "logs/$target.log" |
    sed "s/^/  /"
done
echo "all targets ran ${seconds}s without a crash"

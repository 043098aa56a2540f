#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60), P at a time (default 1), and fails on any
# crash, panic, timeout or out-of-memory. Needs cargo-fuzz (`cargo install cargo-fuzz`).
#
#   fuzz/run.sh [seconds] [parallel]
#
# FUZZ_SANITIZER picks the build: `address` (the default, AddressSanitizer; needs a nightly
# toolchain: `rustup toolchain install nightly`) or `none` (the stable toolchain; what CI runs).
# Both builds have debug assertions and overflow checks on. The crate forbids `unsafe`, so a
# sanitizer mostly watches dependencies' C code; panics, hangs, overflows and memory blow-ups are
# caught either way.
#
# The growing corpus is kept in fuzz/corpus/<target>/ (not committed), seeded from
# fuzz/seeds/<target>/ and fuzz/regressions/<target>/. A crashing input lands in
# fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ with the fix, so the root
# crate's `fuzz_regressions` test replays it in every `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
parallel="${2:-1}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=(config jwt jwks normalize_and_rules problem_and_headers audit_verify revocation framing)

toolchain=()
if [ "$sanitizer" != none ]; then
  toolchain=(+nightly)
fi
flags=(--sanitizer "$sanitizer" --debug-assertions)

cargo "${toolchain[@]}" fuzz build "${flags[@]}"
mkdir -p logs

# One target for `seconds`; its log in logs/<target>.log.
run_one() {
  local target="$1"
  mkdir -p "corpus/$target" "regressions/$target"
  # -timeout: one input running this long is a hang; -rss_limit_mb: a bounded memory budget.
  cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" \
    "corpus/$target" "seeds/$target" "regressions/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$target.log" 2>&1
}

failed=()
for ((i = 0; i < ${#targets[@]}; i += parallel)); do
  batch=("${targets[@]:i:parallel}")
  pids=()
  for target in "${batch[@]}"; do
    echo "== $target: ${seconds}s"
    run_one "$target" &
    pids+=($!)
  done
  for j in "${!batch[@]}"; do
    target="${batch[$j]}"
    if wait "${pids[$j]}"; then
      grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
        "logs/$target.log" | sed "s/^/  $target /"
    else
      tail -n 40 "logs/$target.log"
      echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
      failed+=("$target")
    fi
  done
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s each without a crash"

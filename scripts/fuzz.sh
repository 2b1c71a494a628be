#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 60) each, from the
# seed corpus in fuzz/corpus/TARGET; new inputs go to a scratch directory,
# so the repository's corpus only changes by hand. Prints, per target, the
# executions run and whether it crashed; exits non-zero on any crash (the
# reproducer is in fuzz/artifacts/TARGET/).
#
#   FUZZ_SECONDS=600 make fuzz            # the long run
#   FUZZ_TARGETS="queries procfs" make fuzz
#   FUZZ_JOBS=1 make fuzz                 # one target at a time (default: one per CPU)
#
# Built with debug assertions (overflow checks) and without a sanitizer:
# ASan needs a nightly compiler, and the fuzzed code has no `unsafe`
# (the agent's is only in sys/).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
flags=(--release --debug-assertions --sanitizer none)
cargo fuzz build "${flags[@]}" >/dev/null
# One target per CPU at a time (libFuzzer runs one process each).
jobs=${FUZZ_JOBS:-$(nproc)}
run_one() {
    local target=$1 log="$scratch/$1.log" max_len=4096
    mkdir -p "$scratch/$target"
    case $target in nettrace | elf | assembly) max_len=65536 ;; esac
    if cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        echo ok >"$scratch/$target.result"
    else
        echo "CRASH (fuzz/artifacts/$target/)" >"$scratch/$target.result"
    fi
}
running=0
for target in $targets; do
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
failed=0
printf '%-14s %12s %8s  %s\n' target executions seconds result
for target in $targets; do
    log="$scratch/$target.log"
    result=$(cat "$scratch/$target.result" 2>/dev/null || echo "no result")
    if [ "$result" != ok ]; then
        failed=1
        tail -n 30 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    printf '%-14s %12s %8s  %s\n' "$target" "${runs:-?}" "$seconds" "$result"
done
exit "$failed"

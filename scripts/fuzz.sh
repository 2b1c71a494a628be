#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 60) each, from the
# seed corpus in fuzz/corpus/TARGET; new inputs go to a scratch directory,
# so the repository's corpus only changes by hand. Prints, per target, the
# executions run and whether it crashed; exits non-zero on any crash (the
# reproducer is in fuzz/artifacts/TARGET/).
#
#   FUZZ_SECONDS=600 make fuzz            # the long run
#   FUZZ_TARGETS="queries procfs" make fuzz
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
failed=0
printf '%-14s %12s %8s  %s\n' target executions seconds result
for target in $targets; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    max_len=4096
    [ "$target" = nettrace ] && max_len=65536
    if cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (fuzz/artifacts/$target/)"
        failed=1
        tail -n 30 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    printf '%-14s %12s %8s  %s\n' "$target" "${runs:-?}" "$seconds" "$result"
done
exit "$failed"

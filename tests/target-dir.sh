#!/usr/bin/env bash
# CARGO_TARGET_DIR outside the checkout, as many Rust users have it: the
# images, the e2e (the minimal scenario) and the manifest check must find
# their binaries there (scripts/target_dir.py asks cargo), and nothing may
# be written into the checkout's own target/.
#
# With --all (what `make test` runs) it is also the suite's one release
# build: every e2e scenario, the manifest check and the unattended demo run
# from the same outside directory, so nothing is built twice.
#
# The outside directory is kept between runs (TRACECAR_OUTSIDE_TARGET,
# default /var/tmp/tracecar-outside-target), so a rerun builds
# incrementally; the first run on a machine builds from scratch.
set -euo pipefail
all=0
case "${1:-}" in
    --all) all=1 ;;
    "") ;;
    *) echo "usage: tests/target-dir.sh [--all]" >&2; exit 64 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUTSIDE=${TRACECAR_OUTSIDE_TARGET:-/var/tmp/tracecar-outside-target}
case "$OUTSIDE" in "$ROOT"/*) echo "target-dir: $OUTSIDE is inside the checkout" >&2; exit 2 ;; esac
mkdir -p "$OUTSIDE"
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
export CARGO_TARGET_DIR=$OUTSIDE

asked=$(python3 scripts/target_dir.py)
[ "$asked" = "$OUTSIDE" ] || { echo "target-dir: scripts/target_dir.py says $asked, not $OUTSIDE" >&2; exit 1; }
echo "target-dir: CARGO_TARGET_DIR=$OUTSIDE"
bash scripts/images.sh
if [ "$all" = 1 ]; then
    python3 tests/e2e.py
else
    python3 tests/e2e.py --scenario minimal
fi
cargo build --locked -q -p tracecar-webhook --bin tracecar-webhook -p kubectl-tracecar --bin kubectl-tracecar
if [ "$all" = 1 ]; then
    bash tests/manifests.sh
    make --no-print-directory demo-check
else
    bash tests/manifests.sh >/dev/null
fi
# What the scripts used came from there.
for bin in release/tracecar-agent release/tracecar-webhook release/kubectl-tracecar images/tracecar-agent debug/tracecar-webhook debug/kubectl-tracecar; do
    [ -x "$OUTSIDE/$bin" ] || { echo "target-dir: $OUTSIDE/$bin missing" >&2; exit 1; }
done
written=$(find "$ROOT/target" -newer "$marker" -print 2>/dev/null | head -5 || true)
if [ -n "$written" ]; then
    echo "target-dir: written inside the checkout although CARGO_TARGET_DIR is elsewhere:" >&2
    echo "$written" >&2
    exit 1
fi
echo "target-dir: passed (nothing written to $ROOT/target)"

#!/usr/bin/env bash
# `make demo`: the whole product on this machine. Builds the images, injects
# the example Deployment offline, then runs the real flow — webhook over
# HTTPS → mutated pod → podman kube play → kubectl tracecar (podman mode) —
# and leaves the results in demo-out/: pod.yaml (as mutated), flame.svg,
# uprobe.ndjson, lttng.json, and for the .NET pod demo-out/dotnet/:
# dotnet-flame.svg, dotnet-trace.ndjson, counters.ndjson, exceptions.txt,
# stacks.txt, heap.txt and heap.pb.gz, seed-trace.txt
# (the seed's two method traces on JIT code); then the same app without the
# sidecar, with the agent attached while it runs, into demo-out/attach/.
# Every step prints what it does and the equivalent command against a real
# cluster. It cleans up after itself.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${DEMO_OUT:-$ROOT/demo-out}
EXAMPLE=$ROOT/manifests/examples/deployment.yaml

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
cluster() { printf '    \033[2min a cluster: %s\033[0m\n' "$*"; }

step "Building the release binaries and the images (scripts/images.sh)"
bash "$ROOT/scripts/images.sh" | sed 's/^/    /'
cluster "podman build … && podman push <registry>/tracecar/agent:0.1.0 (docs/install.md: Installing in a cluster)"
rm -rf "$OUT" && mkdir -p "$OUT"

step "Offline injection of $(realpath --relative-to="$ROOT" "$EXAMPLE")"
"$(python3 "$ROOT/scripts/target_dir.py" release tracecar-webhook)" inject -f "$EXAMPLE" >"$OUT/deployment.injected.yaml"
say "wrote deployment.injected.yaml; what changed:"
diff -u "$EXAMPLE" "$OUT/deployment.injected.yaml" | grep '^[+-] ' | head -20 | sed 's/^/    /' || true
say "..."
cluster "tracecar-webhook inject -f deploy.yaml | kubectl apply -f -"

python3 "$ROOT/tests/e2e.py" --demo "$OUT"

step "Done. Results in $(realpath --relative-to="$PWD" "$OUT")/"
(cd "$OUT" && find . -type f | sort | sed 's|^\./|    |')
cat <<'TXT'

    Open flame.svg and dotnet/dotnet-flame.svg in a browser; the .ndjson and
    .json files are one event per line.
    Against a real cluster (docs/install.md: "Installing in a cluster"):
      kubectl apply -k manifests/overlays/self-signed      # or overlays/cert-manager
      kubectl patch deploy web -p '{"spec":{"template":{"metadata":{"annotations":{"tracecar.dev/inject":"true"}}}}}'
      kubectl tracecar profile deploy/web --seconds 30 -o flame.svg
      kubectl tracecar profile deploy/web --all -o fleet.pb.gz   # every replica, pod and node labels
      kubectl tracecar trace deploy/web --symbol calc --args long --ret long
      kubectl tracecar lttng deploy/web --events 'sample_app:*' --seconds 10 -o trace.tar.gz
      kubectl tracecar dotnet-trace deploy/orders --providers gc,Tracecar-Sample -o trace.nettrace
      kubectl tracecar counters deploy/orders
      kubectl tracecar stacks deploy/orders
      kubectl tracecar gcdump deploy/orders -o heap.pb.gz
      kubectl tracecar dump deploy/orders -o core
      kubectl tracecar trace deploy/orders --symbol FibonacciProvider::calculateFibonacciValue --args arg1:int --ret int
      kubectl tracecar attach web-6d9f        # a pod without the sidecar: the agent as an ephemeral container
TXT

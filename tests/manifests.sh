#!/usr/bin/env bash
# Renders every kustomization and every injected pod, and validates them all
# strictly against the Kubernetes 1.33 schema with kubernetes-validate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TRACECAR_WEBHOOK_BIN:-$(python3 "$ROOT/scripts/target_dir.py" debug tracecar-webhook)}
K8S_VERSION=1.33.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

validate() { # file label
    local out
    if ! out=$(kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$1" 2>&1); then
        echo "FAIL $2"; echo "$out"; return 1
    fi
    # Only cert-manager's CRDs and v1 List (a client-side wrapper) may lack
    # a schema; any other unknown kind is an error.
    if echo "$out" | grep "Couldn't find schema" | grep -v "cert-manager.io" | grep -qv "kind List "; then
        echo "FAIL $2: unknown kind"; echo "$out"; return 1
    fi
    echo "ok   $2"
}

failed=0
cp -r "$ROOT/manifests" "$work/"
"$BIN" certs --out "$work/manifests/overlays/self-signed/certs" 2>/dev/null
for k in base overlays/self-signed overlays/cert-manager examples rbac; do
    kubectl kustomize "$work/manifests/$k" >"$work/rendered.yaml"
    validate "$work/rendered.yaml" "manifests/$k" || failed=1
done

# The self-signed overlay must carry the CA into caBundle.
kubectl kustomize "$work/manifests/overlays/self-signed" | python3 -c '
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
ca = open(sys.argv[1], "rb").read()
assert len(mwc["webhooks"]) == 3, [w["name"] for w in mwc["webhooks"]]
for hook in mwc["webhooks"]:
    bundle = base64.b64decode(hook["clientConfig"]["caBundle"])
    assert bundle == ca, f"{hook['name']}: caBundle is not the generated ca.crt"
' "$work/manifests/overlays/self-signed/certs/ca.crt" && echo "ok   self-signed caBundle = ca.crt" || failed=1

# Every injected pod and workload, in every mode the fixtures cover.
for f in "$ROOT"/manifests/examples/*.yaml "$ROOT"/webhook/tests/fixtures/*.yaml "$ROOT"/webhook/tests/golden/mixed.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    "$BIN" inject -f "$f" >"$work/injected.yaml" 2>/dev/null
    validate "$work/injected.yaml" "inject $(realpath --relative-to="$ROOT" "$f")" || failed=1
done

# What `kubectl tracecar attach` sends: its ephemeral container, for both
# profiles, inside the pod it is added to. The plugin reads the pod from a
# stand-in kubectl and prints the container it would patch in.
PLUGIN=${TRACECAR_PLUGIN_BIN:-$(python3 "$ROOT/scripts/target_dir.py" debug kubectl-tracecar)}
mkdir -p "$work/bin"
cat >"$work/bin/kubectl" <<'KUBECTL'
#!/bin/sh
case "$*" in
  *"get pod web -o json"*)
    printf '%s' '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default"},"spec":{"containers":[{"name":"app","image":"tracecar/sample-app:0.1.0"}]}}' ;;
  *) echo "unexpected: kubectl $*" >&2; exit 1 ;;
esac
KUBECTL
chmod +x "$work/bin/kubectl"
for profile in minimal privileged; do
    PATH="$work/bin:$PATH" "$PLUGIN" attach web --profile "$profile" --print >"$work/ephemeral.json"
    python3 - "$work/ephemeral.json" "$work/ephemeral-pod.json" <<'PY'
import json, sys
container = json.load(open(sys.argv[1]))
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "image": "tracecar/sample-app:0.1.0"}],
                "ephemeralContainers": [container]}}
json.dump(pod, open(sys.argv[2], "w"))
PY
    validate "$work/ephemeral-pod.json" "attach --profile $profile: the ephemeral container in its pod" || failed=1
done

if [ $failed -ne 0 ]; then
    echo "manifests: FAILED"
    exit 1
fi
echo "manifests: all valid against Kubernetes $K8S_VERSION"

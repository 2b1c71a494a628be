#!/usr/bin/env bash
# `make demo`: injects the example Deployment offline and through the running
# webhook over HTTPS, and leaves the results in demo-out/.
# With --check it runs unattended and fails on any unexpected result (used
# by `make test`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${DEMO_OUT:-$ROOT/demo-out}
BIN=$ROOT/target/release/tracecar-webhook
EXAMPLE=$ROOT/manifests/examples/deployment.yaml
SVC=tracecar-webhook.tracecar-system.svc

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
cluster() { printf '    \033[2min a cluster: %s\033[0m\n' "$*"; }

step "Building tracecar-webhook (release)"
cargo build --release --quiet -p tracecar-webhook --bin tracecar-webhook
rm -rf "$OUT" && mkdir -p "$OUT"

step "Generating a CA and a serving certificate for $SVC"
"$BIN" certs --service tracecar-webhook --namespace tracecar-system --out "$OUT/certs"
say "wrote $(ls "$OUT/certs" | tr '\n' ' ')"
cluster "tracecar-webhook certs --out manifests/overlays/self-signed/certs && kubectl apply -k manifests/overlays/self-signed"

step "Offline injection of $(realpath --relative-to="$ROOT" "$EXAMPLE")"
"$BIN" inject -f "$EXAMPLE" >"$OUT/deployment.injected.yaml"
say "wrote demo-out/deployment.injected.yaml; what changed:"
diff -u "$EXAMPLE" "$OUT/deployment.injected.yaml" | grep '^[+-] ' | head -25 | sed 's/^/    /' || true
say "..."
cluster "tracecar-webhook inject -f deploy.yaml | kubectl apply -f -"

step "Starting the webhook on 127.0.0.1 (HTTPS, certificate hot reload on)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" --log warn serve --listen "127.0.0.1:$PORT" \
    --tls-cert "$OUT/certs/tls.crt" --tls-key "$OUT/certs/tls.key" 2>"$OUT/webhook.log" &
WEBHOOK_PID=$!
trap 'kill $WEBHOOK_PID 2>/dev/null || true; wait $WEBHOOK_PID 2>/dev/null || true' EXIT
CURL=(curl -sS --fail-with-body --cacert "$OUT/certs/ca.crt" --resolve "$SVC:$PORT:127.0.0.1")
for _ in $(seq 50); do
    "${CURL[@]}" "https://$SVC:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
say "ready: $("${CURL[@]}" "https://$SVC:$PORT/readyz")  (TLS verified against demo-out/certs/ca.crt)"

step "POSTing the Deployment's pod template as an AdmissionReview to /mutate"
python3 - "$EXAMPLE" >"$OUT/admission-review.json" <<'PY'
import json, sys, uuid, yaml
deploy = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "Deployment")
template = deploy["spec"]["template"]
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": dict(template.get("metadata", {}), generateName=deploy["metadata"]["name"] + "-",
                        namespace=deploy["metadata"].get("namespace", "default")),
       "spec": template["spec"]}
print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": {"uid": str(uuid.uuid4()),
                              "kind": {"group": "", "version": "v1", "kind": "Pod"},
                              "resource": {"group": "", "version": "v1", "resource": "pods"},
                              "namespace": pod["metadata"]["namespace"], "operation": "CREATE",
                              "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                              "object": pod, "dryRun": False}}, indent=1))
PY
"${CURL[@]}" -H 'Content-Type: application/json' --data-binary "@$OUT/admission-review.json" \
    "https://$SVC:$PORT/mutate" >"$OUT/admission-response.json"
python3 - "$OUT" <<'PY'
import base64, json, sys, jsonpatch, yaml
out = sys.argv[1]
review = json.load(open(f"{out}/admission-review.json"))
response = json.load(open(f"{out}/admission-response.json"))["response"]
assert response["uid"] == review["request"]["uid"], "uid not echoed"
assert response["allowed"] is True and response.get("patchType") == "JSONPatch", response
patch = json.loads(base64.b64decode(response["patch"]))
json.dump(patch, open(f"{out}/patch.json", "w"), indent=1)
pod = jsonpatch.apply_patch(review["request"]["object"], patch)
# The API server fills in generateName after admission; do the same.
pod["metadata"]["name"] = pod["metadata"].pop("generateName") + "x7k2p"
yaml.safe_dump(pod, open(f"{out}/pod.yaml", "w"), sort_keys=False)
ops = {}
for op in patch:
    ops[op["op"]] = ops.get(op["op"], 0) + 1
print(f"    response: allowed, {len(patch)} JSON Patch operations {ops}, warnings: {response.get('warnings', [])}")
names = [c["name"] for c in pod["spec"]["containers"]]
print(f"    patched pod: containers {names}, shareProcessNamespace={pod['spec'].get('shareProcessNamespace')}")
assert "tracecar" in names and pod["spec"]["shareProcessNamespace"] is True
PY
say "wrote demo-out/admission-response.json, patch.json and pod.yaml (patch applied with Python's jsonpatch)"
cluster "kubectl patch deploy web -p '{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"tracecar.dev/inject\":\"true\"}}}}}'"

step "Validating the mutated pod against the Kubernetes 1.33 schema"
kubernetes-validate --strict -k 1.33.0 "$OUT/pod.yaml" | sed 's/^/    /'

step "Re-submitting the mutated pod (reinvocation): no second injection"
python3 - "$OUT" >"$OUT/admission-review-again.json" <<'PY'
import json, sys, yaml
out = sys.argv[1]
review = json.load(open(f"{out}/admission-review.json"))
review["request"]["object"] = yaml.safe_load(open(f"{out}/pod.yaml"))
print(json.dumps(review))
PY
"${CURL[@]}" -H 'Content-Type: application/json' --data-binary "@$OUT/admission-review-again.json" \
    "https://$SVC:$PORT/mutate" | python3 -c '
import json, sys
r = json.load(sys.stdin)["response"]
assert "patch" not in r, "re-injection produced a patch"
print("    response: allowed, no patch")'

step "Metrics (/metrics)"
"${CURL[@]}" "https://$SVC:$PORT/metrics" | grep -E '^tracecar_webhook_(admission_requests_total|certificate_not_after)' | sed 's/^/    /'

step "Done. Results in $(realpath --relative-to="$PWD" "$OUT")/"
ls -1 "$OUT" | sed 's/^/    /'
cat <<'TXT'

    Against a real cluster:
      # build and push tracecar/webhook and tracecar/agent (README: "Installing in a cluster")
      tracecar-webhook certs --out manifests/overlays/self-signed/certs
      kubectl apply -k manifests/overlays/self-signed   # or manifests/overlays/cert-manager
      kubectl patch deploy web -p '{"spec":{"template":{"metadata":{"annotations":{"tracecar.dev/inject":"true"}}}}}'
      kubectl get pod -l app=web -o jsonpath='{.items[0].spec.containers[*].name}'   # app tracecar
TXT

#!/usr/bin/env python3
"""Webhook benchmark: tracecar-webhook against a bare axum+rustls ceiling.

Both servers run side by side for the whole run and are measured in
alternating rounds, so machine noise hits both alike. Each server is pinned
to CPU 0 and the load generator (oha) to CPU 1.

Usage: make bench-webhook   (or: python3 bench/webhook.py [--rounds N])
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from target_dir import release  # noqa: E402  (cargo's target directory, CARGO_TARGET_DIR included)
RELEASE = release("")


ENVELOPE = os.path.join(ROOT, "webhook", "tests", "fixtures", "admission-review.json")


def review(pod):
    """The pod in the AdmissionReview envelope the webhook's tests use."""
    review = json.load(open(ENVELOPE))
    review["request"].update(uid="bench-0000", object=pod)
    return review


def typical_pod():
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-5d8f7c9b4-",
            "namespace": "default",
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"},
            "annotations": {"tracecar.dev/inject": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b4",
                                 "uid": "0b1e0d9e-8d43-4d6c-a1a5-9b6f0d3c2a10", "controller": True}],
        },
        "spec": {
            "containers": [{
                "name": "app", "image": "registry.example/web:1.4.2",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}],
            }],
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
        },
    }


def large_pod():
    containers = []
    for c in range(20):
        env = [{"name": f"VAR_{c}_{i}", "value": f"value-{i:08}-padding-padding-padding"} for i in range(50)]
        containers.append({"name": f"c{c}", "image": "app:1", "env": env})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "large", "namespace": "default", "annotations": {"tracecar.dev/inject": "true"}},
            "spec": {"containers": containers}}


def oha(port, body, cacert, seconds, connections, rate=None):
    cmd = ["taskset", "-c", "1", "oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
           "-c", str(connections), "-m", "POST", "-H", "Content-Type: application/json", "-D", body,
           "--cacert", cacert, "--connect-to", f"tracecar-webhook.tracecar-system.svc:{port}:127.0.0.1:{port}",
           f"https://tracecar-webhook.tracecar-system.svc:{port}/mutate"]
    if rate:
        cmd += ["-q", str(rate)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    codes = result.get("statusCodeDistribution", {})
    errors = result.get("errorDistribution", {})
    ok = int(codes.get("200", 0))
    # oha cancels the requests still in flight when the duration ends and
    # reports them as "aborted due to deadline"; those are not server errors.
    bad = sum(int(v) for k, v in codes.items() if k != "200") + sum(
        int(v) for k, v in errors.items() if k != "aborted due to deadline")
    return {
        "rps": result["summary"]["requestsPerSec"],
        "p50_ms": result["latencyPercentiles"]["p50"] * 1000,
        "p99_ms": result["latencyPercentiles"]["p99"] * 1000,
        "ok": ok,
        "failed": bad,
    }


def rss_peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def wait_ready(port, cacert):
    import ssl
    ctx = ssl.create_default_context(cafile=cacert)
    ctx.check_hostname = False
    for _ in range(100):
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=ctx, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 400/500: it answers
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"server on {port} did not start")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="tracecar-bench-")
    certs = os.path.join(tmp, "certs")
    subprocess.run([os.path.join(RELEASE, "tracecar-webhook"), "certs", "--out", certs], check=True,
                   capture_output=True)
    cacert = os.path.join(certs, "ca.crt")
    bodies = {}
    for name, pod in [("typical", typical_pod()), ("large", large_pod())]:
        path = os.path.join(tmp, f"{name}.json")
        with open(path, "w") as f:
            json.dump(review(pod), f)
        bodies[name] = path
    large_kib = os.path.getsize(bodies["large"]) / 1024

    servers = {
        "ceiling": (18444, [os.path.join(RELEASE, "examples", "ceiling"), "127.0.0.1:18444",
                            os.path.join(certs, "tls.crt"), os.path.join(certs, "tls.key")]),
        "tracecar": (18443, [os.path.join(RELEASE, "tracecar-webhook"), "--log", "warn", "serve",
                             "--listen", "127.0.0.1:18443", "--tls-cert", os.path.join(certs, "tls.crt"),
                             "--tls-key", os.path.join(certs, "tls.key")]),
        # The same binary with the decision cache off: every review plans
        # and renders its patch from scratch (first pod of each workload).
        "uncached": (18445, [os.path.join(RELEASE, "tracecar-webhook"), "--log", "warn", "serve",
                             "--listen", "127.0.0.1:18445", "--tls-cert", os.path.join(certs, "tls.crt"),
                             "--tls-key", os.path.join(certs, "tls.key"), "--plan-cache", "0"]),
    }
    procs = {}
    try:
        for name, (port, cmd) in servers.items():
            procs[name] = subprocess.Popen(["taskset", "-c", "0"] + cmd)
        for name, (port, _) in servers.items():
            wait_ready(port, cacert)

        runs = {name: {"max": [], "at1000": [], "large_max": [], "large_at200": []} for name in servers}
        for r in range(args.rounds):
            for name, (port, _) in servers.items():
                runs[name]["max"].append(oha(port, bodies["typical"], cacert, args.seconds, 16))
                runs[name]["at1000"].append(oha(port, bodies["typical"], cacert, args.seconds, 8, rate=1000))
                runs[name]["large_max"].append(oha(port, bodies["large"], cacert, args.seconds, 16))
                runs[name]["large_at200"].append(oha(port, bodies["large"], cacert, args.seconds, 4, rate=200))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        rss = {name: rss_peak_kib(p.pid) / 1024 for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGINT)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    def med(name, kind, field):
        return statistics.median(run[field] for run in runs[name][kind])

    failed = sum(run["failed"] for name in runs for kind in runs[name] for run in runs[name][kind])
    t, c, u = "tracecar", "ceiling", "uncached"
    print()
    print(f"tracecar webhook benchmark: {args.rounds} interleaved rounds of {args.seconds}s per measurement,")
    print("servers pinned to CPU 0, oha to CPU 1; TLS 1.3 keep-alive; medians over rounds.")
    print(f"typical pod review: {os.path.getsize(bodies['typical'])} bytes; large pod review: {large_kib:.0f} KiB (20 containers, 1000 env vars)")
    print()
    print("| measurement | tracecar | tracecar, cache off | ceiling | tracecar/ceiling | cache off/ceiling |")
    print("|---|---|---|---|---|---|")
    rows = [
        ("typical: max throughput (req/s), 16 conns", "max", "rps", "{:.0f}"),
        ("typical: p50 at 1000 req/s (ms)", "at1000", "p50_ms", "{:.2f}"),
        ("typical: p99 at 1000 req/s (ms)", "at1000", "p99_ms", "{:.2f}"),
        ("large: max throughput (req/s), 16 conns", "large_max", "rps", "{:.0f}"),
        ("large: p50 at 200 req/s (ms)", "large_at200", "p50_ms", "{:.2f}"),
        ("large: p99 at 200 req/s (ms)", "large_at200", "p99_ms", "{:.2f}"),
    ]
    for label, kind, field, fmt in rows:
        a, b, x = med(t, kind, field), med(c, kind, field), med(u, kind, field)
        print(f"| {label} | {fmt.format(a)} | {fmt.format(x)} | {fmt.format(b)} | {a / b:.2f} | {x / b:.2f} |")
    print(f"| peak RSS (MiB) | {rss[t]:.1f} | {rss[u]:.1f} | {rss[c]:.1f} | {rss[t] / rss[c]:.2f} | {rss[u] / rss[c]:.2f} |")
    print(f"| failed requests (all servers, all runs) | {failed} | | | | |")
    print()
    targets = [
        ("typical p99 at 1000 req/s <= 2 ms", med(t, "at1000", "p99_ms") <= 2.0),
        ("typical max throughput >= 70% of ceiling", med(t, "max", "rps") >= 0.7 * med(c, "max", "rps")),
        ("large p99 <= 20 ms", med(t, "large_at200", "p99_ms") <= 20.0),
        ("large p99 <= 20 ms with the cache off", med(u, "large_at200", "p99_ms") <= 20.0),
        ("peak RSS <= 30 MiB", max(rss[t], rss[u]) <= 30.0),
        ("no failed requests", failed == 0),
    ]
    for label, ok in targets:
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    print(f"info: with the cache off (first pod of each workload) throughput is "
          f"{med(u, 'max', 'rps') / med(c, 'max', 'rps'):.0%} of the ceiling")


if __name__ == "__main__":
    main()

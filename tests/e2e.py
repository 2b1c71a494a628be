#!/usr/bin/env python3
"""End to end: the webhook's patch, run as a real pod by podman, driven by
the kubectl plugin.

  1. `tracecar-webhook certs` makes a CA and a serving certificate;
     `tracecar-webhook serve` runs with them on 127.0.0.1.
  2. The pod template of manifests/examples/deployment.yaml is wrapped in an
     AdmissionReview and POSTed over HTTPS (curl verifies the CA).
  3. The returned JSON Patch is applied (Python's jsonpatch, not our code)
     and the pod is validated with `kubernetes-validate --strict` (1.33).
  4. `podman kube play` runs it, after the emulation below.
  5. Through `kubectl-tracecar --runtime podman` (podman exec … curl in the
     sidecar): the app is listed (shared PID namespace); a profile puts most
     samples in fib() and names the JIT-style frame from the app's perf map
     in the shared /tmp; uprobes on calc() and fib() return the right
     arguments and return values; an LTTng recording has the app's
     sample_app:request events (so the shared /var/run/lttng works), and
     so does a live session through lttng-relayd.
  6. Teardown leaves no pod, container, volume, iptables rule or host
     directory behind (checked).

The flow runs with the default `minimal` profile and with
`tracecar.dev/profile: privileged`. With --demo OUT it runs once (minimal),
says what it does and what the cluster equivalent is, and leaves flame.svg,
uprobe.ndjson, lttng.json and the pod YAML in OUT.

What podman 4.3 needs that a cluster does not (done here, to the copy that
is played, never to the validated pod): the container seccomp annotation
`container.seccomp.security.alpha.kubernetes.io/tracecar: unconfined`
(podman ignores seccompProfile, which the sidecar sets to Unconfined);
literal values for the namespace and node-name fieldRefs it does not
support; no `tracecar.dev/status` annotation (it rejects annotation values
over 63 characters); `imagePullPolicy: Never` for the app (nothing can be
pulled here; the injector's config says Never for the sidecar). The
webhook runs in its default `container` sidecar mode: podman cannot run
native sidecars.

Usage: make e2e  (or: python3 tests/e2e.py [--profile minimal|privileged] [--demo OUT])
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import jsonpatch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
WEBHOOK = os.path.join(RELEASE, "tracecar-webhook")
PLUGIN = os.path.join(RELEASE, "kubectl-tracecar")
EXAMPLE = os.path.join(ROOT, "manifests", "examples", "deployment.yaml")
SERVICE = "tracecar-webhook.tracecar-system.svc"
os.environ["CONTAINERS_CONF"] = os.environ.get("CONTAINERS_CONF",
                                               os.path.join(ROOT, "tests", "podman", "containers.conf"))

NARRATE = False


def step(text):
    print(f"\n\033[1m==> {text}\033[0m" if NARRATE else f"e2e: {text}", flush=True)


def say(text):
    if NARRATE:
        print(f"    {text}", flush=True)


def cluster(text):
    if NARRATE:
        print(f"    \033[2min a cluster: {text}\033[0m", flush=True)


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kwargs).stdout


def plugin(pod, *args, check=True):
    out = subprocess.run([PLUGIN, "--runtime", "podman", *args[:1], pod, *args[1:]],
                         text=True, capture_output=True)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl-tracecar {' '.join(args)} failed:\n{out.stderr}")
    return out


def fib(n, memo={0: 0, 1: 1}):
    if n not in memo:
        memo[n] = fib(n - 1) + fib(n - 2)
    return memo[n]


class Webhook:
    """`tracecar-webhook serve` on 127.0.0.1 with fresh certificates."""

    def __init__(self, tmp):
        self.certs = os.path.join(tmp, "certs")
        run([WEBHOOK, "certs", "--service", "tracecar-webhook", "--namespace", "tracecar-system",
             "--out", self.certs])
        config = yaml.safe_load(open(os.path.join(ROOT, "manifests", "base", "config.yaml")))
        config["imagePullPolicy"] = "Never"  # nothing can be pulled here
        self.config = os.path.join(tmp, "config.yaml")
        yaml.safe_dump(config, open(self.config, "w"))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.log = open(os.path.join(tmp, "webhook.log"), "w")
        self.process = subprocess.Popen(
            [WEBHOOK, "--log", "warn", "serve", "--listen", f"127.0.0.1:{self.port}", "--config", self.config,
             "--tls-cert", os.path.join(self.certs, "tls.crt"), "--tls-key", os.path.join(self.certs, "tls.key")],
            stderr=self.log)
        for _ in range(100):
            if self.curl("/readyz", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError("the webhook did not become ready")

    def curl(self, path, data=None, check=True):
        argv = ["curl", "-sS", "--fail-with-body", "--cacert", os.path.join(self.certs, "ca.crt"),
                "--resolve", f"{SERVICE}:{self.port}:127.0.0.1"]
        if data is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        return subprocess.run(argv + [f"https://{SERVICE}:{self.port}{path}"], input=data, text=True,
                              capture_output=True, check=check)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


def admission_review(profile):
    deploy = next(d for d in yaml.safe_load_all(open(EXAMPLE)) if d and d.get("kind") == "Deployment")
    template = deploy["spec"]["template"]
    metadata = dict(template.get("metadata", {}), generateName=deploy["metadata"]["name"] + "-",
                    namespace=deploy["metadata"].get("namespace", "default"))
    if profile == "privileged":
        metadata["annotations"] = dict(metadata.get("annotations", {}), **{"tracecar.dev/profile": "privileged"})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()),
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": metadata["namespace"], "operation": "CREATE",
                        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                        "object": pod, "dryRun": False}}


def mutate(webhook, profile, pod_name):
    """The pod as the API server would store it after our webhook."""
    review = admission_review(profile)
    response = json.loads(webhook.curl("/mutate", json.dumps(review)).stdout)["response"]
    assert response["uid"] == review["request"]["uid"], "uid not echoed"
    assert response["allowed"] is True and response.get("patchType") == "JSONPatch", response
    patch = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply_patch(review["request"]["object"], patch)
    # The API server turns generateName into a name after admission.
    del pod["metadata"]["generateName"]
    pod["metadata"]["name"] = pod_name
    say(f"response: allowed, {len(patch)} JSON Patch operations, applied with Python's jsonpatch")
    # Reinvocation: the mutated pod gets no second patch.
    review["request"]["object"] = pod
    again = json.loads(webhook.curl("/mutate", json.dumps(review)).stdout)["response"]
    assert "patch" not in again, "re-injection produced a patch"
    return pod


def for_podman(pod):
    """The emulation described in the module doc, on a copy."""
    pod = json.loads(json.dumps(pod))
    annotations = pod["metadata"]["annotations"]
    annotations.pop("tracecar.dev/status", None)
    annotations["container.seccomp.security.alpha.kubernetes.io/tracecar"] = "unconfined"
    literal = {"metadata.namespace": pod["metadata"]["namespace"], "spec.nodeName": socket.gethostname()}
    for container in pod["spec"]["containers"]:
        container["imagePullPolicy"] = "Never"
        for env in container.get("env", []):
            field = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field in literal:
                del env["valueFrom"]
                env["value"] = literal[field]
    return pod


class HostState:
    """What the flow may leave behind, before and after."""

    DIRS = ["/usr/src", "/lib/modules"]

    def __init__(self):
        self.pods = self.podman("pod", "ps", "-q")
        self.containers = self.podman("ps", "-aq")
        self.volumes = self.podman("volume", "ls", "-q")
        self.iptables = self.rules()
        self.missing_dirs = [d for d in self.DIRS if not os.path.exists(d)]

    @staticmethod
    def podman(*args):
        return set(run(["podman", *args]).split())

    @staticmethod
    def rules():
        rules = set()
        for tool in ["iptables-save", "ip6tables-save"]:
            if shutil.which(tool):
                out = subprocess.run([tool], capture_output=True, text=True).stdout
                rules |= {l.split(" [")[0] for l in out.splitlines() if l and not l.startswith("#")}
        return rules

    def clean_up_dirs(self):
        # hostPath DirectoryOrCreate made these (this kernel has no
        # /lib/modules); remove them again if they are still empty.
        for d in self.missing_dirs:
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)

    def assert_same(self):
        after = HostState()
        assert after.pods == self.pods, f"pods left: {after.pods - self.pods}"
        assert after.containers == self.containers, f"containers left: {after.containers - self.containers}"
        assert after.volumes == self.volumes, f"volumes left: {after.volumes - self.volumes}"
        assert after.iptables == self.iptables, f"iptables changed: {after.iptables ^ self.iptables}"
        created = [d for d in self.missing_dirs if os.path.exists(d)]
        assert not created, f"host directories left: {created}"


def check_pod(name, out):
    """The checks of step 5; files go to `out`."""
    step("Waiting for the agent's socket (kubectl tracecar status)")
    deadline = time.time() + 60
    while True:
        status = plugin(name, "status", check=False)
        if status.returncode == 0 and "lttng_sessiond" in status.stdout and \
                "ok    lttng_sessiond" in status.stdout:
            break
        if time.time() > deadline:
            logs = subprocess.run(["podman", "logs", f"{name}-tracecar"], capture_output=True, text=True)
            raise AssertionError(f"agent not ready:\n{status.stdout}{status.stderr}\n{logs.stderr[-3000:]}")
        time.sleep(0.5)
    for line in status.stdout.splitlines():
        say(line)
    cluster(f"kubectl tracecar status {name}")

    step("The app's processes, seen from the sidecar (kubectl tracecar ps)")
    ps = plugin(name, "ps").stdout
    for line in ps.splitlines():
        say(line)
    app = [l.split() for l in ps.splitlines() if "sample-app" in l]
    assert len(app) == 1, f"sample-app not listed once:\n{ps}"
    pid = int(app[0][0])
    cluster(f"kubectl tracecar ps {name}")

    step("A 5-second CPU profile (kubectl tracecar profile)")
    folded = os.path.join(out, "flame.folded")
    plugin(name, "profile", "--seconds", "5", "-o", folded)
    stacks = []
    for line in open(folded):
        stack, count = line.rstrip("\n").rsplit(" ", 1)
        stacks.append((stack.split(";"), int(count)))
    total = sum(c for _, c in stacks)
    in_fib = sum(c for s, c in stacks if "fib" in s)
    in_jit = sum(c for s, c in stacks if "jit_spin" in s)
    assert total >= 100, f"only {total} samples"
    assert in_fib / total > 0.5, f"fib has {in_fib}/{total} samples"
    assert in_jit > 0, "no samples named from the perf map (jit_spin)"
    say(f"{total} samples: {100 * in_fib / total:.0f}% in fib(), {in_jit} in jit_spin (named via /tmp/perf-{pid}.map)")
    plugin(name, "profile", "--seconds", "3", "-o", os.path.join(out, "flame.svg"))
    say("wrote flame.svg")
    cluster(f"kubectl tracecar profile {name} --seconds 30 -o flame.svg")

    step("Arguments and return values of calc() and fib() (kubectl tracecar trace)")
    calls = plugin(name, "trace", "--symbol", "calc", "--args", "long", "--ret", "long", "--seconds", "10",
                   "--limit", "20", "--json").stdout.splitlines()
    events = [json.loads(l) for l in calls if l.startswith('{"ts_ns"')]
    assert len(events) == 20, calls[-3:]
    for e in events:
        assert e["pid"] == pid, e
        assert e["ret"] == 3 * e["args"][0] + 1, e
    ids = [e["args"][0] for e in events]
    assert ids == list(range(ids[0], ids[0] + 20)), ids
    with open(os.path.join(out, "uprobe.ndjson"), "w") as f:
        f.write("\n".join(calls) + "\n")
    say(f"calc({ids[0]}) = {events[0]['ret']} … calc({ids[-1]}) = {events[-1]['ret']}: 20 calls, ret = 3x+1 each")
    fibs = plugin(name, "trace", "--symbol", "fib", "--args", "int", "--ret", "long", "--seconds", "10",
                  "--limit", "200", "--json").stdout.splitlines()
    fib_events = [json.loads(l) for l in fibs if l.startswith('{"ts_ns"')]
    assert len(fib_events) == 200, fibs[-3:]
    for e in fib_events:
        assert e["ret"] == fib(e["args"][0]), e
    say("fib(): 200 returns, each equal to fib(n) for its n (recursion paired)")
    cluster(f"kubectl tracecar trace {name} --symbol calc --args long --ret long")

    step("LTTng events from the app's tracepoint provider (kubectl tracecar lttng)")
    # The app may have started before the sidecar's session daemon: it
    # registers once the daemon wakes it (through the wait shared memory).
    deadline = time.time() + 30
    while "sample_app:request" not in (listed := plugin(name, "lttng", "--list").stdout):
        assert time.time() < deadline, f"the app never registered with lttng-sessiond:\n{listed}"
        time.sleep(0.5)
    for line in listed.splitlines():
        if "sample_app" in line:
            say(line.strip())
    cluster(f"kubectl tracecar lttng {name} --list")
    lttng = os.path.join(out, "lttng.json")
    plugin(name, "lttng", "--events", "sample_app:*", "--seconds", "3", "-o", lttng)
    lines = [json.loads(l) for l in open(lttng)]
    summary = lines.pop()["summary"]
    assert len(lines) > 50, f"{len(lines)} events, summary {summary}"
    for e in lines:
        fields = e["fields"]
        assert e["event"] == "sample_app:request" and e["pid"] == pid, e
        assert fields["path"] == f"/fib/{fields['n']}?id={fields['id']}", e
        assert fields["result"] == fib(fields["n"]), e
    request_ids = [e["fields"]["id"] for e in lines]
    assert request_ids == list(range(request_ids[0], request_ids[0] + len(lines))), "ids not consecutive"
    assert summary["discarded_events"] == 0, summary
    say(f"{len(lines)} sample_app:request events, ids consecutive, discarded {summary['discarded_events']}")
    cluster(f"kubectl tracecar lttng {name} --events 'sample_app:*' --seconds 10 -o trace.tar.gz")

    step("The same events live, through lttng-relayd (kubectl tracecar lttng --live)")
    live = plugin(name, "lttng", "--live", "--events", "sample_app:*", "--seconds", "3").stdout.splitlines()
    live_events = [json.loads(l) for l in live if l.startswith('{"ts_ns"')]
    live_summary = json.loads(live[-1])["summary"]
    assert len(live_events) > 50 and live_summary["events"] == len(live_events), live[-1]
    assert all(e["event"] == "sample_app:request" and e["pid"] == pid for e in live_events)
    say(f"{len(live_events)} events streamed while recording; setup {live_summary['setup_ms']:.0f} ms")
    cluster(f"kubectl tracecar lttng {name} --live --events 'sample_app:*'")

    step("Errors read like the agent's hints")
    bad = plugin(name, "trace", "--symbol", "no_such_function", "--seconds", "1", check=False)
    assert bad.returncode != 0 and "hint:" in bad.stderr, bad.stderr
    say(bad.stderr.strip().splitlines()[0])


def flow(profile, out=None):
    tmp = tempfile.mkdtemp(prefix=f"tracecar-e2e-{profile}-")
    out = out or tmp
    name = f"tracecar-e2e-{profile}"
    before = HostState()
    webhook = None
    played = None
    try:
        step(f"[{profile}] webhook with fresh certificates on 127.0.0.1 (HTTPS)")
        webhook = Webhook(tmp)
        cluster("tracecar-webhook certs --out manifests/overlays/self-signed/certs && "
                "kubectl apply -k manifests/overlays/self-signed")

        step(f"[{profile}] the example Deployment's pod template through /mutate")
        pod = mutate(webhook, profile, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert names == ["app", "tracecar"] and pod["spec"]["shareProcessNamespace"] is True, names
        sidecar = pod["spec"]["containers"][1]["securityContext"]
        assert sidecar.get("privileged", False) == (profile == "privileged"), sidecar
        pod_yaml = os.path.join(out, "pod.yaml")
        yaml.safe_dump(pod, open(pod_yaml, "w"), sort_keys=False)
        say(f"wrote pod.yaml: containers {names}")
        cluster("kubectl annotate the Deployment's pod template with tracecar.dev/inject=true; the API server "
                "calls the webhook for each new pod")

        step(f"[{profile}] kubernetes-validate --strict (1.33)")
        run(["kubernetes-validate", "--strict", "--quiet", "-k", "1.33.0", pod_yaml])
        say("valid")

        step(f"[{profile}] podman kube play")
        played = os.path.join(out, "pod.podman.yaml")
        yaml.safe_dump(for_podman(pod), open(played, "w"), sort_keys=False)
        run(["podman", "kube", "play", played])
        say(f"pod {name}: {', '.join(run(['podman', 'ps', '--filter', f'pod={name}', '--format', '{{.Names}}']).split())}")

        check_pod(name, out)
    finally:
        step(f"[{profile}] teardown")
        if played:
            subprocess.run(["podman", "kube", "down", played], capture_output=True)
            subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", name], capture_output=True)
        if webhook:
            webhook.stop()
        before.clean_up_dirs()
        shutil.rmtree(tmp, ignore_errors=True)
    before.assert_same()
    say("nothing left behind: pods, containers, volumes, iptables rules and host directories as before")


def main():
    global NARRATE
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=["minimal", "privileged"], action="append")
    parser.add_argument("--demo", metavar="OUT")
    args = parser.parse_args()
    if os.geteuid() != 0:
        reason = "e2e: needs root (podman pods with BPF and perf)"
        if os.environ.get("TRACECAR_REQUIRE_PRIVILEGED") == "1":
            sys.exit(f"{reason}, and TRACECAR_REQUIRE_PRIVILEGED=1")
        print(f"SKIPPED {reason}")
        return
    for tool in [WEBHOOK, PLUGIN]:
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} missing: run `make images` (or make e2e)")
    if args.demo:
        NARRATE = True
        os.makedirs(args.demo, exist_ok=True)
        flow("minimal", out=args.demo)
        return
    for profile in args.profile or ["minimal", "privileged"]:
        started = time.time()
        flow(profile)
        print(f"e2e: {profile}: passed in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

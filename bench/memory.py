#!/usr/bin/env python3
"""The agent's memory against the sidecar's default limit (256 MiB).

1. One long profile: SECONDS (default 600) at 1000 Hz, pprof, of a process
   with 1,000 threads running through 100,000 JIT functions named in a
   100,000-entry perf map (bench/workloads/many_threads.c).
2. Four captures at once (the agent's limit) of the same process, 60 s,
   one per output format (svg, pprof, folded, speedscope).
3. Eight probe streams with stacks (the probe limit) whose clients never
   read, for 30 s: those past the ring budget get 429.
4. Deep stacks: profiles at 1000 Hz of a process whose every sample is a
   new 100-deep stack (agent/tests/workloads/deep_stacks.c), one agent per
   format (8 s: what answering takes per format), then one of 120 s,
   which the agent's memory bound stops (503) before the cgroup's limit.

Each scenario's agent runs in a memory cgroup of its own (cgroup v1 here)
limited to 256 MiB, as the sidecar's container is: the peak charged to it
(`memory.max_usage_in_bytes`: its heap, page cache and the kernel memory
of its BPF maps) and its OOM kills are the verdict. VmHWM (resident
high-water mark, which counts a BPF ring buffer's pages twice, since the
kernel maps them twice) and the largest RssAnon (the agent's own heap,
sampled every 100 ms) are shown too.

Usage: make bench-memory   (or: python3 bench/memory.py [--seconds N])
"""
import argparse
import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from common import AGENT, status_kib  # noqa: E402
LIMIT_MIB = 256


class Sampler(threading.Thread):
    """Largest RssAnon of `pid`, every 100 ms, until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.anon, self.running = pid, 0, True

    def run(self):
        while self.running:
            self.anon = max(self.anon, status_kib(self.pid, "RssAnon"))
            time.sleep(0.1)

    def stop(self):
        self.running = False
        self.join()
        return self.anon


CGROUPS = "/sys/fs/cgroup/memory"


def cgroup(pid):
    """A memory cgroup limited to LIMIT_MIB holding `pid`."""
    path = os.path.join(CGROUPS, f"tracecar-bench-{pid}")
    os.mkdir(path)
    with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
        f.write(str(LIMIT_MIB << 20))
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(pid))
    return path


def cgroup_read(path, name):
    with open(os.path.join(path, name)) as f:
        return f.read()


def agent(tmp):
    sock = os.path.join(tmp, "agent.sock")
    # Stopped until it is in its cgroup: nothing is allocated outside it.
    proc = subprocess.Popen(["sh", "-c", 'kill -STOP $$; exec "$@"', "sh", AGENT, "--log", "warn", "serve",
                             "--socket", sock, "--no-lttng", "--dump-dir", os.path.join(tmp, "dumps")])
    while open(f"/proc/{proc.pid}/stat").read().split(") ")[1][0] != "T":
        time.sleep(0.01)
    group = cgroup(proc.pid)
    os.kill(proc.pid, 18)  # SIGCONT
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return proc, sock, group


def curl(sock, path, out):
    return subprocess.Popen(["curl", "-s", "-o", out, "-w", "%{http_code}", "--unix-socket", sock,
                             f"http://localhost{path}"], stdout=subprocess.PIPE, text=True)


def raw_status(sock, path):
    """A request whose answer is never read past its status line."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while len(head) < 12:
        chunk = s.recv(12 - len(head))
        if not chunk:
            break
        head += chunk
    return s, head[9:12].decode()


def scenario(name, tmp, run):
    proc, sock, group = agent(tmp)
    sampler = Sampler(proc.pid)
    sampler.start()
    detail = run(sock)
    anon = sampler.stop()
    alive = proc.poll() is None
    hwm = status_kib(proc.pid, "VmHWM") if alive else 0
    charged = int(cgroup_read(group, "memory.max_usage_in_bytes")) >> 20
    oom_kills = next((int(l.split()[1]) for l in cgroup_read(group, "memory.oom_control").splitlines()
                      if l.startswith("oom_kill ")), 0)
    proc.terminate()
    proc.wait(timeout=30)
    os.rmdir(group)
    within = alive and oom_kills == 0 and charged < LIMIT_MIB
    print(f"| {name} | {charged} | {oom_kills} | {hwm / 1024:.0f} | {anon / 1024:.0f} | "
          f"{'yes' if within else 'NO'} | {detail} |", flush=True)
    return within


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("MEMORY_SECONDS", 600)))
    parser.add_argument("--only", choices=["long", "four", "probes", "deep"], action="append",
                        help="run only these scenarios (default: all four)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-memory-")
    binary = os.path.join(tmp, "many_threads")
    subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-o", binary,
                    os.path.join(ROOT, "bench/workloads/many_threads.c"), "-lpthread"], check=True)
    calls = os.path.join(tmp, "calls")
    subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-o", calls,
                    os.path.join(ROOT, "agent/tests/workloads/calls.c")], check=True)
    deep_binary = os.path.join(tmp, "deep_stacks")
    subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-o", deep_binary,
                    os.path.join(ROOT, "agent/tests/workloads/deep_stacks.c"), "-lpthread"], check=True)
    target = subprocess.Popen([binary, "1000", "100000"], stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    pid = target.pid
    probed = subprocess.Popen([calls], stdout=subprocess.DEVNULL)
    ok = True
    print(f"target: pid {pid}, {status_kib(pid, 'Threads')} threads, "
          f"{sum(1 for _ in open(f'/tmp/perf-{pid}.map'))} perf-map entries")
    print(f"| scenario | peak charged to the agent's {LIMIT_MIB} MiB cgroup (MiB) | OOM kills | VmHWM (MiB) | "
          "peak RssAnon (MiB) | within | detail |")
    print("|---|---|---|---|---|---|---|")

    def long_profile(sock):
        out = os.path.join(tmp, "long.pb.gz")
        code = curl(sock, f"/v1/profile?pid={pid}&seconds={args.seconds}&hz=1000&format=pprof", out)
        status = code.communicate()[0]
        return f"{args.seconds} s at 1000 Hz: HTTP {status}, {os.path.getsize(out) / 1024:.0f} KiB pprof"

    def four(sock):
        clients = [curl(sock, f"/v1/profile?pid={pid}&seconds=60&hz=1000&format={fmt}",
                        os.path.join(tmp, f"four.{fmt}"))
                   for fmt in ["svg", "pprof", "folded", "speedscope"]]
        statuses = [c.communicate()[0] for c in clients]
        return f"4 × 60 s at 1000 Hz: HTTP {', '.join(statuses)}"

    def probes(sock):
        results = [raw_status(sock, f"/v1/uprobe?pid={probed.pid}&symbol=calc&args=int&ret=int&stack=user&seconds=120")
                   for _ in range(8)]
        time.sleep(30)
        for s, _ in results:
            s.close()
        codes = [c for _, c in results]
        return f"8 unread probe streams with stacks, 30 s: {codes.count('200')} streaming, {codes.count('429')} refused (429, ring budget)"

    def deep_profile(deep, fmt, seconds):
        def run(sock):
            out = os.path.join(tmp, f"deep.{fmt}")
            status = curl(sock, f"/v1/profile?pid={deep.pid}&seconds={seconds}&hz=1000&kernel=false&format={fmt}",
                          out).communicate()[0]
            if status == "200":
                return f"{seconds} s, {fmt}: HTTP 200, {os.path.getsize(out) / 1024:.0f} KiB"
            with open(out) as f:
                error = json.load(f).get("error", "")
            return f"{seconds} s, {fmt}: HTTP {status}, \"{error.split(':')[0]}\""
        return run

    def deep_stacks():
        # The 1,000-thread target is stopped meanwhile: the deep workload
        # gets the CPUs.
        os.kill(pid, signal.SIGSTOP)
        deep = subprocess.Popen([deep_binary], stdout=subprocess.PIPE, text=True)
        try:
            assert deep.stdout.readline().strip() == "ready"
            within = True
            for fmt in ["folded", "pprof", "speedscope", "svg", "json"]:
                within &= scenario(f"deep stacks, 8 s, {fmt}", tmp, deep_profile(deep, fmt, 8))
            within &= scenario("deep stacks, 120 s, folded", tmp, deep_profile(deep, "folded", 120))
            return within
        finally:
            deep.kill()
            os.kill(pid, signal.SIGCONT)

    try:
        wanted = args.only or ["long", "four", "probes", "deep"]
        if "long" in wanted:
            ok &= scenario("one long profile", tmp, long_profile)
        if "four" in wanted:
            ok &= scenario("four captures at once", tmp, four)
        if "probes" in wanted:
            ok &= scenario("eight probes, clients never read", tmp, probes)
        if "deep" in wanted:
            ok &= deep_stacks()
    finally:
        target.kill()
        probed.kill()
        try:
            os.remove(f"/tmp/perf-{pid}.map")
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        sys.exit("the agent went over the sidecar's default memory limit")


if __name__ == "__main__":
    main()

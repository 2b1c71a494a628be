#!/usr/bin/env python3
"""Profiling benchmarks: tracecar-agent against Linux perf, side by side.

1. Overhead on the target: wall time of a CPU-bound workload unprofiled,
   under tracecar (fp and dwarf at 99 Hz) and under perf record (-g and
   --call-graph dwarf at 99 Hz). Configurations are interleaved round by
   round; medians are reported.
2. Time to result: from the end of a 30 s, 999 Hz capture of a 2-thread
   workload to the finished SVG, against perf script | inferno-collapse-perf
   | inferno-flamegraph on a perf.data of the same workload.
3. Agent memory: idle RSS, and peak RSS over that capture.

Usage: make bench-profile   (or: python3 bench/profile.py [--rounds N] [--quick])
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from target_dir import release  # noqa: E402  (cargo's target directory, CARGO_TARGET_DIR included)
AGENT = release("tracecar-agent")


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Agent:
    def __init__(self, tmp):
        self.socket = os.path.join(tmp, "agent.sock")
        self.proc = subprocess.Popen([AGENT, "--log", "warn", "serve", "--socket", self.socket])
        for _ in range(100):
            if self.get("/healthz", check=False) == b"ok":
                return
            time.sleep(0.05)
        raise SystemExit("agent did not start")

    def url(self, path):
        return ["curl", "-s", "--unix-socket", self.socket, f"http://localhost{path}"]

    def get(self, path, check=True, headers=None):
        cmd = self.url(path)
        if headers is not None:
            cmd += ["-D", headers]
        r = subprocess.run(cmd, capture_output=True)
        if check and r.returncode != 0:
            raise SystemExit(f"curl {path} failed")
        return r.stdout

    def background(self, path, out):
        return subprocess.Popen(self.url(path) + ["-o", out])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)


def start_workload(binary, threads, units):
    return subprocess.Popen([binary, str(threads), str(units)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def finish_workload(w):
    w.stdin.write("g")
    w.stdin.flush()
    out, _ = w.communicate()
    return float(out.strip())


def run_once(config, binary, agent, tmp, units):
    w = start_workload(binary, 1, units)
    profiler = None
    if config.startswith("tracecar"):
        unwind = config.split("-")[1]
        profiler = agent.background(f"/v1/profile?pid={w.pid}&seconds=600&hz=99&unwind={unwind}&format=folded",
                                    os.path.join(tmp, "out.folded"))
    elif config.startswith("perf"):
        mode = ["-g"] if config == "perf-fp" else ["--call-graph", "dwarf"]
        profiler = subprocess.Popen(["perf", "record", "-q", "-F", "99", *mode, "-p", str(w.pid),
                                     "-o", os.path.join(tmp, "perf.data")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # the profiler is attached and sampling
    seconds = finish_workload(w)
    if profiler:
        # perf record stops cleanly on SIGINT; curl (the tracecar client)
        # just goes away, which ends the capture. SIGTERM because a
        # background job may have SIGINT ignored.
        profiler.send_signal(signal.SIGINT if config.startswith("perf") else signal.SIGTERM)
        profiler.wait(timeout=60)
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--units", type=int, default=9000, help="work per run (~3 s)")
    parser.add_argument("--capture-seconds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 10 s capture")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.capture_seconds = 3, 10
    for tool in ["perf", "inferno-collapse-perf", "inferno-flamegraph", "gcc", "curl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bench-profile`, which installs it")

    tmp = tempfile.mkdtemp(prefix="tracecar-bench-profile-")
    binary = os.path.join(tmp, "cpu_bound")
    subprocess.run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", binary,
                    os.path.join(ROOT, "bench", "workloads", "cpu_bound.c"), "-lpthread"], check=True)
    agent = Agent(tmp)
    time.sleep(0.5)
    idle_rss = rss_kib(agent.proc.pid, "VmRSS") / 1024

    # 1. Overhead, interleaved.
    configs = ["none", "tracecar-fp", "perf-fp", "tracecar-dwarf", "perf-dwarf"]
    times = {c: [] for c in configs}
    for r in range(args.rounds):
        for c in configs:
            times[c].append(run_once(c, binary, agent, tmp, args.units))
        print(f"overhead round {r + 1}/{args.rounds} done", file=sys.stderr)
    base = statistics.median(times["none"])
    # Run-to-run noise: median absolute deviation of the unprofiled runs.
    noise = statistics.median(abs(t - base) for t in times["none"]) / base * 100

    def overhead(c):
        return (statistics.median(times[c]) / base - 1) * 100

    def paired(c, peer):
        # Runs of c and peer are adjacent in every round, so compare them
        # round by round: median difference and its median absolute deviation.
        diffs = [(a - b) / base * 100 for a, b in zip(times[c], times[peer])]
        m = statistics.median(diffs)
        return m, statistics.median(abs(d - m) for d in diffs)

    # 2. Time to result, and 3. peak memory during it.
    n = args.capture_seconds
    w = start_workload(binary, 2, 10 ** 9)
    w.stdin.write("g")
    w.stdin.flush()
    time.sleep(0.5)
    headers = os.path.join(tmp, "headers")
    t0 = time.monotonic()
    svg = agent.get(f"/v1/profile?pid={w.pid}&seconds={n}&hz=999&format=svg", headers=headers)
    total = time.monotonic() - t0
    # The agent reports how long opening the events and sampling took
    # (Server-Timing: setup, capture); everything after that, up to the last
    # byte received here, is time to result.
    timing = next(l for l in open(headers) if l.lower().startswith("server-timing:"))
    dur = lambda name: float(timing.split(f"{name};dur=")[1].split(",")[0]) / 1000
    tracecar_result = total - dur("setup") - dur("capture")
    tracecar_server = dur("result")
    peak_rss = rss_kib(agent.proc.pid, "VmHWM") / 1024
    perf_data = os.path.join(tmp, "ttr.data")
    subprocess.run(["perf", "record", "-q", "-F", "999", "-g", "-p", str(w.pid), "-o", perf_data, "--", "sleep", str(n)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Post-process while the workload still runs, as tracecar had to.
    t0 = time.monotonic()
    subprocess.run(f"perf script -i {perf_data} 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > {tmp}/perf.svg",
                   shell=True, check=True)
    perf_result = time.monotonic() - t0
    w.kill()
    w.wait()
    agent.stop()
    assert svg.startswith(b"<?xml"), "tracecar did not return an SVG"

    print()
    print(f"tracecar profiling benchmark: {args.rounds} interleaved rounds, workload {base:.2f} s unprofiled "
          f"(median), 1 thread; perf {subprocess.run(['perf', '--version'], capture_output=True, text=True).stdout.strip()}")
    print()
    print(f"run-to-run noise (median absolute deviation of the unprofiled runs): ±{noise:.2f}%")
    print()
    print("| configuration (99 Hz) | median wall time (s) | overhead | tracecar − perf, same unwinding, paired by round (± MAD) |")
    print("|---|---|---|---|")
    print(f"| unprofiled | {base:.3f} | — | — |")
    for c, peer in [("tracecar-fp", "perf-fp"), ("perf-fp", None), ("tracecar-dwarf", "perf-dwarf"), ("perf-dwarf", None)]:
        label = {"tracecar-fp": "tracecar, unwind=fp", "perf-fp": "perf record -g",
                 "tracecar-dwarf": "tracecar, unwind=dwarf", "perf-dwarf": "perf record --call-graph dwarf"}[c]
        vs = ""
        if peer:
            d, spread = paired(c, peer)
            vs = f"{d:+.2f} pp (± {spread:.2f})"
        print(f"| {label} | {statistics.median(times[c]):.3f} | {overhead(c):+.2f}% | {vs} |")
    print()
    print(f"| time to result ({n} s capture at 999 Hz, 2 busy threads still running) | seconds |")
    print("|---|---|")
    print(f"| tracecar: end of capture to SVG received by the client | {tracecar_result:.3f} |")
    print(f"| (of which in the agent: Server-Timing result) | {tracecar_server:.3f} |")
    print(f"| perf script \\| inferno-collapse-perf \\| inferno-flamegraph | {perf_result:.3f} |")
    print(f"| ratio (perf / tracecar) | {perf_result / max(tracecar_result, 0.001):.1f}x |")
    print()
    print(f"| agent memory | MiB |")
    print("|---|---|")
    print(f"| idle RSS | {idle_rss:.1f} |")
    print(f"| peak RSS during the {n} s, 999 Hz capture | {peak_rss:.1f} |")
    print()
    targets = [
        ("tracecar fp overhead <= perf -g overhead (paired difference within its spread)",
         paired("tracecar-fp", "perf-fp")[0] <= paired("tracecar-fp", "perf-fp")[1]),
        ("tracecar dwarf overhead <= perf dwarf overhead (paired difference within its spread)",
         paired("tracecar-dwarf", "perf-dwarf")[0] <= paired("tracecar-dwarf", "perf-dwarf")[1]),
        ("fp overhead <= 1%", overhead("tracecar-fp") <= 1.0),
        ("dwarf overhead <= 3%", overhead("tracecar-dwarf") <= 3.0),
        ("time to result >= 5x faster than perf script + inferno", perf_result >= 5 * tracecar_result),
        ("idle RSS <= 15 MiB", idle_rss <= 15.0),
        ("peak RSS <= 100 MiB", peak_rss <= 100.0),
    ]
    for label, ok in targets:
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

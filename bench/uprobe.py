#!/usr/bin/env python3
"""Probe benchmark: a target calls calc() N times (after the probe is
attached), with no probe, with tracecar probes of each kind streaming to a
client, and under `bpftrace -e 'uprobe:BIN:calc { printf("%d\\n", arg0); }'`.
Configurations are interleaved round by round; costs are medians, delivery
figures are the worst round.

Every tracecar run is checked against the agent's own summary: it must
exist, `calls` must equal the calls the target made, `events` the events
the client received, and `lost` and `throttled` must be 0. A run that
misses any of these fails the benchmark (exit status 1), whatever the
timings say.

Usage: make bench-uprobe   (or: python3 bench/uprobe.py [--rounds N] [--calls N])
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, Agent, wait  # noqa: E402

# name: (query for /v1/uprobe, or None; calls JIT code; label)
CONFIGS = {
    "none": (None, False, "no probe"),
    "uprobe-args": ("symbol=calc&args=int", False, "uprobe, args=int"),
    "uprobe-ret": ("symbol=calc&args=int&ret=int", False, "uprobe + uretprobe, args=int&ret=int"),
    "uprobe-stack-fp": ("symbol=calc&args=int&ret=int&stack=user&unwind=fp", False,
                        "uprobe + uretprobe, args, ret, stack=user&unwind=fp"),
    "uprobe-stack": ("symbol=calc&args=int&ret=int&stack=user", False,
                     "uprobe + uretprobe, args, ret, stack=user (auto: DWARF from 16 KiB stack copies)"),
    "breakpoint-args": ("symbol=jit_calc&args=int", True, "breakpoint (JIT copy), args=int"),
    "breakpoint-ret": ("symbol=jit_calc&args=int&ret=int", True, "breakpoints on entry and ret, args=int&ret=int"),
    "bpftrace": (None, False, "bpftrace printf(arg0), uprobe only"),
}


class Failed(Exception):
    pass


def start_target(binary, calls, threads, jit):
    argv = [binary, str(calls), str(threads)] + (["jit"] if jit else [])
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def go(target):
    target.stdin.write("g")
    target.stdin.flush()
    out, _ = target.communicate()
    return float(out.strip())


def run(config, binary, socket, tmp, calls, threads=1):
    query, jit, _ = CONFIGS[config]
    target = start_target(binary, calls, threads, jit)
    out = os.path.join(tmp, f"{config}.out")
    for f in (out, out + ".h"):
        if os.path.exists(f):
            os.remove(f)
    probe = None
    if query:
        if jit:
            wait(lambda: os.path.exists(f"/tmp/perf-{target.pid}.map"), 30, "the JIT copy", Failed)
        # The stream ends when the target exits, with a summary.
        probe = subprocess.Popen(["curl", "-s", "-N", "--unix-socket", socket, "-o", out, "-D", out + ".h",
                                  f"http://localhost/v1/uprobe?pid={target.pid}&{query}"
                                  f"&rate=100000000&seconds=600"])
        # Attached once the agent has answered with headers; every call
        # from here on must be counted.
        wait(lambda: os.path.exists(out + ".h") and os.path.getsize(out + ".h") > 0, 30, "the probe", Failed)
        head = open(out + ".h").readline()
        if " 200" not in head:
            probe.wait()
            raise Failed(f"{config}: the agent answered {head.strip()}: {open(out).read()[:300]}")
    elif config == "bpftrace":
        probe = subprocess.Popen(["bpftrace", "-o", out, "-e",
                                  f'uprobe:{binary}:calc {{ printf("%d\\n", arg0); }}'],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: os.path.exists(out) and "Attaching" in open(out, errors="replace").read(200), 30,
             "bpftrace", Failed)
        time.sleep(0.2)
    seconds = go(target)
    result = {"seconds": seconds}
    if not probe:
        return result
    if query:
        try:
            probe.wait(timeout=120)
        except subprocess.TimeoutExpired:
            probe.kill()
            raise Failed(f"{config}: the stream did not end after the target exited")
        events = 0
        summary = None
        with open(out, errors="replace") as f:
            for line in f:
                if line.startswith('{"summary"'):
                    summary = json.loads(line)["summary"]
                elif line.startswith('{"ts_ns"'):
                    events += 1
        if summary is None:
            raise Failed(f"{config}: no summary line: the stream was cut")
        for key in ("calls", "events", "lost", "throttled"):
            if key not in summary:
                raise Failed(f"{config}: the summary has no {key}: {summary}")
        result.update(events=events, summary=summary)
        problems = []
        if summary["calls"] != calls:
            problems.append(f"calls {summary['calls']:,} != {calls:,} made")
        if summary["events"] != events or events != calls:
            problems.append(f"events {summary['events']:,} in summary, {events:,} received, {calls:,} made")
        if summary["lost"] or summary["throttled"]:
            problems.append(f"lost {summary['lost']:,}, throttled {summary['throttled']:,}")
        result["problems"] = problems
    else:
        time.sleep(1.0)  # let the last lines reach the file
        probe.send_signal(signal.SIGINT)
        probe.wait(timeout=60)
        with open(out, errors="replace") as f:
            result["events"] = sum(1 for line in f if line.strip().lstrip("-").isdigit())
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.rounds < 5:
        raise SystemExit("--rounds: at least 5 (the delivery figures are the worst round)")
    for tool in ["bpftrace", "gcc", "curl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bench-uprobe`, which installs it")
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-uprobe-")
    binary = os.path.join(tmp, "calc_loop")
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(ROOT, "bench", "workloads", "calc_loop.c"),
                    "-lpthread"], check=True)
    agent = Agent(tmp, args=["--no-lttng"])
    socket = agent.socket
    results = {c: [] for c in CONFIGS}
    two_threads = {}
    failures = []
    try:
        for r in range(args.rounds):
            for c in CONFIGS:
                try:
                    results[c].append(run(c, binary, socket, tmp, args.calls))
                except Failed as e:
                    failures.append(f"round {r + 1}: {e}")
                    results[c].append(None)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        # The same calls from 2 threads, one per CPU.
        for c in ["uprobe-ret", "uprobe-stack-fp", "breakpoint-ret"]:
            try:
                two_threads[c] = run(c, binary, socket, tmp, args.calls, threads=2)
            except Failed as e:
                failures.append(f"2 threads: {e}")
    finally:
        agent.stop()
    for c, runs in results.items():
        for i, r in enumerate(runs):
            for p in (r or {}).get("problems", []):
                failures.append(f"round {i + 1}: {c}: {p}")
    for c, r in two_threads.items():
        for p in r.get("problems", []):
            failures.append(f"2 threads: {c}: {p}")

    def times(c):
        return [r["seconds"] for r in results[c] if r]

    base = statistics.median(times("none"))

    def per_call_us(c):
        t = times(c)
        return (statistics.median(t) - base) / args.calls * 1e6 if t else float("nan")

    print()
    print(f"Probe benchmark: calc() called {args.calls:,} times per run after the probe attached, "
          f"{args.rounds} interleaved rounds; cost = median wall time minus the unprobed median, per call; "
          f"{subprocess.run(['bpftrace', '--version'], capture_output=True, text=True).stdout.strip()}")
    print()
    print("| configuration | added cost per call | calls/s (median) | calls counted = made | events delivered (worst round) | lost | throttled |")
    print("|---|---|---|---|---|---|---|")
    print(f"| no probe | — | {args.calls / base:,.0f} | — | — | — | — |")
    for c, (query, _, label) in CONFIGS.items():
        if c == "none":
            continue
        runs = [r for r in results[c] if r]
        rate = args.calls / statistics.median(times(c)) if runs else 0
        if c == "bpftrace":
            worst = min((r["events"] for r in runs), default=0)
            print(f"| {label} | {per_call_us(c):.2f} µs | {rate:,.0f} | (not reported) | {worst:,} / {args.calls:,} | "
                  f"(not reported) | — |")
            continue
        exact = sum(1 for r in runs if r["summary"]["calls"] == args.calls)
        worst = min((r["events"] for r in runs), default=0)
        lost = max((r["summary"]["lost"] for r in runs), default=0)
        throttled = max((r["summary"]["throttled"] for r in runs), default=0)
        print(f"| {label} | {per_call_us(c):.2f} µs | {rate:,.0f} | {exact} of {len(results[c])} rounds | "
              f"{worst:,} / {args.calls:,} | {lost} | {throttled} |")
    print()
    print("Two threads, one per CPU (the same calls, split):")
    print()
    print("| configuration | wall time (s) | calls/s | calls counted | events delivered | lost |")
    print("|---|---|---|---|---|---|")
    for c, r in two_threads.items():
        s = r["summary"]
        print(f"| {CONFIGS[c][2]} | {r['seconds']:.3f} | {args.calls / r['seconds']:,.0f} | {s['calls']:,} | "
              f"{r['events']:,} / {args.calls:,} | {s['lost']} |")
    print()
    ratios = [
        ("breakpoint (args) cost / uprobe (args) cost", per_call_us("breakpoint-args") / per_call_us("uprobe-args")),
        ("uprobe (args) cost / bpftrace (args) cost", per_call_us("uprobe-args") / per_call_us("bpftrace")),
        ("uprobe+uretprobe (args, ret) cost / bpftrace (args) cost",
         per_call_us("uprobe-ret") / per_call_us("bpftrace")),
        ("stack=user&unwind=fp cost / no stack cost (args, ret)",
         per_call_us("uprobe-stack-fp") / per_call_us("uprobe-ret")),
        ("stack=user (DWARF copies) cost / no stack cost (args, ret)",
         per_call_us("uprobe-stack") / per_call_us("uprobe-ret")),
    ]
    print("Ratios of medians measured in the same rounds:")
    print()
    for label, value in ratios:
        print(f"- {label}: {value:.2f}")
    print()
    if failures:
        for f in failures:
            print(f"FAILED: {f}")
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(1)
    print("every tracecar run: calls counted = calls made, every event delivered, none lost or throttled")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

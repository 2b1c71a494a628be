#!/usr/bin/env python3
"""uprobe benchmark: a target calls calc() 10^6 times, with no probe, with a
tracecar probe streaming args and ret to a client, and under
`bpftrace -e 'uprobe:BIN:calc { printf("%d\\n", arg0); }'`. Configurations
are interleaved round by round; medians are reported.

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from target_dir import release  # noqa: E402  (cargo's target directory, CARGO_TARGET_DIR included)
AGENT = release("tracecar-agent")


def start_target(binary, calls, threads=1):
    return subprocess.Popen([binary, str(calls), str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def go(target):
    target.stdin.write("g")
    target.stdin.flush()
    out, _ = target.communicate()
    return float(out.strip())


def count_lines(path, needle):
    with open(path, errors="replace") as f:
        return sum(1 for line in f if needle(line))


def run(config, binary, socket, tmp, calls, threads=1):
    target = start_target(binary, calls, threads)
    out = os.path.join(tmp, f"{config}.out")
    probe = None
    if config.startswith("tracecar"):
        ret = "&ret=int" if config == "tracecar" else ""
        # The stream ends by itself after every call (limit), with a summary.
        probe = subprocess.Popen(["curl", "-s", "-N", "--unix-socket", socket, "-o", out, "-D", out + ".h",
                                  f"http://localhost/v1/uprobe?pid={target.pid}&symbol=calc&args=int{ret}"
                                  f"&rate=100000000&seconds=300&limit={calls}"])
        # Attached once the agent has answered with headers.
        for _ in range(500):
            if os.path.exists(out + ".h") and os.path.getsize(out + ".h") > 0:
                break
            time.sleep(0.02)
        time.sleep(0.2)
    elif config == "bpftrace":
        probe = subprocess.Popen(["bpftrace", "-o", out, "-e",
                                  f'uprobe:{binary}:calc {{ printf("%d\\n", arg0); }}'],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if os.path.exists(out) and "Attaching" in open(out, errors="replace").read(200):
                break
            time.sleep(0.02)
        time.sleep(0.2)
    seconds = go(target)
    delivered = None
    lost = 0
    if probe:
        if config.startswith("tracecar"):
            try:
                probe.wait(timeout=30)
            except subprocess.TimeoutExpired:
                probe.send_signal(signal.SIGTERM)
                probe.wait(timeout=30)
            delivered = count_lines(out, lambda l: l.startswith('{"ts_ns"'))
            summary = [l for l in open(out, errors="replace") if l.startswith('{"summary"')]
            if summary:
                lost = json.loads(summary[0])["summary"]["lost"]
        else:
            time.sleep(1.0)  # let the last lines reach the file
            probe.send_signal(signal.SIGINT)
            probe.wait(timeout=60)
            delivered = count_lines(out, lambda l: l.strip().lstrip("-").isdigit())
    return seconds, delivered, lost


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    for tool in ["bpftrace", "gcc", "curl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bench-uprobe`, which installs it")
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-uprobe-")
    binary = os.path.join(tmp, "calc_loop")
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(ROOT, "bench", "workloads", "calc_loop.c")], check=True)
    socket = os.path.join(tmp, "agent.sock")
    agent = subprocess.Popen([AGENT, "--log", "warn", "serve", "--socket", socket])
    for _ in range(100):
        if os.path.exists(socket):
            break
        time.sleep(0.05)
    configs = ["none", "tracecar", "tracecar-args", "bpftrace"]
    times = {c: [] for c in configs}
    delivered = {c: [] for c in configs}
    lost = {c: [] for c in configs}
    try:
        for r in range(args.rounds):
            for c in configs:
                s, d, l = run(c, binary, socket, tmp, args.calls)
                times[c].append(s)
                delivered[c].append(d)
                lost[c].append(l)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        # Delivery at full speed: the same calls from 2 threads (one per CPU).
        burst = {}
        for c in ["tracecar-args", "tracecar"]:
            s, d, l = run(c, binary, socket, tmp, args.calls, threads=2)
            burst[c] = (s, d, l)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)
    base = statistics.median(times["none"])

    def per_call_ns(c):
        return (statistics.median(times[c]) - base) / args.calls * 1e9

    print()
    print(f"uprobe benchmark: calc() called {args.calls:,} times per run, {args.rounds} interleaved rounds, medians; "
          f"{subprocess.run(['bpftrace', '--version'], capture_output=True, text=True).stdout.strip()}")
    print()
    print("One thread, interleaved rounds:")
    print()
    print("| configuration | wall time (s) | added cost per call | events delivered / fired (worst round) | lost |")
    print("|---|---|---|---|---|")
    print(f"| no probe | {base:.3f} | — | — | — |")
    for c, label in [("tracecar", "tracecar, args=int&ret=int (uprobe + uretprobe), streamed to curl"),
                     ("tracecar-args", "tracecar, args=int (uprobe only), streamed to curl"),
                     ("bpftrace", "bpftrace printf(arg0) (uprobe only)")]:
        t = statistics.median(times[c])
        worst = min(delivered[c])
        print(f"| {label} | {t:.3f} | {per_call_ns(c):.0f} ns | {worst:,} / {args.calls:,} | {max(lost[c])} |")
    print()
    print("Two threads (one per CPU), delivery to the client at full speed:")
    print()
    print("| configuration | wall time (s) | events delivered / fired | lost | delivered per second |")
    print("|---|---|---|---|---|")
    labels = {"tracecar-args": "tracecar, args=int", "tracecar": "tracecar, args=int&ret=int"}
    for c in ["tracecar-args", "tracecar"]:
        s, d, l = burst[c]
        print(f"| {labels[c]} | {s:.3f} | {d:,} / {args.calls:,} | {l} | {d / s:,.0f} |")
    print()
    complete = [burst[c][1] / burst[c][0] for c in burst if burst[c][1] == args.calls and burst[c][2] == 0]
    best = max(complete, default=0)
    targets = [
        ("tracecar per-call cost (args and ret) <= bpftrace's (args only)", per_call_ns("tracecar") <= per_call_ns("bpftrace")),
        ("tracecar per-call cost (args only) <= bpftrace's", per_call_ns("tracecar-args") <= per_call_ns("bpftrace")),
        ("tracecar lost no events in any run", all(x == 0 for c in ["tracecar", "tracecar-args"] for x in lost[c])
         and all(burst[c][2] == 0 for c in burst)),
        ("tracecar delivered >= 100k events/s to the client with no loss", best >= 100_000),
    ]
    for label, ok in targets:
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

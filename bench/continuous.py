#!/usr/bin/env python3
"""Continuous profiling's cost, side by side with perf: what a pod that
profiles itself all the time pays.

The whole benchmark runs in a PID namespace of its own (it re-executes
itself under `unshare --pid --fork --mount-proc`), so that the agent sees
what it sees in a pod: the workload, the benchmark and itself, not every
process of the machine.

Rounds, interleaved, each running the same fixed CPU work of the sample
workload (bench/workloads/cpu_bound.c, one thread, about --run-seconds):

- unprofiled;
- under a tracecar agent started for the run with `--continuous cpu` at
  --hz (19) in --window (15 s) windows and `--memory-limit 256Mi` (the
  sidecar's default limit, which the webhook passes), profiling its "pod",
  and stopped after;
- under `perf record -F 19 -g -p WORKLOAD` running as long.

Reported per configuration: the workload's CPU overhead (its own user +
system CPU time from wait4, paired with the same round's unprofiled run,
mean and 95 % confidence interval), the profiler's CPU time while the
workload ran as a share of one CPU (the agent's start-up, which reads the
kernel's symbols once, is left out), and its peak RSS. Rounds continue
until --minutes have passed (10 by default).

Usage: make bench-continuous   (or: python3 bench/continuous.py [--minutes M] [--quick])
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

from common import (ROOT, Agent, cpu_seconds, go, in_own_pid_namespace, mean_ci, proc_cpu,  # noqa: E402
                    start_waiting, status_kib)


def run_once(config, argv, tmp, args):
    """The workload under `config` ("none", "tracecar", "perf"): (its CPU
    seconds, the profiler's CPU share of one CPU in %, its peak RSS in
    MiB)."""
    w = start_waiting(argv)
    profiler_cpu = profiler_rss = 0.0
    agent = perf = None
    if config == "tracecar":
        agent = Agent(tmp, "continuous", ["--no-lttng", "--memory-limit", "256Mi", "--continuous", "cpu",
                                          "--continuous-hz", str(args.hz),
                                          "--continuous-window", str(args.window)])
    elif config == "perf":
        perf = subprocess.Popen(["perf", "record", "-q", "-F", str(args.hz), "-g", "-p", str(w.pid),
                                 "-o", os.path.join(tmp, "perf.data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # the profiler is up (the agent has read the kernel's symbols)
    agent_cpu = proc_cpu(agent.pid) if agent else 0.0
    started = time.monotonic()
    go(w)
    target_cpu, _ = cpu_seconds(w)
    ran = time.monotonic() - started
    if agent is not None:
        profiler_cpu = proc_cpu(agent.pid) - agent_cpu
        profiler_rss = status_kib(agent.pid, "VmHWM") / 1024
        agent.stop()
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        profiler_cpu, profiler_rss = cpu_seconds(perf, check=False)
        # perf's whole life: its start-up is small and its CPU accrues to
        # it only, as the agent's after its start does.
        ran += 1.0
    return target_cpu, profiler_cpu / ran * 100, profiler_rss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--run-seconds", type=float, default=30, help="the workload's CPU work per run")
    parser.add_argument("--hz", type=int, default=19)
    parser.add_argument("--window", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="2 minutes, 10 s runs, 5 s windows")
    args = parser.parse_args()
    in_own_pid_namespace(__file__)
    if args.quick:
        args.minutes, args.run_seconds, args.window = 2, 10, 5
    for tool in ["perf", "gcc", "curl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bench-continuous`, which installs it")
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-continuous-")
    try:
        measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def calibrate(binary, seconds):
    """Units of work that take about `seconds` of one CPU."""
    w = start_waiting([binary, "1", "300"])
    go(w)
    cpu, _ = cpu_seconds(w)
    return max(1, int(300 * seconds / max(cpu, 0.01)))


def measure(args, tmp):
    binary = os.path.join(tmp, "cpu_bound")
    subprocess.run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", binary,
                    os.path.join(ROOT, "bench", "workloads", "cpu_bound.c"), "-lpthread"], check=True)
    units = calibrate(binary, args.run_seconds)
    argv = [binary, "1", str(units)]
    configs = ["none", "tracecar", "perf"]
    runs = {c: [] for c in configs}
    deadline = time.monotonic() + args.minutes * 60
    rounds = 0
    while rounds < 2 or time.monotonic() < deadline:
        # The order turns each round: no configuration always runs first.
        for config in configs[rounds % 3:] + configs[:rounds % 3]:
            runs[config].append(run_once(config, argv, tmp, args))
        rounds += 1
        print(f"round {rounds}: {time.monotonic() - deadline + args.minutes * 60:.0f} s", file=sys.stderr)
    overhead = {c: [(r[0] / b[0] - 1) * 100 for r, b in zip(runs[c], runs["none"])] for c in configs}
    paired = [a - b for a, b in zip(overhead["tracecar"], overhead["perf"])]
    base = statistics.median(r[0] for r in runs["none"])
    print()
    print(f"continuous profiling at {args.hz} Hz, {args.window} s windows: {rounds} interleaved rounds "
          f"in {args.minutes:g} min; workload CPU time unprofiled {base:.2f} s (median); "
          f"{subprocess.run(['perf', '--version'], capture_output=True, text=True).stdout.strip()}")
    print()
    print("| configuration | the app's CPU overhead (mean ± 95% CI) | vs perf, paired (± 95% CI) "
          "| profiler CPU, % of one CPU (median) | profiler peak RSS, MiB (median) |")
    print("|---|---|---|---|---|")
    for config, label in [("tracecar", f"tracecar --continuous cpu, {args.hz} Hz, {args.window} s windows"),
                          ("perf", f"perf record -F {args.hz} -g -p APP")]:
        m, ci = mean_ci(overhead[config])
        vs = ""
        if config == "tracecar":
            d, dci = mean_ci(paired)
            vs = f"{d:+.2f} pp (± {dci:.2f})"
        cpu = statistics.median(r[1] for r in runs[config])
        rss = statistics.median(r[2] for r in runs[config])
        print(f"| {label} | {m:+.2f}% (± {ci:.2f}) | {vs} | {cpu:.3f} | {rss:.1f} |")
    print()
    m, ci = mean_ci(overhead["tracecar"])
    agent_cpu = statistics.median(r[1] for r in runs["tracecar"])
    agent_rss = statistics.median(r[2] for r in runs["tracecar"])
    targets = [
        ("the app's overhead not distinguishable from zero at ±0.5 pp", abs(m) <= ci and ci <= 0.5),
        ("agent CPU under 0.1% of one CPU", agent_cpu < 0.1),
        ("agent RSS under 16 MiB", agent_rss < 16),
    ]
    for label, ok in targets:
        print(f"target {'met' if ok else 'MISSED'}: {label}")


if __name__ == "__main__":
    main()

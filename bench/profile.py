#!/usr/bin/env python3
"""Profiling benchmarks: tracecar-agent against Linux perf, side by side.

1. Overhead on the target: the target's own CPU time (user + system, from
   wait4) for a fixed amount of work, unprofiled and under each profiler,
   interleaved round by round; each overhead is the paired ratio to the
   same round's unprofiled run, reported as a mean with its 95 % confidence
   interval. Rounds continue (10 at least, 40 at most) until every
   CPU-bound interval is at most --resolve (0.5 pp) wide each side, and
   every switching one at most 5 pp (its overheads are a hundred times
   larger).
   a. A CPU-bound workload: tracecar (fp and dwarf at 99 Hz) against perf
      record (-g and --call-graph dwarf at 99 Hz).
   b. A workload switching context 50,000 times a second: tracecar
      mode=cpu, offcpu and wall against perf record -e sched:sched_switch
      -g, with each profiler's own CPU time and peak RSS.
2. Time to result: from the end of a 30 s, 999 Hz capture of a 2-thread
   workload to the finished SVG, against perf script | inferno-collapse-perf
   | inferno-flamegraph on a perf.data of the same workload.
3. Agent memory: idle RSS, and peak RSS over that capture.

Usage: make bench-profile   (or: python3 bench/profile.py [--min-rounds N] [--max-rounds N] [--quick])
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

from common import ROOT, Agent, cpu_seconds, go, mean_ci, proc_cpu, reset_peak_rss, start_waiting, status_kib  # noqa: E402


class Run:
    """One configuration's run: the target's CPU time, and what the
    profiler itself used (CPU seconds, peak RSS in MiB)."""
    def __init__(self, target_cpu, profiler_cpu=0.0, profiler_rss=0.0):
        self.target_cpu, self.profiler_cpu, self.profiler_rss = target_cpu, profiler_cpu, profiler_rss


def run_once(config, argv, agent, tmp, query):
    """Runs the workload `argv` (which waits for stdin) under `config`:
    "none", "tracecar-…" (the agent with `/v1/profile?{query}`) or
    "perf:…" (perf record with those arguments)."""
    w = start_waiting(argv)
    profiler = None
    agent_cpu = 0.0
    if config.startswith("tracecar"):
        reset_peak_rss(agent.proc.pid)
        agent_cpu = proc_cpu(agent.proc.pid)
        profiler = agent.background(f"/v1/profile?pid={w.pid}&seconds=600&{query}&format=folded",
                                    os.path.join(tmp, "out.folded"))
    elif config.startswith("perf"):
        profiler = subprocess.Popen(["perf", "record", "-q", *query.split(), "-p", str(w.pid),
                                     "-o", os.path.join(tmp, "perf.data")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.7)  # the profiler is attached and recording
    go(w)
    target_cpu, _ = cpu_seconds(w)
    run = Run(target_cpu)
    if config.startswith("tracecar"):
        run.profiler_cpu = proc_cpu(agent.proc.pid) - agent_cpu
        run.profiler_rss = status_kib(agent.proc.pid, "VmHWM") / 1024
    if profiler:
        # perf record stops cleanly on SIGINT; curl (the tracecar client)
        # just goes away, which ends the capture. SIGTERM because a
        # background job may have SIGINT ignored.
        profiler.send_signal(signal.SIGINT if config.startswith("perf") else signal.SIGTERM)
        if config.startswith("perf"):
            run.profiler_cpu, run.profiler_rss = cpu_seconds(profiler, check=False)
        else:
            profiler.wait(timeout=60)
    return run


class Suite:
    """Configurations of one workload, interleaved round by round; each
    overhead is the paired ratio to the same round's unprofiled run."""
    def __init__(self, title, argv, configs):
        self.title, self.argv, self.configs = title, argv, configs
        self.runs = {name: [] for name, _, _ in configs}

    def round(self, agent, tmp):
        for name, _, query in self.configs:
            self.runs[name].append(run_once(name, self.argv, agent, tmp, query))

    def overheads(self, name):
        """Per round: (target CPU under `name` / unprofiled) − 1, in %."""
        return [(r.target_cpu / b.target_cpu - 1) * 100 for r, b in zip(self.runs[name], self.runs["none"])]

    def paired(self, name, peer):
        """Per round: overhead of `name` minus overhead of `peer`, in pp."""
        return [a - b for a, b in zip(self.overheads(name), self.overheads(peer))]

    def widest(self):
        return max(mean_ci(self.overheads(n))[1] for n, _, _ in self.configs if n != "none")

    def table(self, peers):
        base = statistics.median(r.target_cpu for r in self.runs["none"])
        print(f"{self.title}: target CPU time (user + system, wait4) unprofiled: {base:.3f} s (median of "
              f"{len(self.runs['none'])})")
        print()
        print("| configuration | overhead on the target's CPU time (mean ± 95% CI) | vs its perf peer, "
              "paired (± 95% CI) | profiler CPU (s) | profiler peak RSS (MiB) |")
        print("|---|---|---|---|---|")
        for name, label, _ in self.configs:
            if name == "none":
                continue
            m, ci = mean_ci(self.overheads(name))
            vs = ""
            if peers.get(name):
                d, dci = mean_ci(self.paired(name, peers[name]))
                vs = f"{d:+.2f} pp (± {dci:.2f})"
            cpu = statistics.median(r.profiler_cpu for r in self.runs[name])
            rss = statistics.median(r.profiler_rss for r in self.runs[name])
            print(f"| {label} | {m:+.2f}% (± {ci:.2f}) | {vs} | {cpu:.2f} | {rss:.1f} |")
        print()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--resolve", type=float, default=0.5,
                        help="stop once every CPU-bound overhead's 95%% CI half-width is at most this (pp)")
    parser.add_argument("--resolve-switching", type=float, default=5.0,
                        help="… and every switching one's (pp: its overheads are a hundred times larger)")
    parser.add_argument("--units", type=int, default=9000, help="CPU work per run (~3 s)")
    parser.add_argument("--switch-rate", type=int, default=50000, help="context switches per second")
    parser.add_argument("--capture-seconds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 10 s capture")
    args = parser.parse_args()
    if args.quick:
        args.min_rounds = args.max_rounds = 3
        args.capture_seconds = 10
    for tool in ["perf", "inferno-collapse-perf", "inferno-flamegraph", "gcc", "curl", "taskset"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bench-profile`, which installs it")

    tmp = tempfile.mkdtemp(prefix="tracecar-bench-profile-")
    binary = os.path.join(tmp, "cpu_bound")
    subprocess.run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", binary,
                    os.path.join(ROOT, "bench", "workloads", "cpu_bound.c"), "-lpthread"], check=True)
    switches = os.path.join(tmp, "switches")
    subprocess.run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", switches,
                    os.path.join(ROOT, "agent", "tests", "workloads", "switches.c"), "-lpthread"], check=True)
    agent = Agent(tmp)
    try:
        measure(args, tmp, binary, switches, agent)
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args, tmp, binary, switches, agent):
    time.sleep(0.5)
    idle_rss = status_kib(agent.proc.pid, "VmRSS") / 1024

    # 1. Overhead, interleaved, until every confidence interval is narrow
    # enough. The CPU-bound workload runs one thread; the switching one
    # is pinned to CPU 0 (two threads passing a byte at --switch-rate), the
    # profilers run on the other CPUs.
    cpu = Suite("CPU-bound workload (bench/workloads/cpu_bound.c, 1 thread, ~3 s)",
                [binary, "1", str(args.units)],
                [("none", "unprofiled", ""),
                 ("tracecar-fp", "tracecar, unwind=fp, 99 Hz", "hz=99&unwind=fp"),
                 ("perf-fp", "perf record -F 99 -g", "-F 99 -g"),
                 ("tracecar-dwarf", "tracecar, unwind=dwarf, 99 Hz", "hz=99&unwind=dwarf"),
                 ("perf-dwarf", "perf record -F 99 --call-graph dwarf", "-F 99 --call-graph dwarf")])
    trips = args.switch_rate * 3 // 2
    switching = Suite(f"Switching workload (agent/tests/workloads/switches.c, {args.switch_rate} context "
                      f"switches/s on CPU 0, 3 s)",
                      ["taskset", "-c", "0", switches, str(args.switch_rate), str(trips), "wait"],
                      [("none", "unprofiled", ""),
                       ("tracecar-cpu", "tracecar mode=cpu, unwind=fp, 99 Hz", "hz=99&unwind=fp"),
                       ("tracecar-offcpu", "tracecar mode=offcpu, unwind=fp", "mode=offcpu&unwind=fp"),
                       ("tracecar-wall", "tracecar mode=wall, unwind=fp, 99 Hz", "mode=wall&hz=99&unwind=fp"),
                       ("perf-sched", "perf record -e sched:sched_switch -g", "-e sched:sched_switch -g")])
    # The agent and perf stay off the switching workload's CPU.
    os.sched_setaffinity(agent.proc.pid, set(range(1, os.cpu_count() or 2)) or {0})
    rounds = 0
    while rounds < args.max_rounds:
        for suite in (cpu, switching):
            suite.round(agent, tmp)
        rounds += 1
        widest = (cpu.widest(), switching.widest()) if rounds > 1 else (float("inf"),) * 2
        print(f"overhead round {rounds}: widest 95% CI ± {widest[0]:.2f} pp (CPU-bound), "
              f"± {widest[1]:.2f} pp (switching)", file=sys.stderr)
        if rounds >= args.min_rounds and widest[0] <= args.resolve and widest[1] <= args.resolve_switching:
            break

    # 2. Time to result, and 3. peak memory during it.
    n = args.capture_seconds
    w = start_waiting([binary, "2", str(10 ** 9)])
    go(w)
    time.sleep(0.5)
    headers = os.path.join(tmp, "headers")
    t0 = time.monotonic()
    svg = agent.body(f"/v1/profile?pid={w.pid}&seconds={n}&hz=999&format=svg", headers=headers)
    total = time.monotonic() - t0
    # The agent reports how long opening the events and sampling took
    # (Server-Timing: setup, capture); everything after that, up to the last
    # byte received here, is time to result.
    timing = next(l for l in open(headers) if l.lower().startswith("server-timing:"))
    dur = lambda name: float(timing.split(f"{name};dur=")[1].split(",")[0]) / 1000
    tracecar_result = total - dur("setup") - dur("capture")
    tracecar_server = dur("result")
    peak_rss = status_kib(agent.proc.pid, "VmHWM") / 1024
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
    print(f"tracecar profiling benchmark: {rounds} interleaved rounds; "
          f"perf {subprocess.run(['perf', '--version'], capture_output=True, text=True).stdout.strip()}")
    print()
    cpu.table({"tracecar-fp": "perf-fp", "tracecar-dwarf": "perf-dwarf"})
    switching.table({"tracecar-offcpu": "perf-sched", "tracecar-wall": "perf-sched"})
    print()
    print(f"| time to result ({n} s capture at 999 Hz, 2 busy threads still running) | seconds |")
    print("|---|---|")
    print(f"| tracecar: end of capture to SVG received by the client | {tracecar_result:.3f} |")
    print(f"| (of which in the agent: Server-Timing result) | {tracecar_server:.3f} |")
    print(f"| perf script \\| inferno-collapse-perf \\| inferno-flamegraph | {perf_result:.3f} |")
    print(f"| ratio (perf / tracecar) | {perf_result / max(tracecar_result, 0.001):.1f}x |")
    print()
    print("| agent memory | MiB |")
    print("|---|---|")
    print(f"| idle RSS | {idle_rss:.1f} |")
    print(f"| peak RSS during the {n} s, 999 Hz capture | {peak_rss:.1f} |")
    print()
    def within(suite, name, limit):
        m, ci = mean_ci(suite.overheads(name))
        return m + ci <= limit

    def no_worse(suite, name, peer):
        d, ci = mean_ci(suite.paired(name, peer))
        return d - ci <= 0

    targets = [
        ("tracecar fp overhead <= perf -g overhead (paired, within the CI)", no_worse(cpu, "tracecar-fp", "perf-fp")),
        ("tracecar dwarf overhead <= perf dwarf overhead (paired, within the CI)",
         no_worse(cpu, "tracecar-dwarf", "perf-dwarf")),
        ("fp overhead <= 1% (upper end of the CI)", within(cpu, "tracecar-fp", 1.0)),
        ("dwarf overhead <= 3% (upper end of the CI)", within(cpu, "tracecar-dwarf", 3.0)),
        ("offcpu overhead <= perf record -e sched:sched_switch -g (paired, within the CI)",
         no_worse(switching, "tracecar-offcpu", "perf-sched")),
        ("time to result >= 5x faster than perf script + inferno", perf_result >= 5 * tracecar_result),
        ("idle RSS <= 15 MiB", idle_rss <= 15.0),
        ("peak RSS <= 100 MiB", peak_rss <= 100.0),
    ]
    for label, ok in targets:
        print(f"target {'met' if ok else 'MISSED'}: {label}")


if __name__ == "__main__":
    main()

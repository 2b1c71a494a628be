#!/usr/bin/env python3
"""Collection rules: how soon an action starts once its condition holds,
and what watching costs, side by side with a watchdog script.

The whole benchmark runs in a PID namespace of its own (it re-executes
itself under `unshare --pid --fork --mount-proc`), so that the agent sees
what it sees in a pod: the workloads, the benchmark and itself.

Latency, from the condition becoming true to the action starting, over
--repeats runs of each trigger, interleaved:

- `cpu`: agent/tests/workloads/rules_app.c starts burning a CPU at a
  moment it prints (`spin`); the rule is `cpu: {above_percent: 50}` with a
  1 s profile; the action's start is the artifact's `started_unix_ms`;
- `memory`: the same program touches 1 MiB every 20 ms in a memory cgroup
  of 64 MiB and prints when it holds half of it (`ramp`); the rule is
  `memory: {above_percent: 50}` with a mini dump;
- the watchdog: what one writes without tracecar, a loop that reads the
  same value every second (`/proc/PID/stat`, the cgroup's usage) and
  starts the capture (`curl /v1/profile`, `/v1/dump`) when it crosses;
  its start is when it runs curl. The workload starts at a random point
  of the watchdog's first second, as it would in production.

Counter (unless --no-counter): the .NET sample (tests/dotnet-app, `App.dll
meter`, on --dotnet, 8.0.4 by default) adds 10 to its meter's counter
`sample.requests{route=/a}` for each line on its stdin, written at a
random point of a second; the rule is `counter: {name:
'sample.requests{route=/a}', provider: Tracecar.Sample, above: 10,
interval: 1}` with a 1 s profile. A value is known at the end of the
runtime's interval: the interval alone can take up to a second. It has no watchdog
counterpart: a script scraping the per-interval value misses an increment
that falls between its scrapes.

Fatal signal: each run also crashes rules_app (`crash`: SIGSEGV in
crash_here()) under a `signal` rule with a mini dump, and counts the
crashes whose dump was kept whole before the process died of its signal
(a watchdog script has no counterpart: by the time it sees the process
gone, there is nothing left to dump).

Cost: the agent's CPU time, as a share of one CPU, over --seconds with
five rules (two `cpu`, `memory`, `pressure`, `oom_kill`) watching five idle
processes in a memory cgroup, against the same agent with no rule,
in interleaved rounds.

Usage: make bench-rules   (or: python3 bench/rules.py [--repeats N] [--seconds S] [--quick] [--no-counter])
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import ROOT, Agent, in_own_pid_namespace, mean_ci, proc_cpu, wait  # noqa: E402
from dotnet import Dotnet, start_app, stop_app  # noqa: E402

LIMIT_MB = 64


def unix_ms():
    return int(time.time() * 1000)


class Cgroup:
    """A memory cgroup of `mb` MiB (v1 or v2), removed at close."""

    def __init__(self, name, mb):
        self.v1 = os.path.exists("/sys/fs/cgroup/memory/cgroup.procs")
        base = "/sys/fs/cgroup/memory" if self.v1 else "/sys/fs/cgroup"
        if not self.v1:
            with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                f.write("+memory")
        self.dir = os.path.join(base, f"{name}-{os.getpid()}")
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "memory.limit_in_bytes" if self.v1 else "memory.max"), "w") as f:
            f.write(str(mb << 20))

    def enter(self, pid):
        with open(os.path.join(self.dir, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def usage(self):
        name = "memory.usage_in_bytes" if self.v1 else "memory.current"
        with open(os.path.join(self.dir, name)) as f:
            return int(f.read())

    def close(self):
        for _ in range(100):
            try:
                os.rmdir(self.dir)
                return
            except OSError:
                time.sleep(0.05)


class App:
    """rules_app MODE ARGS, once it printed "ready"."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, text=True)
        assert self.line() == "ready"

    def line(self):
        return self.proc.stdout.readline().strip()

    def go(self):
        os.kill(self.proc.pid, signal.SIGUSR1)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def post(agent, body):
    out = subprocess.run(agent.url("/v1/rules") + ["-X", "POST", "--data-binary", body, "-w", "\n%{http_code}"],
                         capture_output=True, text=True)
    assert out.stdout.endswith("201"), out.stdout


def delete(agent, name):
    subprocess.run(agent.url(f"/v1/rules/{name}") + ["-X", "DELETE"], capture_output=True)


def artifacts(agent, rule):
    return [a for a in json.loads(agent.body("/v1/artifacts")) if a["rule"] == rule]


def tracecar_cpu(agent, binary, n):
    app = App(binary, "spin")
    name = f"cpu{n}"
    post(agent, f"{{name: {name}, trigger: {{cpu: {{above_percent: 50}}}}, filter: {{pid: {app.proc.pid}}}, "
                "actions: [{profile: {seconds: 1, format: folded}}]}")
    time.sleep(0.6)
    app.go()
    began = int(app.line())
    wait(lambda: artifacts(agent, name), 20, "the cpu rule's profile")
    started = artifacts(agent, name)[0]["started_unix_ms"]
    delete(agent, name)
    app.stop()
    return started - began


def watchdog(app, crossed):
    """What one writes without tracecar: read every second, act when
    `crossed()`. The app starts at a random point of the first second (a
    watchdog's readings are not in step with the app). Answers when it
    acted, in Unix ms."""
    threading.Timer(random.uniform(0, 1), app.go).start()
    while True:
        time.sleep(1)
        if crossed():
            return unix_ms()


def watchdog_cpu(agent, binary, n):
    app = App(binary, "spin")
    last = [proc_cpu(app.proc.pid), time.monotonic()]

    def crossed():
        now, at = proc_cpu(app.proc.pid), time.monotonic()
        share = (now - last[0]) / (at - last[1]) * 100
        last[:] = [now, at]
        return share >= 50

    started = watchdog(app, crossed)
    agent.background(f"/v1/profile?pid={app.proc.pid}&seconds=1&format=folded", os.devnull).wait()
    began = int(app.line())
    app.stop()
    return started - began


def ramp(binary):
    """rules_app, ready to ramp in a memory cgroup of LIMIT_MB."""
    cgroup = Cgroup("tracecar-bench-rules", LIMIT_MB)
    app = App(binary, "ramp", str(LIMIT_MB))
    cgroup.enter(app.proc.pid)
    return cgroup, app


def half(app):
    """When the ramping app held half of LIMIT_MB, in Unix ms."""
    return int(app.line().split()[1])


def tracecar_memory(agent, binary, n):
    name = f"mem{n}"
    cgroup, app = ramp(binary)
    post(agent, f"{{name: {name}, trigger: {{memory: {{above_percent: 50}}}}, filter: {{pid: {app.proc.pid}}}, "
                "actions: [{dump: {type: mini}}]}")
    time.sleep(0.6)
    app.go()
    crossed = half(app)
    wait(lambda: artifacts(agent, name), 30, "the memory rule's dump")
    started = artifacts(agent, name)[0]["started_unix_ms"]
    delete(agent, name)
    app.stop()
    cgroup.close()
    return started - crossed


def watchdog_memory(agent, binary, n):
    cgroup, app = ramp(binary)
    started = watchdog(app, lambda: cgroup.usage() * 2 >= LIMIT_MB << 20)
    agent.background(f"/v1/dump?pid={app.proc.pid}&type=mini", os.devnull).wait()
    crossed = half(app)
    app.stop()
    cgroup.close()
    return started - crossed


def tracecar_crash(agent, binary, n):
    """A crash (SIGSEGV in crash_here) under a `signal` rule: (ms from
    the crash to the dump's start, whether the dump was kept whole before
    the process died of its signal)."""
    app = App(binary, "crash")
    name = f"crash{n}"
    post(agent, f"{{name: {name}, trigger: {{signal: {{signals: [SIGSEGV]}}}}, filter: {{pid: {app.proc.pid}}}, "
                "actions: [{dump: {type: mini}}]}")
    wait(lambda: tracer(app.proc.pid) != "0", 5, "the signal watch")
    app.go()
    crashed = int(app.line())
    app.proc.wait()
    died = unix_ms()
    killed_by_segv = app.proc.returncode == -signal.SIGSEGV
    wait(lambda: artifacts(agent, name), 10, "the crash's dump")
    dump = artifacts(agent, name)[0]
    delete(agent, name)
    whole = killed_by_segv and dump["bytes"] > 0 and dump["ended_unix_ms"] <= died
    return dump["started_unix_ms"] - crashed, whole


COUNTER = "sample.requests{route=/a}"


def tracecar_counter(agent, net, n, interval):
    """A .NET meter's counter (`App.dll meter`: +10 for each line on
    stdin) under a `counter` rule at 10, its runtime measuring every
    `interval` seconds: ms from the line to the action's start."""
    app = start_app(net, "meter", stdin=subprocess.PIPE)
    name = f"counter{n}"
    post(agent, f"{{name: {name}, trigger: {{counter: {{name: '{COUNTER}', provider: Tracecar.Sample, above: 10, "
                f"interval: {interval}}}}}, "
                f"filter: {{pid: {app.pid}}}, actions: [{{profile: {{seconds: 1, format: pprof}}}}]}}")
    # The session is up, and a first interval has gone by.
    time.sleep(3)
    time.sleep(random.uniform(0, 1))
    written = unix_ms()
    app.stdin.write("request\n")
    app.stdin.flush()
    try:
        wait(lambda: artifacts(agent, name), 20, "the counter rule's profile")
    except BaseException:
        print(agent.body("/v1/rules"), file=sys.stderr)
        raise
    started = artifacts(agent, name)[0]["started_unix_ms"]
    delete(agent, name)
    stop_app(app)
    return started - written


def tracer(pid):
    with open(f"/proc/{pid}/status") as f:
        return next((line.split()[1] for line in f if line.startswith("TracerPid:")), "0")


FIVE_RULES = """
- {name: cpu-hot, trigger: {cpu: {above_percent: 80}}, filter: {name: rules_app}, actions: [{profile: {seconds: 5}}]}
- {name: cpu-held, trigger: {cpu: {above_percent: 50, for_seconds: 10}}, filter: {name: rules_app}, actions: [{profile: {seconds: 5}}]}
- {name: near-oom, trigger: {memory: {above_percent: 90}}, filter: {name: rules_app}, actions: [{dump: {type: mini}}]}
- {name: stalls, trigger: {pressure: {resource: memory, above_percent: 20}}, filter: {name: rules_app}, actions: [{profile: {seconds: 5}}]}
- {name: oom, trigger: {oom_kill: {}}, filter: {name: rules_app}, actions: []}
"""


def watch_cost(tmp, binary, seconds, with_rules):
    """The agent's CPU share of one CPU over `seconds`, with or without
    the five rules, five idle processes in a cgroup."""
    cgroup = Cgroup("tracecar-bench-idle", 256)
    apps = [App(binary, "spin") for _ in range(5)]
    for app in apps:
        cgroup.enter(app.proc.pid)
    agent = Agent(tmp, "cost", ["--no-lttng", "--artifact-dir", os.path.join(tmp, "cost-artifacts")])
    try:
        if with_rules:
            post(agent, FIVE_RULES)
        time.sleep(2)
        rules = json.loads(agent.body("/v1/rules"))
        assert len(rules) == (5 if with_rules else 0), rules
        before, at = proc_cpu(agent.pid), time.monotonic()
        time.sleep(seconds)
        share = (proc_cpu(agent.pid) - before) / (time.monotonic() - at) * 100
        if with_rules:
            rules = json.loads(agent.body("/v1/rules"))
            assert all(r["tally"]["fired"] == 0 for r in rules), rules
            errors = [r["tally"].get("last_error") for r in rules if r["tally"].get("last_error")]
            assert not errors, errors
    finally:
        agent.stop()
        for app in apps:
            app.stop()
        cgroup.close()
    return share


def row(name, values, unit):
    m, ci = mean_ci(values)
    return f"| {name} | {m:.0f} ± {ci:.0f} {unit} | {min(values):.0f} | {max(values):.0f} |"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60, help="each cost round's measurement")
    parser.add_argument("--rounds", type=int, default=3, help="cost rounds of each configuration")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 2 rounds of 15 s")
    parser.add_argument("--no-counter", dest="counter", action="store_false",
                        help="leave out the .NET counter rule's runs")
    parser.add_argument("--dotnet", default="8.0.4", help="the .NET runtime of the counter runs")
    args = parser.parse_args()
    in_own_pid_namespace(__file__)
    if args.quick:
        args.repeats, args.rounds, args.seconds = 3, 2, 15
    for tool in ["gcc", "curl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bench-rules`, which installs it")
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-rules-")
    binary = os.path.join(tmp, "rules_app")
    subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-o", binary,
                    os.path.join(ROOT, "agent", "tests", "workloads", "rules_app.c")], check=True)
    try:
        agent = Agent(tmp, "latency", ["--no-lttng", "--artifact-dir", os.path.join(tmp, "artifacts")])
        net = Dotnet(tmp, args.dotnet) if args.counter else None
        latency = {k: [] for k in ["tracecar cpu", "watchdog cpu", "tracecar memory", "watchdog memory"]}
        if net:
            latency["tracecar counter"] = []
        crashes = []
        try:
            for n in range(args.repeats):
                latency["tracecar cpu"].append(tracecar_cpu(agent, binary, n))
                latency["watchdog cpu"].append(watchdog_cpu(agent, binary, n))
                latency["tracecar memory"].append(tracecar_memory(agent, binary, n))
                latency["watchdog memory"].append(watchdog_memory(agent, binary, n))
                if net:
                    latency["tracecar counter"].append(tracecar_counter(agent, net, n, 1))
                crashes.append(tracecar_crash(agent, binary, n))
                print(f"round {n + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]} ms" for k, v in latency.items())
                      + f", crash dumped in {crashes[-1][0]} ms (whole before death: {crashes[-1][1]})", flush=True)
        finally:
            agent.stop()
        cost = {"no rules": [], "five rules": []}
        for n in range(args.rounds):
            cost["no rules"].append(watch_cost(tmp, binary, args.seconds, False))
            cost["five rules"].append(watch_cost(tmp, binary, args.seconds, True))
            print(f"cost round {n + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.3f} %" for k, v in cost.items()),
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"From the condition becoming true to the action starting ({args.repeats} runs each, interleaved):")
    print()
    print("| trigger | mean ± 95 % CI | min | max |")
    print("|---|---|---|---|")
    for name, values in latency.items():
        print(row(name, values, "ms"))
    crash_ms = [ms for ms, _ in crashes]
    print(row("tracecar signal (crash → dump)", crash_ms, "ms"))
    dumped = sum(1 for _, whole in crashes if whole)
    print(f"\nfatal signal: the dump taken before the process was gone in {dumped} of {len(crashes)} crashes "
          f"(target: every one: {dumped == len(crashes)}); each then died of its SIGSEGV")
    for what in ["cpu", "memory"]:
        ratio = statistics.mean(latency[f"tracecar {what}"]) / statistics.mean(latency[f"watchdog {what}"])
        print(f"\n{what}: tracecar takes {ratio:.2f}× the watchdog's time "
              f"(target: under 1000 ms, every run: {max(latency[f'tracecar {what}']) < 1000})")
    if net:
        counter = latency["tracecar counter"]
        print(f"\ncounter: target under 1000 ms, every run: {max(counter) < 1000}; on average: "
              f"{statistics.mean(counter) < 1000} (a value is known at the end of the runtime's 1 s interval)")
    print()
    print(f"The agent's CPU, % of one CPU, over {args.seconds:.0f} s rounds ({args.rounds} each, interleaved), "
          "five idle processes:")
    print()
    print("| agent | mean ± 95 % CI | min | max |")
    print("|---|---|---|---|")
    for name, values in cost.items():
        m, ci = mean_ci(values)
        print(f"| {name} | {m:.3f} ± {ci:.3f} % | {min(values):.3f} | {max(values):.3f} |")
    extra = statistics.mean(cost["five rules"]) - statistics.mean(cost["no rules"])
    print(f"\nfive rules cost {extra:.3f} % of one CPU over an idle agent "
          f"(target: under 0.2 %: {statistics.mean(cost['five rules']) < 0.2})")


if __name__ == "__main__":
    main()

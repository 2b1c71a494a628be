#!/usr/bin/env python3
""".NET benchmark, against the .NET Core 3.1.23, .NET 8.0.4 and .NET 10.0.0
runtimes (scripts/deps.sh) and the sample app (tests/dotnet-app/App.cs),
through the agent's release binary; every measurement runs on each runtime
in turn and the tables show them side by side:

1. Event throughput: the app emits its EventSource's Request events at a
   fixed rate (`App.dll paced N`) while one /v1/dotnet/trace session
   (format=json) runs; delivered events per second, the runtime's dropped
   count (sequence gaps) and gaps in the events' own ids.
2. Overhead on the app: `App.dll rate` prints how many rounds of its hot
   loop ran each second. Rounds per second with nothing attached, with a
   /v1/profile (perf, 99 Hz, rundown at the end) and with a cpu-sampling
   /v1/dotnet/trace session (the runtime's SampleProfiler, 1 kHz), the
   three interleaved round by round and reported as ratios to the
   unattached rate measured in the same round.
3. Time from request to first event: a /v1/dotnet/trace request of the
   app's provider against `App.dll paced 1000`, until the first Request
   line arrives.
4. Rundown: `App.dll methods 50000` (50,000 JIT'd dynamic methods) against
   `App.dll methods 0`; the time a rundown adds to a 1-second session
   (rundown=true against rundown=false, same app), the methods it names,
   and the agent's peak RSS (VmHWM) after a 1-second /v1/profile, which
   takes the rundown and builds its method table.

Usage: make bench-dotnet   (or: python3 bench/dotnet.py [--rounds N] [--runtimes 3.1.23,8.0.4,10.0.0])
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, Agent, wait  # noqa: E402
RUNTIMES = ["3.1.23", "8.0.4", "10.0.0"]


class Dotnet:
    """One runtime (as scripts/deps.sh unpacks it) and the app built for it."""

    def __init__(self, tmp, version):
        self.version = version
        self.root = f"/var/cache/tracecar/dotnet-{version}"
        if not os.access(os.path.join(self.root, "dotnet"), os.X_OK):
            raise SystemExit(f"no .NET runtime in {self.root}: run `make bench-dotnet`, which installs it")
        out = os.path.join(tmp, f"app-{version}")
        subprocess.run(["bash", os.path.join(ROOT, "tests", "dotnet-app", "build.sh"), out, version], check=True,
                       stdout=subprocess.DEVNULL)
        self.dll = os.path.join(out, "App.dll")


def start_app(net, *args, stdin=None):
    """`App.dll ARGS` on `net`, once its diagnostic socket exists;
    `stdin=subprocess.PIPE` to write lines to it."""
    env = dict(os.environ, DOTNET_ROOT=net.root, DOTNET_SYSTEM_GLOBALIZATION_INVARIANT="1")
    app = subprocess.Popen([os.path.join(net.root, "dotnet"), net.dll, *map(str, args)],
                           stdin=stdin, stdout=subprocess.PIPE, text=True, env=env)
    app.stdout.readline()  # "tracecar sample (.NET): MODE"
    # The diagnostic socket exists once the runtime is up.
    wait(lambda: any(f.startswith(f"dotnet-diagnostic-{app.pid}-") for f in os.listdir("/tmp")), 10,
         "the diagnostic socket")
    return app


def stop_app(app):
    app.kill()
    app.wait()
    # What a killed runtime leaves in /tmp: its diagnostic socket and
    # debugger pipes.
    for f in os.listdir("/tmp"):
        if f.startswith((f"dotnet-diagnostic-{app.pid}-", f"clr-debug-pipe-{app.pid}-")):
            os.unlink(os.path.join("/tmp", f))


def ndjson(body):
    return [json.loads(l) for l in body.splitlines() if l.strip()]


def throughput(agent, net, rates, seconds):
    rows = []
    for rate in rates:
        app = start_app(net, "paced", rate)
        try:
            code, body = agent.get(f"/v1/dotnet/trace?pid={app.pid}&providers=Tracecar-Sample"
                                   f"&seconds={seconds}&format=json")
            assert code == 200, body[:300]
            lines = ndjson(body)
            summary = lines.pop()["summary"]
            ids = [e["fields"]["Id"] for e in lines if e["event"] == "Request"]
            gaps = sum(1 for a, b in zip(ids, ids[1:]) if b != a + 1)
            span = (lines[-1]["ts_ns"] - lines[0]["ts_ns"]) / 1e9 if len(lines) > 1 else 0
            rows.append((rate, len(ids), len(ids) / span if span else 0, summary["dropped"], gaps))
            print(f"{net.version} throughput {rate:,}/s: {len(ids):,} events, dropped {summary['dropped']}", file=sys.stderr)
        finally:
            stop_app(app)
    return rows


def rate_while(app, seconds, attach):
    """Mean rounds/s the app printed during `seconds`, skipping the first
    second (attach set-up) and the last (detach)."""
    client = attach() if attach else None
    values = []
    for _ in range(seconds):
        values.append(int(app.stdout.readline()))
    if client:
        client.wait(timeout=60)
    inner = values[1:-1] or values
    return statistics.mean(inner)


def overhead(agent, net, rounds, seconds):
    app = start_app(net, "rate")
    pid = app.pid
    modes = {
        "none": None,
        "perf profile": lambda: agent.stream(f"/v1/profile?pid={pid}&seconds={seconds}&format=folded",
                                             subprocess.DEVNULL),
        "cpu-sampling": lambda: agent.stream(f"/v1/dotnet/trace?pid={pid}&providers=cpu-sampling"
                                             f"&seconds={seconds}&format=nettrace", subprocess.DEVNULL),
    }
    results = {m: [] for m in modes}
    try:
        for _ in range(2):  # warm-up: tiered JIT settles
            app.stdout.readline()
        for r in range(rounds):
            base = None
            for mode, attach in modes.items():
                value = rate_while(app, seconds, attach)
                if mode == "none":
                    base = value
                results[mode].append(value / base)
            print(f"{net.version} overhead round {r + 1}: " + ", ".join(f"{m} {results[m][-1]:.3f}" for m in modes),
                  file=sys.stderr)
    finally:
        stop_app(app)
    return {m: (statistics.median(v), min(v), max(v)) for m, v in results.items()}


def first_event(agent, net, runs):
    app = start_app(net, "paced", 1000)
    times = []
    try:
        for _ in range(runs):
            started = time.monotonic()
            client = agent.stream(f"/v1/dotnet/trace?pid={app.pid}&providers=Tracecar-Sample&seconds=2&format=json")
            for line in client.stdout:
                if b'"event":"Request"' in line.replace(b" ", b""):
                    times.append((time.monotonic() - started) * 1000)
                    break
            client.kill()
            client.wait()
            time.sleep(0.3)
    finally:
        stop_app(app)
    return times


def rundown(tmp, net, methods, runs):
    app = start_app(net, "methods", methods)
    wait(lambda: app.stdout.readline().startswith("methods:"), 300, "the methods to be JIT'd")
    agent = Agent(tmp, f"rundown-{net.version}-{methods}", ["--no-lttng", "--dump-dir", os.path.join(tmp, "dumps")])
    try:
        with_r, without = [], []
        named = 0
        for _ in range(runs):
            for flag, into in [("true", with_r), ("false", without)]:
                started = time.monotonic()
                code, body = agent.get(f"/v1/dotnet/trace?pid={app.pid}&providers=Microsoft-Windows-DotNETRuntime:0x10:4"
                                       f"&seconds=1&format=json&rundown={flag}")
                into.append((time.monotonic() - started) * 1000)
                assert code == 200, body[:300]
                if flag == "true":
                    named = sum(1 for e in ndjson(body)[:-1] if e["event"].startswith("MethodDCEnd"))
        rss_before = agent.peak_rss_mb()
        code, body = agent.get(f"/v1/profile?pid={app.pid}&seconds=1&format=json")
        assert code == 200, body[:300]
        return {
            "methods": methods,
            "named": named,
            "rundown_ms": statistics.median(with_r) - statistics.median(without),
            "session_ms": statistics.median(with_r),
            "rss_before": rss_before,
            "rss_after": agent.peak_rss_mb(),
        }
    finally:
        agent.stop()
        stop_app(app)


def measure(tmp, net, args):
    """Every measurement on one runtime."""
    agent = Agent(tmp, f"agent-{net.version}", ["--no-lttng", "--dump-dir", os.path.join(tmp, "dumps")])
    try:
        rates = throughput(agent, net, [10_000, 50_000, 100_000, 200_000, 400_000], args.seconds)
        costs = overhead(agent, net, args.rounds, args.seconds)
        firsts = first_event(agent, net, 10)
    finally:
        agent.stop()
    rundowns = [rundown(tmp, net, n, 3) for n in (0, 50_000)]
    return {"rates": rates, "costs": costs, "firsts": firsts, "rundowns": rundowns}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="overhead rounds (each: none, perf, cpu-sampling)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per overhead window and per rate")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated runtime versions")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-dotnet-")
    try:
        nets = [Dotnet(tmp, v) for v in args.runtimes.split(",") if v]
        results = {net.version: measure(tmp, net, args) for net in nets}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f".NET benchmark: .NET {', '.join(results)} side by side, {os.cpu_count()} CPUs, "
          "the agent's release build")
    print()
    print(f"EventSource throughput ({args.seconds} s sessions, format=json):")
    print()
    print("| runtime | target rate (events/s) | delivered | delivered rate (events/s) | dropped (runtime) | id gaps |")
    print("|---|---|---|---|---|---|")
    for version, res in results.items():
        for rate, n, achieved, dropped, gaps in res["rates"]:
            print(f"| {version} | {rate:,} | {n:,} | {achieved:,.0f} | {dropped} | {gaps} |")
    print()
    print(f"Overhead on the app (hot-loop rounds/s as a ratio to the unattached rate of the same round; "
          f"median, min-max of {args.rounds} rounds of {args.seconds} s):")
    print()
    print("| attached | " + " | ".join(f"{v} ratio (min-max)" for v in results) + " |")
    print("|---|" + "---|" * len(results))
    for mode in next(iter(results.values()))["costs"]:
        cells = [f"{r['costs'][mode][0]:.3f} ({r['costs'][mode][1]:.3f}-{r['costs'][mode][2]:.3f})"
                 for r in results.values()]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    print()
    print("Time from request to first event (10 sessions each): " + "; ".join(
        f"{v}: median {statistics.median(r['firsts']):.0f} ms, max {max(r['firsts']):.0f} ms"
        for v, r in results.items()))
    print()
    print("Rundown (a 1-second session with rundown=true against rundown=false; agent peak RSS after a "
          "1-second /v1/profile):")
    print()
    print("| runtime | dynamic methods JIT'd | methods in the rundown | time the rundown adds (ms) | agent peak RSS "
          "before → after the profile (MB) |")
    print("|---|---|---|---|---|")
    for version, res in results.items():
        for r in res["rundowns"]:
            print(f"| {version} | {r['methods']:,} | {r['named']:,} | {r['rundown_ms']:.0f} | {r['rss_before']:.1f} → "
                  f"{r['rss_after']:.1f} |")


if __name__ == "__main__":
    main()

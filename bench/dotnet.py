#!/usr/bin/env python3
""".NET benchmark, against the .NET Core 3.1 runtime (scripts/deps.sh) and
the sample app (tests/dotnet-app/App.cs), through the agent's release
binary:

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

Usage: make bench-dotnet   (or: python3 bench/dotnet.py [--rounds N])
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, Agent, wait  # noqa: E402
DOTNET_ROOT = os.environ.get("TRACECAR_DOTNET_ROOT", "/var/cache/tracecar/dotnet-3.1.23")


def build_app(tmp):
    subprocess.run(["bash", os.path.join(ROOT, "tests", "dotnet-app", "build.sh"), tmp], check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(tmp, "App.dll")


def start_app(dll, *args):
    env = dict(os.environ, DOTNET_ROOT=DOTNET_ROOT, DOTNET_SYSTEM_GLOBALIZATION_INVARIANT="1")
    app = subprocess.Popen([os.path.join(DOTNET_ROOT, "dotnet"), dll, *map(str, args)],
                           stdout=subprocess.PIPE, text=True, env=env)
    app.stdout.readline()  # "tracecar sample (.NET): MODE"
    # The diagnostic socket exists once the runtime is up.
    wait(lambda: any(f.startswith(f"dotnet-diagnostic-{app.pid}-") for f in os.listdir("/tmp")), 10,
         "the diagnostic socket")
    return app


def stop_app(app):
    app.kill()
    app.wait()
    for f in os.listdir("/tmp"):
        if f.startswith(f"dotnet-diagnostic-{app.pid}-"):
            os.unlink(os.path.join("/tmp", f))


def ndjson(body):
    return [json.loads(l) for l in body.splitlines() if l.strip()]


def throughput(agent, dll, rates, seconds):
    rows = []
    for rate in rates:
        app = start_app(dll, "paced", rate)
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
            print(f"throughput {rate:,}/s: {len(ids):,} events, dropped {summary['dropped']}", file=sys.stderr)
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


def overhead(agent, dll, rounds, seconds):
    app = start_app(dll, "rate")
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
            print(f"overhead round {r + 1}: " + ", ".join(f"{m} {results[m][-1]:.3f}" for m in modes),
                  file=sys.stderr)
    finally:
        stop_app(app)
    return {m: (statistics.median(v), min(v), max(v)) for m, v in results.items()}


def first_event(agent, dll, runs):
    app = start_app(dll, "paced", 1000)
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


def rundown(tmp, dll, methods, runs):
    app = start_app(dll, "methods", methods)
    wait(lambda: app.stdout.readline().startswith("methods:"), 300, "the methods to be JIT'd")
    agent = Agent(tmp, f"rundown-{methods}", ["--no-lttng", "--dump-dir", os.path.join(tmp, "dumps")])
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="overhead rounds (each: none, perf, cpu-sampling)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per overhead window and per rate")
    args = parser.parse_args()
    if not os.access(os.path.join(DOTNET_ROOT, "dotnet"), os.X_OK):
        raise SystemExit(f"no .NET runtime in {DOTNET_ROOT}: run `make bench-dotnet`, which installs it")
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-dotnet-")
    dll = build_app(tmp)
    agent = Agent(tmp, "agent", ["--no-lttng", "--dump-dir", os.path.join(tmp, "dumps")])
    try:
        rates = throughput(agent, dll, [10_000, 50_000, 100_000, 200_000, 400_000], args.seconds)
        costs = overhead(agent, dll, args.rounds, args.seconds)
        firsts = first_event(agent, dll, 10)
    finally:
        agent.stop()
    rundowns = [rundown(tmp, dll, n, 3) for n in (0, 50_000)]

    print()
    print(f".NET benchmark: .NET Core 3.1.23, {os.cpu_count()} CPUs, the agent's release build")
    print()
    print(f"EventSource throughput ({args.seconds} s sessions, format=json):")
    print()
    print("| target rate (events/s) | delivered | delivered rate (events/s) | dropped (runtime) | id gaps |")
    print("|---|---|---|---|---|")
    for rate, n, achieved, dropped, gaps in rates:
        print(f"| {rate:,} | {n:,} | {achieved:,.0f} | {dropped} | {gaps} |")
    print()
    print(f"Overhead on the app (hot-loop rounds/s as a ratio to the unattached rate of the same round; "
          f"median, min-max of {args.rounds} rounds of {args.seconds} s):")
    print()
    print("| attached | rounds/s ratio | min | max |")
    print("|---|---|---|---|")
    for mode, (median, low, high) in costs.items():
        print(f"| {mode} | {median:.3f} | {low:.3f} | {high:.3f} |")
    print()
    print(f"Time from request to first event ({len(firsts)} sessions): median {statistics.median(firsts):.0f} ms, "
          f"max {max(firsts):.0f} ms")
    print()
    print("Rundown (a 1-second session with rundown=true against rundown=false; agent peak RSS after a "
          "1-second /v1/profile):")
    print()
    print("| dynamic methods JIT'd | methods in the rundown | time the rundown adds (ms) | agent peak RSS before "
          "→ after the profile (MB) |")
    print("|---|---|---|---|")
    for r in rundowns:
        print(f"| {r['methods']:,} | {r['named']:,} | {r['rundown_ms']:.0f} | {r['rss_before']:.1f} → "
              f"{r['rss_after']:.1f} |")


if __name__ == "__main__":
    main()

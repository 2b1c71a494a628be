#!/usr/bin/env python3
"""LTTng benchmark: the tracepoint app (agent/tests/workloads/tp_app.c)
emits tracecar_test:tick events at increasing rates while the agent records
one session with its default channel settings (format=json). Reports events
recorded against emitted, LTTng's discarded-event and lost-packet counts,
and the session's set-up and tear-down latency (from the summary line,
which the agent measures around the lttng commands).

Usage: make bench-lttng   (or: python3 bench/lttng.py [--seconds N] [--latency-runs N])
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

from common import ROOT, Agent, wait  # noqa: E402
WORKLOADS = os.path.join(ROOT, "agent", "tests", "workloads")


def build_app(tmp):
    shutil.copy(os.path.join(WORKLOADS, "tp_app.tp"), tmp)
    subprocess.run(["lttng-gen-tp", "tp_app.tp", "-o", "tp_app.h", "-o", "tp_app.c"], cwd=tmp, check=True)
    binary = os.path.join(tmp, "tp_app")
    subprocess.run(["gcc", "-O2", "-I", tmp, "-o", binary, os.path.join(WORKLOADS, "tp_app.c"),
                    os.path.join(tmp, "tp_app.c"), "-llttng-ust", "-ldl"], check=True)
    return binary


def recording():
    xml = subprocess.run(["lttng", "--no-sessiond", "--mi", "xml", "list"], capture_output=True, text=True).stdout
    return "<name>tracecar-" in xml and "<enabled>true</enabled>" in xml


def registered(agent, pid):
    try:
        listed = json.loads(agent.get(f"/v1/lttng/events?pid={pid}")[1])
    except json.JSONDecodeError:
        return False
    return any(e["event"] == "tracecar_test:tick" for e in listed.get("events", []))


def record(agent, app, count, rate, seconds, tmp):
    """One recording while the app emits `count` events at `rate`/s (0: as
    fast as it can). Returns (emitted per second, recorded, summary)."""
    target = subprocess.Popen([app, str(count), str(rate), "--exit"], stderr=subprocess.PIPE, text=True)
    wait(lambda: registered(agent, target.pid), 15, "the app to register")
    out = os.path.join(tmp, "record.ndjson")
    client = agent.background(f"/v1/lttng/record?events=tracecar_test:*&pid={target.pid}"
                              f"&seconds={seconds}&format=json", out)
    wait(recording, 15, "the session to start")
    target.send_signal(signal.SIGUSR1)
    _, err = target.communicate(timeout=seconds + 60)
    achieved = float(err.split("(")[-1].split("/s")[0]) if "/s)" in err else 0.0
    client.wait(timeout=seconds + 600)
    recorded = 0
    summary = {}
    with open(out) as f:
        for line in f:
            if line.startswith('{"summary"'):
                summary = json.loads(line)["summary"]
            elif line.startswith('{"ts_ns"'):
                recorded += 1
    os.unlink(out)
    return achieved, recorded, summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5, help="emission time per rate")
    parser.add_argument("--latency-runs", type=int, default=15)
    args = parser.parse_args()
    for tool in ["lttng", "lttng-gen-tp", "babeltrace2", "gcc", "curl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bench-lttng`, which installs it")
    tmp = tempfile.mkdtemp(prefix="tracecar-bench-lttng-")
    app = build_app(tmp)
    agent = Agent(tmp, args=["--lttng-trace-dir", os.path.join(tmp, "traces")])
    rows = []
    latencies = []
    try:
        wait(lambda: b'"running":true' in agent.get("/v1/capabilities")[1].replace(b" ", b""), 20,
             "lttng-sessiond")
        for rate in [10_000, 50_000, 100_000, 200_000, 400_000, 0]:
            count = rate * args.seconds if rate else 4_000_000
            achieved, recorded, summary = record(agent, app, count, rate, args.seconds + 3, tmp)
            rows.append((rate, count, achieved, recorded, summary))
            print(f"rate {rate or 'max'}: {recorded:,}/{count:,} recorded", file=sys.stderr)
        for _ in range(args.latency_runs):
            _, _, summary = record(agent, app, 100, 0, 1, tmp)
            latencies.append((summary["setup_ms"], summary["teardown_ms"]))
    finally:
        agent.stop()
    version = subprocess.run(["lttng", "--version"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"LTTng benchmark: {version}; one session per rate with the agent's default channel "
          f"(1 MiB x 8 sub-buffers per CPU, discard mode), {args.seconds} s of emission, format=json")
    print()
    print("| target rate (events/s) | achieved rate | emitted | recorded | discarded events | lost packets "
          "| disk cap reached |")
    print("|---|---|---|---|---|---|---|")
    for rate, count, achieved, recorded, summary in rows:
        label = f"{rate:,}" if rate else "as fast as possible"
        cap = "yes" if summary.get("disk_limit_reached") else "no"
        print(f"| {label} | {achieved:,.0f} | {count:,} | {recorded:,} | {summary.get('discarded_events')} "
              f"| {summary.get('lost_packets')} | {cap} ({summary.get('disk_limit_bytes', 0) >> 20} MiB) |")
    setup = [s for s, _ in latencies]
    teardown = [t for _, t in latencies]
    both = [s + t for s, t in latencies]
    print()
    print(f"Session set-up (create, channel, events, contexts, track, start) and tear-down (stop, counters, "
          f"destroy), {len(latencies)} recordings:")
    print()
    print("| | median (ms) | max (ms) |")
    print("|---|---|---|")
    for label, values in [("set-up", setup), ("tear-down", teardown), ("set-up + tear-down", both)]:
        print(f"| {label} | {statistics.median(values):.0f} | {max(values):.0f} |")
    print()
    at_100k = [r for r in rows if r[0] == 100_000]
    targets = [
        ("no loss at 100k events/s with the default channel settings",
         all(r[3] == r[1] and r[4].get("discarded_events") == 0 and r[4].get("lost_packets") == 0
             for r in at_100k)),
        ("set-up plus tear-down under 500 ms (every recording)", max(both) < 500),
    ]
    for label, ok in targets:
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Cargo's target directory, as cargo itself reports it (`cargo metadata`,
field `target_directory`), so that CARGO_TARGET_DIR, `build.target-dir` in a
cargo config and the default `target/` all work. The one place every script
asks: shell scripts run `python3 scripts/target_dir.py`, Python scripts
import `target_dir` from here.
"""
import functools
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def target_dir():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
                         check=True, text=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)["target_directory"]


def release(name):
    """A release binary (or `examples/NAME`) of this workspace."""
    return os.path.join(target_dir(), "release", name)


if __name__ == "__main__":
    print(target_dir() if len(sys.argv) < 2 else os.path.join(target_dir(), *sys.argv[1:]))

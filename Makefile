# tracecar — see README.md. Every target installs what it needs itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: help deps images e2e target-dir outside demo test lint unit manifests demo-check fuzz fuzz-smoke bench-memory bench-webhook bench-profile bench-uprobe bench-lttng bench-dotnet bench-continuous bench-rules clean

help:
	@echo "make demo            run the main job end to end (results in demo-out/)"
	@echo "make test            full test suite (what .ci/run runs)"
	@echo "make images          build tracecar/agent, tracecar/webhook, tracecar/sample-app, tracecar/dotnet-sample with podman"
	@echo "make e2e             webhook → patched pod → podman kube play → kubectl-tracecar checks"
	@echo "make target-dir      images and e2e with CARGO_TARGET_DIR outside the checkout"
	@echo "make outside         one release build outside the checkout: every e2e scenario, manifests, the demo"
	@echo "make fuzz            every cargo-fuzz target for FUZZ_SECONDS (default 60) each"
	@echo "make bench-memory    the agent's memory peaks: a 600 s 1000 Hz profile of 1,000 threads, 4 captures, 8 unread probes"
	@echo "make bench-webhook   webhook benchmark against a bare TLS+HTTP ceiling"
	@echo "make bench-profile   profiler overhead (CPU and context-switch workloads, 95% CIs), time to result and memory against perf"
	@echo "make bench-uprobe    probe cost per call (uprobe, breakpoint, stacks) and exact delivery, against bpftrace"
	@echo "make bench-lttng     LTTng recording: loss by event rate, session set-up/tear-down"
	@echo "make bench-dotnet    .NET: EventPipe throughput, overhead vs perf, first event, rundown of 50k methods"
	@echo "make bench-rules     collection rules: condition to action (cpu, memory) against a watchdog script, and the CPU five rules cost"
	@echo "make bench-continuous continuous profiling (19 Hz, 15 s windows) for 10 min: the app's overhead, the agent's CPU and RSS, against perf record -F 19 -g"

deps:
	@bash scripts/deps.sh test

demo:
	@bash scripts/deps.sh demo
	@bash scripts/demo.sh

images:
	@bash scripts/deps.sh e2e
	@bash scripts/images.sh

e2e: images
	python3 tests/e2e.py

# The images, the e2e's minimal scenario and the manifest check with
# CARGO_TARGET_DIR outside the checkout.
target-dir:
	bash tests/target-dir.sh

# Everything that needs the release binaries, built once, outside the
# checkout: every e2e scenario, the manifest check, the demo (the same
# checks as `e2e`, `manifests` and `demo-check`, and `target-dir`'s).
outside:
	bash tests/target-dir.sh --all

test: deps lint unit fuzz-smoke outside
	@echo "make test: all passed"

lint:
	python3 scripts/layers.py --self-test
	python3 scripts/layers.py
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# The .NET tests run on .NET Core 3.1 with the rest, then again on .NET 8,
# .NET 10 and a single-file .NET 10 app (TRACECAR_DOTNET: agent/tests/common).
# The LTTng check runs on 3.1 only: every runtime links the same
# LTTng-UST 2.12 library (.so.0), which the sidecar's 2.13 refuses alike.
# --workspace as in the first run: with -p the dependencies' features
# unify differently, and the agent and its tests are built again.
DOTNETS = 8 10 single-file
unit:
	cargo test --workspace --locked
	@for v in $(DOTNETS); do \
		echo "== .NET tests on $$v"; \
		TRACECAR_DOTNET=$$v cargo test --locked --workspace --test dotnet -- --skip lttng_says_plainly || exit 1; \
		TRACECAR_DOTNET=$$v cargo test --locked --workspace --test jit -- dotnet || exit 1; \
	done

manifests:
	cargo build --locked -p tracecar-webhook --bin tracecar-webhook -p kubectl-tracecar --bin kubectl-tracecar
	bash tests/manifests.sh

# The README's first command, unattended, into a scratch directory.
demo-check:
	@scratch=$$(mktemp -d); \
	if DEMO_OUT=$$scratch/demo-out bash scripts/demo.sh >$$scratch/log 2>&1; then \
		rm -rf $$scratch; echo "demo: ok"; \
	else \
		cat $$scratch/log; rm -rf $$scratch; echo "demo: FAILED"; exit 1; \
	fi

# Every cargo-fuzz target for FUZZ_SECONDS (default 60) each; see
# scripts/fuzz.sh. `make test` runs them for 10 s each (fuzz-smoke).
fuzz:
	@bash scripts/deps.sh fuzz
	@bash scripts/fuzz.sh

fuzz-smoke:
	@bash scripts/deps.sh fuzz
	@FUZZ_SECONDS=10 bash scripts/fuzz.sh

bench-memory:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-agent --bin tracecar-agent
	python3 bench/memory.py

bench-webhook:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-webhook --bin tracecar-webhook --example ceiling
	python3 bench/webhook.py

bench-profile:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-agent --bin tracecar-agent
	python3 bench/profile.py

bench-uprobe:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-agent --bin tracecar-agent
	python3 bench/uprobe.py

bench-lttng:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-agent --bin tracecar-agent
	python3 bench/lttng.py

bench-dotnet:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-agent --bin tracecar-agent
	python3 bench/dotnet.py

bench-continuous:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-agent --bin tracecar-agent
	python3 bench/continuous.py

bench-rules:
	@bash scripts/deps.sh bench
	cargo build --release --locked -p tracecar-agent --bin tracecar-agent
	python3 bench/rules.py

clean:
	cargo clean
	rm -rf demo-out

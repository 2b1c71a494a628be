#!/usr/bin/env bash
# Builds the images: tracecar/agent, tracecar/webhook, tracecar/sample-app
# and tracecar/dotnet-sample (all :0.1.0), from release binaries built here
# on Debian 12 (glibc matches bookworm); the .NET sample gets the runtime
# scripts/deps.sh unpacked into /var/cache/tracecar.
#
# No registry is reachable from this kind of machine, so the base image
# `debian:bookworm-slim` is made locally: a debootstrap'd bookworm minbase
# root filesystem without docs and apt lists, imported with `podman import`
# under that name, so that `podman build --pull=never` finds it. The root
# filesystem tarball is cached in $TRACECAR_IMAGE_CACHE (default
# /var/cache/tracecar) and the image stays in podman's store, so later runs
# skip both. With docker (and a running daemon) instead of podman, the same
# steps use docker.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/tests/podman/containers.conf}
CACHE=${TRACECAR_IMAGE_CACHE:-/var/cache/tracecar}
BASE=docker.io/library/debian:bookworm-slim
VERSION=0.1.0
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if command -v podman >/dev/null; then
    ENGINE=podman
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker
else
    echo "images: neither podman nor a running docker found (scripts/deps.sh e2e installs podman)" >&2
    exit 1
fi

image_exists() {
    if [ "$ENGINE" = podman ]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

if ! image_exists "$BASE"; then
    tarball=$CACHE/bookworm-minbase.tar.gz
    if [ ! -s "$tarball" ]; then
        echo "images: debootstrap --variant=minbase bookworm (once; cached in $tarball)"
        mkdir -p "$CACHE"
        rootfs=$(mktemp -d)
        trap 'rm -rf "$rootfs"' EXIT
        debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
            { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
        # What bookworm-slim leaves out, now and for later installs.
        cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
        find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
        find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
        tar -C "$rootfs" -czf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    echo "images: importing $tarball as $BASE"
    $ENGINE import --change 'CMD ["bash"]' "$tarball" "$BASE" >/dev/null
fi

echo "images: release binaries"
cargo build --release --locked -p tracecar-agent -p tracecar-webhook -p kubectl-tracecar
TARGET=$(python3 "$ROOT/scripts/target_dir.py")
bash tests/sample-app/build.sh "$TARGET/sample-app"
# The build context is a directory holding only these; debug info and
# symbols stay in the host's release binaries.
CONTEXT=$TARGET/images
mkdir -p "$CONTEXT"
strip --strip-all -o "$CONTEXT/tracecar-agent" "$TARGET/release/tracecar-agent"
strip --strip-all -o "$CONTEXT/tracecar-webhook" "$TARGET/release/tracecar-webhook"
cp "$TARGET/sample-app/sample-app" "$CONTEXT/sample-app"
# The .NET sample's own context: the runtime and App.dll.
DOTNET_CONTEXT=$TARGET/images-dotnet
DOTNET_VERSION=8.0.4
DOTNET_RUNTIME=$CACHE/dotnet-$DOTNET_VERSION
[ -x "$DOTNET_RUNTIME/dotnet" ] || { echo "images: no .NET runtime in $DOTNET_RUNTIME (scripts/deps.sh e2e)" >&2; exit 1; }
rm -rf "$DOTNET_CONTEXT" && mkdir -p "$DOTNET_CONTEXT"
cp -a "$DOTNET_RUNTIME" "$DOTNET_CONTEXT/dotnet"
bash tests/dotnet-app/build.sh "$DOTNET_CONTEXT/app" "$DOTNET_VERSION"

build() {
    local tag=$1 file=$2
    shift 2
    echo "images: $tag"
    # --network=host: apt inside the build reaches the Debian mirror the
    # same way the host does.
    $ENGINE build --pull=never --network=host -q "$@" -t "$tag" -f "$ROOT/$file" "${context:-$CONTEXT}" >/dev/null
}
# Squashed with its base, so that purging apt in it saves space.
squash=()
[ "$ENGINE" = podman ] && squash=(--squash-all)
build tracecar/agent:$VERSION agent/Dockerfile "${squash[@]}"
build tracecar/webhook:$VERSION webhook/Dockerfile
build tracecar/sample-app:$VERSION tests/sample-app/Dockerfile
context=$DOTNET_CONTEXT build tracecar/dotnet-sample:$VERSION tests/dotnet-app/Dockerfile

for image in agent webhook sample-app dotnet-sample; do
    size=$($ENGINE image inspect --format '{{.Size}}' tracecar/$image:$VERSION)
    awk -v name="tracecar/$image:$VERSION" -v size="$size" 'BEGIN { printf "images: %-28s %6.1f MB\n", name, size / 1e6 }'
done

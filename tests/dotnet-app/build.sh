#!/usr/bin/env bash
# Builds the .NET sample app into OUTDIR: App.dll (mcs, Debian's mono-mcs),
# the App.runtimeconfig.json that runs it on .NET VERSION (default 3.1.23;
# 8.0.4 and 10.0.0 are the other runtimes scripts/deps.sh installs), and
# Hook.dll, the startup hook that runs App.dll inside a single-file app.
# Usage: build.sh OUTDIR [VERSION]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
VERSION=${2:-3.1.23}
case $VERSION in
3.*) TFM=netcoreapp${VERSION%.*} ;;
*) TFM=net${VERSION%.*} ;;
esac
mcs -nologo -out:"$OUT/App.dll" -target:exe "$HERE/App.cs"
mcs -nologo -out:"$OUT/Hook.dll" -target:library "$HERE/Hook.cs"
cat >"$OUT/App.runtimeconfig.json" <<JSON
{"runtimeOptions":{"tfm":"$TFM","framework":{"name":"Microsoft.NETCore.App","version":"$VERSION"}}}
JSON

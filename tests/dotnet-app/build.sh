#!/usr/bin/env bash
# Builds the .NET sample app into OUTDIR: App.dll (mcs, Debian's mono-mcs)
# and the App.runtimeconfig.json that runs it on .NET Core 3.1.23.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
mcs -nologo -out:"$OUT/App.dll" -target:exe "$HERE/App.cs"
cat >"$OUT/App.runtimeconfig.json" <<'JSON'
{"runtimeOptions":{"tfm":"netcoreapp3.1","framework":{"name":"Microsoft.NETCore.App","version":"3.1.23"}}}
JSON

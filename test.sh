#!/usr/bin/env bash
# Builds BnbDist and runs every test project (xunit v3 on Microsoft.Testing.Platform).
# Usage: ./test.sh [extra dotnet test arguments]
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
dotnet test --solution BnbDist.sln -c Release "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
num() { grep -E "^\s*$1:" "$log" | tail -1 | grep -oE '[0-9]+' || echo 0; }
echo "$(num succeeded) passed, $(num failed) failed, $(num skipped) skipped"
exit "$rc"

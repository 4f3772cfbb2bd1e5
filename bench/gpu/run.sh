#!/usr/bin/env bash
# Runs on the GPU host, from the repository root: `source`s .gpu/device-env.sh, builds the CUDA kernels, runs the
# kernel self-test, the .NET test assemblies (CUDA tests included) and the benchmark. Logs and results go to $OUT.
# Usage: bench/gpu/run.sh [build] [selftest] [tests] [bench] [diagnose]   (default: all)
set -uo pipefail
cd "$(dirname "$0")/../.."
source .gpu/device-env.sh
OUT=${OUT:-/tmp/bnbdist-out}
mkdir -p "$OUT"
steps=${*:-build selftest diagnose tests bench}
status=0
has() { [[ " $steps " == *" $1 "* ]]; }
run() { local name=$1; shift; echo "=== $name: $*"; "$@" 2>&1 | tee "$OUT/$name.log"; local rc=${PIPESTATUS[0]}; echo "=== $name exit $rc"; [ "$rc" = 0 ] || status=1; }

nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv > "$OUT/nvidia-smi.txt" 2>&1
has build && run kernels-build native/kernels/build.sh
export BNBDIST_KERNELS_PATH=$PWD/native/kernels/build/libbnbdist_kernels.so
export BNBDIST_GOLDEN=$PWD/.gpu/golden/golden.safetensors
has selftest && run selftest native/kernels/build/bnbdist_kernels_selftest
has diagnose && run diagnose dotnet .gpu/app/bnbdist.dll diagnose
if has tests; then
  run tests-backends dotnet .gpu/app/BnbDist.Backends.Tests.dll
  run tests-quantstate dotnet .gpu/app/BnbDist.QuantState.Tests.dll
  run tests-nn dotnet .gpu/app/BnbDist.Nn.Tests.dll
fi
has bench && run bench dotnet .gpu/app/bnbdist-bench.dll --device cuda --out "$OUT/gpu-bench.json"
echo "run.sh finished with status $status"
exit $status

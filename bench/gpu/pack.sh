#!/usr/bin/env bash
# Prepares the git-ignored .gpu/ folder for a run on a GPU host that has PyTorch but no .NET (see
# ../shared/gpu/README.md): the packed .NET runtime, one folder with the Release builds of the test assemblies,
# the benchmark, the CLI, bnbrun and the collective check worker (without the CPU libtorch binaries; the host's
# PyTorch provides libtorch), and the bitsandbytes golden file. CUDA sources travel with the checkout and are compiled there (bench/gpu/run.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
shared=${BNBDIST_SHARED:-$repo/../shared}
"$shared/gpu/pack.sh" .gpu >/dev/null
dotnet build BnbDist.sln -c Release -v q -nologo
app=.gpu/app
rm -rf "$app" && mkdir -p "$app"
for proj in tests/BnbDist.Backends.Tests tests/BnbDist.QuantState.Tests tests/BnbDist.Nn.Tests tests/BnbDist.Optim8bit.Tests \
    tests/BnbDist.Launcher.Tests launcher tests/Workers/CollectiveCheckWorker bench/BnbDist.Bench tools/BnbDist.Cli \
    examples/BnbDist.Examples.QLoRA; do
  out="$proj/bin/Release/net10.0"
  # Managed assemblies and runtime configs only; no deps.json, so the host loads what sits in the folder.
  find "$out" -maxdepth 1 -type f \( -name '*.dll' -o -name '*.runtimeconfig.json' \) -exec cp -n {} "$app/" \;
  if [ -f "$out/runtimes/linux-x64/native/libLibTorchSharp.so" ]; then cp "$out/runtimes/linux-x64/native/libLibTorchSharp.so" "$app/"; fi
done
# The QLoRA job's inputs (the examples' base model and Jane Austen), when this checkout has them (./qlora.sh made them)
# and PACK_DATA is not 0.
rm -rf .gpu/data .gpu/golden
if [ "${PACK_DATA:-1}" != 0 ] && [ -d .data/models/sotu-base ] && [ -d .data/janeaustenr ]; then
  mkdir -p .gpu/data/models
  cp -r .data/models/sotu-base .gpu/data/models/ && cp -r .data/janeaustenr .gpu/data/
fi
# The golden file (11 MiB) is left out when the QLoRA inputs travel (the carry limit is 64 MiB): PACK_GOLDEN=1 keeps it.
if [ ! -d .gpu/data ] || [ "${PACK_GOLDEN:-0}" = 1 ]; then
  mkdir -p .gpu/golden
  cp "$shared/golden/bitsandbytes/golden.safetensors" .gpu/golden/
fi
du -sh .gpu "$app"

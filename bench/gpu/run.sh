#!/usr/bin/env bash
# Runs on the GPU host, from the repository root: `source`s .gpu/device-env.sh, builds the CUDA kernels, runs the
# kernel self-test, the .NET test assemblies (CUDA and NCCL tests included), the benchmark and the NCCL bus-bandwidth
# comparison with torch.distributed. Logs and results go to $OUT.
# Usage: bench/gpu/run.sh [build] [selftest] [diagnose] [tests] [bench] [nccl] [sharding] [qlora] [qlora-ref]   (default: the first six)
# qlora-ref: the fixed 1.1B QLoRA speed/memory reference of issue #9 on GPU 0 (needs `build` first in the same call for
# the kernels and libbnbdist_torch_memory.so); writes $OUT/qlora-ref-<gpu>.json. QLORA_REF_STEPS (timed, default 10),
# QLORA_REF_WARMUP (default 3), QLORA_REF_ARGS (e.g. "--layers 2 --variants qlora" for a smoke run).
# Environment: BNBD_CUDA_ARCHS (e.g. 90: build for that architecture only), SELFTEST_ARGS, BENCH_ARGS,
# NCCL_MAX_BYTES (largest NCCL size, default 1 GiB), SHARDING_ARGS (extra `bnbdist-bench sharding` flags).
set -uo pipefail
cd "$(dirname "$0")/../.."
source .gpu/device-env.sh
OUT=${OUT:-/tmp/bnbdist-out}
mkdir -p "$OUT"
steps=${*:-build selftest diagnose tests bench nccl}
status=0
has() { [[ " $steps " == *" $1 "* ]]; }
run() { local name=$1; shift; echo "=== $name: $*"; "$@" 2>&1 | tee "$OUT/$name.log"; local rc=${PIPESTATUS[0]}; echo "=== $name exit $rc"; [ "$rc" = 0 ] || status=1; }

nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv > "$OUT/nvidia-smi.txt" 2>&1
ngpu=$(nvidia-smi -L | grep -c '^GPU')
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -oiE 'H100|H200|A100|L40S|L4|A10G|V100|T4' | tr 'A-Z' 'a-z')
has build && run kernels-build native/kernels/build.sh ${BNBD_CUDA_ARCHS:+-DCMAKE_CUDA_ARCHITECTURES=$BNBD_CUDA_ARCHS}
export BNBDIST_KERNELS_PATH=$PWD/native/kernels/build/libbnbdist_kernels.so
export BNBDIST_GOLDEN=$PWD/.gpu/golden/golden.safetensors
export BNBDIST_TORCH_MEMORY_PATH=$PWD/native/kernels/build/libbnbdist_torch_memory.so
has selftest && run selftest native/kernels/build/bnbdist_kernels_selftest ${SELFTEST_ARGS:-}
has diagnose && run diagnose dotnet .gpu/app/bnbdist.dll diagnose
if has tests; then
  run tests-backends dotnet .gpu/app/BnbDist.Backends.Tests.dll
  run tests-quantstate dotnet .gpu/app/BnbDist.QuantState.Tests.dll
  run tests-nn dotnet .gpu/app/BnbDist.Nn.Tests.dll
  run tests-optim dotnet .gpu/app/BnbDist.Optim8bit.Tests.dll
  # bnbrun + the check worker on every GPU (NCCL); the other launcher tests are CPU tests that CI runs
  run tests-collectives dotnet .gpu/app/BnbDist.Launcher.Tests.dll -class BnbDist.Launcher.Tests.CollectiveCheckTests
fi
if has bench; then
  run bench dotnet .gpu/app/bnbdist-bench.dll --device cuda --out "$OUT/gpu-$gpu.json" ${BENCH_ARGS:-}
  # Quantized linears against their 16-bit baselines (issue #3), then the memory of one LoRA step through one layer: each its
  # own process (a failure or a CUDA fault stays in its step; memory is read from a fresh caching allocator); same JSON file.
  run bench-nn timeout 900 dotnet .gpu/app/bnbdist-bench.dll --device cuda --suite nn --out "$OUT/gpu-$gpu.json"
  run bench-mem-qlora timeout 300 dotnet .gpu/app/bnbdist-bench.dll --device cuda --suite mem-qlora --out "$OUT/gpu-$gpu.json"
  run bench-mem-lora timeout 300 dotnet .gpu/app/bnbdist-bench.dll --device cuda --suite mem-lora --out "$OUT/gpu-$gpu.json"
fi
if has nccl; then
  max=${NCCL_MAX_BYTES:-1073741824}
  run nccl-bnbdist dotnet .gpu/app/bnbrun.dll --nproc "$ngpu" --standalone --backend nccl .gpu/app/bnbdist-bench.dll nccl \
    --max-bytes "$max" --out "$OUT/nccl-bnbdist.json"
  run nccl-torch python3 -m torch.distributed.run --standalone --nproc-per-node "$ngpu" bench/gpu/nccl_torch.py \
    --max-bytes "$max" --out "$OUT/nccl-torch.json"
  run nccl-table python3 bench/gpu/nccl_table.py "$OUT/nccl-bnbdist.json" "$OUT/nccl-torch.json" "$OUT/nccl-${gpu}x${ngpu}.json"
fi
if has sharding; then
  # Sharded QLoRA steps of a 1.1B Llama-like model (random weights; NF4 + LoRA, and the unquantized bf16 baseline) on
  # 1 GPU, then 2 GPUs at the same per-GPU batch, combined into $OUT/sharding-<gpu>.json (about 2-4 minutes).
  for v in nf4 bf16; do
    for n in 1 2; do
      [ "$n" -le "$ngpu" ] || continue
      run "sharding-$v-${n}gpu" dotnet .gpu/app/bnbrun.dll --nproc "$n" --standalone .gpu/app/bnbdist-bench.dll sharding --variant "$v" \
        --preset tinyllama --batch 4 --seq-len 512 --warmup 3 --steps 10 --out "$OUT/sharding-$v-${n}gpu.json" ${SHARDING_ARGS:-}
    done
  done
  if [ "$ngpu" -ge 2 ]; then
    run sharding-nf4-2gpu-noprefetch dotnet .gpu/app/bnbrun.dll --nproc 2 --standalone .gpu/app/bnbdist-bench.dll sharding --variant nf4 \
      --preset tinyllama --batch 4 --seq-len 512 --warmup 3 --steps 10 --no-prefetch --out "$OUT/sharding-nf4-2gpu-noprefetch.json" ${SHARDING_ARGS:-}
  fi
  run sharding-report dotnet .gpu/app/bnbdist-bench.dll sharding-report --dir "$OUT" --out "$OUT/sharding-$gpu.json"
fi
if has qlora && [ -d .gpu/data ]; then
  # The main job on every GPU of the host (NCCL), the examples' small model: a functional check with figures.
  export BNBDIST_DATA=$PWD/.gpu/data
  run qlora dotnet .gpu/app/bnbrun.dll --nproc "$ngpu" --standalone .gpu/app/qlora.dll --out "$OUT/qlora-run" \
    --steps "${QLORA_STEPS:-60}" --seq-len 256 --micro-batch 8
fi
if has qlora-ref; then
  run qlora-ref dotnet .gpu/app/qlora.dll reference --device cuda:0 --out "$OUT/qlora-ref-${gpu:-cuda}.json" \
    --steps "${QLORA_REF_STEPS:-10}" --warmup "${QLORA_REF_WARMUP:-3}" ${QLORA_REF_ARGS:-}
fi
echo "run.sh finished with status $status"
exit $status

#!/usr/bin/env bash
# Configure and build libbnbdist_kernels.so (and bnbdist_kernels_selftest) into native/kernels/build/.
# Usage: native/kernels/build.sh [extra cmake -D options, e.g. -DCMAKE_CUDA_ARCHITECTURES=90]
# Honours CUDA_HOME (default /usr/local/cuda). Needs no network.
# Optional second target: libbnbdist_torch_memory.so (PyTorch's CUDA caching-allocator statistics for TorchSharp
# processes, torch/bnbdist_torch_memory.cpp), built when $PYTHON (default python3) imports torch; BNBD_TORCH_MEMORY=0
# skips it. Its failure only warns: the kernels build never depends on it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
build_dir="$here/build"

if ! command -v nvcc >/dev/null 2>&1; then
  echo "build.sh: nvcc not found (CUDA_HOME=$CUDA_HOME)" >&2
  exit 1
fi

generator=()
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  if command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
  else
    generator=(-G "Unix Makefiles")
  fi
fi

jobs="$(nproc 2>/dev/null || echo 4)"
cmake -S "$here" -B "$build_dir" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" \
  -DBNBD_GEMV=ON \
  "$@"
if ! cmake --build "$build_dir" --parallel "$jobs"; then
  # Keep the other kernels usable when one part fails to build: first the library alone (a self-test compile error),
  # then the library with the GEMV stubbed out. Exit non-zero either way, so the failure stays visible.
  echo "build.sh: FULL BUILD FAILED; trying the library alone" >&2
  if ! cmake --build "$build_dir" --target bnbdist_kernels --parallel "$jobs"; then
    echo "build.sh: library build failed; retrying with -DBNBD_GEMV=OFF (bnbd_gemv_4bit stubbed)" >&2
    cmake -S "$here" -B "$build_dir" -DBNBD_GEMV=OFF "$@" &&
      cmake --build "$build_dir" --parallel "$jobs" || cmake --build "$build_dir" --target bnbdist_kernels --parallel "$jobs"
  fi
  echo "$build_dir/libbnbdist_kernels.so (degraded build)"
  exit 1
fi

echo "$build_dir/libbnbdist_kernels.so"

build_torch_memory() {
  local py=${PYTHON:-python3} info torch_dir abi out="$build_dir/libbnbdist_torch_memory.so"
  if ! info=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__)); print(int(torch.compiled_with_cxx11_abi()))' 2>/dev/null); then
    echo "build.sh: $py cannot import torch; skipping libbnbdist_torch_memory.so (optional)"
    return 0
  fi
  torch_dir=$(sed -n 1p <<<"$info")
  abi=$(sed -n 2p <<<"$info")
  # Same C++ ABI as torch (its std::string in c10::Error), linked to the torch/lib the process loads.
  if "${CXX:-c++}" -O2 -std=c++20 -shared -fPIC -fvisibility=hidden -D_GLIBCXX_USE_CXX11_ABI="$abi" \
      -I"$torch_dir/include" -I"$CUDA_HOME/include" "$here/torch/bnbdist_torch_memory.cpp" \
      -L"$torch_dir/lib" -lc10_cuda -lc10 -Wl,-rpath,"$torch_dir/lib" -o "$out.tmp"; then
    mv "$out.tmp" "$out"
    echo "$out (torch $torch_dir, _GLIBCXX_USE_CXX11_ABI=$abi)"
  else
    rm -f "$out.tmp"
    echo "build.sh: WARNING: libbnbdist_torch_memory.so failed to build (optional; peak-memory figures will be missing)" >&2
  fi
}
if [ "${BNBD_TORCH_MEMORY:-1}" != 0 ]; then
  build_torch_memory
fi

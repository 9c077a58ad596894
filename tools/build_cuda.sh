#!/usr/bin/env bash
# Configures and builds the CUDA backend build (build-cuda/, Release,
# -DSPINEL_CUDA=ON, no benchmarks): only the targets its tests need, unless
# targets are given. Needs the CUDA toolkit (nvcc, cuBLAS), not a GPU.
# Environment: SPINEL_CUDA_ARCHITECTURES (default: CMakeLists.txt's list),
# SPINEL_JOBS (default: nproc), CUDACXX (default: nvcc on PATH, else
# /usr/local/cuda/bin/nvcc).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${CUDACXX:-$(command -v nvcc || true)}"
[ -n "$NVCC" ] || NVCC=/usr/local/cuda/bin/nvcc
if [ ! -x "$NVCC" ]; then
  echo "build_cuda: nvcc not found (not on PATH, not at /usr/local/cuda/bin/nvcc, CUDACXX unset):" \
       "install the CUDA toolkit to build the cuda backend" >&2
  exit 3
fi
args=(-DSPINEL_CUDA=ON -DSPINEL_BUILD_BENCH=OFF -DCMAKE_CUDA_COMPILER="$NVCC")
[ -n "${SPINEL_CUDA_ARCHITECTURES:-}" ] && args+=(-DSPINEL_CUDA_ARCHITECTURES="$SPINEL_CUDA_ARCHITECTURES")
cmake -S "$ROOT" -B "$ROOT/build-cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release "${args[@]}" >/dev/null
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(spinel_c spinel test_backend_ops test_session test_capi)
cmake --build "$ROOT/build-cuda" -j"${SPINEL_JOBS:-$(nproc)}" --target "${targets[@]}"

#!/usr/bin/env bash
# For a person with an NVIDIA GPU: builds spinel with the CUDA backend
# (build-cuda/), runs every op on every backend against the reference
# (test_backend_ops: the cuda backend is included when a device is present),
# the session and C API tests, the end-to-end conformance of
# `spinel run --backend cuda` on all-MiniLM-L6-v2 vs ONNX Runtime, and prints
# a latency table: spinel cuda / cpu vs ONNX Runtime's CUDA and CPU providers
# on the same ONNX file.
#
# Needs: the CUDA toolkit (nvcc, cuBLAS; CUDACXX or /usr/local/cuda), a driver
# and a GPU (nvidia-smi -L lists it), tools/setup.sh done. For the ORT CUDA
# column, onnxruntime-gpu in a venv of your own (do not change .venv, which
# the tests pin to the CPU onnxruntime):
#   python3 -m venv --system-site-packages ~/ort-gpu
#   ~/ort-gpu/bin/pip install onnxruntime-gpu numpy
#   SPINEL_ORT_GPU_PY=~/ort-gpu/bin/python tools/cuda_check.sh
# Environment: SPINEL_CUDA_ARCHITECTURES (GPU architectures, e.g. 86 or "80;90"), SPINEL_JOBS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
cd "$ROOT"
if ! nvidia-smi -L; then
  echo "cuda_check: nvidia-smi -L lists no GPU: the cuda backend cannot run here" >&2
  exit 1
fi
echo "== build (build-cuda, -DSPINEL_CUDA=ON)"
"$ROOT/tools/build_cuda.sh"
echo "== every op on every backend vs the reference (cuda included)"
"$ROOT/build-cuda/test_backend_ops" -s 2>&1 | grep -E "cuda|skipped|test cases|assertions" || true
"$ROOT/build-cuda/test_backend_ops"
"$ROOT/build-cuda/test_session"
"$ROOT/build-cuda/test_capi"
echo "== spinel run --backend cuda vs ONNX Runtime (MiniLM)"
SPINEL_TEST_CACHE="$(mktemp -d -t spinel-cuda-check.XXXXXX)"
export SPINEL_TEST_CACHE
trap 'rm -rf "$SPINEL_TEST_CACHE"' EXIT
SPINEL_BIN="$ROOT/build-cuda/spinel" "$PY" -m pytest -q -rs -s tests/conformance/test_cuda_conformance.py
echo "== latency: spinel cuda/cpu vs ONNX Runtime CUDA/CPU (all-MiniLM-L6-v2, FP32)"
work="$(mktemp -d -t spinel-cuda-lat.XXXXXX)"
"$PY" tools/export_onnx.py --model minilm --opset 17 -o "$work/minilm.onnx" >/dev/null
"$ROOT/build-cuda/spinel" convert "$work/minilm.onnx" -o "$work/minilm.spnl" >/dev/null
LAT_PY="${SPINEL_ORT_GPU_PY:-$PY}"
SPINEL_LIBRARY="$ROOT/build-cuda/libspinel.so" PYTHONPATH="$ROOT/python" \
  "$LAT_PY" tools/cuda_latency.py "$work/minilm.onnx" "$work/minilm.spnl"
rm -rf "$work"
echo "== cuda check done"

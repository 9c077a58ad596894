#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run the doctest unit
# tests through ctest, then the Python conformance tests (spinel vs ONNX
# Runtime, PyTorch and HF tokenizers on the real all-MiniLM-L6-v2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/tools/setup.sh"
"$ROOT/tools/build.sh"
echo "== unit tests (ctest)"
ctest --test-dir "$ROOT/build" --output-on-failure -j2
echo "== conformance tests (pytest)"
cd "$ROOT"
SPINEL_BIN="$ROOT/build/spinel" "$ROOT/.venv/bin/python" -m pytest -q tests/conformance "$@"
# The FP32 conformance suite again on the lower ISA paths (the kernel testers
# cover every path on their own; this covers the whole model).
for isa in avx2 scalar; do
  echo "== conformance tests with SPINEL_ISA=$isa"
  SPINEL_ISA=$isa SPINEL_BIN="$ROOT/build/spinel" "$ROOT/.venv/bin/python" -m pytest -q \
    tests/conformance/test_minilm_conformance.py "$@"
done

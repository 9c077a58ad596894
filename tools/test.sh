#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run the doctest unit
# tests through ctest, the Python conformance tests (spinel vs ONNX Runtime,
# PyTorch and HF tokenizers on the real all-MiniLM-L6-v2) and the hostile-file
# corpus; then the same unit tests and a conformance subset under ASan+UBSan,
# every fuzz target for a bounded time, the CUDA build (build-cuda: compiles,
# links, refuses clearly without a GPU) and the threads test under TSan.
# Arguments go to the first pytest run (e.g. -k NAME).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
FUZZ_SECONDS="${SPINEL_FUZZ_SECONDS:-30}"
"$ROOT/tools/setup.sh"
"$ROOT/tools/build.sh"
cd "$ROOT"
# The pytest runs below share one cache of ONNX exports and trained test
# models (made once per test.sh run, removed at its end).
SPINEL_TEST_CACHE="$(mktemp -d -t spinel-test-cache.XXXXXX)"
export SPINEL_TEST_CACHE
asan_build=""
cleanup() {
  # A failed step stops the background build too (its own process group).
  [ -n "$asan_build" ] && kill -- "-$asan_build" 2>/dev/null
  rm -rf "$SPINEL_TEST_CACHE"
}
trap cleanup EXIT

# The ASan+UBSan build (clang-14, build-asan/), then the CUDA build
# (build-cuda/, one GPU architecture: the point here is that it compiles and
# links), compile at low priority while the Release tests run: those leave a
# core idle much of the time. Exit status 3 of build_cuda.sh = no nvcc.
echo "== ASan+UBSan and CUDA builds start in the background (logs: build-asan/build.log, build-cuda/build.log)"
mkdir -p "$ROOT/build-asan" "$ROOT/build-cuda"
rm -f "$ROOT/build-cuda/build.rc"
setsid nice -n 15 bash -c '
  "$1/tools/build_sanitized.sh" asan > "$1/build-asan/build.log" 2>&1 || exit 1
  rc=0
  SPINEL_CUDA_ARCHITECTURES="${SPINEL_CUDA_ARCHITECTURES:-80}" "$1/tools/build_cuda.sh" > "$1/build-cuda/build.log" 2>&1 || rc=$?
  echo "$rc" > "$1/build-cuda/build.rc"' _ "$ROOT" &
asan_build=$!

echo "== unit tests (ctest)"
ctest --test-dir "$ROOT/build" --output-on-failure -j2
echo "== conformance tests and hostile-file corpus (pytest)"
SPINEL_BIN="$ROOT/build/spinel" "$PY" -m pytest -q tests/conformance tests/hostile "$@"
# The unit tests and the FP32 conformance suite again on the lower ISA paths
# (the kernel testers cover every path on their own; this covers the whole
# model, and that every test holds with the level capped from outside). On a
# CPU without any VNNI the unforced run above already was the AVX2 path.
isas="avx2 scalar"
grep -qwE 'avx512_vnni|avx_vnni' /proc/cpuinfo || isas="scalar"
for isa in $isas; do
  echo "== unit tests (ctest) with SPINEL_ISA=$isa"
  SPINEL_ISA=$isa ctest --test-dir "$ROOT/build" --output-on-failure -j2
  echo "== conformance tests with SPINEL_ISA=$isa"
  SPINEL_ISA=$isa SPINEL_BIN="$ROOT/build/spinel" "$PY" -m pytest -q \
    tests/conformance/test_minilm_conformance.py
done

# Sanitizers: findings abort the process (-fno-sanitize-recover), so any report
# fails the step. LeakSanitizer is on: a leak is a finding too.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
echo "== waiting for the ASan+UBSan and CUDA builds"
if ! wait "$asan_build"; then
  tail -50 "$ROOT/build-asan/build.log"
  echo "the ASan+UBSan build failed (full log: build-asan/build.log)" >&2
  exit 1
fi
asan_build=""
echo "== unit tests under ASan+UBSan"
ctest --test-dir "$ROOT/build-asan" --output-on-failure -j2
echo "== conformance subset and hostile-file corpus under ASan+UBSan"
# CLI-driven tests only (SPINEL_CAPI=0 deselects the ones that load
# libspinel.so into Python; see tests/conformance/conftest.py).
SPINEL_CAPI=0 SPINEL_BIN="$ROOT/build-asan/spinel" "$PY" -m pytest -q tests/hostile \
  tests/conformance/test_bad_inputs.py tests/conformance/test_fasta.py \
  tests/conformance/test_minilm_conformance.py::test_cli_mixed_batch_vs_ort \
  tests/conformance/test_minilm_conformance.py::test_text_input_matches_ids
# The CUDA backend: it must compile and link, and, here without a GPU, refuse
# with "no CUDA device" (never a crash); with a device its ops run against the
# reference. Only the targets these tests need are built.
echo "== CUDA build (build-cuda, -DSPINEL_CUDA=ON): libspinel, spinel and the cuda tests"
cuda_start=$SECONDS
cuda_rc="$(cat "$ROOT/build-cuda/build.rc")"
if [ "$cuda_rc" -eq 3 ]; then
  cat "$ROOT/build-cuda/build.log"
  echo "== CUDA build skipped: nvcc is missing (see tools/setup.sh)"
elif [ "$cuda_rc" -ne 0 ]; then
  tail -50 "$ROOT/build-cuda/build.log"
  echo "the CUDA build failed (full log: build-cuda/build.log)" >&2
  exit 1
else
  ctest --test-dir "$ROOT/build-cuda" --output-on-failure -R '^(test_backend_ops|test_session|test_capi)$'
  SPINEL_BIN="$ROOT/build-cuda/spinel" "$PY" -m pytest -q -rs tests/conformance/test_cuda_conformance.py
  echo "== CUDA tests took $((SECONDS - cuda_start)) s"
fi

echo "== fuzz targets, ${FUZZ_SECONDS}s each"
"$ROOT/tools/fuzz.sh" "$FUZZ_SECONDS"

echo "== ThreadSanitizer: one model shared by 8 threads x 1000 runs"
"$ROOT/tools/build_sanitized.sh" tsan test_threads
# One OpenMP thread: libgomp/libomp and TBB are not instrumented (see the test's header).
SPINEL_TEST_RUNS=1000 OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1" \
  "$ROOT/build-tsan/test_threads"
echo "== all tests passed"

#!/usr/bin/env bash
# Builds spinel with sanitizers, with clang-14 (libFuzzer needs it):
#   tools/build_sanitized.sh asan   -> build-asan/: ASan + UBSan, unit tests and fuzz targets
#   tools/build_sanitized.sh tsan   -> build-tsan/: ThreadSanitizer, unit tests
# Extra arguments are targets to build (default: all). Benchmarks are left out.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="${1:?usage: build_sanitized.sh asan|tsan [targets...]}"
shift
case "$kind" in
  asan) flags=(-DSPINEL_SANITIZE=address,undefined -DSPINEL_FUZZ=ON) ;;
  tsan) flags=(-DSPINEL_SANITIZE=thread) ;;
  *) echo "build_sanitized.sh: unknown kind '$kind' (asan or tsan)" >&2; exit 2 ;;
esac
dir="$ROOT/build-$kind"
CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSPINEL_BUILD_BENCH=OFF "${flags[@]}" >/dev/null
if [ $# -gt 0 ]; then
  cmake --build "$dir" -j"$(nproc)" --target "$@"
else
  cmake --build "$dir" -j"$(nproc)"
fi

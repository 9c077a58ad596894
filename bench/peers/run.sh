#!/usr/bin/env bash
# spinel vs peers under MLPerf LoadGen: creates the peers' venvs (once), then runs
# bench/peers/run.py (arguments are passed on; default: MiniLM, BERT-base 90%, DNABERT-2,
# every runtime) which writes work/peers/results.json, bench/peers/latency_vs_throughput.png
# and a section at the top of bench/RESULTS.md. Not part of CI.
#   bench/peers/run.sh --setup-only     just the venvs
# The venvs live in work/peers-venvs/ (each peer pins what it needs; the project's .venv keeps
# Debian's numpy 1.24 / onnx 1.12 / torch 1.13 and only gets mlcommons-loadgen):
#   ort         onnxruntime 1.19.2 + onnx 1.16.2: quantize_dynamic needs onnx >= 1.13
#   openvino    openvino 2024.6 + nncf 2.14 (NNCF post-training quantization)
#   ct2         ctranslate2 4.4 + transformers 4.45 over Debian's torch 1.13 (its converter)
#   deepsparse  deepsparse 1.8.0 (numpy < 2, onnx 1.14; its last wheel for Python 3.11)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
V="$ROOT/work/peers-venvs"
LOADGEN="mlcommons-loadgen==6.0.17"
"$ROOT/tools/setup.sh"
"$ROOT/.venv/bin/pip" install -q --disable-pip-version-check "$LOADGEN"
mkvenv() {  # name, venv flags, packages...
  local name="$1" flags="$2"; shift 2
  [ -x "$V/$name/bin/python" ] && [ -f "$V/$name/.done" ] && return 0
  rm -rf "${V:?}/$name"
  # Debian's python3: --system-site-packages must see Debian's torch (ct2).
  /usr/bin/python3 -m venv $flags "$V/$name"
  "$V/$name/bin/pip" install -q --disable-pip-version-check "$@" "$LOADGEN"
  touch "$V/$name/.done"
}
mkdir -p "$V"
mkvenv ort "" onnxruntime==1.19.2 onnx==1.16.2 "numpy<2"
mkvenv openvino "" openvino==2024.6.0 nncf==2.14.1 "numpy<2"
# numpy stays Debian's 1.24 (torch 1.13 is built against it).
mkvenv ct2 "--system-site-packages" ctranslate2==4.4.0 transformers==4.45.2 "numpy==$("$ROOT/.venv/bin/python" -c 'import numpy; print(numpy.__version__)')"
mkvenv deepsparse "" deepsparse==1.8.0 "numpy<2" onnx==1.14.1
# Debian's torch links libblas.so.3, the reference BLAS unless OpenBLAS is installed system-wide;
# unpack Debian's OpenBLAS here (not installed: numpy and the tests keep the system's BLAS) and
# run.py puts it first on the PyTorch worker's LD_LIBRARY_PATH.
if [ ! -f "$V/openblas/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -q libopenblas0-pthread >/dev/null 2>&1) || { apt-get update -q >/dev/null && (cd "$tmp" && apt-get download -q libopenblas0-pthread >/dev/null 2>&1); }
  dpkg -x "$tmp"/libopenblas0-pthread_*.deb "$V/openblas"
  rm -rf "$tmp"
fi
[ "${1:-}" = "--setup-only" ] && exit 0
[ -x "$ROOT/build/spinel" ] && [ -f "$ROOT/build/libspinel.so" ] || "$ROOT/tools/build.sh"
exec "$ROOT/.venv/bin/python" "$ROOT/bench/peers/run.py" --build "$@"

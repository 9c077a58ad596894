"""Block-sparse FP32 (kernels/cpu/spmm_f32.h) end to end, against ONNX Runtime.

The MiniLM that tools/prune_bert.py prunes to 80% 4x1 block sparsity (the fixture of
test_int8.py, shared through SPINEL_TEST_CACHE), converted to FP32 (`spinel convert`,
no --quant):
* `inspect --json`: every encoder Linear is stored f32 with its block sparsity (~0.8)
  and runs on spmm_f32_*, the `why` naming the sparsity and the crossover; with
  SPINEL_F32_SPARSE=0 the same file runs on oneDNN dense (dnnl_matmul_f32).
* last_hidden_state vs ONNX Runtime FP32 on the same ONNX file: minimum per-token
  cosine >= 0.99999 and max abs difference <= 1e-4, on the sparse kernel (default
  ISA, and SPINEL_ISA=scalar on a subset), and the sparse and dense FP32 paths
  agree with each other within 1e-4.
* The unpruned MiniLM converted to FP32 stays on oneDNN dense (block sparsity ~0).
"""

import json
import os
import subprocess

import numpy as np
import pytest

# The pruned-model fixture, sentences and helpers of the INT8 tests (one prune per session).
from test_int8 import SENTENCES, ISA_SUBSET, THREADS, ids, max_abs, pruned_onnx, ort_hidden  # noqa: F401

N_LINEARS = 24  # 6 layers x (fused QKV, attention output, intermediate, output)


def inspect_ops(spinel, spnl, env_extra=None):
    env = dict(os.environ)
    env.pop("SPINEL_F32_SPARSE", None)
    env.update(env_extra or {})
    p = subprocess.run([str(spinel.bin), "inspect", str(spnl), "--json"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    linears = [op for op in json.loads(p.stdout)["ops"] if op["kind"] == "Linear"]
    assert len(linears) == N_LINEARS, linears
    return linears


def run_hidden(spinel, spnl, id_lists, env_extra=None):
    env = dict(os.environ)
    env.pop("SPINEL_ISA", None)
    env.pop("SPINEL_F32_SPARSE", None)
    env.update(env_extra or {})
    args = [str(spinel.bin), "run", str(spnl), "--pool", "none", *THREADS]
    for x in id_lists:
        args += ["--ids", ",".join(map(str, x))]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, f"spinel run ({env_extra}) failed:\n{p.stderr[-3000:]}"
    assert "warning" not in p.stderr, p.stderr
    rows = sorted((json.loads(line) for line in p.stdout.splitlines() if line.strip()), key=lambda r: r["index"])
    return [np.asarray(r["last_hidden_state"], dtype=np.float64) for r in rows]


def min_token_cosine(got, ref):
    worst = 1.0
    for g, r in zip(got, ref):
        assert g.shape == r.shape, (g.shape, r.shape)
        num = np.sum(g * r, axis=1)
        den = np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1), 1e-30)
        worst = min(worst, float(np.min(num / den)))
    return worst


@pytest.fixture(scope="module")
def f32_spnl(spinel, pruned_onnx, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("f32sparse") / "pruned-f32.spnl"
    spinel.convert(pruned_onnx, out)
    return out


@pytest.fixture(scope="module")
def ort_ref(pruned_onnx, ids):  # noqa: F811
    return ort_hidden(pruned_onnx, ids)


def test_inspect_shows_sparse_f32_kernel(spinel, f32_spnl):
    for op in inspect_ops(spinel, f32_spnl):
        assert op["precision"] == "f32", op
        assert abs(op["block_sparsity"] - 0.8) <= 0.005, op
        assert op["kernel"].startswith("spmm_f32_4x1_"), op
        assert "block sparsity 0.80 >=" in op["why"] and "crossover" in op["why"], op
    for op in inspect_ops(spinel, f32_spnl, {"SPINEL_F32_SPARSE": "0"}):
        assert op["kernel"] == "dnnl_matmul_f32", op
        assert "SPINEL_F32_SPARSE=0" in op["why"], op


def test_sparse_f32_vs_ort(spinel, f32_spnl, ids, ort_ref):  # noqa: F811
    got = run_hidden(spinel, f32_spnl, ids)
    cos, diff = min_token_cosine(got, ort_ref), max_abs(got, ort_ref)
    print(f"spinel FP32 sparse vs ORT: min token cosine {cos:.8f}, max abs diff {diff:.2e}")
    assert cos >= 0.99999, cos
    assert diff <= 1e-4, diff
    dense = run_hidden(spinel, f32_spnl, ids, {"SPINEL_F32_SPARSE": "0"})
    d = max_abs(got, dense)
    print(f"spinel FP32 sparse vs dense: max abs diff {d:.2e}")
    assert d <= 1e-4, d


def test_sparse_f32_scalar_path_vs_ort(spinel, f32_spnl, ids, ort_ref):  # noqa: F811
    sub = [ids[i] for i in ISA_SUBSET]
    got = run_hidden(spinel, f32_spnl, sub, {"SPINEL_ISA": "scalar"})
    ref = [ort_ref[i] for i in ISA_SUBSET]
    cos, diff = min_token_cosine(got, ref), max_abs(got, ref)
    print(f"SPINEL_ISA=scalar: min token cosine {cos:.8f}, max abs diff {diff:.2e}")
    assert cos >= 0.99999, cos
    assert diff <= 1e-4, diff


def test_unpruned_minilm_stays_dense(spinel, export, tmp_path_factory):
    out = tmp_path_factory.mktemp("f32dense") / "minilm-f32.spnl"
    spinel.convert(export("minilm17"), out)
    for op in inspect_ops(spinel, out):
        assert op["kernel"] == "dnnl_matmul_f32", op
        assert op["block_sparsity"] < 0.05, op

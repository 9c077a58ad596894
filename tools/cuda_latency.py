#!/usr/bin/env python3
"""Latency of spinel's cuda (and cpu) backend vs ONNX Runtime's CUDA provider
on the same ONNX file, for tools/cuda_check.sh. Prints a Markdown table.

usage: cuda_latency.py ONNX SPNL [--reps N]
Needs: SPINEL_LIBRARY=build-cuda/libspinel.so, python/ on PYTHONPATH,
onnxruntime-gpu (pip install onnxruntime-gpu) for the CUDA provider."""

import argparse
import statistics
import time

import numpy as np


def timed(fn, reps):
    fn()  # warm-up (allocations, cuBLAS heuristics, kernel loading)
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return statistics.median(ts), ts[int(0.9 * (len(ts) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("spnl")
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args()

    import onnxruntime as ort
    import spinel as sp

    rng = np.random.default_rng(0)
    shapes = [(1, 16), (1, 128), (8, 128), (32, 128), (64, 256)]
    model = sp.Model(a.spnl)
    sessions = {}
    for be in ("cuda", "cpu"):
        try:
            sessions[be] = model.session(backend=be, threads=0)
        except sp.Error as e:
            print(f"spinel {be}: {e.message}")
    providers = ort.get_available_providers()
    ort_sess = {}
    for prov in ("CUDAExecutionProvider", "CPUExecutionProvider"):
        if prov in providers:
            ort_sess[prov] = ort.InferenceSession(a.onnx, providers=[prov])
        else:
            print(f"onnxruntime: {prov} is not available (pip install onnxruntime-gpu)")

    cols = [f"spinel {b}" for b in sessions] + [f"ORT {p.replace('ExecutionProvider', '')}" for p in ort_sess]
    print("\n| batch x tokens | " + " | ".join(f"{c} p50 / p90 ms" for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for n, L in shapes:
        ids = rng.integers(1000, 30000, size=(n, L)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        cells = []
        for s in sessions.values():
            cells.append(timed(lambda: s.run(ids.astype(np.int32)), a.reps))
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        for s in ort_sess.values():
            names = {i.name for i in s.get_inputs()}
            f = {k: v for k, v in feed.items() if k in names}
            cells.append(timed(lambda: s.run(None, f), a.reps))
        print(f"| {n} x {L} | " + " | ".join(f"{p50:.2f} / {p90:.2f}" for p50, p90 in cells) + " |")


if __name__ == "__main__":
    main()

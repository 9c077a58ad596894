#!/usr/bin/env python3
"""End-to-end latency of a pruned model in FP32: spinel's block-sparse FP32 kernel
(spmm_f32) vs spinel on oneDNN dense f32 vs ONNX Runtime FP32, on one ONNX file.

Model: BERT-base pruned to 90% 4x1 blocks per Linear (tools/prune_bert.py, the
bert-base-90 case of bench/e2e_int8.py: random weights, opset 17; made unless the
work dir already holds it with the same arguments), converted once with
`spinel convert` (FP32: the converter stores each Linear's block sparsity).
The same .spnl is loaded twice: once as is (every encoder Linear above the
crossover runs spmm_f32) and once with SPINEL_F32_SPARSE=0 in the environment
while its session is created (the kernel choice is made then: every Linear on
oneDNN dense f32). The script checks both kernel reports (spinel_model_kernels).

Everything runs in this one process with the helpers of bench/e2e_latency.py
(spinel through libspinel.so with OMP_WAIT_POLICY=PASSIVE; ORT with intra-op =
--threads, inter-op 1, sequential, ORT_ENABLE_ALL). After --warmup runs of each,
every repetition runs each runtime once, the order rotating and reversing between
repetitions, with a --pause sleep before each timed run. Reported per runtime:
median (min-max) ms, and medians over repetitions of the per-repetition ratios
t(ORT FP32)/t(runtime) and t(spinel dense)/t(runtime) (how many times faster).
Agreement with ORT: max abs difference and minimum per-token cosine of
last_hidden_state. Load average at start and end.

  .venv/bin/python bench/e2e_f32_sparse.py --work-dir work/bench-dnabert2/bert-base-ref --reps 20
prints a markdown table (bench/RESULTS.md keeps it by hand).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_latency  # noqa: E402  (sets OMP_WAIT_POLICY=PASSIVE before any OpenMP library loads)
import e2e_int8  # noqa: E402

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = e2e_latency.ROOT
SPARSE, DENSE, ORT = "spinel FP32 sparse", "spinel FP32 dense", "ORT FP32"
RUNTIMES = [SPARSE, DENSE, ORT]


def kernels(sp):
    """The kernel of every Linear of a loaded model: [(name, kernel, why)]."""
    lib, c = sp.lib, ctypes
    lib.spinel_model_kernels.argtypes = [c.c_void_p, c.c_char_p, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t)]
    need = c.c_size_t()
    sp._check(lib.spinel_model_kernels(sp.model, b"cpu", None, 0, c.byref(need)))
    buf = c.create_string_buffer(need.value)
    sp._check(lib.spinel_model_kernels(sp.model, b"cpu", buf, need.value, c.byref(need)))
    ops = json.loads(buf.value.decode())["ops"]
    return [(o["name"], o["kernel"], o.get("why", "")) for o in ops if o["kind"] == "Linear"]


def load_spinel(lib_path, spnl, threads, f32_sparse):
    """A model + session; SPINEL_F32_SPARSE set only while the session (the kernel choice) is made."""
    old = os.environ.pop("SPINEL_F32_SPARSE", None)
    if f32_sparse is not None:
        os.environ["SPINEL_F32_SPARSE"] = f32_sparse
    try:
        sp = e2e_latency.Spinel(lib_path, spnl, threads)
        ks = kernels(sp)
    finally:
        os.environ.pop("SPINEL_F32_SPARSE", None)
        if old is not None:
            os.environ["SPINEL_F32_SPARSE"] = old
    return sp, ks


def token_agreement(got, ref):
    g = np.asarray(got, dtype=np.float64).reshape(-1, got.shape[-1])
    r = np.asarray(ref, dtype=np.float64).reshape(-1, ref.shape[-1])
    cos = np.sum(g * r, axis=1) / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1), 1e-30)
    return float(np.max(np.abs(g - r))), float(np.min(cos))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "work", "bench-f32-sparse"),
                    help="holds (or gets) bert-base-90/model.onnx; the .spnl is written next to it")
    ap.add_argument("--seqs", default="128,384", help="sequence lengths (batch 1, full length)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions per shape (>= 10)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.05, help="seconds before each timed run")
    args = ap.parse_args()
    if args.reps < 10:
        ap.error("--reps must be at least 10")
    build = os.path.abspath(args.build_dir)
    spinel_bin, lib_path = os.path.join(build, "spinel"), os.path.join(build, "libspinel.so")
    onnx_path = e2e_int8.prune("bert-base-90", os.path.abspath(args.work_dir))
    spnl = os.path.join(os.path.dirname(onnx_path), "fp32-sparse.spnl")
    e2e_latency.sh([spinel_bin, "convert", onnx_path, "-o", spnl])

    import onnxruntime as ort

    load_start = e2e_int8.uptime()
    print("load at start:", load_start, flush=True)
    sparse, k_sparse = load_spinel(lib_path, spnl, args.threads, None)
    dense, k_dense = load_spinel(lib_path, spnl, args.threads, "0")
    n_sparse = sum(k.startswith("spmm_f32") for _, k, _ in k_sparse)
    n_dense = sum(k == "dnnl_matmul_f32" for _, k, _ in k_dense)
    print(f"{SPARSE}: {n_sparse}/{len(k_sparse)} Linears on spmm_f32 ({k_sparse[0][1]}: {k_sparse[0][2]})")
    print(f"{DENSE}: {n_dense}/{len(k_dense)} Linears on dnnl_matmul_f32 ({k_dense[0][2]})")
    ort_prep = e2e_latency.ort_runner(onnx_path, args.threads)

    rows = []
    for seq in [int(s) for s in args.seqs.split(",")]:
        rng = np.random.default_rng(seq)
        ids = rng.integers(1000, 30000, size=(1, seq)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        fns = {SPARSE: sparse.prepare(ids), DENSE: dense.prepare(ids), ORT: ort_prep(ids)}
        outs = {rt: np.array(fn(), dtype=np.float32, copy=True).reshape(seq, -1) for rt, fn in fns.items()}
        agree = {rt: token_agreement(outs[rt], outs[ORT]) for rt in RUNTIMES}
        for _ in range(args.warmup):
            for fn in fns.values():
                fn()
        times = {rt: [] for rt in RUNTIMES}
        for r in range(args.reps):
            order = RUNTIMES[r % 3:] + RUNTIMES[:r % 3]
            if (r // 3) % 2 == 1:
                order = order[::-1]
            for rt in order:
                time.sleep(args.pause)
                t0 = time.perf_counter()
                fns[rt]()
                times[rt].append((time.perf_counter() - t0) * 1e3)
        for rt in RUNTIMES:
            vs_ort = [o / t for o, t in zip(times[ORT], times[rt])]
            vs_dense = [d / t for d, t in zip(times[DENSE], times[rt])]
            rows.append(dict(seq=seq, rt=rt, t=e2e_latency.stats(times[rt]), vs_ort=statistics.median(vs_ort),
                             vs_ort_range=(min(vs_ort), max(vs_ort)), vs_dense=statistics.median(vs_dense),
                             agree=agree[rt]))
        print(f"seq {seq}: " + "  ".join(f"{rt} {statistics.median(times[rt]):.1f} ms" for rt in RUNTIMES), flush=True)
    load_end = e2e_int8.uptime()
    print("load at end:", load_end, flush=True)
    print()
    print(f"ONNX Runtime {ort.__version__}; {args.threads} threads; {args.reps} interleaved repetitions; "
          f"load at start `{load_start}`, at end `{load_end}`")
    print()
    print("| seq | runtime | median (min–max) ms | × faster than ORT FP32 (min–max) | × faster than spinel dense "
          "| max abs vs ORT | min token cos vs ORT |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        t = r["t"]
        print(f"| {r['seq']} | {r['rt']} | {t[0]:.1f} ({t[1]:.1f}–{t[2]:.1f}) | {r['vs_ort']:.2f} "
              f"({r['vs_ort_range'][0]:.2f}–{r['vs_ort_range'][1]:.2f}) | {r['vs_dense']:.2f} | "
              f"{r['agree'][0]:.1e} | {r['agree'][1]:.7f} |")
    sparse.close()
    dense.close()


if __name__ == "__main__":
    main()

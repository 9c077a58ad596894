#!/usr/bin/env python3
"""Latency of single queries that arrive after an idle gap.

A server that is not saturated sees queries with idle time between them; a
benchmark that runs queries back to back never does. This times one query at a
time through the Python binding (as an application would call spinel), with
`time.sleep(gap)` before each, for several gaps. With --onnx it times ONNX
Runtime on the same ids the same way. Both are loaded as the peers harness
loads them (bench/peers/worker.py: load_spinel, load_ort).

Reported per runtime and gap: p50, p90, mean and slowest (ms), and how many
queries took over 3 ms. Ids: [CLS] 2000 2037 ... [SEP] (--seq tokens; the
values only need to be in the vocabulary).

Example (MiniLM INT8, one short sentence; the measurement behind running dense
layers on TBB, bench/RESULTS.md):
  .venv/bin/python bench/idle_gap.py work/minilm/int8.spnl --seq 32 --gaps 0,1,5 \\
      --onnx work/peers/minilm-32/ort-int8-per-channel.onnx
Environment variables reach spinel as usual (e.g. SPINEL_DENSE_POOL=omp for
the old behaviour).
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loaders():
    """The peers harness's loaders (bench/peers/worker.py): load(model, threads, args) -> predict(ids)."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    sys.path.insert(0, os.path.join(ROOT, "bench", "peers"))
    os.environ.setdefault("SPINEL_LIBRARY", os.path.join(ROOT, "build", "libspinel.so"))
    import worker

    return worker.load_spinel, worker.load_ort


def measure(run, gap_s, queries, warmup):
    for _ in range(warmup):
        run()
    t = np.empty(queries)
    for i in range(queries):
        if gap_s > 0:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        run()
        t[i] = time.perf_counter() - t0
    return t * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a .spnl file")
    ap.add_argument("--onnx", help="also time ONNX Runtime on this ONNX file")
    ap.add_argument("--seq", type=int, default=32, help="tokens per query, [CLS] and [SEP] included (default 32)")
    ap.add_argument("--gaps", default="0,1,5", help="idle ms before each query, comma-separated (default 0,1,5)")
    ap.add_argument("--queries", type=int, default=1000, help="timed queries per gap (default 1000)")
    ap.add_argument("--warmup", type=int, default=200, help="untimed queries before each gap's run (default 200)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.seq < 2:
        raise SystemExit(f"error: --seq {a.seq}: at least 2 ([CLS] and [SEP])")
    if a.queries < 10 or a.warmup < 0 or a.threads < 1:
        raise SystemExit("error: --queries >= 10, --warmup >= 0 and --threads >= 1")
    try:
        gaps = [float(g) for g in a.gaps.split(",") if g.strip()]
    except ValueError:
        raise SystemExit(f"error: --gaps {a.gaps!r}: comma-separated milliseconds, e.g. 0,1,5")
    if not gaps or any(g < 0 for g in gaps):
        raise SystemExit(f"error: --gaps {a.gaps!r}: at least one gap, none negative")
    for f in [a.model] + ([a.onnx] if a.onnx else []):
        if not os.path.exists(f):
            raise SystemExit(f"error: {f}: no such file")
    ids = np.array([[101] + [2000 + 37 * i for i in range(a.seq - 2)] + [102]], dtype=np.int64)
    load_spinel, load_ort = loaders()
    predict = load_spinel(a.model, a.threads, None)
    runners = [("spinel " + os.path.basename(a.model), lambda: predict(ids))]
    if a.onnx:
        predict_ort = load_ort(a.onnx, a.threads, None)
        runners.append(("ORT " + os.path.basename(a.onnx), lambda: predict_ort(ids)))
    print(f"{a.seq} tokens, {a.threads} threads, {a.queries} queries per gap after {a.warmup} of warm-up")
    print("| runtime | gap ms | p50 ms | p90 ms | mean ms | slowest ms | queries > 3 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for gap in gaps:
        for name, run in runners:
            t = measure(run, gap / 1e3, a.queries, a.warmup)
            print(f"| {name} | {gap:g} | {np.median(t):.3f} | {np.percentile(t, 90):.3f} | {t.mean():.3f} | "
                  f"{t.max():.2f} | {(t > 3).sum()} of {len(t)} |", flush=True)


if __name__ == "__main__":
    main()

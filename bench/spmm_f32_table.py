#!/usr/bin/env python3
"""Crossover table from bench_spmm_f32's Google Benchmark JSON output.

  OMP_WAIT_POLICY=PASSIVE build/bench_spmm_f32 --benchmark_filter=Crossover \\
      --benchmark_repetitions=10 --benchmark_enable_random_interleaving=true \\
      --benchmark_min_time=0.02 --benchmark_out=f32.json --benchmark_out_format=json
  python3 bench/spmm_f32_table.py f32.json

prints, per layer shape (K x N), M and thread count: the median time of oneDNN's
dense f32 matmul (BM_CrossoverDenseF32), then for each block sparsity the speedup
t(dense) / t(sparse) of spmm_f32 from the same run (> 1: the sparse kernel is
faster), and the crossover: the block sparsity where the speedup reaches 1
(linear interpolation between the measured sparsities). Medians over the
repetitions; with --spread, also the min-max of the per-repetition ratios
(repetition i of sparse vs repetition i of dense: the runs were interleaved).
Also the sparse kernel's GFLOPS on the nonzero work at 90%. Standard library only.
"""

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict

NAME = re.compile(r"^BM_Crossover(Sparse|Dense)F32/K:(\d+)/N:(\d+)/M:(\d+)/sparsity:(\d+)/threads:(\d+)")


def load(path):
    with open(path) as f:
        data = json.load(f)
    reps = defaultdict(list)
    gflops = defaultdict(list)
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            continue
        m = NAME.match(b.get("run_name", b["name"]))
        if not m:
            continue
        kind, K, N, M, sp, t = m.group(1), *map(int, m.groups()[1:])
        key = (kind, K, N, M, sp, t)
        reps[key].append(b["real_time"] * scale[b.get("time_unit", "ns")])
        if "GFLOPS" in b:
            gflops[key].append(b["GFLOPS"])
    return reps, gflops, data.get("context", {})


def crossover(points):
    """points: [(sparsity %, speedup)] sorted by sparsity -> first sparsity where speedup >= 1."""
    prev = None
    for sp, r in points:
        if r >= 1.0:
            if prev is None:
                return f"<= {sp}%"
            p_sp, p_r = prev
            x = p_sp + (1.0 - p_r) * (sp - p_sp) / (r - p_r)
            return f"~{x:.0f}%"
        prev = (sp, r)
    return f"> {points[-1][0]}%" if points else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--spread", action="store_true", help="min-max of the per-repetition ratios too")
    args = ap.parse_args()
    reps, gflops, ctx = load(args.json)
    shapes = sorted({(K, N, M, t) for (kind, K, N, M, sp, t) in reps if kind == "Dense"},
                    key=lambda s: (s[3], s[0], s[1], s[2]))
    sps = sorted({sp for (kind, K, N, M, sp, t) in reps if kind == "Sparse"})
    if not shapes or not sps:
        sys.exit("no BM_Crossover{Sparse,Dense}F32 results in " + args.json)
    print(f"load: {ctx.get('load_avg', '?')}, date: {ctx.get('date', '?')}")
    head = "| K x N | M | threads | dense µs | " + " | ".join(f"{s}%" for s in sps) + \
           " | crossover | GFLOPS at 90% |"
    print(head)
    print("|" + "---|" * (len(sps) + 6))
    for K, N, M, t in shapes:
        dense = reps[("Dense", K, N, M, 0, t)]
        dmed = statistics.median(dense)
        cells, points = [], []
        for sp in sps:
            sparse = reps.get(("Sparse", K, N, M, sp, t))
            if not sparse:
                cells.append("—")
                continue
            r = dmed / statistics.median(sparse)
            points.append((sp, r))
            cell = f"{r:.2f}"
            if args.spread:
                per = [d / s for d, s in zip(dense, sparse)]
                cell += f" ({min(per):.2f}–{max(per):.2f})"
            cells.append(cell)
        g = gflops.get(("Sparse", K, N, M, 90, t))
        gcell = f"{statistics.median(g):.1f}" if g else "—"
        print(f"| {K}x{N} | {M} | {t} | {dmed:.0f} | " + " | ".join(cells) +
              f" | {crossover(points)} | {gcell} |")


if __name__ == "__main__":
    main()

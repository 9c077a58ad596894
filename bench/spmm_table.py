#!/usr/bin/env python3
"""Markdown tables from bench_spmm_s8's Google Benchmark JSON output.

Run the kernel suite with JSON output, e.g.
  SPINEL_BENCH_THREADS=2 build/bench_spmm_s8 --benchmark_repetitions=20 \\
      --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true \\
      --benchmark_filter='BM_Sparse|BM_Dense' --benchmark_out=spmm-2t.json --benchmark_out_format=json
then
  python3 bench/spmm_table.py spmm-2t.json --threads 2
prints, per shape (K x N), M and sparsity: the median time of the block-sparse
kernel (BM_Sparse), the median of oneDNN's dense u8s8 matmul on the same K, N,
M (BM_Dense, same run), the speedup dense/sparse next to the ideal 1/(1 - sparsity),
and the effective GOPS on the nonzero work (2 * M * nonzero weights / median
time) as a share of the VNNI peak (--peak-gops; default 640 per thread up to
1200 for 2 threads, see /work/shared/MEASURING.md). The dense rows count every
weight. cv is the coefficient of variation over the repetitions.

  python3 bench/spmm_table.py spmm-2t.json --threads 2 --scaling spmm-1t.json
adds a table of the 2-thread time against the 1-thread time of a second run
(only the rows present in both).

Needs only the standard library. Works with or without
--benchmark_report_aggregates_only (medians are taken from the "median"
aggregates, or computed from the individual repetitions).
"""

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict

NAME = re.compile(r"^(BM_\w+)/K:(\d+)/N:(\d+)/M:(\d+)/sparsity:(\d+)")


def load(path):
    """path -> {(family, K, N, M, sparsity): dict(median_us, cv, nnz_pct, label)} for BM_Sparse/BM_Dense."""
    with open(path) as f:
        data = json.load(f)
    reps, aggs, extra = defaultdict(list), defaultdict(dict), {}
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
    for b in data.get("benchmarks", []):
        m = NAME.match(b.get("run_name", b["name"]))
        if not m or m.group(1) not in ("BM_Sparse", "BM_Dense"):
            continue
        key = (m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
        if "error_occurred" in b and b["error_occurred"]:
            print(f"warning: {b['name']}: {b.get('error_message')}", file=sys.stderr)
            continue
        t = b["real_time"] * scale[b.get("time_unit", "ns")]
        extra.setdefault(key, dict(nnz_pct=b.get("nnz_pct"), label=b.get("label", "")))
        if b.get("run_type") == "aggregate":
            aggs[key][b.get("aggregate_name")] = b["real_time"] * (
                1.0 if b.get("aggregate_unit") == "percentage" else scale[b.get("time_unit", "ns")])
        else:
            reps[key].append(t)
    out = {}
    for key in set(reps) | set(aggs):
        a, r = aggs.get(key, {}), reps.get(key, [])
        if "median" in a:
            med = a["median"]
        elif r:
            med = statistics.median(r)
        else:
            continue
        if "cv" in a:
            cv = a["cv"]
        elif "stddev" in a and "mean" in a and a["mean"] > 0:
            cv = a["stddev"] / a["mean"]
        elif len(r) > 1:
            cv = statistics.stdev(r) / statistics.mean(r)
        else:
            cv = float("nan")
        out[key] = dict(median_us=med, cv=cv, n=len(r) or None, **extra[key])
    return data.get("context", {}), out


def vnni_peak(path):
    """GOPS of BM_VnniPeak in the run (the measured vpdpbusd peak): the median aggregate, else the
    median of the repetitions; None if the run has none."""
    with open(path) as f:
        data = json.load(f)
    reps, median = [], None
    for b in data.get("benchmarks", []):
        if not b.get("run_name", b["name"]).startswith("BM_VnniPeak") or b.get("error_occurred") or "GOPS" not in b:
            continue
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                median = b["GOPS"]
        else:
            reps.append(b["GOPS"])
    return median if median is not None else (statistics.median(reps) if reps else None)


def gops(k, n, m, nnz_pct, us):
    nnz = (nnz_pct if nnz_pct is not None else 100.0) / 100.0 * k * n
    return 2.0 * m * nnz / (us * 1e-6) * 1e-9


def main_table(rows, peak, dense_name="oneDNN dense u8s8"):
    lines = ["| K x N | M | kernel | sparsity | nonzero % | median µs | speedup vs dense | ideal 1/(1-s) "
             "| GOPS (nonzero work) | % of peak | cv |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    shapes = sorted({(k, n, m) for (_, k, n, m, _) in rows}, key=lambda x: (x[0] * x[1], x[0], x[2]))
    missing_dense = []
    for k, n, m in shapes:
        dense = rows.get(("BM_Dense", k, n, m, 0))
        if dense is None:
            missing_dense.append(f"{k}x{n} M={m}")
        else:
            g = gops(k, n, m, 100.0, dense["median_us"])
            lines.append(f"| {k}x{n} | {m} | {dense_name} | 0 | 100 | {dense['median_us']:.1f} | 1.00 | 1.00 "
                         f"| {g:.0f} | {100 * g / peak:.0f}% | {dense['cv']:.3f} |")
        for sp in sorted(s for (fam, kk, nn, mm, s) in rows if fam == "BM_Sparse" and (kk, nn, mm) == (k, n, m)):
            r = rows[("BM_Sparse", k, n, m, sp)]
            g = gops(k, n, m, r["nnz_pct"], r["median_us"])
            speed = f"{dense['median_us'] / r['median_us']:.2f}" if dense else "—"
            nnz = r["nnz_pct"] if r["nnz_pct"] is not None else float("nan")
            # 100% sparsity: no nonzero work, the time is the fixed per-call cost.
            ideal = f"{100 / nnz:.1f}" if nnz > 0 else "∞"
            eff = f"{g:.0f} | {100 * g / peak:.0f}%" if nnz > 0 else "— | —"
            lines.append(f"| {k}x{n} | {m} | sparse {r['label'] or 'spmm_u8s8'} | {sp} | {nnz:.1f} "
                         f"| {r['median_us']:.1f} | {speed} | {ideal} | {eff} | {r['cv']:.3f} |")
    if missing_dense:
        lines.append("")
        lines.append("No dense baseline in this run for: " + ", ".join(missing_dense))
    return "\n".join(lines)


def scaling_table(two, one):
    lines = ["| K x N | M | kernel | sparsity | 1 thread µs | 2 threads µs | 2-thread speedup |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for key in sorted(set(two) & set(one), key=lambda x: (x[1] * x[2], x[1], x[3], x[0] != "BM_Dense", x[4])):
        fam, k, n, m, sp = key
        a, b = one[key]["median_us"], two[key]["median_us"]
        kind = "oneDNN dense u8s8" if fam == "BM_Dense" else "sparse"
        lines.append(f"| {k}x{n} | {m} | {kind} | {sp} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="--benchmark_out file of bench_spmm_s8 (--benchmark_out_format=json)")
    ap.add_argument("--threads", type=int, default=2, help="SPINEL_BENCH_THREADS of that run (for the peak)")
    ap.add_argument("--peak-gops", type=float, help="VNNI peak in GOPS (default: 640 per thread, 1200 for 2)")
    ap.add_argument("--dense-from", metavar="JSON",
                    help="take the BM_Dense baseline from this run instead (e.g. oneDNN capped with "
                         "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI on a CPU whose oneDNN would pick AMX)")
    ap.add_argument("--dense-name", default="oneDNN dense u8s8", help="how the table names the baseline")
    ap.add_argument("--scaling", metavar="JSON_1THREAD",
                    help="also compare with a 1-thread run of the same benchmarks")
    args = ap.parse_args()
    ctx, rows = load(args.json)
    if args.dense_from:
        _, other = load(args.dense_from)
        rows = {k: v for k, v in rows.items() if k[0] != "BM_Dense"}
        rows.update({k: v for k, v in other.items() if k[0] == "BM_Dense"})
    measured = vnni_peak(args.json)
    peak = args.peak_gops or measured or {1: 640.0, 2: 1200.0}.get(args.threads, 600.0 * args.threads)
    if measured and not args.peak_gops:
        print(f"<!-- peak: BM_VnniPeak of the same run, {measured:.0f} GOPS -->")
    if not rows:
        sys.exit(f"error: no BM_Sparse/BM_Dense results in {args.json}")
    print(f"<!-- {args.json}: {ctx.get('date', '?')}, {ctx.get('num_cpus', '?')} CPUs, "
          f"load avg {ctx.get('load_avg', '?')}, threads {args.threads}, peak {peak:.0f} GOPS -->")
    print(main_table(rows, peak, args.dense_name))
    if args.scaling:
        _, one = load(args.scaling)
        print()
        print(scaling_table(rows, one))


if __name__ == "__main__":
    main()
